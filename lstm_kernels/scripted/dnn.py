"""oneDNN matmuls for the CPU scan: the ``lstm_kernels::dnn_linear`` custom op (a
differentiable oneDNN linear) and the layer's input projection through it, the step and
weight-gradient matmul helpers the scripted loops call (with BLAS fallbacks where PyTorch
lacks oneDNN's linear, so the scripted code is the same), and the rules for when a scan's
step matmuls go through oneDNN (``thresholds.DNN_MIN_MACS``, ``thresholds.PACK_MIN_T``)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from . import thresholds

HAS_DNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
HAS_DNN_REORDER = HAS_DNN_LINEAR and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")

if HAS_DNN_LINEAR:

    def linear(x: Tensor, w: Tensor) -> Tensor:
        """x @ w.t() through oneDNN (x [M, K], w [N, K]; strided operands are copied inside)."""
        return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")

    def linear_add(x: Tensor, other: Tensor, w: Tensor) -> Tensor:
        """other + x @ w.t() through oneDNN, the add fused into the matmul."""
        return torch.ops.mkldnn._linear_pointwise(x, other, w, None, "add")

else:

    def linear(x: Tensor, w: Tensor) -> Tensor:
        """x @ w.t() (BLAS fallback)."""
        return torch.mm(x, w.t())

    def linear_add(x: Tensor, other: Tensor, w: Tensor) -> Tensor:
        """other + x @ w.t() (BLAS fallback)."""
        return torch.addmm(other, x, w.t())


def dnn_eligible(x: Tensor) -> bool:
    """float32 on CPU with oneDNN's linear available and ``torch.backends.mkldnn`` enabled."""
    return (
        HAS_DNN_LINEAR
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and torch.backends.mkldnn.enabled
    )


@torch.library.custom_op("lstm_kernels::dnn_linear", mutates_args=())
def dnn_linear(x: Tensor, w: Tensor, b: Optional[Tensor]) -> Tensor:
    """``F.linear(x, w, b)`` through oneDNN where it can run (float32 on CPU), else F.linear.

    ``_linear_pointwise`` has no autograd formula (gradients through it are silently
    None), so it is wrapped as a custom op whose backward is this op again (two matmuls)
    plus a sum; that also makes it differentiable twice and opaque to torch.compile.
    """
    if dnn_eligible(x):
        if b is None and x.dim() == 2 and x.stride(0) == 1 and w.stride(0) == 1:
            # Both operands are transposed views of row-major [M, .] tensors, as in the
            # weight gradient grad^T @ x: blocked, see mm_tn.
            return mm_tn(x.t(), w.t(), True)
        shape = x.shape
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]), w, b, "none", [], "")
        return y.view(*shape[:-1], w.shape[0])
    return torch.nn.functional.linear(x, w, b)


@dnn_linear.register_fake
def _(x, w, b):
    return x.new_empty(*x.shape[:-1], w.shape[0])


def _dnn_linear_setup(ctx, inputs, output):
    x, w, b = inputs
    ctx.has_b = b is not None
    ctx.save_for_backward(x, w)


def _dnn_linear_backward(ctx, grad):
    x, w = ctx.saved_tensors
    grad2 = grad.reshape(-1, grad.shape[-1])  # [M, N]
    d_x = d_w = d_b = None
    if ctx.needs_input_grad[0]:
        d_x = dnn_linear(grad, w.t(), None)  # grad @ w
    if ctx.needs_input_grad[1]:
        d_w = dnn_linear(grad2.t(), x.reshape(-1, x.shape[-1]).t(), None)  # grad^T @ x
    if ctx.has_b and ctx.needs_input_grad[2]:
        d_b = grad2.sum(0)
    return d_x, d_w, d_b


dnn_linear.register_autograd(_dnn_linear_backward, setup_context=_dnn_linear_setup)


def input_projection(x: Tensor, w_ih: Tensor, bias: Optional[Tensor]) -> Tensor:
    """``F.linear(x, w_ih, bias)`` for the TorchScript backend: through oneDNN for large
    float32 CPU inputs (MKL's sgemm runs at about half oneDNN's speed on the reference
    machine), else F.linear itself (no custom-op call overhead for small layers)."""
    if dnn_eligible(x) and x.numel() * w_ih.shape[0] >= thresholds.PROJ_MIN_MACS:
        return dnn_linear(x, w_ih, bias)
    return torch.nn.functional.linear(x, w_ih, bias)


def mm_tn(a: Tensor, b: Tensor, dnn: bool) -> Tensor:
    """a^T @ b (a [M, N], b [M, K]): a weight gradient summed over M = steps x batch.

    oneDNN's linear takes its operands row-major, so both need transposing. Transposing
    all M rows at once copied up to 134 MB per operand (T=512, B=64, H=256: 80 ms per
    copy, freshly allocated memory included); blocks of 512 rows are transposed in cache
    and accumulated with the fused add instead (197 -> 110 ms there, 44 -> 28 ms at T=128).
    """
    if not dnn:
        return torch.mm(a.t(), b)
    M = a.size(0)
    R = 512
    acc = linear(a[0:R].t().contiguous(), b[0:R].t().contiguous())
    for i in range(R, M, R):
        acc = linear_add(a[i:i + R].t().contiguous(), acc, b[i:i + R].t().contiguous())
    return acc


def use_dnn(x: Tensor, B: int, G: int, P: int) -> bool:
    """Whether the per-step matmuls [B, .] x [., G] go through oneDNN (see DNN_MIN_MACS and
    DNN_SMALL_MIN_MACS)."""
    if not dnn_eligible(x):
        return False
    macs = B * G * P
    if macs >= thresholds.DNN_MIN_MACS:
        return True
    if P < thresholds.DNN_SMALL_MIN_K:
        return False
    if torch.get_num_threads() == 1:
        return B >= 2 and macs >= thresholds.DNN_SMALL_MIN_MACS
    return macs >= thresholds.DNN_SMALL_MIN_MACS // 2


def step_weight(w: Tensor, T: int, B: int, dnn: bool) -> Tensor:
    """``w`` ([N, K]) as the step matmul takes it: contiguous, oneDNN-blocked for long scans."""
    if not dnn:
        return w
    w = w.contiguous()
    if HAS_DNN_REORDER and T >= thresholds.PACK_MIN_T:
        return torch.ops.mkldnn._reorder_linear_weight(w, B)
    return w
