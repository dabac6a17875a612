"""Weight gradients as single large matmuls after the scan (deterministic, no atomics), and the
gradient into h0."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ...ops import state_entering_each_step
from .batches import all_rows_full, rows_last_first


def weight_grads(d_gates: Tensor, out: Tensor, h0: Tensor, w_hh: Tensor, bs: list[int], reverse: bool,
                 d_hs: Optional[Tensor], hs: Tensor, w_hr: Optional[Tensor]):
    """(d_w_hh, d_w_hr) as one large matmul each over all T*B rows (inactive rows are zero)."""
    T, B, G = d_gates.shape
    cdt = d_gates.dtype
    h_prev = state_entering_each_step(out, h0, [] if all_rows_full(bs, B) else bs, reverse).to(cdt)
    # Explicit widths, not -1: an empty batch (T * B == 0) leaves -1 ambiguous.
    d_w_hh = (d_gates.reshape(T * B, G).t() @ h_prev.reshape(T * B, h_prev.shape[2])).to(w_hh.dtype)
    if w_hr is None:
        return d_w_hh, w_hh.new_empty(0)
    d_w_hr = (d_hs.reshape(T * B, d_hs.shape[2]).t() @ hs.reshape(T * B, hs.shape[2])).to(w_hr.dtype)
    return d_w_hh, d_w_hr


def stacked_weight_grads(d_gates, out, h0, w_hh, w_hr, d_hs, hs, bs: list[int], reverse: bool, first_dh: bool):
    """Per direction of [D, ...] launch tensors: ``weight_grads`` and (``first_dh``) the
    gradient into h0 from ``first_step_dh``; returns (d_w_hh, d_w_hr, d_h0 or None), stacked."""
    has_proj = w_hr is not None
    d_w_hh, d_w_hr, d_h0 = [], [], []
    for d in range(d_gates.shape[0]):
        rev = reverse != (d == 1)
        dw, dwr = weight_grads(d_gates[d], out[d], h0[d], w_hh[d], bs, rev, d_hs[d] if has_proj else None,
                               hs[d] if has_proj else hs, w_hr[d] if has_proj else None)
        d_w_hh.append(dw)
        d_w_hr.append(dwr)
        if first_dh:
            d_h0.append(first_step_dh(d_gates[d], w_hh[d], bs, rev))
    return torch.stack(d_w_hh), torch.stack(d_w_hr), (torch.stack(d_h0) if first_dh else None)


def first_step_dh(d_gates: Tensor, w_hh: Tensor, bs: list[int], reverse: bool) -> Tensor:
    """Gradient into h0 [B, P]: each row's gate gradient at its first step, times W_hh."""
    B = d_gates.shape[1]
    if all_rows_full(bs, B) and d_gates.shape[0] > 0:
        return d_gates[d_gates.shape[0] - 1 if reverse else 0] @ w_hh.to(d_gates.dtype)
    _, first = rows_last_first(bs, B, reverse, d_gates.device)
    return d_gates[first, torch.arange(B, device=d_gates.device)] @ w_hh.to(d_gates.dtype)
