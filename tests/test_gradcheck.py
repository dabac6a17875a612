"""Finite-difference gradient checks (torch.autograd.gradcheck, float64) of the CPU paths.

Independent of nn.LSTM: the analytic gradients of the reference and TorchScript paths
(the latter with its own hand-written backward) against numerical Jacobians, with
respect to input, h0, c0 and every weight, for a small deep bidirectional projected
LSTM on padded and packed input, and for LSTMCell.

The whole-LSTM checks use gradcheck's fast mode: it compares u^T J v for random u, v
(numerical directional derivative vs. analytic vector-Jacobian product), which misses
a wrong Jacobian entry only with probability zero, at a small fraction of the cost of
building the full numerical Jacobian (hundreds of weights here). The cell uses the
full Jacobian.
"""
from __future__ import annotations

import pytest
import torch
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_kernels
# Script the TorchScript path now: conftest's NaN-poisoned torch.empty cannot be scripted.
import lstm_kernels.scripted  # noqa: F401

BACKENDS = ["reference", "torchscript", "native", "auto"]
F64 = torch.float64


def _lstm_fn(module, names, packed_lengths, enforce_sorted):
    """f(x, h0, c0, *params) -> (output data, h_n, c_n) with the module's parameters replaced."""

    def f(x, h0, c0, *params):
        inp = x
        if packed_lengths is not None:
            inp = pack_padded_sequence(x, torch.tensor(packed_lengths), enforce_sorted=enforce_sorted)
        out, (h_n, c_n) = functional_call(module, dict(zip(names, params)), (inp, (h0, c0)))
        data = out.data if packed_lengths is not None else out
        return data, h_n, c_n

    return f


CASES = [
    # (id, kwargs, T, B, lengths, enforce_sorted)
    ("L2-bi-proj2-B2-T3-H3", {"num_layers": 2, "bidirectional": True, "proj_size": 2}, 3, 2, None, True),
    ("L2-bi-proj2-B3-T3-H3-packed-unsorted", {"num_layers": 2, "bidirectional": True, "proj_size": 2}, 3, 3,
     [2, 3, 1], False),
    ("L1-B3-T4-H3-nobias-packed", {"bias": False}, 4, 3, [4, 2, 2], True),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kwargs, T, B, lengths, enforce", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_lstm_gradcheck(kwargs, T, B, lengths, enforce, backend):
    I, H = 2, 3
    m = lstm_kernels.LSTM(I, H, dtype=F64, backend=backend, **kwargs)
    D = 2 if m.bidirectional else 1
    P = m.proj_size or H
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    h0 = torch.randn(m.num_layers * D, B, P, dtype=F64, requires_grad=True)
    c0 = torch.randn(m.num_layers * D, B, H, dtype=F64, requires_grad=True)
    f = _lstm_fn(m, names, lengths, enforce)
    assert torch.autograd.gradcheck(f, (x, h0, c0, *params), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
def test_cell_gradcheck(batched, bias, backend):
    I, H, B = 3, 4, 2
    cell = lstm_kernels.LSTMCell(I, H, bias=bias, dtype=F64, backend=backend)
    names = [n for n, _ in cell.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in cell.parameters()]
    lead = (B,) if batched else ()
    x = torch.randn(*lead, I, dtype=F64, requires_grad=True)
    h = torch.randn(*lead, H, dtype=F64, requires_grad=True)
    c = torch.randn(*lead, H, dtype=F64, requires_grad=True)

    def f(x, h, c, *params):
        return functional_call(cell, dict(zip(names, params)), (x, (h, c)))

    assert torch.autograd.gradcheck(f, (x, h, c, *params), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_reference_double_backward():
    """The reference path is plain autograd, so second derivatives work (gradgradcheck)."""
    m = lstm_kernels.LSTM(2, 3, bidirectional=True, proj_size=2, dtype=F64, backend="reference")
    names = [n for n, _ in m.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in m.parameters()]
    x = torch.randn(2, 2, 2, dtype=F64, requires_grad=True)
    h0 = torch.randn(2, 2, 2, dtype=F64, requires_grad=True)
    c0 = torch.randn(2, 2, 3, dtype=F64, requires_grad=True)
    f = _lstm_fn(m, names, None, True)
    assert torch.autograd.gradgradcheck(f, (x, h0, c0, *params), eps=1e-6, atol=1e-6, rtol=1e-4,
                                         fast_mode=True)
