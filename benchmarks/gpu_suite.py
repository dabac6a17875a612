#!/usr/bin/env python
"""One unattended run on a GPU machine: correctness against cuDNN, ecosystem checks, then timings.

    python benchmarks/gpu_suite.py [--out DIR] [--budget-s 330] [--tf32 on|off]
    python benchmarks/gpu_suite.py --dry-run --out /tmp/x   # same code on CPU, < 60 s

Sections, in order, each with its own time budget (elapsed times are printed):
  (a) environment; (b) the chip's rates: a large device-to-device copy (GB/s) and a
  large bf16 matmul (TFLOP/s); (c) correctness of every backend and every implemented
  Triton tier against nn.LSTM (cuDNN) with copied weights, forward and backward, in
  float32 / float16 / bfloat16; (c+) ecosystem: the triton backend (automatic tier and
  every tier forced) is bitwise deterministic (also under
  ``torch.use_deterministic_algorithms``), compiles with ``torch.compile(fullgraph=True)``
  into one graph matching eager, runs backward in eval mode and follows nn.LSTM under
  autocast, each check a pass/fail entry under ``"ecosystem"``; (d) timings, nn.LSTM
  (cuDNN) and each backend side by side per shape, with the floor model of
  ``lstm_kernels.roofline``; (e) the JSON ``<out>/<device>-<date>.json`` (rewritten after
  every section, so a run cut short still leaves its results); (f) a compact table.

Correctness rule (the one FlashAttention uses): for every compared tensor, our error
against a float64 oracle (nn.LSTM in float64 on the same dtype-rounded weights and
inputs) is at most twice cuDNN's error in the same dtype plus ``ATOL[dtype]``. Errors
are max |x - oracle| / max |oracle|, so one slack works for outputs and for gradients
summed over T*B. A failing case is recorded with its numbers, a crashing one with its
traceback; the run never stops on either.

``--dry-run`` runs the same code on CPU: kernels through the Triton interpreter,
nn.LSTM on CPU in place of cuDNN, time.perf_counter in place of CUDA events, on tiny
grids; the ecosystem checks compile with backend="aot_eager" and autocast only to
bfloat16 on CPU. Nothing here touches CUDA before ``main()`` runs.

Dimensions: T sequence length, B batch, I input size, H hidden size, P = proj_size or H,
L layers, D directions.
"""
from __future__ import annotations

import os
import sys

if "--dry-run" in sys.argv[1:]:
    # The interpreter is chosen when triton kernels are defined, so before any import.
    os.environ["TRITON_INTERPRET"] = "1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # the GPU machine runs from a checkout; nothing is installed there
    sys.path.insert(0, ROOT)

import argparse  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Callable, Optional  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

import lstm_kernels  # noqa: E402
from lstm_kernels import LSTM, roofline  # noqa: E402
from lstm_kernels import timing as shared_timing  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
# Slack added to 2x cuDNN's error, relative to the tensor's largest magnitude: about two
# units in the last place of the format the math effectively runs in.
ATOL = {"float32": 2e-5, "float32+tf32": 2e-3, "float16": 2e-3, "bfloat16": 1.6e-2}


@dataclass
class Config:
    """What one run does; ``gpu_config`` and ``dry_config`` are the only two."""

    device: str
    budgets: dict  # section -> seconds
    copy_bytes: int
    matmul_n: int
    rate_reps: int
    correctness_cases: list
    timing_passes: list  # lists of shape dicts, in priority order
    time_backends_exclude: tuple = ("reference",)
    measure_s: float = 0.15  # time spent timing one (shape, backend), warm-up excluded
    min_reps: int = 3
    max_reps: int = 20
    warmup: int = 2
    hang_s: float = 120.0  # one step longer than this is a hang (cold compiles included)
    hard_margin_s: float = 25.0  # past budget + this, the watchdog ends the run (GPU: 355 s < 6 min)
    # Ecosystem section: determinism cases (a case's "labels" limits it to those implementations),
    # the case for eval-mode backward and autocast, and the compiled model's size.
    determinism_cases: list = field(default_factory=list)
    eval_case: Optional[dict] = None
    compile_case: Optional[dict] = None
    compile_backend: str = "inductor"
    autocast_dtypes: tuple = ("float16", "bfloat16")


def _case(T, B, I, H, layers=1, bi=False, proj=0, packed=False):  # noqa: E741
    name = f"B{B}-T{T}-I{I}-H{H}-L{layers}" + ("-bi" if bi else "") + (f"-proj{proj}" if proj else "")
    return dict(name=name + ("-packed" if packed else ""), T=T, B=B, I=I, H=H, layers=layers, bi=bi,
                proj=proj, packed=packed)


def _shape(mode, T, B, H, layers, bi, dtype, I=None):  # noqa: E741
    return dict(mode=mode, T=T, B=B, I=H if I is None else I, H=H, layers=layers, bidirectional=bi,
                dtype=dtype)


def _timing_passes(Bs, Hs, Ts, Ls, bis, dtypes, center) -> list:
    """Shapes in priority order: first every listed value once (one factor at a time
    around ``center``), then B x H grids, dtype by dtype, then the other T, then deep
    bidirectional models. A run that runs out of time keeps the earlier passes."""
    modes = ("inference", "training")
    c = center
    one_at_a_time = []
    axes = (("B", Bs), ("H", Hs), ("T", Ts), ("layers", Ls), ("bidirectional", bis), ("dtype", dtypes))
    for axis, values in axes:
        for v in values:
            point = dict(c, **{axis: v})
            one_at_a_time += [_shape(m, point["T"], point["B"], point["H"], point["layers"],
                                     point["bidirectional"], point["dtype"]) for m in modes]
    passes = [one_at_a_time]
    for dtype in [c["dtype"]] + [d for d in dtypes if d != c["dtype"]]:
        passes.append([_shape(m, c["T"], B, H, c["layers"], c["bidirectional"], dtype)
                       for m in modes for B in Bs for H in Hs])
    for T in Ts:
        if T != c["T"]:
            passes.append([_shape(m, T, B, H, c["layers"], c["bidirectional"], c["dtype"])
                           for m in modes for B in Bs for H in Hs])
    passes.append([_shape(m, c["T"], B, H, max(Ls), True, c["dtype"]) for m in modes for B in Bs for H in Hs])
    return passes


def gpu_config() -> Config:
    return Config(
        device="cuda",
        budgets={"rates": 15, "correctness": 120, "ecosystem": 30, "timing": 120},
        copy_bytes=1 << 30,
        matmul_n=8192,
        rate_reps=10,
        correctness_cases=[
            # Resident persistent forward: 4 programs x 3 batch tiles per direction, grid barrier.
            _case(T=6, B=40, I=64, H=256, bi=True, packed=True),
            _case(T=7, B=8, I=32, H=128),  # resident, one program owns all 128 units: no barrier
            _case(T=5, B=20, I=48, H=512),  # resident, 16 programs
            _case(T=7, B=3, I=10, H=33, layers=2, bi=True, proj=17),
            _case(T=1, B=1, I=8, H=64),
            _case(T=9, B=5, I=12, H=48, layers=2, bi=True, packed=True),
            _case(T=6, B=64, I=256, H=1024, bi=True),  # several programs per step in every tier
            _case(T=5, B=64, I=128, H=1024, packed=True),
            _case(T=4, B=24, I=64, H=1024),  # resident: 64 programs of 16 units x 2 batch tiles
        ],
        timing_passes=_timing_passes(
            Bs=(1, 8, 32, 128), Hs=(128, 256, 512, 1024), Ts=(64, 512), Ls=(1, 2), bis=(False, True),
            dtypes=("bfloat16", "float16", "float32"),
            center=dict(B=32, H=512, T=512, layers=1, bidirectional=False, dtype="bfloat16"),
        ),
        # The correctness section's shapes, so the Triton kernels are already compiled.
        determinism_cases=[
            _case(T=7, B=3, I=10, H=33, layers=2, bi=True, proj=17),
            _case(T=9, B=5, I=12, H=48, layers=2, bi=True, packed=True),
            # 64 hidden blocks x 2 directions: the grid barrier between programs is exercised.
            dict(_case(T=6, B=64, I=256, H=1024, bi=True, packed=True), labels=("triton:persistent",)),
        ],
        eval_case=_case(T=7, B=3, I=10, H=33, layers=2, bi=True, proj=17),
        compile_case=_case(T=7, B=3, I=10, H=33, layers=2, bi=True, proj=17),
    )


def dry_config() -> Config:
    return Config(
        device="cpu",
        budgets={"rates": 3, "correctness": 30, "ecosystem": 25, "timing": 6},
        copy_bytes=1 << 22,
        matmul_n=128,
        rate_reps=3,
        correctness_cases=[
            dict(_case(T=3, B=2, I=3, H=5, layers=2, bi=True, proj=3), dtypes=("float32", "bfloat16")),
            dict(_case(T=4, B=3, I=4, H=6, bi=True, packed=True), dtypes=("float16",)),
        ],
        timing_passes=_timing_passes(
            Bs=(1, 2), Hs=(4,), Ts=(3,), Ls=(1,), bis=(False,), dtypes=("float32",),
            center=dict(B=2, H=4, T=3, layers=1, bidirectional=False, dtype="float32"),
        ),
        measure_s=0.02,
        min_reps=2,
        max_reps=3,
        warmup=1,
        determinism_cases=[
            _case(T=3, B=2, I=3, H=5, bi=True, proj=3),
            _case(T=3, B=3, I=3, H=4, bi=True, packed=True),
            # Interpreted, the persistent tier runs one program per 64-row batch tile: B=66 gives two.
            dict(_case(T=2, B=66, I=3, H=4, bi=True, packed=True), labels=("triton:persistent",)),
        ],
        eval_case=_case(T=3, B=2, I=3, H=4, layers=2, bi=True),
        compile_case=_case(T=3, B=2, I=3, H=4, bi=True),
        compile_backend="aot_eager",
        autocast_dtypes=("bfloat16",),
    )


class Clock:
    """Wall time of the whole run and of each section, against their budgets."""

    def __init__(self, total_s: float):
        self.start = time.perf_counter()
        self.total_s = total_s
        self.section_start = self.start
        self.section_budget = total_s
        self.elapsed: dict[str, float] = {}

    def begin(self, name: str, budget_s: float) -> None:
        self.section_start = time.perf_counter()
        self.section_budget = budget_s
        print(f"\n== {name} (budget {budget_s:.0f} s; {self.run_elapsed():.1f} s into the run)", flush=True)

    def end(self, name: str) -> None:
        self.elapsed[name] = round(time.perf_counter() - self.section_start, 3)
        print(f"== {name} done in {self.elapsed[name]:.1f} s", flush=True)

    def run_elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        """Seconds left in this section, never past the whole run's budget."""
        section = self.section_budget - (time.perf_counter() - self.section_start)
        return min(section, self.total_s - self.run_elapsed())


class Watchdog:
    """Ends the run, JSON written, when one step makes no progress for ``hang_s`` (a
    deadlocked kernel cannot be interrupted from Python) or the run passes ``hard_s``."""

    def __init__(self, clock: "Clock", hang_s: float, hard_s: float):
        self.clock, self.hang_s, self.hard_s = clock, hang_s, hard_s
        self.what, self.since = "start", time.perf_counter()
        self.save: Optional[Callable[[dict], None]] = None

    def beat(self, what: str) -> None:
        self.what, self.since = what, time.perf_counter()

    def start(self, save: Callable[[dict], None]) -> None:
        self.save = save
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while True:
            time.sleep(1.0)
            stuck = time.perf_counter() - self.since
            if stuck > self.hang_s or self.clock.run_elapsed() > self.hard_s:
                why = (f"no progress for {stuck:.0f} s" if stuck > self.hang_s
                       else f"run passed its hard limit of {self.hard_s:.0f} s")
                print(f"\nwatchdog: {why} while running {self.what}; writing results and exiting", flush=True)
                try:
                    self.save({"section": "watchdog", "what": self.what, "reason": why})
                finally:
                    # A failed save must not end only this thread and leave the hung run going.
                    os._exit(3)


WATCHDOG: Optional[Watchdog] = None


def beat(what: str) -> None:
    if WATCHDOG is not None:
        WATCHDOG.beat(what)


class Timer:
    """Times of a callable for the rates section: CUDA events on a GPU, perf_counter on CPU.
    The timing section uses ``lstm_kernels.timing.time_interleaved`` instead."""

    def __init__(self, device: str):
        self.cuda = device == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def times_ms(self, fn: Callable, reps: int) -> list[float]:
        if self.cuda:
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(reps)]
            for start, end in events:
                start.record()
                fn()
                end.record()
            torch.cuda.synchronize()
            return [start.elapsed_time(end) for start, end in events]
        out = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            out.append((time.perf_counter() - t0) * 1e3)
        return out


# --------------------------------------------------------------------------- (a)


def environment(cfg: Config, tf32: bool) -> dict:
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "triton": _triton_version(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cfg.device == "cuda" else None,
        "lstm_kernels": lstm_kernels.__version__,
        "backends": lstm_kernels.available_backends(),
        "tiers": implemented_tiers(),
        "tier_error": TIER_ERRORS[0] if TIER_ERRORS else None,
        "TRITON_INTERPRET": os.environ.get("TRITON_INTERPRET"),
        "tf32": tf32,
        "allow_tf32": {"cuda.matmul": torch.backends.cuda.matmul.allow_tf32,
                       "cudnn": torch.backends.cudnn.allow_tf32},
    }
    if cfg.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(device=torch.cuda.get_device_name(0), capability=f"{props.major}.{props.minor}",
                   sms=props.multi_processor_count, memory_gib=round(props.total_memory / 2**30, 1))
    else:
        env.update(device=f"cpu ({platform.processor() or platform.machine()}), dry run", capability=None,
                   sms=None, memory_gib=None)
    for k, v in env.items():
        print(f"  {k:>16}: {v}")
    return env


def _triton_version() -> Optional[str]:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


TIER_ERRORS: list = []  # why the tier list could not be read, for the JSON


def implemented_tiers() -> list[str]:
    """Triton tiers this checkout implements (empty without the triton backend)."""
    if "triton" not in lstm_kernels.available_backends():
        return []
    from lstm_kernels._triton import backend as tb

    try:
        scans = tb.implemented_tiers()
    except Exception:  # a broken tier module: run the rest, and say why in the JSON
        if not TIER_ERRORS:
            TIER_ERRORS.append(traceback.format_exc())
            print(f"  cannot list triton tiers: {TIER_ERRORS[0].strip().splitlines()[-1]}", flush=True)
        return []
    return [t for t in tb.TIERS if t in scans]


def set_tf32(enabled: bool) -> None:
    """The same TF32 setting for cuDNN (nn.LSTM) and cuBLAS (our input projection)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


# --------------------------------------------------------------------------- (b)


def measure_rates(cfg: Config, timer: Timer) -> dict:
    """The chip's copy bandwidth and matmul rate, measured the way the floor model uses them."""
    n = cfg.copy_bytes // 4
    src = torch.ones(n, dtype=torch.float32, device=cfg.device)
    dst = torch.empty_like(src)
    timer.times_ms(lambda: dst.copy_(src), 2)  # warm-up
    copy_ms = statistics.median(timer.times_ms(lambda: dst.copy_(src), cfg.rate_reps))
    del src, dst
    N = cfg.matmul_n
    a = torch.randn(N, N, device=cfg.device).to(torch.bfloat16)
    b = torch.randn(N, N, device=cfg.device).to(torch.bfloat16)
    timer.times_ms(lambda: a @ b, 2)  # warm-up: cuBLAS picks its kernel on the first call
    mm_ms = statistics.median(timer.times_ms(lambda: a @ b, cfg.rate_reps))
    rates = {
        "hbm_gbps": 2 * cfg.copy_bytes / (copy_ms * 1e-3) / 1e9,  # read + write
        "matmul_tflops": 2 * N**3 / (mm_ms * 1e-3) / 1e12,
        "copy_bytes": cfg.copy_bytes,
        "matmul_n": N,
        "matmul_dtype": "bfloat16",
    }
    print(f"  copy {rates['hbm_gbps']:.0f} GB/s, bf16 matmul {rates['matmul_tflops']:.1f} TFLOP/s")
    return rates


# --------------------------------------------------------------------------- (c)


# Set by --only: the implementations every section runs (None: all of them).
ONLY: Optional[set] = None


def all_labels() -> list[str]:
    """Every backend, and ``triton:<tier>`` for every implemented tier, forced."""
    labels = list(lstm_kernels.available_backends())
    labels += [f"triton:{t}" for t in implemented_tiers()]
    return labels


def backend_labels() -> list[str]:
    """The implementations this run checks and times: ``all_labels``, or those of --only
    (which may also name ``VARIANT_LABELS``)."""
    if ONLY is None:
        return all_labels()
    return [b for b in all_labels() + list(VARIANT_LABELS) if b in ONLY]


# Persistent-tier variants that switch off one change each (lstm_kernels._triton.common.variants.variant),
# and fused_step with its loops replayed as CUDA graphs (lstm_kernels.cuda_graphs), selectable
# with --only to time a change against the code without it in the same run.
GRAPHS = "/cuda-graphs"
VARIANT_LABELS = ("triton:persistent/streamed-fwd", "triton:persistent/h-in-memory",
                  "triton:persistent/streamed-bwd", "triton:persistent/no-batch-loop",
                  "triton:persistent/narrow-bwd-k",
                  "triton:persistent/ieee-bwd", "triton:persistent/streamed-bwd+ieee-bwd+narrow-bwd-k",
                  "triton:fused_step" + GRAPHS)


@contextlib.contextmanager
def _tier_context(label: str):
    if ":" not in label:
        yield
        return
    from lstm_kernels._triton.backend import force_tier
    from lstm_kernels._triton.common.variants import variant

    tier, _, changes = label.split(":", 1)[1].partition("/")
    if "/" + changes == GRAPHS:
        with force_tier(tier), lstm_kernels.cuda_graphs():
            yield
        return
    with force_tier(tier), variant(changes):
        yield


def _check_run(module, label, x, h0, c0, lengths, upstream) -> dict:
    """``_run_case`` for the correctness check. A graph-replaying label runs twice more first,
    on other inputs (eager, then capture), so the checked call is a replay that must have
    copied in its own inputs."""
    if label.endswith(GRAPHS):
        for scale in (0.5, 0.25):
            _run_case(module, label, x * scale, h0 * scale, c0 * scale, lengths, upstream)
    return _run_case(module, label, x, h0, c0, lengths, upstream)


def _ours(ref: nn.LSTM, label: str) -> LSTM:
    m = LSTM(ref.input_size, ref.hidden_size, ref.num_layers, bidirectional=ref.bidirectional,
             proj_size=ref.proj_size, backend=label.split(":", 1)[0],
             device=ref.weight_ih_l0.device, dtype=ref.weight_ih_l0.dtype)
    m.load_state_dict(ref.state_dict())
    return m


def _run_case(module, label, x, h0, c0, lengths, upstream, forward_ctx=contextlib.nullcontext) -> dict:
    """Outputs, final states and every gradient of one forward/backward.

    ``forward_ctx`` wraps the forward only (autocast must not cover the backward); each
    upstream gradient is cast to its output's dtype, which autocast may have changed.
    """
    x = x.detach().clone().requires_grad_()
    h0 = h0.detach().clone().requires_grad_()
    c0 = c0.detach().clone().requires_grad_()
    inp = pack_padded_sequence(x, lengths, enforce_sorted=False) if lengths is not None else x
    with _tier_context(label):
        with forward_ctx():
            out, (h_n, c_n) = module(inp, (h0, c0))
        out = out.data if lengths is not None else out
        params = list(module.named_parameters())
        outs = [out, h_n, c_n]
        grads = torch.autograd.grad(outs, [x, h0, c0] + [p for _, p in params],
                                    [u.to(o.dtype) for u, o in zip(upstream, outs)])
    result = {"out": out, "h_n": h_n, "c_n": c_n,
              "grad_input": grads[0], "grad_h0": grads[1], "grad_c0": grads[2]}
    result.update({f"grad_{name}": g for (name, _), g in zip(params, grads[3:])})
    return {k: v.detach() for k, v in result.items()}


def _rel_err(t: torch.Tensor, ref: torch.Tensor) -> float:
    if t.shape != ref.shape:
        raise RuntimeError(f"shape {tuple(t.shape)} differs from the oracle's {tuple(ref.shape)}")
    if ref.numel() == 0:
        return 0.0
    scale = ref.abs().max().clamp_min(1e-12)
    return float(((t.double() - ref).abs().max() / scale).item())


def correctness_order(cases: list) -> list:
    """(case, dtype) pairs, every case and every dtype early: round r pairs case k with
    dtype (k + r) mod 3, so a run cut short by its budget still covers both axes."""
    names = list(DTYPES)
    return [(case, names[(k + r) % len(names)]) for r in range(len(names)) for k, case in enumerate(cases)
            if names[(k + r) % len(names)] in case.get("dtypes", names)]


def correctness(cfg: Config, clock: Clock, timer: Timer, tf32: bool, record: list, skipped: list,
                save: Callable[[], None] = lambda: None) -> None:
    labels = backend_labels()
    print(f"  {len(labels)} implementations: {', '.join(labels)}", flush=True)
    for case, dtype_name in correctness_order(cfg.correctness_cases):
        dtype = DTYPES[dtype_name]
        if clock.left() <= 0:
            skipped.append({"section": "correctness", "case": case["name"], "dtype": dtype_name,
                            "reason": "time budget spent"})
            continue
        save()
        beat(f"correctness {case['name']} {dtype_name} nn.LSTM")
        try:
            setup = _case_setup(case, dtype, cfg.device, timer)
        except Exception:
            record.append({"case": case["name"], "dtype": dtype_name, "backend": "nn.LSTM",
                           "status": "error", "traceback": traceback.format_exc()})
            print(f"  {case['name']:<34} {dtype_name:<9} nn.LSTM setup ERROR", flush=True)
            continue
        tf32_math = dtype == torch.float32 and tf32 and cfg.device == "cuda"
        atol = ATOL["float32+tf32" if tf32_math else dtype_name]
        for label in labels:
            entry = {"case": case["name"], "dtype": dtype_name, "backend": label, "atol": atol,
                     "versus": setup["versus"]}
            beat(f"correctness {case['name']} {dtype_name} {label}")
            try:
                got = _check_run(_ours(setup["cudnn_module"], label), label, *setup["inputs"])
                timer.sync()
                errors, ok = {}, True
                for name, ref in setup["oracle"].items():
                    ours = _rel_err(got[name], ref)
                    bound = 2 * setup["cudnn_err"][name] + atol
                    ok &= ours <= bound  # False for NaN
                    errors[name] = {"ours": ours, "cudnn": setup["cudnn_err"][name], "bound": bound}
                entry.update(status="pass" if ok else "fail", errors=errors,
                             worst=max(errors, key=lambda k: errors[k]["ours"] / errors[k]["bound"]))
            except Exception:
                entry.update(status="error", traceback=traceback.format_exc())
            record.append(entry)
            note = ""
            if entry["status"] == "fail":
                note = f" (worst {entry['worst']})"
            elif entry["status"] == "error":
                note = ": " + entry["traceback"].strip().splitlines()[-1]
            print(f"  {case['name']:<34} {dtype_name:<9} {label:<20} {entry['status'].upper()}{note}",
                  flush=True)


def _case_setup(case: dict, dtype: torch.dtype, device: str, timer: Timer) -> dict:
    """nn.LSTM in ``dtype`` (cuDNN on a GPU), its float64 twin as the oracle, and inputs."""
    T, B, I, H = case["T"], case["B"], case["I"], case["H"]
    D = 2 if case["bi"] else 1
    P = case["proj"] or H
    torch.manual_seed(0)
    base = nn.LSTM(I, H, case["layers"], bidirectional=case["bi"], proj_size=case["proj"])
    cudnn_module = base.to(device=device, dtype=dtype)
    oracle_module = copy.deepcopy(cudnn_module).double()
    x = torch.randn(T, B, I).to(device=device, dtype=dtype)
    h0 = (0.5 * torch.randn(case["layers"] * D, B, P)).to(device=device, dtype=dtype)
    c0 = (0.5 * torch.randn(case["layers"] * D, B, H)).to(device=device, dtype=dtype)
    lengths = None
    if case["packed"]:
        lengths = torch.randint(1, T + 1, (B,))
        lengths[torch.randint(0, B, (1,))] = T  # the longest sequence fills T
    rows = int(lengths.sum()) if lengths is not None else None
    g_out = torch.randn(*((rows,) if rows is not None else (T, B)), D * P).to(device=device, dtype=dtype)
    g_h = torch.randn(case["layers"] * D, B, P).to(device=device, dtype=dtype)
    g_c = torch.randn(case["layers"] * D, B, H).to(device=device, dtype=dtype)
    inputs = (x, h0, c0, lengths, (g_out, g_h, g_c))
    # The oracle runs PyTorch's native kernels, not cuDNN: it must not share the errors
    # of the implementation it judges.
    with torch.backends.cudnn.flags(enabled=False):
        oracle = _run_case(oracle_module, "", x.double(), h0.double(), c0.double(), lengths,
                           (g_out.double(), g_h.double(), g_c.double()))
    versus = "cudnn" if device == "cuda" else "nn.LSTM cpu"
    try:
        cudnn = _run_case(cudnn_module, "", *inputs)
        timer.sync()
    except RuntimeError:
        if device != "cuda":
            raise
        # A cuDNN build without this dtype: judge against PyTorch's own CUDA kernels instead.
        with torch.backends.cudnn.flags(enabled=False):
            cudnn = _run_case(cudnn_module, "", *inputs)
        versus = "nn.LSTM native cuda (cuDNN refused this dtype)"
    return {
        "cudnn_module": cudnn_module,
        "inputs": inputs,
        "oracle": oracle,
        "cudnn_err": {k: _rel_err(cudnn[k], ref) for k, ref in oracle.items()},
        "versus": versus,
    }


# --------------------------------------------------------------------------- (c+)


def ecosystem_plan(cfg: Config) -> list:
    """The ecosystem checks as (check, label, dtype name, case) in priority order: first
    every kind of check on the automatic tier (the multi-program persistent shape with
    that tier forced), then the other checks on every forced tier, then their compiles
    (the slowest), so a run cut short by its budget still covers every kind."""
    tiers = [f"triton:{t}" for t in implemented_tiers() if ONLY is None or f"triton:{t}" in ONLY]
    compiles = [("compile", d) for d in ("float32", "bfloat16")]
    det = [(c, d) for c in cfg.determinism_cases for d in ("float32", "bfloat16")]

    def others(label: str) -> list:
        plan = [("determinism", label, d, c) for c, d in det if label in c.get("labels", (label,))]
        plan.append(("eval_backward", label, "float32", cfg.eval_case))
        plan += [("autocast", label, d, cfg.eval_case) for d in cfg.autocast_dtypes]
        return plan

    first = others("triton")
    first += [("determinism", t, d, c) for c, d in det if "labels" in c for t in tiers if t in c["labels"]]
    first.append(("deterministic_algorithms", "triton", "float32", cfg.determinism_cases[-1]))
    first += [(k, "triton", d, cfg.compile_case) for k, d in compiles]
    plan = first + [p for t in tiers for p in others(t)]
    plan += [(k, t, d, cfg.compile_case) for t in tiers for k, d in compiles]
    seen, unique = set(), []
    for check, label, dtype_name, case in plan:
        key = (check, label, dtype_name, case["name"])
        if key not in seen:
            seen.add(key)
            unique.append((check, label, dtype_name, case))
    return unique


def ecosystem(cfg: Config, clock: Clock, timer: Timer, tf32: bool, record: list, skipped: list,
              save: Callable[[], None] = lambda: None) -> None:
    """Runs ``ecosystem_plan``; every check becomes one pass/fail entry, never an abort."""
    if "triton" not in lstm_kernels.available_backends():
        skipped.append({"section": "ecosystem", "reason": "the triton backend is not available"})
        print("  the triton backend is not available: nothing to check", flush=True)
        return
    plan = ecosystem_plan(cfg)
    setups: dict = {}  # (case name, dtype name) -> _case_setup, shared by the labels
    for k, (check, label, dtype_name, case) in enumerate(plan):
        if clock.left() <= 0:
            skipped.append({"section": "ecosystem", "reason": "time budget spent", "checks": len(plan) - k,
                            "first": f"{check} {label} {dtype_name} {case['name']}"})
            print(f"  time budget spent: the last {len(plan) - k} of {len(plan)} checks skipped", flush=True)
            break
        beat(f"ecosystem {check} {label} {dtype_name} {case['name']}")
        entry = {"check": check, "backend": label, "dtype": dtype_name, "case": case["name"], "error": None}
        t0 = time.perf_counter()
        try:
            if check in ("determinism", "deterministic_algorithms", "eval_backward"):
                key = (case["name"], dtype_name)
                if key not in setups:
                    setups[key] = _case_setup(case, DTYPES[dtype_name], cfg.device, timer)
                setup = setups[key]
            if check == "determinism":
                problem = _check_determinism(entry, setup, label, cfg.device)
            elif check == "deterministic_algorithms":
                problem = _check_deterministic_algorithms(entry, setup, label)
            elif check == "eval_backward":
                atol = ATOL["float32+tf32" if tf32 and cfg.device == "cuda" else dtype_name]
                problem = _check_eval_backward(entry, setup, label, atol)
            elif check == "autocast":
                problem = _check_autocast(entry, case, label, dtype_name, cfg.device, timer)
            else:
                atol = ATOL["float32+tf32" if tf32 and cfg.device == "cuda" and dtype_name == "float32"
                            else dtype_name]
                problem = _check_compile(entry, case, label, dtype_name, cfg, atol)
            timer.sync()
        except Exception:
            problem = traceback.format_exc()
        entry.update(status="fail" if problem else "pass", error=problem or None,
                     seconds=round(time.perf_counter() - t0, 3))
        record.append(entry)
        save()
        note = "" if not problem else ": " + problem.strip().splitlines()[-1]
        print(f"  {check:<24} {label:<18} {dtype_name:<9} {case['name']:<30} {entry['status'].upper()}{note}",
              flush=True)


def _differing(a: dict, b: dict) -> list:
    return [k for k in a if not torch.equal(a[k], b[k])]


def _check_determinism(entry: dict, setup: dict, label: str, device: str) -> str:
    """Two runs of the same module on the same inputs: every output and gradient bitwise equal."""
    module = _ours(setup["cudnn_module"], label)
    if label == "triton:persistent":  # say how many programs shared each step
        from lstm_kernels._triton.persistent import tiling as persistent

        x, h0, c0 = setup["inputs"][:3]
        m = setup["cudnn_module"]
        D = 2 if m.bidirectional else 1
        pc = persistent.persistent_config(x.shape[1], m.hidden_size, m.proj_size or m.hidden_size,
                                          m.proj_size > 0, x.dtype, persistent.sm_count(torch.device(device)),
                                          directions=D)
        entry["programs_per_step"] = None if pc is None else pc.NP * pc.NM * D
    first = _run_case(module, label, *setup["inputs"])
    second = _run_case(module, label, *setup["inputs"])
    entry["compared"] = len(first)
    diff = _differing(first, second)
    return f"differ between identical runs: {', '.join(diff)}" if diff else ""


def _check_deterministic_algorithms(entry: dict, setup: dict, label: str) -> str:
    """The same run under ``torch.use_deterministic_algorithms(True)`` (which also fills new
    tensors with NaN): it must neither raise nor change a bit; the old setting is restored."""
    module = _ours(setup["cudnn_module"], label)
    plain = _run_case(module, label, *setup["inputs"])
    was, warn_only = torch.are_deterministic_algorithms_enabled(), \
        torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first = _run_case(module, label, *setup["inputs"])
        second = _run_case(module, label, *setup["inputs"])
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)
    changed = _differing(plain, first)
    entry["changes_result"] = bool(changed)
    entry["cublas_workspace_config"] = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    problems = []
    if changed:
        problems.append(f"deterministic mode changes {', '.join(changed)}")
    diff = _differing(first, second)
    if diff:
        problems.append(f"differ between identical runs in deterministic mode: {', '.join(diff)}")
    return "; ".join(problems)


def _judge(entry: dict, got: dict, oracle: dict, versus_err: dict, atol: float) -> str:
    """The suite's rule (our error <= 2 x nn.LSTM's + atol) on every tensor; the failures."""
    errors, bad = {}, []
    for name, ref in oracle.items():
        ours = _rel_err(got[name], ref)
        bound = 2 * versus_err[name] + atol
        errors[name] = {"ours": ours, "cudnn": versus_err[name], "bound": bound}
        if not ours <= bound:  # NaN fails
            bad.append(f"{name} {ours:.3g} > {bound:.3g}")
    entry.update(atol=atol, errors=errors)
    return ("beyond 2 x nn.LSTM's error + atol: " + ", ".join(bad)) if bad else ""


def _check_eval_backward(entry: dict, setup: dict, label: str, atol: float) -> str:
    """Backward through a module in eval mode, judged like the correctness section (nn.LSTM's
    error measured in training mode: without dropout the math is the same); whether nn.LSTM
    (cuDNN) itself refuses this is recorded, not judged."""
    if "nn_eval" not in setup:
        try:
            _run_case(copy.deepcopy(setup["cudnn_module"]).eval(), "", *setup["inputs"])
            setup["nn_eval"] = {"refused": False, "error": None}
        except RuntimeError as e:
            setup["nn_eval"] = {"refused": True, "error": str(e).strip()}
    entry["nn_lstm_eval_backward"] = setup["nn_eval"]
    entry["versus"] = setup["versus"]
    module = _ours(setup["cudnn_module"], label).eval()
    got = _run_case(module, label, *setup["inputs"])
    return _judge(entry, got, setup["oracle"], setup["cudnn_err"], atol)


def _check_autocast(entry: dict, case: dict, label: str, dtype_name: str, device: str, timer: Timer) -> str:
    """float32 modules under ``torch.autocast(device, dtype)``: our outputs' dtypes are
    nn.LSTM's, and our errors against the float64 oracle pass the rule with nn.LSTM's
    autocast errors and the autocast dtype's atol."""
    setup = _case_setup(case, torch.float32, device, timer)
    ctx = lambda: torch.autocast(device, dtype=DTYPES[dtype_name])  # noqa: E731
    theirs = _run_case(setup["cudnn_module"], "", *setup["inputs"], forward_ctx=ctx)
    ours = _run_case(_ours(setup["cudnn_module"], label), label, *setup["inputs"], forward_ctx=ctx)
    keys = ("out", "h_n", "c_n")
    entry["dtypes"] = {k: str(ours[k].dtype).replace("torch.", "") for k in keys}
    # Recorded, not judged: on CUDA, nn.LSTM (cuDNN) returns float16 under a bfloat16 autocast
    # (torch 2.11, seen on an H200); ours return the dtype autocast asked for.
    entry["nn_lstm_dtypes"] = {k: str(theirs[k].dtype).replace("torch.", "") for k in keys}
    problem = ""
    if set(entry["dtypes"].values()) != {dtype_name}:
        problem = f"output dtypes {entry['dtypes']} are not the autocast dtype {dtype_name}; "
    their_err = {k: _rel_err(theirs[k], ref) for k, ref in setup["oracle"].items()}
    return (problem + _judge(entry, ours, setup["oracle"], their_err, ATOL[dtype_name])).strip("; ")


class _Tagger(nn.Module):
    """Linear -> LSTM -> Linear: the compiled model."""

    def __init__(self, lstm: LSTM):
        super().__init__()
        self.inp = nn.Linear(lstm.input_size, lstm.input_size)
        self.rnn = lstm
        self.out = nn.Linear((lstm.proj_size or lstm.hidden_size) * (2 if lstm.bidirectional else 1), 3)

    def forward(self, x):
        y, (h, c) = self.rnn(self.inp(x))
        return self.out(y), h, c


class _CountingBackend:
    """A torch.compile backend counting the graphs Dynamo hands over, then compiling each
    with ``inner``: one graph under fullgraph=True means no graph break."""

    def __init__(self, inner: str):
        self.inner = torch._dynamo.lookup_backend(inner)
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return self.inner(gm, example_inputs)


def _check_compile(entry: dict, case: dict, label: str, dtype_name: str, cfg: Config, atol: float) -> str:
    """``torch.compile(fullgraph=True)`` of a model holding LSTM: one graph, no break, and
    outputs and gradients within ``atol`` (relative to the largest magnitude) of eager."""
    import torch._dynamo

    dtype = DTYPES[dtype_name]
    torch._dynamo.reset()  # each check compiles afresh, never against another's cache limit
    torch.manual_seed(0)
    lstm = LSTM(case["I"], case["H"], case["layers"], bidirectional=case["bi"], proj_size=case["proj"],
                backend="triton", device=cfg.device, dtype=dtype)
    model = _Tagger(lstm).to(device=cfg.device, dtype=dtype)
    x = torch.randn(case["T"], case["B"], case["I"], device=cfg.device, dtype=dtype)
    counter = _CountingBackend(cfg.compile_backend)
    compiled = torch.compile(model, backend=counter, fullgraph=True)
    params = list(model.parameters())

    def run(fn):
        x_req = x.detach().clone().requires_grad_()
        with _tier_context(label):
            outs = fn(x_req)
        torch.manual_seed(1)
        upstream = [torch.randn_like(o) for o in outs]
        return list(outs) + list(torch.autograd.grad(outs, [x_req] + params, upstream))

    eager = run(model)
    got = run(compiled)
    entry.update(backend_compiler=cfg.compile_backend, graphs=counter.graphs,
                 graph_breaks=max(counter.graphs - 1, 0), atol=atol)
    names = ["out", "h_n", "c_n", "grad_input"] + [f"grad_{n}" for n, _ in model.named_parameters()]
    errors = {n: _rel_err(a, b.double()) for n, a, b in zip(names, got, eager)}
    entry["max_err"] = max(errors.values())
    problems = []
    if counter.graphs != 1:
        problems.append(f"{counter.graphs} graphs instead of one")
    bad = [f"{n} {e:.3g}" for n, e in errors.items() if not e <= atol]
    if bad:
        problems.append(f"compiled differs from eager beyond {atol:g}: " + ", ".join(bad))
    return "; ".join(problems)


# --------------------------------------------------------------------------- (d)


def timings(cfg: Config, clock: Clock, timer: Timer, rates: dict, rows: list, skipped: list,
            save: Callable[[], None] = lambda: None) -> None:
    labels = ["nn.LSTM"] + [b for b in backend_labels() if b not in cfg.time_backends_exclude]
    shapes = list({tuple(sorted(s.items())): s for p in cfg.timing_passes for s in p}.values())
    print(f"  {len(shapes)} shapes x {len(labels)} implementations: {', '.join(labels)}", flush=True)
    for k, shape in enumerate(shapes):
        if clock.left() <= 0:
            skipped.append({"section": "timing", "reason": "time budget spent", "shapes": len(shapes) - k,
                            "first": shape})
            print(f"  time budget spent: the last {len(shapes) - k} of {len(shapes)} shapes skipped",
                  flush=True)
            break
        rows.extend(_time_shape(shape, labels, cfg, timer, rates))
        save()


def _time_shape(shape: dict, labels: list, cfg: Config, timer: Timer, rates: dict) -> list:
    """Every label on one shape, interleaved round by round (``lstm_kernels.timing``): a
    phase of the machine (clocks, another process) then slows every label alike."""
    dtype = DTYPES[shape["dtype"]]
    D = 2 if shape["bidirectional"] else 1
    floor = roofline.floor(
        roofline.Shape(shape["mode"], shape["T"], shape["B"], shape["I"], shape["H"], None, shape["layers"],
                       D, dtype),
        rates["hbm_gbps"], rates["matmul_tflops"],
    )
    tshape = shared_timing.Shape(shape["T"], shape["B"], shape["H"], shape["layers"], shape["bidirectional"],
                                 shape["I"])
    try:
        torch.manual_seed(0)
        ref = nn.LSTM(shape["I"], shape["H"], shape["layers"], bidirectional=shape["bidirectional"])
        ref = ref.to(device=cfg.device, dtype=dtype)
        x = torch.randn(shape["T"], shape["B"], shape["I"], device=cfg.device, dtype=dtype)
        g_out = torch.randn(shape["T"], shape["B"], D * shape["H"], device=cfg.device, dtype=dtype)
    except Exception:
        return [dict(shape, backend="nn.LSTM", ms=None, cudnn_ms=None, max_err=None, floor_ms=floor.floor_ms,
                     error=traceback.format_exc())]
    rows, steps, outs = {}, {}, {}
    for label in labels:
        rows[label] = dict(shape, backend=label, ms=None, cudnn_ms=None, max_err=None, floor_ms=floor.floor_ms,
                           floor_bound=floor.bound)
        beat(f"timing {label} {shape}")
        try:
            module = ref if label == "nn.LSTM" else _ours(ref, label)
            with torch.no_grad(), _tier_context(label):
                outs[label] = _forward(module, x)
            timer.sync()
            steps[label] = shared_timing.make_step(module, tshape, shape["mode"], cfg.device, dtype, x=x,
                                                   grad_out=g_out, context=lambda label=label: _tier_context(label))
        except Exception:
            rows[label]["error"] = traceback.format_exc()
    beat(f"timing {shape}")
    timed = shared_timing.time_interleaved(
        steps, device=cfg.device, rounds=cfg.max_reps, min_rounds=cfg.min_reps, warmup=cfg.warmup,
        budget_s=cfg.measure_s * len(steps),
    )
    cudnn_ms = None
    for label, t in timed.items():
        if t.error is not None:
            rows[label]["error"] = t.traceback
        else:
            rows[label]["ms"] = t.median * 1e3
            rows[label]["samples_ms"] = [v * 1e3 for v in t.samples]
    if "nn.LSTM" in rows:
        cudnn_ms = rows["nn.LSTM"]["ms"]
    for label, row in rows.items():
        if label != "nn.LSTM" and row["ms"] is not None and "nn.LSTM" in outs:
            row["max_err"] = max(_rel_err(a, b.double()) for a, b in zip(outs[label], outs["nn.LSTM"]))
        if row.get("error"):
            print(f"  {label} ERROR on {shape}: {row['error'].strip().splitlines()[-1]}", flush=True)
        row["cudnn_ms"] = cudnn_ms
    return list(rows.values())


def _forward(module, x):
    out, (h_n, c_n) = module(x)
    return out, h_n, c_n


# --------------------------------------------------------------------------- (e), (f)


def write_json(result: dict, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1, default=str)
    os.replace(tmp, path)


def print_correctness_summary(record: list) -> None:
    by_backend: dict[str, dict[str, int]] = {}
    for e in record:
        counts = by_backend.setdefault(e["backend"], {"pass": 0, "fail": 0, "error": 0})
        counts[e["status"]] += 1
    print("\ncorrectness (our error <= 2 x cuDNN's + atol, vs a float64 oracle):")
    for label, c in by_backend.items():
        print(f"  {label:<22} pass {c['pass']:>3}  fail {c['fail']:>3}  error {c['error']:>3}")
    for e in record:
        if e["status"] != "pass":
            print(f"  {e['status'].upper():>5} {e['backend']} {e['case']} {e['dtype']}"
                  + (f" worst={e['worst']}" if "worst" in e else ""))


def print_ecosystem_summary(record: list) -> None:
    """Pass/fail per check and implementation, then every failure with its reason."""
    by: dict[tuple, dict[str, int]] = {}
    for e in record:
        by.setdefault((e["check"], e["backend"]), {"pass": 0, "fail": 0})[e["status"]] += 1
    print("\necosystem (determinism, deterministic mode, eval backward, autocast, torch.compile):")
    for (check, label), c in by.items():
        print(f"  {check:<24} {label:<20} pass {c['pass']:>3}  fail {c['fail']:>3}")
    for e in record:
        if e["check"] == "eval_backward" and e["backend"] == "triton":
            nn_eval = e.get("nn_lstm_eval_backward") or {}
            print(f"  nn.LSTM ({e.get('versus')}) backward in eval mode: "
                  + ("refused: " + nn_eval["error"].splitlines()[0] if nn_eval.get("refused") else "works"))
        if e["check"] == "deterministic_algorithms" and "changes_result" in e:
            print(f"  torch.use_deterministic_algorithms(True) changes our results: {e['changes_result']}")
    for e in record:
        if e["status"] != "pass":
            print(f"   FAIL {e['check']} {e['backend']} {e['dtype']} {e['case']}: "
                  + e["error"].strip().splitlines()[-1])


def print_table(rows: list) -> None:
    """One line per shape: the floor, nn.LSTM and every backend in ms (x: speed-up over nn.LSTM)."""
    labels, shapes = [], {}
    for r in rows:
        if r["backend"] not in labels:
            labels.append(r["backend"])
        key = (r["mode"], r["dtype"], r["T"], r["B"], r["I"], r["H"], r["layers"], r["bidirectional"])
        shapes.setdefault(key, {})[r["backend"]] = r
    head = f"{'mode':<9} {'dtype':<8} {'T':>4} {'B':>4} {'H':>5} {'L':>1} {'D':>1} {'floor':>8}"
    print("\n" + head + "".join(f" {lb:>20}" for lb in labels))
    for key, per in shapes.items():
        mode, dtype, T, B, _I, H, L, bi = key
        floor_ms = next(iter(per.values()))["floor_ms"]
        line = f"{mode:<9} {dtype:<8} {T:>4} {B:>4} {H:>5} {L:>1} {2 if bi else 1:>1} {floor_ms:>8.3f}"
        for lb in labels:
            r = per.get(lb)
            if r is None or r["ms"] is None:
                cell = "-" if r is None else "error"
            elif lb == "nn.LSTM" or not r["cudnn_ms"]:
                cell = f"{r['ms']:.3f}"
            else:
                cell = f"{r['ms']:.3f} x{r['cudnn_ms'] / r['ms']:.2f}"
            line += f" {cell:>20}"
        print(line)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"),
                        help="directory for the JSON (default benchmarks/results)")
    parser.add_argument("--dry-run", action="store_true", help="CPU + Triton interpreter, tiny grids, < 60 s")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="whole-run budget in seconds (default 330 on a GPU, 50 dry)")
    parser.add_argument("--timing-s", type=float, default=None,
                        help="budget of the timing section in seconds (default 120 on a GPU)")
    parser.add_argument("--only", default=None,
                        help="comma-separated implementations to check and time beside nn.LSTM "
                             "(e.g. triton,triton:persistent; default: all, reference untimed)")
    parser.add_argument("--tf32", choices=("on", "off"), default="on",
                        help="TF32 for float32 matmuls, cuDNN and cuBLAS alike "
                             "(default on: what nn.LSTM gets by default)")
    args = parser.parse_args(argv)
    if args.dry_run and os.environ.get("TRITON_INTERPRET") != "1":
        parser.error("--dry-run must be on the command line so TRITON_INTERPRET=1 is set before imports")
    cfg = dry_config() if args.dry_run else gpu_config()
    if args.timing_s is not None:
        cfg.budgets["timing"] = args.timing_s
    if args.only is not None:
        global ONLY
        keep = {b.strip() for b in args.only.split(",") if b.strip()}
        known = all_labels() + list(VARIANT_LABELS)
        unknown = keep - set(known)
        if unknown:
            parser.error(f"--only: unknown implementations {sorted(unknown)}; known: {known}")
        ONLY = keep
    if args.dry_run:
        # CI machines are shared; more threads than cores only slows the rehearsal down.
        torch.set_num_threads(1)
    if not args.dry_run and not torch.cuda.is_available():
        print("no CUDA device: run with --dry-run for the CPU rehearsal", file=sys.stderr)
        return 2
    if not args.dry_run:
        # Without it every cuBLAS call raises under torch.use_deterministic_algorithms(True), and
        # torch reads it once, at the first matmul. ":4096:8" is torch's default workspace on sm_90.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    clock = Clock(args.budget_s or (50.0 if args.dry_run else 330.0))
    timer = Timer(cfg.device)
    tf32 = args.tf32 == "on"
    set_tf32(tf32)
    os.makedirs(args.out, exist_ok=True)

    clock.begin("environment", 30)
    env = environment(cfg, tf32)
    clock.end("environment")
    stamp = datetime.datetime.now(datetime.timezone.utc)
    name = "cpu-dry-run" if args.dry_run else env["device"]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    path = os.path.join(args.out, f"{slug}-{stamp:%Y-%m-%dT%H%MZ}.json")
    result = {
        "device": env["device"], "date": stamp.isoformat(timespec="seconds"), "dry_run": args.dry_run,
        "torch": env["torch"], "triton": env["triton"], "cudnn": env["cudnn"], "tf32": tf32,
        "environment": env, "rates": {}, "correctness": [], "ecosystem": [], "rows": [], "skipped": [],
        "elapsed_s": clock.elapsed,
        "atol": ATOL, "step_latency_us": roofline.STEP_LATENCY_US,
    }
    write_json(result, path)
    save = lambda: write_json(result, path)  # noqa: E731

    def final_save(event: dict) -> None:
        result["skipped"].append(event)
        result["elapsed_s"] = dict(clock.elapsed, total=round(clock.run_elapsed(), 3))
        for attempt in range(3):  # the main thread may be appending while this thread writes
            try:
                write_json(result, path)
                return
            except RuntimeError:
                if attempt == 2:
                    raise
                time.sleep(0.2)

    global WATCHDOG
    WATCHDOG = Watchdog(clock, hang_s=cfg.hang_s, hard_s=clock.total_s + cfg.hard_margin_s)
    WATCHDOG.start(final_save)

    clock.begin("rates", cfg.budgets["rates"])
    beat("rates")
    try:
        result["rates"] = measure_rates(cfg, timer)
    except Exception:
        result["rates"] = {"error": traceback.format_exc()}
        print(result["rates"]["error"], file=sys.stderr)
    clock.end("rates")
    write_json(result, path)

    clock.begin("correctness", cfg.budgets["correctness"])
    correctness(cfg, clock, timer, tf32, result["correctness"], result["skipped"], save)
    clock.end("correctness")
    write_json(result, path)

    clock.begin("ecosystem", cfg.budgets["ecosystem"])
    ecosystem(cfg, clock, timer, tf32, result["ecosystem"], result["skipped"], save)
    clock.end("ecosystem")
    write_json(result, path)

    clock.begin("timing", cfg.budgets["timing"])
    if "hbm_gbps" in result["rates"]:
        timings(cfg, clock, timer, result["rates"], result["rows"], result["skipped"], save)
    else:
        result["skipped"].append({"section": "timing", "reason": "no measured rates for the floor model"})
    clock.end("timing")
    result["elapsed_s"] = dict(clock.elapsed, total=round(clock.run_elapsed(), 3))
    write_json(result, path)

    print_correctness_summary(result["correctness"])
    print_ecosystem_summary(result["ecosystem"])
    print_table(result["rows"])
    print(f"\nwrote {path} ({clock.run_elapsed():.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
