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
    row_split_backward: bool = True  # ... and, where the column slice does not fit, its units' W_hh rows
    batch_loop: bool = True  # a resident forward too large to be resident at once loops over batch tiles
    backward_tf32: bool = True  # 16-bit models' backward dh matmul runs TF32 (off: IEEE)
    per_thread_poll: bool = True  # the grid barrier waits with every thread's ld.acquire (off: scalar atomic)
    prefetch_gx: bool = True  # the forward loads step t+1's gx before step t's barrier
    prefetch_saved: bool = True  # the backward loads the next step's saved gates and cell states before the barrier
    final_state_once: bool = True  # c_n and d_c0 stored at each row's last step only (off: every step)
    saved_in_storage_dtype: bool = True  # fp16 models' saved gates and cell states in fp16 (off: fp32)
    # bf16 models' saved state in bf16 too: off, outside the flash-attention rule
    # (common/precision.py, saved_dtype); benchmarks/saved_state_error.py switches it on to measure it.
    saved_bf16: bool = False

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
    "no-row-split-bwd": "row_split_backward",
    "no-batch-loop": "batch_loop",
    "ieee-bwd": "backward_tf32",
    "atomic-poll": "per_thread_poll",
    "no-gx-prefetch": "prefetch_gx",
    "no-saved-prefetch": "prefetch_saved",
    "state-every-step": "final_state_once",
    "saved-fp32": "saved_in_storage_dtype",
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
