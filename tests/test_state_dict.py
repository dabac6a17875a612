"""Parameters and checkpoints: the same names, shapes, order and values as nn.LSTM / nn.LSTMCell.

Checkpoints must load both ways without conversion, ``from_torch`` must copy a module
exactly, and initialisation must follow nn.LSTM's (uniform in +-1/sqrt(H), drawn in
the same order, so the same seed gives the same weights).
"""
from __future__ import annotations

import copy
import io
import itertools
import math

import pytest
import torch
from torch import nn

import lstm_kernels
from conftest import tol
from helpers import Config, config_id, make_inputs, run_module

# nn.LSTM notes on CPU that oneDNN lacks projections; it is the oracle here, so the note is noise.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")

CONFIGS = [
    Config(num_layers=L, bidirectional=bi, bias=bias, proj_size=proj, batch_first=bf)
    for L, bi, bias, proj, bf in itertools.product([1, 2, 3], [False, True], [True, False], [0, 3], [False])
] + [Config(num_layers=2, bidirectional=True, batch_first=True, input_size=1, hidden_size=1)]


@pytest.mark.parametrize("cfg", CONFIGS, ids=config_id)
def test_parameter_names_shapes_and_order(cfg):
    ref = nn.LSTM(**cfg.module_kwargs())
    ours = lstm_kernels.LSTM(**cfg.module_kwargs())
    want = [(k, tuple(v.shape), v.dtype) for k, v in ref.state_dict().items()]
    assert [(k, tuple(v.shape), v.dtype) for k, v in ours.state_dict().items()] == want
    assert [(n, tuple(p.shape)) for n, p in ours.named_parameters()] == [
        (n, tuple(p.shape)) for n, p in ref.named_parameters()
    ]
    assert list(ours.buffers()) == list(ref.buffers())
    assert ours._flat_weights_names == ref._flat_weights_names
    assert [[tuple(w.shape) for w in ws] for ws in ours.all_weights] == [
        [tuple(w.shape) for w in ws] for ws in ref.all_weights
    ]
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional",
                 "proj_size"):
        assert getattr(ours, attr) == getattr(ref, attr), attr


def test_cell_parameter_names_shapes_and_order():
    for bias in (True, False):
        ref = nn.LSTMCell(5, 7, bias=bias)
        ours = lstm_kernels.LSTMCell(5, 7, bias=bias)
        assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == [
            (k, tuple(v.shape)) for k, v in ref.state_dict().items()
        ]
        assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
        assert (ours.bias_ih is None) == (ref.bias_ih is None)


def _outputs(module, cfg, inputs, dtype):
    x, h0, c0, lengths = inputs
    with torch.no_grad():
        return run_module(module, cfg, x, h0, c0, lengths, dtype)[:3]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize(
    "cfg",
    [Config(num_layers=2, bidirectional=True, proj_size=3, mode="packed-unsorted"),
     Config(num_layers=3, bias=False, batch_first=True)],
    ids=config_id,
)
def test_load_state_dict_both_ways(cfg, dtype):
    """nn.LSTM -> ours -> nn.LSTM keeps every value bit for bit, so results are bitwise equal."""
    ref = nn.LSTM(**cfg.module_kwargs(), dtype=dtype)
    ours = lstm_kernels.LSTM(**cfg.module_kwargs(), dtype=dtype, backend="reference")
    ours.load_state_dict(ref.state_dict())
    back = nn.LSTM(**cfg.module_kwargs(), dtype=dtype)
    back.load_state_dict(ours.state_dict())
    for k, v in ref.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    ours2 = lstm_kernels.LSTM(**cfg.module_kwargs(), dtype=dtype, backend="reference")
    ours2.load_state_dict(back.state_dict())
    inputs = make_inputs(cfg, dtype)
    for u, v in zip(_outputs(ours, cfg, inputs, dtype), _outputs(ours2, cfg, inputs, dtype)):
        assert torch.equal(u, v)
    for u, v in zip(_outputs(ref, cfg, inputs, dtype), _outputs(back, cfg, inputs, dtype)):
        assert torch.equal(u, v)
    for u, v in zip(_outputs(ours, cfg, inputs, dtype), _outputs(ref, cfg, inputs, dtype)):
        torch.testing.assert_close(u, v, **tol(dtype))


def test_checkpoint_file_round_trip():
    """torch.save of our state_dict loads into nn.LSTM with weights_only=True, and back."""
    ours = lstm_kernels.LSTM(4, 6, 2, bidirectional=True, proj_size=2)
    buf = io.BytesIO()
    torch.save(ours.state_dict(), buf)
    buf.seek(0)
    ref = nn.LSTM(4, 6, 2, bidirectional=True, proj_size=2)
    ref.load_state_dict(torch.load(buf, weights_only=True))
    buf = io.BytesIO()
    torch.save(ref.state_dict(), buf)
    buf.seek(0)
    again = lstm_kernels.LSTM(4, 6, 2, bidirectional=True, proj_size=2)
    again.load_state_dict(torch.load(buf, weights_only=True))
    for k, v in ours.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


def test_load_mismatched_state_dict_fails_like_nn_module():
    ours = lstm_kernels.LSTM(4, 6, 2)
    with pytest.raises(RuntimeError, match="size mismatch"):
        ours.load_state_dict(nn.LSTM(4, 5, 2).state_dict())
    with pytest.raises(RuntimeError, match="Missing key"):
        ours.load_state_dict(nn.LSTM(4, 6, 1).state_dict())
    with pytest.raises(RuntimeError, match="Unexpected key"):
        ours.load_state_dict(nn.LSTM(4, 6, 2, bidirectional=True).state_dict())


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=lambda d: str(d)[6:])
def test_from_torch_lstm(dtype, training):
    ref = nn.LSTM(3, 8, 2, bias=False, batch_first=True, dropout=0.25, bidirectional=True, proj_size=5,
                  dtype=dtype)
    ref.train(training)
    ours = lstm_kernels.LSTM.from_torch(ref, backend="torchscript")
    assert ours.backend == "torchscript"
    assert ours.training == training
    for attr in ("input_size", "hidden_size", "num_layers", "bias", "batch_first", "dropout", "bidirectional",
                 "proj_size"):
        assert getattr(ours, attr) == getattr(ref, attr), attr
    for (n, p), (rn, rp) in zip(ours.named_parameters(), ref.named_parameters()):
        assert n == rn and p.dtype == dtype and torch.equal(p, rp), n
        assert p.data_ptr() != rp.data_ptr(), f"{n} shares storage with the source module"
    with torch.no_grad():
        ref.weight_ih_l0.add_(1.0)
    assert not torch.equal(ours.weight_ih_l0, ref.weight_ih_l0)


def test_from_torch_cell():
    for bias in (True, False):
        ref = nn.LSTMCell(3, 8, bias=bias, dtype=torch.float64)
        ours = lstm_kernels.LSTMCell.from_torch(ref, backend="reference")
        assert (ours.input_size, ours.hidden_size, ours.bias, ours.backend) == (3, 8, bias, "reference")
        for (n, p), (rn, rp) in zip(ours.named_parameters(), ref.named_parameters()):
            assert n == rn and p.dtype == torch.float64 and torch.equal(p, rp), n
            assert p.data_ptr() != rp.data_ptr(), n
        x = torch.randn(4, 3, dtype=torch.float64)
        for u, v in zip(ours(x), ref(x)):
            torch.testing.assert_close(u, v, **tol(torch.float64))


@pytest.mark.parametrize("cfg", [Config(hidden_size=64, num_layers=2, bidirectional=True, proj_size=16),
                                 Config(hidden_size=9, input_size=300, bias=False)], ids=config_id)
def test_initialisation_is_uniform_in_range(cfg):
    ours = lstm_kernels.LSTM(**cfg.module_kwargs())
    bound = 1.0 / math.sqrt(cfg.hidden_size)
    values = torch.cat([p.detach().flatten() for p in ours.parameters()])
    assert values.abs().max() <= bound
    # Uniform on [-b, b] with thousands of samples reaches near both ends, has mean
    # near 0 and standard deviation near b/sqrt(3); the margins are many standard errors.
    n = values.numel()
    assert n > 2000
    assert values.max() > 0.95 * bound and values.min() < -0.95 * bound
    assert values.mean().abs() < 6 * bound / math.sqrt(3 * n)
    assert abs(values.std().item() - bound / math.sqrt(3)) < 0.1 * bound / math.sqrt(3)
    for name, p in ours.named_parameters():
        assert torch.unique(p).numel() > p.numel() // 2, f"{name} not randomly initialised"


def test_same_seed_gives_nn_lstm_weights():
    """Parameters are drawn in nn.LSTM's order, so seeded training starts identically."""
    for kwargs in ({"num_layers": 2, "bidirectional": True, "proj_size": 3}, {"bias": False}):
        torch.manual_seed(123)
        ref = nn.LSTM(5, 7, **kwargs)
        torch.manual_seed(123)
        ours = lstm_kernels.LSTM(5, 7, **kwargs)
        for k, v in ref.state_dict().items():
            assert torch.equal(ours.state_dict()[k], v), k
    torch.manual_seed(7)
    ref_cell = nn.LSTMCell(5, 7)
    torch.manual_seed(7)
    ours_cell = lstm_kernels.LSTMCell(5, 7)
    for k, v in ref_cell.state_dict().items():
        assert torch.equal(ours_cell.state_dict()[k], v), k


def test_reset_parameters_redraws():
    ours = lstm_kernels.LSTM(5, 7, 2)
    before = copy.deepcopy(ours.state_dict())
    ours.reset_parameters()
    bound = 1.0 / math.sqrt(7)
    for k, v in ours.state_dict().items():
        assert not torch.equal(v, before[k]), k
        assert v.abs().max() <= bound


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16], ids=lambda d: str(d)[6:])
def test_factory_kwargs_and_to(dtype):
    ours = lstm_kernels.LSTM(5, 7, 2, proj_size=3, dtype=dtype)
    assert all(p.dtype == dtype for p in ours.parameters())
    cell = lstm_kernels.LSTMCell(5, 7, dtype=dtype)
    assert all(p.dtype == dtype for p in cell.parameters())
    moved = ours.to(torch.float32)
    assert moved is ours and all(p.dtype == torch.float32 for p in ours.parameters())
    ref = nn.LSTM(5, 7, 2, proj_size=3)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(4, 2, 5)
    with torch.no_grad():
        for u, v in zip(torch.utils._pytree.tree_leaves(ours(x)), torch.utils._pytree.tree_leaves(ref(x))):
            torch.testing.assert_close(u, v, **tol(torch.float32))


def test_deepcopy_and_repr():
    ours = lstm_kernels.LSTM(5, 7, 2, batch_first=True, bidirectional=True, proj_size=3, backend="reference")
    twin = copy.deepcopy(ours)
    for k, v in ours.state_dict().items():
        assert torch.equal(twin.state_dict()[k], v)
        assert twin.state_dict()[k].data_ptr() != v.data_ptr()
    ref = nn.LSTM(5, 7, 2, batch_first=True, bidirectional=True, proj_size=3)
    # Same repr as nn.LSTM apart from the class name and the backend.
    assert repr(ours).split("(", 1)[1].replace(", backend='reference'", "") == repr(ref).split("(", 1)[1]
