"""``LSTMCell`` on a GPU against nn.LSTMCell (cuDNN's cell kernels) with copied weights, per
precision: h, c and the gradients of input, h0, c0 and every parameter, by gpu_cases' rule."""
import copy

import pytest
import torch
from torch import nn

import lstm_kernels
from gpu_cases import DEVICE, DTYPES, PRECISIONS, REQUIRES_GPU, assert_rule, rel_err, slack, tf32

pytestmark = REQUIRES_GPU


def _run(cell, x, h0, c0, upstream):
    x, h0, c0 = (t.detach().clone().requires_grad_() for t in (x, h0, c0))
    h, c = cell(x, (h0, c0))
    params = list(cell.named_parameters())
    grads = torch.autograd.grad([h, c], [x, h0, c0] + [p for _, p in params], list(upstream))
    out = {"h": h, "c": c, "grad_input": grads[0], "grad_h0": grads[1], "grad_c0": grads[2]}
    out.update({f"grad_{n}": g for (n, _), g in zip(params, grads[3:])})
    return {k: v.detach() for k, v in out.items()}


@pytest.mark.parametrize("B, I, H", [(3, 10, 33), (64, 128, 256)], ids=["B3-I10-H33", "B64-I128-H256"])
@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("backend", ["triton", "native", "auto"])
def test_cell_matches_cudnn(backend, precision, B, I, H):  # noqa: E741
    dtype = DTYPES[precision]
    gen = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=gen).to(device=DEVICE, dtype=dtype)

    torch.manual_seed(0)
    ref = nn.LSTMCell(I, H).to(device=DEVICE, dtype=dtype)
    x, h0, c0 = randn(B, I), randn(B, H), randn(B, H)
    upstream = (randn(B, H), randn(B, H))
    with tf32(precision == "float32+tf32"):
        with torch.backends.cudnn.flags(enabled=False):
            oracle = _run(copy.deepcopy(ref).double(), x.double(), h0.double(), c0.double(),
                          [u.double() for u in upstream])
        theirs = _run(ref, x, h0, c0, upstream)
        ours = _run(lstm_kernels.LSTMCell.from_torch(ref, backend=backend), x, h0, c0, upstream)
    their_err = {k: rel_err(theirs[k], v) for k, v in oracle.items()}
    assert_rule(ours, oracle, their_err, slack(precision), f"LSTMCell {backend} {precision}")
