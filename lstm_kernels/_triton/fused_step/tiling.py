"""Block sizes and warps of the fused_step kernels, as tables.

Both kernels take hidden blocks of 16 or 32 units (``BLOCK_H``) and the batch tile of
``common.tiles.block_b`` (16, 32 or 64 rows); the warps are a table over the
(BLOCK_H, BLOCK_B) tile. Every count is the smallest the AOT check (``python -m
lstm_kernels.aot``, sm_80 and sm_90) finds spill-free for every dtype, flag and direction
count the kernel is compiled with: fewer warps leave the four fp32 gate tiles, their pointer
tiles and the MMA operands too few registers; more make ptxas cap the registers per thread
and spill loop-invariant values instead. tests/test_aot.py pins the table:
test_fused_step_sweep_reaches_every_block_choice checks the AOT sweep reaches every entry,
test_kernel_specs_compile_for_sm80_and_sm90 that each compiles without spills.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..common.tiles import pow2

BLOCK_H_RANGE = (16, 32)  # hidden units per program: the MMA M side
BLOCK_K_RANGE = (16, 32)  # forward K chunk over P

# (BLOCK_H, BLOCK_B) -> warps of the forward kernel. The 32 x 64 tile spills at 8 warps (the
# kernel serves both directions, which costs registers), so it takes 16.
FORWARD_WARPS = {(16, 16): 8, (16, 32): 8, (16, 64): 8, (32, 16): 8, (32, 32): 8, (32, 64): 16}
# fp32 with TF32 dots: the 16 x 16 tile is spill-free at 4 warps. With IEEE dots
# (``cudnn.allow_tf32`` off) its operand tiles sit in registers and 4 warps spill, so
# FORWARD_WARPS applies.
FORWARD_WARPS_FP32_TF32 = {**FORWARD_WARPS, (16, 16): 4}

# (BLOCK_H, BLOCK_B) -> warps of the backward kernel: 16 from 1024-element tiles, where 8 make
# ptxas cap the fused-dh tile's registers and spill. The dh matmul's precision does not
# change the counts.
BACKWARD_WARPS = {(16, 16): 4, (16, 32): 8, (16, 64): 16, (32, 16): 8, (32, 32): 16, (32, 64): 16}
BACKWARD_BLOCK_K = 64  # K chunk of the backward's dh matmul over 4H


def forward_blocks(H: int, P: int, BB: int, dtype: Optional[torch.dtype] = None,
                   precision: str = "tf32") -> tuple[int, int, int]:
    """(BLOCK_H, BLOCK_K, num_warps) of the forward step kernel."""
    BH = pow2(H, *BLOCK_H_RANGE)
    table = FORWARD_WARPS_FP32_TF32 if dtype == torch.float32 and precision == "tf32" else FORWARD_WARPS
    return BH, pow2(P, *BLOCK_K_RANGE), table[BH, BB]


def backward_blocks(H: int, BB: int, precision: str = "tf32") -> tuple[int, int, int]:
    """(BLOCK_H, BLOCK_K, num_warps) of the backward step kernel; ``precision`` (the dh
    matmul's DOT_PRECISION) takes the same tiling."""
    del precision
    BH = pow2(H, *BLOCK_H_RANGE)
    return BH, BACKWARD_BLOCK_K, BACKWARD_WARPS[BH, BB]
