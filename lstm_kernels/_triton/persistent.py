"""Tier "persistent": one launch covers all time steps of a layer (both directions with D = 2).

Dimensions: T seq len, B batch, H hidden, P = proj_size or H, G = 4H (gates i, f, g, o);
D directions, NP programs per batch tile and direction, NM batch tiles.

Grid (NP, NM, D). Program (n, m, d) owns hidden units ``n*BLOCK_H ..`` (all four gates) and,
with a projection, output columns ``n*BLOCK_P ..``; it serves batch rows ``m*BLOCK_B ..`` of
direction d (every tensor carries a leading [D] dimension). Per step it computes the transposed
products:

    forward   gates_g^T [BLOCK_H, BLOCK_B] = W_hh[g*H + hidden block, :] @ h_prev^T
              (+ out^T [BLOCK_P, BLOCK_B] = W_hr[P block, :] @ h^T)
    backward  dh^T [BLOCK_P, BLOCK_B]      = sum_g W_hh[g*H:(g+1)*H, P block]^T @ dgates_g[t_next]^T
              (+ dhr^T [BLOCK_H, BLOCK_B]  = W_hr[:, hidden block]^T @ dh^T)

Where it fits (``_resident_config``, ``_resident_backward_config``) the program's weight slice
is loaded once into shared memory as operands of >= 64 rows, which Hopper's wgmma reads in
place, and each step is one full-depth dot ("resident"); a resident forward whose grid would
not be resident at once runs as ``_fwd_tiles_kernel``, NP programs per direction looping over
the batch tiles. Otherwise the slice is streamed every step in BLOCK_K chunks (served from
L1/L2 after the first step). The cell state (and in the backward its gradient) of the owned
block stays in registers for all T steps.

Every read of what other programs wrote (h, the unprojected h, the gate gradients, the
projected dh) bypasses L1 (``cache_modifier=".cg"``): L1 is not coherent between SMs, and a
line read one step earlier could hold a neighbouring row (rows whose byte length is not a
multiple of 128 share lines) from before its owner wrote it.

The hidden state is exchanged through global memory: each step reads the full ``h[t_prev]``
(``out[t_prev]``, or ``h0`` for rows that did not run there), writes its own block of ``h[t]``,
then the NP programs of a (batch tile, direction) meet at a grid barrier: one int32 counter each,
zeroed per launch; barrier k of a launch waits until the counter reaches ``k * NP`` (arrive:
``atomic_add`` with acq_rel at gpu scope after a CTA barrier; wait: ``atomic_add(ptr, 0)`` with
acquire). A projection adds a second barrier per step (the projection needs all of ``h``).

With NP == 1 (one program owns every hidden unit: H <= 64 on a GPU, and always under the
interpreter, which runs programs one after another so a spin barrier would deadlock) the
grid barrier is compiled out and batch tiles run independently. A CTA barrier stays in its
place: the warps of the one program still write rows of h (and of the gate gradients) that
other warps read at the next step. Without it a warp could read a row before its writer
stored it; on an H200 that showed as a 3-20% gradient error at H=33 with a projection,
in one dtype per run, never the same one.

A barrier launch needs all of its programs resident at once, so ``persistent_config`` returns
None when they exceed the SM count; ``choose_tier`` then falls back to ``fused_step``.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Optional

import torch
import triton
import triton.language as tl

from .._base import triton_interpreting
from ..reference import compute_dtype
from .common.batches import all_rows_full, batch_sizes_list, device_batch_sizes, finish_forward
from .common.dtypes import HALF_DTYPES, TL_DTYPES
from .common.gates import activate_gates, gate_dots, store_gates
from .common.grads import stacked_weight_grads
from .common.math import tanh
from .common.precision import backward_precision, dot_settings, fp32_ieee
from .common.registration import register_tier_scans
from .common.tiles import block_b, pow2, step_warps
from .common.variants import Variants
from .common.variants import current as current_variants
from .specs import KernelSpec


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@triton.jit
def _grid_barrier(p_sync, target):
    # Every thread's stores must be issued before the one arriving atomic releases them.
    tl.debug_barrier()
    tl.atomic_add(p_sync, 1, sem="acq_rel", scope="gpu")
    seen = tl.atomic_add(p_sync, 0, sem="acquire", scope="gpu")
    while seen < target:
        seen = tl.atomic_add(p_sync, 0, sem="acquire", scope="gpu")
    tl.debug_barrier()


@triton.jit
def _load_h_prev(p_out, p_h0, t_prev, B, P, row, o_k, m_carry, m_fresh):
    """h_prev^T [len(o_k), BLOCK_B] for columns o_k: rows that ran at t_prev read out[t_prev]
    (written by other programs: past L1, see the module docstring), rows starting here h0."""
    m_k = (o_k < P)[:, None]
    b_h = tl.load(p_out + (t_prev.to(tl.int64) * B + row) * P + o_k[:, None],
                  mask=m_k & m_carry, other=0.0, cache_modifier=".cg")
    b_h += tl.load(p_h0 + row * P + o_k[:, None], mask=m_k & m_fresh, other=0.0)
    return b_h


@triton.jit
def _resident_slice(p_w, i_n, H, P, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, UPCAST_DOT: tl.constexpr):
    """Program i_n's W_hh slice as the resident operands of ``_fwd_kernel`` (see there):
    (gates i,f rows; gates g,o rows) for BLOCK_H >= 32, else all four gates in the first."""
    o_kr = tl.arange(0, BLOCK_K)
    if BLOCK_H >= 32:
        o_r = tl.arange(0, 2 * BLOCK_H)
    else:
        o_r = tl.arange(0, 4 * BLOCK_H)
    o_rj = i_n * BLOCK_H + o_r % BLOCK_H
    p_wr2 = p_w + ((o_r // BLOCK_H) * H + o_rj)[:, None].to(tl.int64) * P + o_kr[None, :]
    m_wr2 = (o_rj < H)[:, None] & (o_kr < P)[None, :]
    r_w_if = tl.load(p_wr2, mask=m_wr2, other=0.0)
    r_w_go = r_w_if
    if BLOCK_H >= 32:
        r_w_go = tl.load(p_wr2 + 2 * H * P, mask=m_wr2, other=0.0)
    if UPCAST_DOT:
        r_w_if = r_w_if.to(tl.float32)
        r_w_go = r_w_go.to(tl.float32)
    return r_w_if, r_w_go


@triton.jit
def _resident_gate_dots(r_w_if, r_w_go, b_h, BLOCK_H: tl.constexpr, BLOCK_B: tl.constexpr,
                        DOT_PRECISION: tl.constexpr):
    """The four gates' recurrent pre-activations [BLOCK_H, BLOCK_B] from the resident operands
    of ``_resident_slice`` and h_prev^T [P, BLOCK_B]."""
    if BLOCK_H >= 32:
        acc_if = tl.dot(r_w_if, b_h, input_precision=DOT_PRECISION)  # [2*BLOCK_H, BLOCK_B]
        acc_go = tl.dot(r_w_go, b_h, input_precision=DOT_PRECISION)
    else:
        acc = tl.dot(r_w_if, b_h, input_precision=DOT_PRECISION)  # [4*BLOCK_H, BLOCK_B]
        acc_if, acc_go = tl.split(tl.permute(tl.reshape(acc, (2, 2 * BLOCK_H, BLOCK_B)), (1, 2, 0)))
    acc_i, acc_f = tl.split(tl.permute(tl.reshape(acc_if, (2, BLOCK_H, BLOCK_B)), (1, 2, 0)))
    acc_g, acc_o = tl.split(tl.permute(tl.reshape(acc_go, (2, BLOCK_H, BLOCK_B)), (1, 2, 0)))
    return acc_i, acc_f, acc_g, acc_o


@triton.jit(do_not_specialize=["T", "NUM_PROGRAMS", "reverse"])
def _fwd_kernel(
    p_gx,  # [D, T, B, G] input projection + biases (strides s_gx_d, s_gx_t, s_gx_b, 1)
    p_h0,  # [D, B, P] initial h
    p_c0,  # [D, B, H] initial c
    p_w,  # [D, G, P] W_hh, contiguous
    p_wr,  # [D, P, H] W_hr, contiguous (HAS_PROJ)
    p_bs,  # [T] int32 active rows per step (device)
    p_out,  # [D, T, B, P] output, zero-filled: inactive rows stay zero
    p_hr,  # [D, T, B, H] compute dtype: unprojected h (HAS_PROJ; exchanged between programs)
    p_gates,  # [D, T, B, G] compute dtype, saved activated gates (SAVE)
    p_cs,  # [D, T, B, H] compute dtype, saved cell states (SAVE)
    p_cn,  # [D, B, H] final cell state, c0's dtype; holds c0 at launch (rows that never run keep it)
    p_sync,  # [D, NM] int32 barrier counters, zero at launch
    T, B, H, P,
    s_gx_d, s_gx_t, s_gx_b,
    NUM_PROGRAMS,  # programs per batch tile: the barrier's arrival count
    reverse,  # 1: direction 0 runs backwards in time (direction 1 always runs opposite to it)
    USE_BARRIER: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
    HAS_PROJ: tl.constexpr, SAVE: tl.constexpr, UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    RESIDENT: tl.constexpr = False,  # W_hh slice loaded once before the time loop (BLOCK_K >= P)
    H_ON_CHIP: tl.constexpr = False,  # RESIDENT, one program, no projection: h stays in registers
):
    i_n = tl.program_id(0)
    i_m = tl.program_id(1)
    i_d = tl.program_id(2)  # direction: every tensor has a leading [D] dimension
    rev = (i_d + reverse) % 2 == 1
    o_j = i_n * BLOCK_H + tl.arange(0, BLOCK_H)  # owned hidden units
    o_p = i_n * BLOCK_P + tl.arange(0, BLOCK_P)  # owned output columns (HAS_PROJ)
    o_b = i_m * BLOCK_B + tl.arange(0, BLOCK_B)  # batch rows
    m_j = o_j < H
    m_p = o_p < P
    row = o_b[None, :].to(tl.int64)
    G = 4 * H
    d64 = i_d.to(tl.int64)
    p_gx += d64 * s_gx_d
    p_h0 += d64 * B * P
    p_c0 += d64 * B * H
    p_w += d64 * G * P
    p_wr += d64 * P * H
    p_out += d64 * T * B * P
    p_hr += d64 * T * B * H
    p_gates += d64 * T * B * G
    p_cs += d64 * T * B * H
    p_cn += d64 * B * H
    p_sync_m = p_sync + i_d * tl.num_programs(1) + i_m
    p_wj = p_w + o_j[:, None].to(tl.int64) * P  # rows of gate i; gate g is g*H*P further

    m_all = m_j[:, None] & (o_b < B)[None, :]
    c = tl.load(p_c0 + row * H + o_j[:, None], mask=m_all, other=0.0).to(tl.float32)  # [BLOCK_H, BLOCK_B]

    if RESIDENT:
        # The program's whole W_hh slice, read once for all T steps. With BLOCK_H >= 32 it is two
        # operands of two gates each: row a*BLOCK_H + jj of r_w_if holds W_hh[a*H + i_n*BLOCK_H + jj, :]
        # (gates i, f), r_w_go the same for g, o; narrower blocks stack all four gates in one
        # operand. Either way an operand has >= 64 rows, so it stays in shared memory and Hopper's
        # wgmma reads it from there; a taller single operand spills its staging registers.
        o_kr = tl.arange(0, BLOCK_K)
        r_w_if, r_w_go = _resident_slice(p_w, i_n, H, P, BLOCK_H, BLOCK_K, UPCAST_DOT)

    if H_ON_CHIP:
        # The program owns every hidden unit, so the h entering a step is the h it computed
        # the step before (rounded to the storage dtype, as out holds it) or h0 for rows that
        # start there: no round trip through memory between steps.
        tl.static_assert(BLOCK_K == BLOCK_H)
        m_h0 = (o_kr < P)[:, None] & (o_b < B)[None, :]
        r_h0 = tl.load(p_h0 + row * P + o_kr[:, None], mask=m_h0, other=0.0)
        r_h = r_h0

    t_prev = tl.zeros((), dtype=tl.int32)
    bs_prev = tl.zeros((), dtype=tl.int32)
    n_sync = tl.zeros((), dtype=tl.int32)
    for s in range(T):
        t = tl.where(rev, T - 1 - s, s)
        t64 = t.to(tl.int64)
        bs = tl.load(p_bs + t)
        m_b = o_b < bs
        m_jb = m_j[:, None] & m_b[None, :]
        m_carry = (o_b < bs_prev)[None, :]
        m_fresh = (m_b & (o_b >= bs_prev))[None, :]

        # gates^T [BLOCK_H, BLOCK_B] per gate = W_hh[g*H + owned rows, :] @ h_prev^T
        acc_i = tl.zeros((BLOCK_H, BLOCK_B), dtype=tl.float32)
        acc_f = tl.zeros((BLOCK_H, BLOCK_B), dtype=tl.float32)
        acc_g = tl.zeros((BLOCK_H, BLOCK_B), dtype=tl.float32)
        acc_o = tl.zeros((BLOCK_H, BLOCK_B), dtype=tl.float32)
        if RESIDENT:
            # All of h_prev^T [P, BLOCK_B] at once, then one dot for the four gates.
            if H_ON_CHIP:
                b_h = tl.where(m_carry, r_h, r_h0)
            else:
                b_h = _load_h_prev(p_out, p_h0, t_prev, B, P, row, o_kr, m_carry, m_fresh)
            if UPCAST_DOT:
                b_h = b_h.to(tl.float32)
            acc_i, acc_f, acc_g, acc_o = _resident_gate_dots(r_w_if, r_w_go, b_h, BLOCK_H, BLOCK_B, DOT_PRECISION)
        for k0 in range(0, P if not RESIDENT else 0, BLOCK_K):
            o_k = k0 + tl.arange(0, BLOCK_K)
            m_k = o_k < P
            b_h = _load_h_prev(p_out, p_h0, t_prev, B, P, row, o_k, m_carry, m_fresh)
            m_w = m_j[:, None] & m_k[None, :]
            b_wi = tl.load(p_wj + o_k[None, :], mask=m_w, other=0.0)
            b_wf = tl.load(p_wj + H * P + o_k[None, :], mask=m_w, other=0.0)
            b_wg = tl.load(p_wj + 2 * H * P + o_k[None, :], mask=m_w, other=0.0)
            b_wo = tl.load(p_wj + 3 * H * P + o_k[None, :], mask=m_w, other=0.0)
            acc_i, acc_f, acc_g, acc_o = gate_dots(b_wi, b_wf, b_wg, b_wo, b_h, acc_i, acc_f, acc_g, acc_o,
                                                   UPCAST_DOT, DOT_PRECISION)

        p_g = p_gx + t64 * s_gx_t + row * s_gx_b + o_j[:, None]
        gi, gf, gg, go = activate_gates(p_g, H, m_jb, acc_i, acc_f, acc_g, acc_o)
        c_new = gf * c + gi * gg
        h = go * tanh(c_new)
        c = tl.where(m_b[None, :], c_new, c)
        # The final state is written as it evolves (a row's last write is its c_n): a store
        # after the loop would keep its pointer and mask tiles live across all T steps, and
        # ptxas spills those (sm_80).
        tl.store(p_cn + row * H + o_j[:, None], c_new.to(p_cn.dtype.element_ty), mask=m_jb)
        if SAVE:
            store_gates(p_gates + (t64 * B + row) * G + o_j[:, None], H, gi, gf, gg, go, m_jb)
            tl.store(p_cs + (t64 * B + row) * H + o_j[:, None], c_new.to(p_cs.dtype.element_ty), mask=m_jb)
        if HAS_PROJ:
            tl.store(p_hr + (t64 * B + row) * H + o_j[:, None], h.to(p_hr.dtype.element_ty), mask=m_jb)
            if USE_BARRIER:
                n_sync += 1
                _grid_barrier(p_sync_m, n_sync * NUM_PROGRAMS)
            else:
                tl.debug_barrier()  # one program: its warps still exchange rows through memory
            # out^T [BLOCK_P, BLOCK_B] = W_hr[owned columns, :] @ h^T, h rounded to the storage
            # dtype first as nn.LSTM does.
            acc_p = tl.zeros((BLOCK_P, BLOCK_B), dtype=tl.float32)
            for k0 in range(0, H, BLOCK_K):
                o_k = k0 + tl.arange(0, BLOCK_K)
                m_k = o_k < H
                b_hr = tl.load(p_hr + (t64 * B + row) * H + o_k[:, None], mask=m_k[:, None] & m_b[None, :],
                               other=0.0, cache_modifier=".cg").to(p_out.dtype.element_ty)
                b_wr = tl.load(p_wr + o_p[:, None].to(tl.int64) * H + o_k[None, :],
                               mask=m_p[:, None] & m_k[None, :], other=0.0)
                if UPCAST_DOT:
                    b_hr = b_hr.to(tl.float32)
                    b_wr = b_wr.to(tl.float32)
                acc_p = tl.dot(b_wr, b_hr, acc_p, input_precision=DOT_PRECISION)
            tl.store(p_out + (t64 * B + row) * P + o_p[:, None], acc_p.to(p_out.dtype.element_ty),
                     mask=m_p[:, None] & m_b[None, :])
        else:
            tl.store(p_out + (t64 * B + row) * P + o_j[:, None], h.to(p_out.dtype.element_ty), mask=m_jb)
            if H_ON_CHIP:
                r_h = h.to(p_out.dtype.element_ty)  # rows inactive here are never carried from here
        if USE_BARRIER:
            n_sync += 1
            _grid_barrier(p_sync_m, n_sync * NUM_PROGRAMS)
        else:
            tl.debug_barrier()  # one program: its warps still exchange rows through memory
        t_prev = t
        bs_prev = bs


@triton.jit(do_not_specialize=["T", "NUM_PROGRAMS", "reverse", "N_TILES"])
def _fwd_tiles_kernel(
    p_gx,  # [D, T, B, G] input projection + biases (strides s_gx_d, s_gx_t, s_gx_b, 1)
    p_h0,  # [D, B, P] initial h
    p_w,  # [D, G, P] W_hh, contiguous
    p_bs,  # [T] int32 active rows per step (device)
    p_out,  # [D, T, B, P] output, zero-filled when rows go inactive
    p_gates,  # [D, T, B, G] compute dtype, saved activated gates (SAVE)
    p_cs,  # [D, T, B, H] compute dtype, saved cell states (SAVE)
    p_cn,  # [D, B, H] final cell state, c0's dtype; holds c0 at launch (rows that never run keep it)
    p_cf,  # [D, B, H] fp32 cell state between steps; holds c0 at launch
    p_sync,  # [D] int32 barrier counters, zero at launch
    T, B, H, P,
    s_gx_d, s_gx_t, s_gx_b,
    NUM_PROGRAMS,  # programs per direction: the barrier's arrival count
    reverse,  # 1: direction 0 runs backwards in time (direction 1 always runs opposite to it)
    N_TILES,  # batch tiles of BLOCK_B rows
    BLOCK_H: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
    SAVE: tl.constexpr, UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """The resident forward for grids too large to be resident at once: grid (NP, 1, D), each
    program holds its W_hh slice (no projection) and, every step, runs its hidden block for
    every batch tile in turn, keeping the fp32 cell state in p_cf between steps."""
    i_n = tl.program_id(0)
    i_d = tl.program_id(2)
    rev = (i_d + reverse) % 2 == 1
    o_j = i_n * BLOCK_H + tl.arange(0, BLOCK_H)
    m_j = o_j < H
    o_kr = tl.arange(0, BLOCK_K)
    G = 4 * H
    d64 = i_d.to(tl.int64)
    p_gx += d64 * s_gx_d
    p_h0 += d64 * B * P
    p_w += d64 * G * P
    p_out += d64 * T * B * P
    p_gates += d64 * T * B * G
    p_cs += d64 * T * B * H
    p_cn += d64 * B * H
    p_cf += d64 * B * H
    r_w_if, r_w_go = _resident_slice(p_w, i_n, H, P, BLOCK_H, BLOCK_K, UPCAST_DOT)

    t_prev = tl.zeros((), dtype=tl.int32)
    bs_prev = tl.zeros((), dtype=tl.int32)
    for s in range(T):
        t = tl.where(rev, T - 1 - s, s)
        t64 = t.to(tl.int64)
        bs = tl.load(p_bs + t)
        for mt in range(N_TILES):
            o_b = mt * BLOCK_B + tl.arange(0, BLOCK_B)
            row = o_b[None, :].to(tl.int64)
            m_b = o_b < bs
            m_jb = m_j[:, None] & m_b[None, :]
            m_carry = (o_b < bs_prev)[None, :]
            m_fresh = (m_b & (o_b >= bs_prev))[None, :]
            c = tl.load(p_cf + row * H + o_j[:, None], mask=m_jb, other=0.0)
            b_h = _load_h_prev(p_out, p_h0, t_prev, B, P, row, o_kr, m_carry, m_fresh)
            if UPCAST_DOT:
                b_h = b_h.to(tl.float32)
            acc_i, acc_f, acc_g, acc_o = _resident_gate_dots(r_w_if, r_w_go, b_h, BLOCK_H, BLOCK_B, DOT_PRECISION)
            gi, gf, gg, go = activate_gates(p_gx + t64 * s_gx_t + row * s_gx_b + o_j[:, None], H, m_jb,
                                            acc_i, acc_f, acc_g, acc_o)
            c_new = gf * c + gi * gg
            h = go * tanh(c_new)
            tl.store(p_cf + row * H + o_j[:, None], c_new, mask=m_jb)
            tl.store(p_cn + row * H + o_j[:, None], c_new.to(p_cn.dtype.element_ty), mask=m_jb)
            if SAVE:
                store_gates(p_gates + (t64 * B + row) * G + o_j[:, None], H, gi, gf, gg, go, m_jb)
                tl.store(p_cs + (t64 * B + row) * H + o_j[:, None], c_new.to(p_cs.dtype.element_ty), mask=m_jb)
            tl.store(p_out + (t64 * B + row) * P + o_j[:, None], h.to(p_out.dtype.element_ty), mask=m_jb)
        _grid_barrier(p_sync + i_d, (s + 1) * NUM_PROGRAMS)
        t_prev = t
        bs_prev = bs


@triton.jit(do_not_specialize=["T", "NUM_PROGRAMS", "reverse"])
def _bwd_kernel(
    p_dout,  # [D, T, B, P] upstream grad of out (strides s_do_d, s_do_t, s_do_b, 1)
    p_dhn,  # [D, B, P] upstream grad of h_n
    p_dcn,  # [D, B, H] upstream grad of c_n
    p_w,  # [D, G, P] W_hh, contiguous
    p_wr,  # [D, P, H] W_hr, contiguous (HAS_PROJ)
    p_bs,  # [T] int32 active rows per step (device)
    p_gates,  # [D, T, B, G] saved activated gates
    p_cs,  # [D, T, B, H] saved cell states
    p_c0,  # [D, B, H] initial cell state
    p_dgates,  # [D, T, B, G] fp32 gate gradients, zero-filled: inactive rows stay zero
    p_dhs,  # [D, T, B, P] fp32 grad of the projected h per step (HAS_PROJ; exchanged, and for d_w_hr)
    p_dc0,  # [D, B, H] fp32 grad of c0; holds grad of c_n at launch (rows that never run keep it)
    p_sync,  # [D, NM] int32 barrier counters, zero at launch
    T, B, H, P,
    s_do_d, s_do_t, s_do_b,
    NUM_PROGRAMS,  # programs per batch tile: the barrier's arrival count
    reverse,  # 1: direction 0 runs backwards in time (direction 1 always runs opposite to it)
    USE_BARRIER: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
    HAS_PROJ: tl.constexpr, DOT_PRECISION: tl.constexpr,
    RESIDENT: tl.constexpr = False,  # W_hh^T slice of all 4H rows held for all steps (no projection)
    LOW_DOT: tl.constexpr = False,  # RESIDENT: gate gradients cast to W_hh's dtype (bf16) for the dot
):
    i_n = tl.program_id(0)
    i_m = tl.program_id(1)
    i_d = tl.program_id(2)  # direction: every tensor has a leading [D] dimension
    rev = (i_d + reverse) % 2 == 1
    o_j = i_n * BLOCK_H + tl.arange(0, BLOCK_H)  # owned hidden units
    o_p = i_n * BLOCK_P + tl.arange(0, BLOCK_P)  # owned columns of h (== o_j without projection)
    o_b = i_m * BLOCK_B + tl.arange(0, BLOCK_B)
    m_j = o_j < H
    m_p = o_p < P
    row = o_b[None, :].to(tl.int64)
    G = 4 * H
    d64 = i_d.to(tl.int64)
    p_dout += d64 * s_do_d
    p_dhn += d64 * B * P
    p_dcn += d64 * B * H
    p_w += d64 * G * P
    p_wr += d64 * P * H
    p_gates += d64 * T * B * G
    p_cs += d64 * T * B * H
    p_c0 += d64 * B * H
    p_dgates += d64 * T * B * G
    p_dhs += d64 * T * B * P
    p_dc0 += d64 * B * H
    p_sync_m = p_sync + i_d * tl.num_programs(1) + i_m

    m_all = m_j[:, None] & (o_b < B)[None, :]
    dc = tl.load(p_dcn + row * H + o_j[:, None], mask=m_all, other=0.0).to(tl.float32)
    if RESIDENT:
        # Column q = g*BLOCK_K + k of r_wt holds W_hh[g*H + k, owned column]: the whole slice
        # for the four gates as one [BLOCK_P, 4*BLOCK_K] operand, read once for all T steps.
        o_q = tl.arange(0, 4 * BLOCK_K)
        o_qk = o_q % BLOCK_K
        o_qrow = (o_q // BLOCK_K) * H + o_qk  # row of W_hh / column of the gate gradients
        m_q = o_qk < H
        r_wt = tl.load(p_w + o_qrow[None, :].to(tl.int64) * P + o_p[:, None],
                       mask=m_p[:, None] & m_q[None, :], other=0.0)
        if not LOW_DOT:
            r_wt = r_wt.to(tl.float32)

    t_next = tl.zeros((), dtype=tl.int32)
    bs_next = tl.zeros((), dtype=tl.int32)
    n_sync = tl.zeros((), dtype=tl.int32)
    for s in range(T):
        t = tl.where(rev, s, T - 1 - s)
        t_prev = tl.where(rev, t + 1, t - 1)
        t64 = t.to(tl.int64)
        bs = tl.load(p_bs + t)
        has_prev = (t_prev >= 0) & (t_prev < T)
        bs_prev = tl.load(p_bs + t_prev, mask=has_prev, other=0)
        m_b = o_b < bs
        m_jb = m_j[:, None] & m_b[None, :]
        m_pb = m_p[:, None] & m_b[None, :]

        # Phase A: dh^T [BLOCK_P, BLOCK_B] of the owned columns
        #          = sum_g W_hh_g[:, owned]^T @ dgates_g[t_next]^T
        m_next = (o_b < bs_next)[None, :]
        dh = tl.zeros((BLOCK_P, BLOCK_B), dtype=tl.float32)
        if RESIDENT:
            b_dq = tl.load(p_dgates + (t_next.to(tl.int64) * B + row) * G + o_qrow[:, None],
                           mask=m_q[:, None] & m_next, other=0.0, cache_modifier=".cg")
            if LOW_DOT:
                b_dq = b_dq.to(p_w.dtype.element_ty)
            dh = tl.dot(r_wt, b_dq, dh, input_precision=DOT_PRECISION)
        for k0 in range(0, H if not RESIDENT else 0, BLOCK_K):
            o_k = k0 + tl.arange(0, BLOCK_K)
            m_k = o_k < H
            p_dn = p_dgates + (t_next.to(tl.int64) * B + row) * G + o_k[:, None]
            p_wk = p_w + o_k[None, :].to(tl.int64) * P + o_p[:, None]
            m_w = m_p[:, None] & m_k[None, :]
            m_d = m_k[:, None] & m_next
            for g in tl.static_range(4):
                b_w = tl.load(p_wk + g * H * P, mask=m_w, other=0.0).to(tl.float32)
                b_d = tl.load(p_dn + g * H, mask=m_d, other=0.0, cache_modifier=".cg")
                dh = tl.dot(b_w, b_d, dh, input_precision=DOT_PRECISION)
        dh += tl.load(p_dhn + row * P + o_p[:, None], mask=m_pb & (o_b >= bs_next)[None, :], other=0.0).to(
            tl.float32)
        dh += tl.load(p_dout + t64 * s_do_t + row * s_do_b + o_p[:, None], mask=m_pb,
                      other=0.0).to(tl.float32)
        if HAS_PROJ:
            tl.store(p_dhs + (t64 * B + row) * P + o_p[:, None], dh, mask=m_pb)
            if USE_BARRIER:
                n_sync += 1
                _grid_barrier(p_sync_m, n_sync * NUM_PROGRAMS)
            else:
                tl.debug_barrier()  # one program: its warps still exchange rows through memory
            # dhr^T [BLOCK_H, BLOCK_B] = W_hr[:, owned]^T @ dh^T
            dhr = tl.zeros((BLOCK_H, BLOCK_B), dtype=tl.float32)
            for k0 in range(0, P, BLOCK_K):
                o_k = k0 + tl.arange(0, BLOCK_K)
                m_k = o_k < P
                b_wr = tl.load(p_wr + o_k[None, :].to(tl.int64) * H + o_j[:, None],
                               mask=m_j[:, None] & m_k[None, :], other=0.0).to(tl.float32)
                b_dh = tl.load(p_dhs + (t64 * B + row) * P + o_k[:, None], mask=m_k[:, None] & m_b[None, :],
                               other=0.0, cache_modifier=".cg")
                dhr = tl.dot(b_wr, b_dh, dhr, input_precision=DOT_PRECISION)
        else:
            dhr = dh

        # Phase B: gate and cell-state gradients of the owned hidden block.
        p_sg = p_gates + (t64 * B + row) * G + o_j[:, None]
        gi = tl.load(p_sg, mask=m_jb, other=0.0).to(tl.float32)
        gf = tl.load(p_sg + H, mask=m_jb, other=0.0).to(tl.float32)
        gg = tl.load(p_sg + 2 * H, mask=m_jb, other=0.0).to(tl.float32)
        go = tl.load(p_sg + 3 * H, mask=m_jb, other=0.0).to(tl.float32)
        c = tl.load(p_cs + (t64 * B + row) * H + o_j[:, None], mask=m_jb, other=0.0).to(tl.float32)
        m_carry = (o_b < bs_prev)[None, :]
        c_prev = tl.load(p_cs + (t_prev.to(tl.int64) * B + row) * H + o_j[:, None], mask=m_jb & m_carry,
                         other=0.0).to(tl.float32)
        c_prev += tl.load(p_c0 + row * H + o_j[:, None], mask=m_jb & ~m_carry, other=0.0).to(tl.float32)
        tc = tanh(c)
        dc_t = dc + dhr * go * (1.0 - tc * tc)
        p_dg = p_dgates + (t64 * B + row) * G + o_j[:, None]
        tl.store(p_dg, dc_t * gg * gi * (1.0 - gi), mask=m_jb)
        tl.store(p_dg + H, dc_t * c_prev * gf * (1.0 - gf), mask=m_jb)
        tl.store(p_dg + 2 * H, dc_t * gi * (1.0 - gg * gg), mask=m_jb)
        tl.store(p_dg + 3 * H, dhr * tc * go * (1.0 - go), mask=m_jb)
        dc = tl.where(m_b[None, :], dc_t * gf, dc)
        # Written every step for the same reason as c_n in the forward.
        tl.store(p_dc0 + row * H + o_j[:, None], dc_t * gf, mask=m_jb)
        if USE_BARRIER:
            n_sync += 1
            _grid_barrier(p_sync_m, n_sync * NUM_PROGRAMS)
        else:
            tl.debug_barrier()  # one program: its warps still exchange rows through memory
        t_next = t
        bs_next = bs


# ---------------------------------------------------------------------------------------------
# Launch configuration
# ---------------------------------------------------------------------------------------------

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
    # direction, each running every batch tile per step (``_fwd_tiles_kernel``).
    batch_loop: bool = False

    @property
    def grid_m(self) -> int:
        return 1 if self.batch_loop else self.NM

    @property
    def use_barrier(self) -> bool:
        return self.NP > 1 if self.barrier is None else self.barrier

    @property
    def backward_warps(self) -> int:
        return self.num_warps if self.bwd_warps is None else self.bwd_warps


# Warps per (BLOCK_H, BLOCK_B) tile of the GPU tilings, forward and backward, as measured by the
# AOT check (python -m lstm_kernels.aot, sm_80 and sm_90): with fewer warps ptxas spills at
# 255 registers, with more it caps the registers (64 or 128) and spills a few loop-invariant
# values, so each tile has its own spill-free count on both architectures. With a projection
# the backward differs on three tiles (``_warps``).
_FWD_WARPS = {(16, 16): 8, (16, 32): 8, (16, 64): 16, (32, 16): 4, (32, 32): 8, (64, 16): 8}
_BWD_WARPS = {(16, 16): 4, (16, 32): 4, (16, 64): 16, (32, 16): 8, (32, 32): 8, (64, 16): 8}


def _warps(BH: int, BP: int, BB: int, has_proj: bool, barrier: bool = False,
           ieee: bool = False) -> tuple[int, int]:
    """(forward, backward) warps of a BH x BB tile; tiles outside the tables (interpreter) use step_warps.

    ``ieee``: fp32 with IEEE dots (``fp32_ieee``), whose FMA dots hold both operand tiles in
    registers: at the tables' 8 and 16 warps ptxas caps the registers and spills 8-40 B on the
    16- and 32-unit tiles (sm_80 and sm_90, triton 3.6 and 3.9); at 4 those of <= 512
    elements (``_tile_b``) spill nothing, but for the 16 x 16 forward with a projection (8 B,
    sm_90, triton 3.6), which takes 8."""
    if ieee:
        return (8 if (BH, BB) == (16, 16) and has_proj else 4), 4
    default = step_warps(max(BH, BP), BB)
    fwd = _FWD_WARPS.get((BH, BB), default)
    bwd = _BWD_WARPS.get((BH, BB), default)
    if has_proj:
        # The backward with a projection, where the table's count spills: 16 x 32 at 4 warps;
        # with BLOCK_P = BLOCK_H (P > H / 2), 32 x 32 with the barrier at 8 (8 B in every
        # dtype, triton 3.9, sm_80; at 16 the barrier-free 16-bit one spills instead) and
        # 64 x 16 at 8 (fp32: 8 B, 3.9, sm_80; at 16 fp32 with BLOCK_P = 16 spills instead).
        if (BH, BB) == (16, 32):
            bwd = 8
        elif (BH, BP, BB) == (32, 32, 32) and barrier or (BH, BP, BB) == (64, 64, 16):
            bwd = 16
    return fwd, bwd


def _tile_b(B: int, BH: int, fp32_proj: bool = False, ieee: bool = False) -> int:
    # The cell state and four gate accumulators of a BLOCK_H x BLOCK_B tile live in registers
    # for the whole time loop; past 1024 elements they spill (ptxas, sm_90).
    if ieee:
        # fp32 IEEE dots (``fp32_ieee``) hold their operand tiles in registers as well: at
        # 1024 elements (16 x 64, 32 x 32, with or without a projection) they spill 8-64 B at
        # 4 warps (sm_90, triton 3.9), and 8-40 B at the tables' 8 or 16; 512 spill nothing
        # without a projection. With one, 16 x 32 and 32 x 16 still spill 8-16 B at 4 warps
        # (the backward with the barrier on sm_80, the 32 x 16 forward on sm_80 and sm_90 under
        # triton 3.6; 8 warps spills more), so it runs 16 x 16 tiles (``_config_cached``).
        return 16 if fp32_proj else max(16, min(block_b(B), 512 // BH))
    if fp32_proj and BH == 32:
        # fp32 with a projection on 32-unit blocks: the 32 x 16 forward spills 8 B at 4 warps
        # (with SAVE and the barrier under triton 3.9 on sm_90 and 3.6 on sm_80, without
        # either under 3.6 on sm_80), 32 x 32 nowhere. Batches of <= 16 rows run it with
        # masked rows, still one batch tile, so the grid is the same.
        return 32
    return max(16, min(block_b(B), 1024 // BH))


# Resident forward tilings (sm_90, ptxas of triton 3.6 and 3.9, sizes divisible by 16 as the
# JIT specializes them): the slice is two [2*BLOCK_H, P] operands in shared memory (one
# [4*BLOCK_H, P] operand for BLOCK_H = 16), and operands of >= 64 rows let Hopper's wgmma
# read them from there. Spill-free at 8 warps with
# BLOCK_H * P <= 16384 (16-bit) or 8192 (fp32) and the batch tile below (wider tiles spill
# 8-104 B with triton 3.6 when the gates are saved); that is 128 KB of weights, plus the
# [P, BLOCK_B] h operand, inside the 227 KB a block may have.
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
# 32 only while a column of the gate-gradient operand is <= 1 KB (wider spills, triton 3.6).
_RESIDENT_BWD_SMEM = 200 * 1024
_RESIDENT_BWD_WIDE_BB_BYTES = 1024
_RESIDENT_BWD_MIN_MAJOR = 9


def _low_dot(dtype: torch.dtype) -> bool:
    """Whether the resident backward's dot takes 16-bit operands (bf16 only, see below)."""
    return dtype == torch.bfloat16


def _resident_backward_config(B: int, H: int, P: int, has_proj: bool, dtype: torch.dtype,
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
    size = 2 if _low_dot(dtype) else 4
    if dtype == torch.float16 and HK > 64:
        return None  # fp16 slices upcast while loading spill 256-280 B from H=128 (ptxas, sm_90)
    BP = min(64, HK)
    BB = min(block_b(B), 32 if 4 * HK * size <= _RESIDENT_BWD_WIDE_BB_BYTES else 16)
    # The weights in their dtype; the gate-gradient operand in the same width.
    if (BP + BB) * 4 * HK * size > _RESIDENT_BWD_SMEM:
        return None
    NP, NM = triton.cdiv(H, BP), triton.cdiv(B, BB)
    if NP > 1 and n_sm is not None and NP * NM * directions > n_sm:
        return None
    return PersistentConfig(BP, BP, BB, HK, NP, NM, _RESIDENT_WARPS, resident=True)


def backward_config(B: int, H: int, P: int, has_proj: bool, dtype: torch.dtype, n_sm: Optional[int],
                    interpreting: Optional[bool] = None, directions: int = 1,
                    major: Optional[int] = None, precision: Optional[str] = None,
                    variants: Optional[Variants] = None) -> Optional[PersistentConfig]:
    """The backward kernel's tiling: resident where the slice fits (sm_90 and later), else the
    streamed one. ``precision``: the backward's DOT_PRECISION (see ``persistent_config``);
    ``variants``: the switches (None: ``variants.current()``)."""
    interpreting = triton_interpreting() if interpreting is None else interpreting
    variants = current_variants() if variants is None else variants
    if variants.resident_backward:
        cfg = _resident_backward_config(B, H, P, has_proj, dtype, n_sm, interpreting, directions, major)
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
        # of the resident dot in registers: 64 x 32 tiles spill 64-88 B (h on chip) and 6-7 KB
        # (barrier), 32 x 16 ones with P = 256 8 B at 8 warps and 7 KB at 4 (sm_80 and sm_90,
        # triton 3.6 and 3.9). They stream in K chunks instead.
        cfg = _resident_config(B, H, P, has_proj, dtype, n_sm, interpreting, directions, batch_loop_allowed)
        if cfg is not None:
            return cfg
    # K chunk of every matmul: 16 keeps the operand tiles small enough that ptxas spills
    # nothing (32 spills 8-56 B on sm_80 at 8 warps; 64 spills the fp16/bf16 forward on sm_90),
    # except for the one tile below that takes 32.
    BK = 16
    # fp32 IEEE: 64-unit blocks spill at every warp count tried (8-104 B at 4 warps, sm_80,
    # triton 3.6), so hidden blocks stop at 32 units.
    # With a projection they stop at 16 (``_tile_b``).
    max_bh = (16 if has_proj else 32) if ieee else MAX_BLOCK_H
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
                # With the barrier, fp32 with a projection spills 8-16 B on sm_90 under triton
                # 3.9 in the forward of 16 x 16 (SAVE) and the backward of 16 x 32 at every warp
                # count tried; K chunks of 32 only move the spill to other 16-unit tiles. The
                # 16 x 64 tile does not: batches of <= 32 rows run it with masked rows, still one
                # batch tile, so the grid is no larger than with 16 x 16 or 16 x 32 (32-unit
                # blocks take their widest batch tile likewise, in ``_tile_b``).
                BB = 64
            NM = triton.cdiv(B, BB)
            slots = n_sm // (NM * directions) if n_sm is not None else 1 << 30
            nh = triton.cdiv(H, BH)
            BP = pow2(triton.cdiv(P, nh)) if has_proj else BH
            if max(nh, triton.cdiv(P, BP)) <= slots and BP <= max_bh:
                break
        else:
            return None  # the programs could not all be resident: the barrier would deadlock
    if not interpreting and not has_proj and dtype != torch.float32 and (BH, BB) == (32, 16):
        # The 16-bit forward of a 32 x 16 tile with the barrier spills 8 B with SAVE at K chunks
        # of 16 (sm_90, triton 3.6) and nothing at 32; fp32 keeps 16 (at 32 its forward without
        # the barrier spills 16 B, sm_90, triton 3.9). The backward streams chunks of 32 here
        # either way (``backward_block_k``).
        BK = 32
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
    streams with (the step is latency-bound), and spill-free for the backward tilings
    (AOT, sm_80 and sm_90, TF32 operands) except 16 x 64, which spills 16 B under
    triton 3.6, 16 x 16, whose fp32 barrier tiling spills 16 B on sm_80 under triton
    3.6, and 32 x 32 without the barrier (H <= 32), whose fp32 tiling spills 16 B on sm_90
    under triton 3.6; those stay 16 (64 spills). With a projection it stays 16. A resident
    tiling takes all of H. fp32 with IEEE dots (``ieee``, ``fp32_ieee``) stays 16 too: its
    16 x 32 tiling spills 8 B at 32 (sm_80, triton 3.6).
    """
    if cfg.resident:
        return cfg.BLOCK_K
    tile = (cfg.BLOCK_H, cfg.BLOCK_B)
    if has_proj or ieee or tile in ((16, 16), (16, 64)) or tile == (32, 32) and not cfg.use_barrier \
            or not wide_k:
        return 16  # not cfg.BLOCK_K: the forward's chunk is 32 on one tile (``_config_cached``)
    return 32


def h_on_chip(cfg: PersistentConfig, has_proj: bool, allowed: bool = True) -> bool:
    """Whether the forward keeps h in registers between steps: a resident slice owned by one
    program per batch tile (nothing to exchange with other programs) and no projection."""
    return (cfg.resident and cfg.NP == 1 and not cfg.use_barrier and not has_proj and not cfg.batch_loop
            and allowed)


def _cooperative(cfg: PersistentConfig) -> dict:
    """Launch options: a barrier grid goes out as a cooperative launch on a GPU.

    The grid barrier deadlocks unless every program is resident at once; ``persistent_config``
    sizes the grid for that, and a cooperative launch makes the driver refuse (with an error,
    not a hang) a grid that cannot be co-resident after all. The interpreter has no such launch.
    """
    return {"launch_cooperative_grid": True} if cfg.use_barrier and not triton_interpreting() else {}


def _does_not_fit(B, H, P, dtype, device) -> RuntimeError:
    return RuntimeError(
        f"triton tier 'persistent' cannot run B={B}, H={H}, P={P} ({dtype}) on {device}: its weight "
        "slices or programs do not fit on-chip; use the 'fused_step' tier (the automatic choice does)"
    )


def _config_for(B, H, P, has_proj, dtype, device, directions=1, resident=True, precision=None,
                variants: Optional[Variants] = None) -> PersistentConfig:
    cfg = persistent_config(B, H, P, has_proj, dtype, sm_count(device), directions=directions, resident=resident,
                            precision=precision, variants=variants)
    if cfg is None:
        raise _does_not_fit(B, H, P, dtype, device)
    return cfg


# ---------------------------------------------------------------------------------------------
# Launchers: D directions (1, or 2 for a bidirectional layer) in one launch, grid (NP, NM, D)
# ---------------------------------------------------------------------------------------------


def _launch_forward(gx, h0, c0, w_hh, w_hr, batch_sizes, reverse, save):
    """gx [D,T,B,G] (any strides, unit last), h0 [D,B,P], c0 [D,B,H], w_hh [D,G,P], w_hr [D,P,H] | None.

    Direction d runs reversed when ``reverse != (d == 1)``. Returns the scan contract's six
    tensors, each with a leading [D] dimension.
    """
    D, T, B, G = gx.shape
    H, P = c0.shape[2], h0.shape[2]
    dtype, cdt, dev = gx.dtype, compute_dtype(gx.dtype), gx.device
    has_proj = w_hr is not None
    upcast, prec = dot_settings(dtype)
    variants = current_variants()
    cfg = _config_for(B, H, P, has_proj, dtype, dev, D, precision=prec, variants=variants)
    if gx.stride(3) != 1:
        gx = gx.contiguous()
    bs = batch_sizes_list(batch_sizes, T, B)
    bs_dev = device_batch_sizes(bs, B, dev)
    # Rows inactive at a step are never written: zero-filled only when some are (packed).
    full = all_rows_full(bs, B)
    alloc = torch.empty if full else torch.zeros
    out = alloc(D, T, B, P, dtype=dtype, device=dev)
    c_n = c0.clone(memory_format=torch.contiguous_format)  # the kernel updates the rows that run
    gates = torch.empty(D, T, B, G, dtype=cdt, device=dev) if save else gx.new_empty(0, dtype=cdt)
    cs = torch.empty(D, T, B, H, dtype=cdt, device=dev) if save else gx.new_empty(0, dtype=cdt)
    # Zeroed when packed: d_w_hr multiplies all rows, active or not.
    hr = alloc(D, T, B, H, dtype=cdt, device=dev) if has_proj else gx.new_empty(0, dtype=cdt)
    sync = torch.zeros(D, cfg.grid_m, dtype=torch.int32, device=dev)
    w_hh_c = w_hh.contiguous()
    if cfg.batch_loop:
        c_f = c0.to(torch.float32).contiguous().clone()
        _fwd_tiles_kernel[(cfg.NP, 1, D)](
            gx, h0.contiguous(), w_hh_c, bs_dev, out, gates, cs, c_n, c_f, sync,
            T, B, H, P, gx.stride(0), gx.stride(1), gx.stride(2), cfg.NP, int(reverse), cfg.NM,
            BLOCK_H=cfg.BLOCK_H, BLOCK_B=cfg.BLOCK_B, BLOCK_K=cfg.BLOCK_K, SAVE=save, UPCAST_DOT=upcast,
            DOT_PRECISION=prec, num_warps=cfg.num_warps, **_cooperative(cfg),
        )
    else:
        _fwd_kernel[(cfg.NP, cfg.NM, D)](
            gx, h0.contiguous(), c0.contiguous(), w_hh_c, w_hr.contiguous() if has_proj else w_hh_c, bs_dev,
            out, hr, gates, cs, c_n, sync,
            T, B, H, P, gx.stride(0), gx.stride(1), gx.stride(2), cfg.NP,
            int(reverse), USE_BARRIER=cfg.use_barrier, BLOCK_H=cfg.BLOCK_H, BLOCK_P=cfg.BLOCK_P,
            BLOCK_B=cfg.BLOCK_B, BLOCK_K=cfg.BLOCK_K, HAS_PROJ=has_proj, SAVE=save, UPCAST_DOT=upcast,
            DOT_PRECISION=prec, RESIDENT=cfg.resident, H_ON_CHIP=h_on_chip(cfg, has_proj, variants.h_on_chip),
            num_warps=cfg.num_warps, **_cooperative(cfg),
        )
    h_n = torch.stack([finish_forward(out[d], c_n[d], c0[d], bs, reverse != (d == 1))[0] for d in range(D)])
    hs = hr if (save and has_proj) else gx.new_empty(0, dtype=cdt)
    return out, h_n, c_n, gates, cs, hs


def _launch_backward(grad_out, grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, batch_sizes, reverse,
                     out, gates, cs, hs):
    """The backward of :func:`_launch_forward`; every tensor has the leading [D] dimension."""
    D, T, B, P = out.shape
    H = c0.shape[2]
    cdt, dev = gates.dtype, out.device
    has_proj = w_hr is not None
    variants = current_variants()
    prec = backward_precision(out.dtype, variants.backward_tf32)
    cfg = backward_config(B, H, P, has_proj, out.dtype, sm_count(dev), directions=D, major=capability_major(dev),
                          precision=prec, variants=variants)
    if cfg is None:
        raise _does_not_fit(B, H, P, out.dtype, dev)
    bs = batch_sizes_list(batch_sizes, T, B)
    bs_dev = device_batch_sizes(bs, B, dev)
    alloc = torch.empty if all_rows_full(bs, B) else torch.zeros  # inactive rows stay zero
    d_gates = alloc(D, T, B, 4 * H, dtype=cdt, device=dev)
    d_hs = alloc(D, T, B, P, dtype=cdt, device=dev) if has_proj else d_gates
    d_c0 = torch.empty(D, B, H, dtype=torch.float32, device=dev).copy_(grad_c_n)  # updated by the kernel
    sync = torch.zeros(D, cfg.NM, dtype=torch.int32, device=dev)
    g_out = grad_out if grad_out.stride(3) == 1 else grad_out.contiguous()
    w_hh_c = w_hh.contiguous()
    ieee = fp32_ieee(out.dtype, prec, triton_interpreting())
    low_dot = cfg.resident and _low_dot(out.dtype) and not triton_interpreting()
    if low_dot:
        prec = "ieee"  # 16-bit operands: the precision setting does not apply
    _bwd_kernel[(cfg.NP, cfg.NM, D)](
        g_out, grad_h_n.contiguous(), grad_c_n.contiguous(), w_hh_c,
        w_hr.contiguous() if has_proj else w_hh_c,
        bs_dev, gates.contiguous(), cs.contiguous(), c0.contiguous(), d_gates, d_hs, d_c0, sync,
        T, B, H, P, g_out.stride(0), g_out.stride(1), g_out.stride(2), cfg.NP,
        int(reverse), USE_BARRIER=cfg.use_barrier, BLOCK_H=cfg.BLOCK_H, BLOCK_P=cfg.BLOCK_P,
        BLOCK_B=cfg.BLOCK_B, BLOCK_K=backward_block_k(cfg, has_proj, ieee, variants.backward_wide_k), HAS_PROJ=has_proj, DOT_PRECISION=prec,
        RESIDENT=cfg.resident, LOW_DOT=low_dot,
        num_warps=cfg.backward_warps, **_cooperative(cfg),
    )
    d_w_hh, d_w_hr, d_h0 = stacked_weight_grads(d_gates, out, h0, w_hh, w_hr, d_hs if has_proj else None, hs,
                                                bs, reverse, first_dh=True)
    return d_gates.to(out.dtype), d_h0.to(h0.dtype), d_c0.to(c0.dtype), d_w_hh, d_w_hr


# The per-direction scan runs the launchers with D = 1; ``scan_bidirectional`` both directions
# of a layer in one D = 2 launch (the direction-stacked contract, ops.py).
scan, scan_bidirectional = register_tier_scans("persistent", _launch_forward, _launch_backward)


# ---------------------------------------------------------------------------------------------
# Ahead-of-time compile specs
# ---------------------------------------------------------------------------------------------

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


def _aot_key(dtype: torch.dtype, has_proj: bool, cfg: PersistentConfig, prec: str = "") -> tuple:
    # The grid (NP, NM) is not compiled in: one spec per block choice (whether NP is 1 is:
    # it decides H_ON_CHIP). ``prec``: fp32's "tf32" or "ieee" ("" for fp16/bf16).
    return dtype, has_proj, dataclasses.replace(cfg, NP=min(cfg.NP, 2), NM=0, barrier=cfg.use_barrier), prec


def _aot_backward_key(dtype: torch.dtype, cfg: PersistentConfig) -> tuple:
    return dtype, dataclasses.replace(cfg, NP=0, NM=0, barrier=cfg.use_barrier)


@functools.lru_cache(maxsize=None)
def _aot_configs(n_sm: int) -> list[tuple[torch.dtype, bool, PersistentConfig, str]]:
    found = {}
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for prec in _aot_precisions(dtype):
            for B, H, P, has_proj, directions in _aot_shapes(n_sm):
                for resident in (True, False):
                    cfg = persistent_config(B, H, P, has_proj, dtype, n_sm, interpreting=False,
                                            resident=resident, directions=directions, precision=prec or None)
                    if cfg is not None:
                        found[_aot_key(dtype, has_proj, cfg, prec)] = None
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
    for dtype, has_proj, cfg, prec in _aot_configs(n_sm):
        specs += _forward_specs(dtype, has_proj, cfg, prec)
    for dtype, cfg in _aot_backward_configs(n_sm, arch // 10):
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
            kernel=_fwd_kernel,
            signature={
                "p_gx": f"*{tdt}", "p_h0": f"*{tdt}", "p_c0": f"*{tdt}", "p_w": f"*{tdt}",
                "p_wr": f"*{tdt}", "p_bs": "*i32", "p_out": f"*{tdt}", "p_hr": f"*{cdt}",
                "p_gates": f"*{cdt}", "p_cs": f"*{cdt}", "p_cn": f"*{tdt}", "p_sync": "*i32",
                "T": "i32", "B": "i32", "H": "i32", "P": "i32", "s_gx_d": "i32", "s_gx_t": "i32",
                "s_gx_b": "i32", "NUM_PROGRAMS": "i32", "reverse": "i32",
                **{k: "constexpr" for k in (*common, "SAVE", "UPCAST_DOT", "RESIDENT", "H_ON_CHIP")},
            },
            constexprs=dict(SAVE=save, UPCAST_DOT=upcast, RESIDENT=cfg.resident,
                            H_ON_CHIP=h_on_chip(cfg, has_proj), **common),
            num_warps=cfg.num_warps,
            label=f"persistent fwd {tdt} {tiling} save={save}" + (f" {prec}" if prec else ""),
            divisible_by_16=div16,
        ))
    if not cfg.resident:  # the backward never runs a resident forward tiling
        specs.append(_bwd_spec(dtype, has_proj, cfg, common, tiling, prec))
    return specs


def _tiles_specs(dtype: torch.dtype, cfg: PersistentConfig, upcast: bool, prec: str, tiling: str) -> list:
    tdt = TL_DTYPES[dtype]
    cdt = TL_DTYPES[compute_dtype(dtype)]
    consts = dict(BLOCK_H=cfg.BLOCK_H, BLOCK_B=cfg.BLOCK_B, BLOCK_K=cfg.BLOCK_K, UPCAST_DOT=upcast,
                  DOT_PRECISION=prec)
    return [KernelSpec(
        kernel=_fwd_tiles_kernel,
        signature={
            "p_gx": f"*{tdt}", "p_h0": f"*{tdt}", "p_w": f"*{tdt}", "p_bs": "*i32", "p_out": f"*{tdt}",
            "p_gates": f"*{cdt}", "p_cs": f"*{cdt}", "p_cn": f"*{tdt}", "p_cf": "*fp32", "p_sync": "*i32",
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
def _aot_backward_configs(n_sm: int, major: int) -> list[tuple[torch.dtype, PersistentConfig]]:
    found = {}
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for B, H, P, has_proj, directions in _aot_shapes(n_sm):
            if has_proj:
                continue  # the resident backward takes no projection
            cfg = _resident_backward_config(B, H, H, False, dtype, n_sm, False, directions, major)
            if cfg is not None:
                found[_aot_backward_key(dtype, cfg)] = None
    return list(found)


def _bwd_spec(dtype: torch.dtype, has_proj: bool, cfg: PersistentConfig, common: dict, tiling: str,
              prec: str = "") -> KernelSpec:
    """The backward kernel's spec for a streamed or resident tiling, with the launcher's flags.

    ``prec``: fp32's "tf32" or "ieee"; "" for fp16/bf16 (backward_precision's TF32)."""
    tdt = TL_DTYPES[dtype]
    cdt = TL_DTYPES[compute_dtype(dtype)]
    low_dot = cfg.resident and _low_dot(dtype)
    # backward_precision; 16-bit operands of the resident dot take none.
    consts = dict(common, DOT_PRECISION="ieee" if low_dot else (prec or "tf32"),
                  BLOCK_K=backward_block_k(cfg, has_proj, prec == "ieee"), RESIDENT=cfg.resident,
                  LOW_DOT=low_dot)
    div16 = ("p_dout", "p_dhn", "p_dcn", "p_w", "p_wr", "p_bs", "p_gates", "p_cs", "p_c0", "p_dgates", "p_dhs",
             "p_dc0", "p_sync", "H", "P", "s_do_d", "s_do_t", "s_do_b") if cfg.resident else ()
    return KernelSpec(
        kernel=_bwd_kernel,
        signature={
            "p_dout": f"*{tdt}", "p_dhn": f"*{tdt}", "p_dcn": f"*{tdt}", "p_w": f"*{tdt}",
            "p_wr": f"*{tdt}", "p_bs": "*i32", "p_gates": f"*{cdt}", "p_cs": f"*{cdt}",
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
