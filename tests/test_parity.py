"""Parity with nn.LSTM for the CPU backends ("reference", "torchscript").

The configuration space (layers, directions, batch_first, bias, projection, input mode,
initial state, sizes, dtype, strides) is far too large for a full product, so the grid
is a fixed pairwise covering: every value of every factor meets every value of every
other factor in at least one case. Hand-picked cases add the corners (T=1, B=1, deep
bidirectional projected packed input), dropout, and low-precision storage.
"""
from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pad_packed_sequence

import lstm_kernels
from conftest import tol
from helpers import (Config, check_lstm_against_torch, config_id, dtype_id, make_inputs, make_pair, pairwise,
                     run_module)

# nn.LSTM notes on CPU that oneDNN lacks projections; it is the oracle here, so the note is noise.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")

BACKENDS = ["reference", "torchscript", "native", "auto"]

# (B, T, I, H): awkward sizes, including B=1 and T=1, odd H.
SHAPES = [(3, 4, 5, 7), (1, 1, 3, 5), (1, 6, 4, 9), (4, 1, 2, 3), (5, 7, 3, 33)]

FACTORS = {
    "num_layers": [1, 2, 3],
    "bidirectional": [False, True],
    "batch_first": [False, True],
    "bias": [True, False],
    "proj": [False, True],
    "mode": ["batched", "unbatched", "packed", "packed-sorted-noenforce", "packed-unsorted"],
    "with_hx": [True, False],
    "shape": SHAPES,
    "dtype": [torch.float32, torch.float64],
    "strided": [False, True],
}


def _to_case(row: dict):
    B, T, I, H = row["shape"]
    cfg = Config(
        input_size=I, hidden_size=H, num_layers=row["num_layers"], bias=row["bias"],
        batch_first=row["batch_first"], bidirectional=row["bidirectional"],
        proj_size=max(1, H // 2) if row["proj"] else 0, T=T, B=B, mode=row["mode"],
        with_hx=row["with_hx"], strided=row["strided"],
    )
    return pytest.param(cfg, row["dtype"], id=f"{config_id(cfg)}-{dtype_id(row['dtype'])}")


def _grid() -> list:
    """The pairwise rows as test cases; unbatched rows ignore B, so drop repeated ids."""
    cases, seen = [], set()
    for case in map(_to_case, pairwise(FACTORS)):
        if case.id not in seen:
            seen.add(case.id)
            cases.append(case)
    return cases


GRID = _grid()

CORNERS = [
    Config(num_layers=3, bidirectional=True, proj_size=3, T=7, B=3, hidden_size=33, mode="packed-unsorted"),
    Config(num_layers=2, bidirectional=True, proj_size=2, T=1, B=1, hidden_size=5, mode="packed"),
    Config(num_layers=3, bidirectional=True, proj_size=1, T=5, mode="unbatched", batch_first=True),
    Config(num_layers=1, T=1, B=1, input_size=1, hidden_size=1),
    Config(num_layers=2, bidirectional=True, T=6, B=4, mode="packed-unsorted", batch_first=True,
           with_hx=False),
]


def test_grid_is_pairwise():
    """The sampled grid really covers every pair of factor values."""
    names = list(FACTORS)
    rows = pairwise(FACTORS)
    for a, b in itertools.combinations(names, 2):
        seen = {(FACTORS[a].index(r[a]), FACTORS[b].index(r[b])) for r in rows}
        assert len(seen) == len(FACTORS[a]) * len(FACTORS[b]), (a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cfg, dtype", GRID)
def test_parity_grid(cfg, dtype, backend):
    check_lstm_against_torch(cfg, backend, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "cfg, dtype",
    [pytest.param(c, d, id=f"{config_id(c)}-{dtype_id(d)}")
     for c, d in zip(CORNERS, itertools.cycle([torch.float32, torch.float64]))],
)
def test_parity_corners(cfg, dtype, backend):
    check_lstm_against_torch(cfg, backend, dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize(
    "cfg",
    [Config(num_layers=2, bidirectional=True, proj_size=3, T=5, mode="packed-unsorted"),
     Config(num_layers=1, T=6, B=2, hidden_size=9, batch_first=True)],
    ids=config_id,
)
def test_parity_low_precision(cfg, dtype):
    """Half/bfloat16 storage against a float64 nn.LSTM oracle (error budget set by the reference path)."""
    check_lstm_against_torch(cfg, "reference", dtype)
    check_lstm_against_torch(cfg, "torchscript", dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "cfg",
    [Config(num_layers=2, bidirectional=True, proj_size=3), Config(num_layers=3, mode="packed-unsorted")],
    ids=config_id,
)
def test_training_mode_without_dropout(cfg, backend):
    check_lstm_against_torch(cfg, backend, torch.float64, training=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_has_no_effect_in_eval(backend):
    cfg = Config(num_layers=3, bidirectional=True, dropout=0.5, mode="packed-unsorted")
    torch_lstm, ours = check_lstm_against_torch(cfg, backend, torch.float64, training=False)
    # The same module without dropout gives bitwise the same result in eval mode.
    no_drop = lstm_kernels.LSTM(
        **cfg.replace(dropout=0.0).module_kwargs(), dtype=torch.float64, backend=backend
    )
    no_drop.load_state_dict(ours.state_dict())
    no_drop.eval()
    x, h0, c0, lengths = make_inputs(cfg, torch.float64)
    a = run_module(ours, cfg, x, h0, c0, lengths, torch.float64)
    b = run_module(no_drop, cfg, x, h0, c0, lengths, torch.float64)
    for u, v in zip(a[:3], b[:3]):
        assert torch.equal(u, v)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_one_matches_nn_lstm(backend):
    """p=1 zeroes every inter-layer input: deterministic, so exact parity in training mode."""
    cfg = Config(num_layers=2, bidirectional=True, proj_size=3, dropout=1.0)
    check_lstm_against_torch(cfg, backend, torch.float64, training=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_in_training(backend):
    cfg = Config(num_layers=2, hidden_size=16, T=5, B=4, dropout=0.5)
    torch_lstm, ours = make_pair(cfg, backend, torch.float64)
    x, h0, c0, _ = make_inputs(cfg, torch.float64)
    ours.eval()
    out_eval, _ = ours(x, (h0, c0))
    ours.train()
    torch.manual_seed(1)
    out_a, (h_a, c_a) = ours(x, (h0, c0))
    torch.manual_seed(1)
    out_b, _ = ours(x, (h0, c0))
    torch.manual_seed(2)
    out_c, _ = ours(x, (h0, c0))
    assert not torch.allclose(out_a, out_eval), "dropout in training mode changed nothing"
    assert torch.equal(out_a, out_b), "same seed, different dropout masks"
    assert not torch.equal(out_a, out_c), "different seeds, same dropout mask"
    # The first layer sees no dropout, so its final states match eval mode exactly.
    _, (h_e, c_e) = ours.eval()(x, (h0, c0))
    torch.testing.assert_close(h_a[0], h_e[0], **tol(torch.float64))
    torch.testing.assert_close(c_a[0], c_e[0], **tol(torch.float64))
    (out_a.sum() + h_a.sum() + c_a.sum()).backward()
    for name, p in ours.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_expanded_and_transposed_states(backend):
    """Stride-0 (expanded) states and a transposed batch_first input."""
    L, D, B, T, I, H, P = 2, 2, 3, 5, 4, 6, 4
    torch_lstm = nn.LSTM(I, H, L, batch_first=True, bidirectional=True, proj_size=P, dtype=torch.float64)
    ours = lstm_kernels.LSTM.from_torch(torch_lstm, backend=backend)
    x_base = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    h_base = torch.randn(1, B, P, dtype=torch.float64, requires_grad=True)
    c_base = torch.randn(L * D, 1, H, dtype=torch.float64, requires_grad=True)
    results = []
    for m in (ours, torch_lstm):
        x = x_base.transpose(0, 1)
        hx = (h_base.expand(L * D, B, P), c_base.expand(L * D, B, H))
        out, (h_n, c_n) = m(x, hx)
        loss = out.pow(2).sum() + h_n.sin().sum() + c_n.cos().sum()
        grads = torch.autograd.grad(loss, [x_base, h_base, c_base, *m.parameters()])
        results.append((out, h_n, c_n, grads))
    for u, v in zip(results[0][:3], results[1][:3]):
        torch.testing.assert_close(u, v, **tol(torch.float64, "out"))
    for u, v in zip(results[0][3], results[1][3]):
        torch.testing.assert_close(u, v, **tol(torch.float64, "grad"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_frozen_parameters_and_no_grad(backend):
    """Only the input needs a gradient; and a no_grad forward gives the same numbers."""
    cfg = Config(num_layers=2, bidirectional=True, proj_size=3)
    torch_lstm, ours = make_pair(cfg, backend, torch.float64)
    for m in (torch_lstm, ours):
        m.requires_grad_(False)
    x, h0, c0, _ = make_inputs(cfg.replace(with_hx=False), torch.float64)
    out, _ = ours(x)
    want, _ = torch_lstm(x)
    g = torch.randn_like(want)
    (gx,) = torch.autograd.grad((out * g).sum(), x)
    (wx,) = torch.autograd.grad((want * g).sum(), x)
    torch.testing.assert_close(gx, wx, **tol(torch.float64, "grad"))
    with torch.no_grad():
        out_ng, (h_ng, c_ng) = ours(x)
    assert not out_ng.requires_grad
    torch.testing.assert_close(out_ng, want, **tol(torch.float64, "out"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_auto_backend_on_cpu_matches(backend):
    """backend='auto' on CPU picks a CPU path with the same results as the named ones."""
    cfg = Config(num_layers=2, bidirectional=True, mode="packed-unsorted")
    _, ours = make_pair(cfg, backend, torch.float64)
    auto = lstm_kernels.LSTM(**cfg.module_kwargs(), dtype=torch.float64, backend="auto")
    auto.load_state_dict(ours.state_dict())
    x, h0, c0, lengths = make_inputs(cfg, torch.float64)
    a = run_module(ours, cfg, x, h0, c0, lengths, torch.float64)
    b = run_module(auto, cfg, x, h0, c0, lengths, torch.float64)
    for u, v in zip(a[:3], b[:3]):
        torch.testing.assert_close(u, v, **tol(torch.float64, "out"))


# PyTorch's own nn.LSTM module inputs (torch.testing._internal.common_modules,
# module_inputs_torch_nn_LSTM): 2-layer LSTMs over bias x batch_first x bidirectional x
# proj_size {0, 2}, fed unbatched input without and with (h0, c0). Replayed against
# nn.LSTM, and against our own batched call as PyTorch's no-batch-dim reference does.
TORCH_SUITE = [
    pytest.param(bias, bf, bi, proj, id=f"{'bias' if bias else 'nobias'}-{'bf' if bf else 'tf'}"
                 f"-{'bi' if bi else 'uni'}-proj{proj}")
    for bias, bf, bi, proj in itertools.product([False, True], [False, True], [False, True], [0, 2])
]


@pytest.mark.parametrize("bias, batch_first, bidirectional, proj_size", TORCH_SUITE)
def test_torch_suite_module_inputs(bias, batch_first, bidirectional, proj_size):
    kwargs = dict(input_size=2, hidden_size=3, num_layers=2, proj_size=proj_size, batch_first=batch_first,
                  bias=bias, bidirectional=bidirectional)
    D = 2 if bidirectional else 1
    for k, (T, with_hx) in enumerate([(2, False), (3, True)]):
        backend = BACKENDS[k]
        cfg = Config(**kwargs, T=T, mode="unbatched", with_hx=with_hx)
        _, ours = check_lstm_against_torch(cfg, backend, torch.float64)
        x = torch.randn(T, 2, dtype=torch.float64)
        hx = None
        if with_hx:
            hx = (torch.randn(2 * D, proj_size or 3, dtype=torch.float64),
                  torch.randn(2 * D, 3, dtype=torch.float64))
        out, (h_n, c_n) = ours(x, hx)
        batch_dim = 0 if batch_first else 1
        bhx = None if hx is None else (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        b_out, (b_h, b_c) = ours(x.unsqueeze(batch_dim), bhx)
        torch.testing.assert_close(out, b_out.squeeze(batch_dim), **tol(torch.float64))
        torch.testing.assert_close(h_n, b_h.squeeze(1), **tol(torch.float64))
        torch.testing.assert_close(c_n, b_c.squeeze(1), **tol(torch.float64))


@pytest.mark.parametrize("backend", BACKENDS)
def test_single_layer_ignores_dropout_in_training(backend):
    """nn.LSTM applies dropout only between layers: one layer in train mode is exact."""
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        cfg = Config(num_layers=1, bidirectional=True, dropout=0.5)
        check_lstm_against_torch(cfg, backend, torch.float64, training=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_grad_for_c0_only_inference_mode_and_retained_graph(backend):
    cfg = Config(num_layers=2, bidirectional=True, proj_size=3)
    torch_lstm, ours = make_pair(cfg, backend, torch.float64)
    x, h0, c0, _ = make_inputs(cfg, torch.float64)
    x, h0 = x.detach(), h0.detach()
    for m in (torch_lstm, ours):
        m.requires_grad_(False)
    # Only c0 needs a gradient: the scans must still save what their backward needs.
    got = torch.autograd.grad(ours(x, (h0, c0))[1][0].sum(), c0)[0]
    want = torch.autograd.grad(torch_lstm(x, (h0, c0))[1][0].sum(), c0)[0]
    torch.testing.assert_close(got, want, **tol(torch.float64, "grad"))
    with torch.inference_mode():
        out, _ = ours(x, (h0, c0.detach()))
    torch.testing.assert_close(out, torch_lstm(x, (h0, c0))[0].detach(), **tol(torch.float64))
    # Backward twice through a retained graph gives the same gradient both times.
    loss = ours(x, (h0, c0))[0].pow(2).sum()
    first = torch.autograd.grad(loss, c0, retain_graph=True)[0]
    assert torch.equal(first, torch.autograd.grad(loss, c0)[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_float32_against_float64_oracle(backend):
    """float32 within the float32 tolerances of a float64 nn.LSTM (the oracle a GPU check uses)."""
    cfg = Config(num_layers=2, bidirectional=True, proj_size=3, T=6, mode="packed-unsorted")
    check_lstm_against_torch(cfg, backend, torch.float32, oracle_dtype=torch.float64, oracle_device="cpu")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_id)
def test_saturated_gates(dtype, backend):
    """Inputs of magnitude ~50 saturate sigmoid/tanh: no overflow, no NaN, same gradients."""
    cfg = Config(num_layers=2, bidirectional=True, proj_size=3, input_scale=50.0, mode="packed-unsorted")
    check_lstm_against_torch(cfg, backend, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_nan_in_one_row_stays_in_that_row(packed, backend):
    """Batch rows are independent: a NaN in one sequence must not reach the others."""
    cfg = Config(num_layers=2, bidirectional=True, T=5, B=4, mode="packed-unsorted" if packed else "batched")
    torch_lstm, ours = make_pair(cfg, backend, torch.float64)
    x, h0, c0, lengths = make_inputs(cfg, torch.float64)
    x = x.detach().clone()
    x[2, 1, 0] = float("nan")  # time 2, batch row 1
    if packed:
        lengths[1] = max(lengths[1], 3)
    got = run_module(ours, cfg, x, h0, c0, lengths, torch.float64)
    want = run_module(torch_lstm, cfg, x, h0, c0, lengths, torch.float64)
    if packed:
        # Compare per sequence in the padded layout; the NaN row is skipped.
        got_out = pad_packed_sequence(got[3])[0]
        want_out = pad_packed_sequence(want[3])[0]
    else:
        got_out, want_out = got[0], want[0]
    others = [b for b in range(cfg.B) if b != 1]
    assert got_out[:, 1].isnan().any() and got[1][:, 1].isnan().all()
    torch.testing.assert_close(got_out[:, others], want_out[:, others], **tol(torch.float64))
    torch.testing.assert_close(got[1][:, others], want[1][:, others], **tol(torch.float64))
    torch.testing.assert_close(got[2][:, others], want[2][:, others], **tol(torch.float64))


@settings(max_examples=8, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    num_layers=st.integers(1, 3),
    bidirectional=st.booleans(),
    batch_first=st.booleans(),
    bias=st.booleans(),
    hidden_size=st.integers(1, 12),
    proj_fraction=st.sampled_from([0.0, 0.3, 0.9]),
    input_size=st.integers(1, 6),
    T=st.integers(1, 6),
    B=st.integers(1, 4),
    mode=st.sampled_from(["batched", "unbatched", "packed", "packed-sorted-noenforce", "packed-unsorted"]),
    with_hx=st.booleans(),
    backend=st.sampled_from(BACKENDS),
)
def test_parity_random_configs(num_layers, bidirectional, batch_first, bias, hidden_size, proj_fraction,
                               input_size, T, B, mode, with_hx, backend):
    """Configurations the fixed grid does not name, drawn reproducibly (derandomized)."""
    cfg = Config(
        input_size=input_size, hidden_size=hidden_size, num_layers=num_layers, bias=bias,
        batch_first=batch_first, bidirectional=bidirectional, proj_size=int(proj_fraction * hidden_size),
        T=T, B=B, mode=mode, with_hx=with_hx,
    )
    check_lstm_against_torch(cfg, backend, torch.float64)
