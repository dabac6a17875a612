"""The persistent tier's launchers: D directions (1, or 2 for a bidirectional layer) in one
launch, grid (NP, NM, D)."""
from __future__ import annotations

import torch
import triton

from ..._base import triton_interpreting
from ...reference import compute_dtype
from ..common.batches import all_rows_full, batch_sizes_list, device_batch_sizes, finish_forward
from ..common.grads import stacked_weight_grads
from ..common.precision import backward_precision, dot_settings, fp32_ieee, saved_dtype
from ..common.registration import register_tier_scans
from ..common.variants import current as current_variants
from .backward_kernels import backward_kernel, backward_rows_kernel
from .forward_kernels import forward_kernel, forward_tiles_kernel
from .tiling import (
    backward_block_k,
    backward_config,
    backward_polls_per_thread,
    capability_major,
    config_for,
    cooperative_launch,
    does_not_fit,
    h_on_chip,
    prefetches_gx,
    prefetches_saved,
    rows_steps,
    rows_switches,
    stores_final_state_once,
    sm_count,
    uses_low_dot,
)


def _launch_forward(gx, h0, c0, w_hh, w_hr, batch_sizes, reverse, save):
    """gx [D,T,B,G] (any strides, unit last), h0 [D,B,P], c0 [D,B,H], w_hh [D,G,P], w_hr [D,P,H] | None.

    Direction d runs reversed when ``reverse != (d == 1)``. Returns the scan contract's six
    tensors, each with a leading [D] dimension.
    """
    D, T, B, G = gx.shape
    H, P = c0.shape[2], h0.shape[2]
    dtype, cdt, dev = gx.dtype, compute_dtype(gx.dtype), gx.device
    has_proj = w_hr is not None
    upcast, prec = dot_settings(dtype)
    variants = current_variants()
    cfg = config_for(B, H, P, has_proj, dtype, dev, D, precision=prec, variants=variants)
    if gx.stride(3) != 1:
        gx = gx.contiguous()
    bs = batch_sizes_list(batch_sizes, T, B)
    bs_dev = device_batch_sizes(bs, B, dev)
    # Rows inactive at a step are never written: zero-filled only when some are (packed).
    full = all_rows_full(bs, B)
    alloc = torch.empty if full else torch.zeros
    out = alloc(D, T, B, P, dtype=dtype, device=dev)
    c_n = c0.clone(memory_format=torch.contiguous_format)  # the kernel updates the rows that run
    sdt = saved_dtype(dtype, variants.saved_in_storage_dtype, variants.saved_bf16, has_proj)
    gates = torch.empty(D, T, B, G, dtype=sdt, device=dev) if save else gx.new_empty(0, dtype=sdt)
    cs = torch.empty(D, T, B, H, dtype=sdt, device=dev) if save else gx.new_empty(0, dtype=sdt)
    # Zeroed when packed: d_w_hr multiplies all rows, active or not.
    hr = alloc(D, T, B, H, dtype=cdt, device=dev) if has_proj else gx.new_empty(0, dtype=cdt)
    sync = torch.zeros(D, cfg.grid_m, dtype=torch.int32, device=dev)
    w_hh_c = w_hh.contiguous()
    poll = variants.per_thread_poll and not triton_interpreting()  # inline PTX: compiled code only
    if cfg.batch_loop:
        c_f = c0.to(torch.float32).contiguous().clone()
        forward_tiles_kernel[(cfg.NP, 1, D)](
            gx, h0.contiguous(), w_hh_c, bs_dev, out, gates, cs, c_n, c_f, sync,
            T, B, H, P, gx.stride(0), gx.stride(1), gx.stride(2), cfg.NP, int(reverse), cfg.NM,
            BLOCK_H=cfg.BLOCK_H, BLOCK_B=cfg.BLOCK_B, BLOCK_K=cfg.BLOCK_K, SAVE=save, UPCAST_DOT=upcast,
            DOT_PRECISION=prec, PER_THREAD_POLL=poll, num_warps=cfg.num_warps, **cooperative_launch(cfg),
        )
    else:
        forward_kernel[(cfg.NP, cfg.NM, D)](
            gx, h0.contiguous(), c0.contiguous(), w_hh_c, w_hr.contiguous() if has_proj else w_hh_c, bs_dev,
            out, hr, gates, cs, c_n, sync,
            T, B, H, P, gx.stride(0), gx.stride(1), gx.stride(2), cfg.NP,
            int(reverse), USE_BARRIER=cfg.use_barrier, BLOCK_H=cfg.BLOCK_H, BLOCK_P=cfg.BLOCK_P,
            BLOCK_B=cfg.BLOCK_B, BLOCK_K=cfg.BLOCK_K, HAS_PROJ=has_proj, SAVE=save, UPCAST_DOT=upcast,
            DOT_PRECISION=prec, RESIDENT=cfg.resident, H_ON_CHIP=h_on_chip(cfg, has_proj, variants.h_on_chip),
            PER_THREAD_POLL=poll, PREFETCH_GX=prefetches_gx(cfg, variants.prefetch_gx),
            C_N_ONCE=stores_final_state_once(cfg, has_proj, variants.final_state_once),
            num_warps=cfg.num_warps, **cooperative_launch(cfg),
        )
    h_n = torch.stack([finish_forward(out[d], c_n[d], c0[d], bs, reverse != (d == 1))[0] for d in range(D)])
    hs = hr if (save and has_proj) else gx.new_empty(0, dtype=cdt)
    return out, h_n, c_n, gates, cs, hs


def _launch_backward(grad_out, grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, batch_sizes, reverse,
                     out, gates, cs, hs):
    """The backward of :func:`_launch_forward`; every tensor has the leading [D] dimension."""
    D, T, B, P = out.shape
    H = c0.shape[2]
    cdt, dev = compute_dtype(out.dtype), out.device
    has_proj = w_hr is not None
    variants = current_variants()
    prec = backward_precision(out.dtype, variants.backward_tf32)
    cfg = backward_config(B, H, P, has_proj, out.dtype, sm_count(dev), directions=D, major=capability_major(dev),
                          precision=prec, variants=variants)
    if cfg is None:
        raise does_not_fit(B, H, P, out.dtype, dev)
    bs = batch_sizes_list(batch_sizes, T, B)
    bs_dev = device_batch_sizes(bs, B, dev)
    alloc = torch.empty if all_rows_full(bs, B) else torch.zeros  # inactive rows stay zero
    d_gates = alloc(D, T, B, 4 * H, dtype=cdt, device=dev)
    d_hs = alloc(D, T, B, P, dtype=cdt, device=dev) if has_proj else d_gates
    d_c0 = torch.empty(D, B, H, dtype=torch.float32, device=dev).copy_(grad_c_n)  # updated by the kernel
    sync = torch.zeros(D, cfg.grid_m, dtype=torch.int32, device=dev)
    g_out = grad_out if grad_out.stride(3) == 1 else grad_out.contiguous()
    w_hh_c = w_hh.contiguous()
    ieee = fp32_ieee(out.dtype, prec, triton_interpreting())
    low_dot = cfg.resident and uses_low_dot(out.dtype, cfg) and not triton_interpreting()
    if low_dot:
        prec = "ieee"  # 16-bit operands: the precision setting does not apply
    if cfg.row_split:
        _run_backward_rows(cfg, g_out, grad_h_n, w_hh_c, bs_dev, gates, cs, c0, d_gates, d_c0, sync,
                           T, B, H, D, reverse, low_dot, prec, variants)
    else:
        _run_backward(cfg, g_out, grad_h_n, grad_c_n, w_hh_c, w_hr, bs_dev, gates, cs, c0, d_gates, d_hs, d_c0,
                      sync, T, B, H, P, D, reverse, has_proj, low_dot, prec, ieee, variants)
    d_w_hh, d_w_hr, d_h0 = stacked_weight_grads(d_gates, out, h0, w_hh, w_hr, d_hs if has_proj else None, hs,
                                                bs, reverse, first_dh=True)
    return d_gates.to(out.dtype), d_h0.to(h0.dtype), d_c0.to(c0.dtype), d_w_hh, d_w_hr


def _run_backward(cfg, g_out, grad_h_n, grad_c_n, w_hh_c, w_hr, bs_dev, gates, cs, c0, d_gates, d_hs, d_c0, sync,
                  T, B, H, P, D, reverse, has_proj, low_dot, prec, ieee, variants):
    backward_kernel[(cfg.NP, cfg.NM, D)](
        g_out, grad_h_n.contiguous(), grad_c_n.contiguous(), w_hh_c,
        w_hr.contiguous() if has_proj else w_hh_c,
        bs_dev, gates.contiguous(), cs.contiguous(), c0.contiguous(), d_gates, d_hs, d_c0, sync,
        T, B, H, P, g_out.stride(0), g_out.stride(1), g_out.stride(2), cfg.NP,
        int(reverse), USE_BARRIER=cfg.use_barrier, BLOCK_H=cfg.BLOCK_H, BLOCK_P=cfg.BLOCK_P,
        BLOCK_B=cfg.BLOCK_B, BLOCK_K=backward_block_k(cfg, has_proj, ieee, variants.backward_wide_k),
        HAS_PROJ=has_proj, DOT_PRECISION=prec, RESIDENT=cfg.resident, LOW_DOT=low_dot,
        PER_THREAD_POLL=backward_polls_per_thread(has_proj, variants.per_thread_poll)
        and not triton_interpreting(),
        PREFETCH_SAVED=prefetches_saved(cfg, variants.prefetch_saved),
        DC0_ONCE=stores_final_state_once(cfg, has_proj, variants.final_state_once),
        num_warps=cfg.backward_warps, **cooperative_launch(cfg),
    )


def _run_backward_rows(cfg, g_out, grad_h_n, w_hh_c, bs_dev, gates, cs, c0, d_gates, d_c0, sync,
                       T, B, H, D, reverse, low_dot, prec, variants):
    """The row-split backward (``backward_rows_kernel``): each program's dh shares go through a
    [D, 2, NP, B, H] buffer. ``rows_steps`` gives the launches' step ranges."""
    shares = torch.empty(D, 2, cfg.NP, B, H, dtype=torch.float32, device=g_out.device)
    steps = rows_steps(cfg, T)
    switches = rows_switches(cfg, variants, stepwise=len(steps) > 1)
    for s0, s1 in steps:
        backward_rows_kernel[(cfg.NP, cfg.grid_m if len(steps) == 1 else 1, D)](
            g_out, grad_h_n.contiguous(), w_hh_c, bs_dev, gates.contiguous(), cs.contiguous(), c0.contiguous(),
            d_gates, d_c0, shares, sync,
            T, B, H, s0, s1, g_out.stride(0), g_out.stride(1), g_out.stride(2), cfg.NP, int(reverse),
            cfg.NM if switches["BATCH_LOOP"] else 1,
            USE_BARRIER=cfg.use_barrier and len(steps) == 1, BLOCK_H=cfg.BLOCK_H, BLOCK_B=cfg.BLOCK_B,
            BLOCK_K=cfg.BLOCK_K, BLOCK_N=triton.next_power_of_2(cfg.NP), LOW_DOT=low_dot, DOT_PRECISION=prec,
            PER_THREAD_POLL=variants.per_thread_poll and not triton_interpreting(), **switches,
            num_warps=cfg.backward_warps,
            **(cooperative_launch(cfg) if len(steps) == 1 else {}),
        )


# The per-direction scan runs the launchers with D = 1; ``scan_bidirectional`` both directions
# of a layer in one D = 2 launch (the direction-stacked contract, ops.py).
def _saved_dtype(dtype: torch.dtype, has_proj: bool) -> torch.dtype:
    v = current_variants()
    return saved_dtype(dtype, v.saved_in_storage_dtype, v.saved_bf16, has_proj)


scan, scan_bidirectional = register_tier_scans("persistent", _launch_forward, _launch_backward, _saved_dtype)
