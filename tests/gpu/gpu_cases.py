"""What the GPU tests share: the skip marks, the implementations and shapes, and the rule.

The rule (the one FlashAttention uses): for every compared tensor, our error against a
float64 oracle (nn.LSTM in float64 on the same dtype-rounded weights and inputs, on
PyTorch's native CUDA kernels, not cuDNN) is at most ``FACTOR`` times cuDNN's error in the
same dtype plus a slack from ``conftest.TOLERANCES[dtype]["gpu"]``. Errors are
max |x - oracle| / max |oracle|, so one slack serves outputs and gradients summed over T*B.

Dimensions: T sequence length, B batch, I input size, H hidden size, P = proj_size or H,
L layers, D directions.
"""
from __future__ import annotations

import contextlib
import copy
import os
from dataclasses import dataclass

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_kernels
from conftest import TOLERANCES
from lstm_kernels._triton.backend import force_tier

# Without it every cuBLAS call raises under torch.use_deterministic_algorithms(True)
# (test_gpu_determinism.py::test_deterministic_mode_changes_nothing), and torch reads it
# once, at the first matmul: collection imports this module before any test runs one.
# ":4096:8" is torch's default workspace on sm_90.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

# Every test module here sets ``pytestmark = REQUIRES_GPU``: deselected by CI's -m 'not gpu',
# skipped (with the reason) when someone selects them without a GPU or with the interpreter.
REQUIRES_GPU = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"),
                       reason="TRITON_INTERPRET is on (tests/conftest.py sets it by default): the GPU tests "
                              "compile real kernels, run them with "
                              "TRITON_INTERPRET=0 python -m pytest tests -m gpu"),
]

# force_tier's names; force_tier raises ValueError for a name it does not know, so a renamed
# tier fails these tests instead of silently dropping out of them.
TIERS = ("pointwise", "fused_step", "persistent")
# (id, backend argument, forced tier): every tier forced, the triton backend choosing its
# own tier, torch's kernels on our weights, and the dispatching default.
IMPLS = [(t, "triton", t) for t in TIERS] + [("triton-auto", "triton", None), ("native", "native", None),
                                              ("auto", "auto", None)]
IMPL_IDS = [i for i, _, _ in IMPLS]
# The other backends, checked for parity only: the eager reference is the rule's control (a
# rule that rejected it would make every verdict noise), and the scripted scan runs on CUDA too.
OTHER_IMPLS = [("reference", "reference", None), ("torchscript", "torchscript", None)]
TRITON_IMPLS = [i for i in IMPLS if i[1] == "triton"]

# Precisions: float32 without TF32 (strict), float32 with TF32 in cuDNN and cuBLAS alike
# (what nn.LSTM gets by default), float16, bfloat16.
PRECISIONS = ("float32", "float32+tf32", "float16", "bfloat16")
DTYPES = {"float32": torch.float32, "float32+tf32": torch.float32, "float16": torch.float16,
          "bfloat16": torch.bfloat16}
FACTOR = 2.0
DEVICE = "cuda"


def slack(precision: str) -> float:
    kind = "gpu_tf32" if precision == "float32+tf32" else "gpu"
    return TOLERANCES[DTYPES[precision]][kind][0]


@dataclass(frozen=True)
class Case:
    T: int
    B: int
    I: int  # noqa: E741
    H: int
    layers: int = 1
    bi: bool = False
    proj: int = 0
    packed: bool = False

    @property
    def id(self) -> str:
        return (f"B{self.B}-T{self.T}-I{self.I}-H{self.H}-L{self.layers}" + ("-bi" if self.bi else "")
                + (f"-proj{self.proj}" if self.proj else "") + ("-packed" if self.packed else ""))

    @property
    def D(self) -> int:
        return 2 if self.bi else 1

    @property
    def P(self) -> int:
        return self.proj or self.H


CASES = [
    # Resident persistent forward: 4 programs x 3 batch tiles per direction, grid barrier.
    Case(T=6, B=40, I=64, H=256, bi=True, packed=True),
    Case(T=7, B=8, I=32, H=128),  # resident, one program owns all 128 units: no barrier
    Case(T=5, B=20, I=48, H=512),  # resident, 16 programs
    Case(T=7, B=3, I=10, H=33, layers=2, bi=True, proj=17),
    Case(T=1, B=1, I=8, H=64),
    Case(T=9, B=5, I=12, H=48, layers=2, bi=True, packed=True),
    Case(T=6, B=64, I=256, H=1024, bi=True),  # several programs per step in every tier
    Case(T=5, B=64, I=128, H=1024, packed=True),
    Case(T=4, B=24, I=64, H=1024),  # resident: 64 programs of 16 units x 2 batch tiles
]
SMALL = Case(T=7, B=3, I=10, H=33, layers=2, bi=True, proj=17)  # projection, two bidirectional layers
# 64 hidden blocks x 2 directions: the persistent tier's grid barrier between programs.
BARRIER = Case(T=6, B=64, I=256, H=1024, bi=True, packed=True)


def ordered_pairs(cases: list, precisions=PRECISIONS) -> list:
    """(case, precision) pairs with every case and every precision early (round r pairs case
    k with precision (k + r) mod n), so a run cut short still covers both axes."""
    n = len(precisions)
    return [(case, precisions[(k + r) % n]) for r in range(n) for k, case in enumerate(cases)]


@contextlib.contextmanager
def tf32(enabled: bool):
    """The same TF32 setting for cuDNN (nn.LSTM) and cuBLAS (our input projection)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def impl_context(tier):
    return force_tier(tier) if tier is not None else contextlib.nullcontext()


def ours_like(ref: nn.LSTM, backend: str) -> lstm_kernels.LSTM:
    return lstm_kernels.LSTM.from_torch(ref, backend=backend)


def run_case(module, inputs, tier=None, forward_ctx=contextlib.nullcontext) -> dict:
    """Outputs, final states and the gradients of input, h0, c0 and every parameter (by name)
    of one forward/backward with the case's random upstream gradients. ``forward_ctx`` wraps
    the forward only (autocast must not cover the backward)."""
    x, h0, c0, lengths, upstream = inputs
    x, h0, c0 = (t.detach().clone().requires_grad_() for t in (x, h0, c0))
    inp = pack_padded_sequence(x, lengths, enforce_sorted=False) if lengths is not None else x
    with impl_context(tier):
        with forward_ctx():
            out, (h_n, c_n) = module(inp, (h0, c0))
        out = out.data if lengths is not None else out
        params = list(module.named_parameters())
        outs = [out, h_n, c_n]
        grads = torch.autograd.grad(outs, [x, h0, c0] + [p for _, p in params],
                                    [u.to(o.dtype) for u, o in zip(upstream, outs)])
    result = {"out": out, "h_n": h_n, "c_n": c_n, "grad_input": grads[0], "grad_h0": grads[1],
              "grad_c0": grads[2]}
    result.update({f"grad_{name}": g for (name, _), g in zip(params, grads[3:])})
    return {k: v.detach() for k, v in result.items()}


def rel_err(t: torch.Tensor, ref: torch.Tensor) -> float:
    assert t.shape == ref.shape, f"shape {tuple(t.shape)} differs from the oracle's {tuple(ref.shape)}"
    if ref.numel() == 0:
        return 0.0
    scale = ref.abs().max().clamp_min(1e-12)
    return float(((t.double() - ref.double()).abs().max() / scale).item())


@dataclass
class Setup:
    """nn.LSTM in the case's dtype (cuDNN), its inputs, the float64 oracle and cuDNN's errors."""

    cudnn: nn.LSTM
    inputs: tuple
    oracle: dict
    cudnn_err: dict
    versus: str


_setups: dict = {}


def case_setup(case: Case, precision: str) -> Setup:
    """Built once per (case, precision) and shared by every implementation's test."""
    key = (case, precision)
    if key not in _setups:
        with tf32(precision == "float32+tf32"):
            _setups[key] = _build_setup(case, DTYPES[precision])
    return _setups[key]


def _build_setup(case: Case, dtype: torch.dtype) -> Setup:
    T, B, I, H, L, D, P = case.T, case.B, case.I, case.H, case.layers, case.D, case.P  # noqa: E741
    dev = DEVICE
    gen = torch.Generator().manual_seed(0)

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen)).to(device=dev, dtype=dtype)

    torch.manual_seed(0)
    cudnn = nn.LSTM(I, H, L, bidirectional=case.bi, proj_size=case.proj).to(device=dev, dtype=dtype)
    oracle_module = copy.deepcopy(cudnn).double()
    x, h0, c0 = randn(T, B, I), randn(L * D, B, P, scale=0.5), randn(L * D, B, H, scale=0.5)
    lengths = None
    if case.packed:
        lengths = torch.randint(1, T + 1, (B,), generator=gen)
        lengths[torch.randint(0, B, (1,), generator=gen)] = T  # the longest sequence fills T
    rows = (int(lengths.sum()),) if lengths is not None else (T, B)
    upstream = (randn(*rows, D * P), randn(L * D, B, P), randn(L * D, B, H))
    inputs = (x, h0, c0, lengths, upstream)
    # PyTorch's native kernels, not cuDNN: the oracle must not share the errors it judges.
    with torch.backends.cudnn.flags(enabled=False):
        oracle = run_case(oracle_module, (x.double(), h0.double(), c0.double(), lengths,
                                          tuple(u.double() for u in upstream)))
    versus = "cudnn"
    try:
        theirs = run_case(cudnn, inputs)
    except RuntimeError:  # a cuDNN build without this dtype: PyTorch's own CUDA kernels instead
        with torch.backends.cudnn.flags(enabled=False):
            theirs = run_case(cudnn, inputs)
        versus = "nn.LSTM native cuda (cuDNN refused this dtype)"
    return Setup(cudnn, inputs, oracle, {k: rel_err(theirs[k], ref) for k, ref in oracle.items()}, versus)


def assert_rule(got: dict, oracle: dict, versus_err: dict, atol: float, what: str = "") -> None:
    """Every tensor: our error <= FACTOR x nn.LSTM's + atol (NaN fails); one message names all that fail."""
    assert set(got) == set(oracle), (sorted(got), sorted(oracle))
    bad = []
    for name, ref in oracle.items():
        ours = rel_err(got[name], ref)
        bound = FACTOR * versus_err[name] + atol
        if not ours <= bound:
            bad.append(f"{name}: ours {ours:.3g} > {FACTOR:g} x {versus_err[name]:.3g} + {atol:g}")
    assert not bad, f"{what} beyond {FACTOR:g} x nn.LSTM's error + atol against the float64 oracle:\n  " \
        + "\n  ".join(bad)


def differing(a: dict, b: dict) -> list:
    return [k for k in a if not torch.equal(a[k], b[k])]
