"""The native backend (torch's own kernels on our weights) against nn.LSTM."""
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_kernels
from conftest import tol


def _pair(backend="native", dtype=torch.float32, **kw):
    ref = nn.LSTM(5, 7, dtype=dtype, **kw)
    ours = lstm_kernels.LSTM.from_torch(ref, backend=backend)
    return ref, ours


def _grads(out, params):
    return torch.autograd.grad(out.sum(), params)


@pytest.mark.parametrize("backend", ["native", "auto"])
@pytest.mark.parametrize("kw", [dict(), dict(num_layers=2, bidirectional=True), dict(proj_size=3),
                                dict(bias=False, batch_first=True)])
def test_matches_nn_lstm_in_eval_backward(backend, kw):
    ref, ours = _pair(backend, **kw)
    ref.eval(), ours.eval()
    x = torch.randn(4, 3, 5, requires_grad=True)
    a, (ha, ca) = ref(x)
    b, (hb, cb) = ours(x)
    for got, want in ((b, a), (hb, ha), (cb, ca)):
        torch.testing.assert_close(got, want, **tol(torch.float32))
    ga = _grads(a.sum() + ha.sum() + ca.sum(), [x, *ref.parameters()])
    gb = _grads(b.sum() + hb.sum() + cb.sum(), [x, *ours.parameters()])
    for got, want in zip(gb, ga):
        torch.testing.assert_close(got, want, **tol(torch.float32, "grad"))


@pytest.mark.parametrize("backend", ["native", "auto"])
def test_packed_input(backend):
    ref, ours = _pair(backend, num_layers=2, bidirectional=True)
    x = torch.randn(6, 3, 5)
    packed = pack_padded_sequence(x, torch.tensor([6, 2, 4]), enforce_sorted=False)
    a, (ha, ca) = ref(packed)
    b, (hb, cb) = ours(packed)
    torch.testing.assert_close(b.data, a.data, **tol(torch.float32))
    torch.testing.assert_close(hb, ha, **tol(torch.float32))
    torch.testing.assert_close(cb, ca, **tol(torch.float32))
    assert torch.equal(b.batch_sizes, a.batch_sizes)


def test_gradcheck_float64():
    ours = lstm_kernels.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64, backend="native")
    x = torch.randn(3, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: ours(t)[0], (x,))


def test_cell_matches_nn_lstmcell():
    ref = nn.LSTMCell(5, 7)
    ours = lstm_kernels.LSTMCell.from_torch(ref, backend="native")
    x = torch.randn(3, 5, requires_grad=True)
    ha, ca = ref(x)
    hb, cb = ours(x)
    torch.testing.assert_close(hb, ha, **tol(torch.float32))
    torch.testing.assert_close(cb, ca, **tol(torch.float32))
    for got, want in zip(_grads(hb + cb, [x, *ours.parameters()]), _grads(ha + ca, [x, *ref.parameters()])):
        torch.testing.assert_close(got, want, **tol(torch.float32, "grad"))


@pytest.mark.parametrize("backend", ["native", "auto"])
def test_compile_fullgraph(backend):
    ref, ours = _pair(backend, num_layers=2)
    compiled = torch.compile(ours, fullgraph=True, backend="eager")
    x = torch.randn(4, 3, 5, requires_grad=True)
    b, _ = compiled(x)
    a, _ = ref(x)
    torch.testing.assert_close(b, a, **tol(torch.float32))
    for got, want in zip(_grads(b, [x, *ours.parameters()]), _grads(a, [x, *ref.parameters()])):
        torch.testing.assert_close(got, want, **tol(torch.float32, "grad"))


def test_dropout_between_layers_like_nn_lstm():
    ref, ours = _pair("native", num_layers=3, dropout=0.5)
    x = torch.randn(4, 3, 5)
    torch.manual_seed(1)
    a, _ = ref(x)
    torch.manual_seed(1)
    b, _ = ours(x)
    torch.testing.assert_close(b, a, **tol(torch.float32))


def test_registered():
    assert "native" in lstm_kernels.available_backends()
