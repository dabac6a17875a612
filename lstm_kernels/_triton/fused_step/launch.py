"""The fused_step tier's launchers: one kernel launch per step for every direction, and the
CUDA-graph replay of the per-step loops."""
from __future__ import annotations

import torch
import triton

from ... import graphs
from ...reference import compute_dtype
from ..common.batches import all_rows_full, batch_sizes_list, finish_forward, step_order
from ..common.grads import stacked_weight_grads
from ..common.precision import backward_precision, dot_settings
from ..common.registration import register_tier_scans
from ..common.tiles import block_b
from ..common.variants import current as current_variants
from .kernels import backward_kernel, forward_kernel
from .tiling import backward_blocks, forward_blocks


def _step_table(orders: list[list[int]], bs: list[int]) -> list[tuple[list[int], list[int]]]:
    """Entry ``s + 1`` for scan steps ``s = -1 .. T``: each direction's time index at step
    ``s`` (``(t, 0)`` before the first and after the last step) and its active rows;
    ``orders[d]`` lists direction d's time indices in order. Built once per launcher, so
    the per-step host loop (the tier's bottleneck) only indexes it."""
    T = len(bs)
    table = []
    for s in range(-1, T + 1):
        ts = [order[min(max(s, 0), T - 1)] for order in orders]
        table.append((ts, [bs[t] if 0 <= s < T else 0 for t in ts]))
    return table


def _pair(values: list[int]) -> tuple[int, int]:
    """Kernel arguments (direction 0, direction 1); a one-direction launch repeats its value."""
    return values[0], values[-1]


def _launch_forward(gx, h0, c0, w_hh, w_hr, batch_sizes, reverse, save):
    """gx [D,T,B,G] (unit last stride), h0 [D,B,P], c0 [D,B,H], w_hh [D,G,P], w_hr [D,P,H] | None.

    One launch per step runs that step of every direction (grid (NB, NM, D)); direction d
    runs reversed when ``reverse != (d == 1)``. Returns the scan contract's six tensors,
    each with a leading [D] dimension.
    """
    D, T, B, G = gx.shape
    H, P = c0.shape[2], h0.shape[2]
    dtype, cdt, dev = gx.dtype, compute_dtype(gx.dtype), gx.device
    has_proj = w_hr is not None
    if gx.stride(3) != 1:
        gx = gx.contiguous()
    h0c, w = h0.contiguous(), w_hh.contiguous()
    bs = batch_sizes_list(batch_sizes, T, B)
    # The kernels write only active rows: zero-filled only when some rows are inactive (packed).
    alloc = torch.empty if all_rows_full(bs, B) else torch.zeros
    out = alloc(D, T, B, P, dtype=dtype, device=dev)
    c_state = c0.to(torch.float32).contiguous().clone()
    gates = torch.empty(D, T, B, G, dtype=cdt, device=dev) if save else gx.new_empty(0, dtype=cdt)
    cs = torch.empty(D, T, B, H, dtype=cdt, device=dev) if save else gx.new_empty(0, dtype=cdt)
    # With a projection, the unprojected h of every step (also the per-step scratch); zeroed
    # when packed because d_w_hr multiplies all rows, active or not.
    hs = alloc(D, T, B, H, dtype=cdt, device=dev) if has_proj else gx.new_empty(0, dtype=cdt)
    hout = hs if has_proj else out
    BB = block_b(B)
    upcast, prec = dot_settings(dtype)
    BH, BK, warps = forward_blocks(H, P, BB, dtype, prec)
    w_hr_t = w_hr.transpose(1, 2) if has_proj else None
    table = _step_table([step_order(T, reverse != (d == 1)) for d in range(D)], bs)
    for s in range(T):
        ts, ns = table[s + 1]
        tps, nps = table[s]
        grid = (triton.cdiv(H, BH), triton.cdiv(max(ns), BB), D)
        forward_kernel[grid](
            gx, out, h0c, w, c_state, hout, gates, cs,
            *_pair(ts), *_pair(tps), *_pair(ns), *_pair(nps), T, B, H, P,
            gx.stride(0), gx.stride(1), gx.stride(2),
            BLOCK_H=BH, BLOCK_B=BB, BLOCK_K=BK, SAVE=save, UPCAST_DOT=upcast, DOT_PRECISION=prec,
            num_warps=warps,
        )
        if has_proj:
            for d in range(D):
                t, n = ts[d], ns[d]
                torch.mm(hs[d, t, :n].to(dtype), w_hr_t[d], out=out[d, t, :n])
    h_n = torch.stack([finish_forward(out[d], c_state[d], c0[d], bs, reverse != (d == 1))[0] for d in range(D)])
    if not save and has_proj:
        hs = gx.new_empty(0, dtype=cdt)
    return out, h_n, c_state.to(c0.dtype), gates, cs, hs


def _launch_backward(grad_out, grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, batch_sizes, reverse,
                     out, gates, cs, hs):
    """The backward of :func:`_launch_forward`; every tensor has the leading [D] dimension."""
    D, T, B, P = out.shape
    H = c0.shape[2]
    G = 4 * H
    cdt, dev = gates.dtype, out.device
    has_proj = w_hr is not None
    bs = batch_sizes_list(batch_sizes, T, B)
    alloc = torch.empty if all_rows_full(bs, B) else torch.zeros  # inactive rows stay zero
    table = _step_table([step_order(T, reverse != (d == 1)) for d in range(D)], bs)
    d_gates = alloc(D, T, B, G, dtype=cdt, device=dev)
    dc = grad_c_n.to(torch.float32).contiguous().clone()
    c0c = c0.contiguous()
    gates, cs = gates.contiguous(), cs.contiguous()
    BB = block_b(B)
    prec = backward_precision(out.dtype, current_variants().backward_tf32)
    BH, BK, warps = backward_blocks(H, BB, prec)
    if not has_proj:
        wt = w_hh.transpose(1, 2).contiguous()  # [D, P, G]: the rows one program needs are contiguous
        g_out = grad_out if grad_out.stride(3) == 1 else grad_out.contiguous()
        g_hn = grad_h_n.contiguous()
        dhr = dc  # unused placeholder pointer
        d_hs = None
    else:
        w_hh_c, w_hr_c = w_hh.to(cdt), w_hr.to(cdt)
        dh = grad_h_n.to(cdt).clone()
        d_hs = alloc(D, T, B, P, dtype=cdt, device=dev)
        dhr = torch.empty(D, B, H, dtype=torch.float32, device=dev)
        wt = g_out = g_hn = dc  # unused placeholder pointers
    for s in range(T - 1, -1, -1):
        ts, ns = table[s + 1]
        tns, nns = table[s + 2]
        tps, nps = table[s]
        if has_proj:
            for d in range(D):
                t, n = ts[d], ns[d]
                dh_t = dh[d, :n] + grad_out[d, t, :n].to(cdt)
                d_hs[d, t, :n] = dh_t
                torch.mm(dh_t, w_hr_c[d], out=dhr[d, :n])
        grid = (triton.cdiv(H, BH), triton.cdiv(max(ns), BB), D)
        backward_kernel[grid](
            d_gates, wt, g_out, g_hn, dhr, dc, gates, cs, c0c,
            *_pair(ts), *_pair(tns), *_pair(tps), *_pair(ns), *_pair(nns), *_pair(nps), T, B, H,
            *((g_out.stride(0), g_out.stride(1), g_out.stride(2)) if not has_proj else (0, 0, 0)),
            BLOCK_H=BH, BLOCK_B=BB, BLOCK_K=BK, FUSE_DH=not has_proj, DOT_PRECISION=prec,
            num_warps=warps,
        )
        if has_proj:
            for d in range(D):
                t, n = ts[d], ns[d]
                dh[d, :n] = d_gates[d, t, :n] @ w_hh_c[d]
    d_w_hh, d_w_hr, d_h0 = stacked_weight_grads(d_gates, out, h0, w_hh, w_hr, d_hs, hs, bs, reverse,
                                                first_dh=not has_proj)
    if has_proj:
        d_h0 = dh
    return d_gates.to(out.dtype), d_h0.to(h0.dtype), dc.to(c0.dtype), d_w_hh, d_w_hr


def _graphed_forward(gx, h0, c0, w_hh, w_hr, batch_sizes, reverse, save):
    """:func:`_launch_forward`, replayed as a CUDA graph inside ``lstm_kernels.cuda_graphs()``."""
    tensors = (gx, h0, c0, w_hh, w_hr)
    T, B = gx.shape[1], gx.shape[2]
    if not (graphs.usable(tensors) and all_rows_full(batch_sizes_list(batch_sizes, T, B), B)):
        return _launch_forward(gx, h0, c0, w_hh, w_hr, batch_sizes, reverse, save)
    key = ("fused_step forward", graphs.signature(tensors), reverse, save, dot_settings(gx.dtype))
    return graphs.run(key, lambda *ts: _launch_forward(*ts, None, reverse, save), tensors)


def _graphed_backward(grad_out, grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, batch_sizes, reverse, out, gates, cs, hs):
    """:func:`_launch_backward`, replayed as a CUDA graph inside ``lstm_kernels.cuda_graphs()``."""
    tensors = (grad_out, grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, out, gates, cs, hs)
    T, B = out.shape[1], out.shape[2]
    if not (graphs.usable(tensors) and all_rows_full(batch_sizes_list(batch_sizes, T, B), B)):
        return _launch_backward(grad_out, grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, batch_sizes, reverse,
                                out, gates, cs, hs)
    prec = backward_precision(out.dtype, current_variants().backward_tf32)
    key = ("fused_step backward", graphs.signature(tensors), reverse, prec)

    def launch(grad_out, grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, out, gates, cs, hs):
        return _launch_backward(grad_out, grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, None, reverse,
                                out, gates, cs, hs)

    return graphs.run(key, launch, tensors)


scan, scan_bidirectional = register_tier_scans("fused_step", _graphed_forward, _graphed_backward)
