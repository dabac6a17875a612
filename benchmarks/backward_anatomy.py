#!/usr/bin/env python
"""Latency anatomy of one persistent LSTM backward step: where a backward step's time goes.

    python benchmarks/backward_anatomy.py --out DIR [--B 16 --H 256 --T 512]
    python benchmarks/backward_anatomy.py --out DIR --dry-run    # CPU, Triton interpreter, < 20 s
    python benchmarks/backward_anatomy.py --aot sm_90            # compile only, no GPU needed

The backward half of ``latency_anatomy.py`` (same barrier, timer and checks): one persistent
kernel, ``backward_anatomy_kernel``, runs T backward steps inside the launch, and its
constexpr LEVEL adds one component at a time. Both layouts of the persistent tier's backward
run, gate-major ([units, B] tiles) as the tier's kernels are:

  ``columns`` (``backward_kernel`` with a resident slice, H <= 256): program n owns BH = H/NP
      columns of h and holds W_hh[:, owned]^T [BH, 4H]; it publishes its units' gate
      gradients [B, 4*BH] and, after the barrier, reads all of them [B, 4H] (fp32).
  ``rows`` (``backward_rows_kernel``, larger H): program n holds W_hh's rows of its BH units
      for the four gates ([H, BH] each), publishes its share of dh for every column [B, H]
      (fp32) and, after the barrier, sums the NP shares of its own columns [NP, B, BH].

  1 exchange  the barrier plus the layout's publish and read; dh_next = 0.5 * mean(dh), so the
              read cannot be dropped
  2 dot       + the layout's matmul with every gate's gradient equal to dh:
              dh_next = 0.25 * dh @ (W_i + W_f + W_g + W_o)
  3 cell      + the LSTM backward pointwise: the saved gates and cell states of the step and
              out's gradient loaded, dc carried in registers, the four gate gradients computed
              (the dot takes them): the tier's backward step
  4 stores    + the gate gradients (for the weight gradients after the scan) and dc stored
              every step

The ``prefetch`` rows repeat level 4 with the next step's saved state and out's gradient
loaded before the barrier (the tier's PREFETCH_SAVED). bf16 runs the dot on 16-bit operands
(the gate gradients rounded to bf16, as the tier's LOW_DOT); fp32 on TF32 (IEEE under the
interpreter). The poll is every thread's ``ld.acquire`` (the tier's), the scalar atomic under
the interpreter (inline PTX cannot run there). Rows, timing, deadline and the dry run's
limits (NP = 1, T = 4) are those of ``latency_anatomy.py``.

Dimensions: T steps, B batch, H hidden, NP programs, BH = H/NP units per program.
"""
from __future__ import annotations

import importlib.util
import os
import sys

if __name__ == "__main__":
    if "--dry-run" in sys.argv[1:]:
        os.environ["TRITON_INTERPRET"] = "1"
    elif any(a == "--aot" or a.startswith("--aot=") for a in sys.argv[1:]):
        os.environ["TRITON_INTERPRET"] = "0"
    _ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if _ROOT not in sys.path:  # the GPU machine runs from a checkout; nothing is installed there
        sys.path.insert(0, _ROOT)

import argparse  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any, Optional  # noqa: E402

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402


def _forward_anatomy():
    """``latency_anatomy.py`` loaded from its file (the benchmarks are scripts, not a package;
    a benchmarks/ entry on sys.path would shadow tests/conftest.py)."""
    if "latency_anatomy" in sys.modules:
        return sys.modules["latency_anatomy"]
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "latency_anatomy.py")
    spec = importlib.util.spec_from_file_location("latency_anatomy", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["latency_anatomy"] = mod
    spec.loader.exec_module(mod)
    return mod


anatomy = _forward_anatomy()
grid_barrier = anatomy.grid_barrier

LEVELS = ("exchange", "dot", "cell", "stores")
LAYOUTS = ("rows", "columns")
NP_DEFAULT = (4, 8, 16)
# The slice a program keeps on chip, as the tier's resident backward tilings bound it
# (lstm_kernels/_triton/persistent/tiling.py: 128 KB for the row split, 200 KB with the
# gate-gradient operand for the column slice).
W_SLICE_LIMIT = 128 * 1024
NUM_WARPS = 8  # the tier's resident backward warps (_RESIDENT_WARPS)
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
TL_DTYPES = {torch.bfloat16: "bf16", torch.float32: "fp32"}
# bf16: h's rounding is not in play here, but the gate gradients' rounding to bf16 for the
# dot is, identically in kernel and reference; the sums' order differs. fp32: TF32 on a GPU.
TOLERANCE = {(torch.bfloat16, False): 2e-2, (torch.bfloat16, True): 2e-2,
             (torch.float32, False): 1e-5, (torch.float32, True): 2e-2}  # (dtype, on a GPU)


@triton.jit(do_not_specialize=["T"])
def backward_anatomy_kernel(
    p_sync,  # [1] int32 barrier counter, zero at launch
    p_stat,  # [NP] int32: poll iterations each program spent
    p_x,  # fp32 exchange by step parity: rows [2, NP, B, H] shares of dh; columns [2, B, 4H] gate gradients
    p_w,  # [4H, H] W_hh (gates i, f, g, o)
    p_sg,  # [T, B, 4H] fp32 saved activated gates
    p_sc,  # [T + 1, B, H] fp32 saved cell states: index t + 1 holds c[t], index 0 c0
    p_dout,  # [T, B, H] fp32 upstream gradient of out
    p_dh0,  # [B, H] fp32 gradient entering the last time step (h_n's)
    p_dg,  # [T, B, 4H] fp32 gate gradients (LEVEL >= 4)
    p_dc,  # [B, H] fp32 final cell-state gradient (LEVEL >= 4)
    T,
    LEVEL: tl.constexpr, ROWS: tl.constexpr, POLL: tl.constexpr, PREFETCH: tl.constexpr,
    B: tl.constexpr, H: tl.constexpr, BH: tl.constexpr, NPK: tl.constexpr,
    LOW_DOT: tl.constexpr, DOT_PRECISION: tl.constexpr, MAX_SPIN: tl.constexpr,
):
    pid = tl.program_id(0)
    NP = tl.num_programs(0)
    o_b = tl.arange(0, B)
    o_k = tl.arange(0, H)
    o_j = pid * BH + tl.arange(0, BH)  # owned units (rows) or columns (columns)
    o_q = tl.arange(0, 4 * H)
    own = o_b[None, :] * H + o_j[:, None]  # [BH, B] tile in a [B, H] tensor
    G = 4 * H
    if LEVEL >= 2:
        if ROWS:
            p_wg = p_w + o_j[None, :] * H + o_k[:, None]  # W_hh[g*H + owned units, :]^T: [H, BH]
            r_w0 = tl.load(p_wg)
            r_w1 = tl.load(p_wg + H * H)
            r_w2 = tl.load(p_wg + 2 * H * H)
            r_w3 = tl.load(p_wg + 3 * H * H)
            if not LOW_DOT:
                r_w0 = r_w0.to(tl.float32)
                r_w1 = r_w1.to(tl.float32)
                r_w2 = r_w2.to(tl.float32)
                r_w3 = r_w3.to(tl.float32)
        else:
            r_wt = tl.load(p_w + o_q[None, :] * H + o_j[:, None])  # W_hh[:, owned columns]^T: [BH, 4H]
            if not LOW_DOT:
                r_wt = r_wt.to(tl.float32)
    dh_in = tl.load(p_dh0 + own)
    dc = tl.zeros((BH, B), dtype=tl.float32)
    if PREFETCH:
        t0 = T - 1
        p_s0 = p_sg + t0 * B * G + o_b[None, :] * G + o_j[:, None]
        x_i, x_f, x_g, x_o = tl.load(p_s0), tl.load(p_s0 + H), tl.load(p_s0 + 2 * H), tl.load(p_s0 + 3 * H)
        x_c, x_cp = tl.load(p_sc + (t0 + 1) * B * H + own), tl.load(p_sc + t0 * B * H + own)
        x_do = tl.load(p_dout + t0 * B * H + own)
    spins = tl.zeros((), dtype=tl.int32)
    for s in range(T):
        t = T - 1 - s
        # The gradient reaching step t through h: h_n's at the first step, else the exchange.
        if s == 0:
            dh = dh_in
        else:
            par = (s + 1) % 2
            if ROWS:
                o_n = tl.arange(0, NPK)
                p_sh = p_x + ((par * NP + o_n[:, None, None]) * B + o_b[None, None, :]) * H + o_j[None, :, None]
                tot = tl.sum(tl.load(p_sh, mask=(o_n < NP)[:, None, None], other=0.0, cache_modifier=".cg"),
                             axis=0)
            else:
                q = tl.load(p_x + par * B * G + o_b[None, :] * G + o_q[:, None], cache_modifier=".cg")  # [4H, B]
                if LEVEL == 1:
                    tot = tl.broadcast_to((0.5 / G) * tl.sum(q, axis=0)[None, :], (BH, B))
                else:
                    if LOW_DOT:
                        q = q.to(r_wt.dtype)
                    tot = tl.dot(r_wt, q, input_precision=DOT_PRECISION)
            if LEVEL == 2:
                dh = 0.25 * tot
            else:
                dh = tot
        if LEVEL >= 3:
            if PREFETCH:
                gi, gf, gg, go, c, c_prev, d_out = x_i, x_f, x_g, x_o, x_c, x_cp, x_do
            else:
                p_s = p_sg + t * B * G + o_b[None, :] * G + o_j[:, None]
                gi, gf, gg, go = tl.load(p_s), tl.load(p_s + H), tl.load(p_s + 2 * H), tl.load(p_s + 3 * H)
                c, c_prev = tl.load(p_sc + (t + 1) * B * H + own), tl.load(p_sc + t * B * H + own)
                d_out = tl.load(p_dout + t * B * H + own)
            dh += d_out
            tc = 2.0 * tl.sigmoid(2.0 * c) - 1.0
            dc_t = dc + dh * go * (1.0 - tc * tc)
            d_i = dc_t * gg * gi * (1.0 - gi)
            d_f = dc_t * c_prev * gf * (1.0 - gf)
            d_g = dc_t * gi * (1.0 - gg * gg)
            d_o = dh * tc * go * (1.0 - go)
            dc = dc_t * gf
        else:
            d_i, d_f, d_g, d_o = dh, dh, dh, dh
        if LEVEL >= 4:
            p_d = p_dg + t * B * G + o_b[None, :] * G + o_j[:, None]
            tl.store(p_d, d_i)
            tl.store(p_d + H, d_f)
            tl.store(p_d + 2 * H, d_g)
            tl.store(p_d + 3 * H, d_o)
            tl.store(p_dc + own, dc)
        # Publish for the next step.
        pw = s % 2
        if ROWS:
            if LEVEL == 1:
                share = tl.broadcast_to((0.5 / H) * tl.sum(dh, axis=0)[None, :], (H, B))
            else:
                if LOW_DOT:
                    d_i, d_f, d_g, d_o = (d_i.to(r_w0.dtype), d_f.to(r_w0.dtype), d_g.to(r_w0.dtype),
                                          d_o.to(r_w0.dtype))
                share = tl.dot(r_w0, d_i, input_precision=DOT_PRECISION)
                share = tl.dot(r_w1, d_f, share, input_precision=DOT_PRECISION)
                share = tl.dot(r_w2, d_g, share, input_precision=DOT_PRECISION)
                share = tl.dot(r_w3, d_o, share, input_precision=DOT_PRECISION)
            tl.store(p_x + ((pw * NP + pid) * B + o_b[None, :]) * H + o_k[:, None], share)
        else:
            p_q = p_x + pw * B * G + o_b[None, :] * G + o_j[:, None]
            tl.store(p_q, d_i)
            tl.store(p_q + H, d_f)
            tl.store(p_q + 2 * H, d_g)
            tl.store(p_q + 3 * H, d_o)
        if PREFETCH:
            tn = tl.maximum(t - 1, 0)  # the last step reloads step 0's: in bounds, unused
            p_sn = p_sg + tn * B * G + o_b[None, :] * G + o_j[:, None]
            x_i, x_f, x_g, x_o = tl.load(p_sn), tl.load(p_sn + H), tl.load(p_sn + 2 * H), tl.load(p_sn + 3 * H)
            x_c, x_cp = tl.load(p_sc + (tn + 1) * B * H + own), tl.load(p_sc + tn * B * H + own)
            x_do = tl.load(p_dout + tn * B * H + own)
        spins = grid_barrier(p_sync, (s + 1) * NP, spins, POLL, False, MAX_SPIN)
    tl.store(p_stat + pid, spins)


@dataclass(frozen=True)
class Variant:
    level: int  # 1..4, index into LEVELS plus one
    layout: str  # "rows" or "columns"
    NP: int
    prefetch: bool = False

    @property
    def component(self) -> str:
        name = ("bwd-" if self.level == 1 else "+") + LEVELS[self.level - 1]
        return f"{name}[{self.layout}{',prefetch' if self.prefetch else ''}]"


def variants(nps, layouts=LAYOUTS) -> list[Variant]:
    """Per NP and layout: levels 1-4, then level 4 with the prefetch."""
    out = []
    for n in nps:
        for layout in layouts:
            out += [Variant(level, layout, n) for level in range(1, len(LEVELS) + 1)]
            out.append(Variant(len(LEVELS), layout, n, prefetch=True))
    return out


def fit_problem(v: Variant, B: int, H: int, dtype: torch.dtype, n_sm: Optional[int],
                major: Optional[int] = None) -> Optional[str]:
    """Why variant ``v`` cannot run (None when it can); ``major``: the GPU's compute capability."""
    if major is not None and major < 9:
        # As the tier's resident backward (tiling.py): before sm_90 the operands are loaded
        # into registers every step, and sm_80 spills and runs out of shared memory here.
        return "the resident backward layouts need sm_90 or later (wgmma reads the slice in place)"
    if n_sm is not None and v.NP > n_sm:
        return f"NP={v.NP} programs exceed the {n_sm} SMs: a spin barrier needs them all resident"
    BH = H // v.NP
    if BH < 16:
        return f"BH = H/NP = {BH} units per program: the dot needs at least 16"
    size = 4 * H * BH * (2 if dtype == torch.bfloat16 else 4)
    if size > W_SLICE_LIMIT:
        return f"the W_hh slice of {size // 1024} KiB is over the {W_SLICE_LIMIT // 1024} KiB kept on chip"
    return None


def settings(dtype: torch.dtype, interpreter: bool) -> tuple[bool, str, int]:
    """(LOW_DOT, DOT_PRECISION, POLL code) of a launch."""
    low = dtype == torch.bfloat16 and not interpreter  # the interpreter's bf16 arithmetic is wrong
    prec = "ieee" if (low or interpreter) else "tf32"
    poll = anatomy.POLL_CODE["atomic" if interpreter else "acquire"]
    return low, prec, poll


def constexprs(v: Variant, B: int, H: int, dtype: torch.dtype, interpreter: bool) -> dict:
    low, prec, poll = settings(dtype, interpreter)
    return dict(LEVEL=v.level, ROWS=v.layout == "rows", POLL=poll, PREFETCH=v.prefetch, B=B, H=H,
                BH=H // v.NP, NPK=triton.next_power_of_2(v.NP), LOW_DOT=low, DOT_PRECISION=prec,
                MAX_SPIN=anatomy.MAX_SPIN)


@dataclass
class Problem:
    B: int
    H: int
    T: int
    dtype: torch.dtype
    device: torch.device
    w: torch.Tensor = field(init=False)  # [4H, H]
    sg: torch.Tensor = field(init=False)  # [T, B, 4H] fp32, activated gates in (0, 1)
    sc: torch.Tensor = field(init=False)  # [T + 1, B, H] fp32 cell states (c0 first)
    dout: torch.Tensor = field(init=False)  # [T, B, H] fp32
    dh0: torch.Tensor = field(init=False)  # [B, H] fp32
    references: dict = field(init=False, default_factory=dict)

    def __post_init__(self):
        g = torch.Generator().manual_seed(0)
        B, H, T = self.B, self.H, self.T
        k = H ** -0.5
        self.w = ((torch.rand(4 * H, H, generator=g) * 2 - 1) * k).to(self.dtype).to(self.device)
        self.sg = torch.rand(T, B, 4 * H, generator=g).to(self.device)
        self.sc = (torch.rand(T + 1, B, H, generator=g) * 2 - 1).to(self.device)
        self.dout = (torch.randn(T, B, H, generator=g) * 0.1).to(self.device)
        self.dh0 = (torch.randn(B, H, generator=g) * 0.1).to(self.device)


def buffers(v: Variant, prob: Problem) -> dict:
    dev, B, H, T = prob.device, prob.B, prob.H, prob.T
    shape = (2, v.NP, B, H) if v.layout == "rows" else (2, B, 4 * H)
    return dict(
        sync=torch.zeros(1, dtype=torch.int32, device=dev),
        stat=torch.zeros(v.NP, dtype=torch.int32, device=dev),
        x=torch.zeros(shape, dtype=torch.float32, device=dev),
        dg=torch.zeros(T, B, 4 * H, dtype=torch.float32, device=dev),
        dc=torch.zeros(B, H, dtype=torch.float32, device=dev),
    )


def launch(v: Variant, prob: Problem, T: int, bufs: dict) -> None:
    """Run variant ``v`` for the last T of the problem's steps (its sync counter must be zero)."""
    interp = anatomy.interpreting()
    options = {} if interp else {"launch_cooperative_grid": True}
    first = prob.T - T  # a shorter launch runs the problem's last T steps, which start at h_n's gradient
    backward_anatomy_kernel[(v.NP,)](
        bufs["sync"], bufs["stat"], bufs["x"], prob.w, prob.sg[first:], prob.sc[first:], prob.dout[first:],
        prob.dh0, bufs["dg"], bufs["dc"], T,
        **constexprs(v, prob.B, prob.H, prob.dtype, interp), num_warps=NUM_WARPS, **options,
    )


def reference(v: Variant, prob: Problem) -> dict:
    """What level ``v.level`` computes over all T steps, in fp32 (the gate gradients rounded to
    bf16 before the dot where the kernel's dot takes 16-bit operands)."""
    low = settings(prob.dtype, anatomy.interpreting())[0]
    key = (v.level, low)
    if key not in prob.references:
        prob.references[key] = _reference(v.level, prob, low)
    return prob.references[key]


def _reference(level: int, prob: Problem, low: bool) -> dict:
    w = prob.w.float()
    H, T = prob.H, prob.T
    rnd = (lambda x: x.to(prob.dtype).float()) if low else (lambda x: x)
    dh_in = prob.dh0.clone()
    dc = torch.zeros_like(prob.dh0)
    dgs = torch.zeros(T, prob.B, 4 * H, device=prob.device)
    share = q = None
    for s in range(T):
        t = T - 1 - s
        dh = dh_in
        if level >= 3:
            dh = dh + prob.dout[t]
            gi, gf, gg, go = prob.sg[t].chunk(4, dim=1)
            c, c_prev = prob.sc[t + 1], prob.sc[t]
            tc = torch.tanh(c)
            dc_t = dc + dh * go * (1 - tc * tc)
            q = torch.cat([dc_t * gg * gi * (1 - gi), dc_t * c_prev * gf * (1 - gf), dc_t * gi * (1 - gg * gg),
                           dh * tc * go * (1 - go)], dim=1)
            dc = dc_t * gf
        else:
            q = dh.repeat(1, 4)
        dgs[t] = q
        share = (0.5 * dh.mean(dim=1, keepdim=True)).expand_as(dh) if level == 1 else rnd(q) @ w
        dh_in = 0.25 * share if level == 2 else share
    return {"q": q, "share": share, "dg": dgs, "dc": dc}


def check(v: Variant, prob: Problem, bufs: dict) -> dict:
    """The barrier's count, and the last step's exchange (levels 4: every gate gradient and dc) against torch."""
    T = prob.T
    result: dict[str, Any] = {"ok": True, "problems": []}
    count, spins = int(bufs["sync"].item()), int(bufs["stat"].max().item())
    if count != T * v.NP:
        result["problems"].append(f"barrier count {count} != T*NP = {T * v.NP}")
    result["spin_budget_spent"] = spins >= anatomy.MAX_SPIN
    if result["spin_budget_spent"]:
        result["problems"].append(f"spin budget of {anatomy.MAX_SPIN} polls exhausted: the barrier never completed")
    result["polls_per_step"] = spins / T
    ref = reference(v, prob)
    last = bufs["x"][(T - 1) % 2].cpu()
    got = {"share": last.sum(dim=0)} if v.layout == "rows" else {"q": last}
    if v.level >= 4:
        got.update(dg=bufs["dg"].cpu(), dc=bufs["dc"].cpu())
    err = max((got[k] - ref[k].cpu()).abs().max().item() for k in got)
    result["max_err"] = err
    tol = TOLERANCE[(prob.dtype, prob.device.type == "cuda")]
    if not err <= tol:  # also catches NaN
        result["problems"].append(f"max error {err:.3g} against torch over {sorted(got)} (tolerance {tol})")
    result["ok"] = not result["problems"]
    return result


def time_variant(v: Variant, prob: Problem, timer, runs: int) -> dict:
    """Warm-up launch (checked), then the median of ``runs`` launches at T and at T/8."""
    bufs = buffers(v, prob)
    launch(v, prob, prob.T, bufs)  # compiles; its results are the ones checked
    row = check(v, prob, bufs)
    return anatomy.per_step_times(row, lambda steps: launch(v, prob, steps, bufs), bufs["sync"].zero_, prob.T,
                                  timer, runs)


def add_deltas(rows: list[dict]) -> None:
    """delta_us: against the previous level of the same layout and NP (prefetch: level 4 without it)."""
    by_key = {(r["level"], r["layout"], r["NP"], r["prefetch"]): r for r in rows}
    for r in rows:
        if r["prefetch"]:
            base = by_key.get((r["level"], r["layout"], r["NP"], False))
        else:
            base = by_key.get((r["level"] - 1, r["layout"], r["NP"], False))
        timed = base is not None and None not in (r["us_per_step"], base["us_per_step"])
        r["delta_us"] = r["us_per_step"] - base["us_per_step"] if timed else None


def run_all(prob: Problem, todo: list[Variant], n_sm: Optional[int], runs: int, deadline: float) -> dict:
    major = torch.cuda.get_device_capability(prob.device)[0] if prob.device.type == "cuda" else None
    result = anatomy.run_rows(
        todo,
        lambda v: {"component": v.component, "level": v.level, "layout": v.layout, "NP": v.NP,
                   "prefetch": v.prefetch},
        lambda v: fit_problem(v, prob.B, prob.H, prob.dtype, n_sm, major),
        lambda v: time_variant(v, prob, anatomy.Timer(prob.device), runs),
        deadline)
    add_deltas(result["rows"])
    return result


def main_run(args, nps, layouts) -> int:
    start = time.monotonic()
    device, n_sm = anatomy.run_device(args.dry_run)
    prob = Problem(args.B, args.H, args.T, DTYPES[args.dtype], device)
    result = run_all(prob, variants(nps, layouts), n_sm, args.runs, start + args.budget_s)
    poll = "atomic" if anatomy.interpreting() else "acquire"
    result.update(dry_run=bool(args.dry_run), B=args.B, H=args.H, T=args.T, dtype=args.dtype, num_warps=NUM_WARPS,
                  poll=poll, runs=args.runs, **anatomy.run_facts(device, n_sm, start))
    header = (f"backward latency anatomy on {result['device']}: B={args.B} H={args.H} T={args.T} {args.dtype}, "
              f"{NUM_WARPS} warps, {poll} poll, median of {args.runs} (us per step)")
    return anatomy.report(result, header, args.out, "backward_anatomy.json")


def aot_specs(B: int, H: int, dtype: torch.dtype, nps, layouts, arch: int) -> list:
    """One spec per kernel the run would launch on a GPU of ``arch``."""
    n_sm = 132 if arch >= 90 else 108
    tdt = TL_DTYPES[dtype]
    pointers = {"p_sync": "*i32", "p_stat": "*i32", "p_x": "*fp32", "p_w": f"*{tdt}", "p_sg": "*fp32",
                "p_sc": "*fp32", "p_dout": "*fp32", "p_dh0": "*fp32", "p_dg": "*fp32", "p_dc": "*fp32"}
    specs = []
    for v in variants(nps, layouts):
        if fit_problem(v, B, H, dtype, n_sm, arch // 10) is not None:
            continue
        consts = constexprs(v, B, H, dtype, interpreter=False)
        specs.append(anatomy.AnatomySpec(
            kernel=backward_anatomy_kernel,
            signature={**pointers, "T": "i32", **{k: "constexpr" for k in consts}},
            constexprs=consts, num_warps=NUM_WARPS,
            label=f"{v.component} {tdt} B={B} H={H} NP={v.NP} BH={consts['BH']}",
            extra={"kernel": f"{v.component} NP={v.NP}"},
            divisible_by_16=tuple(pointers),
        ))
    return specs


def main_aot(args, nps, layouts) -> int:
    from lstm_kernels import aot

    arch = aot.parse_arch(args.aot)
    if anatomy.interpreting():
        raise RuntimeError("--aot compiles real cubins; run it as a script (it turns TRITON_INTERPRET off)")
    specs = aot_specs(args.B, args.H, DTYPES[args.dtype], nps, layouts, arch)
    return anatomy.aot_report(specs, arch, "backward_anatomy", "PTX instructions per kernel:")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="folder for backward_anatomy.json (required unless --aot)")
    parser.add_argument("--B", type=int, default=16, help="batch (default 16)")
    parser.add_argument("--H", type=int, default=None, help="hidden size (default 256; 16 with --dry-run)")
    parser.add_argument("--T", type=int, default=None, help="steps per launch (default 512; 4 with --dry-run)")
    parser.add_argument("--np", type=anatomy.int_list, default=None,
                        help=f"programs, comma-separated (default {','.join(map(str, NP_DEFAULT))}; 1 with --dry-run)")
    parser.add_argument("--layout", choices=(*LAYOUTS, "all"), default="all")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--runs", type=int, default=5, help="timed launches per row (median)")
    parser.add_argument("--budget-s", type=float, default=40.0, help="deadline for the rows, seconds")
    parser.add_argument("--dry-run", action="store_true", help="CPU rehearsal under the Triton interpreter")
    parser.add_argument("--aot", default=None, metavar="ARCH", help="compile only, for sm_80 or sm_90")
    args = parser.parse_args(argv)
    nps = anatomy.finish_args(parser, args, NP_DEFAULT)
    from lstm_kernels.aot import parse_arch

    if args.aot is not None and parse_arch(args.aot) < 90:
        parser.error(f"--aot {args.aot}: the resident backward layouts need sm_90 or later, as the tier's")
    layouts = list(LAYOUTS) if args.layout == "all" else [args.layout]
    return args, nps, layouts


def main(argv=None) -> int:
    args, nps, layouts = parse_args(argv)
    if args.aot is not None:
        return main_aot(args, nps, layouts)
    return main_run(args, nps, layouts)


if __name__ == "__main__":
    sys.exit(main())
