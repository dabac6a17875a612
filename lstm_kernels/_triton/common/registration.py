"""Registration of a tier's direction-stacked launchers as its custom-op scan pair."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from ...ops import register_scan
from .batches import check_scan_inputs


def register_tier_scans(name: str, launch_forward: Callable, launch_backward: Callable,
                        saved_dtype: Optional[Callable[[torch.dtype, bool], torch.dtype]] = None):
    """Register a tier's direction-stacked launchers as its two scans; return
    ``(scan, scan_bidirectional)``.

    ``scan`` is the per-direction contract (``lstm_kernels::<name>_scan``), running the
    launchers with D = 1; ``scan_bidirectional(gxs, h0s, c0s, w_hhs, w_hrs, batch_sizes)``
    runs both directions of a layer (the two-element lists ``Backend.scan_layer`` receives,
    direction 1 reversed) in the launches of one D = 2 call, through the direction-stacked
    contract (``lstm_kernels::<name>_bidir_scan``). Both give the results of two ``scan`` calls.
    ``saved_dtype``: the dtype of the saved gates and cell states per storage dtype and
    projection (``ops.register_scan``; None: the compute dtype).
    """
    def forward(gx, h0, c0, w_hh, w_hr, batch_sizes, reverse, save):
        check_scan_inputs(gx, h0, c0, w_hh, w_hr, name)
        res = launch_forward(gx[None], h0[None], c0[None], w_hh[None], None if w_hr is None else w_hr[None],
                             batch_sizes, reverse, save)
        return tuple(r[0] if r.dim() > 1 else r for r in res)

    def backward(grad_out, grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, batch_sizes, reverse, out, gates, cs, hs):
        one = lambda x: x if x.dim() == 1 else x[None]  # noqa: E731  (saved [0] placeholders stay as they are)
        d_gx, d_h0, d_c0, d_w_hh, d_w_hr = launch_backward(
            grad_out[None], grad_h_n[None], grad_c_n[None], h0[None], c0[None], w_hh[None],
            None if w_hr is None else w_hr[None], batch_sizes, reverse, out[None], one(gates), one(cs), one(hs))
        return d_gx[0], d_h0[0], d_c0[0], d_w_hh[0], (d_w_hr[0] if w_hr is not None else w_hh.new_empty(0))

    def stacked_forward(gx, h0, c0, w_hh, w_hr, batch_sizes, reverse, save):
        for d in range(gx.shape[0]):
            check_scan_inputs(gx[d], h0[d], c0[d], w_hh[d], None if w_hr is None else w_hr[d], name)
        return launch_forward(gx, h0, c0, w_hh, w_hr, batch_sizes, reverse, save)

    scan = register_scan(name, forward, backward, saved_dtype=saved_dtype)
    bidir = register_scan(f"{name}_bidir", stacked_forward, launch_backward, directions=2, saved_dtype=saved_dtype)

    def scan_bidirectional(gxs, h0s, c0s, w_hhs, w_hrs, batch_sizes) -> list[tuple[Tensor, Tensor, Tensor]]:
        has_proj = w_hrs[0] is not None
        stack = torch.stack
        out, h_n, c_n = bidir(stack(gxs), stack(h0s), stack(c0s), stack(w_hhs),
                              stack(w_hrs) if has_proj else None, batch_sizes, False)
        return [(out[d], h_n[d], c_n[d]) for d in range(2)]

    return scan, scan_bidirectional
