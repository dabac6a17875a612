"""Validation, layout (batch_first, unbatched, packed) and backend choice.

Everything that can be wrong with a call is checked here, before any computation, with
the exception types ``nn.LSTM`` uses (and clearer ones where ``nn.LSTM`` is poor), so a
failed call changes nothing. The checked, time-major, padded problem then goes to
``loop.lstm_layers``.
"""
from __future__ import annotations

import contextlib
from typing import Optional, Sequence

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import backends, dispatch
from .loop import lstm_layers
from .native import torch_lstm


def exporting() -> bool:
    """True under ``torch.onnx.export`` (either exporter) and ``torch.jit.trace``.

    Those graphs then hold ``aten::lstm`` (``native.torch_lstm``), which both ONNX
    exporters translate to ONNX's ``LSTM`` op and which a trace replays on any T and B;
    our custom ops have no ONNX translation and the Python dispatch would be frozen into
    a trace (tests/test_onnx.py, tests/test_torchscript.py).

    The legacy exporter traces with ``torch.jit`` and the dynamo one runs under
    ``torch.export``, so outside both no export can be under way: eager calls skip
    ``is_in_onnx_export``, which imports two modules on every call.
    """
    if torch.jit.is_tracing():
        return True
    return torch.compiler.is_compiling() and torch.onnx.is_in_onnx_export()


def _type_name(x) -> str:
    return type(x).__name__


def check_hx_structure(hx, owner: str) -> Optional[tuple[Tensor, Tensor]]:
    if hx is None:
        return None
    if isinstance(hx, Tensor):
        raise TypeError(
            f"{owner}: hx must be a tuple (h0, c0) of two tensors, got a single Tensor; "
            "pass (h0, c0) or None"
        )
    if not isinstance(hx, (tuple, list)):
        raise TypeError(f"{owner}: hx must be a tuple (h0, c0) of two tensors, got {_type_name(hx)}")
    if len(hx) != 2:
        raise RuntimeError(f"{owner}: hx must be a tuple (h0, c0) of two tensors, got {len(hx)} elements")
    for k, t in enumerate(hx):
        if not isinstance(t, Tensor):
            raise TypeError(f"{owner}: hx[{k}] must be a Tensor, got {_type_name(t)}")
        if t.layout != torch.strided:
            raise RuntimeError(f"{owner}: hx[{k}] must be a dense (strided) tensor, got layout {t.layout}")
    return hx[0], hx[1]


def _check_state_like(hx: tuple[Tensor, Tensor], x: Tensor, owner: str) -> None:
    for k, t in enumerate(hx):
        if t.dtype != x.dtype and not _autocast_on(x):
            raise RuntimeError(
                f"{owner}: hx[{k}] dtype ({t.dtype}) does not match input dtype ({x.dtype})"
            )
        if t.device != x.device:
            raise RuntimeError(
                f"{owner}: hx[{k}] is on {t.device} but input is on {x.device}; "
                "input and hidden tensors must be on the same device"
            )


def _autocast_on(x: Tensor) -> bool:
    return torch.is_autocast_enabled(x.device.type)


def check_input_dtype(x: Tensor, weight: Tensor, owner: str) -> None:
    if not x.is_floating_point():
        raise ValueError(
            f"{owner}: input dtype ({x.dtype}) does not match weight dtype ({weight.dtype}). "
            f"Convert input: input.to({weight.dtype})"
        )
    if x.dtype != weight.dtype and not _autocast_on(x):
        raise ValueError(
            f"RNN input dtype ({x.dtype}) does not match weight dtype ({weight.dtype}). "
            f"Convert input: input.to({weight.dtype}), or convert model: model.to({x.dtype})"
        )
    if x.device != weight.device:
        raise RuntimeError(f"{owner}: input is on {x.device} but the weights are on {weight.device}")
    if x.layout != torch.strided:
        raise RuntimeError(f"{owner}: input must be a dense (strided) tensor, got layout {x.layout}")


def _no_autocast(x: Tensor, autocast: bool):
    """Autocast switched off around the computation (inputs are cast once, before it); a
    no-op context when autocast is off, which saves entering one on every call."""
    if autocast:
        return torch.autocast(x.device.type, enabled=False)
    return contextlib.nullcontext()


def _autocast_cast(x: Tensor, hx: tuple[Tensor, Tensor], weights, autocast: bool):
    """Under autocast, cast input, states and weights once to the autocast dtype."""
    if not autocast:
        return x, hx, weights
    dt = torch.get_autocast_dtype(x.device.type)
    # Autocast's own rule: float64 tensors are never cast (nn.LSTM stays float64 under it).
    cast = lambda t: t if t is None or t.dtype == torch.float64 else t.to(dt)  # noqa: E731
    return cast(x), (cast(hx[0]), cast(hx[1])), [[cast(w) for w in ws] for ws in weights]


def lstm(
    input,
    hx,
    weights: Sequence[Sequence[Optional[Tensor]]],
    *,
    input_size: int,
    hidden_size: int,
    num_layers: int,
    batch_first: bool,
    dropout: float,
    training: bool,
    bidirectional: bool,
    proj_size: int,
    backend: str,
):
    """Functional ``nn.LSTM`` forward: same inputs and results, see ``LSTM.forward``."""
    owner = "LSTM"
    D = 2 if bidirectional else 1
    P = proj_size if proj_size > 0 else hidden_size
    weight0 = weights[0][0]
    hx = check_hx_structure(hx, owner)

    if isinstance(input, PackedSequence):
        data, batch_sizes, sorted_indices, unsorted_indices = input
        check_input_dtype(data, weight0, owner)
        if data.dim() != 2:
            raise RuntimeError(f"input must have 2 dimensions, got {data.dim()}")
        if data.size(-1) != input_size:
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {input_size}, got {data.size(-1)}"
            )
        B = int(batch_sizes[0])
        x = data  # padded below only for a backend that needs it (not one with run_layers)
        if hx is not None:
            _check_hidden(hx, (num_layers * D, B, P), (num_layers * D, B, hidden_size), 3, True, x, owner)
            if sorted_indices is not None:
                hx = (hx[0].index_select(1, sorted_indices), hx[1].index_select(1, sorted_indices))
        is_batched = True
    elif isinstance(input, Tensor):
        batch_sizes = None
        check_input_dtype(input, weight0, owner)
        if input.dim() not in (2, 3):
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
        if input.size(-1) != input_size:
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected {input_size}, got {input.size(-1)}"
            )
        is_batched = input.dim() == 3
        x = input if is_batched else input.unsqueeze(1 if not batch_first else 0)
        if batch_first:
            x = x.transpose(0, 1)
        if x.size(0) == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        B = x.size(1)
        if hx is not None:
            _check_hidden(
                hx, (num_layers * D, B, P), (num_layers * D, B, hidden_size), 3 if is_batched else 2,
                is_batched, x, owner,
            )
            if not is_batched:
                hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
    else:
        raise TypeError(f"LSTM: input must be a Tensor or a PackedSequence, got {_type_name(input)}")

    if hx is None:
        hx = (
            x.new_zeros(num_layers * D, B, P),
            x.new_zeros(num_layers * D, B, hidden_size),
        )
    autocast = _autocast_on(x)
    x, hx, weights = _autocast_cast(x, hx, weights, autocast)
    if proj_size > 0 and torch.onnx.is_in_onnx_export():
        # The legacy exporter refuses this for nn.LSTM too; the dynamo one writes a graph that
        # onnxruntime rejects at run time (tests/test_onnx.py::test_proj_size_export_is_refused).
        raise RuntimeError(
            "LSTM: ONNX export with proj_size > 0 is not supported: ONNX's LSTM op has no projections"
        )
    if exporting():
        # x is packed data here when batch_sizes is given, as torch_lstm takes it.
        out, h_n, c_n = torch_lstm(x, hx[0], hx[1], weights, num_layers, D, dropout, training, batch_sizes)
    else:
        steps = len(batch_sizes) if batch_sizes is not None else x.size(0)
        problem = dispatch.Problem(
            x.device, x.dtype, _grad_needed(x, hx, weights), B, input_size, hidden_size, proj_size,
            num_layers, D, weights[0][2] is not None, batch_sizes is not None, steps,
        )
        impl = _pick(backend, problem, x, hx, weights, num_layers, D, training, batch_sizes)
        with _no_autocast(x, autocast):
            out, h_n, c_n = run_layers(impl, x, hx[0], hx[1], weights, num_layers, D, dropout, training,
                                       batch_sizes)

    if batch_sizes is not None:
        packed = PackedSequence(out, batch_sizes, sorted_indices, unsorted_indices)
        if unsorted_indices is not None:
            h_n = h_n.index_select(1, unsorted_indices)
            c_n = c_n.index_select(1, unsorted_indices)
        return packed, (h_n, c_n)
    if batch_first:
        out = out.transpose(0, 1)
    if not is_batched:
        out = out.squeeze(0 if batch_first else 1)
        h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
    return out, (h_n, c_n)


def run_layers(impl, x, h0, c0, weights, num_layers, D, dropout, training, batch_sizes):
    """The layered computation on ``impl``. With ``batch_sizes``, ``x`` and ``out`` are packed
    data: padded around ``loop.lstm_layers``, handed as they are to a backend with ``run_layers``."""
    if impl.runs_layers:
        return impl.run_layers(x, h0, c0, weights, num_layers, D, dropout, training, batch_sizes)
    if batch_sizes is None:
        return lstm_layers(x, h0, c0, weights, num_layers, D, dropout, training, None, impl)
    padded, lengths = pad_packed_sequence(PackedSequence(x, batch_sizes))  # [T, B, I], sorted
    out, h_n, c_n = lstm_layers(padded, h0, c0, weights, num_layers, D, dropout, training, batch_sizes, impl)
    return pack_padded_sequence(out, lengths).data, h_n, c_n


def _grad_needed(x, hx, weights) -> bool:
    if not torch.is_grad_enabled():
        return False
    return any(t is not None and t.requires_grad for t in (x, hx[0], hx[1], *(w for ws in weights for w in ws)))


def _pick(backend: str, problem, x, hx, weights, num_layers, D, training, batch_sizes):
    """The backend object for ``backend``; for ``"auto"`` the measured choice (``dispatch.py``)."""
    if backend != "auto":
        return backends.resolve(backend, x.device)

    def timed_call(impl):
        # Dropout 0 and no .grad: a timing call consumes no randomness and leaves no trace.
        if not problem.grad:
            with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
                run_layers(impl, x, hx[0], hx[1], weights, num_layers, D, 0.0, training, batch_sizes)
            return
        leaves = [t.detach().requires_grad_(t.requires_grad) for t in (x, hx[0], hx[1])]
        with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
            out, h_n, c_n = run_layers(impl, *leaves, weights, num_layers, D, 0.0, training, batch_sizes)
            wrt = [t for t in leaves if t.requires_grad] + [
                w for ws in weights for w in ws if w is not None and w.requires_grad]
            torch.autograd.grad(out.sum() + h_n.sum() + c_n.sum(), wrt, allow_unused=True)

    impl, _ = dispatch.choose(problem, timed_call)
    return impl


def _check_hidden(hx, h_shape, c_shape, ndim, is_batched, x, owner) -> None:
    if hx[0].dim() != ndim or hx[1].dim() != ndim:
        kind = "batched 3-D" if is_batched else "unbatched 2-D"
        raise RuntimeError(
            f"For {kind} input, hx and cx should also be {ndim}-D but got "
            f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
        )
    got_h = tuple(hx[0].shape) if ndim == 3 else (hx[0].shape[0], 1, hx[0].shape[1])
    got_c = tuple(hx[1].shape) if ndim == 3 else (hx[1].shape[0], 1, hx[1].shape[1])
    if got_h != h_shape:
        raise RuntimeError(f"Expected hidden[0] size {h_shape}, got {list(hx[0].shape)}")
    if got_c != c_shape:
        raise RuntimeError(f"Expected hidden[1] size {c_shape}, got {list(hx[1].shape)}")
    _check_state_like(hx, x, owner)


def lstm_cell(input, hx, w_ih, w_hh, b_ih, b_hh, *, input_size: int, hidden_size: int, backend: str):
    """Functional ``nn.LSTMCell`` forward: one step of the same scan the LSTM runs."""
    owner = "LSTMCell"
    if not isinstance(input, Tensor):
        raise TypeError(f"LSTMCell: input must be a Tensor, got {_type_name(input)}")
    hx = check_hx_structure(hx, owner)
    if input.dim() not in (1, 2):
        raise ValueError(f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
    if hx is not None:
        for idx, value in enumerate(hx):
            if value.dim() not in (1, 2):
                raise ValueError(f"LSTMCell: Expected hx[{idx}] to be 1D or 2D, got {value.dim()}D instead")
    check_input_dtype(input, w_ih, owner)
    if input.size(-1) != input_size:
        raise RuntimeError(f"input has inconsistent input_size: got {input.size(-1)} expected {input_size}")
    is_batched = input.dim() == 2
    x = input if is_batched else input.unsqueeze(0)
    B = x.size(0)
    if hx is None:
        h0 = x.new_zeros(B, hidden_size)
        hx = (h0, h0)
    else:
        if hx[0].dim() != input.dim() or hx[1].dim() != input.dim():
            raise RuntimeError(
                f"LSTMCell: hx must have the same number of dimensions as input ({input.dim()}), "
                f"got ({hx[0].dim()}, {hx[1].dim()})"
            )
        if not is_batched:
            hx = (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        for k, t in enumerate(hx):
            if t.size(0) != B:
                raise RuntimeError(f"Input batch size {B} doesn't match hidden{k} batch size {t.size(0)}")
            if t.size(1) != hidden_size:
                raise RuntimeError(
                    f"hidden{k} has inconsistent hidden_size: got {t.size(1)}, expected {hidden_size}"
                )
        _check_state_like(hx, x, owner)
    weights = [[w_ih, w_hh, b_ih, b_hh, None]]
    # nn.LSTMCell is not on autocast's op lists: only its matmuls run low precision, and
    # (h', c') come out in the promoted dtype of the gates and the incoming cell state.
    out_dtype = None
    autocast = _autocast_on(x)
    if autocast:
        out_dtype = torch.promote_types(torch.get_autocast_dtype(x.device.type), hx[1].dtype)
    x, hx, weights = _autocast_cast(x, hx, weights, autocast)
    x3, h3, c3 = x.unsqueeze(0), hx[0].unsqueeze(0), hx[1].unsqueeze(0)
    if exporting():
        _, h_n, c_n = torch_lstm(x3, h3, c3, weights, 1, 1, 0.0, False)
    else:
        problem = dispatch.Problem(
            x.device, x.dtype, _grad_needed(x, hx, weights), B, input_size, hidden_size, 0, 1, 1,
            b_ih is not None, False, 1, cell=True,
        )
        impl = _pick(backend, problem, x3, (h3, c3), weights, 1, 1, False, None)
        with _no_autocast(x, autocast):
            _, h_n, c_n = run_layers(impl, x3, h3, c3, weights, 1, 1, 0.0, False, None)
    h, c = h_n[0], c_n[0]
    if out_dtype is not None:
        h, c = h.to(out_dtype), c.to(out_dtype)
    if not is_batched:
        h, c = h.squeeze(0), c.squeeze(0)
    return h, c
