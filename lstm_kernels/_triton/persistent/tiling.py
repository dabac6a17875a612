"""Tilings of the persistent kernels: which block sizes, warps and grid a launch takes, and
whether it fits on the chip at all.

The rules are tables (warps per tile, K chunks, resident limits) read by small functions.
Each entry is what the AOT check (``python -m lstm_kernels.aot``, sm_80 and sm_90) finds
spill-free for every dtype, flag and precision the launchers compile the tile with; the
neighbouring choices spill or leave registers idle. tests/test_aot.py pins them:
test_persistent_sweep_reaches_every_tiling_the_dispatch_can_send checks the AOT sweep
reaches every tiling these functions return, test_kernel_specs_compile_for_sm80_and_sm90
that each compiles without spills; tests/test_triton_tiers.py
(test_persistent_gpu_tilings_use_measured_warps, test_persistent_fp32_ieee_takes_narrow_streamed_tilings,
test_resident_tilings_fit_shared_memory_and_the_chip) pins the tables' use.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import torch
import triton

from ..._base import triton_interpreting
from ..common.precision import fp32_ieee
from ..common.tiles import block_b, pow2, step_warps
from ..common.variants import Variants
from ..common.variants import current as current_variants


# Widest hidden block one program owns; 4 fp32 accumulators of BLOCK_H x BLOCK_B stay in registers.
MAX_BLOCK_H = 64


@dataclass(frozen=True)
class PersistentConfig:
    """Tiling of one persistent launch: NP programs per batch tile, NM batch tiles."""

    BLOCK_H: int
    BLOCK_P: int
    BLOCK_B: int
    BLOCK_K: int
    NP: int
    NM: int
    num_warps: int  # of the forward kernel
    # Grid barrier between steps; only a single program per batch tile may go without it
    # (tests also switch it off for single-step launches, which need no exchange).
    barrier: Optional[bool] = None
    bwd_warps: Optional[int] = None  # of the backward kernel; None: num_warps
    # Forward: the program's W_hh slice is loaded once into shared memory before the time
    # loop (BLOCK_K covers all of P) instead of streamed in BLOCK_K chunks every step.
    resident: bool = False
    # Resident forward whose NP x NM grid would not be resident at once: NP programs per
    # direction, each running every batch tile per step (``forward_tiles_kernel``).
    batch_loop: bool = False
    # Backward: the row-split resident tiling (``row_split_backward_config``, run by
    # ``backward_rows_kernel``): BLOCK_H units' W_hh rows held, shares of dh exchanged.
    row_split: bool = False

    @property
    def grid_m(self) -> int:
        return 1 if self.batch_loop else self.NM

    @property
    def use_barrier(self) -> bool:
        return self.NP > 1 if self.barrier is None else self.barrier

    @property
    def backward_warps(self) -> int:
        return self.num_warps if self.bwd_warps is None else self.bwd_warps


# Warps per (BLOCK_H, BLOCK_B) tile of the GPU tilings, forward and backward: with fewer warps
# ptxas spills at 255 registers, with more it caps the registers (64 or 128) and spills a few
# loop-invariant values, so each tile has its own spill-free count.
FWD_WARPS = {(16, 16): 8, (16, 32): 8, (16, 64): 16, (32, 16): 4, (32, 32): 8, (64, 16): 8}
BWD_WARPS = {(16, 16): 4, (16, 32): 4, (16, 64): 16, (32, 16): 8, (32, 32): 8, (64, 16): 8}
# The backward with a projection, where BWD_WARPS spills: (BLOCK_H, BLOCK_P, BLOCK_B, barrier)
# -> warps, None matching any value. 32 x 32 with BLOCK_P = BLOCK_H (P > H / 2) spills at 8
# only with the barrier (at 16 the barrier-free 16-bit one spills instead); 64 x 16 with
# BLOCK_P = 64 at 8 (at 16 the BLOCK_P = 16 one would).
PROJ_BWD_WARPS = {(16, None, 32, None): 8, (32, 32, 32, True): 16, (64, 64, 16, None): 16}
# fp32 with IEEE dots (``fp32_ieee``): the FMA dots hold both operand tiles in registers, so
# at the tables' 8 and 16 warps ptxas caps the registers and spills; 4 warps are spill-free
# on the <= 512-element tiles ``_tile_b`` gives them, but for the 16 x 16 forward with a
# projection: (BLOCK_H, BLOCK_B, has_proj) -> forward warps, else IEEE_WARPS.
IEEE_WARPS = 4
IEEE_FWD_WARPS = {(16, 16, True): 8}


def _match(table: dict, key: tuple, default):
    """The value of the first entry of ``table`` whose key equals ``key`` where not None."""
    for pattern, value in table.items():
        if all(p is None or p == k for p, k in zip(pattern, key)):
            return value
    return default


def _warps(BH: int, BP: int, BB: int, has_proj: bool, barrier: bool = False,
           ieee: bool = False) -> tuple[int, int]:
    """(forward, backward) warps of a BH x BB tile; tiles outside the tables (interpreter) use step_warps."""
    if ieee:
        return IEEE_FWD_WARPS.get((BH, BB, has_proj), IEEE_WARPS), IEEE_WARPS
    default = step_warps(max(BH, BP), BB)
    fwd = FWD_WARPS.get((BH, BB), default)
    bwd = BWD_WARPS.get((BH, BB), default)
    if has_proj:
        bwd = _match(PROJ_BWD_WARPS, (BH, BP, BB, barrier), bwd)
    return fwd, bwd


# Most elements of a BLOCK_H x BLOCK_B tile, whose cell state and four gate accumulators live
# in registers for the whole time loop: past 1024 they spill; fp32 IEEE dots (``fp32_ieee``)
# hold their operand tiles in registers too and spill past 512.
TILE_ELEMS = {False: 1024, True: 512}  # ieee -> elements
# Fixed batch tiles of fp32 with a projection: (BLOCK_H, ieee) -> BLOCK_B, None matching any
# BLOCK_H. With IEEE dots even 16 x 32 and 32 x 16 spill at 4 warps (8 spill more), so those
# run 16 x 16 tiles; with TF32 the 32 x 16 forward spills and 32 x 32 does not. Batches of
# <= 16 rows run a wider tile with masked rows, still one batch tile, so the grid is the same.
FP32_PROJ_TILE_B = {(None, True): 16, (32, False): 32}


def _tile_b(B: int, BH: int, fp32_proj: bool = False, ieee: bool = False) -> int:
    if fp32_proj:
        fixed = _match(FP32_PROJ_TILE_B, (BH, ieee), None)
        if fixed is not None:
            return fixed
    return max(16, min(block_b(B), TILE_ELEMS[ieee] // BH))


# K chunk of the streamed forward's matmuls, and the 16-bit tiles without a projection that
# take a wider one: (BLOCK_H, BLOCK_B) -> BLOCK_K. The 32 x 16 forward with the barrier spills
# with SAVE at 16 and nothing at 32; fp32 keeps 16 (at 32 its forward without the barrier
# spills). The backward streams chunks of 32 there either way (``backward_block_k``).
STREAMED_BLOCK_K = 16
WIDE_K_TILES = {(32, 16): 32}
# fp32 IEEE: the widest hidden block, by has_proj (``_config_cached``).
IEEE_MAX_BLOCK_H = {False: 32, True: 16}

# Streamed backward tiles that keep the dh matmul's K chunks at 16 (wider ones spill there):
# (BLOCK_H, BLOCK_B, barrier) -> True, None matching any value. 32 x 32 only without the
# barrier (H <= 32).
NARROW_BWD_K_TILES = {(16, 16, None): True, (16, 64, None): True, (32, 32, False): True}
WIDE_BWD_BLOCK_K = 32


# Resident forward tilings (sizes divisible by 16, as the JIT specializes them): the slice is
# two [2*BLOCK_H, P] operands in shared memory (one [4*BLOCK_H, P] operand for BLOCK_H = 16),
# and operands of >= 64 rows let Hopper's wgmma read them from there. Spill-free at 8 warps
# with BLOCK_H * P <= 16384 (16-bit) or 8192 (fp32) elements and the batch tile below (wider
# tiles spill when the gates are saved); that is 128 KB of weights, plus the [P, BLOCK_B] h
# operand, inside the 227 KB a block may have.
_RESIDENT_ELEMS = {2: 16384, 4: 8192}
_RESIDENT_MIN_BH = 16
_RESIDENT_MAX_BB = {16: 16, 32: 16, 64: 32, 128: 16}  # BLOCK_H -> widest batch tile
_RESIDENT_WARPS = 8


def _resident_config(B: int, H: int, P: int, has_proj: bool, dtype: torch.dtype, n_sm: Optional[int],
                     interpreting: bool, directions: int,
                     batch_loop_allowed: bool = True) -> Optional[PersistentConfig]:
    """The resident tiling for this shape, or None when its slice cannot stay on-chip.

    ``batch_loop_allowed``: a grid too large to be resident may run as a batch-tile loop."""
    PK = pow2(P)
    if interpreting:  # one program per batch tile; any size (nothing is on-chip there)
        BH, BB = pow2(H), block_b(B)
        NM = triton.cdiv(B, BB)
        BP = pow2(P) if has_proj else BH
        fwd, _ = _warps(BH, BP, BB, has_proj)
        return PersistentConfig(BH, BP, BB, PK, 1, NM, fwd, resident=True)
    elems = _RESIDENT_ELEMS.get(torch.tensor([], dtype=dtype).element_size())
    # Sizes not divisible by 16 compile to scalar loads whose address tiles spill.
    if elems is None or has_proj or H % 16:
        return None
    BH = min(elems // PK, 128, pow2(H))
    if BH < _RESIDENT_MIN_BH:
        return None
    BB = min(block_b(B), _RESIDENT_MAX_BB[BH])
    NM = triton.cdiv(B, BB)
    NP = triton.cdiv(H, BH)
    batch_loop = False
    if NP > 1 and n_sm is not None and NP * NM * directions > n_sm:
        # The barrier needs every program resident at once: loop over the batch tiles instead.
        if not batch_loop_allowed or NP * directions > n_sm:
            return None
        batch_loop = True
    return PersistentConfig(BH, BH, BB, PK, NP, NM, _RESIDENT_WARPS, resident=True, batch_loop=batch_loop)


# Resident backward tilings: each program owns BLOCK_P <= 64 columns of h and holds
# W_hh[:, owned]^T for all four gates, [BLOCK_P, 4*H], in shared memory (64 rows: Hopper's
# wgmma reads it in place), with the step's gate gradients as the [4*H, BLOCK_B] operand.
# Sized for sm_90 (wgmma; 227 KB per block): on sm_80 the operands would be loaded into
# registers each step and spill, so older GPUs keep the streamed backward. A batch tile of
# 32 only while a column of the gate-gradient operand is <= 1 KB (wider ones spill).
_RESIDENT_BWD_SMEM = 200 * 1024
_RESIDENT_BWD_WIDE_BB_BYTES = 1024
_RESIDENT_BWD_MIN_MAJOR = 9


def uses_low_dot(dtype: torch.dtype, cfg: Optional[PersistentConfig] = None) -> bool:
    """Whether the resident backward's dot (tiling ``cfg``) takes 16-bit operands: bf16
    always (see below); fp16 only in row-split tilings whose TF32 slice would not fit
    (``rows_low_dot``)."""
    if dtype == torch.bfloat16:
        return True
    return cfg is not None and cfg.row_split and rows_low_dot(dtype, cfg.BLOCK_K)


# fp16 row-split slices with K past this take fp16 operands, the gate gradients rounded to
# fp16 for the dot: in TF32 (4 bytes) even 16-unit slices would be over _ROWS_BWD_SMEM.
# cuDNN's fp16 backward feeds its GEMMs fp16 gate gradients as well, so the range is the
# one fp16 training already has (loss scaling backs off on an overflow).
_ROWS_BWD_FP16_TF32_MAX_K = 512


def rows_low_dot(dtype: torch.dtype, HK: int) -> bool:
    """Whether a row-split slice of K = ``HK`` takes 16-bit operands in ``dtype``."""
    return dtype == torch.bfloat16 or (dtype == torch.float16 and HK > _ROWS_BWD_FP16_TF32_MAX_K)


def resident_backward_config(B: int, H: int, P: int, has_proj: bool, dtype: torch.dtype,
                              n_sm: Optional[int], interpreting: bool, directions: int,
                              major: Optional[int] = None) -> Optional[PersistentConfig]:
    """The resident backward tiling for this shape, or None when the slice cannot stay on-chip.

    ``major`` is the GPU's compute capability major version (None: not known, as under the
    interpreter)."""
    if has_proj:
        return None
    HK = pow2(H)
    if interpreting:
        BB = block_b(B)
        return PersistentConfig(HK, HK, BB, HK, 1, triton.cdiv(B, BB), step_warps(HK, BB), resident=True)
    if H % 16 or major is None or major < _RESIDENT_BWD_MIN_MAJOR:
        return None
    # The dot's operand width: bf16 keeps its 16 bits (the gate gradients cast to bf16 keep
    # fp32's range); fp16 would overflow on large gradients (loss scaling), so fp16 and fp32
    # run it on fp32 operands (TF32).
    size = 2 if uses_low_dot(dtype) else 4
    if dtype == torch.float16 and HK > 64:
        return None  # fp16 slices upcast while loading spill from H=128 (fp32 operands, above)
    BP = min(64, HK)
    BB = min(block_b(B), 32 if 4 * HK * size <= _RESIDENT_BWD_WIDE_BB_BYTES else 16)
    # The weights in their dtype; the gate-gradient operand in the same width.
    if (BP + BB) * 4 * HK * size > _RESIDENT_BWD_SMEM:
        return None
    NP, NM = triton.cdiv(H, BP), triton.cdiv(B, BB)
    if NP > 1 and n_sm is not None and NP * NM * directions > n_sm:
        return None
    return PersistentConfig(BP, BP, BB, HK, NP, NM, _RESIDENT_WARPS, resident=True)


# Row-split resident backward tilings, for H too large for the column slice above: each
# program holds the forward's slice, W_hh's rows of its BLOCK_H hidden units for all four
# gates, as four [P, BLOCK_H] operands (P >= 128 rows: wgmma reads them in place, split over
# the 8 warps' two warpgroups). It computes its units' gate gradients from its own dh and
# the saved state, then its share of the next step's dh for every column,
# [P, BLOCK_B] = W_hh[rows, :]^T @ dgates[rows]^T; after the barrier each program sums the NP
# shares of its own columns, in program order (deterministic). The slice is kept within
# 128 KB in the dot's operand width (bf16 16-bit, fp16/fp32 TF32 as above, fp16 16-bit past
# H = 512 where TF32 would not fit, ``rows_low_dot``), leaving room
# for the gate-gradient operands and the share's store; the share accumulator and the
# [NP, BLOCK_H, BLOCK_B] sum stay within 16 K fp32 elements (64 registers a thread at 8
# warps). fp32 IEEE dots would hold the slice in registers: those keep the streamed backward.
_ROWS_BWD_SMEM = 128 * 1024
_ROWS_BWD_MAX_ELEMS = 16384
# The owned units' four gate-gradient tiles, BLOCK_H x BLOCK_B: 64 x 64 spills 64-150 B and
# 32 x 64 spills in the batch loop (sm_90, Triton 3.9); the batch loop, which holds its
# loop's pointers and the slice's addresses besides, runs 16-row tiles (32 x 32 and 16 x 32
# spill 16 B there).
_ROWS_BWD_MAX_TILE = 1024
_ROWS_BWD_LOOP_BB = 16
_ROWS_BWD_MIN_K = 128
_ROWS_BWD_MIN_BH = 16
_ROWS_BWD_MAX_BH = 64


def row_split_backward_config(B: int, H: int, dtype: torch.dtype, n_sm: Optional[int], directions: int,
                              major: Optional[int], ieee: bool = False,
                              batch_loop_allowed: bool = True) -> Optional[PersistentConfig]:
    """The row-split resident backward tiling for this shape (no projection), or None. A grid
    too large to be resident at once runs NP programs per direction that loop over the batch
    tiles each step (``batch_loop_allowed``; the "no-batch-loop" variant switches it off)."""
    HK = pow2(H)
    low = rows_low_dot(dtype, HK)
    if H % 16 or major is None or major < _RESIDENT_BWD_MIN_MAJOR or (ieee and not low):
        return None
    if HK < _ROWS_BWD_MIN_K:
        return None
    size = 2 if low else 4
    BH = min(_ROWS_BWD_MAX_BH, 1 << (_ROWS_BWD_SMEM // (4 * HK * size)).bit_length() - 1)
    if BH < _ROWS_BWD_MIN_BH:
        return None
    NP = triton.cdiv(H, BH)
    BB = min(block_b(B), _ROWS_BWD_MAX_ELEMS // HK, _ROWS_BWD_MAX_ELEMS // (pow2(NP, 1) * BH),
             _ROWS_BWD_MAX_TILE // BH)
    if BB < 16:
        return None
    NM = triton.cdiv(B, BB)
    batch_loop = False
    if n_sm is not None and NP * NM * directions > n_sm:
        if not batch_loop_allowed or NP * directions > n_sm:
            return None
        batch_loop = True
        BB = _ROWS_BWD_LOOP_BB
        NM = triton.cdiv(B, BB)
    return PersistentConfig(BH, BH, BB, HK, NP, NM, _RESIDENT_WARPS, resident=True, batch_loop=batch_loop,
                            row_split=True)


def backward_config(B: int, H: int, P: int, has_proj: bool, dtype: torch.dtype, n_sm: Optional[int],
                    interpreting: Optional[bool] = None, directions: int = 1,
                    major: Optional[int] = None, precision: Optional[str] = None,
                    variants: Optional[Variants] = None) -> Optional[PersistentConfig]:
    """The backward kernel's tiling: resident where the slice fits (sm_90 and later; the column
    slice, else the row-split one), else the streamed one. ``precision``: the backward's
    DOT_PRECISION (see ``persistent_config``); ``variants``: the switches (None:
    ``variants.current()``)."""
    interpreting = triton_interpreting() if interpreting is None else interpreting
    variants = current_variants() if variants is None else variants
    if variants.resident_backward:
        cfg = resident_backward_config(B, H, P, has_proj, dtype, n_sm, interpreting, directions, major)
        if cfg is not None:
            return cfg
        if variants.row_split_backward and not has_proj and not interpreting:
            cfg = row_split_backward_config(B, H, dtype, n_sm, directions, major,
                                            fp32_ieee(dtype, precision, interpreting), variants.batch_loop)
            if cfg is not None:
                return cfg
    return persistent_config(B, H, P, has_proj, dtype, n_sm, interpreting=interpreting, directions=directions,
                             resident=False, precision=precision, variants=variants)


def persistent_config(B: int, H: int, P: int, has_proj: bool, dtype: torch.dtype, n_sm: Optional[int],
                      interpreting: Optional[bool] = None, directions: int = 1,
                      resident: bool = True, precision: Optional[str] = None,
                      variants: Optional[Variants] = None) -> Optional[PersistentConfig]:
    """The tiling for this shape, or None when the persistent kernel cannot run it.

    With ``resident`` (the forward kernel), a tiling that holds the W_hh slice in shared
    memory for the whole launch is preferred where one fits (``_resident_config``); the
    backward kernel always streams its weights (``resident=False``).

    ``n_sm`` is the number of SMs (None: unbounded). Under the interpreter there is always
    exactly one program per batch tile (programs run one after another: no barrier possible).
    On a GPU, H <= 64 also gets one program per batch tile (no barrier, so any grid size);
    larger H is split into the most hidden blocks of 16, 32 or 64 units for which all
    NP x NM x ``directions`` programs of the launch can be resident at once (fp32 with a
    projection takes blocks of 16 with a 64-row batch tile whatever B is, and blocks of 32,
    at any H, with a 32-row one).

    ``precision`` is the kernel's DOT_PRECISION ("tf32" or "ieee"; None: the one
    ``dot_settings`` picks now); only fp32 IEEE changes the tiling (``fp32_ieee``).
    """
    interpreting = triton_interpreting() if interpreting is None else interpreting
    variants = current_variants() if variants is None else variants
    # Cached: every forward call asks several times, and its host time is on the critical
    # path of short sequences.
    return _config_cached(B, H, P, has_proj, dtype, n_sm, interpreting, directions,
                          resident and variants.resident_forward, variants.batch_loop,
                          fp32_ieee(dtype, precision, interpreting))


@functools.lru_cache(maxsize=4096)
def _config_cached(B: int, H: int, P: int, has_proj: bool, dtype: torch.dtype, n_sm: Optional[int],
                   interpreting: bool, directions: int, resident: bool,
                   batch_loop_allowed: bool, ieee: bool = False) -> Optional[PersistentConfig]:
    if resident and not ieee:
        # fp32 IEEE dots run on the FMA units with the whole [BLOCK_B, P] x [P, BLOCK_H] K range
        # of the resident dot in registers, which spills kilobytes at every warp count: they
        # stream in K chunks instead.
        cfg = _resident_config(B, H, P, has_proj, dtype, n_sm, interpreting, directions, batch_loop_allowed)
        if cfg is not None:
            return cfg
    # K chunk of every streamed matmul: 16 keeps the operand tiles small enough that ptxas
    # spills nothing (32 and 64 spill), except on the tiles of WIDE_K_TILES.
    BK = STREAMED_BLOCK_K
    # fp32 IEEE: 64-unit blocks spill at every warp count, so hidden blocks stop at 32 units;
    # with a projection at 16 (``_tile_b``).
    max_bh = IEEE_MAX_BLOCK_H[has_proj] if ieee else MAX_BLOCK_H
    if interpreting:
        BH, BP, BB = pow2(H), (pow2(P) if has_proj else pow2(H)), block_b(B)
        NM = triton.cdiv(B, BB)
    elif H <= max_bh and P <= max_bh:
        BH, BP = pow2(H), (pow2(P) if has_proj else pow2(H))
        BB = _tile_b(B, BH, has_proj and dtype == torch.float32, ieee)
        NM = triton.cdiv(B, BB)
    else:
        for BH in (bh for bh in (16, 32, MAX_BLOCK_H) if bh <= max_bh):
            BB = _tile_b(B, BH, has_proj and dtype == torch.float32, ieee)
            if BH == 16 and has_proj and dtype == torch.float32 and not ieee:
                # With the barrier, fp32 with a projection spills in the forward of 16 x 16
                # (SAVE) and the backward of 16 x 32 at every warp count; K chunks of 32 only
                # move the spill to other 16-unit tiles. The 16 x 64 tile does not: batches of
                # <= 32 rows run it with masked rows, still one batch tile, so the grid is no
                # larger than with 16 x 16 or 16 x 32 (32-unit blocks take their widest batch
                # tile likewise, in ``_tile_b``).
                BB = 64
            NM = triton.cdiv(B, BB)
            slots = n_sm // (NM * directions) if n_sm is not None else 1 << 30
            nh = triton.cdiv(H, BH)
            BP = pow2(triton.cdiv(P, nh)) if has_proj else BH
            if max(nh, triton.cdiv(P, BP)) <= slots and BP <= max_bh:
                break
        else:
            return None  # the programs could not all be resident: the barrier would deadlock
    if not interpreting and not has_proj and dtype != torch.float32:
        BK = WIDE_K_TILES.get((BH, BB), BK)
    NP = max(triton.cdiv(H, BH), triton.cdiv(P, BP))
    fwd_warps, bwd_warps = _warps(BH, BP, BB, has_proj, barrier=NP > 1, ieee=ieee)
    return PersistentConfig(BH, BP, BB, BK, NP, NM, fwd_warps, bwd_warps=bwd_warps)


def capability_major(device: torch.device) -> Optional[int]:
    """The GPU's compute capability major version; None off CUDA (or without a CUDA runtime)."""
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(device)[0]


def sm_count(device: torch.device) -> Optional[int]:
    if device.type != "cuda":
        return None
    return torch.cuda.get_device_properties(device).multi_processor_count


def fits(B: int, H: int, P: int, has_proj: bool, dtype: torch.dtype, device: torch.device,
         directions: int = 1, interpreting: Optional[bool] = None,
         variants: Optional[Variants] = None) -> bool:
    """Whether persistent launches (forward and backward) can run this shape with ``directions``
    directions on ``device``."""
    n_sm = sm_count(device)
    variants = current_variants() if variants is None else variants
    fwd = persistent_config(B, H, P, has_proj, dtype, n_sm, interpreting=interpreting, directions=directions,
                            variants=variants)
    bwd = backward_config(B, H, P, has_proj, dtype, n_sm, interpreting=interpreting, directions=directions,
                          major=capability_major(device), variants=variants)
    return fwd is not None and bwd is not None


def backward_block_k(cfg: PersistentConfig, has_proj: bool, ieee: bool = False, wide_k: bool = True) -> int:
    """K chunk of the backward's dh matmul.

    32 without a projection: half the dependent chunk loads per step of the 16 the forward
    streams with (the step is latency-bound), spill-free but on NARROW_BWD_K_TILES. With a
    projection, with fp32 IEEE dots (``ieee``, ``fp32_ieee``; 32 spills) and without
    ``wide_k`` (the "narrow-bwd-k" variant) it stays 16. A resident tiling takes all of H.
    """
    if cfg.resident:
        return cfg.BLOCK_K
    if has_proj or ieee or not wide_k \
            or _match(NARROW_BWD_K_TILES, (cfg.BLOCK_H, cfg.BLOCK_B, cfg.use_barrier), False):
        return STREAMED_BLOCK_K  # not cfg.BLOCK_K: the forward's chunk is wider on WIDE_K_TILES
    return WIDE_BWD_BLOCK_K


def h_on_chip(cfg: PersistentConfig, has_proj: bool, allowed: bool = True) -> bool:
    """Whether the forward keeps h in registers between steps: a resident slice owned by one
    program per batch tile (nothing to exchange with other programs) and no projection."""
    return (cfg.resident and cfg.NP == 1 and not cfg.use_barrier and not has_proj and not cfg.batch_loop
            and allowed)


def stores_final_state_once(cfg: PersistentConfig, has_proj: bool, allowed: bool = True) -> bool:
    """Whether c_n (forward) and d_c0 (backward) are stored at each row's last step only,
    not every step: the resident tilings without a projection. The streamed and projection
    tilings sit at their register cap (FWD_WARPS, BWD_WARPS, PROJ_BWD_WARPS), and the next
    step's batch size and the narrower store masks made five of them spill 8-24 B on sm_90
    under Triton 3.9 and four on sm_80 under 3.6 (tests/test_aot.py)."""
    return allowed and cfg.resident and not has_proj


def prefetches_gx(cfg: PersistentConfig, allowed: bool = True) -> bool:
    """Whether the forward loads the next step's gx before its barrier: the resident tilings
    only. The streamed ones hold their K chunks' pointer tiles too, and the four gx tiles
    live across the barrier spill there (fp32, 8-24 B at 16x32 and 32x32; tests/test_aot.py)."""
    return cfg.resident and allowed


# The resident backward's saved-state prefetch (six more fp32 tiles across the barrier) fits
# the registers up to these tiles: BLOCK_P x BLOCK_B = 64 x 32 and K = 256 spill 24-88 B on
# sm_90 under Triton 3.6 (tests/test_aot.py).
SAVED_PREFETCH_MAX_TILE = 64 * 16
SAVED_PREFETCH_MAX_K = 128


def prefetches_saved(cfg: PersistentConfig, allowed: bool = True) -> bool:
    """Whether the backward loads the next step's saved gates and cell states before its
    barrier: resident tilings up to the SAVED_PREFETCH bounds. The streamed tilings, near
    255 registers already (BWD_WARPS), spill with it (sm_80: 64x16 at 8 warps, 32x16 with
    IEEE dots, 64x16 with a projection). The row-split backward's K is not a register
    tile (its slice lives in shared memory), so only the tile bounds it."""
    return (allowed and cfg.resident and cfg.BLOCK_P * cfg.BLOCK_B <= SAVED_PREFETCH_MAX_TILE
            and (cfg.BLOCK_K <= SAVED_PREFETCH_MAX_K or cfg.row_split))


def backward_polls_per_thread(has_proj: bool, allowed: bool = True) -> bool:
    """Whether the backward's barrier polls with every thread's acquire load (common/barrier.py):
    not with a projection, whose 16x16 tiling at 4 warps spills 16 B with it on sm_90 under
    Triton 3.6 (tests/test_aot.py); the forward polls per thread everywhere."""
    return allowed and not has_proj


def rows_switches(cfg: PersistentConfig, variants: Variants, stepwise: bool = False) -> dict:
    """The row-split backward's constexpr switches for tiling ``cfg``, as the launcher sends
    them and the AOT check compiles them. With BATCH_LOOP (several batch tiles per program,
    or a ``stepwise`` launch, ``rows_steps``) the cell-state gradient lives in d_c0 between
    steps, so it is stored every step and nothing is carried across the barrier."""
    batch_loop = cfg.batch_loop or stepwise
    return dict(BATCH_LOOP=batch_loop,
                PREFETCH_SAVED=prefetches_saved(cfg, variants.prefetch_saved) and not batch_loop,
                DC0_ONCE=stores_final_state_once(cfg, False, variants.final_state_once) and not batch_loop)


def rows_steps(cfg: PersistentConfig, T: int, interpreting: Optional[bool] = None) -> list[tuple[int, int]]:
    """The step ranges of the row-split backward's launches: one launch of all T steps, but
    under the interpreter a barrier grid runs one launch per step. The interpreter runs
    programs one after another, so a spin barrier would deadlock; the launch boundary orders
    each step's shares before the next step reads them, which lets the tests run several
    programs (tests/test_triton_tiers.py, test_row_split_backward_matches_nn_lstm)."""
    interpreting = triton_interpreting() if interpreting is None else interpreting
    if interpreting and cfg.use_barrier:
        return [(s, s + 1) for s in range(T)]
    return [(0, T)]


def cooperative_launch(cfg: PersistentConfig, interpreting: Optional[bool] = None) -> dict:
    """Launch options: a barrier grid goes out as a cooperative launch on a GPU.

    The grid barrier deadlocks unless every program is resident at once; ``persistent_config``
    sizes the grid for that, and a cooperative launch makes the driver refuse (with an error,
    not a hang) a grid that cannot be co-resident after all. The interpreter has no such launch.
    """
    interpreting = triton_interpreting() if interpreting is None else interpreting
    return {"launch_cooperative_grid": True} if cfg.use_barrier and not interpreting else {}


def does_not_fit(B, H, P, dtype, device) -> RuntimeError:
    return RuntimeError(
        f"triton tier 'persistent' cannot run B={B}, H={H}, P={P} ({dtype}) on {device}: its weight "
        "slices or programs do not fit on-chip; use the 'fused_step' tier (the automatic choice does)"
    )


def config_for(B, H, P, has_proj, dtype, device, directions=1, resident=True, precision=None,
               variants: Optional[Variants] = None, n_sm: Optional[int] = None,
               interpreting: Optional[bool] = None) -> PersistentConfig:
    """``persistent_config`` on ``device`` (``n_sm`` None: its SM count), or the error that the
    shape does not fit."""
    n_sm = sm_count(device) if n_sm is None else n_sm
    cfg = persistent_config(B, H, P, has_proj, dtype, n_sm, interpreting=interpreting, directions=directions,
                            resident=resident, precision=precision, variants=variants)
    if cfg is None:
        raise does_not_fit(B, H, P, dtype, device)
    return cfg
