"""What the ahead-of-time compile check (``python -m lstm_kernels.aot``) builds.

Every tier package in ``lstm_kernels._triton`` has an ``aot_specs`` module defining
``aot_specs(arch: int) -> list[KernelSpec]``: one entry per specialization its launchers
can produce (dtype, block sizes, warps, hidden sizes the dispatch can send it).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class KernelSpec:
    kernel: Any  # the @triton.jit function
    signature: dict  # argument name -> Triton type string ("*fp32", "i32", "constexpr", ...)
    constexprs: dict  # constexpr argument name -> value
    num_warps: int = 4
    num_stages: int = 1
    label: str = ""  # human-readable: dtype, block sizes, hidden size
    extra: dict = field(default_factory=dict)  # anything else the report should show
    # Arguments the JIT would specialize as divisible by 16 (pointers from the caching
    # allocator, sizes the launcher only sends when they are multiples of 16).
    divisible_by_16: tuple = ()
