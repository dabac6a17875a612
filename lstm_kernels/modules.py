"""``LSTM`` and ``LSTMCell``: drop-in ``nn.LSTM`` / ``nn.LSTMCell`` modules.

Parameter names, shapes, order, initialisation and ``state_dict`` keys are exactly
``nn.LSTM``'s, so checkpoints load both ways. The only addition is ``backend``.
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Optional, Union

import torch
from torch import Tensor, nn
from torch.nn import Parameter, init
from torch.nn.utils.rnn import PackedSequence

from . import dispatch
from . import functional as LF
from .backends import check_backend_name


_SLOT_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
_MISSING = object()


def _check_int(name: str, value, minimum: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be greater than {'zero' if minimum == 1 else 'or equal to zero'}")


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} should be of type bool, got: {type(value).__name__}")


def _share_parameters(src: nn.Module, dst: nn.Module) -> nn.Module:
    """Make ``dst`` hold ``src``'s own Parameter objects (same names), in ``src``'s training mode."""
    for name, p in src.named_parameters(recurse=False):
        setattr(dst, name, p)
    dst.train(src.training)
    return dst


class LSTM(nn.Module):
    r"""Multi-layer LSTM with ``torch.nn.LSTM``'s API, parameters and results.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout,
        bidirectional, proj_size, device, dtype: exactly as ``torch.nn.LSTM``.
        backend: ``"auto"`` (the fastest candidate measured on this device, see
            ``dispatch.py``), ``"native"`` (torch's own kernels), ``"triton"``,
            ``"torchscript"`` or ``"reference"`` (eager oracle).

    Shapes:
        input ``[T, B, I]`` (``[B, T, I]`` if ``batch_first``), ``[T, I]`` unbatched, or a
        ``PackedSequence``; ``hx = (h0 [L*D, B, P], c0 [L*D, B, H])`` or ``None``.
        Returns ``output [T, B, D*P]`` and ``(h_n [L*D, B, P], c_n [L*D, B, H])``,
        where ``D = 2 if bidirectional else 1`` and ``P = proj_size or hidden_size``.

    Example:
        >>> lstm = LSTM(16, 32, num_layers=2, batch_first=True)
        >>> out, (h, c) = lstm(torch.randn(4, 10, 16))
        >>> out.shape
        torch.Size([4, 10, 32])
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device=None,
        dtype=None,
        *,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(dropout, numbers.Number) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise ValueError(
                "dropout should be a number in range [0, 1] representing the probability of an element being zeroed"
            )
        _check_bool("bias", bias)
        _check_bool("batch_first", batch_first)
        _check_bool("bidirectional", bidirectional)
        _check_int("input_size", input_size, 1)
        _check_int("hidden_size", hidden_size, 1)
        _check_int("num_layers", num_layers, 1)
        if not isinstance(proj_size, int) or isinstance(proj_size, bool):
            raise TypeError(f"proj_size should be of type int, got: {type(proj_size).__name__}")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        check_backend_name(backend)
        if dropout > 0 and num_layers == 1:
            warnings.warn(
                "dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                f"expects num_layers greater than 1, but got dropout={dropout} and num_layers={num_layers}",
                stacklevel=2,
            )
        factory = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        self.backend = backend
        num_directions = 2 if bidirectional else 1
        real_hidden = proj_size if proj_size > 0 else hidden_size
        self.mode = "LSTM"
        self._flat_weights_names: list[str] = []
        self._all_weights: list[list[str]] = []
        for layer in range(num_layers):
            for direction in range(num_directions):
                layer_input = input_size if layer == 0 else real_hidden * num_directions
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                shapes = {
                    "weight_ih": (4 * hidden_size, layer_input),
                    "weight_hh": (4 * hidden_size, real_hidden),
                }
                if bias:
                    shapes["bias_ih"] = (4 * hidden_size,)
                    shapes["bias_hh"] = (4 * hidden_size,)
                if proj_size > 0:
                    shapes["weight_hr"] = (proj_size, hidden_size)
                names = []
                for base, shape in shapes.items():
                    setattr(self, base + suffix, Parameter(torch.empty(shape, **factory)))
                    names.append(base + suffix)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            init.uniform_(weight, -stdv, stdv)

    @property
    def all_weights(self) -> list[list[Parameter]]:
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    @property
    def _flat_weights(self) -> list[Parameter]:
        # nn.LSTM keeps this list in step by hand; read each time, it cannot go stale after
        # .to(), load_state_dict or reassignment (tests/test_ecosystem.py::test_introspection_*).
        return [getattr(self, name) for name in self._flat_weights_names]

    def _layer_weights(self):
        """Per layer and direction: (w_ih, w_hh, b_ih, b_hh, w_hr), absent ones as None.

        Read from ``_parameters`` directly when a name is there (``nn.Module.__getattr__``
        costs a few microseconds a name, on every call); a weight moved out of it
        (parametrizations, weight norm) is read with ``getattr`` as before
        (tests/test_ecosystem.py).
        """
        params = self._parameters
        out = []
        for names in self._slot_names():
            row = []
            for name in names:
                w = params.get(name, _MISSING)
                row.append(getattr(self, name, None) if w is _MISSING else w)
            out.append(tuple(row))
        return out

    def _slot_names(self) -> list[tuple[str, ...]]:
        """Per layer and direction the five names ``_layer_weights`` reads, built once."""
        cached = self.__dict__.get("_slot_names_cache")
        if cached is None or cached[0] is not self._all_weights:
            names = [tuple(base + n[0][len("weight_ih"):] for base in _SLOT_NAMES) for n in self._all_weights]
            cached = (self._all_weights, names)
            self.__dict__["_slot_names_cache"] = cached
        return cached[1]

    def forward(
        self, input: Union[Tensor, PackedSequence], hx: Optional[tuple[Tensor, Tensor]] = None
    ) -> tuple[Union[Tensor, PackedSequence], tuple[Tensor, Tensor]]:
        """Same as ``torch.nn.LSTM.forward``: returns ``(output, (h_n, c_n))``."""
        return LF.lstm(
            input,
            hx,
            self._layer_weights(),
            input_size=self.input_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            batch_first=self.batch_first,
            dropout=self.dropout,
            training=self.training,
            bidirectional=self.bidirectional,
            proj_size=self.proj_size,
            backend=self.backend,
        )

    def __prepare_scriptable__(self) -> nn.LSTM:
        # torch.jit.script compiles the returned module in our place: nn.LSTM holding our
        # Parameter objects, so training a scripted model trains this one
        # (tests/test_torchscript.py).
        return self.to_torch(share=True)

    def to_torch(self, *, share: bool = False) -> nn.LSTM:
        """An ``nn.LSTM`` with this configuration, device, dtype, weights and training mode.

        The inverse of :meth:`from_torch`. The weights are copied, or with ``share=True``
        the result holds this module's own Parameter objects.
        """
        w = self.weight_ih_l0
        new = nn.LSTM(
            self.input_size, self.hidden_size, self.num_layers, self.bias, self.batch_first, self.dropout,
            self.bidirectional, self.proj_size, device=w.device, dtype=w.dtype,
        )
        if share:
            _share_parameters(self, new)  # nn.LSTM.__setattr__ keeps its _flat_weights in step
        else:
            new.load_state_dict(self.state_dict())
            new.train(self.training)
        return new

    def flatten_parameters(self) -> None:
        """No-op, for code written for ``nn.LSTM``: the weights are used as they are."""

    @classmethod
    def from_torch(cls, module: nn.LSTM, *, backend: str = "auto") -> "LSTM":
        """A copy of an ``nn.LSTM`` (same configuration, device, dtype and weights)."""
        if not isinstance(module, nn.LSTM):
            raise TypeError(f"from_torch expects a torch.nn.LSTM, got {type(module).__name__}")
        w = module.weight_ih_l0
        new = cls(
            module.input_size, module.hidden_size, module.num_layers, module.bias, module.batch_first,
            module.dropout, module.bidirectional, module.proj_size, device=w.device, dtype=w.dtype,
            backend=backend,
        )
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.proj_size != 0:
            s += f", proj_size={self.proj_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.batch_first is not False:
            s += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            s += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            s += f", bidirectional={self.bidirectional}"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s


class LSTMCell(nn.Module):
    r"""One LSTM step with ``torch.nn.LSTMCell``'s API, parameters and results.

    Args:
        input_size, hidden_size, bias, device, dtype: exactly as ``torch.nn.LSTMCell``.
        backend: as for :class:`LSTM`.

    Shapes:
        input ``[B, I]`` or ``[I]``; ``hx = (h [B, H], c [B, H])`` (or 1-D) or ``None``.
        Returns ``(h', c')`` of the same shapes as ``hx``.

    Example:
        >>> cell = LSTMCell(8, 16)
        >>> h, c = cell(torch.randn(3, 8))
        >>> h.shape
        torch.Size([3, 16])
    """

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None, *,
                 backend: str = "auto") -> None:
        super().__init__()
        _check_bool("bias", bias)
        _check_int("input_size", input_size, 1)
        _check_int("hidden_size", hidden_size, 1)
        check_backend_name(backend)
        factory = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.backend = backend
        self.weight_ih = Parameter(torch.empty(4 * hidden_size, input_size, **factory))
        self.weight_hh = Parameter(torch.empty(4 * hidden_size, hidden_size, **factory))
        if bias:
            self.bias_ih = Parameter(torch.empty(4 * hidden_size, **factory))
            self.bias_hh = Parameter(torch.empty(4 * hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            init.uniform_(weight, -stdv, stdv)

    def forward(self, input: Tensor, hx: Optional[tuple[Tensor, Tensor]] = None) -> tuple[Tensor, Tensor]:
        """Same as ``torch.nn.LSTMCell.forward``: returns ``(h', c')``."""
        return LF.lstm_cell(
            input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh,
            input_size=self.input_size, hidden_size=self.hidden_size, backend=self.backend,
        )

    def __prepare_scriptable__(self) -> nn.LSTMCell:
        # As LSTM.__prepare_scriptable__: nn.LSTMCell holding our Parameter objects.
        return self.to_torch(share=True)

    def to_torch(self, *, share: bool = False) -> nn.LSTMCell:
        """An ``nn.LSTMCell`` with this configuration, device, dtype, weights and training mode."""
        w = self.weight_ih
        new = nn.LSTMCell(self.input_size, self.hidden_size, self.bias, device=w.device, dtype=w.dtype)
        if share:
            return _share_parameters(self, new)
        new.load_state_dict(self.state_dict())
        new.train(self.training)
        return new

    @classmethod
    def from_torch(cls, module: nn.LSTMCell, *, backend: str = "auto") -> "LSTMCell":
        """A copy of an ``nn.LSTMCell`` (same configuration, device, dtype and weights)."""
        if not isinstance(module, nn.LSTMCell):
            raise TypeError(f"from_torch expects a torch.nn.LSTMCell, got {type(module).__name__}")
        w = module.weight_ih
        new = cls(module.input_size, module.hidden_size, module.bias, device=w.device, dtype=w.dtype,
                  backend=backend)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.bias is not True:
            s += f", bias={self.bias}"
        if self.backend != "auto":
            s += f", backend={self.backend!r}"
        return s


def explain(module: nn.Module, input, hx=None) -> "dispatch.Choice":
    """Which implementation ``module`` runs for ``input`` and why (measured, cached, static
    or forced). Runs the forward once, as the caller's grad mode has it."""
    if not isinstance(module, (LSTM, LSTMCell)):
        raise TypeError(f"explain expects an lstm_kernels.LSTM or LSTMCell, got {type(module).__name__}")
    if module.backend != "auto":
        return dispatch.Choice(module.backend, "forced (backend argument)")
    module(input, hx)
    choice = dispatch.last_choice()
    if choice is None:
        raise RuntimeError("explain: the forward made no backend choice")
    return choice
