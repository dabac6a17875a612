"""Both directions of a small padded bidirectional layer in one scripted loop, registered
as the direction-stacked op pair ``lstm_kernels::torchscript_bidir_scan[_backward]``: one
``baddbmm`` over both directions and one set of pointwise ops per step, half the
interpreter ops of two scans. The reversed direction is flipped in time around the loop,
so both run forward over steps. ``use_paired`` says when a layer takes it
(``thresholds.PAIRED_MAX_MACS``); packed input falls back to one ``single`` scan per
direction."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..ops import register_scan
from ..reference import compute_dtype
from . import thresholds
from .dnn import use_dnn
from .single import backward_impl, forward_impl
from .steps import forward_lists, gate_grads_step, script, step_factors, unbind_all


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
    # Transposed views, as in ``single._scan_forward``: a transposed copy of w_hh costs more than
    # the matmuls gain from it (measured 8 ms for both directions at H=512, 1 thread).
    w_hh_t = w_hh.transpose(1, 2)
    w_hr_t = w_hr.transpose(1, 2) if w_hr is not None else w_hh_t
    act = torch.empty(2, B, 4 * H, dtype=dtype, device=dev)
    tc = torch.empty(2, B, H, dtype=dtype, device=dev)
    hr_buf = torch.empty(2, B, H, dtype=dtype, device=dev)
    c = c0.clone()
    # Per-step operands from lists made before the loop, as in ``single._scan_forward``.
    gx_l, out_l, a_l, i_l, f_l, g_l, o_l, c_l, hr_l = forward_lists(
        gx, out, gates_s, cs, hs, act, c, hr_buf, save, w_hr is not None, 1, H)
    pre = torch.empty(2, B, 4 * H, dtype=dtype, device=dev)
    pre_g = pre[:, :, 2 * H:3 * H]
    fc = torch.empty(2, B, H, dtype=dtype, device=dev)
    minus_one = torch.full((2, B, H), -1.0, dtype=dtype, device=dev)
    h = h0
    for t in range(T):
        torch.baddbmm(gx_l[t], h, w_hh_t, out=pre)
        if g_sig:  # as in ``single._scan_forward``
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
    """Backward of ``_paired_forward``: the same hoisting as ``single._scan_backward``, padded."""
    T = out.size(1)
    B = out.size(2)
    H = c0.size(2)
    P = h0.size(2)
    G = 4 * H
    dtype = out.dtype
    dev = out.device
    c_prev = torch.cat([c0.unsqueeze(1), cs[:, :-1]], 1)
    # Both directions' steps as one [2T, B, .] sequence for the factors (small layers only).
    k, q, r = step_factors(gates.reshape(2 * T, B, G), cs.reshape(2 * T, B, H), c_prev.reshape(2 * T, B, H),
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
    # Per-step operands from lists made before the loop, as in ``single._scan_backward``.
    go_l, r_l, q_l, k_l, fa_l, dg_l, difg_l, do_l = unbind_all([grad_out, r, q, k, f_a, d_gates, d_ifg, d_o], 1)
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
        gate_grads_step(dc, dc3, dhr, r_l[t], k_l[t], q_l[t], fa_l[t], difg_l[t], do_l[t])
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


paired_forward_scripted = script(_paired_forward)
paired_backward_scripted = script(_paired_backward)


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
        res = [forward_impl(gx[d], h0[d], c0[d], w_hh[d], None if w_hr is None else w_hr[d], batch_sizes,
                             rev[d], save) for d in range(2)]
        return tuple(_stack([r[k] for r in res]) for k in range(6))
    with torch.jit.optimized_execution(False):
        out, h_n, c_n, gates, cs, hs = paired_forward_scripted(
            _time_order(gx, rev), h0, c0, w_hh, w_hr, save,
            2 * h0.shape[1] * c0.shape[2] >= thresholds.GATE_SIGMOID_MIN)
    return _time_order(out, rev), h_n, c_n, _time_order(gates, rev), _time_order(cs, rev), _time_order(hs, rev)


def _bidir_backward_impl(grad_out, grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, batch_sizes, reverse,
                         out, gates, cs, hs):
    rev = [reverse != (d == 1) for d in range(2)]
    if batch_sizes is not None:
        res = [backward_impl(grad_out[d], grad_h_n[d], grad_c_n[d], h0[d], c0[d], w_hh[d],
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
        and compute_dtype(gx.dtype) == gx.dtype
        and B * G * h0.shape[1] <= thresholds.PAIRED_MAX_MACS
        and G * h0.shape[1] <= thresholds.PAIRED_MAX_WEIGHT
        and not use_dnn(gx, B, G, h0.shape[1])
    )


def scan_bidirectional(gxs, h0s, c0s, w_hhs, w_hrs) -> list:
    """Both directions of a padded layer as one paired scan; same results as two ``scan``
    calls (direction 1 reversed)."""
    w_hr = torch.stack(w_hrs) if w_hrs[0] is not None else None
    out, h_n, c_n = paired_scan(torch.stack(gxs), torch.stack(h0s), torch.stack(c0s), torch.stack(w_hhs), w_hr,
                                None, False)
    return [(out[d], h_n[d], c_n[d]) for d in range(2)]
