"""The four-gate tile math shared by the fused_step and persistent kernels.

A program owns a block of hidden units j (BLOCK_H) for a block of batch rows (BLOCK_B),
and all four gates of those units, so the recurrent matmul, the activations and the
saved-gate stores are the same code in both tiers. Tiles are [BLOCK_H, BLOCK_B]
(transposed: the batch is the narrow side of the dot).
"""
import triton
import triton.language as tl

from .math import sigmoid, tanh


@triton.jit
def gate_dots(
    b_wi, b_wf, b_wg, b_wo,  # [BLOCK_H, BLOCK_K] W_hh tiles of the four gates for this K chunk
    b_h,  # [BLOCK_K, BLOCK_B] h_prev chunk, transposed
    acc_i, acc_f, acc_g, acc_o,  # [BLOCK_H, BLOCK_B] fp32 accumulators
    UPCAST_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    """Add ``W_gate[j, k] @ h_prev[k, b]`` for the four gates to their accumulators.

    The weight loads stay with the callers: how a kernel forms its pointer tiles decides
    its register pressure (a shared loader spilled on sm_80 or sm_90 for one tier or the
    other).
    """
    if UPCAST_DOT:
        # The interpreter computes half-precision dots wrongly: upcast there.
        b_h = b_h.to(tl.float32)
        b_wi = b_wi.to(tl.float32)
        b_wf = b_wf.to(tl.float32)
        b_wg = b_wg.to(tl.float32)
        b_wo = b_wo.to(tl.float32)
    acc_i = tl.dot(b_wi, b_h, acc_i, input_precision=DOT_PRECISION)
    acc_f = tl.dot(b_wf, b_h, acc_f, input_precision=DOT_PRECISION)
    acc_g = tl.dot(b_wg, b_h, acc_g, input_precision=DOT_PRECISION)
    acc_o = tl.dot(b_wo, b_h, acc_o, input_precision=DOT_PRECISION)
    return acc_i, acc_f, acc_g, acc_o


@triton.jit
def load_gate_inputs(
    p_g,  # [BLOCK_H, BLOCK_B] pointers to gx[t] of gate i (input projection + biases)
    H,  # elements between gates in gx
    m_jb,  # [BLOCK_H, BLOCK_B] mask of active (unit, row) pairs
):
    """gx[t] of the four gates, in gx's dtype (a prefetch carried across a barrier holds
    half the registers of fp32)."""
    x_i = tl.load(p_g, mask=m_jb, other=0.0)
    x_f = tl.load(p_g + H, mask=m_jb, other=0.0)
    x_g = tl.load(p_g + 2 * H, mask=m_jb, other=0.0)
    x_o = tl.load(p_g + 3 * H, mask=m_jb, other=0.0)
    return x_i, x_f, x_g, x_o


@triton.jit
def activate_loaded(x_i, x_f, x_g, x_o, acc_i, acc_f, acc_g, acc_o):
    """Activated gates (i, f, g, o) in fp32 from the recurrent part plus loaded gx[t]."""
    gi = sigmoid(acc_i + x_i.to(tl.float32))
    gf = sigmoid(acc_f + x_f.to(tl.float32))
    gg = tanh(acc_g + x_g.to(tl.float32))
    go = sigmoid(acc_o + x_o.to(tl.float32))
    return gi, gf, gg, go


@triton.jit
def activate_gates(
    p_g,  # [BLOCK_H, BLOCK_B] pointers to gx[t] of gate i (input projection + biases)
    H,  # elements between gates in gx
    m_jb,  # [BLOCK_H, BLOCK_B] mask of active (unit, row) pairs
    acc_i, acc_f, acc_g, acc_o,  # [BLOCK_H, BLOCK_B] fp32 recurrent pre-activations
):
    """Activated gates (i, f, g, o) in fp32 from the recurrent part plus gx[t].

    Each gate's load sits beside its activation rather than calling ``load_gate_inputs``
    and ``activate_loaded``: with the four loads first, the streamed fp32 forward's 32 x 32
    tiles with saved gates spilled 24-64 B (sm_80 under Triton 3.9, sm_90 under 3.6;
    tests/test_aot.py)."""
    gi = sigmoid(acc_i + tl.load(p_g, mask=m_jb, other=0.0).to(tl.float32))
    gf = sigmoid(acc_f + tl.load(p_g + H, mask=m_jb, other=0.0).to(tl.float32))
    gg = tanh(acc_g + tl.load(p_g + 2 * H, mask=m_jb, other=0.0).to(tl.float32))
    go = sigmoid(acc_o + tl.load(p_g + 3 * H, mask=m_jb, other=0.0).to(tl.float32))
    return gi, gf, gg, go


@triton.jit
def store_gates(
    p_sg,  # [BLOCK_H, BLOCK_B] pointers to the saved gates of gate i at this step
    H,  # elements between gates in the saved tensor
    gi, gf, gg, go,  # [BLOCK_H, BLOCK_B] fp32 activated gates
    m_jb,  # [BLOCK_H, BLOCK_B] mask
):
    """Save the activated gates for backward, cast once to the saved tensor's dtype."""
    tl.store(p_sg, gi.to(p_sg.dtype.element_ty), mask=m_jb)
    tl.store(p_sg + H, gf.to(p_sg.dtype.element_ty), mask=m_jb)
    tl.store(p_sg + 2 * H, gg.to(p_sg.dtype.element_ty), mask=m_jb)
    tl.store(p_sg + 3 * H, go.to(p_sg.dtype.element_ty), mask=m_jb)


@triton.jit
def cell_grads(dh, dc, gi, gf, gg, go, c, c_prev):
    """The LSTM cell's backward at one step: from the gradients of h and of the cell state
    reaching it (dh, dc) and the step's saved activated gates and cell states (c, and c_prev
    entering the step), the cell-state gradient inside the step dc_t and the four gates'
    pre-activation gradients. The gradient carried to the step before is dc_t * gf.
    tanh(c) is recomputed rather than saved: one more exp is cheaper than T*B*H more memory."""
    tc = tanh(c)
    dc_t = dc + dh * go * (1.0 - tc * tc)
    d_i = dc_t * gg * gi * (1.0 - gi)
    d_f = dc_t * c_prev * gf * (1.0 - gf)
    d_g = dc_t * gi * (1.0 - gg * gg)
    d_o = dh * tc * go * (1.0 - go)
    return dc_t, d_i, d_f, d_g, d_o
