"""Dropout between layers draws nn.LSTM's masks on CPU for the same seed, padded and
packed (sorted and unsorted) input, on every backend: outputs, states and gradients match
nn.LSTM with copied weights in training mode. (cuDNN's dropout RNG on CUDA differs.)"""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from conftest import tol
from lstm_kernels import LSTM, available_backends

DT = torch.float64


def _run(module, x, seed):
    torch.manual_seed(seed)
    out, (h, c) = module(x)
    data = out.data if isinstance(out, nn.utils.rnn.PackedSequence) else out
    return data, h, c


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("layers", [2, 3])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("layout", ["padded", "packed-sorted", "packed-unsorted"])
def test_dropout_masks_match_nn_lstm(backend, layers, bidirectional, layout):
    torch.manual_seed(0)
    ref = nn.LSTM(3, 5, num_layers=layers, bidirectional=bidirectional, dropout=0.4, dtype=DT).train()
    ours = LSTM.from_torch(ref, backend=backend).train()
    T, B = 4, 3
    x_ref = torch.randn(T, B, 3, dtype=DT, requires_grad=True)
    x_ours = x_ref.detach().clone().requires_grad_(True)
    if layout == "padded":
        inp_ref, inp_ours = x_ref, x_ours
    else:
        lengths = [4, 3, 1] if layout == "packed-sorted" else [2, 4, 3]
        sort = layout == "packed-sorted"
        inp_ref = pack_padded_sequence(x_ref, lengths, enforce_sorted=sort)
        inp_ours = pack_padded_sequence(x_ours, lengths, enforce_sorted=sort)
    got = _run(ours, inp_ours, seed=123)
    want = _run(ref, inp_ref, seed=123)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **tol(DT))
    torch.manual_seed(7)
    weights = [torch.randn_like(w) for w in want]
    torch.autograd.backward(got, weights)
    torch.autograd.backward(want, weights)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, **tol(DT, "grad"))
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p.grad, q.grad, **tol(DT, "grad"), msg=name)
