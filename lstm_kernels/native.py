"""torch's own LSTM kernels (cuDNN on CUDA; oneDNN or ATen's loop on CPU) on our weights.

``torch_lstm`` runs a whole multi-layer LSTM through ``torch._VF.lstm``, the call
``nn.LSTM.forward`` makes, with the weights in ``nn.LSTM``'s flat order. It is the
building block of the ``native`` backend and of the export paths (``jit.trace``, ONNX),
which need the graph to hold ``aten::lstm`` rather than our custom ops.

Shapes: x [T, B, I] time-major padded (or packed data [N, I] with ``batch_sizes``),
h0 [L*D, B, P], c0 [L*D, B, H].
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor

from ._base import Backend


def flat_weights(weights: Sequence[Sequence[Optional[Tensor]]]) -> list[Tensor]:
    """Per layer and direction ``(w_ih, w_hh, b_ih, b_hh, w_hr)`` -> ``nn.LSTM``'s flat list."""
    return [w for layer in weights for w in layer if w is not None]


def torch_lstm(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weights: Sequence[Sequence[Optional[Tensor]]],
    num_layers: int,
    num_directions: int,
    dropout: float,
    training: bool,
    batch_sizes: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``nn.LSTM``'s own computation. Returns ``out``, ``h_n``, ``c_n``.

    With ``batch_sizes`` (int64 on CPU), ``x`` is a PackedSequence's data ``[N, I]`` and
    ``out`` is packed data ``[N, D*P]``; otherwise ``x`` is ``[T, B, I]``.
    """
    flat = flat_weights(weights)
    has_biases = weights[0][2] is not None
    bidirectional = num_directions == 2
    if batch_sizes is None:
        out, h_n, c_n = torch._VF.lstm(
            x, (h0, c0), flat, has_biases, num_layers, dropout, training, bidirectional, False
        )
    else:
        out, h_n, c_n = torch._VF.lstm(
            x, batch_sizes, (h0, c0), flat, has_biases, num_layers, dropout, training, bidirectional
        )
    return out, h_n, c_n


def _needs_grad(x: Tensor, h0: Tensor, c0: Tensor, weights) -> bool:
    if not torch.is_grad_enabled():
        return False
    return x.requires_grad or h0.requires_grad or c0.requires_grad or any(
        w is not None and w.requires_grad for ws in weights for w in ws
    )


class NativeBackend(Backend):
    """torch's own kernels through ``torch_lstm``: ``nn.LSTM``'s numbers, speed and autograd.

    ``torch._VF.lstm`` traces cleanly under ``torch.compile(fullgraph=True)`` and
    ``torch.export`` (tests/test_native.py::test_compile_fullgraph), so no custom op wraps it.
    """

    name = "native"
    runs_layers = True

    def run_layers(self, x, h0, c0, weights, num_layers, num_directions, dropout, training, batch_sizes):
        train = training
        if not training and x.is_cuda and _needs_grad(x, h0, c0, weights):
            # cuDNN refuses backward for a forward run with train=False; with dropout 0 a
            # training-mode forward computes the same numbers and keeps the workspace.
            train, dropout = True, 0.0
        if not training:
            dropout = 0.0
        return torch_lstm(x, h0, c0, weights, num_layers, num_directions, dropout, train, batch_sizes)

    def scan(self, gx, h0, c0, w_hh, w_hr, batch_sizes, reverse):
        raise RuntimeError("the native backend runs whole layers (run_layers), not single scans")
