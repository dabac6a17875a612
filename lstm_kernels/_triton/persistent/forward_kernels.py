"""The persistent tier's forward kernels: the whole time loop of a layer in one launch,
with a streamed or resident W_hh slice, or the resident batch-tile loop (see the package
docstring for the layout and the grid barrier; the backward is in ``backward_kernels``)."""
import triton
import triton.language as tl

from ..common.barrier import grid_barrier
from ..common.gates import activate_gates, activate_loaded, gate_dots, load_gate_inputs, store_gates
from ..common.math import tanh


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
def _gx_tile(p_gx, t, s_gx_t, row, s_gx_b, o_j):
    """Pointers to gx[t] of gate i for the owned units and rows, [BLOCK_H, BLOCK_B]."""
    return p_gx + t.to(tl.int64) * s_gx_t + row * s_gx_b + o_j[:, None]


@triton.jit
def _resident_slice(p_w, i_n, H, P, BLOCK_H: tl.constexpr, BLOCK_K: tl.constexpr, UPCAST_DOT: tl.constexpr):
    """Program i_n's W_hh slice as the resident operands of ``forward_kernel`` (see there):
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
def forward_kernel(
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
    PER_THREAD_POLL: tl.constexpr = False,  # the barrier's wait (common/barrier.py)
    PREFETCH_GX: tl.constexpr = False,  # step t+1's gx and batch size loaded before the barrier
    C_N_ONCE: tl.constexpr = False,  # c_n stored at each row's last step only
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

    if PREFETCH_GX:
        # gx and the batch size of the first step; the loop loads each next step's before its
        # barrier, so the wait hides their latency instead of the step after it paying it.
        t_nx = tl.where(rev, T - 1, 0)
        bs_nx = tl.load(p_bs + t_nx, mask=T > 0, other=0)
        x_i, x_f, x_g, x_o = load_gate_inputs(_gx_tile(p_gx, t_nx, s_gx_t, row, s_gx_b, o_j), H,
                                              m_j[:, None] & (o_b < bs_nx)[None, :])

    t_prev = tl.zeros((), dtype=tl.int32)
    bs_prev = tl.zeros((), dtype=tl.int32)
    n_sync = tl.zeros((), dtype=tl.int32)
    for s in range(T):
        t = tl.where(rev, T - 1 - s, s)
        t64 = t.to(tl.int64)
        if PREFETCH_GX:
            bs = bs_nx
        else:
            bs = tl.load(p_bs + t)
        if PREFETCH_GX | C_N_ONCE:
            # The next step's active rows (0 after the last step).
            t_n = tl.where(rev, T - 2 - s, s + 1)
            bs_n = tl.load(p_bs + t_n, mask=s + 1 < T, other=0)
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

        if PREFETCH_GX:
            gi, gf, gg, go = activate_loaded(x_i, x_f, x_g, x_o, acc_i, acc_f, acc_g, acc_o)
            x_i, x_f, x_g, x_o = load_gate_inputs(_gx_tile(p_gx, t_n, s_gx_t, row, s_gx_b, o_j), H,
                                                  m_j[:, None] & (o_b < bs_n)[None, :])
            bs_nx = bs_n
        else:
            gi, gf, gg, go = activate_gates(_gx_tile(p_gx, t, s_gx_t, row, s_gx_b, o_j), H, m_jb,
                                            acc_i, acc_f, acc_g, acc_o)
        c_new = gf * c + gi * gg
        h = go * tanh(c_new)
        c = tl.where(m_b[None, :], c_new, c)
        # The final state is stored inside the loop: a store after it would keep its pointer
        # and mask tiles live across all T steps, and ptxas spills those (sm_80). C_N_ONCE:
        # only at a row's last step (it is not active at the next one), else every step (a
        # row's last write is its c_n).
        if C_N_ONCE:
            m_cn = m_jb & (o_b >= bs_n)[None, :]
        else:
            m_cn = m_jb
        tl.store(p_cn + row * H + o_j[:, None], c_new.to(p_cn.dtype.element_ty), mask=m_cn)
        if SAVE:
            store_gates(p_gates + (t64 * B + row) * G + o_j[:, None], H, gi, gf, gg, go, m_jb)
            tl.store(p_cs + (t64 * B + row) * H + o_j[:, None], c_new.to(p_cs.dtype.element_ty), mask=m_jb)
        if HAS_PROJ:
            tl.store(p_hr + (t64 * B + row) * H + o_j[:, None], h.to(p_hr.dtype.element_ty), mask=m_jb)
            if USE_BARRIER:
                n_sync += 1
                grid_barrier(p_sync_m, n_sync * NUM_PROGRAMS, PER_THREAD_POLL)
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
            grid_barrier(p_sync_m, n_sync * NUM_PROGRAMS, PER_THREAD_POLL)
        else:
            tl.debug_barrier()  # one program: its warps still exchange rows through memory
        t_prev = t
        bs_prev = bs


@triton.jit(do_not_specialize=["T", "NUM_PROGRAMS", "reverse", "N_TILES"])
def forward_tiles_kernel(
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
    PER_THREAD_POLL: tl.constexpr = False,  # the barrier's wait (common/barrier.py)
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
            gi, gf, gg, go = activate_gates(_gx_tile(p_gx, t, s_gx_t, row, s_gx_b, o_j), H, m_jb,
                                            acc_i, acc_f, acc_g, acc_o)
            c_new = gf * c + gi * gg
            h = go * tanh(c_new)
            tl.store(p_cf + row * H + o_j[:, None], c_new, mask=m_jb)
            tl.store(p_cn + row * H + o_j[:, None], c_new.to(p_cn.dtype.element_ty), mask=m_jb)
            if SAVE:
                store_gates(p_gates + (t64 * B + row) * G + o_j[:, None], H, gi, gf, gg, go, m_jb)
                tl.store(p_cs + (t64 * B + row) * H + o_j[:, None], c_new.to(p_cs.dtype.element_ty), mask=m_jb)
            tl.store(p_out + (t64 * B + row) * P + o_j[:, None], h.to(p_out.dtype.element_ty), mask=m_jb)
        grid_barrier(p_sync + i_d, (s + 1) * NUM_PROGRAMS, PER_THREAD_POLL)
        t_prev = t
        bs_prev = bs
