"""torch.compile: one graph, no breaks, no recompiles per sequence length, correct grads.

nn.LSTM cannot be captured by Dynamo (it refuses RNN modules), so a model holding one
always falls back to eager around it; a model holding ``lstm_kernels.LSTM`` compiles
whole, the scan appearing as one custom op per layer direction. The Dynamo checks use
backend="eager"/"aot_eager" (fast on CPU); one test runs inductor end to end.

Dimensions: T seq len, B batch, I input, H hidden.
"""
from __future__ import annotations

import importlib.util

import pytest
import torch
import torch._dynamo
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_kernels.scripted  # noqa: F401  (script before conftest poisons torch.empty)
import lstm_kernels
from conftest import tol
from lstm_kernels import LSTM, LSTMCell
from lstm_kernels.backends import available_backends

I, H = 3, 5


class SeqModel(nn.Module):
    """Linear -> LSTM -> Linear, the shape of a typical tagger."""

    def __init__(self, rnn: nn.Module):
        super().__init__()
        self.inp = nn.Linear(I, I)
        self.rnn = rnn
        width = (getattr(rnn, "proj_size", 0) or rnn.hidden_size) * (2 if rnn.bidirectional else 1)
        self.out = nn.Linear(width, 2)

    def forward(self, x):
        y, (h, c) = self.rnn(self.inp(x))
        return self.out(y), h, c


class CellModel(nn.Module):
    """An LSTMCell unrolled in Python over T: Dynamo unrolls the loop into one graph."""

    def __init__(self, backend: str):
        super().__init__()
        self.cell = LSTMCell(I, H, backend=backend)

    def forward(self, x):
        state = None
        outs = []
        for t in range(x.shape[0]):
            state = self.cell(x[t], state)
            outs.append(state[0])
        return torch.stack(outs), state[1]


def triton_ready() -> bool:
    """True when the triton backend can run here (interpreter) and its first tier exists."""
    return (
        "triton" in available_backends()
        and importlib.util.find_spec("lstm_kernels._triton.pointwise") is not None
    )


def _lstm(**kw):
    return LSTM(I, H, backend="torchscript", **kw)


@pytest.fixture(autouse=True)
def _unpoisoned_empty(monkeypatch):
    """Undo conftest's NaN-filling torch.empty wrapper for these tests.

    Inductor's Python decompositions call torch.empty; traced through the wrapper, its
    fill_ becomes a mutation in the graph that inductor rejects. The poisoning looks for
    unwritten kernel outputs, which the parity tests cover; compile tests compare
    compiled against eager results.
    """
    monkeypatch.setattr(torch, "empty", torch._C._VariableFunctions.empty)
    monkeypatch.setattr(torch, "empty_like", torch._C._VariableFunctions.empty_like)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("kind", ["LSTM", "LSTMCell"])
def test_explain_reports_no_graph_break(kind):
    """With the default backend ("auto": the TorchScript custom op on CPU)."""
    model = SeqModel(LSTM(I, H, num_layers=2, bidirectional=True)) if kind == "LSTM" else CellModel("auto")
    explanation = torch._dynamo.explain(model)(torch.randn(4, 2, I))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


def test_nn_lstm_cannot_be_captured_whole():
    """The reason this package exists: Dynamo refuses nn.LSTM, so fullgraph=True fails."""
    model = SeqModel(nn.LSTM(I, H))
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with pytest.raises(torch._dynamo.exc.Unsupported):
        compiled(torch.randn(4, 2, I))


def _grads(model, x, outputs):
    weights = [torch.randn_like(o) for o in outputs]
    loss = sum((o * w).sum() for o, w in zip(outputs, weights))
    return torch.autograd.grad(loss, [x, *model.parameters()]), weights


def _compare_train(model, compiled, x_shape, dtype=torch.float32):
    x = torch.randn(x_shape, dtype=dtype, requires_grad=True)
    eager_out = model(x)
    torch.manual_seed(1)
    eager_grads, _ = _grads(model, x, eager_out)
    comp_out = compiled(x)
    torch.manual_seed(1)
    comp_grads, _ = _grads(model, x, comp_out)
    for a, b in zip(comp_out, eager_out):
        torch.testing.assert_close(a, b, **tol(dtype, "out"))
    for a, b in zip(comp_grads, eager_grads):
        torch.testing.assert_close(a, b, **tol(dtype, "grad"))


@pytest.mark.parametrize("kind", ["LSTM-L2-bi-proj", "LSTMCell", "LSTM-triton"])
def test_fullgraph_training_aot_eager_grads_match(kind):
    if kind == "LSTMCell":
        model = CellModel("torchscript")
    elif kind == "LSTM-triton":
        if not triton_ready():
            pytest.skip("the triton backend is not available here")
        model = SeqModel(LSTM(I, H, bidirectional=True, backend="triton"))  # interpreted: tiny
    else:
        model = SeqModel(_lstm(num_layers=2, bidirectional=True, proj_size=2))
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    _compare_train(model, compiled, (3 if kind == "LSTM-triton" else 5, 3, I))


def test_fullgraph_eval_no_grad_matches():
    model = SeqModel(_lstm(num_layers=2, dropout=0.3)).eval()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.randn(6, 2, I)
    with torch.no_grad():
        for a, b in zip(compiled(x), model(x)):
            torch.testing.assert_close(a, b, **tol(torch.float32))


class _CountingBackend:
    """A torch.compile backend that counts the graphs Dynamo hands it (one per (re)compile)."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


@pytest.mark.parametrize("how", ["dynamic=True", "mark_dynamic", "automatic"])
def test_changing_sequence_length_does_not_recompile_each_time(how):
    model = SeqModel(_lstm(num_layers=2))
    counter = _CountingBackend()
    dynamic = True if how == "dynamic=True" else None
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=dynamic)
    lengths = (4, 7, 5, 11, 2)
    for T in lengths:
        x = torch.randn(T, 2, I)
        if how == "mark_dynamic":
            torch._dynamo.mark_dynamic(x, 0)
        for a, b in zip(compiled(x), model(x)):
            torch.testing.assert_close(a, b, **tol(torch.float32))
    # "automatic": the first call specializes on T, the second recompiles with T symbolic.
    assert counter.graphs == (2 if how == "automatic" else 1)


def test_packed_input_compiles_with_breaks_and_stays_correct():
    """PackedSequence input is not fullgraph (Dynamo skips pack_padded_sequence) but correct."""

    class Packed(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = _lstm(bidirectional=True)

        def forward(self, x, lengths):
            _, (h, c) = self.rnn(pack_padded_sequence(x, lengths, enforce_sorted=False))
            return h, c

    model = Packed()
    compiled = torch.compile(model, backend="eager")
    x, lengths = torch.randn(6, 3, I), torch.tensor([4, 6, 2])
    for a, b in zip(compiled(x, lengths), model(x, lengths)):
        torch.testing.assert_close(a, b, **tol(torch.float32))


def test_inductor_training_step_matches_eager():
    """The default inductor backend end to end: forward and backward match eager."""
    model = SeqModel(_lstm(num_layers=2, bidirectional=True))
    compiled = torch.compile(model, fullgraph=True)
    _compare_train(model, compiled, (5, 2, I))


@pytest.mark.skipif(not lstm_kernels.scripted.HAS_DNN_LINEAR, reason="PyTorch built without oneDNN linear")
@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_fullgraph_with_onednn_input_projection(backend, monkeypatch):
    """The oneDNN input projection (a custom op with its own backward), forced here at tiny
    sizes, compiles into the one graph and gives eager's outputs and gradients."""
    monkeypatch.setattr(lstm_kernels.scripted.thresholds, "PROJ_MIN_MACS", 1)
    model = SeqModel(_lstm(num_layers=2, bidirectional=True))
    explanation = torch._dynamo.explain(model)(torch.randn(4, 2, I))
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert "lstm_kernels.dnn_linear" in str(explanation.graphs[0].graph)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    _compare_train(model, compiled, (5, 2, I))
