"""The persistent tier's backward kernels: the whole reversed time loop of a layer in one
launch, with a streamed or resident column slice of W_hh^T (``backward_kernel``) or the
row-split resident slice (``backward_rows_kernel``); see the package docstring."""
import triton
import triton.language as tl

from ..common.barrier import grid_barrier
from ..common.gates import cell_grads
from ..common.math import tanh


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
        # common/gates.cell_grads inline, each gradient stored as it is computed: with the four
        # computed first, the projection tilings at 8 warps (80 registers) spilled 8-16 B on
        # sm_90 under Triton 3.9 (tests/test_aot.py).
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

    dc_t, d_i, d_f, d_g, d_o = cell_grads(dh, dc, gi, gf, gg, go, c, c_prev)
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
