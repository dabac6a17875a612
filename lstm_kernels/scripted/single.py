"""The scripted scan of one layer direction: forward and backward are each one
TorchScript-scripted function (padded and packed input), registered as the custom op
pair ``lstm_kernels::torchscript_scan[_backward]`` (``ops.register_scan``), with the
Python wrappers that pick the step matmul's form (oneDNN, BLAS, gate-split, column-major
weight) and the path flags from ``thresholds``."""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from ..ops import register_scan
from ..reference import compute_dtype
from . import thresholds
from .dnn import dnn_eligible, linear, linear_add, mm_tn, step_weight, use_dnn
from .steps import forward_lists, gate_grads_step, script, step_factors, unbind_all

# Dimensions: T seq len, B batch, H hidden, P = proj_size or H, G = 4H. Shapes follow
# ``ops.py``: gx [T,B,G], h0 [B,P], c0 [B,H], w_hh [G,P], w_hr [P,H]. Gate order is
# nn.LSTM's (i, f, g, o), also in the saved ``gates``.
#
# Why it is written the way it is (the choices and what was dropped: ``docs/decisions.md``):
#
# * On CPU the time per step of a small LSTM is the number of interpreter ops, not FLOPs
#   (about 0.7 us per op on the reference machine, against 1.4 us for a whole oneDNN step
#   at B=1, H=64). So the loops use as few ops per step as possible: outputs are written in
#   place with ``out=`` into preallocated [T, ...] buffers (no lists, no ``torch.stack``),
#   the hidden state is a view of the previous output row, and the padded (no
#   ``batch_sizes``) loop is separate from the packed one so it carries no row slicing.
# * The gates stay in nn.LSTM's order, and no converted copy of the weights is kept. A
#   layout with the weights reordered (and the g rows doubled) saves at most one op per
#   step over the in-place doubling below, but a copy cached across calls cannot see
#   changes made through ``p.data`` (gradcheck perturbs inputs that way, and target-network
#   soft updates do too), and one made per call costs more than it saves at small T*B.
#   With nothing cached, nothing can go stale.
# * The cell input's tanh comes from the one sigmoid over all four gate blocks for steps
#   of ``GATE_SIGMOID_MIN`` elements or more: the g block of the pre-activations is doubled
#   in place first, and tanh(g) = 2 sigmoid(2g) - 1 is one op after it.
# * Large float32 step matmuls go through oneDNN's linear (``dnn.use_dnn``), with w_hh
#   reordered once per call into oneDNN's blocked layout for long scans; small ones use
#   ``torch.addmm`` with ``w_hh.t()`` (a transposed view): BLAS is faster with the
#   transposed flag than with a contiguous transposed copy, except for single rows
#   (``MATVEC_COPY_MIN_T``). With more than one thread, single-row products run as one
#   batched product over gate blocks (``_split_rows``), since MKL keeps a single-row
#   product on one thread.
# * Backward moves every pointwise factor that does not depend on the incoming gradient
#   (sigmoid/tanh derivatives, tanh(c), the products with the other gates) out of the
#   time loop into a few ops over a block of steps (``BACKWARD_BLOCK_ELEMS``; all T steps
#   for small layers), so the loop does about half the ops of the textbook form. dW_hh and
#   dW_hr are two or three large matmuls after the loop (in blocks of rows, ``mm_tn``),
#   taking h[t-1] from ``out`` shifted by one step instead of materialising it.
# * The graph executor's profiling optimisations are switched off around the calls
#   (``torch.jit.optimized_execution(False)``, thread-local and restored on exit): on CPU
#   they fuse nothing here (NNC's CPU fuser is off by default), but they re-profile and
#   re-specialise the graph for every new shape and ``save`` flag, which measured slower.


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
    w_step: Tensor,  # [4H, P] w_hh as the step matmul takes it (step_weight), or [4, P, H]: gate-split (_split_rows)
    sig_tanh: bool,  # padded steps compute tanh(c) as 2 sigmoid(2c) - 1 (see SIGMOID_TANH_MIN)
    g_sig: bool,  # padded steps take tanh(g) from the gates' sigmoid (see GATE_SIGMOID_MIN)
):
    T = gx.size(0)
    B = gx.size(1)
    H = c0.size(1)
    P = h0.size(1)
    dtype = gx.dtype
    cdt = compute_dtype(dtype)
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
        gx_l, out_l, a_l, i_l, f_l, g_l, o_l, c_l, hr_l = forward_lists(
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
                g = linear_add(h, gx_l[t], w_step)
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
                    h = out_l[t].copy_(linear(hr, w_hr_c))
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
            g = linear_add(hb, gx[t, :bs], w_step)
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
                hb.copy_(linear(hr, w_hr_c))
            else:
                torch.mm(hr, w_hr_t, out=hb)
        elif low:
            hb.copy_(o * tcb)
        else:
            torch.mul(o, tcb, out=hb)
        out[t, :bs] = hb
    return out, h, c.to(c0.dtype), gates_s, cs, hs


def _block_starts(T: int, chunk: int, reverse: bool) -> List[int]:
    """First steps of the backward's blocks of ``chunk`` steps, in the order it visits them
    (the reverse of the scan's)."""
    starts = [lo for lo in range(0, T, chunk)]
    if not reverse:
        starts.reverse()
    return starts


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
            k, q, r = step_factors(gates[lo:hi], cs[lo:hi], c_prev[lo:hi], sig_tanh)
            go_l, r_l, q_l, k_l, fa_l, dg_l, difg_l, do_l = unbind_all(
                [g_out[lo:hi], r, q, k, f_a[lo:hi], d_gates[lo:hi], d_ifg[lo:hi], d_o[lo:hi]], 0)
            dhs_l = d_hs_all[lo:hi].unbind(0) if w_hr is not None else go_l
            order = [s for s in range(n)] if reverse else [n - 1 - s for s in range(n)]
            for t in order:
                if w_hr is not None:
                    dh_t = torch.add(dh, go_l[t], out=dhs_l[t])
                    dhr = linear(dh_t, w_hr_tc) if dnn else torch.mm(dh_t, w_hr_c, out=dhr_buf)
                else:
                    dhr = torch.add(dh, go_l[t], out=dhr_buf)
                gate_grads_step(dc, dc3, dhr, r_l[t], k_l[t], q_l[t], fa_l[t], difg_l[t], do_l[t])
                if dnn:
                    dh = linear(dg_l[t], w_step)
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
            k, q, r = step_factors(gates[lo:hi], cs[lo:hi], c_prev[lo:hi], sig_tanh)
            order = [lo + s for s in range(n)] if reverse else [hi - 1 - s for s in range(n)]
            for t in order:
                j = t - lo
                bs = batch_sizes[t]
                dhb = dh[:bs]
                if w_hr is not None:
                    dh_t = torch.add(dhb, g_out[t, :bs], out=d_hs_all[t, :bs])
                    dhr = linear(dh_t, w_hr_tc) if dnn else torch.mm(dh_t, w_hr_c)
                else:
                    dhr = dhb + g_out[t, :bs]
                dcb = dc[:bs]
                dcb.addcmul_(dhr, r[j, :bs])
                torch.mul(dcb.unsqueeze(1), k[j, :bs], out=d_ifg[t, :bs])
                torch.mul(dhr, q[j, :bs], out=d_o[t, :bs])
                dcb.mul_(f_a[t, :bs])
                if dnn:
                    dhb.copy_(linear(d_gates[t, :bs], w_step))
                else:
                    torch.mm(d_gates[t, :bs], w_hh_c, out=dhb)

    # dW_hh = sum_t d_gates[t]^T @ h[t-1]; h[t-1] is out one step earlier in step order,
    # or h0 at the first step. Inactive rows of d_gates are zero, so out's zero rows and
    # h0 rows of not-yet-started sequences only need the correction below.
    out_c = out.to(cdt)
    h0c = h0.to(cdt)
    if reverse:
        d_w_hh = mm_tn(d_gates[:-1].reshape((T - 1) * B, 4 * H), out_c[1:].reshape((T - 1) * B, P), dnn_w)
        if has_bs:
            # Each row started (from h0) at its own last valid step len-1.
            lengths = (torch.arange(B).unsqueeze(0) < bs_t.unsqueeze(1)).sum(0)
            first = d_gates[(lengths - 1).to(dev), torch.arange(B, device=dev)]
            d_w_hh = torch.addmm(d_w_hh, first.t(), h0c)
        else:
            d_w_hh = torch.addmm(d_w_hh, d_gates[T - 1].t(), h0c)
    else:
        d_w_hh = mm_tn(d_gates[1:].reshape((T - 1) * B, 4 * H), out_c[:-1].reshape((T - 1) * B, P), dnn_w)
        d_w_hh = torch.addmm(d_w_hh, d_gates[0].t(), h0c)
    if w_hr is not None:
        d_w_hr = mm_tn(d_hs_all.reshape(T * B, P), hs.reshape(T * B, H), dnn_w).to(w_hr.dtype)
    else:
        d_w_hr = torch.empty(0, dtype=dtype, device=dev)
    return d_gates.to(dtype), dh.to(h0.dtype), dc.to(c0.dtype), d_w_hh.to(w_hh.dtype), d_w_hr


scan_forward_scripted = script(_scan_forward)
scan_backward_scripted = script(_scan_backward)


def _batch_sizes_list(batch_sizes: Optional[Tensor]) -> List[int]:
    return [] if batch_sizes is None else batch_sizes.tolist()


def _split_rows(x: Tensor, B: int, P: int, batch_sizes: Optional[Tensor]) -> bool:
    """Whether a padded single-row scan runs its step products gate-split (SPLIT_ROWS_MIN_P)."""
    if B != 1 or batch_sizes is not None or x.dtype not in (torch.float32, torch.float64):
        return False
    return torch.get_num_threads() > 1 and P >= thresholds.SPLIT_ROWS_MIN_P


def forward_impl(gx, h0, c0, w_hh, w_hr, batch_sizes, reverse, save):
    """The scan's forward (the ``ops.py`` contract): picks the step matmul's form and the
    path flags, then runs the scripted loop; ``paired.py`` calls it per direction for
    packed input."""
    T, B, G = gx.shape
    H, P = c0.shape[1], h0.shape[1]
    if _split_rows(gx, B, P, batch_sizes):
        dnn = False
        w_step = w_hh.contiguous().view(4, H, P).transpose(1, 2)  # [4, P, H] view: gate k's w_hh^T
    else:
        dnn = use_dnn(gx, B, G, P)
        w_step = step_weight(w_hh, T, B, dnn)
        if (not dnn and B == 1 and T >= thresholds.MATVEC_COPY_MIN_T
                and G * P <= thresholds.MATVEC_COPY_MAX_WEIGHT
                and gx.dtype in (torch.float32, torch.float64)):
            w_step = w_hh.t().contiguous().t()  # column-major [4H, P]: its transpose is contiguous
    with torch.jit.optimized_execution(False):
        return scan_forward_scripted(
            gx, h0, c0, w_hh, w_hr, _batch_sizes_list(batch_sizes), reverse, save, dnn, w_step,
            B * H >= thresholds.SIGMOID_TANH_MIN, B * H >= thresholds.GATE_SIGMOID_MIN,
        )


def backward_impl(
    grad_out, grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, batch_sizes, reverse, out, gates, cs, hs
):
    """The scan's backward from ``forward_impl``'s saved tensors, with the same choice of
    step matmul and flags."""
    T, B = out.shape[0], out.shape[1]
    G, P = 4 * c0.shape[1], h0.shape[1]
    if _split_rows(gates, B, P, batch_sizes) and P % 2 == 0:
        dnn = False
        w_step = w_hh.contiguous().view(G, 2, P // 2).transpose(0, 1)  # [2, G, P/2] view: column blocks
    else:
        dnn = use_dnn(gates, B, G, P)
        w_step = step_weight(w_hh.t(), T, B, dnn)
    # dW_hh and dW_hr: one [G or P, (T-1)*B] x [(T-1)*B, P or H] matmul each, like the input
    # projection (oneDNN from PROJ_MIN_MACS; T > 1 keeps the summed dimension non-empty).
    dnn_w = dnn_eligible(gates) and T > 1 and T * B * G * P >= thresholds.PROJ_MIN_MACS
    with torch.jit.optimized_execution(False):
        return scan_backward_scripted(
            grad_out, grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, _batch_sizes_list(batch_sizes), reverse,
            out, gates, cs, hs, dnn, w_step, dnn_w, cs.numel() >= thresholds.SIGMOID_TANH_MIN,
            max(1, thresholds.BACKWARD_BLOCK_ELEMS // max(1, B * c0.shape[1])),
        )


scan = register_scan("torchscript", forward_impl, backward_impl)
