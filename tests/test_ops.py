"""The custom-op scan pairs: torch.library.opcheck, and autograd beyond first order.

``torch.ops.lstm_kernels.<name>_scan`` / ``_scan_backward`` must satisfy opcheck (schema,
fake tensors, autograd registration, AOT dispatch), since torch.compile and torch.export
see the LSTM only through them. Backward in eval mode must work (cuDNN refuses it);
double backward works on the reference path and fails with a clear message on the
custom-op paths.

Dimensions: T seq len, B batch, H hidden, P = proj_size or H.
"""
from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

import lstm_kernels
import lstm_kernels.scripted  # noqa: F401  (script before conftest poisons torch.empty)
from conftest import tol
from lstm_kernels.backends import available_backends
from lstm_kernels.ops import registered_scans

T, B, H, P = 3, 3, 4, 3
BATCH_SIZES = [3, 2, 1]  # the packed case: lengths 3, 2, 1


def triton_ready() -> bool:
    """True when the triton backend can run here (interpreter) and its first tier exists."""
    return (
        "triton" in available_backends()
        and importlib.util.find_spec("lstm_kernels._triton.pointwise") is not None
    )


def scan_names() -> list[str]:
    """Names of every registered scan op pair (torchscript, plus the triton tiers present)."""
    if triton_ready():
        from lstm_kernels._triton.backend import tier_scans

        tier_scans()  # importing the tier modules registers their ops
    return sorted(registered_scans())


def scan_ids():
    if triton_ready():
        return scan_names()
    return sorted(n for n in registered_scans() if n.startswith("torchscript"))


def _directions(name: str):
    """None for a per-direction scan, 2 for a direction-stacked one (ops.register_scan)."""
    return registered_scans()[name].directions


def forward_args(proj: bool, packed: bool, reverse: bool, requires_grad: bool = True, directions=None):
    """Random inputs for ``<name>_scan`` (save=True), never zeros; with ``directions`` every
    tensor but the batch sizes gets that leading dimension (the stacked contract)."""
    p = P if proj else H
    lead = () if directions is None else (directions,)
    mk = lambda *s: torch.randn(*lead, *s).requires_grad_(requires_grad)  # noqa: E731
    gx, h0, c0 = mk(T, B, 4 * H), mk(B, p), mk(B, H)
    w_hh = mk(4 * H, p)
    w_hr = mk(p, H) if proj else None
    bs = torch.tensor(BATCH_SIZES, dtype=torch.int64) if packed else None
    return (gx, h0, c0, w_hh, w_hr, bs, reverse, True)


def backward_args(name: str, proj: bool, packed: bool, reverse: bool):
    """Inputs for ``<name>_scan_backward``: saved tensors from a real forward, random grads."""
    gx, h0, c0, w_hh, w_hr, bs, rev, save = forward_args(proj, packed, reverse, requires_grad=False,
                                                         directions=_directions(name))
    out, h_n, c_n, gates, cs, hs = registered_scans()[name].forward_op(gx, h0, c0, w_hh, w_hr, bs, rev, save)
    return (torch.randn_like(out), torch.randn_like(h_n), torch.randn_like(c_n),
            h0, c0, w_hh, w_hr, bs, rev, out, gates, cs, hs)


def _variant_id(proj, packed, reverse):
    return f"{'proj' if proj else 'noproj'}-{'packed' if packed else 'padded'}-{'rev' if reverse else 'fwd'}"


ALL_VARIANTS = [(proj, packed, rev) for proj in (False, True) for packed in (False, True)
                for rev in (False, True)]
# The interpreter is slow: triton ops get the two variants that together touch every feature.
SMALL_VARIANTS = [(False, False, False), (True, True, True)]


def op_cases():
    """(name, proj, packed, reverse) params: every variant for torchscript, two per triton tier."""
    cases = []
    for name in scan_ids():
        for v in (ALL_VARIANTS if name == "torchscript" else SMALL_VARIANTS):
            cases.append(pytest.param(name, *v, id=f"{name}-{_variant_id(*v)}"))
    return cases


@pytest.mark.parametrize("name, proj, packed, reverse", op_cases())
def test_opcheck_forward(name, proj, packed, reverse):
    op = getattr(torch.ops.lstm_kernels, f"{name}_scan").default
    torch.library.opcheck(op, forward_args(proj, packed, reverse, directions=_directions(name)))


@pytest.mark.parametrize("name, proj, packed, reverse", op_cases())
def test_opcheck_backward(name, proj, packed, reverse):
    op = getattr(torch.ops.lstm_kernels, f"{name}_scan_backward").default
    torch.library.opcheck(op, backward_args(name, proj, packed, reverse))


@pytest.mark.parametrize("name", scan_ids())
@pytest.mark.parametrize("proj", [False, True], ids=["noproj", "proj"])
def test_forward_zeroes_inactive_saved_rows(name, proj):
    """Saved gates/cs/hs are zero in rows inactive at a step (packed input), per the contract.

    Garbage there would reach d_w_hr (d_hs^T @ hs multiplies it by zero gradients: NaN*0).
    """
    args = forward_args(proj, True, False, requires_grad=False, directions=_directions(name))
    saved = registered_scans()[name].forward_op(*args)[3:]
    inactive = torch.arange(B).unsqueeze(0) >= torch.tensor(BATCH_SIZES).unsqueeze(1)  # [T, B]
    for t in saved:
        if t.numel():
            rows = t[..., inactive, :]  # leading [D] of a stacked scan kept
            assert torch.equal(rows, torch.zeros_like(rows))


@pytest.mark.parametrize("name", scan_ids())
@pytest.mark.parametrize("proj", [False, True], ids=["noproj", "proj"])
def test_backward_does_not_read_inactive_gates_or_cs(name, proj):
    """Backward reads only active rows of gates and cs (hs is covered by the zero contract)."""
    args = list(backward_args(name, proj, True, False))
    clean = registered_scans()[name].backward_op(*args)
    inactive = torch.arange(B).unsqueeze(0) >= torch.tensor(BATCH_SIZES).unsqueeze(1)  # [T, B]
    for k in (10, 11):  # gates, cs (a stacked scan's leading [D] broadcasts)
        if args[k].numel():
            args[k] = args[k].masked_fill(inactive.unsqueeze(-1), float("nan"))
    poisoned = registered_scans()[name].backward_op(*args)
    for a, b, what in zip(clean, poisoned, ("d_gx", "d_h0", "d_c0", "d_w_hh", "d_w_hr")):
        torch.testing.assert_close(b, a, msg=lambda m: f"{what}: {m}")


def _model(backend, dtype=torch.float64, **kw):
    torch_lstm = nn.LSTM(3, 5, dtype=dtype, **kw)
    ours = lstm_kernels.LSTM.from_torch(torch_lstm, backend=backend)
    return torch_lstm, ours


def _custom_op_backends():
    return ["torchscript"] + (["triton"] if "triton" in available_backends() else [])


@pytest.mark.parametrize("backend", _custom_op_backends())
def test_double_backward_raises_clear_error(backend):
    if backend == "triton" and not triton_ready():
        pytest.skip("the triton backend is not available here")
    _, ours = _model(backend, torch.float32, num_layers=2, bidirectional=True)
    x = torch.randn(4, 2, 3, requires_grad=True)
    out, _ = ours(x)
    (g,) = torch.autograd.grad((out * torch.randn_like(out)).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match=r"double backward.*backend='reference'"):
        g.pow(2).sum().backward()


@pytest.mark.parametrize("backend", ["torchscript"])
def test_create_graph_first_order_grads_unchanged(backend):
    """create_graph=True alone (no second backward) must still give the right gradients."""
    torch_lstm, ours = _model(backend, num_layers=2, proj_size=2)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    g_out = torch.randn(4, 2, 2, dtype=torch.float64)
    got = torch.autograd.grad((ours(x)[0] * g_out).sum(), [x, *ours.parameters()], create_graph=True)
    want = torch.autograd.grad((torch_lstm(x)[0] * g_out).sum(), [x, *torch_lstm.parameters()])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol(torch.float64, "grad"))


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("proj_size", [0, 2], ids=["noproj", "proj"])
def test_double_backward_reference_matches_nn_lstm(bidirectional, proj_size):
    """A gradient penalty (grad of grad) through the reference path equals nn.LSTM's."""
    torch_lstm, ours = _model("reference", num_layers=2, bidirectional=bidirectional, proj_size=proj_size)
    x0 = torch.randn(4, 2, 3, dtype=torch.float64)
    results = []
    for module in (ours, torch_lstm):
        x = x0.clone().requires_grad_()
        out, (h_n, c_n) = module(x)
        g_out = torch.ones_like(out).cumsum(0) / 10  # fixed, non-trivial upstream grad
        (gx,) = torch.autograd.grad((out * g_out).sum() + c_n.sum(), x, create_graph=True)
        penalty = gx.pow(2).sum()
        results.append(torch.autograd.grad(penalty, [x, *module.parameters()]))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, **tol(torch.float64, "grad"))


@pytest.mark.parametrize("backend", ["reference", "torchscript"])
def test_backward_in_eval_mode_matches_nn_lstm(backend):
    """cuDNN refuses RNN backward in eval mode; this package differentiates in eval too."""
    torch_lstm, ours = _model(backend, num_layers=2, dropout=0.5, bidirectional=True)
    torch_lstm.eval()
    ours.eval()
    x0 = torch.randn(5, 2, 3, dtype=torch.float64)
    g_out = torch.randn(5, 2, 10, dtype=torch.float64)
    grads = []
    for module in (ours, torch_lstm):
        x = x0.clone().requires_grad_()
        out, _ = module(x)
        grads.append(torch.autograd.grad((out * g_out).sum(), [x, *module.parameters()]))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, **tol(torch.float64, "grad"))
