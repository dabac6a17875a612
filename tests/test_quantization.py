"""Dynamic quantization (quantize_dynamic) of models holding our modules equals quantizing
the nn.LSTM / nn.LSTMCell twin: same quantized module type, same weights, same outputs."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.ao.quantization import quantize_dynamic

import lstm_kernels
from lstm_kernels import LSTM, LSTMCell


class Tagger(nn.Module):
    def __init__(self, rnn, out):
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(out, 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


@pytest.mark.parametrize("dtype", [torch.qint8, torch.float16], ids=["qint8", "fp16"])
@pytest.mark.parametrize("cfg", [dict(), dict(num_layers=2, bidirectional=True, batch_first=True),
                                 dict(num_layers=3, dropout=0.5)], ids=["plain", "L2-bi-bf", "L3-dropout"])
def test_quantize_dynamic_equals_nn_lstm_twin(cfg, dtype):
    torch.manual_seed(0)
    ref = Tagger(nn.LSTM(4, 6, **cfg), 12 if cfg.get("bidirectional") else 6).eval()
    ours = Tagger(LSTM.from_torch(ref.rnn), ref.head.in_features).eval()
    ours.head.load_state_dict(ref.head.state_dict())
    q_ref = quantize_dynamic(ref, {nn.LSTM, nn.Linear}, dtype=dtype)
    q_ours = quantize_dynamic(ours, {lstm_kernels.LSTM, nn.Linear}, dtype=dtype)
    assert type(q_ours.rnn) is type(q_ref.rnn) is torch.ao.nn.quantized.dynamic.LSTM
    assert type(q_ours.head) is type(q_ref.head)
    x = torch.randn(3, 5, 4)
    assert torch.equal(q_ours(x), q_ref(x))
    assert isinstance(ours.rnn, LSTM)  # quantize_dynamic copies by default (inplace=False)


def test_quantize_dynamic_cell():
    torch.manual_seed(0)
    ref = nn.Sequential(nn.LSTMCell(4, 6)).eval()
    ours = nn.Sequential(LSTMCell.from_torch(ref[0])).eval()
    q_ref = quantize_dynamic(ref, {nn.LSTMCell}, dtype=torch.qint8)
    q_ours = quantize_dynamic(ours, {LSTMCell}, dtype=torch.qint8)
    assert type(q_ours[0]) is type(q_ref[0]) is torch.ao.nn.quantized.dynamic.LSTMCell
    x = torch.randn(3, 4)
    for a, b in zip(q_ours(x), q_ref(x)):
        assert torch.equal(a, b)


def test_default_spec_leaves_our_modules_float():
    # torch's default spec names only torch classes; README says to pass lstm_kernels.LSTM.
    m = nn.Sequential(LSTM(4, 6)).eval()
    q = quantize_dynamic(m, dtype=torch.qint8)
    assert isinstance(q[0], LSTM)


def test_bias_false_refused_like_nn_lstm():
    # torch's quantized dynamic LSTM needs biases; it refuses the twin the same way.
    with pytest.raises(AssertionError, match="bias"):
        quantize_dynamic(nn.Sequential(nn.LSTM(4, 6, bias=False)).eval(), {nn.LSTM}, dtype=torch.qint8)
    for rnn in (LSTM(4, 6, bias=False), LSTMCell(4, 6, bias=False)):
        with pytest.raises(ValueError, match="bias=False cannot be dynamically quantized"):
            quantize_dynamic(nn.Sequential(rnn).eval(), {type(rnn)}, dtype=torch.qint8)
