"""torch.jit.trace and torch.jit.script (with save/load) of models holding our modules.

Tracing records nn.LSTM's aten::lstm on our weights (functional.exporting), so a trace
passes its own checks and runs at any T and B. Scripting compiles an nn.LSTM /
nn.LSTMCell that holds our Parameter objects (__prepare_scriptable__).
"""
from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from conftest import tol
from lstm_kernels import LSTM, LSTMCell

CONFIGS = [
    dict(num_layers=1),
    dict(num_layers=2, bidirectional=True, batch_first=True),
    dict(num_layers=2, proj_size=3),
    dict(num_layers=3, bias=False),
]
IDS = ["L1", "L2-bi-bf", "proj", "L3-nobias"]


class Tagger(nn.Module):
    def __init__(self, rnn: nn.Module, out: int):
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(out, 2)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out)


def _pair(cfg):
    torch.manual_seed(0)
    ref = nn.LSTM(4, 6, **cfg).eval()
    return ref, LSTM.from_torch(ref).eval()


def _out_size(cfg):
    return (cfg.get("proj_size") or 6) * (2 if cfg.get("bidirectional") else 1)


def _close(a, b):
    for x, y in zip(torch.utils._pytree.tree_leaves(a), torch.utils._pytree.tree_leaves(b)):
        torch.testing.assert_close(x, y, **tol(torch.float32))


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_trace_passes_checks_and_generalises_over_t_and_b(cfg):
    ref, ours = _pair(cfg)
    x = torch.randn(5, 3, 4)
    traced = torch.jit.trace(ours, (x,))  # default check_trace=True
    assert "aten::lstm" in str(traced.graph)
    for shape in ((5, 3, 4), (9, 2, 4), (1, 7, 4)):
        x2 = torch.randn(*shape)
        with torch.no_grad():
            _close(traced(x2), ref(x2))


def test_trace_cell():
    torch.manual_seed(0)
    ref = nn.LSTMCell(4, 6)
    ours = LSTMCell.from_torch(ref)
    args = (torch.randn(3, 4), (torch.randn(3, 6), torch.randn(3, 6)))
    traced = torch.jit.trace(ours, args)
    for B in (3, 5):
        a = (torch.randn(B, 4), (torch.randn(B, 6), torch.randn(B, 6)))
        with torch.no_grad():
            _close(traced(*a), ref(*a))


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_script_shares_parameters_and_survives_save_load(cfg):
    ref, ours = _pair(cfg)
    model = Tagger(ours, _out_size(cfg)).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(5, 3, 4)
    with torch.no_grad():
        want = model(x)
        _close(scripted(x), want)
        buf = io.BytesIO()
        torch.jit.save(scripted, buf)
        buf.seek(0)
        loaded = torch.jit.load(buf)
        _close(loaded(x), want)
        ours.weight_hh_l0.add_(0.5)  # the scripted module holds our Parameter objects
        _close(scripted(x), model(x))


def test_prepare_scriptable_returns_twin_holding_our_parameters():
    ours = LSTM(4, 6, num_layers=2, bidirectional=True)
    twin = ours.__prepare_scriptable__()
    assert isinstance(twin, nn.LSTM)
    assert all(a is b for a, b in zip(ours.parameters(), twin.parameters()))
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in twin.named_parameters()]
    assert all(a is b for a, b in zip(twin._flat_weights, ours._flat_weights))
    cell = LSTMCell(4, 6, bias=False)
    twin_cell = cell.__prepare_scriptable__()
    assert isinstance(twin_cell, nn.LSTMCell)
    assert all(a is b for a, b in zip(cell.parameters(), twin_cell.parameters()))


@pytest.mark.parametrize("bias", [True, False])
def test_script_cell(bias):
    torch.manual_seed(0)
    ours = LSTMCell(4, 6, bias=bias)
    scripted = torch.jit.script(ours)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    args = (torch.randn(3, 4), (torch.randn(3, 6), torch.randn(3, 6)))
    with torch.no_grad():
        want = ours(*args)
        _close(scripted(*args), want)
        _close(loaded(*args), want)


@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_export_path_with_packed_input_and_dropout(monkeypatch, enforce_sorted):
    # The path trace/ONNX take (functional.exporting) also handles PackedSequence and
    # training-mode dropout: it is nn.LSTM's own call, so one seed gives nn.LSTM's result.
    import lstm_kernels.functional as LF

    monkeypatch.setattr(LF, "exporting", lambda: True)
    torch.manual_seed(0)
    ref = nn.LSTM(4, 6, num_layers=2, bidirectional=True, dropout=0.3).train()
    ours = LSTM.from_torch(ref).train()
    x = torch.randn(5, 3, 4)
    lengths = [5, 2, 4] if not enforce_sorted else [5, 4, 2]
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=enforce_sorted)
    h0 = (torch.randn(4, 3, 6), torch.randn(4, 3, 6))
    torch.manual_seed(1)
    got_out, got_hc = ours(packed, h0)
    torch.manual_seed(1)
    want_out, want_hc = ref(packed, h0)
    _close((got_out.data, got_hc), (want_out.data, want_hc))
    assert torch.equal(got_out.batch_sizes, want_out.batch_sizes)
