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
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..backends import triton_interpreting
from ..ops import register_scan, state_entering_each_step
from ..reference import compute_dtype
from .gates import activate_gates, gate_dots, store_gates
from .math import tanh
from .specs import KernelSpec

_TL_DTYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit(do_not_specialize=["t", "bs", "bs_prev"])
def _fwd_step_kernel(
    p_gx,  # [T, B, G] input projection + biases (strides s_gx_t, s_gx_b, 1)
    p_hsrc,  # [B, P] h after the previous step (out[t_prev]); rows < bs_prev are valid
    p_h0,  # [B, P] initial h, for rows that did not run at t_prev
    p_w,  # [G, P] W_hh, contiguous
    p_c,  # [B, H] fp32 cell state, updated in place
    p_hout,  # [B, H] destination of the unprojected h at step t (row stride s_hout_b)
    p_gates,  # [T, B, G] compute dtype, saved activated gates (SAVE)
    p_cs,  # [T, B, H] compute dtype, saved cell states (SAVE)
    t,  # the time index this launch computes
    bs,  # rows < bs are active at t
    bs_prev,  # rows < bs_prev ran at the previous step
    B, H, P,
    s_gx_t, s_gx_b, s_hsrc_b, s_hout_b,
    BLOCK_H: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
    SAVE: tl.constexpr, UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    i_n = tl.program_id(0)
    i_m = tl.program_id(1)
    o_j = i_n * BLOCK_H + tl.arange(0, BLOCK_H)  # hidden units
    o_b = i_m * BLOCK_B + tl.arange(0, BLOCK_B)  # batch rows
    m_j = o_j < H
    m_b = o_b < bs
    m_carry = o_b < bs_prev
    m_fresh = m_b & (o_b >= bs_prev)
    G = 4 * H

    acc_i = tl.zeros((BLOCK_H, BLOCK_B), dtype=tl.float32)
    acc_f = tl.zeros((BLOCK_H, BLOCK_B), dtype=tl.float32)
    acc_g = tl.zeros((BLOCK_H, BLOCK_B), dtype=tl.float32)
    acc_o = tl.zeros((BLOCK_H, BLOCK_B), dtype=tl.float32)
    for k0 in range(0, P, BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        m_k = o_k < P
        b_h = tl.load(p_hsrc + o_b[None, :].to(tl.int64) * s_hsrc_b + o_k[:, None],
                      mask=m_k[:, None] & m_carry[None, :], other=0.0)
        b_h += tl.load(p_h0 + o_b[None, :].to(tl.int64) * P + o_k[:, None],
                       mask=m_k[:, None] & m_fresh[None, :], other=0.0)
        m_w = m_j[:, None] & m_k[None, :]
        p_wk = p_w + o_j[:, None].to(tl.int64) * P + o_k[None, :]
        b_wi = tl.load(p_wk, mask=m_w, other=0.0)
        b_wf = tl.load(p_wk + H * P, mask=m_w, other=0.0)
        b_wg = tl.load(p_wk + 2 * H * P, mask=m_w, other=0.0)
        b_wo = tl.load(p_wk + 3 * H * P, mask=m_w, other=0.0)
        acc_i, acc_f, acc_g, acc_o = gate_dots(b_wi, b_wf, b_wg, b_wo, b_h, acc_i, acc_f, acc_g, acc_o,
                                               UPCAST_DOT, DOT_PRECISION)

    m_jb = m_j[:, None] & m_b[None, :]
    row = o_b[None, :].to(tl.int64)
    p_g = p_gx + t.to(tl.int64) * s_gx_t + row * s_gx_b + o_j[:, None]
    gi, gf, gg, go = activate_gates(p_g, H, m_jb, acc_i, acc_f, acc_g, acc_o)
    p_cj = p_c + row * H + o_j[:, None]
    c = gf * tl.load(p_cj, mask=m_jb, other=0.0) + gi * gg
    h = go * tanh(c)
    tl.store(p_cj, c, mask=m_jb)
    tl.store(p_hout + row * s_hout_b + o_j[:, None], h.to(p_hout.dtype.element_ty), mask=m_jb)
    if SAVE:
        store_gates(p_gates + (t.to(tl.int64) * B + row) * G + o_j[:, None], H, gi, gf, gg, go, m_jb)
        tl.store(p_cs + (t.to(tl.int64) * B + row) * H + o_j[:, None], c.to(p_cs.dtype.element_ty), mask=m_jb)


@triton.jit(do_not_specialize=["t", "t_next", "t_prev", "bs", "bs_next", "bs_prev"])
def _bwd_step_kernel(
    p_dgates,  # [T, B, G] fp32 gate gradients: read at t_next (rows < bs_next), written at t
    p_wt,  # [P, G] W_hh^T contiguous (FUSE_DH only)
    p_dout,  # [T, B, P] upstream grad of out (FUSE_DH only; strides s_do_t, s_do_b, 1)
    p_dhn,  # [B, P] upstream grad of h_n, for rows that did not run at t_next (FUSE_DH only)
    p_dhr,  # [B, H] fp32 grad of the unprojected h at t (not FUSE_DH)
    p_dc,  # [B, H] fp32 grad of the cell state, updated in place
    p_gates,  # [T, B, G] saved activated gates
    p_cs,  # [T, B, H] saved cell states
    p_c0,  # [B, H] initial cell state (rows that did not run at t_prev)
    t, t_next, t_prev,
    bs, bs_next, bs_prev,
    B, H,
    s_do_t, s_do_b,
    BLOCK_H: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
    FUSE_DH: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    i_n = tl.program_id(0)
    i_m = tl.program_id(1)
    o_j = i_n * BLOCK_H + tl.arange(0, BLOCK_H)
    o_b = i_m * BLOCK_B + tl.arange(0, BLOCK_B)
    m_j = o_j < H
    m_b = o_b < bs
    m_jb = m_j[:, None] & m_b[None, :]
    row = o_b[None, :].to(tl.int64)
    G = 4 * H

    if FUSE_DH:
        # dh^T [BLOCK_H, BLOCK_B] = W_hh^T[hidden block, :] @ dgates[t_next]^T, P == H here.
        m_next = o_b < bs_next
        acc = tl.zeros((BLOCK_H, BLOCK_B), dtype=tl.float32)
        for k0 in range(0, G, BLOCK_K):
            o_k = k0 + tl.arange(0, BLOCK_K)
            m_k = o_k < G
            b_w = tl.load(p_wt + o_j[:, None].to(tl.int64) * G + o_k[None, :],
                          mask=m_j[:, None] & m_k[None, :], other=0.0).to(tl.float32)
            b_d = tl.load(p_dgates + (t_next.to(tl.int64) * B + o_b[None, :]) * G + o_k[:, None],
                          mask=m_k[:, None] & m_next[None, :], other=0.0)
            acc = tl.dot(b_w, b_d, acc, input_precision=DOT_PRECISION)
        dh = acc + tl.load(p_dhn + row * H + o_j[:, None],
                           mask=m_jb & (o_b >= bs_next)[None, :], other=0.0).to(tl.float32)
        dh += tl.load(p_dout + t.to(tl.int64) * s_do_t + row * s_do_b + o_j[:, None],
                      mask=m_jb, other=0.0).to(tl.float32)
    else:
        dh = tl.load(p_dhr + row * H + o_j[:, None], mask=m_jb, other=0.0)

    p_sg = p_gates + (t.to(tl.int64) * B + row) * G + o_j[:, None]
    gi = tl.load(p_sg, mask=m_jb, other=0.0).to(tl.float32)
    gf = tl.load(p_sg + H, mask=m_jb, other=0.0).to(tl.float32)
    gg = tl.load(p_sg + 2 * H, mask=m_jb, other=0.0).to(tl.float32)
    go = tl.load(p_sg + 3 * H, mask=m_jb, other=0.0).to(tl.float32)
    c = tl.load(p_cs + (t.to(tl.int64) * B + row) * H + o_j[:, None], mask=m_jb, other=0.0).to(tl.float32)
    m_carry = (o_b < bs_prev)[None, :]
    c_prev = tl.load(p_cs + (t_prev.to(tl.int64) * B + row) * H + o_j[:, None], mask=m_jb & m_carry,
                     other=0.0).to(tl.float32)
    c_prev += tl.load(p_c0 + row * H + o_j[:, None], mask=m_jb & ~m_carry, other=0.0).to(tl.float32)
    tc = tanh(c)
    p_dcj = p_dc + row * H + o_j[:, None]
    dc = tl.load(p_dcj, mask=m_jb, other=0.0) + dh * go * (1.0 - tc * tc)
    p_dg = p_dgates + (t.to(tl.int64) * B + row) * G + o_j[:, None]
    tl.store(p_dg, dc * gg * gi * (1.0 - gi), mask=m_jb)
    tl.store(p_dg + H, dc * c_prev * gf * (1.0 - gf), mask=m_jb)
    tl.store(p_dg + 2 * H, dc * gi * (1.0 - gg * gg), mask=m_jb)
    tl.store(p_dg + 3 * H, dh * tc * go * (1.0 - go), mask=m_jb)
    tl.store(p_dcj, dc * gf, mask=m_jb)


# ---------------------------------------------------------------------------------------------
# Launch configuration
# ---------------------------------------------------------------------------------------------


def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(max(int(n), 1))))


def block_b(B: int) -> int:
    """Batch tile: the MMA N side; 16 is the smallest tl.dot accepts."""
    return _pow2(B, 16, 64)


def step_warps(BH: int, BB: int) -> int:
    # Four fp32 gate tiles, their 64-bit pointer tiles and (fp16/bf16) the MMA operands of
    # a 32 x 32 tile spill at 4 warps (ptxas, sm_90); 8 warps halve the per-thread share.
    return 8 if BH * BB >= 512 else 4


def forward_blocks(H: int, P: int, BB: int, dtype: Optional[torch.dtype] = None) -> tuple[int, int, int]:
    """(BLOCK_H, BLOCK_K, num_warps) of the forward step kernel.

    8 warps for fp16/bf16 tiles: with 4, ptxas spills every 32 x 64 tile (AOT check, sm_80
    and sm_90). fp32 tiles run TF32 dots, whose operands need other counts to stay
    spill-free: 4 warps for 16 x 16, 16 for 32 x 64 (8 spill 8-16 B there).
    """
    BH = _pow2(H, 16, 32)
    warps = 8
    if dtype == torch.float32:
        warps = 4 if BH * BB <= 256 else (16 if BH * BB >= 2048 else 8)
    return BH, _pow2(P, 16, 32), warps


def backward_blocks(H: int, BB: int) -> tuple[int, int, int]:
    """(BLOCK_H, BLOCK_K, num_warps) of the backward step kernel.

    16 warps from 1024-element tiles: at 8, ptxas caps the fused-dh 32 x 32 tile at 80
    registers and spills (sm_80); at 4 the 32 x 64 tile spills.
    """
    BH = _pow2(H, 16, 32)
    return BH, 64, 16 if BH * BB >= 1024 else step_warps(BH, BB)


def dot_settings(dtype: torch.dtype) -> tuple[bool, str]:
    """(UPCAST_DOT, DOT_PRECISION) for storage ``dtype``.

    fp32 follows nn.LSTM on cuDNN: TF32 tensor-core matmuls while
    ``torch.backends.cudnn.allow_tf32`` is on (PyTorch's default), full IEEE fp32 when it is
    off. fp16/bf16 feed the tensor cores natively with fp32 accumulation. The interpreter's
    bf16 dot is wrong, so there everything is upcast to fp32 right after the loads, in IEEE.
    """
    interpreting = triton_interpreting()
    upcast = interpreting or dtype not in (torch.float16, torch.bfloat16)
    tf32 = dtype == torch.float32 and not interpreting and torch.backends.cudnn.allow_tf32
    return upcast, "tf32" if tf32 else "ieee"


# Whether 16-bit models' backward takes TF32 (``backward_precision``); off: IEEE, as before.
BACKWARD_TF32 = [True]


def backward_precision(dtype: torch.dtype) -> str:
    """DOT_PRECISION of the backward kernels' dh matmul (fp32 gate gradients times W_hh).

    Both operands are fp32 there (the weights upcast), so "ieee" would run on the FMA units:
    on an H200 that made the fp16/bf16 backward 4x slower than the TF32 fp32 one at B=32,
    H=512. fp16/bf16 weights are exact in TF32 and TF32 keeps 3 more mantissa bits of the
    gate gradients than the storage dtype would, so 16-bit models always take TF32; fp32
    follows ``cudnn.allow_tf32`` like the forward. The interpreter computes in IEEE.
    """
    if triton_interpreting():
        return "ieee"
    if dtype in (torch.float16, torch.bfloat16):
        return "tf32" if BACKWARD_TF32[0] else "ieee"
    return dot_settings(dtype)[1]


# ---------------------------------------------------------------------------------------------
# Helpers shared with the persistent tier: variable-length bookkeeping and weight gradients
# ---------------------------------------------------------------------------------------------


def step_order(T: int, reverse: bool) -> list[int]:
    """Time indices in the order the forward runs them."""
    return list(range(T - 1, -1, -1)) if reverse else list(range(T))


def batch_sizes_list(batch_sizes: Optional[Tensor], T: int, B: int) -> list[int]:
    return [B] * T if batch_sizes is None else [int(v) for v in batch_sizes.tolist()]


def check_scan_inputs(gx: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, w_hr: Optional[Tensor], tier: str):
    """Shape/dtype/device checks a launcher does before allocating anything."""
    T, B, G = gx.shape
    H, P = c0.shape[1], h0.shape[1]
    if G != 4 * H or tuple(w_hh.shape) != (4 * H, P):
        raise ValueError(f"triton {tier}: gx [T,B,4H] = {tuple(gx.shape)} and w_hh [4H,P] = "
                         f"{tuple(w_hh.shape)} do not match H={H}, P={P}")
    if w_hr is None and P != H:
        raise ValueError(f"triton {tier}: h0 has width {P} but there is no projection and H={H}")
    if w_hr is not None and tuple(w_hr.shape) != (P, H):
        raise ValueError(f"triton {tier}: w_hr must be [P, H] = {(P, H)}, got {tuple(w_hr.shape)}")
    if gx.dtype not in _TL_DTYPES or gx.dtype == torch.float64:
        raise TypeError(f"triton {tier}: dtype {gx.dtype} is not supported (float32, float16, bfloat16)")
    for name, x in (("h0", h0), ("c0", c0), ("w_hh", w_hh), ("w_hr", w_hr)):
        if x is not None and (x.dtype != gx.dtype or x.device != gx.device):
            raise ValueError(f"triton {tier}: {name} is {x.dtype} on {x.device}, "
                             f"gx is {gx.dtype} on {gx.device}")


def all_rows_full(bs: list[int], B: int) -> bool:
    """Whether every row runs every step (no packing): the helpers below then index with
    plain slices instead of index tensors built on the host, whose copy to the GPU would
    make the host wait for the device on every call."""
    return len(bs) == 0 or (bs[0] == B and bs[-1] == B)  # batch sizes never increase


def device_batch_sizes(bs: list[int], B: int, device) -> Tensor:
    """``bs`` as an int32 tensor on ``device``; filled on the device when every row is full."""
    if all_rows_full(bs, B):
        return torch.full((len(bs),), B, dtype=torch.int32, device=device)
    return torch.tensor(bs, dtype=torch.int32).to(device)


def rows_last_first(bs: list[int], B: int, reverse: bool, device) -> tuple[Tensor, Tensor]:
    """Per row: the time index of its last and of its first step in the forward's order."""
    # A row's length is the number of steps whose active prefix covers it (one tensor op:
    # a Python loop over T x B cost ~1 ms per call at T=512, B=128).
    lengths = (torch.tensor(bs, dtype=torch.int64)[:, None] > torch.arange(B)[None, :]).sum(0)
    if reverse:
        last, first = torch.zeros(B, dtype=torch.int64), lengths - 1
    else:
        last, first = lengths - 1, torch.zeros(B, dtype=torch.int64)
    return last.to(device), first.to(device)


def finish_forward(out: Tensor, c_state: Tensor, c0: Tensor, bs: list[int], reverse: bool):
    """(h_n, c_n) from the output and the final fp32 cell state."""
    B = out.shape[1]
    if all_rows_full(bs, B) and out.shape[0] > 0:
        # A copy: a custom op's outputs may not alias one another.
        return out[0 if reverse else out.shape[0] - 1].clone(), c_state.to(c0.dtype)
    last, _ = rows_last_first(bs, B, reverse, out.device)
    h_n = out[last, torch.arange(B, device=out.device)]
    return h_n, c_state.to(c0.dtype)


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


def first_step_dh(d_gates: Tensor, w_hh: Tensor, bs: list[int], reverse: bool) -> Tensor:
    """Gradient into h0 [B, P]: each row's gate gradient at its first step, times W_hh."""
    B = d_gates.shape[1]
    if all_rows_full(bs, B) and d_gates.shape[0] > 0:
        return d_gates[d_gates.shape[0] - 1 if reverse else 0] @ w_hh.to(d_gates.dtype)
    _, first = rows_last_first(bs, B, reverse, d_gates.device)
    return d_gates[first, torch.arange(B, device=d_gates.device)] @ w_hh.to(d_gates.dtype)


# ---------------------------------------------------------------------------------------------
# Launchers
# ---------------------------------------------------------------------------------------------


def _forward(gx, h0, c0, w_hh, w_hr, batch_sizes, reverse, save):
    check_scan_inputs(gx, h0, c0, w_hh, w_hr, "fused_step")
    T, B, G = gx.shape
    H, P = c0.shape[1], h0.shape[1]
    dtype, cdt = gx.dtype, compute_dtype(gx.dtype)
    if gx.stride(2) != 1:
        gx = gx.contiguous()
    h0c, w = h0.contiguous(), w_hh.contiguous()
    bs = batch_sizes_list(batch_sizes, T, B)
    # Inactive rows of out must be zero, and the kernels write only active rows.
    out = torch.zeros(T, B, P, dtype=dtype, device=gx.device)
    c_state = c0.to(torch.float32).contiguous().clone()
    gates = torch.empty(T, B, G, dtype=cdt, device=gx.device) if save else gx.new_empty(0, dtype=cdt)
    cs = torch.empty(T, B, H, dtype=cdt, device=gx.device) if save else gx.new_empty(0, dtype=cdt)
    hs = gx.new_empty(0, dtype=cdt)
    if w_hr is not None:
        # Also the per-step scratch; zeroed because d_w_hr multiplies all rows, active or not.
        hs = torch.zeros(T, B, H, dtype=cdt, device=gx.device)
    BB = block_b(B)
    BH, BK, warps = forward_blocks(H, P, BB, dtype)
    upcast, prec = dot_settings(dtype)
    w_hr_t = None if w_hr is None else w_hr.t()
    t_prev, bs_prev = 0, 0
    for t in step_order(T, reverse):
        n_rows = bs[t]
        hsrc = out[t_prev] if bs_prev > 0 else h0c
        hout = hs[t] if w_hr is not None else out[t]
        grid = (triton.cdiv(H, BH), triton.cdiv(n_rows, BB))
        _fwd_step_kernel[grid](
            gx, hsrc, h0c, w, c_state, hout, gates, cs,
            t, n_rows, bs_prev, B, H, P,
            gx.stride(0), gx.stride(1), hsrc.stride(0), hout.stride(0),
            BLOCK_H=BH, BLOCK_B=BB, BLOCK_K=BK, SAVE=save, UPCAST_DOT=upcast, DOT_PRECISION=prec,
            num_warps=warps,
        )
        if w_hr is not None:
            torch.mm(hs[t, :n_rows].to(dtype), w_hr_t, out=out[t, :n_rows])
        t_prev, bs_prev = t, n_rows
    h_n, c_n = finish_forward(out, c_state, c0, bs, reverse)
    if not save and w_hr is not None:
        hs = gx.new_empty(0, dtype=cdt)
    return out, h_n, c_n, gates, cs, hs


def _backward(grad_out, grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, batch_sizes, reverse, out, gates, cs, hs):
    T, B, P = out.shape
    H = c0.shape[1]
    G = 4 * H
    cdt = gates.dtype
    bs = batch_sizes_list(batch_sizes, T, B)
    order = step_order(T, reverse)
    d_gates = torch.zeros(T, B, G, dtype=cdt, device=out.device)
    dc = grad_c_n.to(torch.float32).contiguous().clone()
    c0c = c0.contiguous()
    gates, cs = gates.contiguous(), cs.contiguous()
    BB = block_b(B)
    BH, BK, warps = backward_blocks(H, BB)
    prec = backward_precision(out.dtype)
    fuse = w_hr is None
    if fuse:
        wt = w_hh.t().contiguous()  # [P, G]: the rows one program needs are contiguous
        g_out = grad_out if grad_out.stride(2) == 1 else grad_out.contiguous()
        g_hn = grad_h_n.contiguous()
        dhr = dc  # unused placeholder pointer
        d_hs = None
    else:
        w_hh_c, w_hr_c = w_hh.to(cdt), w_hr.to(cdt)
        dh = grad_h_n.to(cdt).clone()
        d_hs = torch.zeros(T, B, P, dtype=cdt, device=out.device)
        dhr = torch.empty(B, H, dtype=torch.float32, device=out.device)
        wt = g_out = g_hn = dc  # unused placeholder pointers
    for s in range(T - 1, -1, -1):
        t = order[s]
        t_next, bs_next = (order[s + 1], bs[order[s + 1]]) if s + 1 < T else (t, 0)
        t_prev, bs_prev = (order[s - 1], bs[order[s - 1]]) if s > 0 else (t, 0)
        n_rows = bs[t]
        if not fuse:
            dh_t = dh[:n_rows] + grad_out[t, :n_rows].to(cdt)
            d_hs[t, :n_rows] = dh_t
            torch.mm(dh_t, w_hr_c, out=dhr[:n_rows])
        grid = (triton.cdiv(H, BH), triton.cdiv(n_rows, BB))
        _bwd_step_kernel[grid](
            d_gates, wt, g_out, g_hn, dhr, dc, gates, cs, c0c,
            t, t_next, t_prev, n_rows, bs_next, bs_prev, B, H,
            g_out.stride(0) if fuse else 0, g_out.stride(1) if fuse else 0,
            BLOCK_H=BH, BLOCK_B=BB, BLOCK_K=BK, FUSE_DH=fuse, DOT_PRECISION=prec,
            num_warps=warps,
        )
        if not fuse:
            dh[:n_rows] = d_gates[t, :n_rows] @ w_hh_c
    d_w_hh, d_w_hr = weight_grads(d_gates, out, h0, w_hh, bs, reverse, d_hs, hs, w_hr)
    d_h0 = first_step_dh(d_gates, w_hh, bs, reverse) if fuse else dh
    return d_gates.to(out.dtype), d_h0.to(h0.dtype), dc.to(c0.dtype), d_w_hh, d_w_hr


scan = register_scan("fused_step", _forward, _backward)


# ---------------------------------------------------------------------------------------------
# Ahead-of-time compile specs
# ---------------------------------------------------------------------------------------------

_AOT_HIDDEN = (1, 16, 33, 128, 256, 512, 1024, 2048, 4096)


def aot_specs(arch: int) -> list[KernelSpec]:
    """Every (dtype, BLOCK_H, BLOCK_B, BLOCK_K, warps, flags) the launchers produce for H, P <= 4096."""
    del arch  # the block choice does not depend on the architecture
    specs = []
    seen = set()
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        tdt = _TL_DTYPES[dtype]
        cdt = _TL_DTYPES[compute_dtype(dtype)]
        upcast = dtype not in (torch.float16, torch.bfloat16)
        prec = "tf32" if dtype == torch.float32 else "ieee"  # the forward's default
        for H in _AOT_HIDDEN:
            for B in (1, 32, 64, 128):
                BB = block_b(B)
                BH, BK, warps = forward_blocks(H, H, BB, dtype)
                for save, hout in ((False, tdt), (True, tdt), (False, cdt), (True, cdt)):
                    key = ("fwd", tdt, BH, BB, BK, warps, save, hout)
                    if key not in seen:
                        seen.add(key)
                        specs.append(KernelSpec(
                            kernel=_fwd_step_kernel,
                            signature={
                                "p_gx": f"*{tdt}", "p_hsrc": f"*{tdt}", "p_h0": f"*{tdt}", "p_w": f"*{tdt}",
                                "p_c": "*fp32", "p_hout": f"*{hout}", "p_gates": f"*{cdt}",
                                "p_cs": f"*{cdt}", "t": "i32", "bs": "i32", "bs_prev": "i32",
                                "B": "i32", "H": "i32", "P": "i32",
                                "s_gx_t": "i32", "s_gx_b": "i32", "s_hsrc_b": "i32", "s_hout_b": "i32",
                                "BLOCK_H": "constexpr", "BLOCK_B": "constexpr", "BLOCK_K": "constexpr",
                                "SAVE": "constexpr", "UPCAST_DOT": "constexpr", "DOT_PRECISION": "constexpr",
                            },
                            constexprs=dict(BLOCK_H=BH, BLOCK_B=BB, BLOCK_K=BK, SAVE=save,
                                            UPCAST_DOT=upcast, DOT_PRECISION=prec),
                            num_warps=warps,
                            label=f"fused_step fwd {tdt} BH{BH} BB{BB} BK{BK} save={save}",
                        ))
                BH, BK, warps = backward_blocks(H, BB)
                for fuse in (False, True):
                    key = ("bwd", tdt, BH, BB, BK, warps, fuse)
                    if key not in seen:
                        seen.add(key)
                        specs.append(KernelSpec(
                            kernel=_bwd_step_kernel,
                            signature={
                                "p_dgates": "*fp32", "p_wt": f"*{tdt}", "p_dout": f"*{tdt}",
                                "p_dhn": f"*{tdt}",
                                "p_dhr": "*fp32", "p_dc": "*fp32", "p_gates": f"*{cdt}", "p_cs": f"*{cdt}",
                                "p_c0": f"*{tdt}", "t": "i32", "t_next": "i32", "t_prev": "i32",
                                "bs": "i32", "bs_next": "i32", "bs_prev": "i32", "B": "i32", "H": "i32",
                                "s_do_t": "i32", "s_do_b": "i32",
                                "BLOCK_H": "constexpr", "BLOCK_B": "constexpr", "BLOCK_K": "constexpr",
                                "FUSE_DH": "constexpr", "DOT_PRECISION": "constexpr",
                            },
                            constexprs=dict(BLOCK_H=BH, BLOCK_B=BB, BLOCK_K=BK, FUSE_DH=fuse,
                                            DOT_PRECISION="tf32"),
                            num_warps=warps,
                            label=f"fused_step bwd {tdt} BH{BH} BB{BB} BK{BK} fuse_dh={fuse}",
                        ))
    return specs
