"""Eager PyTorch LSTM math in nn.LSTM's gate order (i, f, g, o): the oracle.

Dimensions used throughout the package:
    T  sequence length            B  batch size
    I  input features             H  hidden size (cell state width)
    P  output width: proj_size if proj_size > 0 else H

Everything here is plain differentiable torch code, so autograd (including double
backward) works through it. Low-precision storage (float16, bfloat16) is upcast to
float32 for the gate and state math, and the cell state is carried in float32.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the gate and cell-state math runs in for storage ``dtype``."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def lstm_cell_from_gates(
    gates: Tensor,  # [B, 4H] pre-activations, any dtype
    c_prev: Tensor,  # [B, H] in compute dtype
    w_hr: Optional[Tensor] = None,  # [P, H] or None
    out_dtype: Optional[torch.dtype] = None,
) -> tuple[Tensor, Tensor]:
    """One LSTM cell update from pre-activation gates.

    Returns ``(h, c)``: ``h`` is ``[B, P]`` in ``out_dtype`` (projected when ``w_hr``
    is given), ``c`` is ``[B, H]`` in the compute dtype.
    """
    out_dtype = out_dtype or gates.dtype
    g32 = gates.to(compute_dtype(gates.dtype))
    i, f, g, o = g32.chunk(4, dim=-1)
    i = torch.sigmoid(i)
    f = torch.sigmoid(f)
    g = torch.tanh(g)
    o = torch.sigmoid(o)
    c = f * c_prev.to(g32.dtype) + i * g
    h = (o * torch.tanh(c)).to(out_dtype)
    if w_hr is not None:
        h = h @ w_hr.t()
    return h, c


def lstm_scan(
    gx: Tensor,  # [T, B, 4H] input projection plus both biases
    h0: Tensor,  # [B, P]
    c0: Tensor,  # [B, H]
    w_hh: Tensor,  # [4H, P]
    w_hr: Optional[Tensor],  # [P, H] or None
    batch_sizes: Optional[list[int]],  # len T, non-increasing; None: all B rows active
    reverse: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run one direction of one layer over time.

    At step ``t`` only the first ``batch_sizes[t]`` rows are active (the batch is sorted
    by decreasing length, as in a PackedSequence). Inactive rows keep their state:
    in the forward direction they have finished, in the reverse direction they have not
    started yet (so each sequence is reversed over its own valid length). Output rows
    that are inactive are zero.

    Returns ``out [T, B, P]``, ``h_n [B, P]``, ``c_n [B, H]`` (``c_n`` in ``c0``'s dtype).
    """
    T, B = gx.shape[0], gx.shape[1]
    h = h0
    c = c0.to(compute_dtype(c0.dtype))
    outs: list[Tensor] = [gx.new_empty(0)] * T
    steps = range(T - 1, -1, -1) if reverse else range(T)
    for t in steps:
        bs = B if batch_sizes is None else batch_sizes[t]
        gates = gx[t, :bs] + h[:bs] @ w_hh.t()
        h_new, c_new = lstm_cell_from_gates(gates, c[:bs], w_hr, out_dtype=h0.dtype)
        if bs < B:
            h = torch.cat([h_new, h[bs:]])
            c = torch.cat([c_new, c[bs:]])
            outs[t] = torch.cat([h_new, h_new.new_zeros(B - bs, h_new.shape[1])])
        else:
            h, c = h_new, c_new
            outs[t] = h_new
    out = torch.stack(outs) if T > 0 else gx.new_empty(0, B, h0.shape[1])
    return out, h, c.to(c0.dtype)
