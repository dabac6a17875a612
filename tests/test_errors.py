"""Every way an LSTM call or construction can be wrong, against nn.LSTM's behaviour.

Where nn.LSTM raises a clear error, ours raises the same exception type (and the cases
from PyTorch's own module test-suite also match its message). Where nn.LSTM is poor
(an IndexError for a bare-tensor hx, an AttributeError for a list input, a matmul
dtype error for a PackedSequence), ours raises a TypeError/ValueError/RuntimeError that
names the problem. A failed call must change nothing: parameters and buffers keep their
values and the module gives the same results afterwards.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_kernels
from conftest import tol
from helpers import Config, check_lstm_against_torch

# nn.LSTM notes on CPU that oneDNN lacks projections; it is the oracle here, so the note is noise.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")

BACKENDS = ["reference", "torchscript", "native", "auto"]

I, H, P, T, B = 5, 7, 3, 4, 3


def _state(L=1, D=1, batch=B, hid=H, *, dtype=torch.float32, **kw):
    return torch.randn(L * D, batch, hid, dtype=dtype, **kw)


# ---------------------------------------------------------------- construction
# (id, args, kwargs, exception type, same type raised by nn.LSTM in this case)
CTOR_ERRORS = [
    ("input_size-float", (5.0, H), {}, TypeError, True),
    ("input_size-None", (None, H), {}, TypeError, True),
    ("input_size-0", (0, H), {}, ValueError, True),
    ("input_size-negative", (-1, H), {}, ValueError, True),
    ("hidden_size-float", (I, 7.0), {}, TypeError, True),
    ("hidden_size-0", (I, 0), {}, ValueError, True),
    ("num_layers-0", (I, H, 0), {}, ValueError, True),
    ("num_layers-float", (I, H, 2.0), {}, TypeError, True),
    # nn.LSTM takes True as one layer; a bool here is a mistake, so we refuse it.
    ("num_layers-bool", (I, H, True), {}, TypeError, False),
    ("proj_size-equal-hidden", (I, H), {"proj_size": H}, ValueError, True),
    ("proj_size-above-hidden", (I, H), {"proj_size": H + 1}, ValueError, True),
    ("proj_size-negative", (I, H), {"proj_size": -1}, ValueError, True),
    # nn.LSTM fails inside torch.empty with an unpacking message.
    ("proj_size-float", (I, H), {"proj_size": 2.0}, TypeError, True),
    ("dropout-negative", (I, H, 2), {"dropout": -0.1}, ValueError, True),
    ("dropout-above-one", (I, H, 2), {"dropout": 1.5}, ValueError, True),
    ("dropout-nan", (I, H, 2), {"dropout": float("nan")}, ValueError, True),
    ("dropout-bool", (I, H, 2), {"dropout": True}, ValueError, True),
    ("dropout-str", (I, H, 2), {"dropout": "0.1"}, ValueError, True),
    ("bias-int", (I, H), {"bias": 1}, TypeError, True),
    ("batch_first-int", (I, H), {"batch_first": 1}, TypeError, True),
    # nn.LSTM does not check bidirectional at all; 2 or "yes" would silently mean True.
    ("bidirectional-int", (I, H), {"bidirectional": 2}, TypeError, False),
    ("bidirectional-str", (I, H), {"bidirectional": "yes"}, TypeError, False),
]


@pytest.mark.parametrize(
    "args, kwargs, exc, torch_same", [pytest.param(*c[1:], id=c[0]) for c in CTOR_ERRORS]
)
def test_constructor_errors(args, kwargs, exc, torch_same):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exc):
            lstm_kernels.LSTM(*args, **kwargs)
        if torch_same:
            _same_type_if_torch_rejects(exc, lambda: nn.LSTM(*args, **kwargs))


def _same_type_if_torch_rejects(exc, make) -> None:
    """nn.LSTM rejects these arguments with ``exc`` in current torch. The package also
    supports older releases, some of which type-check fewer arguments; where those accept
    the call there is nothing to compare, but a rejection must use the same type."""
    try:
        make()
    except Exception as e:  # noqa: BLE001  (the type is the thing under test)
        assert isinstance(e, exc), f"nn.LSTM raised {type(e).__name__}, we raise {exc.__name__}"


@pytest.mark.parametrize("name", ["cuda", "Triton", "", None, 3])
def test_unknown_backend_lists_valid_names(name):
    for make in (lambda: lstm_kernels.LSTM(I, H, backend=name),
                 lambda: lstm_kernels.LSTMCell(I, H, backend=name)):
        with pytest.raises(ValueError) as info:
            make()
        for valid in ("auto", "reference", "torchscript", "triton"):
            assert repr(valid) in str(info.value)


def test_dropout_with_one_layer_warns_like_nn_lstm():
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        lstm_kernels.LSTM(I, H, 1, dropout=0.5)
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        nn.LSTM(I, H, 1, dropout=0.5)


def test_from_torch_rejects_other_modules():
    with pytest.raises(TypeError, match="nn.LSTM"):
        lstm_kernels.LSTM.from_torch(nn.GRU(I, H))
    with pytest.raises(TypeError, match="nn.LSTM"):
        lstm_kernels.LSTM.from_torch(nn.LSTMCell(I, H))
    with pytest.raises(TypeError, match="nn.LSTMCell"):
        lstm_kernels.LSTMCell.from_torch(nn.LSTM(I, H))


# ---------------------------------------------------------------- forward
# (id, constructor kwargs, call(module) -> forward, exception type, message regex or None,
#  nn.LSTM raises the same type)
def _x(*shape, dtype=torch.float32, **kw):
    return torch.randn(*shape, dtype=dtype, **kw)


FORWARD_ERRORS = [
    # input
    ("input-1d", {}, lambda m: m(_x(I)), ValueError, "Expected input to be 2D or 3D, got 1D", True),
    ("input-4d", {}, lambda m: m(_x(1, T, B, I)), ValueError, "Expected input to be 2D or 3D, got 4D", True),
    ("input-features", {}, lambda m: m(_x(T, B, I + 1)), RuntimeError, "input_size", True),
    ("input-features-unbatched", {}, lambda m: m(_x(T, I - 1)), RuntimeError, "input_size", True),
    ("input-float64", {}, lambda m: m(_x(T, B, I, dtype=torch.float64)), ValueError,
     r"input dtype \(torch.float64\) does not match weight dtype \(torch.float32\)", True),
    ("input-float16", {}, lambda m: m(_x(T, B, I, dtype=torch.float16)), ValueError,
     "does not match weight dtype", True),
    ("input-int64", {}, lambda m: m(torch.ones(T, B, I, dtype=torch.long)), ValueError, "torch.int64", True),
    ("input-bool", {}, lambda m: m(torch.ones(T, B, I, dtype=torch.bool)), ValueError, "torch.bool", True),
    ("input-seq-len-0", {}, lambda m: m(_x(0, B, I)), RuntimeError, "sequence length", True),
    ("input-seq-len-0-unbatched", {}, lambda m: m(_x(0, I)), RuntimeError, "sequence length", True),
    ("input-seq-len-0-batch-first", {"batch_first": True}, lambda m: m(_x(B, 0, I)), RuntimeError,
     "sequence length", True),
    # nn.LSTM: AttributeError 'list' object has no attribute 'dim'
    ("input-list", {}, lambda m: m([[1.0] * I] * T), TypeError, "Tensor or a PackedSequence", False),
    ("input-none", {}, lambda m: m(None), TypeError, "Tensor or a PackedSequence", False),
    # nn.LSTM: "reshape is not implemented for sparse tensors"
    ("input-sparse", {}, lambda m: m(_x(T, B, I).to_sparse()), RuntimeError, "dense", True),
    ("input-meta-device", {}, lambda m: m(_x(T, B, I, device="meta")), RuntimeError, "meta", True),
    # hx structure; nn.LSTM: IndexError / AttributeError / KeyError
    ("hx-bare-tensor", {}, lambda m: m(_x(T, B, I), _state()), TypeError, r"\(h0, c0\)", False),
    ("hx-one-element", {}, lambda m: m(_x(T, B, I), (_state(),)), RuntimeError, "two tensors", False),
    ("hx-three-elements", {}, lambda m: m(_x(T, B, I), (_state(), _state(), _state())), RuntimeError,
     "two tensors", True),
    ("hx-none-elements", {}, lambda m: m(_x(T, B, I), (None, None)),
     TypeError, r"hx\[0\] must be a Tensor", False),
    ("hx-str-element", {}, lambda m: m(_x(T, B, I), (_state(), "c0")), TypeError, r"hx\[1\] must be a Tensor",
     False),
    ("hx-dict", {}, lambda m: m(_x(T, B, I), {"h": _state()}), TypeError, "tuple", False),
    # hx shapes
    ("h0-batch", {}, lambda m: m(_x(T, B, I), (_state(batch=B - 1), _state())),
     RuntimeError, r"hidden\[0\]", True),
    ("c0-batch", {}, lambda m: m(_x(T, B, I), (_state(), _state(batch=B + 1))),
     RuntimeError, r"hidden\[1\]", True),
    ("h0-layers", {}, lambda m: m(_x(T, B, I), (_state(L=2), _state())), RuntimeError, r"hidden\[0\]", True),
    ("h0-hidden", {}, lambda m: m(_x(T, B, I), (_state(hid=H - 1), _state())),
     RuntimeError, r"hidden\[0\]", True),
    ("h0-not-proj", {"proj_size": P}, lambda m: m(_x(T, B, I), (_state(), _state())), RuntimeError,
     r"hidden\[0\] size \(1, 3, 3\)", True),
    ("c0-proj", {"proj_size": P}, lambda m: m(_x(T, B, I), (_state(hid=P), _state(hid=P))), RuntimeError,
     r"hidden\[1\] size \(1, 3, 7\)", True),
    ("h0-bidirectional-layers", {"bidirectional": True}, lambda m: m(_x(T, B, I), (_state(), _state())),
     RuntimeError, r"hidden\[0\] size \(2, 3, 7\)", True),
    ("hx-batch-first-batch", {"batch_first": True}, lambda m: m(_x(T, B, I), (_state(), _state())),
     RuntimeError, r"hidden\[0\] size \(1, 4, 7\)", True),
    ("hx-2d-for-batched", {}, lambda m: m(_x(T, B, I), (_x(B, H), _x(B, H))), RuntimeError, "3-D", True),
    ("hx-3d-for-unbatched", {}, lambda m: m(_x(T, I), (_state(batch=1), _state(batch=1))),
     RuntimeError, "2-D",
     True),
    ("hx-mixed-ndim", {}, lambda m: m(_x(T, B, I), (_state(), _x(B, H))), RuntimeError, "3-D", True),
    # hx dtype / device / layout; nn.LSTM: "get_mkldnn_dtype: unsupported data type"
    ("h0-float64", {}, lambda m: m(_x(T, B, I), (_state(dtype=torch.float64), _state())), RuntimeError,
     r"hx\[0\] dtype", True),
    ("c0-float64", {}, lambda m: m(_x(T, B, I), (_state(), _state(dtype=torch.float64))), RuntimeError,
     r"hx\[1\] dtype", True),
    ("h0-int64", {}, lambda m: m(_x(T, B, I), (torch.ones(1, B, H, dtype=torch.long), _state())),
     RuntimeError, r"hx\[0\] dtype", True),
    ("h0-meta-device", {}, lambda m: m(_x(T, B, I), (_state(device="meta"), _state())), RuntimeError,
     "same device", True),
    # nn.LSTM accepts a sparse h0 silently; a sparse state is a mistake.
    ("h0-sparse", {}, lambda m: m(_x(T, B, I), (_state().to_sparse(), _state())),
     RuntimeError, "dense", False),
    # PackedSequence input; nn.LSTM: "mat1 and mat2 shapes cannot be multiplied" and the like
    ("packed-features", {}, lambda m: m(pack_padded_sequence(_x(T, B, I + 1), [4, 3, 2])), RuntimeError,
     "input_size", True),
    ("packed-float64", {}, lambda m: m(pack_padded_sequence(_x(T, B, I, dtype=torch.float64), [4, 3, 2])),
     ValueError, "does not match weight dtype", False),
    ("packed-h0-batch", {}, lambda m: m(pack_padded_sequence(_x(T, B, I), [4, 3, 2]), (_state(batch=2),) * 2),
     RuntimeError, r"hidden\[0\] size \(1, 3, 7\)", True),
    ("packed-h0-float64", {},
     lambda m: m(pack_padded_sequence(_x(T, B, I), [4, 3, 2]), (_state(dtype=torch.float64),) * 2),
     RuntimeError, r"hx\[0\] dtype", True),
]


def _snapshot(m: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def _assert_unchanged(m: nn.Module, before: dict) -> None:
    after = m.state_dict()
    assert list(after) == list(before)
    for k, v in before.items():
        assert torch.equal(after[k], v), f"{k} changed by a failed call"


# Validation runs before a backend is chosen, so the backends alternate over the cases
# (each still checks that its module works after the failed call).
@pytest.mark.parametrize(
    "kwargs, call, exc, match, torch_same, backend",
    [pytest.param(*c[1:], BACKENDS[k % 2], id=f"{c[0]}-{BACKENDS[k % 2]}")
     for k, c in enumerate(FORWARD_ERRORS)],
)
def test_forward_errors(kwargs, call, exc, match, torch_same, backend):
    torch_lstm = nn.LSTM(I, H, **kwargs)
    ours = lstm_kernels.LSTM.from_torch(torch_lstm, backend=backend)
    x = _x(B, T, I) if kwargs.get("batch_first") else _x(T, B, I)
    out_before, (h_before, c_before) = ours(x)
    before = _snapshot(ours)
    with pytest.raises(exc, match=match):
        call(ours)
    _assert_unchanged(ours, before)
    # Still works, bitwise as before, and still differentiable.
    out_after, (h_after, c_after) = ours(x)
    assert torch.equal(out_after, out_before)
    assert torch.equal(h_after, h_before) and torch.equal(c_after, c_before)
    out_after.sum().backward()
    assert all(p.grad is not None for p in ours.parameters())
    if torch_same:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(exc):
                call(torch_lstm)


def test_error_messages_name_the_problem():
    """The cases where nn.LSTM is poor: our message says what to pass instead."""
    m = lstm_kernels.LSTM(I, H)
    with pytest.raises(TypeError) as info:
        m(_x(T, B, I), _state())
    assert "(h0, c0)" in str(info.value) and "single Tensor" in str(info.value)
    with pytest.raises(ValueError) as info:
        m(torch.ones(T, B, I, dtype=torch.long))
    assert "input.to(torch.float32)" in str(info.value)


def test_failed_call_in_training_leaves_grads_alone():
    """A failed call after a backward does not touch the accumulated .grad either."""
    m = lstm_kernels.LSTM(I, H, 2, dropout=0.3, backend="reference")
    m(_x(T, B, I))[0].sum().backward()
    grads = {n: p.grad.clone() for n, p in m.named_parameters()}
    with pytest.raises(RuntimeError):
        m(_x(T, B, I), (_state(L=2, batch=B + 1), _state(L=2)))
    for n, p in m.named_parameters():
        assert torch.equal(p.grad, grads[n]), n


# ------------------------------------------------- PyTorch's own nn.LSTM test cases
# The error cases nn.LSTM is held to in torch.testing._internal.common_modules
# (module_error_inputs_torch_nn_RNN_GRU), with their exception types and messages.
TORCH_SUITE_CTOR_ERRORS = [
    ("hidden-size-zero", (10, 0, 1), {}, ValueError, "hidden_size must be greater than zero"),
    ("num-layers-zero", (10, 10, 0), {}, ValueError, "num_layers must be greater than zero"),
    ("bias-int-0", (3, 5), {"bias": 0}, TypeError, "bias should be of type bool, got: int"),
    ("bias-int-1", (3, 5), {"bias": 1}, TypeError, "bias should be of type bool, got: int"),
    ("bias-str", (3, 5), {"bias": "True"}, TypeError, "bias should be of type bool, got: str"),
]


@pytest.mark.parametrize(
    "args, kwargs, exc, match", [pytest.param(*c[1:], id=c[0]) for c in TORCH_SUITE_CTOR_ERRORS]
)
def test_torch_suite_constructor_errors(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        lstm_kernels.LSTM(*args, **kwargs)


@pytest.mark.parametrize("dtype, wrong", [(torch.float32, torch.float64), (torch.float64, torch.float32)],
                         ids=["float32-model", "float64-model"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_suite_dtype_mismatch(dtype, wrong, backend):
    m = lstm_kernels.LSTM(3, 5, dtype=dtype, backend=backend)
    with pytest.raises(
     ValueError, match=r"RNN input dtype .* does not match weight dtype .* "
        r"Convert input: input\.to\(.*\), or convert model: model\.to\(.*\)",
    ):
        m(torch.randn(2, 4, 3, dtype=wrong))


# ------------------------------------------------- edge cases that are not errors
@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_batch_is_not_an_error(backend):
    """B=0 works in nn.LSTM (empty outputs, empty grads); so it does here."""
    cfg = Config(num_layers=2, bidirectional=True, proj_size=3, B=0)
    check_lstm_against_torch(cfg, backend, torch.float64)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hx_as_list_is_accepted(backend):
    """nn.LSTM accepts hx as a list [h0, c0]; code relies on it."""
    torch_lstm = nn.LSTM(I, H, dtype=torch.float64)
    ours = lstm_kernels.LSTM.from_torch(torch_lstm, backend=backend)
    x = _x(T, B, I, dtype=torch.float64)
    hx = [_state(dtype=torch.float64), _state(dtype=torch.float64)]
    want = torch_lstm(x, hx)
    got = ours(x, hx)
    for u, v in ((got[0], want[0]), (got[1][0], want[1][0]), (got[1][1], want[1][1])):
        torch.testing.assert_close(u, v, **tol(torch.float64))
