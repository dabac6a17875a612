"""The pointwise tier's two kernels: the gate/state update of one step and its backward."""
import triton
import triton.language as tl

from ..common.gates import cell_grads
from ..common.math import sigmoid, tanh

# Arguments that change from step to step; every other integer is fixed for a whole scan.
DO_NOT_SPECIALIZE = ("t", "bs")


@triton.jit
def _round_to_bf16(x):
    # fp32 -> fp32 holding the nearest bfloat16 (ties to even), so the cast after it is
    # exact: the interpreter's own fp32 -> bf16 cast truncates instead of rounding.
    bits = x.to(tl.uint32, bitcast=True)
    bits = ((bits + (0x7FFF + ((bits >> 16) & 1))) >> 16) << 16
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _to_storage(x, DTYPE: tl.constexpr):
    if DTYPE == tl.bfloat16:
        x = _round_to_bf16(x.to(tl.float32))
    return x.to(DTYPE)


@triton.jit(do_not_specialize=list(DO_NOT_SPECIALIZE))
def forward_kernel(
    p_pre,  # [bs, 4H] gate pre-activations (i, f, g, o) of this step, row stride s_pre, unit column stride
    p_c,  # [B, H] compute dtype, contiguous: c_prev on entry, c on exit (rows < bs)
    p_h,  # [B, H] storage dtype, contiguous: receives the unprojected h (rows < bs)
    p_out,  # [T, B, H] storage dtype, contiguous: h also goes to out[t] (only when not PROJ)
    p_gates,  # [T, B, 4H] compute dtype, contiguous: activated gates saved at [t] (only when SAVE)
    p_cs,  # [T, B, H] compute dtype, contiguous: c saved at [t] (only when SAVE)
    p_hs,  # [T, B, H] compute dtype, contiguous: unprojected h saved at [t] (only when SAVE and PROJ)
    t,  # step index into the [T, ...] tensors; varies per step, never specialized
    bs,  # active rows at this step (the first bs rows); varies per step, never specialized
    B,  # rows of the state and saved tensors
    H,  # hidden size
    s_pre,  # row stride of p_pre, in elements
    BLOCK_B: tl.constexpr,  # rows per program
    BLOCK_H: tl.constexpr,  # hidden units per program, a power of two >= 32
    SAVE: tl.constexpr,  # write gates and cs (training)
    PROJ: tl.constexpr,  # h is projected later by torch: save it to hs, do not write out
):
    i_b = tl.program_id(0)
    i_h = tl.program_id(1)
    o_b = i_b.to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    o_h = i_h * BLOCK_H + tl.arange(0, BLOCK_H)
    m = (o_b < bs)[:, None] & (o_h < H)[None, :]
    cdt = p_c.dtype.element_ty

    o_pre = o_b[:, None] * s_pre + o_h[None, :]
    # Upcast right after each load: all gate math runs in the compute dtype.
    b_i = tl.load(p_pre + o_pre, mask=m, other=0.0).to(cdt)
    b_f = tl.load(p_pre + o_pre + H, mask=m, other=0.0).to(cdt)
    b_g = tl.load(p_pre + o_pre + 2 * H, mask=m, other=0.0).to(cdt)
    b_o = tl.load(p_pre + o_pre + 3 * H, mask=m, other=0.0).to(cdt)
    o_state = o_b[:, None] * H + o_h[None, :]
    b_c_prev = tl.load(p_c + o_state, mask=m, other=0.0).to(cdt)

    b_i = sigmoid(b_i)
    b_f = sigmoid(b_f)
    b_g = tanh(b_g)
    b_o = sigmoid(b_o)
    b_c = b_f * b_c_prev + b_i * b_g
    b_h = b_o * tanh(b_c)

    tl.store(p_c + o_state, b_c.to(p_c.dtype.element_ty), mask=m)
    tl.store(p_h + o_state, _to_storage(b_h, p_h.dtype.element_ty), mask=m)
    # int64: (t * B + row) * 4H passes 2^31 on long sequences with large batches.
    o_row = o_b + t.to(tl.int64) * B
    o_step = o_row[:, None] * H + o_h[None, :]
    if not PROJ:
        tl.store(p_out + o_step, _to_storage(b_h, p_out.dtype.element_ty), mask=m)
    if SAVE:
        o_gates = o_row[:, None] * (4 * H) + o_h[None, :]
        tl.store(p_gates + o_gates, b_i.to(p_gates.dtype.element_ty), mask=m)
        tl.store(p_gates + o_gates + H, b_f.to(p_gates.dtype.element_ty), mask=m)
        tl.store(p_gates + o_gates + 2 * H, b_g.to(p_gates.dtype.element_ty), mask=m)
        tl.store(p_gates + o_gates + 3 * H, b_o.to(p_gates.dtype.element_ty), mask=m)
        tl.store(p_cs + o_step, b_c.to(p_cs.dtype.element_ty), mask=m)
        if PROJ:
            tl.store(p_hs + o_step, b_h.to(p_hs.dtype.element_ty), mask=m)


@triton.jit(do_not_specialize=list(DO_NOT_SPECIALIZE))
def backward_kernel(
    p_dh,  # [bs, H] compute dtype, contiguous: total grad into the unprojected h of step t
    p_dc,  # [B, H] compute dtype, contiguous: grad into c of step t on entry, into c_prev on exit (rows < bs)
    p_gates,  # [T, B, 4H] compute dtype, contiguous: saved activated gates (i, f, g, o)
    p_cs,  # [T, B, H] compute dtype, contiguous: saved c after each step
    p_c_prev,  # [T, B, H] compute dtype, contiguous: c entering each step
    p_dgates,  # [T, B, 4H] compute dtype, contiguous: grad of the pre-activations, written at [t]
    t,  # step index; varies per step, never specialized
    bs,  # active rows at this step (the first bs rows); varies per step, never specialized
    B,  # rows of the state and saved tensors
    H,  # hidden size
    BLOCK_B: tl.constexpr,  # rows per program
    BLOCK_H: tl.constexpr,  # hidden units per program, a power of two >= 32
):
    i_b = tl.program_id(0)
    i_h = tl.program_id(1)
    o_b = i_b.to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    o_h = i_h * BLOCK_H + tl.arange(0, BLOCK_H)
    m = (o_b < bs)[:, None] & (o_h < H)[None, :]
    cdt = p_dc.dtype.element_ty

    o_state = o_b[:, None] * H + o_h[None, :]
    o_row = o_b + t.to(tl.int64) * B
    o_step = o_row[:, None] * H + o_h[None, :]
    o_gates = o_row[:, None] * (4 * H) + o_h[None, :]
    b_dh = tl.load(p_dh + o_state, mask=m, other=0.0).to(cdt)
    b_dc = tl.load(p_dc + o_state, mask=m, other=0.0).to(cdt)
    b_i = tl.load(p_gates + o_gates, mask=m, other=0.0).to(cdt)
    b_f = tl.load(p_gates + o_gates + H, mask=m, other=0.0).to(cdt)
    b_g = tl.load(p_gates + o_gates + 2 * H, mask=m, other=0.0).to(cdt)
    b_o = tl.load(p_gates + o_gates + 3 * H, mask=m, other=0.0).to(cdt)
    b_c = tl.load(p_cs + o_step, mask=m, other=0.0).to(cdt)
    b_c_prev = tl.load(p_c_prev + o_step, mask=m, other=0.0).to(cdt)

    b_dc, b_di, b_df, b_dg, b_do = cell_grads(b_dh, b_dc, b_i, b_f, b_g, b_o, b_c, b_c_prev)

    dt_out = p_dgates.dtype.element_ty
    tl.store(p_dgates + o_gates, b_di.to(dt_out), mask=m)
    tl.store(p_dgates + o_gates + H, b_df.to(dt_out), mask=m)
    tl.store(p_dgates + o_gates + 2 * H, b_dg.to(dt_out), mask=m)
    tl.store(p_dgates + o_gates + 3 * H, b_do.to(dt_out), mask=m)
    tl.store(p_dc + o_state, (b_dc * b_f).to(p_dc.dtype.element_ty), mask=m)
