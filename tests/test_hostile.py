"""Hostile and extreme use: NaN/inf/huge values, empty batch, T=1, T=10000, concurrent
threads on one module, and long training loops that must not grow memory.

Dimensions: T seq len, B batch, I input, H hidden, P = proj_size or H.
"""
from __future__ import annotations

import gc
import importlib.util
import threading
import tracemalloc
import weakref

import pytest
import torch
from torch import nn

import lstm_kernels.scripted  # noqa: F401  (script before conftest poisons torch.empty)
from conftest import tol
from helpers import Config, check_lstm_against_torch, config_id
from lstm_kernels import LSTM, LSTMCell
from lstm_kernels.backends import available_backends

BACKENDS = ["reference", "torchscript", "native", "auto"]


def triton_ready() -> bool:
    """True when the triton backend can run here (interpreter) and its first tier exists."""
    return (
        "triton" in available_backends()
        and importlib.util.find_spec("lstm_kernels._triton.pointwise") is not None
    )


# The triton backend through the interpreter, where sizes are tiny anyway.
WITH_TRITON = BACKENDS + (["triton"] if triton_ready() else [])


def _pair(backend, dtype=torch.float64, **kw):
    torch_lstm = nn.LSTM(4, 5, dtype=dtype, **kw)
    return torch_lstm, LSTM.from_torch(torch_lstm, backend=backend)


def _spoil(kind: str, x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    if kind == "nan":
        x[2, 0, 1] = float("nan")
    elif kind == "inf":
        x[1, 1, 0] = float("inf")
    elif kind == "-inf":
        x[3, 0, 2] = float("-inf")
    elif kind == "mixed-inf":  # +inf and -inf in one row: inf - inf = NaN in the gates
        x[1, 0, 0] = float("inf")
        x[1, 0, 3] = float("-inf")
    elif kind == "huge":
        x[0] *= 1e30
    return x


@pytest.mark.parametrize("kind", ["nan", "inf", "-inf", "mixed-inf", "huge"])
@pytest.mark.parametrize("backend", WITH_TRITON)
def test_non_finite_and_huge_inputs_propagate_as_in_nn_lstm(backend, kind):
    # float32 for triton: its small-shape tiers take no float64
    dtype = torch.float32 if backend == "triton" else torch.float64
    torch_lstm, ours = _pair(backend, dtype, num_layers=2, bidirectional=True)
    x = _spoil(kind, torch.randn(5, 3, 4, dtype=dtype))
    want = torch_lstm(x)
    got = ours(x)
    pairs = (("out", got[0], want[0]), ("h_n", got[1][0], want[1][0]), ("c_n", got[1][1], want[1][1]))
    for name, a, b in pairs:
        assert torch.equal(a.isnan(), b.isnan()), f"{name}: NaN positions differ"
        assert torch.equal(a.isinf(), b.isinf()), f"{name}: inf positions differ"
        torch.testing.assert_close(a, b, equal_nan=True, **tol(dtype), msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_initial_state_propagates_as_in_nn_lstm(backend):
    torch_lstm, ours = _pair(backend, proj_size=2)
    x = torch.randn(4, 3, 4, dtype=torch.float64)
    h0 = torch.randn(1, 3, 2, dtype=torch.float64)
    c0 = torch.randn(1, 3, 5, dtype=torch.float64)
    h0[0, 0, 1] = float("nan")
    c0[0, 1, 2] = float("inf")
    want = torch_lstm(x, (h0, c0))
    got = ours(x, (h0, c0))
    for a, b in ((got[0], want[0]), (got[1][0], want[1][0]), (got[1][1], want[1][1])):
        torch.testing.assert_close(a, b, equal_nan=True, **tol(torch.float64))


@pytest.mark.parametrize("backend", BACKENDS)
def test_saturated_gates_give_nn_lstm_gradients(backend):
    """Inputs of 1e30 saturate every gate: gradients through them are exactly as nn.LSTM's."""
    torch_lstm, ours = _pair(backend)
    x0 = torch.randn(4, 2, 4, dtype=torch.float64)
    x0[1] *= 1e30
    grads = []
    for module in (ours, torch_lstm):
        x = x0.clone().requires_grad_()
        out, (h, c) = module(x)
        grads.append(torch.autograd.grad(out.sum() + c.sum(), [x, *module.parameters()]))
    for a, b in zip(*grads):
        assert torch.equal(a.isfinite(), b.isfinite())
        torch.testing.assert_close(a, b, equal_nan=True, **tol(torch.float64, "grad"))


@pytest.mark.parametrize("backend", WITH_TRITON)
def test_empty_batch_like_nn_lstm(backend):
    dtype = torch.float32 if backend == "triton" else torch.float64
    torch_lstm, ours = _pair(backend, dtype, num_layers=2, bidirectional=True, proj_size=3)
    x = torch.randn(4, 0, 4, dtype=dtype, requires_grad=True)
    out, (h, c) = ours(x)
    w_out, (w_h, w_c) = torch_lstm(x)
    assert out.shape == w_out.shape and h.shape == w_h.shape and c.shape == w_c.shape
    (out.sum() + h.sum() + c.sum()).backward()
    assert x.grad.shape == x.shape
    for p in ours.parameters():
        assert torch.equal(p.grad, torch.zeros_like(p))

    cell = LSTMCell(4, 5, backend=backend)
    h, c = cell(torch.randn(0, 4))
    assert h.shape == c.shape == (0, 5)


@pytest.mark.parametrize("cfg", [
    Config(T=1, B=1, hidden_size=3, input_size=2),
    Config(T=1, B=4, num_layers=2, bidirectional=True, proj_size=2),
], ids=config_id)
@pytest.mark.parametrize("backend", BACKENDS)
def test_single_step(backend, cfg):
    check_lstm_against_torch(cfg, backend, torch.float64)


def _graph_nodes(t: torch.Tensor) -> int:
    seen, stack = set(), [t.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        stack.extend(nxt for nxt, _ in fn.next_functions)
    return len(seen)


def test_long_sequence_10000_steps():
    """T=10000: same result as nn.LSTM, backward runs, autograd holds O(layers) nodes, not O(T)."""
    torch_lstm, ours = _pair("torchscript")
    x = torch.randn(10_000, 1, 4, dtype=torch.float64, requires_grad=True)
    out, (h, c) = ours(x)
    short = ours(torch.randn(10, 1, 4, dtype=torch.float64, requires_grad=True))[0]
    assert _graph_nodes(out) == _graph_nodes(short)
    with torch.no_grad():
        want, (w_h, w_c) = torch_lstm(x)
    torch.testing.assert_close(out, want, **tol(torch.float64))
    torch.testing.assert_close(c, w_c, **tol(torch.float64))
    (gx,) = torch.autograd.grad(out.sum() + c.sum(), x)
    assert gx.isfinite().all()


def test_forward_keeps_no_python_objects_per_step():
    """Python-heap memory held by a differentiable forward does not grow with T."""
    lstm = LSTM(4, 5, num_layers=2, backend="torchscript")

    def held(T):
        x = torch.randn(T, 2, 4, requires_grad=True)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            out = lstm(x)
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        del out
        return after - before

    held(10)  # warm caches
    short, long = held(100), held(2000)
    # Per-step Python objects (a list of step outputs, a per-step autograd node) would hold
    # at least 2000 * 56 bytes; allow generous slack for allocator noise.
    assert long < short + 50_000, (short, long)


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_threads_share_one_module(backend):
    lstm = LSTM(4, 5, num_layers=2, bidirectional=True, backend=backend)
    inputs = [torch.randn(6, 3, 4) for _ in range(2)]
    expected = [lstm(x)[0] for x in inputs]
    errors: list[BaseException] = []
    results: dict[int, list] = {0: [], 1: []}
    barrier = threading.Barrier(2)

    def work(k):
        try:
            barrier.wait()
            for _ in range(20):
                x = inputs[k].clone().requires_grad_()
                out, _ = lstm(x)
                (gx,) = torch.autograd.grad(out.sum(), x)
                results[k].append((out.detach(), gx))
        except BaseException as e:  # re-raised in the main thread below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    if errors:
        raise errors[0]
    for k in range(2):
        x = inputs[k].clone().requires_grad_()
        (want_gx,) = torch.autograd.grad(lstm(x)[0].sum(), x)
        for out, gx in results[k]:
            assert torch.equal(out, expected[k])
            assert torch.equal(gx, want_gx)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_long_training_loop_does_not_grow_memory():
    """1000 optimizer steps: every step's graph is freed, no Python objects or RSS pile up."""
    lstm = LSTM(4, 16, backend="torchscript")  # one layer: the per-step cost is overhead anyway
    head = nn.Linear(16, 1)
    opt = torch.optim.SGD([*lstm.parameters(), *head.parameters()], lr=1e-3)
    x = torch.randn(4, 4, 4)
    y = torch.randn(4, 4, 1)
    last_outputs = []

    def steps(n):
        for _ in range(n):
            opt.zero_grad(set_to_none=True)
            out, (h, c) = lstm(x)
            loss = nn.functional.mse_loss(head(out), y) + 1e-3 * c.pow(2).mean()
            loss.backward()
            opt.step()
            last_outputs[:] = [weakref.ref(out), weakref.ref(c)]

    steps(100)
    gc.collect()
    objects, rss = len(gc.get_objects()), _rss_bytes()
    steps(900)
    gc.collect()
    # Nothing (module, backend caches, autograd) keeps the last step's outputs alive.
    assert all(r() is None for r in last_outputs)
    assert len(gc.get_objects()) - objects < 200
    # A leaked graph per step would pile up MBs of saved activations and autograd nodes.
    assert _rss_bytes() - rss < 32 * 2**20
