"""Determinism on CPU: the same inputs and seed give bitwise-identical outputs and
gradients, inter-layer dropout included.

Dimensions: T seq len, B batch, I input, H hidden.
"""
from __future__ import annotations

import importlib.util

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_kernels.scripted  # noqa: F401  (script before conftest poisons torch.empty)
from lstm_kernels import LSTM, LSTMCell
from lstm_kernels.backends import available_backends


def triton_ready() -> bool:
    """True when the triton backend can run here (interpreter) and its first tier exists."""
    return (
        "triton" in available_backends()
        and importlib.util.find_spec("lstm_kernels._triton.pointwise") is not None
    )


BACKENDS = ["reference", "torchscript", "native", "auto"] + (["triton"] if triton_ready() else [])


def _run(backend: str, seed: int, packed: bool):
    """Build, feed and differentiate a 3-layer bidirectional LSTM with dropout, all from ``seed``."""
    torch.manual_seed(seed)
    lstm = LSTM(3, 4, num_layers=3, bidirectional=True, dropout=0.5, proj_size=2, backend=backend)
    lstm.train()
    T = 3 if backend == "triton" else 6
    x = torch.randn(T, 3, 3, requires_grad=True)
    h0 = torch.randn(6, 3, 2, requires_grad=True)
    c0 = torch.randn(6, 3, 4, requires_grad=True)
    inp = pack_padded_sequence(x, torch.tensor([T, T - 1, 1])) if packed else x
    out, (h, c) = lstm(inp, (h0, c0))
    out = out.data if packed else out
    loss = sum((t * torch.randn_like(t)).sum() for t in (out, h, c))
    grads = torch.autograd.grad(loss, [x, h0, c0, *lstm.parameters()])
    return [out, h, c, *grads]


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_same_seed_is_bitwise_identical_with_dropout(backend, packed):
    first = _run(backend, 123, packed)
    second = _run(backend, 123, packed)
    for k, (a, b) in enumerate(zip(first, second)):
        assert torch.equal(a, b), f"result {k} differs between identical runs"
    # and dropout is really active: another seed changes the output
    other = _run(backend, 124, packed)
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_masks_come_from_the_torch_generator(backend):
    """Same weights, same input: the output depends only on the global RNG state."""
    lstm = LSTM(3, 4, num_layers=2, dropout=0.5, backend=backend).train()
    x = torch.randn(4, 2, 3)
    state = torch.get_rng_state()
    a = lstm(x)[0]
    torch.set_rng_state(state)
    b = lstm(x)[0]
    c = lstm(x)[0]  # the generator has moved on: new masks
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cell_repeated_calls_are_bitwise_identical(backend):
    cell = LSTMCell(3, 5, backend=backend)
    x = torch.randn(4, 3, requires_grad=True)
    hx = (torch.randn(4, 5), torch.randn(4, 5))
    results = []
    for _ in range(2):
        h, c = cell(x, hx)
        results.append([h, c, *torch.autograd.grad((h * 2 + c).sum(), [x, *cell.parameters()])])
    for a, b in zip(*results):
        assert torch.equal(a, b)
