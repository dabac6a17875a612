#!/usr/bin/env python
"""One unattended run on a GPU machine: the GPU tests (correctness against cuDNN), then timings.

    python benchmarks/gpu_suite.py [--out DIR] [--budget-s 330] [--tf32 on|off]
    python benchmarks/gpu_suite.py --dry-run --out /tmp/x   # same code on CPU, < 60 s

Sections, in order, each with its own time budget (elapsed times are printed):
  (a) environment; (b) the chip's rates: a large device-to-device copy (GB/s) and a
  large bf16 matmul (TFLOP/s); (c) correctness: ``tests/gpu`` under pytest in a child
  process with TRITON_INTERPRET=0 (every Triton tier, ``native`` and ``auto`` against
  nn.LSTM on cuDNN per dtype, determinism, deterministic mode, torch.compile, autocast,
  eval-mode backward; the tests own the rule and its tolerances), one pass/fail/skip
  entry per test under ``"correctness"``, the run's counts under ``"tests"``; (d) timings,
  nn.LSTM (cuDNN) and each backend side by side per shape (``native``, every tier forced,
  ``auto`` cold and cached), with the floor model of ``lstm_kernels.roofline``; (e) the
  JSON ``<out>/<device>-<date>.json`` (rewritten during every section, so a run cut short
  still leaves its results); (f) a compact table.

``--dry-run`` runs the same code on CPU: the test child with the interpreter (where the
GPU tests skip, each recorded), nn.LSTM on CPU in place of cuDNN, time.perf_counter in
place of CUDA events, on tiny grids. Nothing here touches CUDA before ``main()`` runs.

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
import datetime  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import queue  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Callable, Optional  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

import lstm_kernels  # noqa: E402
from lstm_kernels import LSTM, roofline  # noqa: E402
from lstm_kernels import timing as shared_timing  # noqa: E402

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class Config:
    """What one run does; ``gpu_config`` and ``dry_config`` are the only two."""

    device: str
    budgets: dict  # section -> seconds
    copy_bytes: int
    matmul_n: int
    rate_reps: int
    timing_passes: list  # lists of shape dicts, in priority order
    time_backends_exclude: tuple = ("reference",)
    measure_s: float = 0.15  # time spent timing one (shape, backend), warm-up excluded
    min_reps: int = 3
    max_reps: int = 20
    warmup: int = 2
    # One step (or one test) longer than this is a hang (cold compiles included).
    hang_s: float = 120.0
    hard_margin_s: float = 25.0  # past budget + this, the watchdog ends the run (GPU: 355 s < 6 min)


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
        budgets={"rates": 15, "correctness": 150, "timing": 120},
        copy_bytes=1 << 30,
        matmul_n=8192,
        rate_reps=10,
        timing_passes=_timing_passes(
            Bs=(1, 8, 32, 128), Hs=(128, 256, 512, 1024), Ts=(64, 512), Ls=(1, 2), bis=(False, True),
            dtypes=("bfloat16", "float16", "float32"),
            center=dict(B=32, H=512, T=512, layers=1, bidirectional=False, dtype="bfloat16"),
        ),
    )


def dry_config() -> Config:
    return Config(
        device="cpu",
        # Nothing runs a kernel before the timings (the tests skip): their first shape pays
        # every implementation's first call.
        budgets={"rates": 3, "correctness": 30, "timing": 15},
        copy_bytes=1 << 22,
        matmul_n=128,
        rate_reps=3,
        timing_passes=_timing_passes(
            Bs=(1, 2), Hs=(4,), Ts=(3,), Ls=(1,), bis=(False,), dtypes=("float32",),
            center=dict(B=2, H=4, T=3, layers=1, bidirectional=False, dtype="float32"),
        ),
        measure_s=0.02,
        min_reps=2,
        max_reps=3,
        warmup=1,
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
    """Triton tiers that import here (empty without the triton backend)."""
    if "triton" not in lstm_kernels.available_backends():
        return []
    from lstm_kernels._triton import backend as tb

    try:
        scans = tb.tier_scans()
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

# The GPU tests in groups, each run by its own child with a share of the section's time
# left: the parity tests first (every implementation on one case and precision before the
# next), then the others, torch.compile (the slowest) last, so a run cut short by its
# budget still covers every kind of check.
TEST_GROUPS = (
    (("tests/gpu/test_gpu_parity.py",), 0.7),
    (("tests/gpu/test_gpu_determinism.py", "tests/gpu/test_gpu_cell.py", "tests/gpu/test_gpu_modes.py"), 1.0),
)
TEST_PATHS = tuple(p for paths, _ in TEST_GROUPS for p in paths)
# One line per finished test under ``pytest -v``: "<nodeid> PASSED  [ 3%]" (a file outside
# the rootdir has an empty path part).
RESULT_LINE = re.compile(r"^(\S*::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b")
INTERRUPT_GRACE_S = 15.0
STATUS = {"PASSED": "pass", "FAILED": "fail", "ERROR": "error", "SKIPPED": "skip", "XFAIL": "skip",
          "XPASS": "fail"}


def correctness(cfg: Config, clock: Clock, record: list, skipped: list,
                save: Callable[[], None] = lambda: None, select: Optional[str] = None) -> dict:
    """``TEST_GROUPS`` one after the other (``select``: pytest's ``-k``); the runs and the counts."""
    runs = []
    for paths, share in TEST_GROUPS:
        if clock.left() <= 0:
            skipped.append({"section": "correctness", "reason": "time budget spent", "paths": list(paths)})
            continue
        deadline = time.perf_counter() + share * clock.left()
        runs.append(run_tests(cfg, clock, record, skipped, save, paths, deadline, select))
    counts = {s: sum(e["status"] == s for e in record) for s in ("pass", "fail", "error", "skip")}
    return {"runs": runs, "counts": counts, "TRITON_INTERPRET": "1" if cfg.device == "cpu" else "0"}


def run_tests(cfg: Config, clock: Clock, record: list, skipped: list, save: Callable[[], None] = lambda: None,
              paths: tuple = TEST_PATHS, deadline: Optional[float] = None,
              select: Optional[str] = None) -> dict:
    """Runs ``paths`` (tests/gpu) under pytest in a child process, one entry per test in
    ``record`` as it finishes ({"test", "status": pass/fail/error/skip, "message"}).

    A child, not ``pytest.main`` here: a kernel that corrupts the CUDA context or hangs ends
    the child, and the timing section still runs. Kernels are compiled (TRITON_INTERPRET=0)
    except in the dry run, where the tests skip for want of a GPU. The child is stopped when
    the section's budget is spent, at ``deadline`` (perf_counter) or when no test finishes
    for ``cfg.hang_s``; each stop is recorded in ``skipped``. Returns the run's summary
    (command, return code, counts).
    """
    junit_dir = tempfile.mkdtemp(prefix="gpu_suite_junit_")
    junit = os.path.join(junit_dir, "junit.xml")
    cmd = [sys.executable, "-m", "pytest", *paths, "-c", os.path.join(ROOT, "pyproject.toml"),
           "--rootdir", ROOT, "-o", "addopts=", "-m", "gpu", "-v", "-p", "no:cacheprovider",
           "--junitxml", junit] + (["-k", select] if select else [])
    env = dict(os.environ, TRITON_INTERPRET="1" if cfg.device == "cpu" else "0",
               PYTHONPATH=os.pathsep.join([ROOT] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    print("  " + " ".join(cmd), flush=True)
    child = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    lines: queue.Queue = queue.Queue()

    def read() -> None:  # in a thread, so a silent child never blocks the budget checks below
        for line in child.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    tail: list = []
    by_id: dict = {}
    stopped, interrupted, last_progress, last_save = None, None, time.perf_counter(), 0.0
    while True:
        beat(f"tests/gpu: {record[-1]['test'] if record else 'collecting'}")
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            line = ""
        if line is None:
            break
        if line:
            tail = (tail + [line.rstrip("\n")])[-40:]
            m = RESULT_LINE.match(line.strip())
            if m and m.group(1) in by_id:  # a second line: its teardown failed after the test passed
                by_id[m.group(1)]["status"] = STATUS[m.group(2)]
            elif m:
                entry = {"test": m.group(1), "status": STATUS[m.group(2)], "message": None}
                by_id[entry["test"]] = entry
                record.append(entry)
                last_progress = time.perf_counter()
                if last_progress - last_save > 1.0:
                    save()
                    last_save = last_progress
        past_deadline = deadline is not None and time.perf_counter() > deadline
        if stopped is None and (clock.left() <= 0 or past_deadline):
            stopped = "time budget spent"
        elif stopped is None and time.perf_counter() - last_progress > cfg.hang_s:
            stopped = f"no test finished for {cfg.hang_s:.0f} s"
        if stopped and child.poll() is None:
            # SIGINT first: pytest then stops as on Ctrl-C and still writes the JUnit XML (the
            # finished tests' tracebacks); a kernel that ignores it gets SIGKILL.
            if interrupted is None:
                interrupted = time.perf_counter()
                os.killpg(child.pid, signal.SIGINT)
            elif time.perf_counter() - interrupted > INTERRUPT_GRACE_S:
                os.killpg(child.pid, signal.SIGKILL)
    rc = child.wait()
    if stopped:
        last = record[-1]["test"] if record else None
        skipped.append({"section": "correctness", "reason": stopped, "paths": list(paths),
                        "tests_finished": len(record), "after": last})
        print(f"  {stopped}: stopped {' '.join(paths)} after {len(record)} tests in all", flush=True)
    _add_failure_texts(junit, by_id)
    shutil.rmtree(junit_dir, ignore_errors=True)
    mine = list(by_id.values())
    counts = {s: sum(e["status"] == s for e in mine) for s in ("pass", "fail", "error", "skip")}
    if not mine:
        print("\n".join("  | " + t for t in tail), flush=True)
    return {"command": cmd, "TRITON_INTERPRET": env["TRITON_INTERPRET"], "returncode": rc, "stopped": stopped,
            "counts": counts, "output_tail": "\n".join(tail)}


def _add_failure_texts(junit: str, by_id: dict) -> None:
    """Each test's time, a failing test's traceback and a skipped test's reason, from the
    JUnit XML (written when pytest ends; ``-v`` lines carry neither)."""
    if not os.path.exists(junit):
        return
    import xml.etree.ElementTree as ET

    index, by_name = {}, {}
    for e in by_id.values():
        path, _, name = e["test"].partition("::")
        index[(os.path.splitext(os.path.basename(path))[0], name)] = e
        by_name.setdefault(name, []).append(e)
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = case.get("name", "")
        entry = index.get((case.get("classname", "").rsplit(".", 1)[-1], name))
        if entry is None and len(by_name.get(name, ())) == 1:  # a file outside the rootdir
            entry = by_name[name][0]
        if entry is None:
            continue
        entry["seconds"] = float(case.get("time") or 0.0)
        for child in case:
            if child.tag in ("failure", "error"):
                entry["traceback"] = (child.text or child.get("message") or "").strip()
            elif child.tag == "skipped":
                entry["message"] = child.get("message") or entry["message"]


# --------------------------------------------------------------------------- (d)


# Set by --only: the implementations the timing section runs (None: all of them).
ONLY: Optional[set] = None
# backend="auto" timed twice: "auto/cold" clears the tuning cache before every call, so each
# call measures its candidates first (what a new shape costs once); "auto" keeps the cache.
COLD = "/cold"
AUTO_LABELS = ("auto" + COLD, "auto")


def all_labels() -> list[str]:
    """Every backend (``native`` among them), ``triton:<tier>`` for every implemented tier,
    forced, and ``auto`` cold and cached."""
    labels = list(lstm_kernels.available_backends())
    labels += [f"triton:{t}" for t in implemented_tiers()]
    return labels + list(AUTO_LABELS)


def backend_labels() -> list[str]:
    """The implementations this run times: ``all_labels``, or those of --only (which may
    also name ``VARIANT_LABELS``)."""
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
                  "triton:persistent/atomic-poll", "triton:persistent/no-gx-prefetch",
                  "triton:persistent/no-saved-prefetch", "triton:persistent/state-every-step",
                  "triton:persistent/saved-fp32", "triton:persistent/no-row-split-bwd",
                  "triton:persistent/atomic-poll+no-gx-prefetch+no-saved-prefetch+state-every-step",
                  "triton:fused_step" + GRAPHS)


@contextlib.contextmanager
def _tier_context(label: str):
    if label.endswith(COLD):
        from lstm_kernels import dispatch

        dispatch.clear_cache()  # in the section's own cache directory: see fresh_tuning_cache
        yield
        return
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


def _ours(ref: nn.LSTM, label: str) -> LSTM:
    m = LSTM(ref.input_size, ref.hidden_size, ref.num_layers, bidirectional=ref.bidirectional,
             proj_size=ref.proj_size, backend=label.split(":", 1)[0].split("/", 1)[0],
             device=ref.weight_ih_l0.device, dtype=ref.weight_ih_l0.dtype)
    m.load_state_dict(ref.state_dict())
    return m


def _rel_err(t: torch.Tensor, ref: torch.Tensor) -> float:
    if t.shape != ref.shape:
        raise RuntimeError(f"shape {tuple(t.shape)} differs from the oracle's {tuple(ref.shape)}")
    if ref.numel() == 0:
        return 0.0
    scale = ref.abs().max().clamp_min(1e-12)
    return float(((t.double() - ref).abs().max() / scale).item())


@contextlib.contextmanager
def fresh_tuning_cache():
    """``auto`` measuring (LSTM_KERNELS_TUNE=1) into an empty cache directory of its own, so
    the cold rows never read nor wipe the user's cache; the environment is restored."""
    from lstm_kernels import dispatch

    saved = {k: os.environ.get(k) for k in ("LSTM_KERNELS_TUNE", "LSTM_KERNELS_CACHE_DIR")}
    os.environ["LSTM_KERNELS_TUNE"] = "1"
    os.environ["LSTM_KERNELS_CACHE_DIR"] = tempfile.mkdtemp(prefix="gpu_suite_tuning_")
    dispatch.clear_cache()
    try:
        yield
    finally:
        dispatch.clear_cache()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def timings(cfg: Config, clock: Clock, timer: Timer, rates: dict, rows: list, skipped: list,
            save: Callable[[], None] = lambda: None) -> None:
    with fresh_tuning_cache():
        _timings(cfg, clock, timer, rates, rows, skipped, save)


def _timings(cfg: Config, clock: Clock, timer: Timer, rates: dict, rows: list, skipped: list,
             save: Callable[[], None]) -> None:
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
    cold = {label: steps.pop(label) for label in list(steps) if label.endswith(COLD)}
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
    if shape["mode"] == "training" and cfg.device == "cuda":
        for label, step in steps.items():
            beat(f"memory {label} {shape}")
            try:
                rows[label]["peak_mib"] = _peak_mib(step)
            except Exception:
                rows[label]["error"] = traceback.format_exc()
    for label, step in cold.items():
        beat(f"timing {label} {shape}")
        try:
            rows[label]["samples_ms"] = _time_cold(step, timer)
            rows[label]["ms"] = statistics.median(rows[label]["samples_ms"])
        except Exception:
            rows[label]["error"] = traceback.format_exc()
    if "nn.LSTM" in rows:
        cudnn_ms = rows["nn.LSTM"]["ms"]
    for label, row in rows.items():
        if label != "nn.LSTM" and row["ms"] is not None and "nn.LSTM" in outs:
            row["max_err"] = max(_rel_err(a, b.double()) for a, b in zip(outs[label], outs["nn.LSTM"]))
        if row.get("error"):
            print(f"  {label} ERROR on {shape}: {row['error'].strip().splitlines()[-1]}", flush=True)
        row["cudnn_ms"] = cudnn_ms
        if "peak_mib" in rows.get("nn.LSTM", {}):
            row["cudnn_peak_mib"] = rows["nn.LSTM"]["peak_mib"]
    return list(rows.values())


def _peak_mib(step: Callable[[], object]) -> float:
    """MiB one training step allocates beyond what was allocated before it (activations,
    saved state, workspace and gradient temporaries; the parameters' gradients exist since
    the warm-up), from the caching allocator's peak."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2 ** 20


# A cold call measures every candidate (up to dispatch's budget, about a second): timed
# interleaved, with warm-up and several rounds, it would take most of a shape's time.
COLD_CALLS = 2


def _time_cold(step: Callable[[], object], timer: Timer) -> list:
    """``COLD_CALLS`` separate calls, each with an empty tuning cache (its step's context),
    after the other labels ran, so their kernels are compiled: what a first call costs."""
    samples = []
    for _ in range(COLD_CALLS):
        timer.sync()
        t0 = time.perf_counter()
        step()
        timer.sync()
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def _forward(module, x):
    out, (h_n, c_n) = module(x)
    return out, h_n, c_n


# --------------------------------------------------------------------------- (e), (f)


def write_json(result: dict, path: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1, default=str)
    os.replace(tmp, path)


def print_test_summary(record: list, summary: dict) -> None:
    """Counts per test function, then every failing test with the last line of its reason."""
    by: dict[str, dict[str, int]] = {}
    for e in record:
        function = e["test"].partition("::")[2].partition("[")[0]
        by.setdefault(function, {"pass": 0, "fail": 0, "error": 0, "skip": 0})[e["status"]] += 1
    exits = [r["returncode"] for r in summary.get("runs", [])]
    print(f"\ncorrectness (tests/gpu, TRITON_INTERPRET={summary.get('TRITON_INTERPRET')}, "
          f"pytest exit codes {exits}):")
    for function, c in by.items():
        print(f"  {function:<52} pass {c['pass']:>3}  fail {c['fail']:>3}  error {c['error']:>3}"
              f"  skip {c['skip']:>3}")
    skips = {e["message"] for e in record if e["status"] == "skip"}
    if skips:
        print("  skipped because: " + "; ".join(sorted(str(m) for m in skips)))
    for e in record:
        if e["status"] in ("fail", "error"):
            why = (e.get("traceback") or e.get("message") or "").strip().splitlines()
            print(f"  {e['status'].upper():>5} {e['test']}" + (f": {why[-1]}" if why else ""))


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
    print_memory(rows)


def print_memory(rows: list) -> None:
    """Peak training memory per step over cuDNN's for the same shape and dtype (below 1 is
    less), geomean and worst per implementation; nothing where no row measured it."""
    ratios: dict = {}
    for r in rows:
        if r.get("peak_mib") and r.get("cudnn_peak_mib") and r["backend"] != "nn.LSTM":
            ratios.setdefault(r["backend"], []).append(r["peak_mib"] / r["cudnn_peak_mib"])
    if ratios:
        print("\npeak training memory / cuDNN's (same dtype):")
    for label, rs in ratios.items():
        print(f"  {label:<40} geomean {math.exp(sum(map(math.log, rs)) / len(rs)):.2f}  max {max(rs):.2f}"
              f"  ({len(rs)} shapes)")


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
                        help="comma-separated implementations to time beside nn.LSTM (e.g. "
                             "triton,triton:persistent,auto/cold; default: all, reference untimed); "
                             "the GPU tests always run whole")
    parser.add_argument("--tests-k", default=None, metavar="EXPR",
                        help="run only the GPU tests pytest's -k EXPR selects (e.g. 'triton-auto or native')")
    parser.add_argument("--tf32", choices=("on", "off"), default="on",
                        help="TF32 for float32 matmuls in the timings, cuDNN and cuBLAS alike "
                             "(default on: what nn.LSTM gets by default; the tests check both)")
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
        "environment": env, "rates": {}, "correctness": [], "tests": {}, "rows": [], "skipped": [],
        "elapsed_s": clock.elapsed, "step_latency_us": roofline.STEP_LATENCY_US,
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
    try:
        result["tests"] = correctness(cfg, clock, result["correctness"], result["skipped"], save,
                                      args.tests_k)
    except Exception:  # the child could not start: say why, and go on to the timings
        result["tests"] = {"error": traceback.format_exc()}
        print(result["tests"]["error"], file=sys.stderr)
    clock.end("correctness")
    write_json(result, path)

    clock.begin("timing", cfg.budgets["timing"])
    if "hbm_gbps" in result["rates"]:
        timings(cfg, clock, timer, result["rates"], result["rows"], result["skipped"], save)
    else:
        result["skipped"].append({"section": "timing", "reason": "no measured rates for the floor model"})
    clock.end("timing")
    result["elapsed_s"] = dict(clock.elapsed, total=round(clock.run_elapsed(), 3))
    write_json(result, path)

    print_test_summary(result["correctness"], result["tests"])
    print_table(result["rows"])
    print(f"\nwrote {path} ({clock.run_elapsed():.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
