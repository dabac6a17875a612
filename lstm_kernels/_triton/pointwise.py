"""The "pointwise" tier: per step a torch recurrent matmul, then one fused gate/state kernel.

Dimensions:
    T  sequence length     B  batch size (rows)     bs  active rows at a step (<= B)
    H  hidden size         P  output width (proj_size or H)
    G  = 4H, the gate pre-activations in nn.LSTM's order (i, f, g, o)

Forward, per step ``t`` (in time order, or reversed):
    pre = gx[t, :bs] + h[:bs] @ W_hh^T            torch.addmm (cuBLAS on a GPU)
    _lstm_fwd_kernel(pre, c)                       gates, c, h in one launch
    out[t, :bs] = h_unprojected[:bs] @ W_hr^T      torch.mm, only with a projection
Backward, per step in the opposite order:
    dh_t = dh[:bs] + grad_out[t, :bs]              (then @ W_hr with a projection)
    _lstm_bwd_kernel(dh_t, dc)                     d_gates[t] and dc_prev in one launch
    dh[:bs] = d_gates[t, :bs] @ W_hh               torch.mm
and after the loop dW_hh, dW_hr as one matmul each over all steps.

Kernel precision: every load is upcast to the compute dtype (float32 for float16,
bfloat16 and float32 storage; float64 for float64 storage, which the kernels support),
all math runs there, and each value is cast once at its store. The saved activations
(gates, cs, hs) are in the compute dtype, as the scan contract in ``ops.py`` asks.

Specializations: the grid is (blocks of BLOCK_B active rows, blocks of BLOCK_H hidden
units). ``BLOCK_H`` is the next power of two of H clamped to ``BLOCK_H_CHOICES``
(32 .. 1024; a larger H uses several 1024-wide blocks) and ``BLOCK_B = 1024 // BLOCK_H``,
so every program covers 1024 units of each gate with ``NUM_WARPS`` = 8 warps (with 4
warps some float16 variants spill at sm_90). The step index ``t`` and the active row
count ``bs`` are never specialized on, and the per-step tensors are addressed as fixed
base pointers plus an offset computed from ``t`` inside the kernel, so neither the
sequence length nor the step changes the compiled kernel. ``aot_specs`` lists exactly
the (dtype, BLOCK_H, flags) combinations the launchers below can produce.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from ..ops import register_scan, state_entering_each_step
from ..reference import compute_dtype
from .common.batches import all_rows_full, batch_sizes_list
from .common.dtypes import TL_DTYPES
from .common.math import sigmoid, tanh
from .specs import KernelSpec

BLOCK_H_CHOICES = (32, 64, 128, 256, 512, 1024)
# Every program covers BLOCK_B x BLOCK_H = 1024 units (x 4 gates) with 8 warps: enough work
# per program at small H, and one program per 1024 units of a row at large H.
TILE = 1024
NUM_WARPS = 8
STORAGE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
# Arguments that change from step to step; every other integer is fixed for a whole scan.
DO_NOT_SPECIALIZE = ("t", "bs")


@triton.jit
def _round_to_bf16(x):
    # fp32 -> fp32 holding the nearest bfloat16 (ties to even), so the cast after it is
    # exact: the interpreter's own fp32 -> bf16 cast truncates instead of rounding.
    bits = x.to(tl.uint32, bitcast=True)
    bits = ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16) << 16
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _to_storage(x, DTYPE: tl.constexpr):
    if DTYPE == tl.bfloat16:
        x = _round_to_bf16(x.to(tl.float32))
    return x.to(DTYPE)


@triton.jit(do_not_specialize=list(DO_NOT_SPECIALIZE))
def _lstm_fwd_kernel(
    p_pre,  # [bs, 4H] gate pre-activations (i, f, g, o) of this step, row stride s_pre, unit column stride
    p_c,  # [B, H] compute dtype, contiguous: c_prev on entry, c on exit (rows < bs)
    p_h,  # [B, H] storage dtype, contiguous: receives the unprojected h (rows < bs)
    p_out,  # [T, B, H] storage dtype, contiguous: h also goes to out[t] (only when not PROJ)
    p_gates,  # [T, B, 4H] compute dtype, contiguous: activated gates saved at [t] (only when SAVE)
    p_cs,  # [T, B, H] compute dtype, contiguous: c saved at [t] (only when SAVE)
    p_hs,  # [T, B, H] compute dtype, contiguous: unprojected h saved at [t] (only when SAVE and PROJ)
    t,  # step index into the [T, ...] tensors; varies per step, never specialized
    bs,  # active rows at this step (the first bs rows); varies per step, never specialized
    B,  # rows of the state and saved tensors
    H,  # hidden size
    s_pre,  # row stride of p_pre, in elements
    BLOCK_B: tl.constexpr,  # rows per program
    BLOCK_H: tl.constexpr,  # hidden units per program, a power of two >= 32
    SAVE: tl.constexpr,  # write gates and cs (training)
    PROJ: tl.constexpr,  # h is projected later by torch: save it to hs, do not write out
):
    i_b = tl.program_id(0)
    i_h = tl.program_id(1)
    o_b = i_b.to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    o_h = i_h * BLOCK_H + tl.arange(0, BLOCK_H)
    m = (o_b < bs)[:, None] & (o_h < H)[None, :]
    cdt = p_c.dtype.element_ty

    o_pre = o_b[:, None] * s_pre + o_h[None, :]
    # Upcast right after each load: all gate math runs in the compute dtype.
    b_i = tl.load(p_pre + o_pre, mask=m, other=0.0).to(cdt)
    b_f = tl.load(p_pre + o_pre + H, mask=m, other=0.0).to(cdt)
    b_g = tl.load(p_pre + o_pre + 2 * H, mask=m, other=0.0).to(cdt)
    b_o = tl.load(p_pre + o_pre + 3 * H, mask=m, other=0.0).to(cdt)
    o_state = o_b[:, None] * H + o_h[None, :]
    b_c_prev = tl.load(p_c + o_state, mask=m, other=0.0).to(cdt)

    b_i = sigmoid(b_i)
    b_f = sigmoid(b_f)
    b_g = tanh(b_g)
    b_o = sigmoid(b_o)
    b_c = b_f * b_c_prev + b_i * b_g
    b_h = b_o * tanh(b_c)

    tl.store(p_c + o_state, b_c.to(p_c.dtype.element_ty), mask=m)
    tl.store(p_h + o_state, _to_storage(b_h, p_h.dtype.element_ty), mask=m)
    # int64: (t * B + row) * 4H passes 2^31 on long sequences with large batches.
    o_row = o_b + t.to(tl.int64) * B
    o_step = o_row[:, None] * H + o_h[None, :]
    if not PROJ:
        tl.store(p_out + o_step, _to_storage(b_h, p_out.dtype.element_ty), mask=m)
    if SAVE:
        o_gates = o_row[:, None] * (4 * H) + o_h[None, :]
        tl.store(p_gates + o_gates, b_i.to(p_gates.dtype.element_ty), mask=m)
        tl.store(p_gates + o_gates + H, b_f.to(p_gates.dtype.element_ty), mask=m)
        tl.store(p_gates + o_gates + 2 * H, b_g.to(p_gates.dtype.element_ty), mask=m)
        tl.store(p_gates + o_gates + 3 * H, b_o.to(p_gates.dtype.element_ty), mask=m)
        tl.store(p_cs + o_step, b_c.to(p_cs.dtype.element_ty), mask=m)
        if PROJ:
            tl.store(p_hs + o_step, b_h.to(p_hs.dtype.element_ty), mask=m)


@triton.jit(do_not_specialize=list(DO_NOT_SPECIALIZE))
def _lstm_bwd_kernel(
    p_dh,  # [bs, H] compute dtype, contiguous: total grad into the unprojected h of step t
    p_dc,  # [B, H] compute dtype, contiguous: grad into c of step t on entry, into c_prev on exit (rows < bs)
    p_gates,  # [T, B, 4H] compute dtype, contiguous: saved activated gates (i, f, g, o)
    p_cs,  # [T, B, H] compute dtype, contiguous: saved c after each step
    p_c_prev,  # [T, B, H] compute dtype, contiguous: c entering each step
    p_dgates,  # [T, B, 4H] compute dtype, contiguous: grad of the pre-activations, written at [t]
    t,  # step index; varies per step, never specialized
    bs,  # active rows at this step (the first bs rows); varies per step, never specialized
    B,  # rows of the state and saved tensors
    H,  # hidden size
    BLOCK_B: tl.constexpr,  # rows per program
    BLOCK_H: tl.constexpr,  # hidden units per program, a power of two >= 32
):
    i_b = tl.program_id(0)
    i_h = tl.program_id(1)
    o_b = i_b.to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    o_h = i_h * BLOCK_H + tl.arange(0, BLOCK_H)
    m = (o_b < bs)[:, None] & (o_h < H)[None, :]
    cdt = p_dc.dtype.element_ty

    o_state = o_b[:, None] * H + o_h[None, :]
    o_row = o_b + t.to(tl.int64) * B
    o_step = o_row[:, None] * H + o_h[None, :]
    o_gates = o_row[:, None] * (4 * H) + o_h[None, :]
    b_dh = tl.load(p_dh + o_state, mask=m, other=0.0).to(cdt)
    b_dc = tl.load(p_dc + o_state, mask=m, other=0.0).to(cdt)
    b_i = tl.load(p_gates + o_gates, mask=m, other=0.0).to(cdt)
    b_f = tl.load(p_gates + o_gates + H, mask=m, other=0.0).to(cdt)
    b_g = tl.load(p_gates + o_gates + 2 * H, mask=m, other=0.0).to(cdt)
    b_o = tl.load(p_gates + o_gates + 3 * H, mask=m, other=0.0).to(cdt)
    b_c = tl.load(p_cs + o_step, mask=m, other=0.0).to(cdt)
    b_c_prev = tl.load(p_c_prev + o_step, mask=m, other=0.0).to(cdt)

    # tanh(c) is recomputed rather than saved: one more exp is cheaper than T*B*H more memory.
    b_tc = tanh(b_c)
    b_dc = b_dc + b_dh * b_o * (1.0 - b_tc * b_tc)
    b_di = b_dc * b_g * b_i * (1.0 - b_i)
    b_df = b_dc * b_c_prev * b_f * (1.0 - b_f)
    b_dg = b_dc * b_i * (1.0 - b_g * b_g)
    b_do = b_dh * b_tc * b_o * (1.0 - b_o)

    dt_out = p_dgates.dtype.element_ty
    tl.store(p_dgates + o_gates, b_di.to(dt_out), mask=m)
    tl.store(p_dgates + o_gates + H, b_df.to(dt_out), mask=m)
    tl.store(p_dgates + o_gates + 2 * H, b_dg.to(dt_out), mask=m)
    tl.store(p_dgates + o_gates + 3 * H, b_do.to(dt_out), mask=m)
    tl.store(p_dc + o_state, (b_dc * b_f).to(p_dc.dtype.element_ty), mask=m)


def block_h(H: int) -> int:
    """The ``BLOCK_H`` the launchers use for hidden size ``H`` (one of ``BLOCK_H_CHOICES``)."""
    return min(max(triton.next_power_of_2(H), BLOCK_H_CHOICES[0]), BLOCK_H_CHOICES[-1])


def block_rows(BLOCK_H: int) -> int:
    """Rows per program for ``BLOCK_H`` (fixed per ``BLOCK_H``, so it adds no specializations)."""
    return TILE // BLOCK_H


def _check_storage_dtype(dtype: torch.dtype, what: str) -> None:
    if dtype not in STORAGE_DTYPES:
        raise TypeError(
            f"triton pointwise kernels: {what} has dtype {dtype}; supported are "
            f"{', '.join(str(d) for d in STORAGE_DTYPES)}"
        )


def _check(t: Optional[Tensor], name: str, shape: tuple, dtype: torch.dtype, device: torch.device) -> None:
    if t is None:
        return
    if tuple(t.shape) != tuple(shape):
        raise ValueError(
            f"triton pointwise kernels: {name} must have shape {list(shape)}, got {list(t.shape)}"
        )
    if t.dtype != dtype:
        raise TypeError(f"triton pointwise kernels: {name} must be {dtype}, got {t.dtype}")
    if t.device != device:
        raise ValueError(f"triton pointwise kernels: {name} is on {t.device}, expected {device}")
    if not t.is_contiguous():
        raise ValueError(f"triton pointwise kernels: {name} must be contiguous")


def lstm_cell_forward(
    pre: Tensor,
    c: Tensor,
    h: Tensor,
    *,
    t: int = 0,
    out: Optional[Tensor] = None,
    gates: Optional[Tensor] = None,
    cs: Optional[Tensor] = None,
    hs: Optional[Tensor] = None,
) -> None:
    """One LSTM cell update from gate pre-activations, in one kernel launch, in place.

    Args:
        pre: ``[bs, 4H]`` pre-activations ``gx[t] + h_prev @ W_hh^T`` in gate order
            (i, f, g, o), storage or compute dtype, any row stride, unit column stride.
        c: ``[B, H]`` cell state in the compute dtype of ``h``; rows ``< bs`` are read as
            ``c_prev`` and overwritten with the new ``c``. Rows ``>= bs`` are untouched.
        h: ``[B, H]`` storage dtype; rows ``< bs`` receive the new (unprojected) h.
        t: the step index into ``out``/``gates``/``cs``/``hs``.
        out: ``[T, B, H]``: also write h into ``out[t]`` (no projection). Without ``out``
            the caller projects h itself and, when saving, h is saved into ``hs``.
        gates, cs: ``[T, B, 4H]`` / ``[T, B, H]`` in the compute dtype: save the activated
            gates and c at ``[t]`` (both or neither).
        hs: ``[T, B, H]`` compute dtype: save the unprojected h at ``[t]``; required when
            saving without ``out``, not allowed with ``out``.
    """
    _validate_forward(pre, c, h, t, out, gates, cs, hs)
    _launch_forward(pre, c, h, t, out, gates, cs, hs)


def _validate_forward(pre, c, h, t, out, gates, cs, hs) -> None:
    if pre.dim() != 2 or h.dim() != 2 or c.dim() != 2:
        raise ValueError("triton pointwise kernels: pre, c and h must be 2-D ([bs, 4H], [B, H], [B, H])")
    bs, G = pre.shape
    B, H = h.shape
    if G != 4 * H:
        raise ValueError(f"triton pointwise kernels: pre has {G} columns, expected 4 * H = {4 * H}")
    if bs > B:
        raise ValueError(f"triton pointwise kernels: pre has {bs} rows but the state only {B}")
    _check_storage_dtype(h.dtype, "h")
    cdt = compute_dtype(h.dtype)
    if pre.dtype not in (h.dtype, cdt):
        raise TypeError(f"triton pointwise kernels: pre must be {h.dtype} or {cdt}, got {pre.dtype}")
    if bs > 0 and pre.stride(1) != 1:
        raise ValueError("triton pointwise kernels: pre must have unit column stride")
    _check(c, "c", (B, H), cdt, h.device)
    _check(h, "h", (B, H), h.dtype, h.device)
    if pre.device != h.device:
        raise ValueError(f"triton pointwise kernels: pre is on {pre.device}, h on {h.device}")
    save = gates is not None
    if (cs is not None) != save:
        raise ValueError("triton pointwise kernels: pass both gates and cs to save activations, or neither")
    proj = out is None
    if proj and save and hs is None:
        raise ValueError("triton pointwise kernels: saving without out (projected h) needs hs")
    if not (proj and save) and hs is not None:
        raise ValueError("triton pointwise kernels: hs is only written when saving without out")
    T = None
    for name, x in (("out", out), ("gates", gates), ("cs", cs), ("hs", hs)):
        if x is not None:
            if x.dim() != 3:
                raise ValueError(f"triton pointwise kernels: {name} must be 3-D [T, B, ...]")
            T = x.shape[0] if T is None else T
    if T is not None and not 0 <= t < T:
        raise ValueError(f"triton pointwise kernels: step t={t} out of range for T={T}")
    _check(out, "out", (T, B, H), h.dtype, h.device)
    _check(gates, "gates", (T, B, 4 * H), cdt, h.device)
    _check(cs, "cs", (T, B, H), cdt, h.device)
    _check(hs, "hs", (T, B, H), cdt, h.device)


def _launch_forward(pre, c, h, t, out, gates, cs, hs) -> None:
    bs = pre.shape[0]
    B, H = h.shape
    if bs == 0:
        return
    save = gates is not None
    proj = out is None
    BLOCK_H = block_h(H)
    BLOCK_B = block_rows(BLOCK_H)
    grid = (triton.cdiv(bs, BLOCK_B), triton.cdiv(H, BLOCK_H))
    # Unused pointers get a tensor of the same dtype, so the signature (and the compiled
    # kernel) depends only on the flags.
    _lstm_fwd_kernel[grid](
        pre, c, h,
        h if out is None else out,
        c if gates is None else gates,
        c if cs is None else cs,
        c if hs is None else hs,
        t, bs, B, H, pre.stride(0),
        BLOCK_B=BLOCK_B, BLOCK_H=BLOCK_H, SAVE=save, PROJ=proj,
        num_warps=NUM_WARPS,
    )


def lstm_cell_backward(
    dh: Tensor, dc: Tensor, gates: Tensor, cs: Tensor, c_prev: Tensor, d_gates: Tensor, *, t: int
) -> None:
    """Backward of one cell update, in one kernel launch, in place.

    Args:
        dh: ``[bs, H]`` compute dtype: total gradient into the unprojected h of step ``t``.
        dc: ``[B, H]`` compute dtype: rows ``< bs`` hold the gradient into c of step ``t``
            and are overwritten with the gradient into ``c_prev``.
        gates, cs, c_prev: ``[T, B, 4H]``, ``[T, B, H]``, ``[T, B, H]`` compute dtype: saved
            activated gates, c after each step, and c entering each step.
        d_gates: ``[T, B, 4H]`` compute dtype; rows ``< bs`` of ``d_gates[t]`` receive the
            gradient of the gate pre-activations.
    """
    _validate_backward(dh, dc, gates, cs, c_prev, d_gates, t)
    _launch_backward(dh, dc, gates, cs, c_prev, d_gates, t)


def _validate_backward(dh, dc, gates, cs, c_prev, d_gates, t) -> None:
    if dh.dim() != 2 or dc.dim() != 2 or gates.dim() != 3:
        raise ValueError("triton pointwise kernels: dh, dc must be 2-D and gates 3-D")
    bs = dh.shape[0]
    B, H = dc.shape
    T = gates.shape[0]
    cdt = dc.dtype
    if cdt not in (torch.float32, torch.float64):
        raise TypeError(f"triton pointwise kernels: backward runs in float32 or float64, got {cdt}")
    if bs > B:
        raise ValueError(f"triton pointwise kernels: dh has {bs} rows but the state only {B}")
    if not 0 <= t < T:
        raise ValueError(f"triton pointwise kernels: step t={t} out of range for T={T}")
    _check(dh, "dh", (bs, H), cdt, dc.device)
    _check(dc, "dc", (B, H), cdt, dc.device)
    _check(gates, "gates", (T, B, 4 * H), cdt, dc.device)
    _check(cs, "cs", (T, B, H), cdt, dc.device)
    _check(c_prev, "c_prev", (T, B, H), cdt, dc.device)
    _check(d_gates, "d_gates", (T, B, 4 * H), cdt, dc.device)


def _launch_backward(dh, dc, gates, cs, c_prev, d_gates, t) -> None:
    bs = dh.shape[0]
    B, H = dc.shape
    if bs == 0:
        return
    BLOCK_H = block_h(H)
    BLOCK_B = block_rows(BLOCK_H)
    grid = (triton.cdiv(bs, BLOCK_B), triton.cdiv(H, BLOCK_H))
    _lstm_bwd_kernel[grid](
        dh, dc, gates, cs, c_prev, d_gates, t, bs, B, H,
        BLOCK_B=BLOCK_B, BLOCK_H=BLOCK_H, num_warps=NUM_WARPS,
    )


def _scan_forward(gx, h0, c0, w_hh, w_hr, batch_sizes, reverse, save):
    T, B, G = gx.shape
    H = c0.shape[1]
    P = h0.shape[1]
    dtype = gx.dtype
    _check_storage_dtype(dtype, "the input")
    cdt = compute_dtype(dtype)
    device = gx.device
    bs_list = batch_sizes_list(batch_sizes, T, B)
    has_bs = not all_rows_full(bs_list, B)
    proj = w_hr is not None

    # Inactive rows of a packed batch must read as zero in out; the saved tensors'
    # inactive rows are zeroed by register_scan.
    out = (torch.zeros if has_bs else torch.empty)(T, B, P, dtype=dtype, device=device)
    h = h0.clone(memory_format=torch.contiguous_format)
    c = c0.to(dtype=cdt, memory_format=torch.contiguous_format, copy=True)
    h_unproj = torch.empty(B, H, dtype=dtype, device=device) if proj else h
    gates = torch.empty((T, B, G) if save else (0,), dtype=cdt, device=device)
    cs = torch.empty((T, B, H) if save else (0,), dtype=cdt, device=device)
    hs = torch.empty((T, B, H) if save and proj else (0,), dtype=cdt, device=device)
    w_hh_t = w_hh.t()
    w_hr_t = w_hr.t() if proj else None

    checked = False
    for s in range(T):
        t = T - 1 - s if reverse else s
        bs = bs_list[t]
        if bs == 0:
            continue
        pre = torch.addmm(gx[t, :bs], h[:bs], w_hh_t)
        args = (
            pre, c, h_unproj, t,
            None if proj else out,
            gates if save else None,
            cs if save else None,
            hs if save and proj else None,
        )
        if not checked:
            # Every step passes tensors of the same kinds: checking once keeps the
            # per-step host overhead to the launch itself.
            _validate_forward(*args)
            checked = True
        _launch_forward(*args)
        if proj:
            torch.mm(h_unproj[:bs], w_hr_t, out=out[t, :bs])
            h[:bs] = out[t, :bs]
    return out, h, c.to(c0.dtype), gates, cs, hs


def _scan_backward(
    grad_out, grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, batch_sizes, reverse, out, gates, cs, hs
):
    T, B, P = out.shape
    H = c0.shape[1]
    dtype = out.dtype
    cdt = gates.dtype
    device = out.device
    bs_list = batch_sizes_list(batch_sizes, T, B)
    has_bs = not all_rows_full(bs_list, B)
    proj = w_hr is not None

    packed = bs_list if has_bs else []
    h_prev = state_entering_each_step(out, h0, packed, reverse)
    c_prev = state_entering_each_step(cs, c0, packed, reverse).contiguous()
    gates = gates.contiguous()
    cs = cs.contiguous()
    # Inactive rows get no gradient, and they take part in the dW_hh matmul below.
    alloc = torch.zeros if has_bs else torch.empty
    d_gates = alloc(T, B, 4 * H, dtype=cdt, device=device)
    # d_hs[t] is the total grad into the projected h of step t (the dW_hr factor);
    # without a projection one [B, P] buffer is enough.
    d_hs = alloc((T, B, P) if proj else (1, B, P), dtype=cdt, device=device)
    dh = grad_h_n.to(dtype=cdt, memory_format=torch.contiguous_format, copy=True)
    dc = grad_c_n.to(dtype=cdt, memory_format=torch.contiguous_format, copy=True)
    w_hh_c = w_hh.to(cdt)
    w_hr_c = w_hr.to(cdt) if proj else None
    g_out = grad_out.to(cdt)

    checked = False
    for s in range(T):
        t = s if reverse else T - 1 - s
        bs = bs_list[t]
        if bs == 0:
            continue
        dh_t = d_hs[t if proj else 0, :bs]
        torch.add(dh[:bs], g_out[t, :bs], out=dh_t)
        dh_unproj = torch.mm(dh_t, w_hr_c) if proj else dh_t
        args = (dh_unproj, dc, gates, cs, c_prev, d_gates, t)
        if not checked:
            _validate_backward(*args)
            checked = True
        _launch_backward(*args)
        torch.mm(d_gates[t, :bs], w_hh_c, out=dh[:bs])

    d_w_hh = torch.mm(d_gates.reshape(T * B, 4 * H).t(), h_prev.reshape(T * B, P).to(cdt))
    if proj:
        d_w_hr = torch.mm(d_hs.reshape(T * B, P).t(), hs.reshape(T * B, H)).to(w_hr.dtype)
    else:
        d_w_hr = torch.empty(0, dtype=w_hh.dtype, device=device)
    return d_gates.to(dtype), dh.to(h0.dtype), dc.to(c0.dtype), d_w_hh.to(w_hh.dtype), d_w_hr


scan = register_scan("triton_pointwise", _scan_forward, _scan_backward)
scan.__doc__ = "Differentiable pointwise-tier scan of one layer direction (contract: ``ops.py``)."


def aot_specs(arch: int) -> list[KernelSpec]:
    """Every specialization the launchers above can produce, for the AOT compile check.

    Forward: storage dtype x ``BLOCK_H_CHOICES`` x the four flag combinations the
    launcher allows (SAVE, PROJ); backward: compute dtype (float32, float64) x
    ``BLOCK_H_CHOICES``; ``BLOCK_B`` follows from ``BLOCK_H`` and ``num_warps`` is fixed.
    """
    specs = []
    for dtype in STORAGE_DTYPES:
        st = TL_DTYPES[dtype]
        ct = TL_DTYPES[compute_dtype(dtype)]
        for BLOCK_H in BLOCK_H_CHOICES:
            for save in (False, True):
                for proj in (False, True):
                    signature = {
                        "p_pre": f"*{st}", "p_c": f"*{ct}", "p_h": f"*{st}", "p_out": f"*{st}",
                        "p_gates": f"*{ct}", "p_cs": f"*{ct}", "p_hs": f"*{ct}",
                        "t": "i32", "bs": "i32", "B": "i32", "H": "i32", "s_pre": "i32",
                        "BLOCK_B": "constexpr", "BLOCK_H": "constexpr",
                        "SAVE": "constexpr", "PROJ": "constexpr",
                    }
                    specs.append(KernelSpec(
                        kernel=_lstm_fwd_kernel,
                        signature=signature,
                        constexprs={
                            "BLOCK_B": block_rows(BLOCK_H), "BLOCK_H": BLOCK_H, "SAVE": save, "PROJ": proj,
                        },
                        num_warps=NUM_WARPS,
                        label=f"pointwise fwd {st} BLOCK_H={BLOCK_H} save={int(save)} proj={int(proj)}",
                        extra={"arch": arch},
                    ))
    for cdt in (torch.float32, torch.float64):
        ct = TL_DTYPES[cdt]
        for BLOCK_H in BLOCK_H_CHOICES:
            signature = {
                "p_dh": f"*{ct}", "p_dc": f"*{ct}", "p_gates": f"*{ct}", "p_cs": f"*{ct}",
                "p_c_prev": f"*{ct}", "p_dgates": f"*{ct}",
                "t": "i32", "bs": "i32", "B": "i32", "H": "i32",
                "BLOCK_B": "constexpr", "BLOCK_H": "constexpr",
            }
            specs.append(KernelSpec(
                kernel=_lstm_bwd_kernel,
                signature=signature,
                constexprs={"BLOCK_B": block_rows(BLOCK_H), "BLOCK_H": BLOCK_H},
                num_warps=NUM_WARPS,
                label=f"pointwise bwd {ct} BLOCK_H={BLOCK_H}",
                extra={"arch": arch},
            ))
    return specs
