"""What the AOT compile check builds for the persistent tier: every tiling the config
functions can return for H, P <= 4096 on a GPU of the given architecture."""
from __future__ import annotations

import dataclasses
import functools

import torch
import triton

from ...reference import compute_dtype
from ..common.dtypes import HALF_DTYPES, TL_DTYPES
from ..common.precision import saved_dtype
from ..common.variants import Variants
from ..specs import KernelSpec
from .backward_kernels import backward_kernel, backward_rows_kernel
from .forward_kernels import forward_kernel, forward_tiles_kernel
from .tiling import (
    MAX_BLOCK_H,
    PersistentConfig,
    backward_block_k,
    backward_polls_per_thread,
    h_on_chip,
    persistent_config,
    prefetches_gx,
    prefetches_saved,
    stores_final_state_once,
    resident_backward_config,
    row_split_backward_config,
    rows_switches,
    uses_low_dot,
)


# The sweep: every tiling the config functions can return for H, P <= 4096 and any batch, on a
# GPU with the given SM count. Each config function is piecewise constant in every size, with
# breakpoints that can be listed, so one representative per piece reaches all of them:
#
# - H enters only through cdiv(H, 16) (every hidden block, 16..128, is a multiple of 16, and
#   so is every power of two >= 16 that _p2 rounds to) and whether 16 divides H. A size not
#   divisible by 16 gets no resident tiling and a streamed one equal to that of the next
#   multiple of 16, so the multiples of 16 up to 4096 cover every hidden size.
# - P (projection, 1 <= P < H) enters through pow2(P) and P <= 64 for small H, and through
#   pow2(cdiv(P, nh)) for nh = cdiv(H, 16 | 32 | 64) hidden blocks: the tiling changes only
#   where P passes 16, 32, 64, 16 * nh or 32 * nh (``_aot_projections``).
# - B enters through block_b(B) (16, 32, 64 rows) and through comparisons of the batch-tile
#   count cdiv(B, BB) with n_sm // (directions * blocks), blocks being a hidden-block count
#   cdiv(H, 16 | 32 | 64 | 128): the tiling changes only where B passes 16, 32 or
#   BB * (n_sm // (directions * blocks)) for BB in 16, 32, 64 (``_aot_batches``), and beyond
#   64 * n_sm rows every comparison is settled.
#
# A piece ends at its breakpoint (each test is "size <= bound"), so the breakpoints inside the
# range plus its largest size hit every piece. tests/test_aot.py checks the sweep against
# shapes drawn at random.
_AOT_MAX = 4096
# The launchers' default switches (common/variants.py), compiled in every spec: the code
# without a change is the code the AOT check passed before that change.
_V = Variants()
_FWD_SWITCHES = dict(PER_THREAD_POLL=_V.per_thread_poll)
_TILES_SWITCHES = dict(PER_THREAD_POLL=_V.per_thread_poll)


def _aot_hidden() -> range:
    return range(16, _AOT_MAX + 1, 16)


def _aot_projections(H: int) -> list[int]:
    """One projection size 1 <= P < H per piece on which the tilings for hidden size H are constant."""
    bounds = {16, 32, MAX_BLOCK_H, H - 1}
    for BH in (16, 32, MAX_BLOCK_H):
        nh = triton.cdiv(H, BH)
        bounds |= {16 * nh, 32 * nh}
    return sorted(x for x in bounds if 1 <= x < H)


def _aot_batches(H: int, n_sm: int, directions: int) -> list[int]:
    """One batch size per piece on which the tilings for hidden size H are constant."""
    bounds = {16, 32, 64 * n_sm + 64}
    for BH in (16, 32, 64, 128):
        tiles = n_sm // (directions * triton.cdiv(H, BH))  # most batch tiles beside these blocks
        bounds |= {BB * tiles for BB in (16, 32, 64) if tiles}
    return sorted(bounds)


def _aot_shapes(n_sm: int):
    """(B, H, P, has_proj, directions) covering every piece of the config functions."""
    for H in _aot_hidden():
        shapes = [(H, False)] + [(P, True) for P in _aot_projections(H)]
        for directions in (1, 2):
            for B in _aot_batches(H, n_sm, directions):
                for P, has_proj in shapes:
                    yield B, H, P, has_proj, directions


def aot_key(dtype: torch.dtype, has_proj: bool, cfg: PersistentConfig, prec: str = "") -> tuple:
    # The grid (NP, NM) is not compiled in: one spec per block choice (whether NP is 1 is:
    # it decides H_ON_CHIP). ``prec``: fp32's "tf32" or "ieee" ("" for fp16/bf16).
    return dtype, has_proj, dataclasses.replace(cfg, NP=min(cfg.NP, 2), NM=0, barrier=cfg.use_barrier), prec


def aot_backward_key(dtype: torch.dtype, cfg: PersistentConfig) -> tuple:
    # The row-split kernel compiles in the next power of two of NP (its share sum's width)
    # and whether it loops over batch tiles.
    NP = triton.next_power_of_2(cfg.NP) if cfg.row_split else 0
    return dtype, dataclasses.replace(cfg, NP=NP, NM=0, barrier=cfg.use_barrier)


@functools.lru_cache(maxsize=None)
def aot_configs(n_sm: int) -> list[tuple[torch.dtype, bool, PersistentConfig, str]]:
    found = {}
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for prec in _aot_precisions(dtype):
            for B, H, P, has_proj, directions in _aot_shapes(n_sm):
                for resident in (True, False):
                    cfg = persistent_config(B, H, P, has_proj, dtype, n_sm, interpreting=False,
                                            resident=resident, directions=directions, precision=prec or None)
                    if cfg is not None:
                        found[aot_key(dtype, has_proj, cfg, prec)] = None
                    if has_proj or cfg is None or not cfg.resident:
                        break  # resident=False would return the same streamed tiling
    return list(found)


def aot_specs(arch: int) -> list[KernelSpec]:
    """Every specialization ``persistent_config`` can send to the kernels on a GPU of ``arch``.

    The SM count bounds the grid; 132 (H100/H200) for sm_90, 108 (A100) for sm_80. fp32
    runs TF32 by default (``cudnn.allow_tf32``) and IEEE when that is off: both compile.
    """
    n_sm = 132 if arch >= 90 else 108
    specs = []
    for dtype, has_proj, cfg, prec in aot_configs(n_sm):
        specs += _forward_specs(dtype, has_proj, cfg, prec)
    for dtype, cfg in aot_backward_configs(n_sm, arch // 10):
        if cfg.row_split:
            specs.append(_rows_spec(dtype, cfg))
            continue
        for prec in _aot_precisions(dtype):
            common = dict(USE_BARRIER=cfg.use_barrier, BLOCK_H=cfg.BLOCK_H, BLOCK_P=cfg.BLOCK_P,
                          BLOCK_B=cfg.BLOCK_B, BLOCK_K=cfg.BLOCK_K, HAS_PROJ=False)
            tiling = (f"BH{cfg.BLOCK_H} BP{cfg.BLOCK_P} BB{cfg.BLOCK_B} BK{cfg.BLOCK_K}"
                      f"{' barrier' if cfg.use_barrier else ''} resident")
            specs.append(_bwd_spec(dtype, False, cfg, common, tiling, prec))
    return specs


def _aot_precisions(dtype: torch.dtype) -> tuple[str, ...]:
    # fp32 follows cudnn.allow_tf32 (dot_settings, backward_precision); 16-bit models have one
    # precision per kernel (see _forward_specs and _bwd_spec).
    return ("tf32", "ieee") if dtype == torch.float32 else ("",)


def _forward_specs(dtype: torch.dtype, has_proj: bool, cfg: PersistentConfig, prec: str) -> list[KernelSpec]:
    """The forward kernels' specs of one tiling (and the streamed backward's), for fp32 ``prec``."""
    tdt = TL_DTYPES[dtype]
    cdt = TL_DTYPES[compute_dtype(dtype)]
    sdt = TL_DTYPES[saved_dtype(dtype, _V.saved_in_storage_dtype, _V.saved_bf16, has_proj)]
    upcast = dtype not in HALF_DTYPES
    fwd_prec = prec or "ieee"  # 16-bit operands: the forward's dot takes no precision setting
    common = dict(USE_BARRIER=cfg.use_barrier, BLOCK_H=cfg.BLOCK_H, BLOCK_P=cfg.BLOCK_P,
                  BLOCK_B=cfg.BLOCK_B, BLOCK_K=cfg.BLOCK_K, HAS_PROJ=has_proj,
                  DOT_PRECISION=fwd_prec)
    tiling = (f"BH{cfg.BLOCK_H} BP{cfg.BLOCK_P} BB{cfg.BLOCK_B} BK{cfg.BLOCK_K}"
              f"{' barrier' if cfg.use_barrier else ''}"
              f"{' proj' if has_proj else ''}")
    if cfg.resident:
        tiling += " resident" + (" h-on-chip" if h_on_chip(cfg, has_proj) else "")
    if cfg.batch_loop:
        return _tiles_specs(dtype, cfg, upcast, fwd_prec, tiling + (f" {prec}" if prec else ""))
    specs = []
    for save in (False, True):
        if cfg.resident and cfg.BLOCK_K > 16:  # the launcher sends only sizes divisible by 16
            div16 = ("p_gx", "p_h0", "p_c0", "p_w", "p_wr", "p_bs", "p_out", "p_hr", "p_gates", "p_cs",
                     "p_cn", "p_sync", "H", "P", "s_gx_d", "s_gx_t", "s_gx_b")
        else:
            div16 = ()
        specs.append(KernelSpec(
            kernel=forward_kernel,
            signature={
                "p_gx": f"*{tdt}", "p_h0": f"*{tdt}", "p_c0": f"*{tdt}", "p_w": f"*{tdt}",
                "p_wr": f"*{tdt}", "p_bs": "*i32", "p_out": f"*{tdt}", "p_hr": f"*{cdt}",
                "p_gates": f"*{sdt}", "p_cs": f"*{sdt}", "p_cn": f"*{tdt}", "p_sync": "*i32",
                "T": "i32", "B": "i32", "H": "i32", "P": "i32", "s_gx_d": "i32", "s_gx_t": "i32",
                "s_gx_b": "i32", "NUM_PROGRAMS": "i32", "reverse": "i32",
                **{k: "constexpr" for k in (*common, "SAVE", "UPCAST_DOT", "RESIDENT", "H_ON_CHIP", "PREFETCH_GX",
                                            "C_N_ONCE", *_FWD_SWITCHES)},
            },
            constexprs=dict(SAVE=save, UPCAST_DOT=upcast, RESIDENT=cfg.resident,
                            H_ON_CHIP=h_on_chip(cfg, has_proj), PREFETCH_GX=prefetches_gx(cfg, _V.prefetch_gx),
                            C_N_ONCE=stores_final_state_once(cfg, has_proj, _V.final_state_once), **common, **_FWD_SWITCHES),
            num_warps=cfg.num_warps,
            label=f"persistent fwd {tdt} {tiling} save={save}" + (f" {prec}" if prec else ""),
            divisible_by_16=div16,
        ))
    if not cfg.resident:  # the backward never runs a resident forward tiling
        specs.append(_bwd_spec(dtype, has_proj, cfg, common, tiling, prec))
    return specs


def _tiles_specs(dtype: torch.dtype, cfg: PersistentConfig, upcast: bool, prec: str, tiling: str) -> list:
    tdt = TL_DTYPES[dtype]
    sdt = TL_DTYPES[saved_dtype(dtype, _V.saved_in_storage_dtype, _V.saved_bf16)]
    consts = dict(BLOCK_H=cfg.BLOCK_H, BLOCK_B=cfg.BLOCK_B, BLOCK_K=cfg.BLOCK_K, UPCAST_DOT=upcast,
                  DOT_PRECISION=prec, **_TILES_SWITCHES)
    return [KernelSpec(
        kernel=forward_tiles_kernel,
        signature={
            "p_gx": f"*{tdt}", "p_h0": f"*{tdt}", "p_w": f"*{tdt}", "p_bs": "*i32", "p_out": f"*{tdt}",
            "p_gates": f"*{sdt}", "p_cs": f"*{sdt}", "p_cn": f"*{tdt}", "p_cf": "*fp32", "p_sync": "*i32",
            "T": "i32", "B": "i32", "H": "i32", "P": "i32", "s_gx_d": "i32", "s_gx_t": "i32", "s_gx_b": "i32",
            "NUM_PROGRAMS": "i32", "reverse": "i32", "N_TILES": "i32",
            **{k: "constexpr" for k in (*consts, "SAVE")},
        },
        constexprs=dict(consts, SAVE=save),
        num_warps=cfg.num_warps,
        label=f"persistent fwd-tiles {tdt} {tiling} batch-loop save={save}",
        divisible_by_16=("p_gx", "p_h0", "p_w", "p_bs", "p_out", "p_gates", "p_cs", "p_cn", "p_cf", "p_sync",
                         "H", "P", "s_gx_d", "s_gx_t", "s_gx_b"),
    ) for save in (False, True)]


@functools.lru_cache(maxsize=None)
def aot_backward_configs(n_sm: int, major: int) -> list[tuple[torch.dtype, PersistentConfig]]:
    found = {}
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for B, H, P, has_proj, directions in _aot_shapes(n_sm):
            if has_proj:
                continue  # the resident backward takes no projection
            cfg = resident_backward_config(B, H, H, False, dtype, n_sm, False, directions, major)
            if cfg is None:
                cfg = row_split_backward_config(B, H, dtype, n_sm, directions, major)
            if cfg is not None:
                found[aot_backward_key(dtype, cfg)] = None
    return list(found)


def _bwd_spec(dtype: torch.dtype, has_proj: bool, cfg: PersistentConfig, common: dict, tiling: str,
              prec: str = "") -> KernelSpec:
    """The backward kernel's spec for a streamed or resident tiling, with the launcher's flags.

    ``prec``: fp32's "tf32" or "ieee"; "" for fp16/bf16 (backward_precision's TF32)."""
    tdt = TL_DTYPES[dtype]
    sdt = TL_DTYPES[saved_dtype(dtype, _V.saved_in_storage_dtype, _V.saved_bf16, has_proj)]
    low_dot = cfg.resident and uses_low_dot(dtype)
    # backward_precision; 16-bit operands of the resident dot take none.
    consts = dict(common, DOT_PRECISION="ieee" if low_dot else (prec or "tf32"),
                  BLOCK_K=backward_block_k(cfg, has_proj, prec == "ieee"), RESIDENT=cfg.resident,
                  LOW_DOT=low_dot, PREFETCH_SAVED=prefetches_saved(cfg, _V.prefetch_saved),
                  DC0_ONCE=stores_final_state_once(cfg, has_proj, _V.final_state_once),
                  PER_THREAD_POLL=backward_polls_per_thread(has_proj, _V.per_thread_poll))
    div16 = ("p_dout", "p_dhn", "p_dcn", "p_w", "p_wr", "p_bs", "p_gates", "p_cs", "p_c0", "p_dgates", "p_dhs",
             "p_dc0", "p_sync", "H", "P", "s_do_d", "s_do_t", "s_do_b") if cfg.resident else ()
    return KernelSpec(
        kernel=backward_kernel,
        signature={
            "p_dout": f"*{tdt}", "p_dhn": f"*{tdt}", "p_dcn": f"*{tdt}", "p_w": f"*{tdt}",
            "p_wr": f"*{tdt}", "p_bs": "*i32", "p_gates": f"*{sdt}", "p_cs": f"*{sdt}",
            "p_c0": f"*{tdt}", "p_dgates": "*fp32", "p_dhs": "*fp32", "p_dc0": "*fp32", "p_sync": "*i32",
            "T": "i32", "B": "i32", "H": "i32", "P": "i32", "s_do_d": "i32", "s_do_t": "i32",
            "s_do_b": "i32", "NUM_PROGRAMS": "i32", "reverse": "i32",
            **{k: "constexpr" for k in consts},
        },
        constexprs=consts,
        num_warps=cfg.backward_warps,
        label=f"persistent bwd {tdt} {tiling} bwd-BK{consts['BLOCK_K']}" + (f" {prec}" if prec else ""),
        divisible_by_16=div16,
    )


def _rows_spec(dtype: torch.dtype, cfg: PersistentConfig) -> KernelSpec:
    """The row-split backward's spec (``backward_rows_kernel``): bf16 runs 16-bit operands,
    fp16 TF32 up to K = 512 and 16-bit past it, fp32 TF32 (fp32 IEEE never takes it,
    ``row_split_backward_config``)."""
    tdt = TL_DTYPES[dtype]
    sdt = TL_DTYPES[saved_dtype(dtype, _V.saved_in_storage_dtype, _V.saved_bf16)]
    low_dot = uses_low_dot(dtype, cfg)
    consts = dict(USE_BARRIER=cfg.use_barrier, BLOCK_H=cfg.BLOCK_H, BLOCK_B=cfg.BLOCK_B, BLOCK_K=cfg.BLOCK_K,
                  BLOCK_N=cfg.NP, LOW_DOT=low_dot, DOT_PRECISION="ieee" if low_dot else "tf32",
                  PER_THREAD_POLL=_V.per_thread_poll, **rows_switches(cfg, _V))
    return KernelSpec(
        kernel=backward_rows_kernel,
        signature={
            "p_dout": f"*{tdt}", "p_dhn": f"*{tdt}", "p_w": f"*{tdt}", "p_bs": "*i32", "p_gates": f"*{sdt}",
            "p_cs": f"*{sdt}", "p_c0": f"*{tdt}", "p_dgates": "*fp32", "p_dc0": "*fp32", "p_part": "*fp32",
            "p_sync": "*i32", "T": "i32", "B": "i32", "H": "i32", "S0": "i32", "S1": "i32",
            "s_do_d": "i32", "s_do_t": "i32", "s_do_b": "i32", "NUM_PROGRAMS": "i32", "reverse": "i32",
            "N_TILES": "i32", **{k: "constexpr" for k in consts},
        },
        constexprs=consts,
        num_warps=cfg.backward_warps,
        label=(f"persistent bwd-rows {tdt} BH{cfg.BLOCK_H} BB{cfg.BLOCK_B} BK{cfg.BLOCK_K} NP<={cfg.NP}"
               f"{' barrier' if cfg.use_barrier else ''}{' batch-loop' if cfg.batch_loop else ''}"),
        divisible_by_16=("p_dout", "p_dhn", "p_w", "p_bs", "p_gates", "p_cs", "p_c0", "p_dgates", "p_dc0", "p_part",
                         "p_sync", "H", "s_do_d", "s_do_t", "s_do_b"),
    )
