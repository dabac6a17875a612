"""The persistent tier's kernels: the whole time loop of a layer in one launch, forward
(streamed or resident W_hh slice, or the resident batch-tile loop) and backward (see the
package docstring for the layout and the grid barrier)."""
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
        x_i, x_f, x_g, x_o = load_gate_inputs(p_gx + t_nx.to(tl.int64) * s_gx_t + row * s_gx_b + o_j[:, None], H,
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
            x_i, x_f, x_g, x_o = load_gate_inputs(p_gx + t_n.to(tl.int64) * s_gx_t + row * s_gx_b + o_j[:, None],
                                                  H, m_j[:, None] & (o_b < bs_n)[None, :])
            bs_nx = bs_n
        else:
            p_g = p_gx + t64 * s_gx_t + row * s_gx_b + o_j[:, None]
            gi, gf, gg, go = activate_gates(p_g, H, m_jb, acc_i, acc_f, acc_g, acc_o)
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
        grid_barrier(p_sync + i_d, (s + 1) * NUM_PROGRAMS, PER_THREAD_POLL)
        t_prev = t
        bs_prev = bs


@triton.jit
def _backward_step(p_bs, s, T, rev):
    """Backward step s's time t, the step before it in the forward t_prev, and both steps'
    active rows (0 where the step does not exist, s >= T included)."""
    t = tl.where(rev, s, T - 1 - s)
    t_prev = tl.where(rev, t + 1, t - 1)
    bs = tl.load(p_bs + t, mask=s < T, other=0)
    has_prev = (t_prev >= 0) & (t_prev < T) & (s < T)
    bs_prev = tl.load(p_bs + t_prev, mask=has_prev, other=0)
    return t, t_prev, bs, bs_prev


@triton.jit
def _saved_state(p_gates, p_cs, p_c0, t, t_prev, bs, bs_prev, B, H, row, o_j, m_j, o_b):
    """The forward's saved activated gates and cell state at t, and the cell state entering
    t (c[t_prev], or c0 for rows that start at t), fp32 [BLOCK_H, BLOCK_B]."""
    m_jb = m_j[:, None] & (o_b < bs)[None, :]
    p_sg = p_gates + (t.to(tl.int64) * B + row) * (4 * H) + o_j[:, None]
    gi = tl.load(p_sg, mask=m_jb, other=0.0).to(tl.float32)
    gf = tl.load(p_sg + H, mask=m_jb, other=0.0).to(tl.float32)
    gg = tl.load(p_sg + 2 * H, mask=m_jb, other=0.0).to(tl.float32)
    go = tl.load(p_sg + 3 * H, mask=m_jb, other=0.0).to(tl.float32)
    c = tl.load(p_cs + (t.to(tl.int64) * B + row) * H + o_j[:, None], mask=m_jb, other=0.0).to(tl.float32)
    m_carry = (o_b < bs_prev)[None, :]
    c_prev = tl.load(p_cs + (t_prev.to(tl.int64) * B + row) * H + o_j[:, None], mask=m_jb & m_carry,
                     other=0.0).to(tl.float32)
    c_prev += tl.load(p_c0 + row * H + o_j[:, None], mask=m_jb & ~m_carry, other=0.0).to(tl.float32)
    return gi, gf, gg, go, c, c_prev


@triton.jit(do_not_specialize=["T", "NUM_PROGRAMS", "reverse"])
def backward_kernel(
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
    PER_THREAD_POLL: tl.constexpr = False,  # the barrier's wait (common/barrier.py)
    PREFETCH_SAVED: tl.constexpr = False,  # the next step's saved gates and cell states loaded before the barrier
    DC0_ONCE: tl.constexpr = False,  # d_c0 stored at each row's last step (its first in time) only
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

    if PREFETCH_SAVED:
        # The first step's saved state; each step loads the next one's before its barrier.
        t, t_prev, bs, bs_prev = _backward_step(p_bs, 0, T, rev)
        sv_i, sv_f, sv_g, sv_o, sv_c, sv_cp = _saved_state(p_gates, p_cs, p_c0, t, t_prev, bs, bs_prev, B, H, row,
                                                           o_j, m_j, o_b)

    t_next = tl.zeros((), dtype=tl.int32)
    bs_next = tl.zeros((), dtype=tl.int32)
    n_sync = tl.zeros((), dtype=tl.int32)
    for s in range(T):
        t, t_prev, bs, bs_prev = _backward_step(p_bs, s, T, rev)
        t64 = t.to(tl.int64)
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
                grid_barrier(p_sync_m, n_sync * NUM_PROGRAMS, PER_THREAD_POLL)
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
        if PREFETCH_SAVED:
            gi, gf, gg, go, c, c_prev = sv_i, sv_f, sv_g, sv_o, sv_c, sv_cp
            tn, tn_prev, bsn, bsn_prev = _backward_step(p_bs, s + 1, T, rev)
            sv_i, sv_f, sv_g, sv_o, sv_c, sv_cp = _saved_state(p_gates, p_cs, p_c0, tn, tn_prev, bsn, bsn_prev,
                                                               B, H, row, o_j, m_j, o_b)
        else:
            gi, gf, gg, go, c, c_prev = _saved_state(p_gates, p_cs, p_c0, t, t_prev, bs, bs_prev, B, H, row,
                                                     o_j, m_j, o_b)
        tc = tanh(c)
        dc_t = dc + dhr * go * (1.0 - tc * tc)
        p_dg = p_dgates + (t64 * B + row) * G + o_j[:, None]
        tl.store(p_dg, dc_t * gg * gi * (1.0 - gi), mask=m_jb)
        tl.store(p_dg + H, dc_t * c_prev * gf * (1.0 - gf), mask=m_jb)
        tl.store(p_dg + 2 * H, dc_t * gi * (1.0 - gg * gg), mask=m_jb)
        tl.store(p_dg + 3 * H, dhr * tc * go * (1.0 - go), mask=m_jb)
        dc = tl.where(m_b[None, :], dc_t * gf, dc)
        # Stored inside the loop for the same reason as c_n in the forward. DC0_ONCE: only at
        # a row's first step in time (it is not active at t_prev), else every step.
        if DC0_ONCE:
            m_dc0 = m_jb & (o_b >= bs_prev)[None, :]
        else:
            m_dc0 = m_jb
        tl.store(p_dc0 + row * H + o_j[:, None], dc_t * gf, mask=m_dc0)
        if USE_BARRIER:
            n_sync += 1
            grid_barrier(p_sync_m, n_sync * NUM_PROGRAMS, PER_THREAD_POLL)
        else:
            tl.debug_barrier()  # one program: its warps still exchange rows through memory
        t_next = t
        bs_next = bs


@triton.jit
def _rows_slice(p_w, o_j, m_j, H, BLOCK_K: tl.constexpr, LOW_DOT: tl.constexpr):
    """The row-split backward's resident operands: W_hh[g*H + owned units, :]^T, [BLOCK_K, BLOCK_H]
    for each gate g (rows past H zero), in the dot's operand dtype."""
    o_k = tl.arange(0, BLOCK_K)
    p_wg = p_w + o_j[None, :].to(tl.int64) * H + o_k[:, None]
    m_w = (o_k < H)[:, None] & m_j[None, :]
    r_wi = tl.load(p_wg, mask=m_w, other=0.0)
    r_wf = tl.load(p_wg + H * H, mask=m_w, other=0.0)
    r_wg = tl.load(p_wg + 2 * H * H, mask=m_w, other=0.0)
    r_wo = tl.load(p_wg + 3 * H * H, mask=m_w, other=0.0)
    if not LOW_DOT:
        r_wi = r_wi.to(tl.float32)
        r_wf = r_wf.to(tl.float32)
        r_wg = r_wg.to(tl.float32)
        r_wo = r_wo.to(tl.float32)
    return r_wi, r_wf, r_wg, r_wo


@triton.jit
def _rows_step(p_part, p_dout, p_dhn, p_dgates, p_dc0, r_wi, r_wf, r_wg, r_wo,
               s, t, bs, bs_prev, bs_next, B, H, NUM_PROGRAMS, s_do_t, s_do_b,
               o_b, o_j, m_j, dc, gi, gf, gg, go, c, c_prev,
               BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, LOW_DOT: tl.constexpr,
               DOT_PRECISION: tl.constexpr, DC0_ONCE: tl.constexpr):
    """One backward step of one batch tile in ``backward_rows_kernel``: the owned units' dh
    from the shares of step s - 1, their gate and cell-state gradients, and this program's
    share of step s + 1's dh for every column. Returns the carried cell-state gradient."""
    row = o_b[None, :].to(tl.int64)
    m_b = o_b < bs
    m_jb = m_j[:, None] & m_b[None, :]
    t64 = t.to(tl.int64)
    G = 4 * H
    # dh^T [BLOCK_H, BLOCK_B] of the owned units: the NP programs' shares from step s - 1 (parity
    # (s + 1) % 2; written by other programs: past L1), summed in program order, then the
    # upstream gradients (h_n's for rows the step s - 1 did not run).
    o_n = tl.arange(0, BLOCK_N)
    p_sh = p_part + ((((s + 1) % 2) * NUM_PROGRAMS + o_n[:, None, None]).to(tl.int64) * B
                     + o_b[None, None, :]) * H + o_j[None, :, None]
    m_sh = (o_n < NUM_PROGRAMS)[:, None, None] & m_j[None, :, None] & (o_b < bs_next)[None, None, :]
    dh = tl.sum(tl.load(p_sh, mask=m_sh, other=0.0, cache_modifier=".cg"), axis=0)
    dh += tl.load(p_dhn + row * H + o_j[:, None], mask=m_jb & (o_b >= bs_next)[None, :], other=0.0).to(tl.float32)
    dh += tl.load(p_dout + t64 * s_do_t + row * s_do_b + o_j[:, None], mask=m_jb, other=0.0).to(tl.float32)

    tc = tanh(c)
    dc_t = dc + dh * go * (1.0 - tc * tc)
    d_i = dc_t * gg * gi * (1.0 - gi)
    d_f = dc_t * c_prev * gf * (1.0 - gf)
    d_g = dc_t * gi * (1.0 - gg * gg)
    d_o = dh * tc * go * (1.0 - go)
    p_dg = p_dgates + (t64 * B + row) * G + o_j[:, None]
    tl.store(p_dg, d_i, mask=m_jb)
    tl.store(p_dg + H, d_f, mask=m_jb)
    tl.store(p_dg + 2 * H, d_g, mask=m_jb)
    tl.store(p_dg + 3 * H, d_o, mask=m_jb)
    dc = tl.where(m_b[None, :], dc_t * gf, dc)
    if DC0_ONCE:
        m_dc0 = m_jb & (o_b >= bs_prev)[None, :]
    else:
        m_dc0 = m_jb
    tl.store(p_dc0 + row * H + o_j[:, None], dc_t * gf, mask=m_dc0)

    # This program's share of dh at step s + 1 for all columns, [BLOCK_K, BLOCK_B]
    # = sum_g W_hh[g*H + owned units, :]^T @ dgates_g^T (inactive rows' gradients are zero).
    if LOW_DOT:
        d_i = d_i.to(r_wi.dtype)
        d_f = d_f.to(r_wi.dtype)
        d_g = d_g.to(r_wi.dtype)
        d_o = d_o.to(r_wi.dtype)
    share = tl.dot(r_wi, d_i, input_precision=DOT_PRECISION)
    share = tl.dot(r_wf, d_f, share, input_precision=DOT_PRECISION)
    share = tl.dot(r_wg, d_g, share, input_precision=DOT_PRECISION)
    share = tl.dot(r_wo, d_o, share, input_precision=DOT_PRECISION)
    o_k = tl.arange(0, BLOCK_K)
    i_n = tl.program_id(0)
    tl.store(p_part + (((s % 2) * NUM_PROGRAMS + i_n).to(tl.int64) * B + row) * H + o_k[:, None], share,
             mask=(o_k < H)[:, None] & (o_b < B)[None, :])
    return dc


@triton.jit(do_not_specialize=["T", "NUM_PROGRAMS", "reverse", "S0", "S1", "N_TILES"])
def backward_rows_kernel(
    p_dout,  # [D, T, B, H] upstream grad of out (strides s_do_d, s_do_t, s_do_b, 1)
    p_dhn,  # [D, B, H] upstream grad of h_n
    p_w,  # [D, G, H] W_hh, contiguous
    p_bs,  # [T] int32 active rows per step (device)
    p_gates,  # [D, T, B, G] saved activated gates
    p_cs,  # [D, T, B, H] saved cell states
    p_c0,  # [D, B, H] initial cell state
    p_dgates,  # [D, T, B, G] fp32 gate gradients, zero-filled: inactive rows stay zero
    p_dc0,  # [D, B, H] fp32 grad of the cell state; holds grad of c_n at launch
    p_part,  # [D, 2, NP, B, H] fp32: each program's share of dh for every column, by step parity
    p_sync,  # [D, NM] int32 barrier counters, zero at launch
    T, B, H,
    S0, S1,  # the launch runs backward steps S0 .. S1 - 1 (0 .. T on a GPU)
    s_do_d, s_do_t, s_do_b,
    NUM_PROGRAMS,  # programs per batch tile: the barrier's arrival count
    reverse,  # 1: direction 0 runs backwards in time (direction 1 always runs opposite to it)
    N_TILES,  # BATCH_LOOP: batch tiles of BLOCK_B rows each program runs per step
    USE_BARRIER: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
    LOW_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
    PER_THREAD_POLL: tl.constexpr = False,  # the barrier's wait (common/barrier.py)
    PREFETCH_SAVED: tl.constexpr = False,  # the next step's saved gates and cell states loaded before the barrier
    DC0_ONCE: tl.constexpr = False,  # d_c0 stored at each row's first step in time only
    BATCH_LOOP: tl.constexpr = False,  # each program runs every batch tile per step, dc kept in p_dc0
):
    """The row-split resident backward (no projection; ``tiling.row_split_backward_config``):
    grid (NP, NM, D), or (NP, 1, D) with BATCH_LOOP. Program n holds W_hh's rows of hidden
    units n*BLOCK_H .. for the four gates, computes those units' gate gradients and writes its
    share of the next step's dh for every column; the owners of the columns sum the shares
    after the barrier. The carried cell-state gradient stays in registers, or with BATCH_LOOP
    (several tiles, or a step-by-step launch) in p_dc0 between steps."""
    i_n = tl.program_id(0)
    i_m = tl.program_id(1)
    i_d = tl.program_id(2)
    rev = (i_d + reverse) % 2 == 1
    o_j = i_n * BLOCK_H + tl.arange(0, BLOCK_H)  # owned hidden units
    m_j = o_j < H
    G = 4 * H
    d64 = i_d.to(tl.int64)
    p_dout += d64 * s_do_d
    p_dhn += d64 * B * H
    p_w += d64 * G * H
    p_gates += d64 * T * B * G
    p_cs += d64 * T * B * H
    p_c0 += d64 * B * H
    p_dgates += d64 * T * B * G
    p_dc0 += d64 * B * H
    p_part += d64 * 2 * NUM_PROGRAMS * B * H
    p_sync_m = p_sync + i_d * tl.num_programs(1) + i_m
    r_wi, r_wf, r_wg, r_wo = _rows_slice(p_w, o_j, m_j, H, BLOCK_K, LOW_DOT)

    # The step before S0 (none at S0 = 0): its active rows received shares.
    s_p = S0 - 1
    t_p = tl.where(rev, s_p, T - 1 - s_p)
    bs_next = tl.load(p_bs + t_p, mask=(s_p >= 0) & (s_p < T), other=0)
    if not BATCH_LOOP:
        o_b = i_m * BLOCK_B + tl.arange(0, BLOCK_B)
        row = o_b[None, :].to(tl.int64)
        dc = tl.load(p_dc0 + row * H + o_j[:, None], mask=m_j[:, None] & (o_b < B)[None, :], other=0.0)
        if PREFETCH_SAVED:
            t, t_prev, bs, bs_prev = _backward_step(p_bs, S0, T, rev)
            sv_i, sv_f, sv_g, sv_o, sv_c, sv_cp = _saved_state(p_gates, p_cs, p_c0, t, t_prev, bs, bs_prev, B, H,
                                                               row, o_j, m_j, o_b)
    n_sync = tl.zeros((), dtype=tl.int32)
    for s in range(S0, S1):
        t, t_prev, bs, bs_prev = _backward_step(p_bs, s, T, rev)
        if BATCH_LOOP:
            for mt in range(N_TILES):
                o_b = mt * BLOCK_B + tl.arange(0, BLOCK_B)
                row = o_b[None, :].to(tl.int64)
                dc = tl.load(p_dc0 + row * H + o_j[:, None], mask=m_j[:, None] & (o_b < B)[None, :], other=0.0)
                gi, gf, gg, go, c, c_prev = _saved_state(p_gates, p_cs, p_c0, t, t_prev, bs, bs_prev, B, H, row,
                                                         o_j, m_j, o_b)
                _rows_step(p_part, p_dout, p_dhn, p_dgates, p_dc0, r_wi, r_wf, r_wg, r_wo,
                           s, t, bs, bs_prev, bs_next, B, H, NUM_PROGRAMS, s_do_t, s_do_b,
                           o_b, o_j, m_j, dc, gi, gf, gg, go, c, c_prev,
                           BLOCK_K, BLOCK_N, LOW_DOT, DOT_PRECISION, False)
        else:
            if PREFETCH_SAVED:
                gi, gf, gg, go, c, c_prev = sv_i, sv_f, sv_g, sv_o, sv_c, sv_cp
                tn, tn_prev, bsn, bsn_prev = _backward_step(p_bs, s + 1, T, rev)
                sv_i, sv_f, sv_g, sv_o, sv_c, sv_cp = _saved_state(p_gates, p_cs, p_c0, tn, tn_prev, bsn, bsn_prev,
                                                                   B, H, row, o_j, m_j, o_b)
            else:
                gi, gf, gg, go, c, c_prev = _saved_state(p_gates, p_cs, p_c0, t, t_prev, bs, bs_prev, B, H, row,
                                                         o_j, m_j, o_b)
            dc = _rows_step(p_part, p_dout, p_dhn, p_dgates, p_dc0, r_wi, r_wf, r_wg, r_wo,
                            s, t, bs, bs_prev, bs_next, B, H, NUM_PROGRAMS, s_do_t, s_do_b,
                            o_b, o_j, m_j, dc, gi, gf, gg, go, c, c_prev,
                            BLOCK_K, BLOCK_N, LOW_DOT, DOT_PRECISION, DC0_ONCE)
        if USE_BARRIER:
            n_sync += 1
            grid_barrier(p_sync_m, n_sync * NUM_PROGRAMS, PER_THREAD_POLL)
        else:
            tl.debug_barrier()  # one program: its warps still exchange rows through memory
        bs_next = bs
