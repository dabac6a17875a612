"""Variable-length bookkeeping shared by the tiers: batch sizes per step, the step order, and
the final state of rows that stop early."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .dtypes import TL_DTYPES


def step_order(T: int, reverse: bool) -> list[int]:
    """Time indices in the order the forward runs them."""
    return list(range(T - 1, -1, -1)) if reverse else list(range(T))


def batch_sizes_list(batch_sizes: Optional[Tensor], T: int, B: int) -> list[int]:
    return [B] * T if batch_sizes is None else [int(v) for v in batch_sizes.tolist()]


def check_scan_inputs(gx: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, w_hr: Optional[Tensor], tier: str):
    """Shape/dtype/device checks a launcher does before allocating anything."""
    T, B, G = gx.shape
    H, P = c0.shape[1], h0.shape[1]
    if G != 4 * H or tuple(w_hh.shape) != (4 * H, P):
        raise ValueError(f"triton {tier}: gx [T,B,4H] = {tuple(gx.shape)} and w_hh [4H,P] = "
                         f"{tuple(w_hh.shape)} do not match H={H}, P={P}")
    if w_hr is None and P != H:
        raise ValueError(f"triton {tier}: h0 has width {P} but there is no projection and H={H}")
    if w_hr is not None and tuple(w_hr.shape) != (P, H):
        raise ValueError(f"triton {tier}: w_hr must be [P, H] = {(P, H)}, got {tuple(w_hr.shape)}")
    if gx.dtype not in TL_DTYPES or gx.dtype == torch.float64:
        raise TypeError(f"triton {tier}: dtype {gx.dtype} is not supported (float32, float16, bfloat16)")
    for name, x in (("h0", h0), ("c0", c0), ("w_hh", w_hh), ("w_hr", w_hr)):
        if x is not None and (x.dtype != gx.dtype or x.device != gx.device):
            raise ValueError(f"triton {tier}: {name} is {x.dtype} on {x.device}, "
                             f"gx is {gx.dtype} on {gx.device}")


def all_rows_full(bs: list[int], B: int) -> bool:
    """Whether every row runs every step (no packing): the helpers below then index with
    plain slices instead of index tensors built on the host, whose copy to the GPU would
    make the host wait for the device on every call."""
    return len(bs) == 0 or (bs[0] == B and bs[-1] == B)  # batch sizes never increase


def device_batch_sizes(bs: list[int], B: int, device) -> Tensor:
    """``bs`` as an int32 tensor on ``device``; filled on the device when every row is full."""
    if all_rows_full(bs, B):
        return torch.full((len(bs),), B, dtype=torch.int32, device=device)
    return torch.tensor(bs, dtype=torch.int32).to(device)


def rows_last_first(bs: list[int], B: int, reverse: bool, device) -> tuple[Tensor, Tensor]:
    """Per row: the time index of its last and of its first step in the forward's order."""
    # A row's length is the number of steps whose active prefix covers it (one tensor op:
    # a Python loop over T x B cost ~1 ms per call at T=512, B=128).
    lengths = (torch.tensor(bs, dtype=torch.int64)[:, None] > torch.arange(B)[None, :]).sum(0)
    if reverse:
        last, first = torch.zeros(B, dtype=torch.int64), lengths - 1
    else:
        last, first = lengths - 1, torch.zeros(B, dtype=torch.int64)
    return last.to(device), first.to(device)


def finish_forward(out: Tensor, c_state: Tensor, c0: Tensor, bs: list[int], reverse: bool):
    """(h_n, c_n) from the output and the final fp32 cell state."""
    B = out.shape[1]
    if all_rows_full(bs, B) and out.shape[0] > 0:
        # A copy: a custom op's outputs may not alias one another.
        return out[0 if reverse else out.shape[0] - 1].clone(), c_state.to(c0.dtype)
    last, _ = rows_last_first(bs, B, reverse, out.device)
    h_n = out[last, torch.arange(B, device=out.device)]
    return h_n, c_state.to(c0.dtype)
