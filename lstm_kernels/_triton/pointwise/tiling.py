"""Block sizes of the pointwise kernels.

``BLOCK_H`` is the next power of two of H clamped to ``BLOCK_H_CHOICES`` (a larger H uses
several 1024-wide blocks) and ``BLOCK_B = TILE // BLOCK_H``: every program covers 1024 units
of each gate with ``NUM_WARPS`` warps (at 4 warps some float16 variants spill; the AOT check,
tests/test_aot.py, compiles every choice).
"""
import triton

BLOCK_H_CHOICES = (32, 64, 128, 256, 512, 1024)
# Every program covers BLOCK_B x BLOCK_H = 1024 units (x 4 gates) with 8 warps: enough work
# per program at small H, and one program per 1024 units of a row at large H.
TILE = 1024
NUM_WARPS = 8


def block_h(H: int) -> int:
    """The ``BLOCK_H`` the launchers use for hidden size ``H`` (one of ``BLOCK_H_CHOICES``)."""
    return min(max(triton.next_power_of_2(H), BLOCK_H_CHOICES[0]), BLOCK_H_CHOICES[-1])


def block_rows(BLOCK_H: int) -> int:
    """Rows per program for ``BLOCK_H`` (fixed per ``BLOCK_H``, so it adds no specializations)."""
    return TILE // BLOCK_H
