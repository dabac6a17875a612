"""The fused_step tier's kernels: one step of the recurrent matmul with the gate math as
epilogue, and its backward (see the package docstring)."""
import triton
import triton.language as tl

from ..common.gates import activate_gates, cell_grads, gate_dots, store_gates
from ..common.math import tanh


@triton.jit
def _direction_scalar(v0, v1):
    """The per-step scalar of this program's direction: ``v0`` for direction 0, ``v1`` for 1."""
    return v0 + tl.program_id(2) * (v1 - v0)


@triton.jit(do_not_specialize=["t0", "t1", "tp0", "tp1", "bs0", "bs1", "bsp0", "bsp1"])
def forward_kernel(
    p_gx,  # [D, T, B, G] input projection + biases (strides s_gx_d, s_gx_t, s_gx_b, 1)
    p_out,  # [D, T, B, P] contiguous: h after each step; rows < bs_prev of out[d, t_prev] enter step t
    p_h0,  # [D, B, P] initial h, for rows that did not run at t_prev
    p_w,  # [D, G, P] W_hh, contiguous
    p_c,  # [D, B, H] fp32 cell state, updated in place
    p_hout,  # [D, T, B, H] contiguous destination of the unprojected h (out itself without projection)
    p_gates,  # [D, T, B, G] compute dtype, saved activated gates (SAVE)
    p_cs,  # [D, T, B, H] compute dtype, saved cell states (SAVE)
    t0, t1,  # the time index each direction computes in this launch
    tp0, tp1,  # each direction's previous time index
    bs0, bs1,  # rows < bs are active at t
    bsp0, bsp1,  # rows < bs_prev ran at the previous step (0: this is the first step)
    T, B, H, P,
    s_gx_d, s_gx_t, s_gx_b,
    BLOCK_H: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
    SAVE: tl.constexpr, UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    i_n = tl.program_id(0)
    i_m = tl.program_id(1)
    i_d = tl.program_id(2)
    t = _direction_scalar(t0, t1)
    t_prev = _direction_scalar(tp0, tp1)
    bs = _direction_scalar(bs0, bs1)
    bs_prev = _direction_scalar(bsp0, bsp1)
    o_j = i_n * BLOCK_H + tl.arange(0, BLOCK_H)  # hidden units
    o_b = i_m * BLOCK_B + tl.arange(0, BLOCK_B)  # batch rows
    m_j = o_j < H
    m_b = o_b < bs
    m_carry = o_b < bs_prev
    m_fresh = m_b & (o_b >= bs_prev)
    G = 4 * H
    # Scalar base pointers of this direction and step; tiles index from them as in a D = 1 launch.
    dT = i_d.to(tl.int64) * T
    dB = i_d.to(tl.int64) * B
    p_src = p_out + (dT + t_prev) * B * P  # out[d, t_prev]
    p_init = p_h0 + dB * P
    p_wd = p_w + i_d.to(tl.int64) * G * P

    acc_i = tl.zeros((BLOCK_H, BLOCK_B), dtype=tl.float32)
    acc_f = tl.zeros((BLOCK_H, BLOCK_B), dtype=tl.float32)
    acc_g = tl.zeros((BLOCK_H, BLOCK_B), dtype=tl.float32)
    acc_o = tl.zeros((BLOCK_H, BLOCK_B), dtype=tl.float32)
    for k0 in range(0, P, BLOCK_K):
        o_k = k0 + tl.arange(0, BLOCK_K)
        m_k = o_k < P
        b_h = tl.load(p_src + o_b[None, :].to(tl.int64) * P + o_k[:, None],
                      mask=m_k[:, None] & m_carry[None, :], other=0.0)
        b_h += tl.load(p_init + o_b[None, :].to(tl.int64) * P + o_k[:, None],
                       mask=m_k[:, None] & m_fresh[None, :], other=0.0)
        m_w = m_j[:, None] & m_k[None, :]
        p_wk = p_wd + o_j[:, None].to(tl.int64) * P + o_k[None, :]
        b_wi = tl.load(p_wk, mask=m_w, other=0.0)
        b_wf = tl.load(p_wk + H * P, mask=m_w, other=0.0)
        b_wg = tl.load(p_wk + 2 * H * P, mask=m_w, other=0.0)
        b_wo = tl.load(p_wk + 3 * H * P, mask=m_w, other=0.0)
        acc_i, acc_f, acc_g, acc_o = gate_dots(b_wi, b_wf, b_wg, b_wo, b_h, acc_i, acc_f, acc_g, acc_o,
                                               UPCAST_DOT, DOT_PRECISION)

    m_jb = m_j[:, None] & m_b[None, :]
    row = o_b[None, :].to(tl.int64)
    step = (dT + t) * B  # first row of [d, t] in [D, T, B, X] tensors
    p_g = p_gx + i_d.to(tl.int64) * s_gx_d + t.to(tl.int64) * s_gx_t + row * s_gx_b + o_j[:, None]
    gi, gf, gg, go = activate_gates(p_g, H, m_jb, acc_i, acc_f, acc_g, acc_o)
    p_cj = p_c + dB * H + row * H + o_j[:, None]
    c = gf * tl.load(p_cj, mask=m_jb, other=0.0) + gi * gg
    h = go * tanh(c)
    tl.store(p_cj, c, mask=m_jb)
    tl.store(p_hout + step * H + row * H + o_j[:, None], h.to(p_hout.dtype.element_ty), mask=m_jb)
    if SAVE:
        store_gates(p_gates + step * G + row * G + o_j[:, None], H, gi, gf, gg, go, m_jb)
        tl.store(p_cs + step * H + row * H + o_j[:, None], c.to(p_cs.dtype.element_ty), mask=m_jb)


@triton.jit(do_not_specialize=["t0", "t1", "tn0", "tn1", "tp0", "tp1",
                               "bs0", "bs1", "bsn0", "bsn1", "bsp0", "bsp1"])
def backward_kernel(
    p_dgates,  # [D, T, B, G] gate gradients: read at t_next (rows < bs_next), written at t
    p_wt,  # [D, P, G] W_hh^T contiguous (FUSE_DH only)
    p_dout,  # [D, T, B, P] upstream grad of out (FUSE_DH only; strides s_do_d, s_do_t, s_do_b, 1)
    p_dhn,  # [D, B, P] upstream grad of h_n, for rows that did not run at t_next (FUSE_DH only)
    p_dhr,  # [D, B, H] fp32 grad of the unprojected h at t (not FUSE_DH)
    p_dc,  # [D, B, H] fp32 grad of the cell state, updated in place
    p_gates,  # [D, T, B, G] saved activated gates
    p_cs,  # [D, T, B, H] saved cell states
    p_c0,  # [D, B, H] initial cell state (rows that did not run at t_prev)
    t0, t1, tn0, tn1, tp0, tp1,  # per direction: this step, the next and the previous in forward order
    bs0, bs1, bsn0, bsn1, bsp0, bsp1,  # active rows at those steps (0: no such step)
    T, B, H,
    s_do_d, s_do_t, s_do_b,
    BLOCK_H: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_K: tl.constexpr,
    FUSE_DH: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    i_n = tl.program_id(0)
    i_m = tl.program_id(1)
    i_d = tl.program_id(2)
    t = _direction_scalar(t0, t1)
    t_next = _direction_scalar(tn0, tn1)
    t_prev = _direction_scalar(tp0, tp1)
    bs = _direction_scalar(bs0, bs1)
    bs_next = _direction_scalar(bsn0, bsn1)
    bs_prev = _direction_scalar(bsp0, bsp1)
    o_j = i_n * BLOCK_H + tl.arange(0, BLOCK_H)
    o_b = i_m * BLOCK_B + tl.arange(0, BLOCK_B)
    m_j = o_j < H
    m_b = o_b < bs
    m_jb = m_j[:, None] & m_b[None, :]
    row = o_b[None, :].to(tl.int64)
    G = 4 * H
    dT = i_d.to(tl.int64) * T
    d_row = i_d.to(tl.int64) * B + row  # row index into [D, B, X] tensors
    step_row = (dT + t) * B + row  # row index into [D, T, B, X] tensors at t

    if FUSE_DH:
        # dh^T [BLOCK_H, BLOCK_B] = W_hh^T[hidden block, :] @ dgates[t_next]^T, P == H here.
        m_next = o_b < bs_next
        p_wd = p_wt + i_d.to(tl.int64) * H * G + o_j[:, None].to(tl.int64) * G
        p_dn = p_dgates + ((dT + t_next) * B + o_b[None, :]) * G
        acc = tl.zeros((BLOCK_H, BLOCK_B), dtype=tl.float32)
        for k0 in range(0, G, BLOCK_K):
            o_k = k0 + tl.arange(0, BLOCK_K)
            m_k = o_k < G
            b_w = tl.load(p_wd + o_k[None, :], mask=m_j[:, None] & m_k[None, :], other=0.0).to(tl.float32)
            b_d = tl.load(p_dn + o_k[:, None], mask=m_k[:, None] & m_next[None, :], other=0.0)
            acc = tl.dot(b_w, b_d, acc, input_precision=DOT_PRECISION)
        dh = acc + tl.load(p_dhn + d_row * H + o_j[:, None],
                           mask=m_jb & (o_b >= bs_next)[None, :], other=0.0).to(tl.float32)
        dh += tl.load(p_dout + i_d.to(tl.int64) * s_do_d + t.to(tl.int64) * s_do_t + row * s_do_b + o_j[:, None],
                      mask=m_jb, other=0.0).to(tl.float32)
    else:
        dh = tl.load(p_dhr + d_row * H + o_j[:, None], mask=m_jb, other=0.0)

    p_sg = p_gates + step_row * G + o_j[:, None]
    gi = tl.load(p_sg, mask=m_jb, other=0.0).to(tl.float32)
    gf = tl.load(p_sg + H, mask=m_jb, other=0.0).to(tl.float32)
    gg = tl.load(p_sg + 2 * H, mask=m_jb, other=0.0).to(tl.float32)
    go = tl.load(p_sg + 3 * H, mask=m_jb, other=0.0).to(tl.float32)
    c = tl.load(p_cs + step_row * H + o_j[:, None], mask=m_jb, other=0.0).to(tl.float32)
    m_carry = (o_b < bs_prev)[None, :]
    c_prev = tl.load(p_cs + ((dT + t_prev) * B + row) * H + o_j[:, None], mask=m_jb & m_carry,
                     other=0.0).to(tl.float32)
    c_prev += tl.load(p_c0 + d_row * H + o_j[:, None], mask=m_jb & ~m_carry, other=0.0).to(tl.float32)
    p_dcj = p_dc + d_row * H + o_j[:, None]
    dc, d_i, d_f, d_g, d_o = cell_grads(dh, tl.load(p_dcj, mask=m_jb, other=0.0), gi, gf, gg, go, c, c_prev)
    p_dg = p_dgates + step_row * G + o_j[:, None]
    tl.store(p_dg, d_i, mask=m_jb)
    tl.store(p_dg + H, d_f, mask=m_jb)
    tl.store(p_dg + 2 * H, d_g, mask=m_jb)
    tl.store(p_dg + 3 * H, d_o, mask=m_jb)
    tl.store(p_dcj, dc * gf, mask=m_jb)
