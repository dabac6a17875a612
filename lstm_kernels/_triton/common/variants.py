"""Experiment switches: which tier runs and which of the tiers' optimizations are on.

A benchmark switches one optimization off (``variant("streamed-bwd")``) to time it against
the default side by side; tests pin a tier with ``backend.force_tier``. The switches are one
frozen ``Variants`` value, replaced as a whole under a lock by ``use``. It is process-wide,
not a ``contextvars.ContextVar``: autograd runs the backward of CUDA tensors on its own device
thread, which would not see a context variable set around ``loss.backward()``, and three of
the switches are read by the backward launchers.

Launchers read ``current()`` once per call and pass it down; the tiling functions take it
as an argument.
"""
from __future__ import annotations

import contextlib
import dataclasses
import threading
from dataclasses import dataclass
from typing import Iterator, Optional


@dataclass(frozen=True)
class Variants:
    tier: Optional[str] = None  # the triton tier every scan runs; None: the automatic choice
    resident_forward: bool = True  # the forward may hold its W_hh slice on-chip
    h_on_chip: bool = True  # a one-program resident forward keeps h in registers between steps
    backward_wide_k: bool = True  # the streamed persistent backward takes K chunks of 32, not 16
    resident_backward: bool = True  # the persistent backward may hold its W_hh^T slice on-chip
    batch_loop: bool = True  # a resident forward too large to be resident at once loops over batch tiles
    backward_tf32: bool = True  # 16-bit models' backward dh matmul runs TF32 (off: IEEE)

    def without(self, names: str) -> "Variants":
        """These variants with the changes in ``names`` ("+"-separated ``LABELS``) switched off."""
        chosen = [n for n in names.split("+") if n]
        unknown = [n for n in chosen if n not in LABELS]
        if unknown:
            raise ValueError(f"unknown persistent variant(s) {unknown}; known: {sorted(LABELS)}")
        return dataclasses.replace(self, **{LABELS[n]: False for n in chosen})


# Benchmark label of each optimization -> the field that switches it off.
LABELS = {
    "streamed-fwd": "resident_forward",
    "h-in-memory": "h_on_chip",
    "narrow-bwd-k": "backward_wide_k",
    "streamed-bwd": "resident_backward",
    "no-batch-loop": "batch_loop",
    "ieee-bwd": "backward_tf32",
}

_lock = threading.Lock()
_current = Variants()


def current() -> Variants:
    return _current


@contextlib.contextmanager
def use(variants: Variants) -> Iterator[Variants]:
    """Run with ``variants`` inside the block; the previous ones are restored after it."""
    global _current
    if not isinstance(variants, Variants):
        raise TypeError(f"use() takes a Variants, got {type(variants).__name__}")
    with _lock:
        old, _current = _current, variants
    try:
        yield variants
    finally:
        with _lock:
            _current = old


def variant(names: str):
    """Inside the block, switch off the changes named in ``names`` (see ``Variants.without``);
    "" changes nothing."""
    return use(current().without(names))
