"""The ``triton`` backend: runs each layer direction through the tier ``dispatch`` picks.

``force_tier`` pins a tier for every scan inside a block (tests, benchmarks);
``TritonBackend(tier=...)`` pins one for that instance (the measured dispatch in
``lstm_kernels/dispatch.py`` times each tier through its own instance).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional

import torch

from .._base import Backend, triton_interpreting
from .common import variants
from .dispatch import TIERS, check_tier, choose_tier

__all__ = ["TIERS", "TritonBackend", "check_device", "force_tier", "tier_scans"]


def force_tier(tier: Optional[str]):
    """Run the triton backend with ``tier`` (None: automatic choice) inside the block."""
    check_tier(tier)
    return variants.use(dataclasses.replace(variants.current(), tier=tier))


def tier_scans() -> dict[str, Callable]:
    """Tier name -> differentiable scan(gx, h0, c0, w_hh, w_hr, batch_sizes, reverse).

    Imports the tier modules, which registers their custom ops."""
    from .fused_step import scan as fused_step_scan
    from .persistent import scan as persistent_scan
    from .pointwise import scan as pointwise_scan

    return {"pointwise": pointwise_scan, "fused_step": fused_step_scan, "persistent": persistent_scan}


class TritonBackend(Backend):
    name = "triton"

    def __init__(self, tier: Optional[str] = None):
        """``tier``: the tier this instance always runs (None: ``force_tier``'s, else the
        automatic choice)."""
        check_tier(tier)
        self.tier = tier

    def tier_for(self, batch: int, hidden: int, dtype: torch.dtype, device: torch.device) -> str:
        """The tier this instance runs a scan of that shape with."""
        return self.tier or variants.current().tier or choose_tier(batch, hidden, dtype, device)

    def scan(self, gx, h0, c0, w_hh, w_hr, batch_sizes, reverse):
        tier = self.tier_for(gx.shape[1], c0.shape[1], gx.dtype, gx.device)
        return tier_scans()[tier](gx, h0, c0, w_hh, w_hr, batch_sizes, reverse)

    def scan_layer(self, gxs, h0s, c0s, w_hhs, w_hrs, batch_sizes):
        """Both directions in the same launches where the tier can (persistent: when both fit on the
        chip at once; fused_step: always, one launch per step for the two directions)."""
        if len(gxs) == 2:
            gx, c0 = gxs[0], c0s[0]
            tier = self.tier_for(gx.shape[1], c0.shape[1], gx.dtype, gx.device)
            if tier == "persistent":
                from .persistent.launch import scan_bidirectional
                from .persistent.tiling import fits

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
