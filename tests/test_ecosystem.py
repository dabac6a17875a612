"""Fit with the PyTorch ecosystem: checkpoints, pickle, deepcopy, dtype/device moves,
torch.export and nn.LSTM's introspection surface (mode, _flat_weights, to_torch).

Dimensions: T seq len, B batch, I input, H hidden, P = proj_size or H.
"""
from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn

import lstm_kernels.scripted  # noqa: F401  (script before conftest poisons torch.empty)
from conftest import tol
from lstm_kernels import LSTM, LSTMCell

BACKENDS = ["reference", "torchscript", "native", "auto"]
CONFIGS = [
    pytest.param(dict(num_layers=2, bidirectional=True, proj_size=3), id="L2-bi-proj3"),
    pytest.param(dict(num_layers=1, bias=False, batch_first=True), id="L1-nobias-bf"),
]


def _input(module, T=5, B=3, dtype=None):
    shape = (B, T, module.input_size) if getattr(module, "batch_first", False) else (T, B, module.input_size)
    return torch.randn(shape, dtype=dtype)


def _assert_same_outputs(a, b, x):
    out_a, (h_a, c_a) = a(x)
    out_b, (h_b, c_b) = b(x)
    for got, want in ((out_a, out_b), (h_a, h_b), (c_a, c_b)):
        assert torch.equal(got, want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cfg", CONFIGS)
def test_state_dict_save_load_weights_only(backend, cfg):
    src = LSTM(4, 6, backend=backend, **cfg)
    buf = io.BytesIO()
    torch.save(src.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    dst = LSTM(4, 6, backend=backend, **cfg)
    dst.load_state_dict(state)
    _assert_same_outputs(src, dst, _input(src))


@pytest.mark.parametrize("cfg", CONFIGS)
def test_nn_lstm_checkpoint_round_trip_is_bitwise(cfg):
    """nn.LSTM -> checkpoint -> LSTM -> checkpoint -> nn.LSTM changes no bit anywhere."""
    torch_lstm = nn.LSTM(4, 6, **cfg)
    buf = io.BytesIO()
    torch.save(torch_lstm.state_dict(), buf)
    buf.seek(0)
    ours = LSTM(4, 6, backend="reference", **cfg)
    ours.load_state_dict(torch.load(buf, weights_only=True))
    assert list(ours.state_dict()) == list(torch_lstm.state_dict())
    x = _input(ours)
    first = ours(x)

    buf = io.BytesIO()
    torch.save(ours.state_dict(), buf)
    buf.seek(0)
    back = nn.LSTM(4, 6, **cfg)
    back.load_state_dict(torch.load(buf, weights_only=True))
    for k, v in torch_lstm.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    _assert_same_outputs(back, torch_lstm, x)

    again = LSTM.from_torch(back, backend="reference")
    second = again(x)
    assert torch.equal(first[0], second[0])
    assert torch.equal(first[1][0], second[1][0]) and torch.equal(first[1][1], second[1][1])
    # and the reference path agrees with nn.LSTM within the table's tolerance
    torch.testing.assert_close(first[0], torch_lstm(x)[0], **tol(torch.float32))


def test_cell_checkpoint_both_ways():
    torch_cell = nn.LSTMCell(4, 6)
    cell = LSTMCell(4, 6, backend="reference")
    cell.load_state_dict(torch_cell.state_dict())
    back = nn.LSTMCell(4, 6)
    back.load_state_dict(cell.state_dict())
    x = torch.randn(3, 4)
    for a, b in zip(back(x), torch_cell(x)):
        assert torch.equal(a, b)
    for a, b in zip(cell(x), torch_cell(x)):
        torch.testing.assert_close(a, b, **tol(torch.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_pickle_whole_module(backend):
    model = nn.Sequential()
    model.add_module("lstm", LSTM(4, 6, num_layers=2, bidirectional=True, backend=backend))
    restored = pickle.loads(pickle.dumps(model))
    assert restored.lstm.backend == backend
    _assert_same_outputs(model.lstm, restored.lstm, _input(model.lstm))

    buf = io.BytesIO()
    torch.save(model, buf)  # whole-module checkpoint, loaded with weights_only=False
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    _assert_same_outputs(model.lstm, loaded.lstm, _input(model.lstm))

    cell = LSTMCell(4, 6, backend=backend)
    cell2 = pickle.loads(pickle.dumps(cell))
    x = torch.randn(2, 4)
    for a, b in zip(cell(x), cell2(x)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
def test_deepcopy_is_independent(backend):
    src = LSTM(4, 6, num_layers=2, proj_size=2, backend=backend)
    dup = copy.deepcopy(src)
    x = _input(src)
    _assert_same_outputs(src, dup, x)
    with torch.no_grad():
        dup.weight_hh_l0.add_(1.0)
    assert not torch.equal(src(x)[0], dup(x)[0])
    dup(x)[0].sum().backward()
    assert src.weight_hh_l0.grad is None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("move", ["half", "bfloat16", "double", "to-float64", "to-float16-float32"])
def test_dtype_moves_keep_module_working(backend, move):
    """.half()/.double()/.to(dtype) convert every parameter and the module stays nn.LSTM-exact."""
    cfg = dict(num_layers=2, bidirectional=True, proj_size=2)
    ours = LSTM(4, 6, backend=backend, **cfg)
    torch_lstm = nn.LSTM(4, 6, **cfg)
    torch_lstm.load_state_dict(ours.state_dict())
    if move == "half":
        ours, dtype = ours.half(), torch.float16
    elif move == "bfloat16":
        ours, dtype = ours.bfloat16(), torch.bfloat16
    elif move == "double":
        ours, dtype = ours.double(), torch.float64
    elif move == "to-float64":
        ours, dtype = ours.to(torch.float64), torch.float64
    else:
        ours, dtype = ours.to(torch.float16).to(torch.float32), torch.float32
    assert all(p.dtype == dtype for p in ours.parameters())
    # The oracle holds exactly the converted weights, in float64.
    torch_lstm = torch_lstm.double()
    torch_lstm.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    x = torch.randn(5, 3, 4, dtype=dtype, requires_grad=True)
    out, (h, c) = ours(x)
    assert out.dtype == h.dtype == c.dtype == dtype
    want, _ = torch_lstm(x.detach().double())
    torch.testing.assert_close(out.double(), want, **tol(dtype, "out"))
    out.sum().backward()
    assert x.grad.dtype == dtype and all(p.grad.dtype == dtype for p in ours.parameters())


class _Tagger(nn.Module):
    """Embedding-free sequence tagger: LSTM over padded input, then a linear head."""

    def __init__(self, backend):
        super().__init__()
        self.lstm = LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True, backend=backend)
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out)


def _graph_targets(gm: torch.fx.GraphModule) -> set[str]:
    targets = set()
    for sub in gm.modules():
        if isinstance(sub, torch.fx.GraphModule):
            targets.update(str(n.target) for n in sub.graph.nodes if n.op == "call_function")
    return targets


def test_torch_export_with_dynamic_sequence_length():
    model = _Tagger("torchscript").eval()
    x = torch.randn(2, 5, 4)
    T = torch.export.Dim("T", min=2, max=64)
    ep = torch.export.export(model, (x,), dynamic_shapes=({1: T},))
    # A small padded bidirectional layer runs as the paired op (both directions in one loop).
    assert any("lstm_kernels.torchscript_bidir_scan" in t for t in _graph_targets(ep.graph_module))
    run = ep.module()
    for steps in (5, 9, 2):
        xi = torch.randn(2, steps, 4)
        torch.testing.assert_close(run(xi), model(xi), **tol(torch.float32))

    buf = io.BytesIO()
    torch.export.save(ep, buf)
    buf.seek(0)
    loaded = torch.export.load(buf)
    xi = torch.randn(2, 7, 4)
    torch.testing.assert_close(loaded.module()(xi), model(xi), **tol(torch.float32))


def test_torch_export_reference_backend():
    """The reference backend exports too, as plain aten ops (its time loop is unrolled)."""
    model = _Tagger("reference").eval()
    x = torch.randn(2, 5, 4)
    ep = torch.export.export(model, (x,))
    assert not any("lstm_kernels" in t for t in _graph_targets(ep.graph_module))
    torch.testing.assert_close(ep.module()(x), model(x), **tol(torch.float32))



def _assert_flat_weights_in_step(m):
    assert m._flat_weights == [getattr(m, n) for n in m._flat_weights_names]
    assert all(a is b for a, b in zip(m._flat_weights, m.parameters()))
    assert m.all_weights == [[getattr(m, n) for n in names] for names in m._all_weights]


@pytest.mark.parametrize("cfg", [dict(), dict(num_layers=2, bidirectional=True, proj_size=3), dict(bias=False)],
                         ids=["plain", "L2-bi-proj", "nobias"])
def test_introspection_matches_nn_lstm(cfg):
    ref = nn.LSTM(4, 6, **cfg)
    ours = LSTM.from_torch(ref)
    assert ours.mode == ref.mode == "LSTM"
    assert ours.proj_size == ref.proj_size
    assert ours._flat_weights_names == ref._flat_weights_names
    assert ours._all_weights == ref._all_weights
    assert [tuple(w.shape) for w in ours._flat_weights] == [tuple(w.shape) for w in ref._flat_weights]
    assert all(torch.equal(a, b) for a, b in zip(ours._flat_weights, ref._flat_weights))
    _assert_flat_weights_in_step(ours)
    ours.double()
    _assert_flat_weights_in_step(ours)
    assert all(w.dtype == torch.float64 for w in ours._flat_weights)
    ours.load_state_dict({k: v.double() + 1 for k, v in ref.state_dict().items()})
    _assert_flat_weights_in_step(ours)
    ours.weight_ih_l0 = nn.Parameter(torch.zeros_like(ours.weight_ih_l0))
    _assert_flat_weights_in_step(ours)
    assert ours._flat_weights[0].abs().sum() == 0


@pytest.mark.parametrize("cfg", [dict(), dict(num_layers=2, bidirectional=True, proj_size=3, batch_first=True,
                                               dropout=0.25, bias=False)], ids=["plain", "full"])
@pytest.mark.parametrize("training", [True, False])
def test_to_torch_is_inverse_of_from_torch(cfg, training):
    ours = LSTM(4, 6, dtype=torch.float64, **cfg).train(training)
    twin = ours.to_torch()
    assert isinstance(twin, nn.LSTM) and twin.training == training
    for k in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional",
              "proj_size"):
        assert getattr(twin, k) == getattr(ours, k), k
    sd_a, sd_b = ours.state_dict(), twin.state_dict()
    assert list(sd_a) == list(sd_b) and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert all(w.dtype == torch.float64 for w in twin.parameters())
    assert all(a is not b for a, b in zip(ours.parameters(), twin.parameters()))  # a copy
    back = LSTM.from_torch(twin)
    assert back.training == training
    assert all(torch.equal(a, b) for a, b in zip(back.parameters(), ours.parameters()))
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    out_a, (h_a, c_a) = ours.eval()(x)
    out_b, (h_b, c_b) = twin.eval()(x)
    for a, b in ((out_a, out_b), (h_a, h_b), (c_a, c_b)):
        torch.testing.assert_close(a, b, **tol(torch.float64))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_cell_to_torch_is_inverse_of_from_torch(bias, training):
    ours = LSTMCell(4, 6, bias=bias).train(training)
    twin = ours.to_torch()
    assert isinstance(twin, nn.LSTMCell) and twin.training == training and twin.bias == bias
    sd_a, sd_b = ours.state_dict(), twin.state_dict()
    assert list(sd_a) == list(sd_b) and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    back = LSTMCell.from_torch(twin)
    assert back.training == training
    x = torch.randn(3, 4)
    for a, b in zip(ours(x), twin(x)):
        torch.testing.assert_close(a, b, **tol(torch.float32))
