"""Dynamic quantization: ``torch.ao.quantization.quantize_dynamic`` of our modules.

``quantize_dynamic`` swaps each module through its default dynamic mapping (module
class -> class with ``from_float``). We register our classes there at import: each is
converted through ``to_torch()`` and quantized by torch's own dynamic ``LSTM`` /
``LSTMCell``, so the result is exactly what quantizing the ``nn.LSTM`` twin gives
(tests/test_quantization.py). torch's default spec names only torch classes: pass ours,
e.g. ``quantize_dynamic(model, {lstm_kernels.LSTM, nn.Linear}, dtype=torch.qint8)``.
"""
from __future__ import annotations

from torch.ao.nn.quantized import dynamic as nnqd
from torch.ao.quantization import quantization_mappings

from .modules import LSTM, LSTMCell


def _via_torch(mod, quantized_cls, use_precomputed_fake_quant: bool):
    if not mod.bias:
        # torch's quantized LSTM asserts this for nn.LSTM; say it plainly instead
        # (tests/test_quantization.py::test_bias_false_refused_like_nn_lstm).
        raise ValueError(
            f"quantize_dynamic: lstm_kernels.{type(mod).__name__} with bias=False cannot be dynamically "
            "quantized: torch's quantized LSTM/LSTMCell needs biases (nn.LSTM is refused the same way)"
        )
    twin = mod.to_torch()
    twin.qconfig = getattr(mod, "qconfig", None)
    return quantized_cls.from_float(twin, use_precomputed_fake_quant=use_precomputed_fake_quant)


class DynamicQuantizedLSTM:
    """Mapping target for ``LSTM``: ``from_float`` gives ``torch.ao.nn.quantized.dynamic.LSTM``."""

    @classmethod
    def from_float(cls, mod: LSTM, use_precomputed_fake_quant: bool = False) -> nnqd.LSTM:
        return _via_torch(mod, nnqd.LSTM, use_precomputed_fake_quant)


class DynamicQuantizedLSTMCell:
    """Mapping target for ``LSTMCell``: ``from_float`` gives ``torch.ao.nn.quantized.dynamic.LSTMCell``."""

    @classmethod
    def from_float(cls, mod: LSTMCell, use_precomputed_fake_quant: bool = False) -> nnqd.LSTMCell:
        return _via_torch(mod, nnqd.LSTMCell, use_precomputed_fake_quant)


def register() -> None:
    """Add our classes to torch's default dynamic quantization mapping (idempotent)."""
    mapping = quantization_mappings.get_default_dynamic_quant_module_mappings()
    mapping[LSTM] = DynamicQuantizedLSTM
    mapping[LSTMCell] = DynamicQuantizedLSTMCell


register()
