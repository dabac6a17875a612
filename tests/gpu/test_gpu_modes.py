"""The LSTM inside the rest of PyTorch on a GPU: ``torch.compile(fullgraph=True)``, autocast,
and backward in eval mode, for every implementation."""
import pytest
import torch
from torch import nn

import lstm_kernels
from gpu_cases import (DEVICE, IMPL_IDS, IMPLS, REQUIRES_GPU, SMALL, assert_rule, case_setup, impl_context,
                       ours_like, rel_err, run_case, slack, tf32)

pytestmark = REQUIRES_GPU


@pytest.mark.parametrize("impl", IMPLS, ids=IMPL_IDS)
def test_backward_in_eval_mode(impl):
    """Without dropout the eval-mode math is the training math, so the rule applies with
    cuDNN's training-mode errors (cuDNN itself refuses backward in eval mode)."""
    name, backend, tier = impl
    setup = case_setup(SMALL, "float32")
    with tf32(False):
        got = run_case(ours_like(setup.cudnn, backend).eval(), setup.inputs, tier)
    assert_rule(got, setup.oracle, setup.cudnn_err, slack("float32"), f"{name} eval backward")


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
@pytest.mark.parametrize("impl", IMPLS, ids=IMPL_IDS)
def test_autocast_follows_nn_lstm(impl, dtype_name):
    """float32 modules under ``torch.autocast("cuda", dtype)``: our outputs come out in the
    autocast dtype, and our errors against the float64 oracle pass the rule with nn.LSTM's
    own autocast errors and that dtype's slack."""
    name, backend, tier = impl
    setup = case_setup(SMALL, "float32+tf32")
    dtype = getattr(torch, dtype_name)

    def ctx():
        return torch.autocast(DEVICE, dtype=dtype)

    with tf32(True):
        theirs = run_case(setup.cudnn, setup.inputs, forward_ctx=ctx)
        ours = run_case(ours_like(setup.cudnn, backend), setup.inputs, tier, forward_ctx=ctx)
    # Not compared with nn.LSTM's: cuDNN returns float16 under a bfloat16 autocast (torch 2.11, H200).
    dtypes = {k: ours[k].dtype for k in ("out", "h_n", "c_n")}
    assert set(dtypes.values()) == {dtype}, dtypes
    their_err = {k: rel_err(theirs[k], ref) for k, ref in setup.oracle.items()}
    assert_rule(ours, setup.oracle, their_err, slack(dtype_name), f"{name} autocast {dtype_name}")


class _Tagger(nn.Module):
    """Linear -> LSTM -> Linear: the compiled model."""

    def __init__(self, lstm: lstm_kernels.LSTM):
        super().__init__()
        self.inp = nn.Linear(lstm.input_size, lstm.input_size)
        self.rnn = lstm
        self.out = nn.Linear((lstm.proj_size or lstm.hidden_size) * (2 if lstm.bidirectional else 1), 3)

    def forward(self, x):
        y, (h, c) = self.rnn(self.inp(x))
        return self.out(y), h, c


class _CountingBackend:
    """Counts the graphs Dynamo hands over, then compiles each with inductor: one graph
    under fullgraph=True means no graph break."""

    def __init__(self):
        import torch._dynamo

        self.inner = torch._dynamo.lookup_backend("inductor")
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return self.inner(gm, example_inputs)


@pytest.mark.parametrize("precision", ["float32+tf32", "bfloat16"])
@pytest.mark.parametrize("impl", IMPLS, ids=IMPL_IDS)
def test_compile_fullgraph_matches_eager(impl, precision):
    """One graph, and outputs and gradients within the precision's slack (relative to the
    largest magnitude) of eager."""
    import torch._dynamo

    name, backend, tier = impl
    dtype = torch.float32 if precision.startswith("float32") else torch.bfloat16
    torch._dynamo.reset()  # each test compiles afresh, never against another's cache limit
    c = SMALL
    lstm = lstm_kernels.LSTM(c.I, c.H, c.layers, bidirectional=c.bi, proj_size=c.proj, backend=backend)
    model = _Tagger(lstm).to(device=DEVICE, dtype=dtype)
    x = torch.randn(c.T, c.B, c.I, device=DEVICE, dtype=dtype)
    counter = _CountingBackend()
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    params = list(model.parameters())

    def run(fn):
        x_req = x.detach().clone().requires_grad_()
        with impl_context(tier):
            outs = fn(x_req)
        gen = torch.Generator(device=DEVICE).manual_seed(1)
        upstream = [torch.randn(o.shape, device=DEVICE, dtype=o.dtype, generator=gen) for o in outs]
        return list(outs) + list(torch.autograd.grad(outs, [x_req] + params, upstream))

    with tf32(True):
        eager = run(model)
        got = run(compiled)
    assert counter.graphs == 1, f"{name}: {counter.graphs} graphs instead of one"
    names = ["out", "h_n", "c_n", "grad_input"] + [f"grad_{n}" for n, _ in model.named_parameters()]
    errors = {n: rel_err(a, b.double()) for n, a, b in zip(names, got, eager)}
    bad = {n: e for n, e in errors.items() if not e <= slack(precision)}
    assert not bad, f"{name}: compiled differs from eager beyond {slack(precision):g}: {bad}"
