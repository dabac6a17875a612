"""The pointwise tier's launchers and its scan: per step a torch recurrent matmul, then one
fused gate/state kernel (see the package docstring)."""
from __future__ import annotations

from typing import Optional

import torch
import triton
from torch import Tensor

from ...ops import register_scan, state_entering_each_step
from ...reference import compute_dtype
from ..common.batches import all_rows_full, batch_sizes_list
from .kernels import backward_kernel, forward_kernel
from .tiling import NUM_WARPS, block_h, block_rows

STORAGE_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


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
    forward_kernel[grid](
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
    backward_kernel[grid](
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


scan = register_scan("pointwise", _scan_forward, _scan_backward)
scan.__doc__ = "Differentiable pointwise-tier scan of one layer direction (contract: ``ops.py``)."
