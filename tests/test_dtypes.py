"""Dtypes on every CPU backend: float32/float64 exact-ish, float16/bfloat16 against a
float64 oracle, the cell state carried in float32, and autocast behaving as nn.LSTM's.

Dimensions: T seq len, B batch, I input, H hidden, P = proj_size or H.
"""
from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

import lstm_kernels.functional as LF
from conftest import tol
from helpers import Config, check_lstm_against_torch, config_id, dtype_id
from lstm_kernels import LSTM, LSTMCell
from lstm_kernels.backends import available_backends

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
LOW = (torch.float16, torch.bfloat16)


def triton_ready() -> bool:
    """True when the triton backend can run here (interpreter) and its first tier exists."""
    return (
        "triton" in available_backends()
        and importlib.util.find_spec("lstm_kernels._triton.pointwise") is not None
    )


BACKENDS = ["reference", "torchscript", "native", "auto"] + (["triton"] if triton_ready() else [])

CONFIGS = [
    Config(num_layers=2, bidirectional=True, proj_size=3, T=5, B=3, hidden_size=7),
    Config(T=1, B=1, hidden_size=5, mode="packed-unsorted"),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=config_id)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_dtype_matches_nn_lstm(backend, dtype, cfg):
    if backend == "triton":
        # The interpreter is slow. float64 runs on the pointwise tier, the only one with
        # float64 kernels, which the automatic choice picks for it.
        cfg = cfg.replace(T=min(cfg.T, 3))
    check_lstm_against_torch(cfg, backend, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("backend", BACKENDS)
def test_result_dtypes_follow_input(backend, dtype):
    """Output, states and every gradient keep the module's dtype, as in nn.LSTM."""
    lstm = LSTM(3, 4, num_layers=2, proj_size=2, backend=backend, dtype=dtype)
    x = torch.randn(3, 2, 3, dtype=dtype, requires_grad=True)
    h0 = torch.randn(2, 2, 2, dtype=dtype, requires_grad=True)
    c0 = torch.randn(2, 2, 4, dtype=dtype, requires_grad=True)
    out, (h, c) = lstm(x, (h0, c0))
    assert out.dtype == h.dtype == c.dtype == dtype
    (out.sum() + h.sum() + c.sum()).backward()
    for t in (x, h0, c0, *lstm.parameters()):
        assert t.grad.dtype == dtype

    cell = LSTMCell(3, 4, backend=backend, dtype=dtype)
    hc = cell(x[0])
    assert hc[0].dtype == hc[1].dtype == dtype


def _accumulator(dtype, backend, T):
    """An LSTM whose cell state grows by ~4e-4 per step from c0 = 1 (i ~ f ~ 1, g ~ x).

    4e-4 is below half the spacing of float16 and bfloat16 at 1.0, so a cell state kept in
    the storage dtype between steps would never move; carried in float32 it reaches ~1.2.
    """
    lstm = nn.LSTM(1, 1, dtype=torch.float64)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.tensor([[0.0], [0.0], [1.0], [0.0]]))
        lstm.weight_hh_l0.zero_()
        lstm.bias_ih_l0.copy_(torch.tensor([20.0, 20.0, 0.0, 20.0]))
        lstm.bias_hh_l0.zero_()
    ours = LSTM.from_torch(lstm, backend=backend).to(dtype)
    x = torch.full((T, 1, 1), 4e-4, dtype=torch.float64)
    h0 = torch.zeros(1, 1, 1, dtype=torch.float64)
    c0 = torch.ones(1, 1, 1, dtype=torch.float64)
    return lstm, ours, x, (h0, c0)


# Our kernels' numerics: native computes what nn.LSTM computes (its cell state in the
# storage dtype), and auto may pick native, so both are held to nn.LSTM instead
# (tests/test_parity.py, tests/test_native.py).
@pytest.mark.parametrize("dtype", LOW, ids=dtype_id)
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b not in ("native", "auto")])
def test_cell_state_is_carried_in_float32(backend, dtype):
    T = 40 if backend == "triton" else 500
    oracle, ours, x, (h0, c0) = _accumulator(dtype, backend, T)
    _, (_, c_want) = oracle(x, (h0, c0))
    _, (_, c_got) = ours(x.to(dtype), (h0.to(dtype), c0.to(dtype)))
    torch.testing.assert_close(c_got.double(), c_want, **tol(dtype, "out"))
    if backend != "triton":
        # The test has teeth: a cell state rounded to the storage dtype each step stays at 1.
        stuck = torch.ones_like(c_want)
        assert not torch.allclose(stuck, c_want, **tol(dtype, "out"))


# ---------------------------------------------------------------- autocast (CPU, bfloat16)


@pytest.mark.parametrize("backend", BACKENDS)
def test_autocast_bfloat16_behaves_like_nn_lstm(backend):
    """nn.LSTM under CPU autocast(bfloat16) returns bfloat16 output and states, and equals
    the same module cast to bfloat16; so does LSTM (bitwise equal to its bf16 copy)."""
    torch_lstm = nn.LSTM(3, 5, num_layers=2, bidirectional=True)
    ours = LSTM.from_torch(torch_lstm, backend=backend)
    x = torch.randn(4, 2, 3)
    hx = (torch.randn(4, 2, 5), torch.randn(4, 2, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = torch_lstm(x, hx)
        got = ours(x, hx)
    assert want[0].dtype == want[1][0].dtype == want[1][1].dtype == torch.bfloat16
    assert got[0].dtype == got[1][0].dtype == got[1][1].dtype == torch.bfloat16

    as_bf16 = LSTM.from_torch(torch_lstm, backend=backend).bfloat16()
    plain = as_bf16(x.bfloat16(), (hx[0].bfloat16(), hx[1].bfloat16()))
    for a, b in ((got[0], plain[0]), (got[1][0], plain[1][0]), (got[1][1], plain[1][1])):
        assert torch.equal(a, b)
    # and against the float64 oracle holding the same bfloat16-rounded weights
    oracle = nn.LSTM(3, 5, num_layers=2, bidirectional=True, dtype=torch.float64)
    oracle.load_state_dict({k: v.double() for k, v in as_bf16.state_dict().items()})
    ref = oracle(x.bfloat16().double(), (hx[0].bfloat16().double(), hx[1].bfloat16().double()))
    torch.testing.assert_close(got[0].double(), ref[0], **tol(torch.bfloat16, "out"))
    torch.testing.assert_close(got[1][1].double(), ref[1][1], **tol(torch.bfloat16, "out"))


@pytest.mark.parametrize("backend", ["reference", "torchscript"])
def test_autocast_gradients_reach_float32_parameters(backend):
    torch_lstm = nn.LSTM(3, 5, proj_size=2)
    ours = LSTM.from_torch(torch_lstm, backend=backend)
    as_bf16 = LSTM.from_torch(torch_lstm, backend=backend).bfloat16()
    x = torch.randn(4, 2, 3)
    g = torch.randn(4, 2, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = ours(x)
    (out.float() * g).sum().backward()
    (as_bf16(x.bfloat16())[0].float() * g).sum().backward()
    for (name, p), q in zip(ours.named_parameters(), as_bf16.parameters()):
        assert p.grad.dtype == torch.float32, name
        # The casts are differentiable identities: the grad is the bf16 path's, upcast.
        torch.testing.assert_close(p.grad, q.grad.float(), **tol(torch.bfloat16, "grad"), msg=name)


def test_autocast_keeps_float64_as_nn_lstm_does():
    torch_lstm = nn.LSTM(3, 5, dtype=torch.float64)
    ours = LSTM.from_torch(torch_lstm, backend="torchscript")
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, _ = torch_lstm(x)
        got, _ = ours(x)
    assert want.dtype == got.dtype == torch.float64
    torch.testing.assert_close(got, want, **tol(torch.float64))


def test_autocast_float16_on_cpu_runs():
    """nn.LSTM fails under CPU autocast(float16) in oneDNN (torch 2.13); LSTM runs it."""
    torch_lstm = nn.LSTM(3, 5, num_layers=2)
    ours = LSTM.from_torch(torch_lstm, backend="torchscript")
    x = torch.randn(4, 2, 3)
    with torch.autocast("cpu", dtype=torch.float16):
        out, (h, c) = ours(x)
    assert out.dtype == h.dtype == c.dtype == torch.float16
    oracle = nn.LSTM(3, 5, num_layers=2, dtype=torch.float64)
    oracle.load_state_dict({k: v.half().double() for k, v in torch_lstm.state_dict().items()})
    torch.testing.assert_close(out.double(), oracle(x.half().double())[0], **tol(torch.float16, "out"))


def test_autocast_cell_matches_nn_lstm_cell_dtypes():
    """nn.LSTMCell under autocast: bf16 matmuls, (h', c') promoted with the cell state's dtype."""
    torch_cell = nn.LSTMCell(3, 5)
    ours = LSTMCell.from_torch(torch_cell, backend="torchscript")
    x = torch.randn(2, 3)
    for hx in (None, (torch.randn(2, 5), torch.randn(2, 5)),
               (torch.randn(2, 5, dtype=torch.bfloat16), torch.randn(2, 5, dtype=torch.bfloat16))):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            want = torch_cell(x, hx)
            got = ours(x, hx)
        for a, b in zip(got, want):
            assert a.dtype == b.dtype
            torch.testing.assert_close(a.double(), b.double(), **tol(torch.bfloat16, "out"))


@pytest.mark.parametrize("module", ["LSTM", "LSTMCell"])
def test_autocast_casts_weights_in_one_place_once_per_forward(module, monkeypatch):
    calls = []
    real = LF._autocast_cast

    def spy(x, hx, weights, *rest):
        calls.append(len(weights))
        return real(x, hx, weights, *rest)

    monkeypatch.setattr(LF, "_autocast_cast", spy)
    if module == "LSTM":
        rnn, x = LSTM(3, 5, num_layers=3, bidirectional=True, backend="torchscript"), torch.randn(4, 2, 3)
    else:
        rnn, x = LSTMCell(3, 5, backend="torchscript"), torch.randn(2, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rnn(x)
    # one call, handed every layer's and direction's weights at once
    assert calls == [6 if module == "LSTM" else 1]
