"""The precision policy of the matmul tiers' dots: which operands are upcast, and which
DOT_PRECISION each kernel runs."""
from __future__ import annotations

import torch

from ..._base import triton_interpreting
from ...reference import compute_dtype
from .dtypes import HALF_DTYPES


def dot_settings(dtype: torch.dtype) -> tuple[bool, str]:
    """(UPCAST_DOT, DOT_PRECISION) for storage ``dtype``.

    fp32 follows nn.LSTM on cuDNN: TF32 tensor-core matmuls while
    ``torch.backends.cudnn.allow_tf32`` is on (PyTorch's default), full IEEE fp32 when it is
    off. fp16/bf16 feed the tensor cores natively with fp32 accumulation. The interpreter's
    bf16 dot is wrong, so there everything is upcast to fp32 right after the loads, in IEEE.
    """
    interpreting = triton_interpreting()
    upcast = interpreting or dtype not in HALF_DTYPES
    tf32 = dtype == torch.float32 and not interpreting and torch.backends.cudnn.allow_tf32
    return upcast, "tf32" if tf32 else "ieee"


def backward_precision(dtype: torch.dtype, half_tf32: bool = True) -> str:
    """DOT_PRECISION of the backward kernels' dh matmul (fp32 gate gradients times W_hh).

    Both operands are fp32 there (the weights upcast), so "ieee" would run on the FMA units:
    on an H200 that made the fp16/bf16 backward 4x slower than the TF32 fp32 one at B=32,
    H=512. fp16/bf16 weights are exact in TF32 and TF32 keeps 3 more mantissa bits of the
    gate gradients than the storage dtype would, so 16-bit models take TF32 (``half_tf32``;
    off, the "ieee-bwd" variant, they take IEEE); fp32 follows ``cudnn.allow_tf32`` like the
    forward. The interpreter computes in IEEE.
    """
    if triton_interpreting():
        return "ieee"
    if dtype in HALF_DTYPES:
        return "tf32" if half_tf32 else "ieee"
    return dot_settings(dtype)[1]


def fp32_ieee(dtype: torch.dtype, precision, interpreting: bool) -> bool:
    """Whether a GPU launch runs fp32 dots in IEEE (FMA units, not tensor cores): their operand
    tiles live in registers, so some tilings need other warp counts or batch tiles.
    ``precision`` None: what ``dot_settings`` chooses on a GPU now (``cudnn.allow_tf32``)."""
    if interpreting or dtype != torch.float32:
        return False
    if precision is None:
        return not torch.backends.cudnn.allow_tf32
    return precision == "ieee"


def saved_dtype(dtype: torch.dtype, in_storage_dtype: bool, bf16_too: bool = False,
                has_proj: bool = False) -> torch.dtype:
    """The dtype the persistent tier saves its activated gates and cell states in for the
    backward: fp16 models' own dtype with ``in_storage_dtype`` (the "saved-fp32" variant
    switches it off), bf16's too only with ``bf16_too``, else the compute dtype. Never with
    a projection: those tilings sit at their register cap, and the 16-bit stores and loads
    made four of them spill 8-24 B on sm_90 (tests/test_aot.py).

    Measured with ``benchmarks/saved_state_error.py`` (the gradients' worst error against a
    float64 oracle, over torch's own error in the same dtype): fp16 saved state stays at
    0.2-0.4x torch's error up to T=128, inside the flash-attention rule (at most 2x); bf16's
    7-bit mantissa reaches 2.4-3.3x at T=128, so bf16 keeps fp32 saved state by default.
    tests/test_triton_tiers.py (test_persistent_saves_16_bit_state_in_the_storage_dtype)
    pins both."""
    narrow = dtype == torch.float16 or (bf16_too and dtype == torch.bfloat16)
    return dtype if in_storage_dtype and narrow and not has_proj else compute_dtype(dtype)
