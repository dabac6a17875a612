"""Which triton tier runs a problem.

Tiers (each a custom-op scan pair registered through ``common.registration``):
    "pointwise"   per step: cuBLAS recurrent matmul + one fused gate/state kernel
    "fused_step"  per step: one kernel doing the recurrent matmul with the gate math as epilogue
    "persistent"  one launch per layer direction, W_hh resident on-chip, time loop inside
"""
from __future__ import annotations

from typing import Optional

import torch

from .._base import triton_interpreting

TIERS = ("pointwise", "fused_step", "persistent")


def check_tier(tier: Optional[str]) -> None:
    if tier is not None and tier not in TIERS:
        raise ValueError(f"tier must be one of {TIERS} or None; got {tier!r}")


def choose_tier(B: int, H: int, dtype: torch.dtype, device: torch.device) -> str:
    """The tier to run for this shape; never one that cannot run it.

    The per-step tiers are bound by the host: each step costs at least one launch (fused_step)
    or two (pointwise) plus their Python overhead, several times what a step of the
    persistent kernel's time loop takes. So every shape whose persistent launches (forward and
    backward) fit on the chip gets "persistent", its grid barrier proven there; other shapes
    get "fused_step", which launches once per step where "pointwise" launches at least
    twice. float64 always gets "pointwise", the only tier with float64 kernels. Under the
    interpreter the persistent tier always fits (one program per batch tile).
    (tests/test_triton_tiers.py::test_choose_tier_returns_runnable_tier)
    """
    from .persistent.tiling import fits

    if dtype == torch.float64:
        return "pointwise"
    on_gpu = device.type == "cuda"
    # A projection never changes whether the persistent grid fits (P < H), so H stands for P.
    if fits(B, H, H, False, dtype, device, interpreting=not on_gpu):
        return "persistent"
    return "fused_step"


def candidate_tiers(batch: int, hidden: int, dtype: torch.dtype, device: torch.device) -> list[str]:
    """The tiers worth timing for this problem on ``device``, ``choose_tier``'s pick first.

    pointwise (a cuBLAS matmul plus a gate kernel per step) measured 2-5x slower per step
    than fused_step on every 16/32-bit shape of the H200 run, so it is timed only where it
    is the one tier (float64). A device the triton backend cannot run on gets none.
    """
    if device.type != "cuda" and not (device.type == "cpu" and triton_interpreting()):
        return []
    if dtype == torch.float64:
        return ["pointwise"]
    first = choose_tier(batch, hidden, dtype, device)
    return [first] + [t for t in ("fused_step",) if t != first]
