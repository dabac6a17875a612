"""LSTMCell: parity with nn.LSTMCell (values and every gradient) and its error cases.

Shapes: input [B, I] or [I]; hx = (h [B, H], c [B, H]) or 1-D for unbatched input.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import lstm_kernels
from conftest import tol
from helpers import LOW_PRECISION, assert_close_to_oracle, dtype_id

BACKENDS = ["reference", "torchscript", "native", "auto"]

# (id, B or None for unbatched, I, H, bias, with_hx, strided: sliced/transposed input and states)
CASES = [
    ("B3-I5-H7", 3, 5, 7, True, True, False),
    ("B3-I5-H7-strided", 3, 5, 7, True, True, True),
    ("B3-I5-H7-nohx", 3, 5, 7, True, False, False),
    ("B1-I1-H1-nobias", 1, 1, 1, False, True, False),
    ("B4-I6-H33-nobias-nohx-strided", 4, 6, 33, False, False, True),
    ("unbatched-I5-H7", None, 5, 7, True, True, False),
    ("unbatched-I3-H9-nobias-nohx", None, 3, 9, False, False, False),
]


def _leaves(B, I, H, with_hx, dtype, strided=False):
    shape = (I,) if B is None else (B, I)
    hshape = (H,) if B is None else (B, H)
    if strided:
        x = torch.randn(*shape[:-1], 2 * shape[-1], dtype=dtype)[..., ::2].requires_grad_()
    else:
        x = torch.randn(shape, dtype=dtype, requires_grad=True)
    if not with_hx:
        return x, None, None
    if strided and B is not None:
        h = torch.randn(H, B, dtype=dtype).t().requires_grad_()
    else:
        h = torch.randn(hshape, dtype=dtype, requires_grad=True)
    c = torch.randn(hshape, dtype=dtype, requires_grad=True)
    return x, h, c


def _run_and_grads(cell, x, h, c, g_h, g_c):
    hx = None if h is None else (h, c)
    h1, c1 = cell(x) if hx is None else cell(x, hx)
    loss = (h1 * g_h.to(h1.dtype)).sum() + (c1 * g_c.to(c1.dtype)).sum()
    leaves = {"input": x, "h": h, "c": c}
    names = [k for k, v in leaves.items() if v is not None]
    params = list(cell.named_parameters())
    grads = torch.autograd.grad(loss, [leaves[k] for k in names] + [p for _, p in params], allow_unused=True)
    out = dict(zip(names, grads))
    out.update({"param:" + n: g for (n, _), g in zip(params, grads[len(names):])})
    return h1, c1, out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_id)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "B, I, H, bias, with_hx, strided",
    [pytest.param(*c[1:], id=c[0]) for c in CASES],
)
def test_cell_parity(B, I, H, bias, with_hx, strided, backend, dtype):
    ref = nn.LSTMCell(I, H, bias=bias, dtype=dtype)
    ours = lstm_kernels.LSTMCell.from_torch(ref, backend=backend)
    x, h, c = _leaves(B, I, H, with_hx, dtype, strided)
    shape = (H,) if B is None else (B, H)
    g_h, g_c = torch.randn(shape, dtype=dtype), torch.randn(shape, dtype=dtype)
    h1, c1, grads = _run_and_grads(ours, x, h, c, g_h, g_c)
    rh1, rc1, rgrads = _run_and_grads(ref, x, h, c, g_h, g_c)
    assert h1.shape == rh1.shape and c1.shape == rc1.shape
    torch.testing.assert_close(h1, rh1, **tol(dtype, "out"))
    torch.testing.assert_close(c1, rc1, **tol(dtype, "out"))
    assert set(grads) == set(rgrads)
    for name, g in rgrads.items():
        assert grads[name] is not None, name
        torch.testing.assert_close(grads[name], g, **tol(dtype, "grad"), msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=dtype_id)
def test_cell_low_precision(dtype):
    """Half/bfloat16 storage against a float64 nn.LSTMCell oracle holding the same weights."""
    ours = lstm_kernels.LSTMCell(6, 9, dtype=dtype, backend="torchscript")
    eager = lstm_kernels.LSTMCell(6, 9, dtype=dtype, backend="reference")
    eager.load_state_dict(ours.state_dict())
    ref = nn.LSTMCell(6, 9, dtype=torch.float64)
    ref.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    x, h, c = _leaves(4, 6, 9, True, dtype)
    x64, h64, c64 = (t.detach().double().requires_grad_() for t in (x, h, c))
    g_h, g_c = torch.randn(4, 9, dtype=torch.float64), torch.randn(4, 9, dtype=torch.float64)
    got = _run_and_grads(ours, x, h, c, g_h, g_c)
    base = _run_and_grads(eager, x, h, c, g_h, g_c)
    want = _run_and_grads(ref, x64, h64, c64, g_h, g_c)
    for k, name in enumerate(("h", "c")):
        assert got[k].dtype == dtype
        assert_close_to_oracle(name, got[k], want[k], dtype, "out", base[k])
    for name in want[2]:
        assert_close_to_oracle(f"grad {name}", got[2][name], want[2][name], dtype, "grad", base[2][name])


@pytest.mark.parametrize("backend", BACKENDS)
def test_cell_unrolled_over_time(backend):
    """Five steps fed back through hx: values and gradients through the whole chain."""
    ref = nn.LSTMCell(4, 6, dtype=torch.float64)
    ours = lstm_kernels.LSTMCell.from_torch(ref, backend=backend)
    xs = torch.randn(5, 2, 4, dtype=torch.float64, requires_grad=True)
    results = []
    for cell in (ours, ref):
        hx = None
        hs = []
        for t in range(5):
            hx = cell(xs[t], hx)
            hs.append(hx[0])
        loss = torch.stack(hs).sin().sum() + hx[1].pow(2).sum()
        results.append((torch.stack(hs), hx[1], torch.autograd.grad(loss, [xs, *cell.parameters()])))
    torch.testing.assert_close(results[0][0], results[1][0], **tol(torch.float64, "out"))
    torch.testing.assert_close(results[0][1], results[1][1], **tol(torch.float64, "out"))
    for u, v in zip(results[0][2], results[1][2]):
        torch.testing.assert_close(u, v, **tol(torch.float64, "grad"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_cell_matches_one_step_lstm(backend):
    """The cell is one step of the LSTM with the same weights."""
    lstm = lstm_kernels.LSTM(4, 6, dtype=torch.float64, backend=backend)
    cell = lstm_kernels.LSTMCell(4, 6, dtype=torch.float64, backend=backend)
    cell.load_state_dict({k[: -len("_l0")]: v for k, v in lstm.state_dict().items()})
    x = torch.randn(3, 4, dtype=torch.float64)
    h0, c0 = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    _, (h_n, c_n) = lstm(x.unsqueeze(0), (h0.unsqueeze(0), c0.unsqueeze(0)))
    h1, c1 = cell(x, (h0, c0))
    torch.testing.assert_close(h1, h_n[0], **tol(torch.float64))
    torch.testing.assert_close(c1, c_n[0], **tol(torch.float64))


@pytest.mark.parametrize("backend", BACKENDS)
def test_cell_torch_suite_inputs(backend):
    """PyTorch's own LSTMCell module inputs: unbatched input with an unbatched (h, c)."""
    for kwargs in ({}, {"bias": True}):
        ref = nn.LSTMCell(5, 10, **kwargs, dtype=torch.float64)
        ours = lstm_kernels.LSTMCell.from_torch(ref, backend=backend)
        x = torch.randn(5, dtype=torch.float64)
        hx = (torch.randn(10, dtype=torch.float64), torch.randn(10, dtype=torch.float64))
        got, want = ours(x, hx), ref(x, hx)
        batched = ours(x.unsqueeze(0), (hx[0].unsqueeze(0), hx[1].unsqueeze(0)))
        for u, v, w in zip(got, want, batched):
            assert u.shape == (10,)
            torch.testing.assert_close(u, v, **tol(torch.float64))
            torch.testing.assert_close(u, w.squeeze(0), **tol(torch.float64))


# ---------------------------------------------------------------- errors
def _m(*shape, dtype=torch.float32, **kw):
    return torch.randn(*shape, dtype=dtype, **kw)


# (id, call(cell 10 -> 20), exception type, message regex, nn.LSTMCell raises the same type)
CELL_ERRORS = [
    # The error cases nn.LSTMCell is held to in torch.testing._internal.common_modules
    # (module_error_inputs_torch_nn_LSTMCell), with their types and messages.
    ("torch-suite-input-size", lambda m: m(_m(3, 11), (_m(3, 20), _m(3, 20))), RuntimeError,
     "input has inconsistent input_size: got 11 expected 10", True),
    ("torch-suite-hidden-size", lambda m: m(_m(3, 10), (_m(3, 21), _m(3, 21))), RuntimeError,
     "hidden0 has inconsistent hidden_size: got 21, expected 20", True),
    ("torch-suite-batch", lambda m: m(_m(3, 10), (_m(5, 20), _m(5, 20))), RuntimeError,
     "Input batch size 3 doesn't match hidden0 batch size 5", True),
    ("torch-suite-hx-4d", lambda m: m(_m(3, 10), (_m(3, 1, 1, 20), _m(3, 1, 1, 20))), ValueError,
     r"Expected hx\[0\] to be 1D or 2D, got 4D instead", True),
    # More of the same kind.
    ("input-3d", lambda m: m(_m(1, 3, 10)), ValueError, "Expected input to be 1D or 2D, got 3D", True),
    ("input-0d", lambda m: m(torch.tensor(1.0)), ValueError, "Expected input to be 1D or 2D, got 0D", True),
    ("c-batch", lambda m: m(_m(3, 10), (_m(3, 20), _m(2, 20))), RuntimeError, "hidden1 batch size 2", True),
    ("c-hidden-size", lambda m: m(_m(3, 10), (_m(3, 20), _m(3, 19))), RuntimeError,
     "hidden1 has inconsistent hidden_size", True),
    ("hx-3d", lambda m: m(_m(3, 10), (_m(1, 3, 20), _m(1, 3, 20))),
     ValueError, r"hx\[0\] to be 1D or 2D", True),
    ("hx-three-elements", lambda m: m(_m(3, 10), (_m(3, 20),) * 3), RuntimeError, "two tensors", True),
    ("hx-one-element", lambda m: m(_m(3, 10), (_m(3, 20),)), RuntimeError, "two tensors", True),
    # nn.LSTMCell: "argument 'hx' must be tuple of Tensors, not Tensor"
    ("hx-bare-tensor", lambda m: m(_m(3, 10), _m(3, 20)), TypeError, r"\(h0, c0\)", True),
    # nn.LSTMCell reports these as a batch or hidden size mismatch.
    ("hx-1d-for-2d-input", lambda m: m(_m(3, 10), (_m(20), _m(20))), RuntimeError, "number of dimensions",
     True),
    ("hx-2d-for-1d-input", lambda m: m(_m(10), (_m(1, 20), _m(1, 20))), RuntimeError, "number of dimensions",
     True),
    ("hx-mixed-ndim", lambda m: m(_m(3, 10), (_m(3, 20), _m(20))),
     RuntimeError, "number of dimensions", True),
    # nn.LSTMCell: matmul dtype errors (RuntimeError); ours matches nn.LSTM's ValueError.
    ("input-float64", lambda m: m(_m(3, 10, dtype=torch.float64)), ValueError, "does not match weight dtype",
     False),
    ("input-int64", lambda m: m(torch.ones(3, 10, dtype=torch.long)), ValueError, "torch.int64", False),
    ("h-float64", lambda m: m(_m(3, 10), (_m(3, 20, dtype=torch.float64), _m(3, 20))), RuntimeError,
     r"hx\[0\] dtype", True),
    ("h-meta-device", lambda m: m(_m(3, 10), (_m(3, 20, device="meta"), _m(3, 20))), RuntimeError, "device",
     True),
    # nn.LSTMCell: AttributeError / silently densified
    ("input-list", lambda m: m([1.0] * 10), TypeError, "must be a Tensor", False),
    ("hx-none-element", lambda m: m(_m(3, 10), (None, _m(3, 20))),
     TypeError, r"hx\[0\] must be a Tensor", False),
    ("input-sparse", lambda m: m(_m(3, 10).to_sparse()), RuntimeError, "dense", False),
    ("h-sparse", lambda m: m(_m(3, 10), (_m(3, 20).to_sparse(), _m(3, 20))), RuntimeError, "dense", False),
]


@pytest.mark.parametrize(
    "call, exc, match, torch_same, backend",
    [pytest.param(*c[1:], BACKENDS[k % 2], id=f"{c[0]}-{BACKENDS[k % 2]}")
     for k, c in enumerate(CELL_ERRORS)],
)
def test_cell_errors(call, exc, match, torch_same, backend):
    ref = nn.LSTMCell(10, 20)
    ours = lstm_kernels.LSTMCell.from_torch(ref, backend=backend)
    x = _m(3, 10)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    h_before, c_before = ours(x)
    with pytest.raises(exc, match=match):
        call(ours)
    for k, v in ours.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed by a failed call"
    h_after, c_after = ours(x)
    assert torch.equal(h_after, h_before) and torch.equal(c_after, c_before)
    if torch_same:
        with pytest.raises(exc):
            call(ref)


# (id, args, kwargs, exception type, nn.LSTMCell raises the same type)
CELL_CTOR_ERRORS = [
    ("input_size-float", (5.0, 7), {}, TypeError, True),
    ("hidden_size-float", (5, 7.0), {}, TypeError, True),
    # nn.LSTMCell builds empty weights for size 0 and accepts any bias value; we refuse both.
    ("input_size-0", (0, 7), {}, ValueError, False),
    ("hidden_size-0", (5, 0), {}, ValueError, False),
    ("hidden_size-negative", (5, -3), {}, ValueError, False),
    ("bias-int", (5, 7), {"bias": 1}, TypeError, False),
    ("backend-unknown", (5, 7), {"backend": "cuda"}, ValueError, False),
]


@pytest.mark.parametrize(
    "args, kwargs, exc, torch_same", [pytest.param(*c[1:], id=c[0]) for c in CELL_CTOR_ERRORS]
)
def test_cell_constructor_errors(args, kwargs, exc, torch_same):
    with pytest.raises(exc):
        lstm_kernels.LSTMCell(*args, **kwargs)
    if torch_same:
        with pytest.raises(exc):
            nn.LSTMCell(*args, **kwargs)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cell_empty_batch(backend):
    ref = nn.LSTMCell(4, 6, dtype=torch.float64)
    ours = lstm_kernels.LSTMCell.from_torch(ref, backend=backend)
    x = torch.randn(0, 4, dtype=torch.float64, requires_grad=True)
    h, c = ours(x)
    rh, rc = ref(x)
    assert h.shape == rh.shape == (0, 6) and c.shape == rc.shape == (0, 6)
    (h.sum() + c.sum()).backward()
    assert x.grad.shape == (0, 4)
