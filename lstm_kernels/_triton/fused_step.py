"""Tier "fused_step": one kernel launch per time step, recurrent matmul fused with the cell math.

Dimensions: T seq len, B batch, H hidden, P = proj_size or H, G = 4H (gates i, f, g, o);
NB = cdiv(H, BLOCK_H) hidden blocks, NM = cdiv(B, BLOCK_B) batch tiles.

Forward, per step t: program (n, m) owns hidden units ``n*BLOCK_H ..`` of all four gates and
batch rows ``m*BLOCK_B ..``. It computes the transposed product

    gates^T [4 x BLOCK_H, BLOCK_B] = W_hh[g*H + hidden block, :] [BLOCK_H, P] @ h_prev^T [P, BLOCK_B]

(transposed so the small batch is the MMA's N side, which may be as narrow as 16, and the
weight rows of one gate/hidden block are contiguous P-vectors of nn.LSTM's own ``weight_hh``:
no packed copy is needed), adds ``gx[t]``, applies the gate and state math as the epilogue,
updates the fp32 cell state in place and writes the unprojected ``h`` (straight into ``out[t]``
without projection; into ``hs[t]`` for a torch projection matmul otherwise).

Backward, per step t (reverse order of the forward): without projection the same program
layout computes ``dh[t] = dgates[t_next] @ W_hh`` for its own hidden block (P == H) as the
prologue, using a transposed copy ``W_hh^T [P, G]`` built once per backward, then the
gate/state gradients as the epilogue, updating the fp32 ``dc`` state in place. With a
projection, ``dh`` and ``dh @ W_hr`` are torch matmuls per step. Weight gradients are single
large matmuls after the scan (deterministic, no atomics).

Variable lengths (``batch_sizes``): at step t only rows ``< batch_sizes[t]`` run; a row's
``h`` entering step t comes from ``out[t_prev]`` if it ran at ``t_prev``, else from ``h0``.

Directions: the launchers take every tensor with a leading [D] dimension, and each launch
runs one step of every direction (grid axis 2), the reverse direction at ``T - 1 - s``
while the forward one is at ``s``: a bidirectional layer costs T launches, not 2T. The
per-direction scan runs them with D = 1.

Inside ``lstm_kernels.cuda_graphs()`` the per-step loops of unpacked batches are captured
once per shape and replayed as CUDA graphs (``lstm_kernels/graphs.py``).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .. import graphs
from ..reference import compute_dtype
from .common.batches import all_rows_full, batch_sizes_list, finish_forward, step_order
from .common.dtypes import HALF_DTYPES, TL_DTYPES
from .common.gates import activate_gates, gate_dots, store_gates
from .common.grads import stacked_weight_grads
from .common.math import tanh
from .common.precision import backward_precision, dot_settings
from .common.registration import register_tier_scans
from .common.tiles import block_b, pow2, step_warps
from .common.variants import current as current_variants
from .specs import KernelSpec


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _direction_scalar(v0, v1):
    """The per-step scalar of this program's direction: ``v0`` for direction 0, ``v1`` for 1."""
    return v0 + tl.program_id(2) * (v1 - v0)


@triton.jit(do_not_specialize=["t0", "t1", "tp0", "tp1", "bs0", "bs1", "bsp0", "bsp1"])
def _fwd_step_kernel(
    p_gx,  # [D, T, B, G] input projection + biases (strides s_gx_d, s_gx_t, s_gx_b, 1)
    p_out,  # [D, T, B, P] contiguous: h after each step; rows < bs_prev of out[d, t_prev] enter step t
    p_h0,  # [D, B, P] initial h, for rows that did not run at t_prev
    p_w,  # [D, G, P] W_hh, contiguous
    p_c,  # [D, B, H] fp32 cell state, updated in place
    p_hout,  # [D, T, B, H] contiguous destination of the unprojected h (out itself without projection)
    p_gates,  # [D, T, B, G] compute dtype, saved activated gates (SAVE)
    p_cs,  # [D, T, B, H] compute dtype, saved cell states (SAVE)
    t0, t1,  # the time index each direction computes in this launch
    tp0, tp1,  # each direction's previous time index
    bs0, bs1,  # rows < bs are active at t
    bsp0, bsp1,  # rows < bs_prev ran at the previous step (0: this is the first step)
    T, B, H, P,
    s_gx_d, s_gx_t, s_gx_b,
    BLOCK_H: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
    SAVE: tl.constexpr, UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    i_n = tl.program_id(0)
    i_m = tl.program_id(1)
    i_d = tl.program_id(2)
    t = _direction_scalar(t0, t1)
    t_prev = _direction_scalar(tp0, tp1)
    bs = _direction_scalar(bs0, bs1)
    bs_prev = _direction_scalar(bsp0, bsp1)
    o_j = i_n * BLOCK_H + tl.arange(0, BLOCK_H)  # hidden units
    o_b = i_m * BLOCK_B + tl.arange(0, BLOCK_B)  # batch rows
    m_j = o_j < H
    m_b = o_b < bs
    m_carry = o_b < bs_prev
    m_fresh = m_b & (o_b >= bs_prev)
    G = 4 * H
    # Scalar base pointers of this direction and step; tiles index from them as in a D = 1 launch.
    dT = i_d.to(tl.int64) * T
    dB = i_d.to(tl.int64) * B
    p_src = p_out + (dT + t_prev) * B * P  # out[d, t_prev]
    p_init = p_h0 + dB * P
    p_wd = p_w + i_d.to(tl.int64) * G * P

    acc_i = tl.zeros((BLOCK_H, BLOCK_B), dtype=tl.float32)
    acc_f = tl.zeros((BLOCK_H, BLOCK_B), dtype=tl.float32)
    acc_g = tl.zeros((BLOCK_H, BLOCK_B), dtype=tl.float32)
    acc_o = tl.zeros((BLOCK_H, BLOCK_B), dtype=tl.float32)
    for k0 in range(0, P, BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        m_k = o_k < P
        b_h = tl.load(p_src + o_b[None, :].to(tl.int64) * P + o_k[:, None],
                      mask=m_k[:, None] & m_carry[None, :], other=0.0)
        b_h += tl.load(p_init + o_b[None, :].to(tl.int64) * P + o_k[:, None],
                       mask=m_k[:, None] & m_fresh[None, :], other=0.0)
        m_w = m_j[:, None] & m_k[None, :]
        p_wk = p_wd + o_j[:, None].to(tl.int64) * P + o_k[None, :]
        b_wi = tl.load(p_wk, mask=m_w, other=0.0)
        b_wf = tl.load(p_wk + H * P, mask=m_w, other=0.0)
        b_wg = tl.load(p_wk + 2 * H * P, mask=m_w, other=0.0)
        b_wo = tl.load(p_wk + 3 * H * P, mask=m_w, other=0.0)
        acc_i, acc_f, acc_g, acc_o = gate_dots(b_wi, b_wf, b_wg, b_wo, b_h, acc_i, acc_f, acc_g, acc_o,
                                               UPCAST_DOT, DOT_PRECISION)

    m_jb = m_j[:, None] & m_b[None, :]
    row = o_b[None, :].to(tl.int64)
    step = (dT + t) * B  # first row of [d, t] in [D, T, B, X] tensors
    p_g = p_gx + i_d.to(tl.int64) * s_gx_d + t.to(tl.int64) * s_gx_t + row * s_gx_b + o_j[:, None]
    gi, gf, gg, go = activate_gates(p_g, H, m_jb, acc_i, acc_f, acc_g, acc_o)
    p_cj = p_c + dB * H + row * H + o_j[:, None]
    c = gf * tl.load(p_cj, mask=m_jb, other=0.0) + gi * gg
    h = go * tanh(c)
    tl.store(p_cj, c, mask=m_jb)
    tl.store(p_hout + step * H + row * H + o_j[:, None], h.to(p_hout.dtype.element_ty), mask=m_jb)
    if SAVE:
        store_gates(p_gates + step * G + row * G + o_j[:, None], H, gi, gf, gg, go, m_jb)
        tl.store(p_cs + step * H + row * H + o_j[:, None], c.to(p_cs.dtype.element_ty), mask=m_jb)


@triton.jit(do_not_specialize=["t0", "t1", "tn0", "tn1", "tp0", "tp1",
                               "bs0", "bs1", "bsn0", "bsn1", "bsp0", "bsp1"])
def _bwd_step_kernel(
    p_dgates,  # [D, T, B, G] gate gradients: read at t_next (rows < bs_next), written at t
    p_wt,  # [D, P, G] W_hh^T contiguous (FUSE_DH only)
    p_dout,  # [D, T, B, P] upstream grad of out (FUSE_DH only; strides s_do_d, s_do_t, s_do_b, 1)
    p_dhn,  # [D, B, P] upstream grad of h_n, for rows that did not run at t_next (FUSE_DH only)
    p_dhr,  # [D, B, H] fp32 grad of the unprojected h at t (not FUSE_DH)
    p_dc,  # [D, B, H] fp32 grad of the cell state, updated in place
    p_gates,  # [D, T, B, G] saved activated gates
    p_cs,  # [D, T, B, H] saved cell states
    p_c0,  # [D, B, H] initial cell state (rows that did not run at t_prev)
    t0, t1, tn0, tn1, tp0, tp1,  # per direction: this step, the next and the previous in forward order
    bs0, bs1, bsn0, bsn1, bsp0, bsp1,  # active rows at those steps (0: no such step)
    T, B, H,
    s_do_d, s_do_t, s_do_b,
    BLOCK_H: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
    FUSE_DH: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    i_n = tl.program_id(0)
    i_m = tl.program_id(1)
    i_d = tl.program_id(2)
    t = _direction_scalar(t0, t1)
    t_next = _direction_scalar(tn0, tn1)
    t_prev = _direction_scalar(tp0, tp1)
    bs = _direction_scalar(bs0, bs1)
    bs_next = _direction_scalar(bsn0, bsn1)
    bs_prev = _direction_scalar(bsp0, bsp1)
    o_j = i_n * BLOCK_H + tl.arange(0, BLOCK_H)
    o_b = i_m * BLOCK_B + tl.arange(0, BLOCK_B)
    m_j = o_j < H
    m_b = o_b < bs
    m_jb = m_j[:, None] & m_b[None, :]
    row = o_b[None, :].to(tl.int64)
    G = 4 * H
    dT = i_d.to(tl.int64) * T
    d_row = i_d.to(tl.int64) * B + row  # row index into [D, B, X] tensors
    step_row = (dT + t) * B + row  # row index into [D, T, B, X] tensors at t

    if FUSE_DH:
        # dh^T [BLOCK_H, BLOCK_B] = W_hh^T[hidden block, :] @ dgates[t_next]^T, P == H here.
        m_next = o_b < bs_next
        p_wd = p_wt + i_d.to(tl.int64) * H * G + o_j[:, None].to(tl.int64) * G
        p_dn = p_dgates + ((dT + t_next) * B + o_b[None, :]) * G
        acc = tl.zeros((BLOCK_H, BLOCK_B), dtype=tl.float32)
        for k0 in range(0, G, BLOCK_K):
            o_k = k0 + tl.arange(0, BLOCK_K)
            m_k = o_k < G
            b_w = tl.load(p_wd + o_k[None, :], mask=m_j[:, None] & m_k[None, :], other=0.0).to(tl.float32)
            b_d = tl.load(p_dn + o_k[:, None], mask=m_k[:, None] & m_next[None, :], other=0.0)
            acc = tl.dot(b_w, b_d, acc, input_precision=DOT_PRECISION)
        dh = acc + tl.load(p_dhn + d_row * H + o_j[:, None],
                           mask=m_jb & (o_b >= bs_next)[None, :], other=0.0).to(tl.float32)
        dh += tl.load(p_dout + i_d.to(tl.int64) * s_do_d + t.to(tl.int64) * s_do_t + row * s_do_b + o_j[:, None],
                      mask=m_jb, other=0.0).to(tl.float32)
    else:
        dh = tl.load(p_dhr + d_row * H + o_j[:, None], mask=m_jb, other=0.0)

    p_sg = p_gates + step_row * G + o_j[:, None]
    gi = tl.load(p_sg, mask=m_jb, other=0.0).to(tl.float32)
    gf = tl.load(p_sg + H, mask=m_jb, other=0.0).to(tl.float32)
    gg = tl.load(p_sg + 2 * H, mask=m_jb, other=0.0).to(tl.float32)
    go = tl.load(p_sg + 3 * H, mask=m_jb, other=0.0).to(tl.float32)
    c = tl.load(p_cs + step_row * H + o_j[:, None], mask=m_jb, other=0.0).to(tl.float32)
    m_carry = (o_b < bs_prev)[None, :]
    c_prev = tl.load(p_cs + ((dT + t_prev) * B + row) * H + o_j[:, None], mask=m_jb & m_carry,
                     other=0.0).to(tl.float32)
    c_prev += tl.load(p_c0 + d_row * H + o_j[:, None], mask=m_jb & ~m_carry, other=0.0).to(tl.float32)
    tc = tanh(c)
    p_dcj = p_dc + d_row * H + o_j[:, None]
    dc = tl.load(p_dcj, mask=m_jb, other=0.0) + dh * go * (1.0 - tc * tc)
    p_dg = p_dgates + step_row * G + o_j[:, None]
    tl.store(p_dg, dc * gg * gi * (1.0 - gi), mask=m_jb)
    tl.store(p_dg + H, dc * c_prev * gf * (1.0 - gf), mask=m_jb)
    tl.store(p_dg + 2 * H, dc * gi * (1.0 - gg * gg), mask=m_jb)
    tl.store(p_dg + 3 * H, dh * tc * go * (1.0 - go), mask=m_jb)
    tl.store(p_dcj, dc * gf, mask=m_jb)


# ---------------------------------------------------------------------------------------------
# Launch configuration
# ---------------------------------------------------------------------------------------------


def forward_blocks(H: int, P: int, BB: int, dtype: Optional[torch.dtype] = None,
                   precision: str = "tf32") -> tuple[int, int, int]:
    """(BLOCK_H, BLOCK_K, num_warps) of the forward step kernel.

    8 warps, 16 for 32 x 64 tiles: with 4, ptxas spills every 32 x 64 fp16/bf16 tile, and
    with 8 the 32 x 64 tiles spill 8-16 B (fp32 under triton 3.9; fp16/bf16 with the gates
    saved under 3.6, sm_80, since the kernel also serves both directions). fp32 16 x 16
    tiles take 4 with TF32 (AOT check, sm_80 and sm_90, triton 3.6 and 3.9); with IEEE
    (``cudnn.allow_tf32`` off) 4 warps spill 32 B on sm_80 under both, so they keep 8.
    """
    BH = pow2(H, 16, 32)
    warps = 16 if BH * BB >= 2048 else 8
    if dtype == torch.float32 and precision == "tf32":
        warps = 4 if BH * BB <= 256 else warps
    return BH, pow2(P, 16, 32), warps


def backward_blocks(H: int, BB: int, precision: str = "tf32") -> tuple[int, int, int]:
    """(BLOCK_H, BLOCK_K, num_warps) of the backward step kernel.

    16 warps from 1024-element tiles: at 8, ptxas caps the fused-dh 32 x 32 tile at 80
    registers and spills (sm_80); at 4 the 32 x 64 tile spills. ``precision`` (the dh
    matmul's DOT_PRECISION) changes nothing: the fp32 IEEE tiles are spill-free with the
    same counts (AOT check, sm_80 and sm_90, triton 3.6 and 3.9).
    """
    BH = pow2(H, 16, 32)
    return BH, 64, 16 if BH * BB >= 1024 else step_warps(BH, BB)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


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
        _fwd_step_kernel[grid](
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
        _bwd_step_kernel[grid](
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
    key = ("fused_step backward", graphs.signature(tensors), reverse, backward_precision(out.dtype, current_variants().backward_tf32))

    def launch(grad_out, grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, out, gates, cs, hs):
        return _launch_backward(grad_out, grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, None, reverse,
                                out, gates, cs, hs)

    return graphs.run(key, launch, tensors)


scan, scan_bidirectional = register_tier_scans("fused_step", _graphed_forward, _graphed_backward)


# ---------------------------------------------------------------------------------------------
# Ahead-of-time compile specs
# ---------------------------------------------------------------------------------------------

_AOT_HIDDEN = (1, 16, 33, 128, 256, 512, 1024, 2048, 4096)


def _aot_shapes() -> list[tuple[int, int]]:
    """(H, P) for every block choice: P = H, and projections (P < H) on either side of the
    K chunk's step at 16."""
    shapes = []
    for H in _AOT_HIDDEN:
        shapes += [(H, H)] + [(H, P) for P in sorted({min(16, H - 1), H - 1}) if P >= 1]
    return shapes


def _i32(names: str) -> dict[str, str]:
    return {name: "i32" for name in names.split()}


def _aot_precisions(dtype: torch.dtype) -> tuple[str, ...]:
    """DOT_PRECISION values a GPU launch can pass for ``dtype``: fp32 runs TF32 while
    ``cudnn.allow_tf32`` is on (the default) and IEEE when it is off; fp16/bf16 operands
    take the forward's "ieee" (no setting applies) and the backward's TF32."""
    return ("tf32", "ieee") if dtype == torch.float32 else ("ieee",)


def _aot_backward_precisions(dtype: torch.dtype) -> tuple[str, ...]:
    # backward_precision: 16-bit models always take TF32, fp32 follows allow_tf32.
    return ("tf32", "ieee") if dtype == torch.float32 else ("tf32",)


def aot_specs(arch: int) -> list[KernelSpec]:
    """Every (dtype, BLOCK_H, BLOCK_B, BLOCK_K, warps, flags, precision) the launchers produce for
    H, P <= 4096."""
    del arch  # the block choice does not depend on the architecture
    specs = []
    seen = set()
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        tdt = TL_DTYPES[dtype]
        cdt = TL_DTYPES[compute_dtype(dtype)]
        upcast = dtype not in HALF_DTYPES
        for H, P in _aot_shapes():
            # Without a projection (P == H) the kernel writes h to out, with one to hs.
            hout = tdt if P == H else cdt
            for B in (1, 32, 64, 128):
                BB = block_b(B)
                for prec in _aot_precisions(dtype):
                    BH, BK, warps = forward_blocks(H, P, BB, dtype, prec)
                    for save in (False, True):
                        key = ("fwd", tdt, BH, BB, BK, warps, save, hout, prec)
                        if key not in seen:
                            seen.add(key)
                            specs.append(KernelSpec(
                                kernel=_fwd_step_kernel,
                                signature={
                                    "p_gx": f"*{tdt}", "p_out": f"*{tdt}", "p_h0": f"*{tdt}", "p_w": f"*{tdt}",
                                    "p_c": "*fp32", "p_hout": f"*{hout}", "p_gates": f"*{cdt}",
                                    "p_cs": f"*{cdt}", **_i32("t0 t1 tp0 tp1 bs0 bs1 bsp0 bsp1 T B H P"),
                                    **_i32("s_gx_d s_gx_t s_gx_b"),
                                    "BLOCK_H": "constexpr", "BLOCK_B": "constexpr", "BLOCK_K": "constexpr",
                                    "SAVE": "constexpr", "UPCAST_DOT": "constexpr", "DOT_PRECISION": "constexpr",
                                },
                                constexprs=dict(BLOCK_H=BH, BLOCK_B=BB, BLOCK_K=BK, SAVE=save,
                                                UPCAST_DOT=upcast, DOT_PRECISION=prec),
                                num_warps=warps,
                                label=f"fused_step fwd {tdt} BH{BH} BB{BB} BK{BK} save={save} {prec}",
                            ))
                for prec in _aot_backward_precisions(dtype):
                    BH, BK, warps = backward_blocks(H, BB, prec)
                    for fuse in (False, True):
                        key = ("bwd", tdt, BH, BB, BK, warps, fuse, prec)
                        if key not in seen:
                            seen.add(key)
                            specs.append(KernelSpec(
                                kernel=_bwd_step_kernel,
                                signature={
                                    "p_dgates": "*fp32", "p_wt": f"*{tdt}", "p_dout": f"*{tdt}",
                                    "p_dhn": f"*{tdt}",
                                    "p_dhr": "*fp32", "p_dc": "*fp32", "p_gates": f"*{cdt}", "p_cs": f"*{cdt}",
                                    "p_c0": f"*{tdt}", **_i32("t0 t1 tn0 tn1 tp0 tp1 bs0 bs1 bsn0 bsn1 bsp0 bsp1"),
                                    **_i32("T B H s_do_d s_do_t s_do_b"),
                                    "BLOCK_H": "constexpr", "BLOCK_B": "constexpr", "BLOCK_K": "constexpr",
                                    "FUSE_DH": "constexpr", "DOT_PRECISION": "constexpr",
                                },
                                constexprs=dict(BLOCK_H=BH, BLOCK_B=BB, BLOCK_K=BK, FUSE_DH=fuse,
                                                DOT_PRECISION=prec),
                                num_warps=warps,
                                label=f"fused_step bwd {tdt} BH{BH} BB{BB} BK{BK} fuse_dh={fuse} {prec}",
                            ))
    return specs
