"""The one layered, bidirectional time loop that every backend runs in.

Per layer it hoists the input projection of all time steps and both directions into
one matmul, hands the directions to the backend's ``scan_layer``, concatenates both
directions as the next layer's input, and applies dropout between layers in training.

Shapes: x [T, B, I] (time-major, padded), h0 [L*D, B, P], c0 [L*D, B, H].
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._base import Backend


def lstm_layers(
    x: Tensor,  # [T, B, I]
    h0: Tensor,  # [L*D, B, P]
    c0: Tensor,  # [L*D, B, H]
    weights: Sequence[Sequence[Optional[Tensor]]],  # per layer*dir: (w_ih, w_hh, b_ih, b_hh, w_hr)
    num_layers: int,
    num_directions: int,
    dropout: float,
    training: bool,
    batch_sizes: Optional[Tensor],  # [T] int64 on CPU, non-increasing; None: all rows valid
    backend: Backend,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run all layers. Returns ``out [T, B, D*P]``, ``h_n [L*D, B, P]``, ``c_n [L*D, B, H]``."""
    T, B = x.shape[0], x.shape[1]
    layer_input = x
    h_n: list[Tensor] = []
    c_n: list[Tensor] = []
    for layer in range(num_layers):
        if layer > 0 and dropout > 0 and training:
            layer_input = _dropout_like_nn_lstm(layer_input, dropout, batch_sizes)
        idx = [layer * num_directions + d for d in range(num_directions)]
        w_ih = torch.cat([weights[k][0] for k in idx]) if num_directions > 1 else weights[idx[0]][0]
        bias = _combined_bias([weights[k] for k in idx])
        gx_all = backend.input_projection(layer_input, w_ih, bias)  # [T, B, D*4H]: one matmul for all steps and directions
        G = gx_all.shape[-1] // num_directions
        gxs = [gx_all[..., d * G:(d + 1) * G] for d in range(num_directions)]
        results = backend.scan_layer(
            gxs,
            [h0[k] for k in idx],
            [c0[k] for k in idx],
            [weights[k][1] for k in idx],
            [weights[k][4] for k in idx],
            batch_sizes,
        )
        outs = [r[0] for r in results]
        layer_input = torch.cat(outs, dim=-1) if num_directions > 1 else outs[0]
        h_n.extend(r[1] for r in results)
        c_n.extend(r[2] for r in results)
    return layer_input, torch.stack(h_n), torch.stack(c_n)


def _dropout_like_nn_lstm(x: Tensor, p: float, batch_sizes: Optional[Tensor]) -> Tensor:
    """Dropout between layers drawing the same random numbers as ``nn.LSTM`` on CPU.

    ``nn.LSTM`` drops out its layer output as it holds it: ``[T, B, F]`` padded, or the
    packed rows ``[N, F]`` (time-major, the valid rows of each step). For packed input we
    gather those rows in that order, drop out, and scatter them back, so one seed gives
    ``nn.LSTM``'s masks (tests/test_dropout_masks.py). Padding rows are left as they are.
    """
    if batch_sizes is None:
        return F.dropout(x, p, True)
    T, B, feat = x.shape
    valid = torch.arange(B, device=batch_sizes.device).unsqueeze(0) < batch_sizes.unsqueeze(1)  # [T, B]
    rows = valid.reshape(-1).nonzero().squeeze(1).to(x.device)  # packed order: t-major, then batch
    flat = x.reshape(T * B, feat)
    return flat.index_copy(0, rows, F.dropout(flat.index_select(0, rows), p, True)).view(T, B, feat)


def _combined_bias(layer_weights) -> Optional[Tensor]:
    if layer_weights[0][2] is None:
        return None
    parts = [w[2] + w[3] for w in layer_weights]
    return torch.cat(parts) if len(parts) > 1 else parts[0]
