"""``backend="auto"``: the fastest candidate, measured on the user's device, cached.

Above the registry: ``functional`` -> ``dispatch`` -> ``backends`` -> each backend.

On first sight of a problem signature (device, versions, dtype, grad or not, sizes, packed
or padded, T rounded up to a power of two) each candidate backend is timed in-process on
the call's own inputs: warm-up calls outside the timing, then interleaved repetitions
(the median of CUDA-event samples on GPU, the best wall-clock sample on CPU, see
``measure``); candidates already 3x slower than the best after two rounds are dropped,
and the whole measurement stops after about ``BUDGET_S``. Training candidates time
forward plus ``torch.autograd.grad`` (never ``.grad``) with dropout 0 and the RNG state
restored, so the user's random stream is unaffected
(tests/test_dispatch.py::test_user_rng_unaffected_by_tuning).

The winner is kept in memory and in a JSON file under ``$LSTM_KERNELS_CACHE_DIR``
(default ``$XDG_CACHE_HOME/lstm_kernels`` or ``~/.cache/lstm_kernels``), written
atomically and merged with what other processes wrote. ``LSTM_KERNELS_TUNE=0`` uses the
static table. While compiling/exporting, under CUDA-graph capture or with deterministic
algorithms on, only a cached or the static choice is used (nothing is timed).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import statistics
import tempfile
import threading
import time
import warnings
from typing import Callable, NamedTuple, Optional

import torch

from . import backends
from ._base import Backend

BUDGET_S = 1.0
DROP_FACTOR = 3.0
CACHE_FILE = "dispatch.json"


@dataclasses.dataclass(frozen=True)
class Choice:
    """Which implementation runs and why: ``measured``, ``cached``, ``static`` or ``forced``."""

    backend: str
    reason: str
    key: str = ""
    times_ms: Optional[dict] = None

    def __str__(self) -> str:
        s = f"{self.backend} ({self.reason}"
        if self.times_ms:
            s += "; " + ", ".join(f"{k} {v:.3f} ms" for k, v in sorted(self.times_ms.items(), key=lambda kv: kv[1]))
        return s + ")"


class Problem(NamedTuple):
    """What ``auto``'s choice depends on. A NamedTuple: built on every call, and a frozen
    dataclass costs several times more to construct."""

    device: torch.device
    dtype: torch.dtype
    grad: bool
    batch: int
    input_size: int
    hidden_size: int
    proj_size: int
    num_layers: int
    num_directions: int
    bias: bool
    packed: bool
    steps: int
    cell: bool = False


_memory: dict[str, dict] = {}
_cached_choices: dict[str, tuple[dict, "Choice"]] = {}
_lock = threading.Lock()
_warned = [False]
_forced: list[Optional[str]] = [None]
_last = threading.local()


# --- cache ----------------------------------------------------------------------------

def cache_dir() -> str:
    d = os.environ.get("LSTM_KERNELS_CACHE_DIR")
    if d:
        return d
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lstm_kernels")


def cache_path() -> str:
    return os.path.join(cache_dir(), CACHE_FILE)


def _warn_once(msg: str) -> None:
    if not _warned[0]:
        _warned[0] = True
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def read_cache() -> dict:
    """The on-disk entries; an unreadable or corrupt file warns once and counts as empty."""
    path = cache_path()
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        _warn_once(f"lstm_kernels: ignoring unreadable tuning cache {path} ({e}); it will be rewritten")
        return {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) and isinstance(v.get("backend"), str)
                                             for v in data.values()):
        _warn_once(f"lstm_kernels: ignoring malformed tuning cache {path}; it will be rewritten")
        return {}
    return data


@contextlib.contextmanager
def _file_lock(directory: str):
    try:
        import fcntl
    except ImportError:  # not POSIX: os.replace keeps the file valid, entries may race
        yield
        return
    with open(os.path.join(directory, CACHE_FILE + ".lock"), "a") as lf:
        fcntl.flock(lf, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lf, fcntl.LOCK_UN)


def write_entries(entries: dict) -> None:
    """Merge ``entries`` into the file: lock, re-read, write a temp file, ``os.replace``.

    A failure to write (read-only home, full disk) warns once and is otherwise ignored.
    """
    d = cache_dir()
    try:
        os.makedirs(d, exist_ok=True)
        with _file_lock(d):
            merged = read_cache()
            merged.update(entries)
            fd, tmp = tempfile.mkstemp(dir=d, prefix=CACHE_FILE, suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(merged, f, indent=1, sort_keys=True)
                os.replace(tmp, cache_path())
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
    except OSError as e:
        _warn_once(f"lstm_kernels: could not write the tuning cache in {d} ({e})")


def clear_memory() -> None:
    """Forget the measured choices held in memory, keeping the file: the state of a fresh
    process (tests/test_dispatch.py reads the file back this way)."""
    with _lock:
        _memory.clear()
        _cached_choices.clear()


def clear_cache() -> None:
    """Forget every measured choice, in memory and on disk."""
    clear_memory()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(cache_path())


def reset_warnings() -> None:
    """Let the next cache problem warn again: an unreadable or unwritable cache warns once
    per process (tests/test_dispatch.py checks each warning from a fresh state)."""
    _warned[0] = False


# --- signature, candidates, static table ----------------------------------------------

def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        cap = torch.cuda.get_device_capability(idx)
        return f"{torch.cuda.get_device_name(idx)} sm_{cap[0]}{cap[1]}"
    return device.type


def _triton_version() -> str:
    try:
        import triton
    except ImportError:
        return "none"
    return getattr(triton, "__version__", "?")


def signature(p: Problem) -> str:
    """The cache key of ``p``; memoised, since every ``auto`` call needs it."""
    key = _signatures.get(p)
    if key is None:
        if len(_signatures) > 4096:
            _signatures.clear()
        key = _signatures[p] = _signature(p)
    return key


_signatures: dict[Problem, str] = {}


def _signature(p: Problem) -> str:
    return "|".join(str(v) for v in (
        _device_name(p.device), f"torch {torch.__version__}", f"triton {_triton_version()}",
        str(p.dtype).replace("torch.", ""), "train" if p.grad else "infer", f"B{p.batch}",
        f"I{p.input_size}", f"H{p.hidden_size}", f"P{p.proj_size}", f"L{p.num_layers}",
        f"D{p.num_directions}", "bias" if p.bias else "nobias", "packed" if p.packed else "padded",
        f"T{_pow2(p.steps)}", "cell" if p.cell else "lstm",
    ))


def _triton_tier_candidates(p: Problem) -> list[str]:
    """``triton:<tier>`` for each tier ``_triton.dispatch.candidate_tiers`` offers."""
    from ._triton.dispatch import candidate_tiers

    return [f"triton:{t}" for t in candidate_tiers(p.batch, p.hidden_size, p.dtype, p.device)]


def candidates(p: Problem) -> list[str]:
    """Backends that can run ``p``'s device. The reference backend is never a candidate (slow)."""
    if p.device.type == "cuda":
        names = ["native"]
        if "triton" in backends.available_backends():
            names += _triton_tier_candidates(p)
        return names
    return ["native", "torchscript"]  # Triton on CPU is the interpreter: never timed


def _cudnn_persistent(p: Problem) -> bool:
    return (p.dtype == torch.float16 and p.num_layers == 1 and p.num_directions == 1
            and p.hidden_size % 128 == 0 and p.input_size % 128 == 0 and p.hidden_size <= 1024
            and p.batch % 8 == 0 and p.batch <= 128 and not p.packed and p.proj_size == 0)


def static_choice(p: Problem) -> str:
    """The table used without measurement (``LSTM_KERNELS_TUNE=0``, compiling, deterministic)."""
    if p.device.type == "cuda":
        if _cudnn_persistent(p) or "triton" not in backends.available_backends():
            return "native"
        return "triton"
    # oneDNN runs nn.LSTM for padded fp32/bf16 without projections; elsewhere nn.LSTM
    # falls back to ATen's slower loop and the scripted scan is the better bet.
    if p.dtype in (torch.float32, torch.bfloat16) and not p.packed and p.proj_size == 0:
        return "native"
    return "torchscript"


def backend_object(name: str, device: torch.device) -> Backend:
    if name.startswith("triton:"):
        return _triton_tier_backend(name.split(":", 1)[1], device)
    return backends.resolve(name, device)


_tier_instances: dict[str, Backend] = {}


def _triton_tier_backend(tier: str, device: torch.device) -> Backend:
    from ._triton.backend import TritonBackend, check_device

    check_device(device)
    if tier not in _tier_instances:
        _tier_instances[tier] = TritonBackend(tier=tier)
    return _tier_instances[tier]


# --- the choice -----------------------------------------------------------------------

def tuning_enabled() -> bool:
    return os.environ.get("LSTM_KERNELS_TUNE", "1").strip().lower() not in ("0", "false", "off", "no")


def _measurement_forbidden(device: torch.device) -> bool:
    if torch.compiler.is_compiling() or torch.are_deterministic_algorithms_enabled():
        return True
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


@contextlib.contextmanager
def force(name: Optional[str]):
    """Pin ``auto``'s winner to ``name`` (a candidate name) inside the block; for tests."""
    prev = _forced[0]
    _forced[0] = name
    try:
        yield
    finally:
        _forced[0] = prev


def last_choice() -> Optional[Choice]:
    """The choice the last ``auto`` call in this thread made."""
    return getattr(_last, "choice", None)


def choose(p: Problem, run: Callable[[Backend], None]) -> tuple[Backend, Choice]:
    """The backend ``auto`` runs for ``p``. ``run(backend)`` makes one timed call."""
    if _forced[0] is not None:
        choice = Choice(_forced[0], "forced")
    elif torch.compiler.is_compiling():
        # Nothing may be timed or read from disk inside a traced graph.
        choice = Choice(static_choice(p), "static (compiling)")
    else:
        choice = _choose_eager(p, run)
    _last.choice = choice
    return backend_object(choice.backend, p.device), choice


def _choose_eager(p: Problem, run) -> Choice:
    if not tuning_enabled():
        return Choice(static_choice(p), "static (LSTM_KERNELS_TUNE=0)")
    key = signature(p)
    entry = _memory.get(key)  # one dict read: atomic, no lock on the hot path
    hit = _cached_choices.get(key)
    if hit is not None and entry is not None and hit[0] is entry:
        return hit[1]
    if entry is None:
        with _lock:
            entry = _memory.get(key)
    if entry is None:
        entry = read_cache().get(key)
        if entry is not None:
            with _lock:
                _memory[key] = entry
    if entry is not None and entry["backend"] in candidates(p):
        choice = Choice(entry["backend"], "cached", key, entry.get("times_ms"))
        # Later calls with this signature return this Choice straight away, as long as
        # the memory entry is the same object (clear_cache or a rewrite makes it stale).
        _cached_choices[key] = (entry, choice)
        return choice
    if _measurement_forbidden(p.device):
        why = "deterministic algorithms" if torch.are_deterministic_algorithms_enabled() else "CUDA graph capture"
        return Choice(static_choice(p), f"static ({why}: not measured)", key)
    names = candidates(p)
    if len(names) == 1:
        return Choice(names[0], "static (one candidate)", key)
    times = measure(p, names, run)
    best = min(times, key=times.get)
    entry = {"backend": best, "times_ms": times}
    with _lock:
        _memory[key] = entry
    write_entries({key: entry})
    return Choice(best, "measured", key, times)


def _timer(device: torch.device):
    if device.type == "cuda":
        def timed(fn):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
    else:
        def timed(fn):
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3
    return timed


WARMUP_CALLS = 2
MIN_SAMPLE_MS = 1.0
MAX_CALLS_PER_SAMPLE = 16


def measure(p: Problem, names: list[str], run, reps: int = 7, budget_s: float = BUDGET_S) -> dict:
    """Ms per call of each candidate (median on CUDA, best sample on CPU); a candidate
    that fails is left out.

    Each candidate first runs ``WARMUP_CALLS`` untimed calls: the first compiles
    (TorchScript, Triton) and oneDNN builds its primitives over the first two, which
    would otherwise count against it (tests/test_dispatch.py::test_measure_*). A sample
    repeats short calls to last at least ``MIN_SAMPLE_MS``. After two rounds a candidate
    whose best sample is ``DROP_FACTOR`` times the best candidate's is dropped: the best
    sample, not the first, so one slow phase of a busy machine does not drop the winner.
    """
    timed = _timer(p.device)
    objs: dict[str, Backend] = {}
    calls: dict[str, int] = {}
    devices = [p.device] if p.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        for name in names:  # warm-up (scripting, compiling, autotuning) outside the timing
            try:
                obj = backend_object(name, p.device)
                for _ in range(WARMUP_CALLS - 1):
                    run(obj)
                last = timed(lambda: run(obj))
            except Exception as e:  # noqa: BLE001 - any failure only removes the candidate
                # A kernel that fails to compile or launch on this GPU must not fail the
                # user's call: the others still run it (tests/test_dispatch.py::
                # test_a_failing_candidate_is_left_out_with_a_warning).
                warnings.warn(f"lstm_kernels: auto leaves out {name} for this problem: "
                              f"{type(e).__name__}: {e}", RuntimeWarning, stacklevel=2)
                continue
            objs[name] = obj
            calls[name] = max(1, min(MAX_CALLS_PER_SAMPLE, math.ceil(MIN_SAMPLE_MS / max(last, 1e-3))))
        if not objs:
            raise RuntimeError("lstm_kernels: no backend candidate could run this input")

        def sample(name: str) -> float:
            n, obj = calls[name], objs[name]

            def many():
                for _ in range(n):
                    run(obj)
            return timed(many) / n

        samples: dict[str, list[float]] = {n: [] for n in objs}
        t_start = time.perf_counter()
        for rep in range(reps):
            order = list(samples)
            order = order[rep % len(order):] + order[:rep % len(order)]  # rotate: no fixed first slot
            for name in order:
                samples[name].append(sample(name))
            if rep == 1:
                best = min(min(s) for s in samples.values())
                samples = {n: s for n, s in samples.items() if min(s) <= DROP_FACTOR * best}
            if len(samples) == 1 or (rep >= 1 and time.perf_counter() - t_start > budget_s):
                break
    # CUDA events time the device alone: the median. On a CPU a busy machine only ever adds
    # time to a sample (other processes, preemption), so the best sample is the estimate that
    # survives load (tests/test_dispatch.py::test_measure_survives_a_slow_phase).
    pick = statistics.median if p.device.type == "cuda" else min
    return {n: pick(s) for n, s in samples.items()}
