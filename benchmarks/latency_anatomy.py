#!/usr/bin/env python
"""Latency anatomy of one persistent LSTM step: where every microsecond of a step goes.

    python benchmarks/latency_anatomy.py --out DIR [--B 16 --H 256 --T 512 --dtype bfloat16]
    python benchmarks/latency_anatomy.py --out DIR --dry-run    # CPU, Triton interpreter, < 10 s
    python benchmarks/latency_anatomy.py --aot sm_90            # compile only, no GPU needed

One persistent kernel, ``anatomy_kernel``, loops over T steps inside the launch. Its
constexpr LEVEL adds one component of the step at a time, so each level is its own
compiled kernel holding exactly the code of the level before plus one block:

  1 barrier   grid barrier on one int32 counter: arrive with one atomic per program,
              poll until the count reaches (t+1)*NP. POLL picks the poll load:
              ``atomic`` (``atomic_add(p, 0)``, as lstm_kernels' persistent tier does; a
              scalar atomic is issued by one thread and broadcast through shared memory
              with a bar.sync each iteration, triton-lang/triton#7125), ``volatile``
              (``ld.volatile`` past L1, every thread) or ``acquire`` (inline PTX
              ``ld.acquire.gpu``, every thread: GPU only). ARRIVE_SEEN starts the poll from
              the count the arriving atomic returned instead of a separate first poll.
  2 exchange  + each program stores its [B, H/NP] slice of h into a ping-pong buffer and,
              after the barrier, loads all of h_prev [B, H] (past L1, ``.cg``); h_new is
              0.5 * mean(h_prev) so the load cannot be dropped
  3 dot       + h_prev [B, H] @ W_hh slice [H, 4*H/NP] (loaded once before the loop, kept
              on chip), h_new = (i + f + g + o) / 4 of the pre-activations
  4 cell      + the LSTM cell: sigmoid/tanh of the gates, c (registers) = f*c + i*g,
              h = o * tanh(c): a full step with zero input projection
  5 gx        + the input projection: gx[t] [B, 4*H/NP] loaded every step
  6 stores    + out[t] and c_n stored every step: the full step of the persistent tier

Levels 2-6 run once per poll, and once as the ``tagged`` stack (TAGGED): no barrier, each h
word stored with its step's 16-bit tag and read until every tag is the previous step's.
The first poll's stack also runs gate-major (GATE_MAJOR), and so does the tagged one:
tiles [NG, B] and gates^T = W slice [4*NG, H] @ h_prev^T, the tier's form, whose >= 64-row
operand Hopper's wgmma takes (NP=8 at H=256); batch-major M = B = 16 runs mma.sync.

Programs own H/NP hidden units each. The spin barrier needs every program resident at
once: NP may not exceed the SM count, launches are cooperative (the driver refuses a grid
that cannot be co-resident), and every poll loop is bounded by a spin budget, so a
barrier that never completes ends the launch and is reported instead of hanging.

Each row is timed with CUDA events: ``us_per_step`` is the median over a few launches of
elapsed / T after a warm-up; ``marginal_us_per_step`` is (t(T) - t(T/8)) / (T - T/8), the
launch and prologue removed. ``delta_us`` is against the previous level at the same NP,
poll and layout (the barrier variants against the ``atomic`` barrier). Each row's warm-up
launch is checked: the barrier's final count, and h against torch (levels 2-3 their own
recurrence, levels 4-6 an LSTM step loop, level 6 also out and c_n). A global deadline
(``--budget-s``, default 45 s) bounds the run; rows past it are listed as skipped.

``--dry-run`` runs the same code on CPU under TRITON_INTERPRET=1 with T=4, NP=1, B=H=16:
the interpreter runs programs one after another, so a spin barrier across more than one
program would deadlock there, and no NP > 1 is ever launched; the ``acquire`` poll (inline
PTX) is listed as skipped. Every level's h (levels 2-3 their own recurrence, levels 4-6 an
LSTM step loop) must match torch.

``--aot sm_90`` (or sm_80) compiles every kernel the run would launch for that target with
``lstm_kernels.aot`` and reports registers, spills and shared memory (spills fail it),
then counts the PTX barriers, shared-memory stores, poll loads and mma instructions.

Dimensions: T steps, B batch, H hidden, NP programs, BH = H/NP hidden units per program,
NG = max(BH, 4) gate width padded so a dot's N = 4*NG is at least 16.
"""
from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # The interpreter is chosen when triton kernels are defined, so before any import.
    if "--dry-run" in sys.argv[1:]:
        os.environ["TRITON_INTERPRET"] = "1"
    elif any(a == "--aot" or a.startswith("--aot=") for a in sys.argv[1:]):
        os.environ["TRITON_INTERPRET"] = "0"
    _ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if _ROOT not in sys.path:  # the GPU machine runs from a checkout; nothing is installed there
        sys.path.insert(0, _ROOT)

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Optional  # noqa: E402

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

LEVELS = ("barrier", "exchange", "dot", "cell", "gx", "stores")
# The barrier's poll load, and the kernel's POLL constexpr for it. Stacks run in this order,
# so when the time budget cuts the run the two polls the package has (atomic-poll, and its
# default per-thread acquire) come first.
POLLS = ("atomic", "acquire", "volatile")
POLL_CODE = {"atomic": 0, "volatile": 1, "acquire": 2}
# The stacks of levels 2-6: one per poll, and ``tagged``, which has no barrier at all (each h
# word carries its step's tag and the readers poll h itself); second, after the tier's own
# atomic stack, since it tests the largest prediction (docs/latency-anatomy.md).
STACKS = ("atomic", "tagged", "acquire", "volatile")
TAG_BITS = 16  # the tagged exchange packs a 16-bit h under a 16-bit step tag in one int32 word
NP_DEFAULT = (1, 8, 32, 64, 128)
# The W_hh slice a program keeps on chip for all T steps. Triton keeps it in shared memory
# (`--aot sm_90`: 72 KiB with h's staging at H=256 NP=8); NP=1 at H=256 would need 512 KiB.
W_SLICE_LIMIT = 64 * 1024
# Total poll iterations one program may spin in a launch (a legitimate run needs a few per
# step); past it the program stops waiting and the row reports the barrier as broken.
MAX_SPIN = 1 << 20
NUM_WARPS = 4  # one warp group per program
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
TL_DTYPES = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


# ---------------------------------------------------------------------------------------------
# The kernel
# ---------------------------------------------------------------------------------------------


@triton.jit
def _poll(p_sync, POLL: tl.constexpr):
    if POLL == 0:
        # One thread's ld.acquire, broadcast through shared memory with two bar.sync.
        seen = tl.atomic_add(p_sync, 0, sem="acquire", scope="gpu")
    elif POLL == 1:
        seen = tl.load(p_sync, volatile=True)  # ld.volatile is relaxed.sys: never served by a stale L1 line
    else:
        # Every thread's own ld.acquire: the ordering of POLL 0 without the broadcast. Inline
        # PTX: the interpreter cannot run it (fit_problem keeps it off the dry run).
        seen = tl.inline_asm_elementwise("ld.acquire.gpu.global.b32 $0, [$1];", "=r,l", [p_sync],
                                         dtype=tl.int32, is_pure=False, pack=1)
    return seen


@triton.jit
def grid_barrier(p_sync, target, spins, POLL: tl.constexpr, ARRIVE_SEEN: tl.constexpr,
                  MAX_SPIN: tl.constexpr):
    """Wait until the counter reaches ``target``; returns the poll iterations spent so far."""
    tl.debug_barrier()  # every thread's stores issued before the one arriving atomic
    old = tl.atomic_add(p_sync, 1, sem="acq_rel", scope="gpu")
    if ARRIVE_SEEN:
        seen = old + 1
    else:
        seen = _poll(p_sync, POLL)
    while (seen < target) & (spins < MAX_SPIN):
        spins += 1
        seen = _poll(p_sync, POLL)
    tl.debug_barrier()
    return spins


@triton.jit(do_not_specialize=["T"])
def anatomy_kernel(
    p_sync,  # [1] int32 barrier counter, zero at launch
    p_stat,  # [NP] int32: poll iterations each program spent
    p_hx,  # [2, B, H] h ping-pong buffer; step t reads buffer (t+1)%2 (h0 in buffer 1), writes t%2
    #        (TAGGED: int32 words, h's 16 bits under a 16-bit step tag)
    p_w,  # [4H, H] W_hh (gates i, f, g, o)
    p_gx,  # [T, B, 4H] input projection
    p_c0,  # [B, H] fp32 initial c
    p_out,  # [T, B, H] output (LEVEL >= 6)
    p_cn,  # [B, H] fp32 final c (LEVEL >= 6)
    T,
    LEVEL: tl.constexpr, POLL: tl.constexpr, ARRIVE_SEEN: tl.constexpr,
    B: tl.constexpr, H: tl.constexpr, BH: tl.constexpr, NG: tl.constexpr,
    UPCAST: tl.constexpr, MAX_SPIN: tl.constexpr,
    GATE_MAJOR: tl.constexpr = False,  # tiles [NG, B] and gates^T = W slice @ h_prev^T, as the tier does
    TAGGED: tl.constexpr = False,  # no barrier: h published with its step's tag, readers poll h itself
):
    pid = tl.program_id(0)
    NP = tl.num_programs(0)
    o_b = tl.arange(0, B)
    o_k = tl.arange(0, H)
    o_jj = tl.arange(0, NG)
    o_j = pid * BH + o_jj  # owned hidden units (jj >= BH is padding)
    o_c = tl.arange(0, 4 * NG)  # W slice row/column g*NG + jj holds W_hh[g*H + pid*BH + jj, :]
    w_rows = (o_c // NG) * H + pid * BH + o_c % NG
    if GATE_MAJOR:  # tiles [NG, B], h_prev^T [H, B], W slice [4*NG, H]
        r_b, r_j, r_jj, r_k = o_b[None, :], o_j[:, None], o_jj[:, None], o_k[:, None]
        p_wt = p_w + w_rows[:, None] * H + o_k[None, :]
        m_w = ((o_c % NG) < BH)[:, None]
    else:  # tiles [B, NG], h_prev [B, H], W slice [H, 4*NG]
        r_b, r_j, r_jj, r_k = o_b[:, None], o_j[None, :], o_jj[None, :], o_k[None, :]
        p_wt = p_w + w_rows[None, :] * H + o_k[:, None]
        m_w = ((o_c % NG) < BH)[None, :]
    m_own = (r_jj < BH) & (r_b < B)
    p_own = r_b * H + r_j  # offsets of the owned tile in a [B, H] tensor
    if LEVEL >= 3:
        r_w = tl.load(p_wt, mask=m_w, other=0.0)  # loaded once for all T steps
        if UPCAST:
            r_w = r_w.to(tl.float32)
    if LEVEL >= 4:
        c = tl.load(p_c0 + p_own, mask=m_own, other=0.0)
    spins = tl.zeros((), dtype=tl.int32)
    # Two h buffers suffice with one barrier per step: a program writes buffer t%2 at step t
    # only after barrier t-1, which every program reaches after its step t-1 read of it.
    for t in range(T):
        if LEVEL >= 2:
            p_prev = p_hx + ((t + 1) % 2) * B * H
            if TAGGED:
                # All of h_prev once every word carries step t-1's tag (h0's words: 0xFFFF). A
                # 32-bit word is stored and loaded whole, so a word with the tag holds that
                # step's h: the data is its own flag, one round trip instead of three.
                want = (t + 0xFFFF) & 0xFFFF
                w = tl.load(p_prev + r_b * H + r_k, volatile=True)
                fresh = tl.min((((w >> 16) & 0xFFFF) == want).to(tl.int32))
                while (fresh == 0) & (spins < MAX_SPIN):
                    spins += 1
                    w = tl.load(p_prev + r_b * H + r_k, volatile=True)
                    fresh = tl.min((((w >> 16) & 0xFFFF) == want).to(tl.int32))
                b_h = (w & 0xFFFF).to(tl.uint16).to(p_out.dtype.element_ty, bitcast=True)
            else:
                b_h = tl.load(p_prev + r_b * H + r_k, cache_modifier=".cg")  # all of h_prev
            if LEVEL == 2:
                if GATE_MAJOR:
                    h = tl.broadcast_to(0.5 * tl.sum(b_h.to(tl.float32), axis=0)[None, :] / H, (NG, B))
                else:
                    h = tl.broadcast_to(0.5 * tl.sum(b_h.to(tl.float32), axis=1)[:, None] / H, (B, NG))
            else:
                if UPCAST:
                    b_h = b_h.to(tl.float32)
                # fp32 accumulators; "ieee" matters only for fp32 operands (16-bit products are exact)
                if GATE_MAJOR:
                    acc = tl.dot(r_w, b_h, input_precision="ieee")  # [4*NG, B]
                    acc_if, acc_go = tl.split(tl.permute(tl.reshape(acc, (2, 2 * NG, B)), (1, 2, 0)))
                    a_i, a_f = tl.split(tl.permute(tl.reshape(acc_if, (2, NG, B)), (1, 2, 0)))
                    a_g, a_o = tl.split(tl.permute(tl.reshape(acc_go, (2, NG, B)), (1, 2, 0)))
                else:
                    acc = tl.dot(b_h, r_w, input_precision="ieee")  # [B, 4*NG]
                    acc_if, acc_go = tl.split(tl.permute(tl.reshape(acc, (B, 2, 2 * NG)), (0, 2, 1)))
                    a_i, a_f = tl.split(tl.permute(tl.reshape(acc_if, (B, 2, NG)), (0, 2, 1)))
                    a_g, a_o = tl.split(tl.permute(tl.reshape(acc_go, (B, 2, NG)), (0, 2, 1)))
                if LEVEL >= 5:
                    p_g = p_gx + t * B * 4 * H + r_b * 4 * H + r_j
                    a_i += tl.load(p_g, mask=m_own, other=0.0).to(tl.float32)
                    a_f += tl.load(p_g + H, mask=m_own, other=0.0).to(tl.float32)
                    a_g += tl.load(p_g + 2 * H, mask=m_own, other=0.0).to(tl.float32)
                    a_o += tl.load(p_g + 3 * H, mask=m_own, other=0.0).to(tl.float32)
                if LEVEL == 3:
                    h = 0.25 * (a_i + a_f + a_g + a_o)
                else:
                    c = tl.sigmoid(a_f) * c + tl.sigmoid(a_i) * (2.0 * tl.sigmoid(2.0 * a_g) - 1.0)
                    h = tl.sigmoid(a_o) * (2.0 * tl.sigmoid(2.0 * c) - 1.0)
            if TAGGED:
                bits = h.to(p_out.dtype.element_ty).to(tl.uint16, bitcast=True).to(tl.int32)
                tl.store(p_hx + (t % 2) * B * H + p_own, ((t & 0xFFFF) << 16) | bits, mask=m_own)
            else:
                tl.store(p_hx + (t % 2) * B * H + p_own, h.to(p_hx.dtype.element_ty), mask=m_own)
            if LEVEL >= 6:
                tl.store(p_out + t * B * H + p_own, h.to(p_out.dtype.element_ty), mask=m_own)
                tl.store(p_cn + p_own, c, mask=m_own)
        if not TAGGED:
            spins = grid_barrier(p_sync, (t + 1) * NP, spins, POLL, ARRIVE_SEEN, MAX_SPIN)
    tl.store(p_stat + pid, spins)


# ---------------------------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One timed kernel: a level, its barrier's poll method, and the grid."""

    level: int  # 1..6, index into LEVELS plus one
    poll: str
    arrive_seen: bool
    NP: int
    gate_major: bool = False  # tiles [NG, B]; the dot is W slice @ h_prev^T

    @property
    def component(self) -> str:
        name = LEVELS[self.level - 1]
        if self.level == 1:
            return f"barrier[{self.poll}{'+arrive' if self.arrive_seen else ''}]"
        return f"+{name}[{self.poll}{',gate-major' if self.gate_major else ''}]"


def _power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def validate(B: int, H: int, T: int, nps) -> None:
    if not (_power_of_two(B) and B >= 16):
        raise ValueError(f"--B must be a power of two >= 16 (the dot's M); got {B}")
    if not (_power_of_two(H) and H >= 16):
        raise ValueError(f"--H must be a power of two >= 16 (the dot's K); got {H}")
    if T < 2:
        raise ValueError(f"--T must be at least 2; got {T}")
    if T >= 0xFFFE:  # the tagged exchange's 16-bit tags must not wrap onto buffers' initial tags
        raise ValueError(f"--T must be below {0xFFFE}; got {T}")
    if T * B * 4 * H >= 2 ** 31:  # the kernel's offsets are int32
        raise ValueError(f"T*B*4H = {T * B * 4 * H} elements of gx overflow int32 offsets; "
                         "lower --T, --B or --H")
    for n in nps:
        if not (_power_of_two(n) and n <= H):
            raise ValueError(f"every NP must be a power of two <= H={H}; got {n}")


def block_sizes(H: int, NP: int) -> tuple[int, int]:
    """(BH, NG): owned hidden units per program and the gate width padded to N = 4*NG >= 16."""
    BH = H // NP
    return BH, max(BH, 4)


def fit_problem(v: Variant, B: int, H: int, dtype: torch.dtype, n_sm: Optional[int],
                interpreter: bool = False) -> Optional[str]:
    """Why variant ``v`` cannot run (None when it can); ``interpreter``: under TRITON_INTERPRET."""
    if interpreter and v.poll == "acquire":
        return "the acquire poll is inline PTX, which only a GPU runs"
    if v.poll == "tagged" and dtype.itemsize * 8 != TAG_BITS:
        return f"the tagged exchange packs a {TAG_BITS}-bit h beside its tag; {dtype} is not"
    if n_sm is not None and v.NP > n_sm:
        return f"NP={v.NP} programs exceed the {n_sm} SMs: a spin barrier needs them all resident"
    if v.level >= 3:
        _, NG = block_sizes(H, v.NP)
        size = H * 4 * NG * dtype.itemsize
        if size > W_SLICE_LIMIT:
            return (f"the W_hh slice [{H}, {4 * NG}] is {size // 1024} KiB, "
                    f"over the {W_SLICE_LIMIT // 1024} KiB kept on chip")
    return None


def variants(nps, polls, gate_major: bool = True) -> list[Variant]:
    """Barrier variants first (every poll, with and without ARRIVE_SEEN), then each poll's stack;
    after the first poll's, the same stack gate-major (``gate_major``)."""
    out = [Variant(1, p, a, n) for n in nps for p in POLLS for a in (False, True)]
    for k, p in enumerate(polls):
        if gate_major and k == 0:
            forms = (False, True)
        else:  # the tagged stack runs in the tier's form, beside the atomic gate-major one
            forms = (gate_major and p == "tagged",)
        for gm in forms:
            out += [Variant(level, p, False, n, gm) for n in nps for level in range(2, len(LEVELS) + 1)]
    return out


def constexprs(v: Variant, B: int, H: int, upcast: bool) -> dict:
    # The barrier alone does not depend on the slice width: one compile for every NP.
    BH, NG = block_sizes(H, v.NP) if v.level >= 2 else (1, 1)
    return dict(LEVEL=v.level, POLL=POLL_CODE.get(v.poll, 0), ARRIVE_SEEN=v.arrive_seen, B=B, H=H, BH=BH, NG=NG,
                UPCAST=upcast, MAX_SPIN=MAX_SPIN, GATE_MAJOR=v.gate_major, TAGGED=v.poll == "tagged")


# ---------------------------------------------------------------------------------------------
# Running one variant and its torch reference
# ---------------------------------------------------------------------------------------------


@dataclass
class Problem:
    B: int
    H: int
    T: int
    dtype: torch.dtype
    device: torch.device
    w: torch.Tensor = field(init=False)  # [4H, H]
    gx: torch.Tensor = field(init=False)  # [T, B, 4H]
    h0: torch.Tensor = field(init=False)  # [B, H]
    c0: torch.Tensor = field(init=False)  # [B, H] fp32
    references: dict = field(init=False, default_factory=dict)  # (level, T) -> reference()

    def __post_init__(self):
        g = torch.Generator().manual_seed(0)
        k = self.H ** -0.5
        self.w = ((torch.rand(4 * self.H, self.H, generator=g) * 2 - 1) * k).to(self.dtype).to(self.device)
        self.gx = torch.randn(self.T, self.B, 4 * self.H, generator=g).to(self.dtype).to(self.device)
        self.h0 = (torch.rand(self.B, self.H, generator=g) * 2 - 1).to(self.dtype).to(self.device)
        self.c0 = (torch.rand(self.B, self.H, generator=g) * 2 - 1).to(self.device)


def tagged_words(h: torch.Tensor, tag: int) -> torch.Tensor:
    """int32 words of the tagged exchange: the 16 bits of ``h`` under ``tag``."""
    bits = h.contiguous().view(torch.int16).to(torch.int32) & 0xFFFF
    return bits | ((tag << 16) - (1 << 32) if tag >= 0x8000 else tag << 16)


def untagged(words: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The h that tagged int32 words carry."""
    return (words & 0xFFFF).to(torch.int16).view(dtype)


def buffers(v: Variant, prob: Problem, T: int) -> dict:
    """The launch's outputs: sync counter, poll counts, h ping-pong buffer (h0 in buffer 1), out, c_n.

    Tagged: h0's words carry tag 0xFFFF (what step 0 waits for) and buffer 0's 0xFFFE, which
    no step up to 65534 waits for, so no reader takes them for step 0's h. ``reset`` restores
    them (and the counter) before every launch."""
    dev, B, H = prob.device, prob.B, prob.H
    if v.poll == "tagged":
        hx = torch.stack([tagged_words(torch.zeros_like(prob.h0), 0xFFFE), tagged_words(prob.h0, 0xFFFF)])
    else:
        hx = torch.zeros(2, B, H, dtype=prob.dtype, device=dev)
        hx[1] = prob.h0
    sync = torch.zeros(1, dtype=torch.int32, device=dev)
    start = hx.clone()
    return dict(
        sync=sync,
        stat=torch.zeros(v.NP, dtype=torch.int32, device=dev),
        hx=hx,
        out=torch.zeros(T, B, H, dtype=prob.dtype, device=dev),
        cn=torch.zeros(B, H, dtype=torch.float32, device=dev),
        reset=lambda: (sync.zero_(), hx.copy_(start)),
    )


def launch(v: Variant, prob: Problem, T: int, bufs: dict) -> None:
    """Run variant ``v`` for T steps into ``bufs`` (its sync counter must be zero)."""
    # bf16 arithmetic in the interpreter is wrong: there every operand is upcast after its load.
    upcast = interpreting() or prob.dtype == torch.float32
    options = {} if interpreting() else {"launch_cooperative_grid": True}
    anatomy_kernel[(v.NP,)](
        bufs["sync"], bufs["stat"], bufs["hx"], prob.w, prob.gx, prob.c0, bufs["out"], bufs["cn"], T,
        **constexprs(v, prob.B, prob.H, upcast), num_warps=NUM_WARPS, **options,
    )



def reference(level: int, prob: Problem, T: int) -> dict:
    """The recurrence level ``level`` computes, in fp32 with h rounded to the storage dtype each step."""
    key = (level, T)
    if key not in prob.references:  # every NP and poll of a level checks against the same loop
        prob.references[key] = _reference(level, prob, T)
    return prob.references[key]


def _reference(level: int, prob: Problem, T: int) -> dict:
    w = prob.w.float()
    h = prob.h0.float()
    c = prob.c0.clone()
    outs = []
    for t in range(T):
        if level == 2:
            h_new = (0.5 * h.mean(dim=1, keepdim=True)).expand_as(h)
        else:
            gates = h @ w.t()
            if level >= 5:
                gates = gates + prob.gx[t].float()
            i, f, g, o = gates.chunk(4, dim=1)
            if level == 3:
                h_new = 0.25 * (i + f + g + o)
            else:
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h_new = torch.sigmoid(o) * torch.tanh(c)
        h = h_new.to(prob.dtype).float()
        outs.append(h)
    return {"h": h, "c": c, "out": torch.stack(outs)}


# A few rounding flips of h (ulp 2^-8 in bf16 below 1) over T steps; a stale h from a broken
# barrier is off by far more.
TOLERANCE = {torch.float32: 1e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def check(v: Variant, prob: Problem, T: int, bufs: dict) -> dict:
    """What the launch must have done: the barrier's count, and the level's h (c, out) against torch."""
    result: dict[str, Any] = {"ok": True, "problems": []}
    count = int(bufs["sync"].item())
    spins = int(bufs["stat"].max().item())
    arrivals = 0 if v.poll == "tagged" else T * v.NP  # the tagged exchange has no barrier
    if count != arrivals:
        result["problems"].append(f"barrier count {count} != {arrivals} arrivals")
    result["spin_budget_spent"] = spins >= MAX_SPIN
    if spins >= MAX_SPIN:
        result["problems"].append(f"spin budget of {MAX_SPIN} polls exhausted: the barrier never completed")
    result["polls_per_step"] = spins / T
    if v.level >= 2:
        ref = reference(v.level, prob, T)
        last = bufs["hx"][(T - 1) % 2]
        got = {"h": (untagged(last, prob.dtype) if v.poll == "tagged" else last).float().cpu()}
        if v.level >= 6:
            got["out"] = bufs["out"].float().cpu()
            got["c"] = bufs["cn"].cpu()
        err = max((got[k] - ref[k].cpu()).abs().max().item() for k in got)
        result["max_err"] = err
        if not err <= TOLERANCE[prob.dtype]:  # also catches NaN
            result["problems"].append(f"max error {err:.3g} against torch over {sorted(got)} "
                                      f"(tolerance {TOLERANCE[prob.dtype]})")
    result["ok"] = not result["problems"]
    return result


class Timer:
    """CUDA events on a GPU, perf_counter on CPU (the interpreter runs synchronously); milliseconds."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def time(self, fn) -> float:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3


def per_step_times(row: dict, launch_at, reset, T: int, timer: Timer, runs: int) -> dict:
    """``row`` (the checked warm-up's) with us_per_step and marginal_us_per_step: the median of
    ``runs`` launches ``launch_at(steps)`` of T steps and of T/8, ``reset()`` (the barrier
    counter zeroed) before each. A barrier that spun out its budget is not timed (every
    further launch would spin it out too)."""
    if row["spin_budget_spent"]:
        row.update(us_per_step=None, marginal_us_per_step=None)
        return row
    T0 = max(T // 8, 1)

    def median_ms(steps):
        times = []
        for _ in range(runs):
            reset()
            times.append(timer.time(lambda: launch_at(steps)))
        return statistics.median(times)

    ms, ms0 = median_ms(T), median_ms(T0)
    row["us_per_step"] = ms * 1e3 / T
    row["marginal_us_per_step"] = (ms - ms0) * 1e3 / (T - T0) if T > T0 else None
    return row


def time_variant(v: Variant, prob: Problem, timer: Timer, runs: int) -> dict:
    """Warm-up launch (checked), then the median of ``runs`` launches at T and at T/8."""
    bufs = buffers(v, prob, prob.T)
    launch(v, prob, prob.T, bufs)  # compiles; its results are the ones checked
    row = check(v, prob, prob.T, bufs)
    return per_step_times(row, lambda steps: launch(v, prob, steps, bufs), bufs["reset"], prob.T, timer, runs)


# ---------------------------------------------------------------------------------------------
# The run: every variant in order, under one deadline
# ---------------------------------------------------------------------------------------------


def add_deltas(rows: list[dict]) -> None:
    """delta_us: against the previous level at the same NP and poll (barrier variants: the atomic one)."""
    by_key = {(r["level"], r["poll"], r["arrive_seen"], r["NP"], r["gate_major"]): r for r in rows}
    for r in rows:
        if r["level"] == 1:
            is_base = (r["poll"], r["arrive_seen"]) == ("atomic", False)
            base = None if is_base else by_key.get((1, "atomic", False, r["NP"], False))
        elif r["level"] == 2:
            base = by_key.get((1, r["poll"], False, r["NP"], False))
        else:
            base = by_key.get((r["level"] - 1, r["poll"], False, r["NP"], r["gate_major"]))
        timed = base is not None and None not in (r["us_per_step"], base["us_per_step"])
        r["delta_us"] = r["us_per_step"] - base["us_per_step"] if timed else None


def run_rows(todo: list, where, why_not, measure, deadline: float) -> dict:
    """Each variant of ``todo`` in order: ``where(v)`` names its row, ``why_not(v)`` says why it
    cannot run (None: it can), ``measure(v)`` times and checks it; past ``deadline`` the rest
    are skipped."""
    rows, skipped = [], []
    for v in todo:
        named = where(v)
        why = why_not(v)
        if why is None and time.monotonic() > deadline:
            why = "the run's time budget was spent"
        if why is not None:
            skipped.append({**named, "reason": why})
            continue
        try:
            measured = measure(v)
        except Exception as e:  # a launch the driver refuses fails its row (and the exit status), not the run
            measured = {"ok": False, "problems": [f"{type(e).__name__}: {str(e).strip()[:300]}"],
                        "us_per_step": None, "marginal_us_per_step": None, "polls_per_step": None,
                        "spin_budget_spent": False}
        rows.append({**named, **measured})
    return {"rows": rows, "skipped": skipped}


def run_all(prob: Problem, todo: list[Variant], n_sm: Optional[int], runs: int, deadline: float) -> dict:
    result = run_rows(
        todo,
        lambda v: {"component": v.component, "level": v.level, "poll": v.poll, "arrive_seen": v.arrive_seen,
                   "NP": v.NP, "gate_major": v.gate_major},
        lambda v: fit_problem(v, prob.B, prob.H, prob.dtype, n_sm, interpreter=interpreting()),
        lambda v: time_variant(v, prob, timer=Timer(prob.device), runs=runs),
        deadline)
    add_deltas(result["rows"])
    return result


def fmt(x, spec=".2f") -> str:
    return "-" if x is None else format(x, spec)


def format_table(rows: list[dict]) -> str:
    head = ["component", "NP", "us/step", "marginal", "delta", "polls/step", "max_err", "status"]
    body = [[r["component"], str(r["NP"]), fmt(r["us_per_step"]), fmt(r["marginal_us_per_step"]),
             fmt(r["delta_us"], "+.2f"), fmt(r["polls_per_step"], ".1f"), fmt(r.get("max_err"), ".2g"),
             "ok" if r["ok"] else "FAIL: " + "; ".join(r["problems"])] for r in rows]
    return aligned(head, body)


def aligned(head: list[str], body: list[list[str]]) -> str:
    widths = [max([len(h)] + [len(b[k]) for b in body]) for k, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)).rstrip() for b in body]
    return "\n".join(lines)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu (Triton interpreter)"


def run_device(dry_run: bool) -> tuple[torch.device, Optional[int]]:
    """(device, SM count) of a run: the CPU under the interpreter for a dry run, else the GPU."""
    if dry_run:
        if not interpreting():
            raise RuntimeError("--dry-run runs under TRITON_INTERPRET=1; start it as a script, "
                               "or import this file with the variable set")
        return torch.device("cpu"), None
    if interpreting():
        raise RuntimeError("TRITON_INTERPRET is set: interpreted timings mean nothing; "
                           "unset it or use --dry-run")
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU: use --dry-run (CPU rehearsal) or --aot sm_90 (compile only)")
    device = torch.device("cuda")
    return device, torch.cuda.get_device_properties(device).multi_processor_count


def report(result: dict, header: str, out: str, name: str) -> int:
    """Print the rows and the skipped ones, write ``out/name``; the exit status (1: a row failed)."""
    print(header)
    print(format_table(result["rows"]))
    for s in result["skipped"]:
        print(f"skipped {s['component']} NP={s['NP']}: {s['reason']}")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, name)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {path} ({result['elapsed_s']:.1f} s)")
    return 0 if all(r["ok"] for r in result["rows"]) else 1


def run_facts(device: torch.device, n_sm: Optional[int], start: float) -> dict:
    """What every result names: device, SM count, date, versions, elapsed time."""
    return dict(device=device_name(device), sm_count=n_sm,
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                torch=torch.__version__, triton=triton.__version__, elapsed_s=time.monotonic() - start)


def main_run(args, nps, polls) -> int:
    start = time.monotonic()
    device, n_sm = run_device(args.dry_run)
    prob = Problem(args.B, args.H, args.T, DTYPES[args.dtype], device)
    result = run_all(prob, variants(nps, polls, args.gate_major), n_sm, args.runs, start + args.budget_s)
    result.update(dry_run=bool(args.dry_run), B=args.B, H=args.H, T=args.T, dtype=args.dtype, num_warps=NUM_WARPS,
                  runs=args.runs, **run_facts(device, n_sm, start))
    header = (f"latency anatomy on {result['device']}: B={args.B} H={args.H} T={args.T} {args.dtype}, "
              f"{NUM_WARPS} warps, median of {args.runs} (us per step)")
    return report(result, header, args.out, "latency_anatomy.json")


# ---------------------------------------------------------------------------------------------
# Ahead-of-time compile: the same variants, for a target, no GPU
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnatomySpec:
    """What ``lstm_kernels.aot.compile_spec`` reads from a kernel spec."""

    kernel: Any
    signature: dict
    constexprs: dict
    num_warps: int = NUM_WARPS
    num_stages: int = 1
    label: str = ""
    extra: dict = field(default_factory=dict)
    divisible_by_16: tuple = ()


def aot_specs(B: int, H: int, dtype: torch.dtype, nps, polls, arch: int,
              gate_major: bool = True) -> list[AnatomySpec]:
    """One spec per distinct compiled kernel of the run (the barrier alone is one per poll for every NP)."""
    n_sm = 132 if arch >= 90 else 108  # H100/H200, A100
    tdt = TL_DTYPES[dtype]
    pointers = {"p_sync": "*i32", "p_stat": "*i32", "p_hx": f"*{tdt}", "p_w": f"*{tdt}", "p_gx": f"*{tdt}",
                "p_c0": "*fp32", "p_out": f"*{tdt}", "p_cn": "*fp32"}
    specs, seen = [], set()
    for v in variants(nps, polls, gate_major):
        if fit_problem(v, B, H, dtype, n_sm) is not None:
            continue
        consts = constexprs(v, B, H, upcast=dtype == torch.float32)
        key = tuple(sorted(consts.items()))
        if key in seen:
            continue
        seen.add(key)
        specs.append(AnatomySpec(
            kernel=anatomy_kernel,
            signature={**pointers, **({"p_hx": "*i32"} if consts["TAGGED"] else {}), "T": "i32",
                       **{k: "constexpr" for k in consts}},
            constexprs=consts,
            label=f"{v.component} {tdt} B={B} H={H} BH={consts['BH']} NG={consts['NG']}",
            extra={"kernel": f"{v.component} BH={consts['BH']} NG={consts['NG']}"},
            divisible_by_16=tuple(pointers),
        ))
    return specs


PTX_OPS = ("bar.sync", "atom.", "ld.global.gpu.acquire", "ld.acquire.gpu", "ld.volatile", "st.shared",
           "mma.sync", "wgmma", "ldmatrix")


def ptx_counts(spec: AnatomySpec, arch: int) -> dict:
    """How often each of PTX_OPS occurs in the kernel's PTX (the whole kernel, not per step).

    Compiling ``spec`` again after ``aot.check_specs`` hits triton's cache: same source,
    target, options and argument attributes.
    """
    import inspect

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = list(spec.signature)
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in spec.divisible_by_16}
    key = "constexprs" if "constexprs" in inspect.signature(ASTSource.__init__).parameters else "constants"
    src = ASTSource(fn=spec.kernel, signature=dict(spec.signature), attrs=attrs,
                    **{key: dict(spec.constexprs)})
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": spec.num_warps, "num_stages": spec.num_stages})
    ptx = compiled.asm["ptx"]
    return {op: ptx.count(op) for op in PTX_OPS}


def format_ptx_table(specs, counts) -> str:
    head = ["kernel", *PTX_OPS]
    body = [[s.extra["kernel"], *(str(c[op]) for op in PTX_OPS)] for s, c in zip(specs, counts)]
    return aligned(head, body)


def main_aot(args, nps, polls) -> int:
    from lstm_kernels import aot

    arch = aot.parse_arch(args.aot)
    if interpreting():
        raise RuntimeError("--aot compiles real cubins; run it as a script (it turns TRITON_INTERPRET off)")
    specs = aot_specs(args.B, args.H, DTYPES[args.dtype], nps, polls, arch, args.gate_major)
    return aot_report(specs, arch, "latency_anatomy",
                      "PTX instructions per kernel (the poll loop's bar.sync and shared-memory broadcast show here):")


def aot_report(specs: list, arch: int, module: str, ptx_title: str) -> int:
    """Compile ``specs`` for ``arch``, print the compile table, the PTX counts and the summary;
    the exit status (1: a kernel failed, spilled or is over the shared-memory limit)."""
    from lstm_kernels import aot

    start = time.monotonic()
    reports = aot.check_specs(specs, arch, module=module)
    print(aot.format_table(reports))
    for r in reports:
        if r.error is not None and r.extra.get("traceback"):
            print(f"\n{r.name} [{r.label}]:\n{r.extra['traceback']}", file=sys.stderr)
    built = [s for s, r in zip(specs, reports) if r.error is None]
    print("\n" + ptx_title)
    print(format_ptx_table(built, [ptx_counts(s, arch) for s in built]))
    print(aot.summary_line(reports, arch) + f" ({time.monotonic() - start:.1f} s)")
    return 0 if all(r.ok for r in reports) else 1


def int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers; got {text!r}") from None


def finish_args(parser, args, np_default) -> list[int]:
    """The arguments both anatomies share, defaulted and checked (``parser.error`` on a bad
    one): H, T and NP (smaller for a dry run, which launches NP=1 only), --aot against
    --dry-run, --out, --runs, the sizes. Returns the NP list."""
    small = args.dry_run
    args.H = args.H if args.H is not None else (16 if small else 256)
    args.T = args.T if args.T is not None else (4 if small else 512)
    nps = args.np if args.np is not None else ([1] if small else list(np_default))
    if small and any(n != 1 for n in nps):
        parser.error("--dry-run launches NP=1 only: the interpreter runs programs one after another, "
                     "so a spin barrier across programs would deadlock")
    if args.aot is not None:
        from lstm_kernels.aot import parse_arch

        try:
            parse_arch(args.aot)
        except ValueError as e:
            parser.error(f"--aot: {e}")
    if args.aot is not None and args.dry_run:
        parser.error("--aot compiles real kernels and --dry-run interprets them: pick one")
    if args.aot is None and args.out is None:
        parser.error("--out is required (or --aot ARCH to compile only)")
    if args.runs < 1:
        parser.error(f"--runs must be at least 1; got {args.runs}")
    try:
        validate(args.B, args.H, args.T, nps)
    except ValueError as e:
        parser.error(str(e))
    return nps


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder for latency_anatomy.json (required unless --aot)")
    parser.add_argument("--B", type=int, default=None, help="batch (default 16; 16 with --dry-run)")
    parser.add_argument("--H", type=int, default=None, help="hidden size (default 256; 16 with --dry-run)")
    parser.add_argument("--T", type=int, default=None,
                        help="steps per launch (default 512; 4 with --dry-run)")
    parser.add_argument("--np", type=int_list, default=None,
                        help=f"programs, comma-separated (default {','.join(map(str, NP_DEFAULT))}; "
                             "1 with --dry-run)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--poll", choices=(*STACKS, "all"), default="all",
                        help="the barrier poll of levels 2-6, or tagged (no barrier; the barrier alone always "
                             "times every poll)")
    parser.add_argument("--no-gate-major", dest="gate_major", action="store_false",
                        help="skip the gate-major stack (gates^T = W slice @ h_prev^T, the tier's form)")
    parser.add_argument("--runs", type=int, default=5, help="timed launches per row (median)")
    # 45 s of rows leaves the imports, CUDA's start and the last row inside a minute.
    parser.add_argument("--budget-s", type=float, default=45.0, help="deadline for the rows, seconds")
    parser.add_argument("--dry-run", action="store_true", help="CPU rehearsal under the Triton interpreter")
    parser.add_argument("--aot", default=None, metavar="ARCH", help="compile only, for sm_80 or sm_90")
    args = parser.parse_args(argv)
    args.B = args.B if args.B is not None else 16
    nps = finish_args(parser, args, NP_DEFAULT)
    polls = list(STACKS) if args.poll == "all" else [args.poll]
    return args, nps, polls


def main(argv=None) -> int:
    args, nps, polls = parse_args(argv)
    if args.aot is not None:
        return main_aot(args, nps, polls)
    return main_run(args, nps, polls)


if __name__ == "__main__":
    sys.exit(main())
