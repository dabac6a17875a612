"""What the AOT compile check builds for the pointwise tier."""
from __future__ import annotations

import torch

from ...reference import compute_dtype
from ..common.dtypes import TL_DTYPES
from ..specs import KernelSpec
from .kernels import backward_kernel, forward_kernel
from .launch import STORAGE_DTYPES
from .tiling import BLOCK_H_CHOICES, NUM_WARPS, block_rows


def aot_specs(arch: int) -> list[KernelSpec]:
    """Every specialization the launchers above can produce, for the AOT compile check.

    Forward: storage dtype x ``BLOCK_H_CHOICES`` x the four flag combinations the
    launcher allows (SAVE, PROJ); backward: compute dtype (float32, float64) x
    ``BLOCK_H_CHOICES``; ``BLOCK_B`` follows from ``BLOCK_H`` and ``num_warps`` is fixed.
    """
    specs = []
    for dtype in STORAGE_DTYPES:
        st = TL_DTYPES[dtype]
        ct = TL_DTYPES[compute_dtype(dtype)]
        for BLOCK_H in BLOCK_H_CHOICES:
            for save in (False, True):
                for proj in (False, True):
                    signature = {
                        "p_pre": f"*{st}", "p_c": f"*{ct}", "p_h": f"*{st}", "p_out": f"*{st}",
                        "p_gates": f"*{ct}", "p_cs": f"*{ct}", "p_hs": f"*{ct}",
                        "t": "i32", "bs": "i32", "B": "i32", "H": "i32", "s_pre": "i32",
                        "BLOCK_B": "constexpr", "BLOCK_H": "constexpr",
                        "SAVE": "constexpr", "PROJ": "constexpr",
                    }
                    specs.append(KernelSpec(
                        kernel=forward_kernel,
                        signature=signature,
                        constexprs={
                            "BLOCK_B": block_rows(BLOCK_H), "BLOCK_H": BLOCK_H, "SAVE": save, "PROJ": proj,
                        },
                        num_warps=NUM_WARPS,
                        label=f"pointwise fwd {st} BLOCK_H={BLOCK_H} save={int(save)} proj={int(proj)}",
                        extra={"arch": arch},
                    ))
    for cdt in (torch.float32, torch.float64):
        ct = TL_DTYPES[cdt]
        for BLOCK_H in BLOCK_H_CHOICES:
            signature = {
                "p_dh": f"*{ct}", "p_dc": f"*{ct}", "p_gates": f"*{ct}", "p_cs": f"*{ct}",
                "p_c_prev": f"*{ct}", "p_dgates": f"*{ct}",
                "t": "i32", "bs": "i32", "B": "i32", "H": "i32",
                "BLOCK_B": "constexpr", "BLOCK_H": "constexpr",
            }
            specs.append(KernelSpec(
                kernel=backward_kernel,
                signature=signature,
                constexprs={"BLOCK_B": block_rows(BLOCK_H), "BLOCK_H": BLOCK_H},
                num_warps=NUM_WARPS,
                label=f"pointwise bwd {ct} BLOCK_H={BLOCK_H}",
                extra={"arch": arch},
            ))
    return specs
