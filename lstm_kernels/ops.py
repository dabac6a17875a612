"""torch.library custom ops: one forward op and one backward op per backend scan.

A backend that runs a whole layer direction in its own code (TorchScript, Triton)
registers its forward and backward implementations here with :func:`register_scan`.
The pair becomes ``lstm_kernels::<name>_scan`` and ``lstm_kernels::<name>_scan_backward``,
with fake (meta) implementations and ``register_autograd``, so ``torch.compile`` sees
one opaque op per layer direction and never breaks the graph inside it.

Scan contract (shared by every backend, see ``reference.lstm_scan`` for the math):

forward(gx [T,B,4H], h0 [B,P], c0 [B,H], w_hh [4H,P], w_hr [P,H] | None,
        batch_sizes [T] int64 on CPU | None, reverse, save)
    -> out [T,B,P], h_n [B,P], c_n [B,H],
       gates [T,B,4H], cs [T,B,H], hs [T,B,H]          (saved for backward)

The saved tensors are in the compute dtype (float32 for half/bfloat16 storage):
``gates`` holds the activated gates (i, f, g, o), ``cs`` the cell state after each
step and ``hs`` the unprojected hidden state (only with ``w_hr``). When ``save`` is
False, or ``hs`` is not needed, they are empty tensors of shape ``[0]``. Rows inactive
at a step (``batch_sizes``) are zero in the saved tensors: ``register_scan`` zeroes them
after the backend's forward, so a backend may leave them unwritten.

backward(grad_out, grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, batch_sizes, reverse,
         out, gates, cs, hs) -> d_gx, d_h0, d_c0, d_w_hh, d_w_hr ([0] when no w_hr)

A backend may also register a direction-stacked scan (both directions of a layer in one
op): every tensor above gains a leading [D] dimension (``batch_sizes`` excepted), and
direction d runs reversed when ``reverse != (d == 1)``.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from .reference import compute_dtype

_SCANS: dict[str, Callable[..., tuple[Tensor, Tensor, Tensor]]] = {}


def _saved_shapes(gx: Tensor, c0: Tensor, w_hr: Optional[Tensor], save: bool):
    """Shapes of (gates, cs, hs); leading dimensions of a stacked scan carry through."""
    lead = tuple(gx.shape[:-1])  # [T, B] or [D, T, B]
    H = c0.shape[-1]
    if not save:
        return (0,), (0,), (0,)
    return tuple(gx.shape), lead + (H,), (lead + (H,) if w_hr is not None else (0,))


def _zero_inactive_rows(batch_sizes: Tensor, saved) -> None:
    """Zero, in place, the rows of saved ``[..., T, B, X]`` tensors inactive at each step.

    Unwritten rows would make an op's outputs depend on leftover memory (opcheck fails),
    and backward's d_w_hr = d_hs^T @ hs would turn garbage NaN/inf there into NaN. Leading
    dimensions (e.g. both directions stacked on [2]) broadcast; empty tensors are skipped.
    """
    B = saved[0].shape[-2]
    if batch_sizes.numel() == 0 or int(batch_sizes[-1]) >= B:  # non-increasing: last is the minimum
        return
    inactive = torch.arange(B).unsqueeze(0) >= batch_sizes.unsqueeze(1)  # [T, B] on CPU
    inactive = inactive.unsqueeze(-1).to(saved[0].device, non_blocking=True)
    for t in saved:
        if t.numel():
            t.masked_fill_(inactive, 0)


def state_entering_each_step(seq: Tensor, init: Tensor, batch_sizes: list, reverse: bool) -> Tensor:
    """The state entering each step, ``[T, B, X]``, from the states after each step.

    ``seq [T, B, X]`` holds a state after each step (``out`` for h, ``cs`` for c) and
    ``init [B, X]`` the initial one. A row enters step t with its state from the previous
    step in scan order if it was active there, otherwise with ``init`` (reverse scans start
    each sequence at its own last step). ``batch_sizes`` is a list (empty: all rows active).
    """
    T, B = seq.shape[0], seq.shape[1]
    first = init.to(seq.dtype).unsqueeze(0)
    prev = torch.cat([seq[1:], first], 0) if reverse else torch.cat([first, seq[:-1]], 0)
    if len(batch_sizes) == 0:
        return prev
    bs = torch.tensor(batch_sizes, dtype=torch.long, device=seq.device)
    zero = torch.zeros(1, dtype=torch.long, device=seq.device)
    prev_bs = torch.cat([bs[1:], zero]) if reverse else torch.cat([zero, bs[:-1]])
    carried = (torch.arange(B, device=seq.device)[None, :] < prev_bs[:, None]).unsqueeze(2)
    return torch.where(carried, prev, first.expand(T, B, seq.shape[2]))


def register_scan(name: str, forward_impl: Callable, backward_impl: Callable,
                  directions: Optional[int] = None,
                  saved_dtype: Optional[Callable[[torch.dtype, bool], torch.dtype]] = None) -> Callable:
    """Register a backend's scan as a custom op pair; return the differentiable caller.

    ``directions=None``: the per-direction contract; ``directions=2``: the direction-stacked
    one (every tensor with a leading [2]), recorded as ``scan.directions``. ``saved_dtype``
    maps (storage dtype, has a projection) to the dtype of the saved gates and cell states
    (None: the compute dtype; a backend may store them narrower).
    """
    if saved_dtype is None:
        def saved_dtype(dtype: torch.dtype, has_proj: bool) -> torch.dtype:
            return compute_dtype(dtype)

    @torch.library.custom_op(f"lstm_kernels::{name}_scan", mutates_args=())
    def scan_fwd(
        gx: Tensor,
        h0: Tensor,
        c0: Tensor,
        w_hh: Tensor,
        w_hr: Optional[Tensor],
        batch_sizes: Optional[Tensor],
        reverse: bool,
        save: bool,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        res = forward_impl(gx, h0, c0, w_hh, w_hr, batch_sizes, reverse, save)
        if save and batch_sizes is not None:
            _zero_inactive_rows(batch_sizes, res[3:])
        return res

    @scan_fwd.register_fake
    def _(gx, h0, c0, w_hh, w_hr, batch_sizes, reverse, save):
        cdt, sdt = compute_dtype(gx.dtype), saved_dtype(gx.dtype, w_hr is not None)
        g_shape, c_shape, h_shape = _saved_shapes(gx, c0, w_hr, save)
        return (
            gx.new_empty(*gx.shape[:-1], h0.shape[-1]),
            h0.new_empty(h0.shape),
            c0.new_empty(c0.shape),
            gx.new_empty(g_shape, dtype=sdt),
            gx.new_empty(c_shape, dtype=sdt),
            gx.new_empty(h_shape, dtype=cdt),
        )

    @torch.library.custom_op(f"lstm_kernels::{name}_scan_backward", mutates_args=())
    def scan_bwd(
        grad_out: Tensor,
        grad_h_n: Tensor,
        grad_c_n: Tensor,
        h0: Tensor,
        c0: Tensor,
        w_hh: Tensor,
        w_hr: Optional[Tensor],
        batch_sizes: Optional[Tensor],
        reverse: bool,
        out: Tensor,
        gates: Tensor,
        cs: Tensor,
        hs: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        return backward_impl(
            grad_out, grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, batch_sizes, reverse, out, gates, cs, hs
        )

    @scan_bwd.register_fake
    def _(grad_out, grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, batch_sizes, reverse, out, gates, cs, hs):
        return (
            gates.new_empty(gates.shape, dtype=out.dtype),
            h0.new_empty(h0.shape),
            c0.new_empty(c0.shape),
            w_hh.new_empty(w_hh.shape),
            # Without a projection: [0], or [D, 0] for a direction-stacked scan.
            w_hh.new_empty(w_hr.shape if w_hr is not None else (*w_hh.shape[:-2], 0)),
        )

    def setup_context(ctx, inputs, output):
        gx, h0, c0, w_hh, w_hr, batch_sizes, reverse, save = inputs
        out, _, _, gates, cs, hs = output
        ctx.reverse = reverse
        ctx.has_proj = w_hr is not None
        ctx.has_bs = batch_sizes is not None
        ctx.save_for_backward(
            h0, c0, w_hh,
            w_hr if w_hr is not None else h0.new_empty(0),
            batch_sizes if batch_sizes is not None else h0.new_empty(0, dtype=torch.int64, device="cpu"),
            out, gates, cs, hs,
        )

    def backward(ctx, grad_out, grad_h_n, grad_c_n, *_):
        h0, c0, w_hh, w_hr, batch_sizes, out, gates, cs, hs = ctx.saved_tensors
        if gates.numel() == 0 and out.numel() != 0:
            raise RuntimeError(
                "lstm_kernels: the scan ran without saving activations (grad was disabled "
                "during the forward), so it cannot be differentiated"
            )
        grad_out = torch.zeros_like(out) if grad_out is None else grad_out
        grad_h_n = torch.zeros_like(h0) if grad_h_n is None else grad_h_n
        grad_c_n = torch.zeros_like(c0) if grad_c_n is None else grad_c_n
        d_gx, d_h0, d_c0, d_w_hh, d_w_hr = scan_bwd(
            grad_out, grad_h_n, grad_c_n, h0, c0, w_hh,
            w_hr if ctx.has_proj else None,
            batch_sizes if ctx.has_bs else None,
            ctx.reverse, out, gates, cs, hs,
        )
        return d_gx, d_h0, d_c0, d_w_hh, (d_w_hr if ctx.has_proj else None), None, None, None

    scan_fwd.register_autograd(backward, setup_context=setup_context)

    def no_double_backward(ctx, *grads):
        # Without this, autograd fails with "no autograd formula was registered", which
        # does not tell the user what to do.
        raise RuntimeError(
            f"lstm_kernels: double backward (differentiating a gradient, e.g. backward after "
            f"torch.autograd.grad(..., create_graph=True)) is not supported by the custom op "
            f"lstm_kernels::{name}_scan. Use backend='reference', whose eager ops support it."
        )

    scan_bwd.register_autograd(no_double_backward, setup_context=lambda ctx, inputs, output: None)

    def scan(gx, h0, c0, w_hh, w_hr, batch_sizes, reverse):
        save = torch.is_grad_enabled() and any(
            t is not None and t.requires_grad for t in (gx, h0, c0, w_hh, w_hr)
        )
        out, h_n, c_n, _, _, _ = scan_fwd(gx, h0, c0, w_hh, w_hr, batch_sizes, reverse, save)
        return out, h_n, c_n

    scan.forward_op = scan_fwd
    scan.backward_op = scan_bwd
    scan.directions = directions
    _SCANS[name] = scan
    return scan


def registered_scans() -> dict[str, Callable[..., tuple[Tensor, Tensor, Tensor]]]:
    """Every scan registered so far, by name (a copy): ``torchscript`` and
    ``torchscript_bidir`` once ``scripted`` is imported, plus each Triton tier whose module
    has been imported (tests/test_ops.py runs the op checks over all of them)."""
    return dict(_SCANS)
