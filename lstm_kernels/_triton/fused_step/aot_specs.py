"""What the AOT compile check builds for the fused_step tier."""
from __future__ import annotations

import torch

from ...reference import compute_dtype
from ..common.dtypes import HALF_DTYPES, TL_DTYPES
from ..common.tiles import block_b
from ..specs import KernelSpec
from .kernels import backward_kernel, forward_kernel
from .tiling import backward_blocks, forward_blocks


_AOT_HIDDEN = (1, 16, 33, 128, 256, 512, 1024, 2048, 4096)


def _aot_shapes() -> list[tuple[int, int]]:
    """(H, P) for every block choice: P = H, and projections (P < H) on either side of the
    K chunk's step at 16."""
    shapes = []
    for H in _AOT_HIDDEN:
        shapes += [(H, H)] + [(H, P) for P in sorted({min(16, H - 1), H - 1}) if P >= 1]
    return shapes


def _i32(names: str) -> dict[str, str]:
    return {name: "i32" for name in names.split()}


def _aot_precisions(dtype: torch.dtype) -> tuple[str, ...]:
    """DOT_PRECISION values a GPU launch can pass for ``dtype``: fp32 runs TF32 while
    ``cudnn.allow_tf32`` is on (the default) and IEEE when it is off; fp16/bf16 operands
    take the forward's "ieee" (no setting applies) and the backward's TF32."""
    return ("tf32", "ieee") if dtype == torch.float32 else ("ieee",)


def _aot_backward_precisions(dtype: torch.dtype) -> tuple[str, ...]:
    # backward_precision: 16-bit models always take TF32, fp32 follows allow_tf32.
    return ("tf32", "ieee") if dtype == torch.float32 else ("tf32",)


def aot_specs(arch: int) -> list[KernelSpec]:
    """Every (dtype, BLOCK_H, BLOCK_B, BLOCK_K, warps, flags, precision) the launchers produce for
    H, P <= 4096."""
    del arch  # the block choice does not depend on the architecture
    specs = []
    seen = set()
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        tdt = TL_DTYPES[dtype]
        cdt = TL_DTYPES[compute_dtype(dtype)]
        upcast = dtype not in HALF_DTYPES
        for H, P in _aot_shapes():
            # Without a projection (P == H) the kernel writes h to out, with one to hs.
            hout = tdt if P == H else cdt
            for B in (1, 32, 64, 128):
                BB = block_b(B)
                for prec in _aot_precisions(dtype):
                    BH, BK, warps = forward_blocks(H, P, BB, dtype, prec)
                    for save in (False, True):
                        key = ("fwd", tdt, BH, BB, BK, warps, save, hout, prec)
                        if key not in seen:
                            seen.add(key)
                            specs.append(KernelSpec(
                                kernel=forward_kernel,
                                signature={
                                    "p_gx": f"*{tdt}", "p_out": f"*{tdt}", "p_h0": f"*{tdt}", "p_w": f"*{tdt}",
                                    "p_c": "*fp32", "p_hout": f"*{hout}", "p_gates": f"*{cdt}",
                                    "p_cs": f"*{cdt}", **_i32("t0 t1 tp0 tp1 bs0 bs1 bsp0 bsp1 T B H P"),
                                    **_i32("s_gx_d s_gx_t s_gx_b"),
                                    "BLOCK_H": "constexpr", "BLOCK_B": "constexpr", "BLOCK_K": "constexpr",
                                    "SAVE": "constexpr", "UPCAST_DOT": "constexpr", "DOT_PRECISION": "constexpr",
                                },
                                constexprs=dict(BLOCK_H=BH, BLOCK_B=BB, BLOCK_K=BK, SAVE=save,
                                                UPCAST_DOT=upcast, DOT_PRECISION=prec),
                                num_warps=warps,
                                label=f"fused_step fwd {tdt} BH{BH} BB{BB} BK{BK} save={save} {prec}",
                            ))
                for prec in _aot_backward_precisions(dtype):
                    BH, BK, warps = backward_blocks(H, BB, prec)
                    for fuse in (False, True):
                        key = ("bwd", tdt, BH, BB, BK, warps, fuse, prec)
                        if key not in seen:
                            seen.add(key)
                            specs.append(KernelSpec(
                                kernel=backward_kernel,
                                signature={
                                    "p_dgates": "*fp32", "p_wt": f"*{tdt}", "p_dout": f"*{tdt}",
                                    "p_dhn": f"*{tdt}",
                                    "p_dhr": "*fp32", "p_dc": "*fp32", "p_gates": f"*{cdt}", "p_cs": f"*{cdt}",
                                    "p_c0": f"*{tdt}", **_i32("t0 t1 tn0 tn1 tp0 tp1 bs0 bs1 bsn0 bsn1 bsp0 bsp1"),
                                    **_i32("T B H s_do_d s_do_t s_do_b"),
                                    "BLOCK_H": "constexpr", "BLOCK_B": "constexpr", "BLOCK_K": "constexpr",
                                    "FUSE_DH": "constexpr", "DOT_PRECISION": "constexpr",
                                },
                                constexprs=dict(BLOCK_H=BH, BLOCK_B=BB, BLOCK_K=BK, FUSE_DH=fuse,
                                                DOT_PRECISION=prec),
                                num_warps=warps,
                                label=f"fused_step bwd {tdt} BH{BH} BB{BB} BK{BK} fuse_dh={fuse} {prec}",
                            ))
    return specs
