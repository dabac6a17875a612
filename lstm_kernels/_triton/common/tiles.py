"""Block-size helpers shared by the tiers' tiling rules."""
from __future__ import annotations

from typing import Optional

import triton


def pow2(n: int, lo: int = 16, hi: Optional[int] = None) -> int:
    """The next power of two of ``n`` (at least 1), clamped to ``[lo, hi]``."""
    p = max(lo, triton.next_power_of_2(max(int(n), 1)))
    return p if hi is None else min(hi, p)


def block_b(B: int) -> int:
    """Batch tile of the matmul tiers: the MMA N side; 16 is the smallest tl.dot accepts."""
    return pow2(B, 16, 64)


def step_warps(BH: int, BB: int) -> int:
    # Four fp32 gate tiles, their 64-bit pointer tiles and (fp16/bf16) the MMA operands of
    # a 32 x 32 tile spill at 4 warps; 8 warps halve the per-thread share (AOT check,
    # tests/test_aot.py).
    return 8 if BH * BB >= 512 else 4
