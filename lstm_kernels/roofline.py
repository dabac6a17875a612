"""A floor model for one LSTM call: how fast it could possibly run on a given chip.

Dimensions: T sequence length, B batch, I input size, H hidden size, P = proj_size or H,
L layers, D directions (2 if bidirectional), G = 4H gate width.

``floor_ms = max(compute, memory, latency)`` where

* compute = FLOPs / matmul rate. FLOPs of the forward, per layer and direction:
  input projection ``2*T*B*I_l*G`` (``I_l = I`` for layer 0, ``D*P`` above), recurrent
  matmul ``2*T*B*P*G``, output projection ``2*T*B*H*P`` (only with proj_size) and the
  gate/state arithmetic, ``POINTWISE_FLOPS_PER_UNIT`` per hidden unit and step. Training
  adds a backward of twice the forward's FLOPs (one matmul for the gradient of the
  input, one for the gradient of the weights, per forward matmul).
* memory = minimum HBM bytes / bandwidth: what must cross HBM even if every
  intermediate stayed on chip. Weights read once per layer direction; the layer input
  read and the layer output written once; initial and final states; in training the
  activations saved for backward (gates and cell states in the compute dtype, float32
  for half types, as ``ops.py`` stores them) written once and read once, plus the
  backward's own traffic: weights again, weight gradients, upstream and input
  gradients. The gate pre-activations ``x @ W_ih^T`` are not counted: a fused
  implementation need not write them.
* latency = sequential steps x ``STEP_LATENCY_US``. Step t needs h from step t-1, so a
  layer's T steps run one after another whatever the chip's width; layer l+1 can start
  once layer l has finished (counted as L*T steps; a wavefront would overlap them, so
  this is the floor of the implementations we build, not of all possible ones). The
  two directions of a layer are independent and run side by side. Training runs the
  chain twice (forward, then backward).

The rates are passed in (measured on the chip: a large device copy for bandwidth, a
large matmul for the matmul rate), never looked up, so the floor describes the machine
the benchmark ran on.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Union

import torch

# The cheapest synchronisation one recurrent step can cost on a current NVIDIA GPU:
# a grid-wide barrier inside a persistent kernel (a fence and an atomic round trip
# through L2 across all SMs) takes about 1 us on A100/H100-class parts; a kernel launch
# per step costs 2-5 us, more than this, so launch-per-step designs sit well above it.
STEP_LATENCY_US = 1.0

# Gate and state arithmetic per hidden unit and step: 3 sigmoids and 2 tanh (about 4
# FLOPs each as exp + add + divide), c = f*c + i*g (3), h = o*tanh(c) (1), bias adds (4).
POINTWISE_FLOPS_PER_UNIT = 28

# Backward FLOPs per forward FLOP: each matmul Y = X W needs dX = dY W^T and dW = X^T dY.
BACKWARD_FLOP_RATIO = 2.0

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float64": torch.float64, "fp64": torch.float64, "double": torch.float64,
}


def as_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    """A torch floating dtype from a dtype or its name (``"bf16"``, ``"bfloat16"``, ...)."""
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point dtype, got {dtype}")
        return dtype
    if isinstance(dtype, str) and dtype.lower().removeprefix("torch.") in _DTYPES:
        return _DTYPES[dtype.lower().removeprefix("torch.")]
    raise TypeError(f"dtype must be a torch floating dtype or one of {sorted(_DTYPES)}; got {dtype!r}")


@dataclass(frozen=True)
class Shape:
    """One LSTM call: ``mode`` is ``"inference"`` (forward only) or ``"training"`` (forward + backward)."""

    mode: str
    T: int
    B: int
    I: int  # noqa: E741 (the package's name for the input size)
    H: int
    P: Optional[int] = None  # proj_size; None or 0 means no projection (P = H)
    layers: int = 1
    directions: int = 1
    dtype: Union[str, torch.dtype] = torch.float32

    def __post_init__(self):
        if self.mode not in ("inference", "training"):
            raise ValueError(f"mode must be 'inference' or 'training'; got {self.mode!r}")
        for name in ("T", "B", "I", "H", "layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int; got {value!r}")
        if self.directions not in (1, 2):
            raise ValueError(f"directions must be 1 or 2; got {self.directions!r}")
        if self.P is not None and (not isinstance(self.P, int) or self.P < 0 or self.P >= self.H):
            raise ValueError(f"P (proj_size) must be None or an int in [0, H); got {self.P!r}")
        as_dtype(self.dtype)

    @property
    def out_size(self) -> int:
        return self.P or self.H

    @property
    def has_proj(self) -> bool:
        return bool(self.P)


def _layer_inputs(s: Shape) -> list[int]:
    return [s.I] + [s.directions * s.out_size] * (s.layers - 1)


def flops(s: Shape) -> float:
    """Floating-point operations of the call (multiply and add counted separately)."""
    G, P, H = 4 * s.H, s.out_size, s.H
    fwd = 0.0
    for i_l in _layer_inputs(s):
        per_dir = 2.0 * s.T * s.B * G * (i_l + P)  # input projection + recurrent matmul
        if s.has_proj:
            per_dir += 2.0 * s.T * s.B * H * P
        per_dir += float(POINTWISE_FLOPS_PER_UNIT) * s.T * s.B * H
        fwd += s.directions * per_dir
    return fwd * (1.0 + BACKWARD_FLOP_RATIO) if s.mode == "training" else fwd


def hbm_bytes(s: Shape) -> float:
    """Bytes that must cross HBM at least once (see the module docstring for what counts)."""
    e = as_dtype(s.dtype).itemsize
    saved_e = 8 if as_dtype(s.dtype) == torch.float64 else 4  # activations saved in the compute dtype
    G, P, H, D = 4 * s.H, s.out_size, s.H, s.directions
    total = 0.0
    for i_l in _layer_inputs(s):
        weights = D * (G * i_l + G * P + 2 * G + (H * P if s.has_proj else 0))
        x_in = s.T * s.B * i_l
        out = s.T * s.B * D * P
        states = 2 * D * s.B * (P + H)  # h0, c0 read; h_n, c_n written
        total += e * (weights + x_in + out + states)
        if s.mode == "training":
            saved = D * s.T * s.B * (G + H + (H if s.has_proj else 0))  # gates, cs, hs
            total += saved_e * 2 * saved  # written in forward, read in backward
            # backward: weights again + weight grads, input again (for dW_ih),
            # output again (for dW_hh), upstream grads, input grads, state grads
            total += e * (2 * weights + x_in + out + out + x_in + states)
    return total


@dataclass(frozen=True)
class Floor:
    """The three terms of the floor and the floor itself (milliseconds)."""

    flops: float
    bytes: float
    compute_ms: float
    memory_ms: float
    latency_ms: float
    floor_ms: float
    bound: str  # which term sets the floor: "compute", "memory" or "latency"

    def as_dict(self) -> dict:
        return asdict(self)


def floor(s: Shape, hbm_gbps: float, matmul_tflops: float, step_latency_us: float = STEP_LATENCY_US) -> Floor:
    """The floor of ``s`` on a chip with ``hbm_gbps`` GB/s and ``matmul_tflops`` TFLOP/s (measured)."""
    for name, rate in (("hbm_gbps", hbm_gbps), ("matmul_tflops", matmul_tflops)):
        if not isinstance(rate, (int, float)) or not rate > 0:
            raise ValueError(f"{name} must be a positive number; got {rate!r}")
    if not isinstance(step_latency_us, (int, float)) or step_latency_us < 0:
        raise ValueError(f"step_latency_us must be a non-negative number; got {step_latency_us!r}")
    f, b = flops(s), hbm_bytes(s)
    compute = f / (matmul_tflops * 1e12) * 1e3
    memory = b / (hbm_gbps * 1e9) * 1e3
    passes = 2 if s.mode == "training" else 1
    latency = passes * s.layers * s.T * step_latency_us * 1e-3
    terms = {"compute": compute, "memory": memory, "latency": latency}
    bound = max(terms, key=terms.get)
    return Floor(flops=f, bytes=b, compute_ms=compute, memory_ms=memory, latency_ms=latency,
                 floor_ms=terms[bound], bound=bound)


def floor_ms(mode: str, T: int, B: int, I: int, H: int,  # noqa: E741
             P: Optional[int] = None, layers: int = 1, directions: int = 1,
             dtype: Union[str, torch.dtype] = torch.float32, *,
             hbm_gbps: float, matmul_tflops: float, step_latency_us: float = STEP_LATENCY_US) -> float:
    """``floor(Shape(...), ...).floor_ms`` in one call."""
    shape = Shape(mode, T, B, I, H, P, layers, directions, dtype)
    return floor(shape, hbm_gbps, matmul_tflops, step_latency_us).floor_ms
