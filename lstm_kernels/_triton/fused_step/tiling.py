"""Block sizes and warps of the fused_step kernels."""
from __future__ import annotations

from typing import Optional

import torch

from ..common.tiles import pow2, step_warps


def forward_blocks(H: int, P: int, BB: int, dtype: Optional[torch.dtype] = None,
                   precision: str = "tf32") -> tuple[int, int, int]:
    """(BLOCK_H, BLOCK_K, num_warps) of the forward step kernel.

    8 warps, 16 for 32 x 64 tiles: with 4, ptxas spills every 32 x 64 fp16/bf16 tile, and
    with 8 the 32 x 64 tiles spill 8-16 B (fp32 under triton 3.9; fp16/bf16 with the gates
    saved under 3.6, sm_80, since the kernel also serves both directions). fp32 16 x 16
    tiles take 4 with TF32 (AOT check, sm_80 and sm_90, triton 3.6 and 3.9); with IEEE
    (``cudnn.allow_tf32`` off) 4 warps spill 32 B on sm_80 under both, so they keep 8.
    """
    BH = pow2(H, 16, 32)
    warps = 16 if BH * BB >= 2048 else 8
    if dtype == torch.float32 and precision == "tf32":
        warps = 4 if BH * BB <= 256 else warps
    return BH, pow2(P, 16, 32), warps


def backward_blocks(H: int, BB: int, precision: str = "tf32") -> tuple[int, int, int]:
    """(BLOCK_H, BLOCK_K, num_warps) of the backward step kernel.

    16 warps from 1024-element tiles: at 8, ptxas caps the fused-dh 32 x 32 tile at 80
    registers and spills (sm_80); at 4 the 32 x 64 tile spills. ``precision`` (the dh
    matmul's DOT_PRECISION) changes nothing: the fp32 IEEE tiles are spill-free with the
    same counts (AOT check, sm_80 and sm_90, triton 3.6 and 3.9).
    """
    BH = pow2(H, 16, 32)
    return BH, 64, 16 if BH * BB >= 1024 else step_warps(BH, BB)
