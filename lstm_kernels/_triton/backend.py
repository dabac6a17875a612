"""The ``triton`` backend: tier choice and dispatch.

Tiers (each a custom-op scan pair registered through ``ops.register_scan``):
    "pointwise"   per step: cuBLAS recurrent matmul + one fused gate/state kernel
    "fused_step"  per step: one kernel doing the recurrent matmul with the gate math as epilogue
    "persistent"  one launch per layer direction, W_hh resident on-chip, time loop inside
``choose_tier`` picks one from the shape; ``force_tier`` overrides it (tests, benchmarks).
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable, Optional

import torch

from .._base import Backend, triton_interpreting

TIERS = ("pointwise", "fused_step", "persistent")
_forced: list[Optional[str]] = [None]


@contextlib.contextmanager
def force_tier(tier: Optional[str]):
    """Run the triton backend with ``tier`` (None: automatic choice) inside the block."""
    if tier is not None and tier not in TIERS:
        raise ValueError(f"tier must be one of {TIERS} or None; got {tier!r}")
    old = _forced[0]
    _forced[0] = tier
    try:
        yield
    finally:
        _forced[0] = old


def _tier_scans() -> dict[str, Callable]:
    """Tier name -> differentiable scan(gx, h0, c0, w_hh, w_hr, batch_sizes, reverse)."""
    from .fused_step import scan as fused_step_scan
    from .persistent import scan as persistent_scan
    from .pointwise import scan as pointwise_scan

    return {"pointwise": pointwise_scan, "fused_step": fused_step_scan, "persistent": persistent_scan}


def implemented_tiers() -> list[str]:
    """Names of the tiers this version implements, in ``TIERS`` order.

    Imports the tier modules (which registers their custom ops), so a broken tier module
    raises here rather than at the first forward.
    """
    scans = _tier_scans()
    return [t for t in TIERS if t in scans]


def choose_tier(B: int, H: int, T: int, dtype: torch.dtype, device: torch.device) -> str:
    """The tier to run for this shape; never one that cannot run it.

    Grounded in the H200 measurements in benchmarks/NOTES.md (2026-11-28): the per-step
    tiers are bound by the host (fused_step 35-60 us per step, pointwise 120-300, where the
    persistent kernel took 3-22 us), so every shape whose persistent launches (forward and
    backward) fit on the chip gets "persistent", its grid barrier proven there; other shapes
    get "fused_step", which launches once per step where "pointwise" launches at least
    twice. float64 always gets "pointwise", the only tier with float64 kernels. Under the
    interpreter the persistent tier always fits (one program per batch tile).
    """
    from .persistent import fits

    if dtype == torch.float64:
        return "pointwise"
    on_gpu = device.type == "cuda"
    # A projection never changes whether the persistent grid fits (P < H), so H stands for P.
    if fits(B, H, H, False, dtype, device, interpreting=not on_gpu):
        return "persistent"
    return "fused_step"


class TritonBackend(Backend):
    name = "triton"

    def scan(self, gx, h0, c0, w_hh, w_hr, batch_sizes, reverse):
        scans = _tier_scans()
        tier = _forced[0] or choose_tier(gx.shape[1], c0.shape[1], gx.shape[0], gx.dtype, gx.device)
        if tier not in scans:
            raise RuntimeError(f"triton tier {tier!r} is not implemented in this version")
        return scans[tier](gx, h0, c0, w_hh, w_hr, batch_sizes, reverse)

    def scan_layer(self, gxs, h0s, c0s, w_hhs, w_hrs, batch_sizes):
        """Both directions in the same launches where the tier can (persistent: when both fit on the
        chip at once; fused_step: always, one launch per step for the two directions)."""
        if len(gxs) == 2:
            gx, c0 = gxs[0], c0s[0]
            tier = _forced[0] or choose_tier(gx.shape[1], c0.shape[1], gx.shape[0], gx.dtype, gx.device)
            if tier == "persistent":
                from .persistent import fits, scan_bidirectional

                P, has_proj = h0s[0].shape[1], w_hrs[0] is not None
                if fits(gx.shape[1], c0.shape[1], P, has_proj, gx.dtype, gx.device, directions=2):
                    return scan_bidirectional(gxs, h0s, c0s, w_hhs, w_hrs, batch_sizes)
            elif tier == "fused_step":
                from .fused_step import scan_bidirectional

                return scan_bidirectional(gxs, h0s, c0s, w_hhs, w_hrs, batch_sizes)
        return super().scan_layer(gxs, h0s, c0s, w_hhs, w_hrs, batch_sizes)


def check_device(device: torch.device) -> None:
    if device.type == "cuda":
        return
    if device.type == "cpu" and triton_interpreting():
        return
    raise RuntimeError(
        f"backend='triton' needs a CUDA GPU, or TRITON_INTERPRET=1 set before lstm_kernels is imported "
        f"to run its kernels on CPU through the Triton interpreter; got a tensor on {device}"
        + ("" if os.environ.get("TRITON_INTERPRET") is None else " (TRITON_INTERPRET is set but was not '1')")
    )
