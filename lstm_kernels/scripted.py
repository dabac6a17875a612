"""The TorchScript-scripted scan: the CPU path, and the only file that uses torch.jit.

Forward and backward of one layer direction are each one scripted function, so the
time loop runs in the TorchScript interpreter with no Python per step. They are
registered as the custom op pair ``lstm_kernels::torchscript_scan[_backward]``
(see ``ops.py``); autograd never records per-step ops.

Shapes follow ``ops.py``: gx [T,B,4H], h0 [B,P], c0 [B,H], w_hh [4H,P], w_hr [P,H].
Gate order is nn.LSTM's (i, f, g, o).
"""
from __future__ import annotations

import warnings
from typing import List, Optional

import torch
from torch import Tensor

from .ops import register_scan


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype == torch.float16 or dtype == torch.bfloat16:
        return torch.float32
    return dtype


def _scan_forward(
    gx: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_hh: Tensor,
    w_hr: Optional[Tensor],
    batch_sizes: List[int],
    reverse: bool,
    save: bool,
):
    T = gx.size(0)
    B = gx.size(1)
    H = c0.size(1)
    P = h0.size(1)
    dtype = gx.dtype
    cdt = _compute_dtype(dtype)
    out = torch.zeros(T, B, P, dtype=dtype, device=gx.device)
    if save:
        gates_s = torch.empty(T, B, 4 * H, dtype=cdt, device=gx.device)
        cs = torch.empty(T, B, H, dtype=cdt, device=gx.device)
    else:
        gates_s = torch.empty(0, dtype=cdt, device=gx.device)
        cs = torch.empty(0, dtype=cdt, device=gx.device)
    if save and w_hr is not None:
        hs = torch.empty(T, B, H, dtype=cdt, device=gx.device)
    else:
        hs = torch.empty(0, dtype=cdt, device=gx.device)
    h = h0.clone()
    c = c0.to(cdt).clone()
    w_hh_t = w_hh.t()
    has_bs = len(batch_sizes) > 0
    for s in range(T):
        t = T - 1 - s if reverse else s
        bs = batch_sizes[t] if has_bs else B
        g = torch.addmm(gx[t, :bs], h[:bs], w_hh_t).to(cdt)
        sig = torch.sigmoid(g)
        i = sig[:, 0:H]
        f = sig[:, H:2 * H]
        gg = torch.tanh(g[:, 2 * H:3 * H])
        o = sig[:, 3 * H:4 * H]
        c_new = f * c[:bs] + i * gg
        hr = o * torch.tanh(c_new)
        if w_hr is not None:
            h_new = torch.mm(hr.to(dtype), w_hr.t())
        else:
            h_new = hr.to(dtype)
        if save:
            gates_s[t, :bs, 0:2 * H] = sig[:, 0:2 * H]
            gates_s[t, :bs, 2 * H:3 * H] = gg
            gates_s[t, :bs, 3 * H:4 * H] = o
            cs[t, :bs] = c_new
            if w_hr is not None:
                hs[t, :bs] = hr
        out[t, :bs] = h_new
        h[:bs] = h_new
        c[:bs] = c_new
    return out, h, c.to(c0.dtype), gates_s, cs, hs


def _prev_states(
    out: Tensor, cs: Tensor, h0: Tensor, c0: Tensor, batch_sizes: List[int], reverse: bool
):
    """h and c entering each step: [T,B,P] and [T,B,H], masked by batch_sizes."""
    T = out.size(0)
    B = out.size(1)
    cdt = cs.dtype
    h_init = h0.unsqueeze(0)
    c_init = c0.to(cdt).unsqueeze(0)
    if reverse:
        h_prev = torch.cat([out[1:], h_init], 0)
        c_prev = torch.cat([cs[1:], c_init], 0)
    else:
        h_prev = torch.cat([h_init, out[:-1]], 0)
        c_prev = torch.cat([c_init, cs[:-1]], 0)
    if len(batch_sizes) > 0:
        # A row is carried over from the previous step only if it was active there.
        bs = torch.tensor(batch_sizes, dtype=torch.long, device=out.device)
        if reverse:
            prev_bs = torch.cat([bs[1:], torch.zeros(1, dtype=torch.long, device=out.device)])
        else:
            prev_bs = torch.cat([torch.zeros(1, dtype=torch.long, device=out.device), bs[:-1]])
        rows = torch.arange(B, device=out.device).unsqueeze(0)
        carried = (rows < prev_bs.unsqueeze(1)).unsqueeze(2)
        h_prev = torch.where(carried, h_prev, h_init.expand(T, B, h0.size(1)))
        c_prev = torch.where(carried, c_prev, c_init.expand(T, B, c0.size(1)))
    return h_prev, c_prev


def _scan_backward(
    grad_out: Tensor,
    grad_h_n: Tensor,
    grad_c_n: Tensor,
    h0: Tensor,
    c0: Tensor,
    w_hh: Tensor,
    w_hr: Optional[Tensor],
    batch_sizes: List[int],
    reverse: bool,
    out: Tensor,
    gates: Tensor,
    cs: Tensor,
    hs: Tensor,
):
    T = out.size(0)
    B = out.size(1)
    H = c0.size(1)
    P = h0.size(1)
    dtype = out.dtype
    cdt = gates.dtype
    h_prev, c_prev = _prev_states(out, cs, h0, c0, batch_sizes, reverse)
    d_gates = torch.zeros(T, B, 4 * H, dtype=cdt, device=out.device)
    d_hs_total = torch.zeros(0, dtype=cdt, device=out.device)
    if w_hr is not None:
        d_hs_total = torch.zeros(T, B, P, dtype=cdt, device=out.device)
    dh = grad_h_n.to(cdt).clone()
    dc = grad_c_n.to(cdt).clone()
    w_hh_c = w_hh.to(cdt)
    w_hr_c = w_hr.to(cdt) if w_hr is not None else None
    g_out = grad_out.to(cdt)
    has_bs = len(batch_sizes) > 0
    for s in range(T):
        t = s if reverse else T - 1 - s
        bs = batch_sizes[t] if has_bs else B
        dh_t = dh[:bs] + g_out[t, :bs]
        if w_hr_c is not None:
            d_hs_total[t, :bs] = dh_t
            dhr = torch.mm(dh_t, w_hr_c)
        else:
            dhr = dh_t
        gt = gates[t, :bs]
        i = gt[:, 0:H]
        f = gt[:, H:2 * H]
        g = gt[:, 2 * H:3 * H]
        o = gt[:, 3 * H:4 * H]
        tc = torch.tanh(cs[t, :bs])
        dc_t = dc[:bs] + dhr * o * (1.0 - tc * tc)
        dg_t = d_gates[t, :bs]
        dg_t[:, 0:H] = dc_t * g * i * (1.0 - i)
        dg_t[:, H:2 * H] = dc_t * c_prev[t, :bs] * f * (1.0 - f)
        dg_t[:, 2 * H:3 * H] = dc_t * i * (1.0 - g * g)
        dg_t[:, 3 * H:4 * H] = dhr * tc * o * (1.0 - o)
        dc[:bs] = dc_t * f
        dh[:bs] = torch.mm(dg_t, w_hh_c)
    d_w_hh = torch.mm(d_gates.reshape(T * B, 4 * H).t(), h_prev.reshape(T * B, P).to(cdt))
    if w_hr is not None:
        d_w_hr = torch.mm(d_hs_total.reshape(T * B, P).t(), hs.reshape(T * B, H)).to(w_hr.dtype)
    else:
        d_w_hr = torch.empty(0, dtype=dtype, device=out.device)
    return d_gates.to(dtype), dh.to(h0.dtype), dc.to(c0.dtype), d_w_hh.to(w_hh.dtype), d_w_hr


with warnings.catch_warnings():
    # torch.jit.script warns that TorchScript is deprecated; this path is the point of the file.
    warnings.simplefilter("ignore")
    scan_forward_scripted = torch.jit.script(_scan_forward)
    scan_backward_scripted = torch.jit.script(_scan_backward)


def _batch_sizes_list(batch_sizes: Optional[Tensor]) -> List[int]:
    return [] if batch_sizes is None else batch_sizes.tolist()


def _forward_impl(gx, h0, c0, w_hh, w_hr, batch_sizes, reverse, save):
    return scan_forward_scripted(gx, h0, c0, w_hh, w_hr, _batch_sizes_list(batch_sizes), reverse, save)


def _backward_impl(grad_out, grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, batch_sizes, reverse, out, gates, cs, hs):
    return scan_backward_scripted(
        grad_out, grad_h_n, grad_c_n, h0, c0, w_hh, w_hr, _batch_sizes_list(batch_sizes), reverse,
        out, gates, cs, hs,
    )


scan = register_scan("torchscript", _forward_impl, _backward_impl)
