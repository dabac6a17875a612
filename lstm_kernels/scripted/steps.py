"""Pieces shared by the scripted loops of ``single.py`` and ``paired.py``: the per-step
operand lists made before a time loop, the backward's gradient-independent factors and
one backward step's pointwise part (all compiled into the loops by TorchScript), and
``script``, which scripts a loop function."""
from __future__ import annotations

import warnings
from typing import List, Tuple

import torch
from torch import Tensor


def script(fn):
    """``torch.jit.script(fn)``, without the warning that TorchScript is deprecated: this
    package's CPU path is built on it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.script(fn)


def unbind_all(xs: List[Tensor], dim: int) -> List[List[Tensor]]:
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


def forward_lists(gx: Tensor, out: Tensor, gates: Tensor, cs: Tensor, hs: Tensor, act: Tensor, c: Tensor,
                   hr_buf: Tensor, save: bool, has_proj: bool, dim: int, H: int) -> List[List[Tensor]]:
    """Per-step views (time along ``dim``) of a padded forward's operands: gx, out, the
    activated gates (all four, then i, f, g, o), the cell state and the unprojected h.
    Without ``save`` every step writes the same scratch rows (``act``, ``c`` in place,
    ``hr_buf``) instead of the saved tensors."""
    T = gx.size(dim)
    lists = unbind_all([gx, out], dim)
    if save:
        lists += unbind_all(_gate_views(gates, H) + [cs], dim)
    else:
        lists += _repeat(_gate_views(act, H) + [c], T)
    lists.append(hs.unbind(dim) if save and has_proj else [hr_buf] * T)
    return lists


def step_factors(gates: Tensor, cs: Tensor, c_prev: Tensor, sig_tanh: bool) -> Tuple[Tensor, Tensor, Tensor]:
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


def gate_grads_step(dc: Tensor, dc3: Tensor, dhr: Tensor, r: Tensor, k: Tensor, q: Tensor, f: Tensor,
                     d_ifg: Tensor, d_o: Tensor):
    """One backward step's pointwise part (inlined by TorchScript): dc gains dhr * r, the
    gate gradients are written (d_ifg = dc * k, d_o = dhr * q), and dc becomes dc * f for
    the step before. ``dc3`` is ``dc`` viewed with a size-1 gate axis."""
    dc.addcmul_(dhr, r)
    torch.mul(dc3, k, out=d_ifg)
    torch.mul(dhr, q, out=d_o)
    dc.mul_(f)

