"""The TorchScript-scripted scan: the CPU path, and the only file that uses torch.jit.

Forward and backward of one layer direction are each one scripted function, so the
time loop runs in the TorchScript interpreter with no Python per step. They are
registered as the custom op pair ``lstm_kernels::torchscript_scan[_backward]``
(see ``ops.py``); autograd never records per-step ops.

Dimensions: T seq len, B batch, H hidden, P = proj_size or H, G = 4H.
Shapes follow ``ops.py``: gx [T,B,G], h0 [B,P], c0 [B,H], w_hh [G,P], w_hr [P,H].
Gate order is nn.LSTM's (i, f, g, o), also in the saved ``gates``.

Why it is written the way it is (the choices and what was dropped: ``docs/decisions.md``):

* On CPU the time per step of a small LSTM is the number of interpreter ops, not
  FLOPs (about 0.7 us per op on the reference machine, against 1.4 us for a whole
  oneDNN step at B=1, H=64). So the loops use as few ops per step as possible: outputs
  are written in place with ``out=`` into preallocated [T, ...] buffers (no lists, no
  ``torch.stack``), the hidden state is a view of the previous output row, and the
  padded (no ``batch_sizes``) loop is separate from the packed one so it carries no
  row slicing.
* The gates stay in nn.LSTM's order, and no converted copy of the weights is kept.
  A layout with the weights reordered (and the g rows doubled) saves at most one op per
  step over the in-place doubling below, but a copy cached across calls cannot see
  changes made through ``p.data`` (gradcheck perturbs inputs that way, and target-network
  soft updates do too), and one made per call costs more than it saves at small T*B.
  With nothing cached, nothing can go stale.
* The cell input's tanh comes from the one sigmoid over all four gate blocks for steps of
  ``GATE_SIGMOID_MIN`` elements or more: the g block of the pre-activations is doubled in
  place first, and tanh(g) = 2 sigmoid(2g) - 1 is one op after it.
* Large float32 step matmuls go through oneDNN's linear (``DNN_MIN_MACS`` below, lower
  for few-row products with P >= 256), with w_hh reordered once per call into oneDNN's
  blocked layout for long scans; small ones use ``torch.addmm`` with ``w_hh.t()`` (a
  transposed view): BLAS is faster with the transposed flag than with a contiguous
  transposed copy, except for single rows (``MATVEC_COPY_MIN_T``). With more than one
  thread, single-row products run as one batched product over gate blocks
  (``_split_rows``), since MKL keeps a single-row product on one thread. The layer's
  input projection (computed by ``loop.py`` through ``Backend.input_projection``) goes
  through oneDNN's linear too, as the custom op ``lstm_kernels::dnn_linear``
  (``input_projection``).
* A small padded bidirectional layer runs both directions in one loop
  (``_paired_forward``/``_paired_backward``, registered as the direction-stacked op pair
  ``lstm_kernels::torchscript_bidir_scan[_backward]``): one ``baddbmm`` over both
  directions and one set of pointwise ops per step, half the interpreter ops of two
  scans. The reversed direction is flipped in time around the loop, so both run forward
  over steps.
* Backward moves every pointwise factor that does not depend on the incoming gradient
  (sigmoid/tanh derivatives, tanh(c), the products with the other gates) out of the
  time loop into a few ops over a block of steps (``BACKWARD_BLOCK_ELEMS``; all T steps
  for small layers), so the loop does about half the ops of the textbook form. dW_hh and
  dW_hr are two or three large matmuls after the loop (in blocks of rows, ``_mm_tn``),
  taking h[t-1] from ``out`` shifted by one step instead of materialising it.
* The graph executor's profiling optimisations are switched off around the calls
  (``torch.jit.optimized_execution(False)``, thread-local and restored on exit): on CPU
  they fuse nothing here (NNC's CPU fuser is off by default), but they re-profile and
  re-specialise the graph for every new shape and ``save`` flag, which measured slower.
"""
from __future__ import annotations

import warnings
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .ops import register_scan


# oneDNN's linear runs float32 matmuls at about twice MKL's speed on the reference machine
# (an AMD EPYC, where MKL does not take its AVX-512 path); it costs ~10 us more per call,
# so it is used only from DNN_MIN_MACS multiply-adds per matmul. Where PyTorch lacks the op
# (built without oneDNN) the helpers fall back to BLAS, and the scripted code is the same.
DNN_MIN_MACS = 1 << 21
# Below that, MKL is still the slower one where the summed dimension P is 256 or more and the
# product has a few rows (1 thread, us per step product, MKL / oneDNN with the blocked
# weight: B=4, H=256 43 / 26; B=2, H=512 106 / 57; but B=1, H=512 57 / 65 and every H=128
# shape a tie or MKL's). With 2 threads MKL's single-row and few-row products stay on one
# thread while oneDNN's use both (B=1, H=512 57 / 42; B=2, H=256 28 / 19; B=1, H=256 14 /
# 19), so there the bound halves and B=1 qualifies.
DNN_SMALL_MIN_MACS = 1 << 20
DNN_SMALL_MIN_K = 256
HAS_DNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
# A weight reordered once into oneDNN's blocked layout makes each step's matmul ~30% faster
# at B=16, H=256 (less at larger B); the reorder costs 2-3 steps, so it pays from this T.
# It is redone every call: nothing is cached, so a changed parameter can never be stale.
PACK_MIN_T = 32
HAS_DNN_REORDER = HAS_DNN_LINEAR and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")

if HAS_DNN_LINEAR:

    def _linear(x: Tensor, w: Tensor) -> Tensor:
        """x @ w.t() through oneDNN (x [M, K], w [N, K]; strided operands are copied inside)."""
        return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")

    def _linear_add(x: Tensor, other: Tensor, w: Tensor) -> Tensor:
        """other + x @ w.t() through oneDNN, the add fused into the matmul."""
        return torch.ops.mkldnn._linear_pointwise(x, other, w, None, "add")

else:

    def _linear(x: Tensor, w: Tensor) -> Tensor:
        """x @ w.t() (BLAS fallback)."""
        return torch.mm(x, w.t())

    def _linear_add(x: Tensor, other: Tensor, w: Tensor) -> Tensor:
        """other + x @ w.t() (BLAS fallback)."""
        return torch.addmm(other, x, w.t())


# The input projection of a layer (all steps and directions, [T*B, I] x [I, D*4H]) goes
# through oneDNN's linear too, from this many multiply-adds (see ``input_projection``;
# crossover measured with backward between 2M and 4M: the custom op costs ~40 us more).
PROJ_MIN_MACS = 1 << 22


# ATen's CPU tanh runs at ~2.2 ns per float32 element on the reference machine, sigmoid at
# ~0.25: from this many elements per call, tanh(x) = 2 sigmoid(2x) - 1 in three ops is
# faster than one tanh (measured 9.8 -> 5.3 us at 4096 elements, 35 -> 9 us at 16384;
# break-even near 1500). Padded forward steps use it from B * H elements, the backward for
# tanh(c) of the whole sequence. The result differs from tanh by at most ~2e-7.
SIGMOID_TANH_MIN = 2048

# The cell input's tanh needs no sigmoid of its own: its pre-activation block is doubled in
# place before the one sigmoid over all four gate blocks, and tanh(g) = 2 sigmoid(2g) - 1
# follows in one op, three ops for sigmoid and tanh instead of two. From this many B x H
# elements that is faster than ATen's tanh (measured, 1 thread, the two activations of a
# step in the scripted loop: 4.1 -> 3.6 us at 1024 elements, but 2.5 -> 3.0 at 512; against
# the three-op sigmoid form used before from 2048 elements: 6.2 -> 4.5 us at 2048, 8.6 ->
# 6.4 at 4096, 24 -> 18 at 16384). The doubling is exact, so the result is that form's.
GATE_SIGMOID_MIN = 1024


# The backward (padded and packed) computes its gradient-independent factors (five
# [steps, B, H]-sized tensors and their temporaries) in blocks of steps of about this many
# B x H elements each, small enough to stay in cache; small layers take all T steps in one
# block, as before.
# Measured (1 thread, training of one layer): T=512, B=64, H=256 1335 ms in one block,
# 927-944 ms with blocks of 2^14-2^18 elements; T=128 shapes unchanged within noise.
BACKWARD_BLOCK_ELEMS = 1 << 17


# Both directions of a bidirectional layer share one scripted loop (``use_paired``) up to
# this many multiply-adds per direction and step matmul ([B, P] x [P, 4H]) and this many
# elements of w_hh per direction. Measured: a win where the step is
# interpreter-bound (H=64, B<=16); at B=1 with H>=256, and at B=64, H=64 in training, MKL's
# batched matmul is slower than two plain ones, and pairing lost 5-15%.
PAIRED_MAX_MACS = 1 << 18
PAIRED_MAX_WEIGHT = 1 << 16


def _dnn_eligible(x: Tensor) -> bool:
    """float32 on CPU with oneDNN's linear available and ``torch.backends.mkldnn`` enabled."""
    return (
        HAS_DNN_LINEAR
        and x.dtype == torch.float32
        and x.device.type == "cpu"
        and torch.backends.mkldnn.enabled
    )


@torch.library.custom_op("lstm_kernels::dnn_linear", mutates_args=())
def dnn_linear(x: Tensor, w: Tensor, b: Optional[Tensor]) -> Tensor:
    """``F.linear(x, w, b)`` through oneDNN where it can run (float32 on CPU), else F.linear.

    ``_linear_pointwise`` has no autograd formula (gradients through it are silently
    None), so it is wrapped as a custom op whose backward is this op again (two matmuls)
    plus a sum; that also makes it differentiable twice and opaque to torch.compile.
    """
    if _dnn_eligible(x):
        if b is None and x.dim() == 2 and x.stride(0) == 1 and w.stride(0) == 1:
            # Both operands are transposed views of row-major [M, .] tensors, as in the
            # weight gradient grad^T @ x: blocked, see _mm_tn.
            return _mm_tn(x.t(), w.t(), True)
        shape = x.shape
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]), w, b, "none", [], "")
        return y.view(*shape[:-1], w.shape[0])
    return torch.nn.functional.linear(x, w, b)


@dnn_linear.register_fake
def _(x, w, b):
    return x.new_empty(*x.shape[:-1], w.shape[0])


def _dnn_linear_setup(ctx, inputs, output):
    x, w, b = inputs
    ctx.has_b = b is not None
    ctx.save_for_backward(x, w)


def _dnn_linear_backward(ctx, grad):
    x, w = ctx.saved_tensors
    grad2 = grad.reshape(-1, grad.shape[-1])  # [M, N]
    d_x = d_w = d_b = None
    if ctx.needs_input_grad[0]:
        d_x = dnn_linear(grad, w.t(), None)  # grad @ w
    if ctx.needs_input_grad[1]:
        d_w = dnn_linear(grad2.t(), x.reshape(-1, x.shape[-1]).t(), None)  # grad^T @ x
    if ctx.has_b and ctx.needs_input_grad[2]:
        d_b = grad2.sum(0)
    return d_x, d_w, d_b


dnn_linear.register_autograd(_dnn_linear_backward, setup_context=_dnn_linear_setup)


def input_projection(x: Tensor, w_ih: Tensor, bias: Optional[Tensor]) -> Tensor:
    """``F.linear(x, w_ih, bias)`` for the TorchScript backend: through oneDNN for large
    float32 CPU inputs (MKL's sgemm runs at about half oneDNN's speed on the reference
    machine), else F.linear itself (no custom-op call overhead for small layers)."""
    if _dnn_eligible(x) and x.numel() * w_ih.shape[0] >= PROJ_MIN_MACS:
        return dnn_linear(x, w_ih, bias)
    return torch.nn.functional.linear(x, w_ih, bias)


def _mm_tn(a: Tensor, b: Tensor, dnn: bool) -> Tensor:
    """a^T @ b (a [M, N], b [M, K]): a weight gradient summed over M = steps x batch.

    oneDNN's linear takes its operands row-major, so both need transposing. Transposing
    all M rows at once copied up to 134 MB per operand (T=512, B=64, H=256: 80 ms per
    copy, freshly allocated memory included); blocks of 512 rows are transposed in cache
    and accumulated with the fused add instead (197 -> 110 ms there, 44 -> 28 ms at T=128).
    """
    if not dnn:
        return torch.mm(a.t(), b)
    M = a.size(0)
    R = 512
    acc = _linear(a[0:R].t().contiguous(), b[0:R].t().contiguous())
    for i in range(R, M, R):
        acc = _linear_add(a[i:i + R].t().contiguous(), acc, b[i:i + R].t().contiguous())
    return acc


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype == torch.float16 or dtype == torch.bfloat16:
        return torch.float32
    return dtype


def _unbind_all(xs: List[Tensor], dim: int) -> List[List[Tensor]]:
    """Each tensor's per-step views along ``dim``, made before a time loop: indexing a list
    costs the interpreter far less than the select/slice op it replaces."""
    return [x.unbind(dim) for x in xs]


def _gate_views(gates: Tensor, H: int) -> List[Tensor]:
    """[..., 4H] gates, then its i, f, g, o slices."""
    return [gates, gates.narrow(-1, 0, H), gates.narrow(-1, H, H), gates.narrow(-1, 2 * H, H),
            gates.narrow(-1, 3 * H, H)]


def _repeat(xs: List[Tensor], T: int) -> List[List[Tensor]]:
    """Each scratch tensor as the view of all T steps (a list of T references to it). Views
    of one expanded (stride-0) tensor would do the same, but measured 30% slower to write
    into with out= (2.95 -> 4.0 ms at B=1, H=64, T=512)."""
    return [[x] * T for x in xs]


def _forward_lists(gx: Tensor, out: Tensor, gates: Tensor, cs: Tensor, hs: Tensor, act: Tensor, c: Tensor,
                   hr_buf: Tensor, save: bool, has_proj: bool, dim: int, H: int) -> List[List[Tensor]]:
    """Per-step views (time along ``dim``) of a padded forward's operands: gx, out, the
    activated gates (all four, then i, f, g, o), the cell state and the unprojected h.
    Without ``save`` every step writes the same scratch rows (``act``, ``c`` in place,
    ``hr_buf``) instead of the saved tensors."""
    T = gx.size(dim)
    lists = _unbind_all([gx, out], dim)
    if save:
        lists += _unbind_all(_gate_views(gates, H) + [cs], dim)
    else:
        lists += _repeat(_gate_views(act, H) + [c], T)
    lists.append(hs.unbind(dim) if save and has_proj else [hr_buf] * T)
    return lists


def _scan_forward(
    gx: Tensor,  # [T, B, 4H] input projection plus biases, nn.LSTM gate order
    h0: Tensor,  # [B, P]
    c0: Tensor,  # [B, H]
    w_hh: Tensor,  # [4H, P]
    w_hr: Optional[Tensor],  # [P, H] or None
    batch_sizes: List[int],  # [T] non-increasing, or [] when every row is active
    reverse: bool,
    save: bool,
    dnn: bool,  # step matmuls through oneDNN (float32 only)
    w_step: Tensor,  # [4H, P] w_hh as the step matmul takes it (_step_weight), or [4, P, H]: gate-split (_split_rows)
    sig_tanh: bool,  # padded steps compute tanh(c) as 2 sigmoid(2c) - 1 (see SIGMOID_TANH_MIN)
    g_sig: bool,  # padded steps take tanh(g) from the gates' sigmoid (see GATE_SIGMOID_MIN)
):
    T = gx.size(0)
    B = gx.size(1)
    H = c0.size(1)
    P = h0.size(1)
    dtype = gx.dtype
    cdt = _compute_dtype(dtype)
    low = cdt != dtype
    has_bs = len(batch_sizes) > 0
    dev = gx.device
    if has_bs:
        # Inactive rows of the output are zero (nn.LSTM's padding value).
        out = torch.zeros(T, B, P, dtype=dtype, device=dev)
    else:
        out = torch.empty(T, B, P, dtype=dtype, device=dev)
    if save:
        gates_s = torch.empty(T, B, 4 * H, dtype=cdt, device=dev)
        cs = torch.empty(T, B, H, dtype=cdt, device=dev)
    else:
        gates_s = torch.empty(0, dtype=cdt, device=dev)
        cs = torch.empty(0, dtype=cdt, device=dev)
    if save and w_hr is not None:
        hs = torch.empty(T, B, H, dtype=cdt, device=dev)
    else:
        hs = torch.empty(0, dtype=cdt, device=dev)
    split = w_step.dim() == 3
    w_hh_t = w_hh.t() if dnn or split else w_step.t()
    w_hr_t = w_hr.t() if w_hr is not None else w_hh_t
    w_hr_c = w_hr.contiguous() if w_hr is not None else w_hh
    # Scratch rows reused every step; only the batch rows active at a step are used.
    act = torch.empty(B, 4 * H, dtype=cdt, device=dev)
    tc = torch.empty(B, H, dtype=cdt, device=dev)
    hr_buf = torch.empty(B, H, dtype=cdt, device=dev)
    minus_one = torch.full((B, H), -1.0, dtype=cdt, device=dev)
    c = c0.to(cdt).clone()

    if not has_bs:
        # Every per-step operand is taken from a list made before the loop (unbind): list
        # indexing costs the interpreter far less than the select/slice/chunk ops it
        # replaces, and the step is 7 ops (measured 8.2 -> 5.5 us/step at B=1, H=64).
        gx_l, out_l, a_l, i_l, f_l, g_l, o_l, c_l, hr_l = _forward_lists(
            gx, out, gates_s, cs, hs, act, c, hr_buf, save, w_hr is not None, 0, H)
        pre = torch.empty(B, 4 * H, dtype=cdt, device=dev)  # pre-activations, when not from oneDNN
        pre_g = pre[:, 2 * H:3 * H]
        fc = torch.empty(B, H, dtype=cdt, device=dev)
        x2 = torch.empty(B, H, dtype=cdt, device=dev)
        if split:
            # B = 1: [1, 4H] rows are [4, 1, H] gate blocks, so one batched product over the
            # four gates writes pre in place (see _split_rows).
            gx4_l = gx.squeeze(1).reshape(T, 4, H).unsqueeze(2).unbind(0)
            pre4 = pre.view(4, 1, H)
        else:
            gx4_l = gx_l
            pre4 = pre
        order = [T - 1 - s for s in range(T)] if reverse else [s for s in range(T)]
        h = h0
        for t in order:
            if dnn:
                g = _linear_add(h, gx_l[t], w_step)
                g_pre = g[:, 2 * H:3 * H]
            elif split:
                torch.baddbmm(gx4_l[t], h.expand(4, 1, P), w_step, out=pre4)
                g = pre
                g_pre = pre_g
            elif low:
                g = torch.addmm(gx_l[t], h, w_hh_t).to(cdt)
                g_pre = g[:, 2 * H:3 * H]
            else:
                g = torch.addmm(gx_l[t], h, w_hh_t, out=pre)
                g_pre = pre_g
            # tanh(g) and tanh(c) written out in place: as a called helper the step measured
            # ~8% slower at B=1, H=64 (2.85 -> 3.2 ms at T=512).
            if g_sig:
                # The g block doubled in place, so the one sigmoid of all four blocks
                # yields sigmoid(2g), and tanh(g) = 2 sigmoid(2g) - 1 is one op more.
                g_pre.mul_(2.0)
                torch.sigmoid(g, out=a_l[t])
                torch.add(minus_one, g_l[t], alpha=2.0, out=g_l[t])
            else:
                torch.sigmoid(g, out=a_l[t])
                torch.tanh(g_pre, out=g_l[t])
            torch.mul(f_l[t], c, out=fc)
            c = torch.addcmul(fc, i_l[t], g_l[t], out=c_l[t])
            if sig_tanh:
                torch.mul(c, 2.0, out=x2)
                torch.sigmoid(x2, out=tc)
                torch.add(minus_one, tc, alpha=2.0, out=tc)
            else:
                torch.tanh(c, out=tc)
            if w_hr is not None:
                hr = torch.mul(o_l[t], tc, out=hr_l[t])
                if low:
                    h = torch.mm(hr.to(dtype), w_hr_t, out=out_l[t])
                elif dnn:
                    h = out_l[t].copy_(_linear(hr, w_hr_c))
                else:
                    h = torch.mm(hr, w_hr_t, out=out_l[t])
            elif low:
                h = out_l[t].copy_(o_l[t] * tc)
            else:
                h = torch.mul(o_l[t], tc, out=out_l[t])
        # h is a view of out, and c one of cs or a scratch buffer: outputs must not alias.
        return out, h.clone(), c.to(c0.dtype, copy=True), gates_s, cs, hs

    # Packed: only the first batch_sizes[t] rows advance at step t; the others keep
    # their state (finished sequences forward, not yet started ones in reverse).
    h = h0.clone()
    for s in range(T):
        t = T - 1 - s if reverse else s
        bs = batch_sizes[t]
        hb = h[:bs]
        cb = c[:bs]
        if dnn:
            g = _linear_add(hb, gx[t, :bs], w_step)
        else:
            g = torch.addmm(gx[t, :bs], hb, w_hh_t)
        if low:
            g = g.to(cdt)
        a = gates_s[t, :bs] if save else act[:bs]
        if g_sig:  # as in the padded loop; g is a fresh tensor here
            g[:, 2 * H:3 * H].mul_(2.0)
            torch.sigmoid(g, out=a)
            i, f, gg, o = a.chunk(4, 1)
            torch.add(minus_one[:bs], gg, alpha=2.0, out=gg)
        else:
            torch.sigmoid(g, out=a)
            i, f, gg, o = a.chunk(4, 1)
            torch.tanh(g[:, 2 * H:3 * H], out=gg)
        cb.mul_(f).addcmul_(i, gg)
        if save:
            cs[t, :bs] = cb
        tcb = torch.tanh(cb, out=tc[:bs])
        if w_hr is not None:
            hr = torch.mul(o, tcb, out=hs[t, :bs] if save else hr_buf[:bs])
            if low:
                torch.mm(hr.to(dtype), w_hr_t, out=hb)
            elif dnn:
                hb.copy_(_linear(hr, w_hr_c))
            else:
                torch.mm(hr, w_hr_t, out=hb)
        elif low:
            hb.copy_(o * tcb)
        else:
            torch.mul(o, tcb, out=hb)
        out[t, :bs] = hb
    return out, h, c.to(c0.dtype), gates_s, cs, hs


def _step_factors(gates: Tensor, cs: Tensor, c_prev: Tensor, sig_tanh: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """The backward's factors that do not depend on the incoming gradient, for the steps of
    ``gates`` [n, B, 4H] (activated), ``cs`` and ``c_prev`` [n, B, H]:
    k [n, B, 3, H] (dL/d pre-activation of i, f, g = dc * k[:, :, j]), q and r [n, B, H]
    (dL/d pre-activation of o = dhr * q; dc gains dhr * r)."""
    n = gates.size(0)
    B = gates.size(1)
    H = cs.size(2)
    i_a, f_a, g_a, o_a = gates.chunk(4, 2)
    if sig_tanh:
        tanh_c = torch.sigmoid(cs * 2.0).mul_(2.0).sub_(1.0)  # tanh, at sigmoid's speed
    else:
        tanh_c = torch.tanh(cs)
    k = torch.empty(n, B, 3, H, dtype=gates.dtype, device=gates.device)
    torch.mul(g_a, i_a * (1.0 - i_a), out=k[:, :, 0])
    torch.mul(c_prev, f_a * (1.0 - f_a), out=k[:, :, 1])
    torch.mul(i_a, 1.0 - g_a * g_a, out=k[:, :, 2])
    q = tanh_c * o_a * (1.0 - o_a)
    r = o_a * (1.0 - tanh_c * tanh_c)
    return k, q, r


def _block_starts(T: int, chunk: int, reverse: bool) -> List[int]:
    """First steps of the backward's blocks of ``chunk`` steps, in the order it visits them
    (the reverse of the scan's)."""
    starts = [lo for lo in range(0, T, chunk)]
    if not reverse:
        starts.reverse()
    return starts


def _gate_grads_step(dc: Tensor, dc3: Tensor, dhr: Tensor, r: Tensor, k: Tensor, q: Tensor, f: Tensor,
                     d_ifg: Tensor, d_o: Tensor):
    """One backward step's pointwise part (inlined by TorchScript): dc gains dhr * r, the
    gate gradients are written (d_ifg = dc * k, d_o = dhr * q), and dc becomes dc * f for
    the step before. ``dc3`` is ``dc`` viewed with a size-1 gate axis."""
    dc.addcmul_(dhr, r)
    torch.mul(dc3, k, out=d_ifg)
    torch.mul(dhr, q, out=d_o)
    dc.mul_(f)


def _scan_backward(
    grad_out: Tensor,  # [T, B, P]
    grad_h_n: Tensor,  # [B, P]
    grad_c_n: Tensor,  # [B, H]
    h0: Tensor,  # [B, P]
    c0: Tensor,  # [B, H]
    w_hh: Tensor,  # [4H, P]
    w_hr: Optional[Tensor],  # [P, H] or None
    batch_sizes: List[int],  # [T] non-increasing, or []
    reverse: bool,
    out: Tensor,  # [T, B, P] forward output (zero in inactive rows)
    gates: Tensor,  # [T, B, 4H] activated gates, compute dtype
    cs: Tensor,  # [T, B, H] cell state after each step, compute dtype
    hs: Tensor,  # [T, B, H] unprojected hidden state (w_hr only), compute dtype
    dnn: bool,  # matmuls through oneDNN (float32 only)
    w_step: Tensor,  # [P, 4H] w_hh^T as the step matmul takes it under dnn (maybe oneDNN-blocked),
    #   or [S, 4H, P/S]: w_hh split by columns for single-row steps (_split_rows)
    dnn_w: bool,  # the weight-gradient matmuls after the loop through oneDNN (float32 only)
    sig_tanh: bool,  # tanh(c) as 2 sigmoid(2c) - 1 (see SIGMOID_TANH_MIN)
    chunk: int,  # steps per block of precomputed factors (see BACKWARD_BLOCK_ELEMS)
):
    T = out.size(0)
    B = out.size(1)
    H = c0.size(1)
    P = h0.size(1)
    dtype = out.dtype
    cdt = gates.dtype
    dev = out.device
    has_bs = len(batch_sizes) > 0
    c0c = c0.to(cdt)

    # c[t-1] in step order: the state each step started from.
    if reverse:
        c_prev = torch.cat([cs[1:], c0c.unsqueeze(0)], 0)
    else:
        c_prev = torch.cat([c0c.unsqueeze(0), cs[:-1]], 0)
    bs_t = torch.tensor(batch_sizes, dtype=torch.long)
    if has_bs and reverse:
        # In reverse a row starts at its own last valid step, from c0: where it was not
        # active one step later, its previous cell state is c0, not cs[t+1] (zero there).
        nxt = torch.cat([bs_t[1:], torch.zeros(1, dtype=torch.long)]).to(dev)
        rows = torch.arange(B, device=dev).unsqueeze(0)
        started = (rows >= nxt.unsqueeze(1)).unsqueeze(2)  # [T, B, 1]
        c_prev = torch.where(started, c0c.unsqueeze(0), c_prev)

    f_a = gates[:, :, H:2 * H]

    # With batch_sizes, rows inactive at a step are never written and must read as zero.
    if has_bs:
        d_gates = torch.zeros(T, B, 4 * H, dtype=cdt, device=dev)
    else:
        d_gates = torch.empty(T, B, 4 * H, dtype=cdt, device=dev)
    d_ifg = d_gates[:, :, 0:3 * H].view(T, B, 3, H)
    d_o = d_gates[:, :, 3 * H:4 * H]
    g_out = grad_out.to(cdt)
    dh = grad_h_n.to(cdt).clone()
    dc = grad_c_n.to(cdt).clone()
    w_hh_c = w_hh.to(cdt)
    if w_hr is not None:
        w_hr_c = w_hr.to(cdt)
        w_hr_tc = w_hr_c.t().contiguous() if dnn else w_hr_c
        if has_bs:
            d_hs_all = torch.zeros(T, B, P, dtype=cdt, device=dev)
        else:
            d_hs_all = torch.empty(T, B, P, dtype=cdt, device=dev)
    else:
        w_hr_c = w_hh_c
        w_hr_tc = w_hh_c
        d_hs_all = torch.empty(0, dtype=cdt, device=dev)

    if not has_bs:
        # Blocks of ``chunk`` steps, in loop order: each block's gradient-independent
        # factors are computed just before its steps, so they are small and in cache (as
        # whole-sequence tensors they were fresh 34-100 MB allocations at T=512, B=64).
        # Per-step operands come from lists made per block, as in the forward; dc and
        # (without oneDNN) dh are updated in place, dc3 is a [B, 1, H] view of dc.
        dhr_buf = torch.empty(B, H, dtype=cdt, device=dev)
        dc3 = dc.unsqueeze(1)
        split = w_step.dim() == 3
        S = w_step.size(0) if split else 1
        dh_s = dh.view(S, 1, P // S) if split else dh  # B = 1 under split: dh's columns in S blocks
        for lo in _block_starts(T, chunk, reverse):
            hi = min(lo + chunk, T)
            n = hi - lo
            k, q, r = _step_factors(gates[lo:hi], cs[lo:hi], c_prev[lo:hi], sig_tanh)
            go_l, r_l, q_l, k_l, fa_l, dg_l, difg_l, do_l = _unbind_all(
                [g_out[lo:hi], r, q, k, f_a[lo:hi], d_gates[lo:hi], d_ifg[lo:hi], d_o[lo:hi]], 0)
            dhs_l = d_hs_all[lo:hi].unbind(0) if w_hr is not None else go_l
            order = [s for s in range(n)] if reverse else [n - 1 - s for s in range(n)]
            for t in order:
                if w_hr is not None:
                    dh_t = torch.add(dh, go_l[t], out=dhs_l[t])
                    dhr = _linear(dh_t, w_hr_tc) if dnn else torch.mm(dh_t, w_hr_c, out=dhr_buf)
                else:
                    dhr = torch.add(dh, go_l[t], out=dhr_buf)
                _gate_grads_step(dc, dc3, dhr, r_l[t], k_l[t], q_l[t], fa_l[t], difg_l[t], do_l[t])
                if dnn:
                    dh = _linear(dg_l[t], w_step)
                elif split:
                    torch.bmm(dg_l[t].expand(S, 1, 4 * H), w_step, out=dh_s)
                else:
                    dh = torch.mm(dg_l[t], w_hh_c, out=dh)
    else:
        # Packed: the same blocks of steps (the factors of finished rows are zero and unused),
        # each step slicing its active rows.
        for lo in _block_starts(T, chunk, reverse):
            hi = min(lo + chunk, T)
            n = hi - lo
            k, q, r = _step_factors(gates[lo:hi], cs[lo:hi], c_prev[lo:hi], sig_tanh)
            order = [lo + s for s in range(n)] if reverse else [hi - 1 - s for s in range(n)]
            for t in order:
                j = t - lo
                bs = batch_sizes[t]
                dhb = dh[:bs]
                if w_hr is not None:
                    dh_t = torch.add(dhb, g_out[t, :bs], out=d_hs_all[t, :bs])
                    dhr = _linear(dh_t, w_hr_tc) if dnn else torch.mm(dh_t, w_hr_c)
                else:
                    dhr = dhb + g_out[t, :bs]
                dcb = dc[:bs]
                dcb.addcmul_(dhr, r[j, :bs])
                torch.mul(dcb.unsqueeze(1), k[j, :bs], out=d_ifg[t, :bs])
                torch.mul(dhr, q[j, :bs], out=d_o[t, :bs])
                dcb.mul_(f_a[t, :bs])
                if dnn:
                    dhb.copy_(_linear(d_gates[t, :bs], w_step))
                else:
                    torch.mm(d_gates[t, :bs], w_hh_c, out=dhb)

    # dW_hh = sum_t d_gates[t]^T @ h[t-1]; h[t-1] is out one step earlier in step order,
    # or h0 at the first step. Inactive rows of d_gates are zero, so out's zero rows and
    # h0 rows of not-yet-started sequences only need the correction below.
    out_c = out.to(cdt)
    h0c = h0.to(cdt)
    if reverse:
        d_w_hh = _mm_tn(d_gates[:-1].reshape((T - 1) * B, 4 * H), out_c[1:].reshape((T - 1) * B, P), dnn_w)
        if has_bs:
            # Each row started (from h0) at its own last valid step len-1.
            lengths = (torch.arange(B).unsqueeze(0) < bs_t.unsqueeze(1)).sum(0)
            first = d_gates[(lengths - 1).to(dev), torch.arange(B, device=dev)]
            d_w_hh = torch.addmm(d_w_hh, first.t(), h0c)
        else:
            d_w_hh = torch.addmm(d_w_hh, d_gates[T - 1].t(), h0c)
    else:
        d_w_hh = _mm_tn(d_gates[1:].reshape((T - 1) * B, 4 * H), out_c[:-1].reshape((T - 1) * B, P), dnn_w)
        d_w_hh = torch.addmm(d_w_hh, d_gates[0].t(), h0c)
    if w_hr is not None:
        d_w_hr = _mm_tn(d_hs_all.reshape(T * B, P), hs.reshape(T * B, H), dnn_w).to(w_hr.dtype)
    else:
        d_w_hr = torch.empty(0, dtype=dtype, device=dev)
    return d_gates.to(dtype), dh.to(h0.dtype), dc.to(c0.dtype), d_w_hh.to(w_hh.dtype), d_w_hr


def _paired_forward(
    gx: Tensor,  # [2, T, B, 4H] two scans' input projections, each in step order
    h0: Tensor,  # [2, B, P]
    c0: Tensor,  # [2, B, H]
    w_hh: Tensor,  # [2, 4H, P]
    w_hr: Optional[Tensor],  # [2, P, H] or None
    save: bool,
    g_sig: bool,  # tanh(g) from the gates' sigmoid (GATE_SIGMOID_MIN, counting both directions)
):
    """Two padded scans at once (a bidirectional layer, direction 1 time-reversed by the
    caller): one batched matmul and one set of pointwise ops per step serve both."""
    T = gx.size(1)
    B = gx.size(2)
    H = c0.size(2)
    P = h0.size(2)
    dtype = gx.dtype
    dev = gx.device
    out = torch.empty(2, T, B, P, dtype=dtype, device=dev)
    if save:
        gates_s = torch.empty(2, T, B, 4 * H, dtype=dtype, device=dev)
        cs = torch.empty(2, T, B, H, dtype=dtype, device=dev)
    else:
        gates_s = torch.empty(0, dtype=dtype, device=dev)
        cs = torch.empty(0, dtype=dtype, device=dev)
    if save and w_hr is not None:
        hs = torch.empty(2, T, B, H, dtype=dtype, device=dev)
    else:
        hs = torch.empty(0, dtype=dtype, device=dev)
    # Transposed views, as in _scan_forward: a transposed copy of w_hh costs more than
    # the matmuls gain from it (measured 8 ms for both directions at H=512, 1 thread).
    w_hh_t = w_hh.transpose(1, 2)
    w_hr_t = w_hr.transpose(1, 2) if w_hr is not None else w_hh_t
    act = torch.empty(2, B, 4 * H, dtype=dtype, device=dev)
    tc = torch.empty(2, B, H, dtype=dtype, device=dev)
    hr_buf = torch.empty(2, B, H, dtype=dtype, device=dev)
    c = c0.clone()
    # Per-step operands from lists made before the loop, as in _scan_forward.
    gx_l, out_l, a_l, i_l, f_l, g_l, o_l, c_l, hr_l = _forward_lists(
        gx, out, gates_s, cs, hs, act, c, hr_buf, save, w_hr is not None, 1, H)
    pre = torch.empty(2, B, 4 * H, dtype=dtype, device=dev)
    pre_g = pre[:, :, 2 * H:3 * H]
    fc = torch.empty(2, B, H, dtype=dtype, device=dev)
    minus_one = torch.full((2, B, H), -1.0, dtype=dtype, device=dev)
    h = h0
    for t in range(T):
        torch.baddbmm(gx_l[t], h, w_hh_t, out=pre)
        if g_sig:  # as in _scan_forward
            pre_g.mul_(2.0)
            torch.sigmoid(pre, out=a_l[t])
            torch.add(minus_one, g_l[t], alpha=2.0, out=g_l[t])
        else:
            torch.sigmoid(pre, out=a_l[t])
            torch.tanh(pre_g, out=g_l[t])
        torch.mul(f_l[t], c, out=fc)
        c = torch.addcmul(fc, i_l[t], g_l[t], out=c_l[t])
        torch.tanh(c, out=tc)
        if w_hr is not None:
            hr = torch.mul(o_l[t], tc, out=hr_l[t])
            h = torch.bmm(hr, w_hr_t, out=out_l[t])
        else:
            h = torch.mul(o_l[t], tc, out=out_l[t])
    # h is a view of out, and c one of cs or a scratch buffer: outputs must not alias.
    return out, h.clone(), c.clone(), gates_s, cs, hs


def _paired_backward(
    grad_out: Tensor,  # [2, T, B, P]
    grad_h_n: Tensor,  # [2, B, P]
    grad_c_n: Tensor,  # [2, B, H]
    h0: Tensor,  # [2, B, P]
    c0: Tensor,  # [2, B, H]
    w_hh: Tensor,  # [2, 4H, P]
    w_hr: Optional[Tensor],  # [2, P, H] or None
    out: Tensor,  # [2, T, B, P]
    gates: Tensor,  # [2, T, B, 4H] activated gates
    cs: Tensor,  # [2, T, B, H]
    hs: Tensor,  # [2, T, B, H] (w_hr only)
):
    """Backward of ``_paired_forward``: the same hoisting as ``_scan_backward``, padded."""
    T = out.size(1)
    B = out.size(2)
    H = c0.size(2)
    P = h0.size(2)
    G = 4 * H
    dtype = out.dtype
    dev = out.device
    c_prev = torch.cat([c0.unsqueeze(1), cs[:, :-1]], 1)
    # Both directions' steps as one [2T, B, .] sequence for the factors (small layers only).
    k, q, r = _step_factors(gates.reshape(2 * T, B, G), cs.reshape(2 * T, B, H), c_prev.reshape(2 * T, B, H),
                            False)
    k = k.view(2, T, B, 3, H)
    q = q.view(2, T, B, H)
    r = r.view(2, T, B, H)
    f_a = gates[:, :, :, H:2 * H]
    d_gates = torch.empty(2, T, B, G, dtype=dtype, device=dev)
    d_ifg = d_gates[:, :, :, 0:3 * H].view(2, T, B, 3, H)
    d_o = d_gates[:, :, :, 3 * H:4 * H]
    dh = grad_h_n.clone()
    dc = grad_c_n.clone()
    if w_hr is not None:
        d_hs_all = torch.empty(2, T, B, P, dtype=dtype, device=dev)
    else:
        d_hs_all = torch.empty(0, dtype=dtype, device=dev)
    # Per-step operands from lists made before the loop, as in _scan_backward.
    go_l, r_l, q_l, k_l, fa_l, dg_l, difg_l, do_l = _unbind_all([grad_out, r, q, k, f_a, d_gates, d_ifg, d_o], 1)
    dhs_l = d_hs_all.unbind(1) if w_hr is not None else go_l
    dhr_buf = torch.empty(2, B, H, dtype=dtype, device=dev)
    dc3 = dc.unsqueeze(2)
    for s in range(T):
        t = T - 1 - s
        if w_hr is not None:
            dh_t = torch.add(dh, go_l[t], out=dhs_l[t])
            dhr = torch.bmm(dh_t, w_hr, out=dhr_buf)
        else:
            dhr = torch.add(dh, go_l[t], out=dhr_buf)
        _gate_grads_step(dc, dc3, dhr, r_l[t], k_l[t], q_l[t], fa_l[t], difg_l[t], do_l[t])
        dh = torch.bmm(dg_l[t], w_hh, out=dh)
    # dW_hh[d] = sum_t d_gates[d, t]^T @ h[d, t-1] (h0[d] at t = 0); dW_hr[d] = sum_t d_hs[d, t]^T @ hs[d, t].
    d_w_hh = torch.empty(2, G, P, dtype=dtype, device=dev)
    if w_hr is not None:
        d_w_hr = torch.empty(2, P, H, dtype=dtype, device=dev)
    else:
        d_w_hr = torch.empty(0, dtype=dtype, device=dev)
    for d in range(2):
        dw = torch.mm(d_gates[d, 1:].reshape((T - 1) * B, G).t(), out[d, :-1].reshape((T - 1) * B, P))
        torch.addmm(dw, d_gates[d, 0].t(), h0[d], out=d_w_hh[d])
        if w_hr is not None:
            torch.mm(d_hs_all[d].reshape(T * B, P).t(), hs[d].reshape(T * B, H), out=d_w_hr[d])
    return d_gates, dh, dc, d_w_hh, d_w_hr


with warnings.catch_warnings():
    # torch.jit.script warns that TorchScript is deprecated; this path is the point of the file.
    warnings.simplefilter("ignore")
    scan_forward_scripted = torch.jit.script(_scan_forward)
    scan_backward_scripted = torch.jit.script(_scan_backward)
    paired_forward_scripted = torch.jit.script(_paired_forward)
    paired_backward_scripted = torch.jit.script(_paired_backward)


def _batch_sizes_list(batch_sizes: Optional[Tensor]) -> List[int]:
    return [] if batch_sizes is None else batch_sizes.tolist()


def _use_dnn(x: Tensor, B: int, G: int, P: int) -> bool:
    """Whether the per-step matmuls [B, .] x [., G] go through oneDNN (see DNN_MIN_MACS and
    DNN_SMALL_MIN_MACS)."""
    if not _dnn_eligible(x):
        return False
    macs = B * G * P
    if macs >= DNN_MIN_MACS:
        return True
    if P < DNN_SMALL_MIN_K:
        return False
    if torch.get_num_threads() == 1:
        return B >= 2 and macs >= DNN_SMALL_MIN_MACS
    return macs >= DNN_SMALL_MIN_MACS // 2


def _step_weight(w: Tensor, T: int, B: int, dnn: bool) -> Tensor:
    """``w`` ([N, K]) as the step matmul takes it: contiguous, oneDNN-blocked for long scans."""
    if not dnn:
        return w
    w = w.contiguous()
    if HAS_DNN_REORDER and T >= PACK_MIN_T:
        return torch.ops.mkldnn._reorder_linear_weight(w, B)
    return w


# With a single batch row, BLAS's product h @ w_hh^T runs faster from a contiguous copy of
# w_hh^T than from the transposed view (measured, 1 thread: 14.6 -> 12.2 us at H=256, 2.2
# -> 1.9 at H=64; none from B=4 on, and none at H=512, where whole scans got 2-7% slower).
# The copy costs about 40 such steps at H=256 (105 us; 8 us at H=64), so the forward makes
# it only for scans of this many steps and weights of up to MATVEC_COPY_MAX_WEIGHT elements.
# Measured, one layer, B=1: T=128 H=256 5% faster in inference, 2.5% in training; T=512 6%
# and 5%; T=128 H=64 2%; T=64 H=256 unchanged.
MATVEC_COPY_MIN_T = 128
MATVEC_COPY_MAX_WEIGHT = 1 << 18


# With more than one thread, a single-row step product [1, P] x [P, 4H] runs as a batched
# product over S column blocks of the result (the four gates in the forward, two blocks of
# dh's columns in the backward), with w_hh as strided views (no copy): MKL runs a single-row
# product on one thread, the batched one on all (2 threads, us per product, plain / batched:
# forward 14.8 / 10.3 at H=256, 54.8 / 29.9 at H=512, where oneDNN's takes 42; backward
# ~11 / 10.7 and ~54 / 41). With one thread it gains nothing (forward 14.8 / 14.4, 53.4 /
# 52.7) and the backward loses at H=512 (59.5), so it is not used there. From this P.
SPLIT_ROWS_MIN_P = 256


def _split_rows(x: Tensor, B: int, P: int, batch_sizes: Optional[Tensor]) -> bool:
    """Whether a padded single-row scan runs its step products gate-split (SPLIT_ROWS_MIN_P)."""
    if B != 1 or batch_sizes is not None or x.dtype not in (torch.float32, torch.float64):
        return False
    return torch.get_num_threads() > 1 and P >= SPLIT_ROWS_MIN_P


def _forward_impl(gx, h0, c0, w_hh, w_hr, batch_sizes, reverse, save):
    T, B, G = gx.shape
    H, P = c0.shape[1], h0.shape[1]
    if _split_rows(gx, B, P, batch_sizes):
        dnn = False
        w_step = w_hh.contiguous().view(4, H, P).transpose(1, 2)  # [4, P, H] view: gate k's w_hh^T
    else:
        dnn = _use_dnn(gx, B, G, P)
        w_step = _step_weight(w_hh, T, B, dnn)
        if (not dnn and B == 1 and T >= MATVEC_COPY_MIN_T and G * P <= MATVEC_COPY_MAX_WEIGHT
                and gx.dtype in (torch.float32, torch.float64)):
            w_step = w_hh.t().contiguous().t()  # column-major [4H, P]: its transpose is contiguous
    with torch.jit.optimized_execution(False):
        return scan_forward_scripted(
            gx, h0, c0, w_hh, w_hr, _batch_sizes_list(batch_sizes), reverse, save, dnn, w_step,
            B * H >= SIGMOID_TANH_MIN, B * H >= GATE_SIGMOID_MIN,
        )


def _backward_impl(
    grad_out, grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, batch_sizes, reverse, out, gates, cs, hs
):
    T, B = out.shape[0], out.shape[1]
    G, P = 4 * c0.shape[1], h0.shape[1]
    if _split_rows(gates, B, P, batch_sizes) and P % 2 == 0:
        dnn = False
        w_step = w_hh.contiguous().view(G, 2, P // 2).transpose(0, 1)  # [2, G, P/2] view: column blocks
    else:
        dnn = _use_dnn(gates, B, G, P)
        w_step = _step_weight(w_hh.t(), T, B, dnn)
    # dW_hh and dW_hr: one [G or P, (T-1)*B] x [(T-1)*B, P or H] matmul each, like the input
    # projection (oneDNN from PROJ_MIN_MACS; T > 1 keeps the summed dimension non-empty).
    dnn_w = _dnn_eligible(gates) and T > 1 and T * B * G * P >= PROJ_MIN_MACS
    with torch.jit.optimized_execution(False):
        return scan_backward_scripted(
            grad_out, grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, _batch_sizes_list(batch_sizes), reverse,
            out, gates, cs, hs, dnn, w_step, dnn_w, cs.numel() >= SIGMOID_TANH_MIN,
            max(1, BACKWARD_BLOCK_ELEMS // max(1, B * c0.shape[1])),
        )


scan = register_scan("torchscript", _forward_impl, _backward_impl)


def _time_order(x: Tensor, rev: list) -> Tensor:
    """Flip the time axis of the stacked directions that run reversed (the paired loop keeps
    both in step order); empty placeholders pass through."""
    if x.numel() == 0:
        return x
    return torch.stack([x[d].flip(0) if rev[d] else x[d] for d in range(2)])


def _stack(parts: list) -> Tensor:
    """Stack per-direction results; [0] placeholders stay [0], as the stacked contract has them."""
    return parts[0] if parts[0].dim() == 1 and parts[0].numel() == 0 else torch.stack(parts)


def _bidir_forward_impl(gx, h0, c0, w_hh, w_hr, batch_sizes, reverse, save):
    """The direction-stacked scan contract (ops.py) on the paired loop, which runs both scans
    forward over steps: a reversed direction is flipped in time on the way in and out.
    Packed input (never routed here by ``use_paired``) runs one scan per direction."""
    rev = [reverse != (d == 1) for d in range(2)]
    if batch_sizes is not None:
        res = [_forward_impl(gx[d], h0[d], c0[d], w_hh[d], None if w_hr is None else w_hr[d], batch_sizes,
                             rev[d], save) for d in range(2)]
        return tuple(_stack([r[k] for r in res]) for k in range(6))
    with torch.jit.optimized_execution(False):
        out, h_n, c_n, gates, cs, hs = paired_forward_scripted(
            _time_order(gx, rev), h0, c0, w_hh, w_hr, save, 2 * h0.shape[1] * c0.shape[2] >= GATE_SIGMOID_MIN)
    return _time_order(out, rev), h_n, c_n, _time_order(gates, rev), _time_order(cs, rev), _time_order(hs, rev)


def _bidir_backward_impl(grad_out, grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, batch_sizes, reverse,
                         out, gates, cs, hs):
    rev = [reverse != (d == 1) for d in range(2)]
    if batch_sizes is not None:
        res = [_backward_impl(grad_out[d], grad_h_n[d], grad_c_n[d], h0[d], c0[d], w_hh[d],
                              None if w_hr is None else w_hr[d], batch_sizes, rev[d], out[d], gates[d], cs[d],
                              hs[d] if hs.numel() else hs) for d in range(2)]
        return tuple(torch.stack([r[k] for r in res]) for k in range(5))
    with torch.jit.optimized_execution(False):
        d_gx, d_h0, d_c0, d_w_hh, d_w_hr = paired_backward_scripted(
            _time_order(grad_out, rev), grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, _time_order(out, rev),
            _time_order(gates, rev), _time_order(cs, rev), _time_order(hs, rev))
    if w_hr is None:
        d_w_hr = w_hh.new_empty(2, 0)
    return _time_order(d_gx, rev), d_h0, d_c0, d_w_hh, d_w_hr


paired_scan = register_scan("torchscript_bidir", _bidir_forward_impl, _bidir_backward_impl, directions=2)


def use_paired(gx: Tensor, h0: Tensor, c0: Tensor, batch_sizes: Optional[Tensor]) -> bool:
    """Whether a bidirectional layer runs as one paired scan: padded input, full-precision
    storage and small step matmuls (see PAIRED_MAX_MACS; never in oneDNN's range, as
    oneDNN's linear has no batched form)."""
    T, B, G = gx.shape
    return (
        batch_sizes is None
        and _compute_dtype(gx.dtype) == gx.dtype
        and B * G * h0.shape[1] <= PAIRED_MAX_MACS
        and G * h0.shape[1] <= PAIRED_MAX_WEIGHT
        and not _use_dnn(gx, B, G, h0.shape[1])
    )


def scan_bidirectional(gxs, h0s, c0s, w_hhs, w_hrs) -> list:
    """Both directions of a padded layer as one paired scan; same results as two ``scan``
    calls (direction 1 reversed)."""
    w_hr = torch.stack(w_hrs) if w_hrs[0] is not None else None
    out, h_n, c_n = paired_scan(torch.stack(gxs), torch.stack(h0s), torch.stack(c0s), torch.stack(w_hhs), w_hr,
                                None, False)
    return [(out[d], h_n[d], c_n[d]) for d in range(2)]
