"""What every benchmark of this project shares: the problem shape, the timed step, the timer.

Dimensions: T sequence length, B batch, I input size (= H unless given), H hidden size,
L layers, D directions (1, or 2 when bidirectional).

- ``Shape``: one problem, with a readable id such as ``T16-B1-H64-L1-uni``; ``parse_grid``
  turns a named grid (``GRIDS``) or a spec like ``"T=16,128 B=1 H=64 L=1,2 D=1,2"`` into
  shapes.
- ``make_step``: one call of a module in a mode, "inference" (``no_grad`` forward, eval
  mode) or "training" (forward, then the gradients of the input and every parameter
  under a fixed random upstream gradient, train mode). The step ends with a CUDA
  synchronise, so a wall clock read after it covers the device work.
- ``time_interleaved``: samples of several steps of one shape, interleaved round by round
  in a rotating order (a slow phase of a shared machine then hits all of them alike),
  warmed up outside the timing, read with CUDA events on a GPU or the chosen clock
  (``CLOCKS``) on CPU. Every sample is returned; ``spread`` summarises them.
- ``spread``, ``is_wide``, ``load_warning``, ``geomean``: how a report says how much
  to trust its numbers.

This module draws nothing on screen; ``lstm_kernels.bench`` and the scripts in
``benchmarks/`` do.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import os
import statistics
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Mapping, Optional, Sequence, Union

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

MODES = ("inference", "training")


@dataclass(frozen=True)
class Shape:
    """One benchmark problem: ``[T, B, I]`` input through an ``L``-layer LSTM of hidden size ``H``."""

    T: int
    B: int
    H: int
    layers: int = 1
    bidirectional: bool = False
    I: Optional[int] = None  # noqa: E741  (input size; None means H)

    @property
    def input_size(self) -> int:
        return self.H if self.I is None else self.I

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def tokens(self) -> int:
        """Tokens processed per call: one per time step and sequence."""
        return self.T * self.B

    @property
    def id(self) -> str:
        i = "" if self.I is None else f"-I{self.I}"
        return f"T{self.T}-B{self.B}{i}-H{self.H}-L{self.layers}-{'bi' if self.bidirectional else 'uni'}"

    def as_dict(self) -> dict:
        return {
            "T": self.T, "B": self.B, "I": self.input_size, "H": self.H,
            "layers": self.layers, "bidirectional": self.bidirectional,
        }


def product(T, B, H, L=(1,), D=(1,), I=(None,)) -> list[Shape]:  # noqa: E741
    """Every combination of the listed values, T varying slowest; D holds directions (1 or 2)."""
    return [
        Shape(t, b, h, layers, d == 2, i)
        for t, b, h, layers, d, i in itertools.product(T, B, H, L, D, I)
    ]


# Named grids. "full" is the grid the project's speed goals are stated on.
GRIDS: dict[str, list[Shape]] = {
    "smoke": [Shape(6, 2, 8), Shape(4, 3, 5, 2, True)],
    "quick": [Shape(16, 1, 64), Shape(32, 16, 128), Shape(8, 4, 32, 2, True)],
    "small": (
        product((16, 128), (1, 16), (64, 256))
        + [Shape(128, 16, 256, 2, True), Shape(512, 16, 256), Shape(128, 64, 512, 2, False)]
    ),
    "full": product((16, 128, 512), (1, 16, 64), (64, 256, 512), (1, 2), (1, 2)),
}
SPEC_EXAMPLE = "T=16,128 B=1,16 H=64 L=1,2 D=1,2"
GRID_KEYS = ("T", "B", "H", "I", "L", "D")


def parse_grid(spec: str) -> list[Shape]:
    """Shapes of a grid: a name in ``GRIDS`` or a product spec like ``"T=16,128 B=1,16 H=64 L=1,2 D=1,2"``.

    In a spec, T, B and H are required; L (layers) defaults to 1, D (directions, 1 or 2)
    to 1, and I (input size) to H.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"grid must be one of {sorted(GRIDS)} or a spec like {SPEC_EXAMPLE!r}; "
                         f"got {spec!r}")
    spec = spec.strip()
    if spec in GRIDS:
        return list(GRIDS[spec])
    if "=" not in spec:
        raise ValueError(f"unknown grid {spec!r}: use one of {sorted(GRIDS)} "
                         f"or a spec like {SPEC_EXAMPLE!r}")
    axes: dict[str, list[int]] = {}
    for part in spec.replace(";", " ").split():
        key, sep, values = part.partition("=")
        if not sep or key not in GRID_KEYS:
            raise ValueError(
                f"grid spec {spec!r}: bad item {part!r}; expected KEY=v1,v2 with KEY in {list(GRID_KEYS)}"
            )
        if key in axes:
            raise ValueError(f"grid spec {spec!r}: {key} given twice")
        try:
            nums = [int(v) for v in values.split(",") if v]
        except ValueError:
            raise ValueError(f"grid spec {spec!r}: {key} values must be integers, got {values!r}") from None
        if not nums or min(nums) < 1:
            raise ValueError(f"grid spec {spec!r}: {key} needs positive integers, got {values!r}")
        axes[key] = nums
    missing = [k for k in ("T", "B", "H") if k not in axes]
    if missing:
        raise ValueError(f"grid spec {spec!r}: missing {', '.join(missing)}")
    bad_d = [d for d in axes.get("D", [1]) if d not in (1, 2)]
    if bad_d:
        raise ValueError(f"grid spec {spec!r}: D (directions) must be 1 or 2, got {bad_d}")
    return product(axes["T"], axes["B"], axes["H"], axes.get("L", [1]), axes.get("D", [1]), axes.get("I", [None]))


# ----------------------------------------------------------------------------- the step


def sync(device: Union[torch.device, str, None]) -> None:
    """Wait for queued device work, so a timer read after it covers that work (no-op on CPU)."""
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def reference_lstm(shape: Shape, seed: int = 0) -> nn.LSTM:
    """The ``nn.LSTM`` of ``shape`` on CPU in float32; its weights depend only on ``seed`` and ``shape``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.LSTM(shape.input_size, shape.H, shape.layers, bidirectional=shape.bidirectional)


def make_input(shape: Shape, device="cpu", dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    """The ``[T, B, I]`` input of ``shape``; it depends only on ``seed`` and ``shape``."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape.T, shape.B, shape.input_size, generator=gen).to(device=device, dtype=dtype)


def make_step(
    module: nn.Module,
    shape: Optional[Shape],
    mode: str,
    device=None,
    dtype: Optional[torch.dtype] = None,
    *,
    x: Union[torch.Tensor, PackedSequence, None] = None,
    grad_out: Optional[torch.Tensor] = None,
    context: Optional[Callable[[], ContextManager]] = None,
    seed: int = 0,
) -> Callable[[], Union[torch.Tensor, PackedSequence]]:
    """A function running one call of ``module`` in ``mode``; it returns the (detached) output.

    The input is ``x``, or ``make_input(shape, device, dtype, seed)``; ``device`` and
    ``dtype`` default to the module's. In "training" the step computes, with
    ``torch.autograd.grad`` (nothing accumulates in ``.grad``, so every call does the
    same work), the gradients of every parameter and of the input (a tensor or a
    PackedSequence's data), under ``grad_out`` (default: a random tensor drawn from ``seed`` on the first call).
    ``context`` is entered around every call (a oneDNN switch, a forced tier). The
    step synchronises CUDA before it returns.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    params = [p for p in module.parameters() if p.requires_grad]
    if device is None or dtype is None:
        first = params[0] if params else torch.zeros(0)
        device = first.device if device is None else device
        dtype = first.dtype if dtype is None else dtype
    device = torch.device(device)
    if x is None:
        if shape is None:
            raise ValueError("make_step needs a shape or an input x")
        x = make_input(shape, device, dtype, seed)
    enter = context or contextlib.nullcontext
    cuda = device.type == "cuda"

    if mode == "inference":
        module.eval()

        def infer():
            with torch.no_grad(), enter():
                out = module(x)[0]
            if cuda:
                torch.cuda.synchronize(device)
            return out

        return infer

    module.train()
    if isinstance(x, PackedSequence):
        x = PackedSequence(x.data.detach().requires_grad_(True), x.batch_sizes, x.sorted_indices,
                           x.unsorted_indices)
        inputs = [x.data] + params
    else:
        x = x.detach().requires_grad_(True)
        inputs = [x] + params
    upstream = [grad_out]

    def train():
        with enter():
            out = module(x)[0]
            data = out.data if isinstance(out, PackedSequence) else out
            if upstream[0] is None:
                gen = torch.Generator().manual_seed(seed + 1)
                upstream[0] = torch.randn(data.shape, generator=gen).to(data)
            torch.autograd.grad([data], inputs, [upstream[0]])
        if cuda:
            torch.cuda.synchronize(device)
        return data.detach() if out is data else out

    return train


# ----------------------------------------------------------------------------- the timer

# CPU clocks: "wall" counts everything; "thread" is the calling thread's CPU time, which
# leaves out time the thread spent descheduled (robust on a shared machine, but only
# meaningful with one intra-op thread).
CLOCKS: dict[str, Callable[[], float]] = {
    "wall": time.perf_counter,
    "thread": time.thread_time,
    "process": time.process_time,
}


@dataclass
class Timing:
    """Samples of one step: seconds per call, each the mean over ``calls_per_sample`` calls."""

    samples: list = field(default_factory=list)
    calls_per_sample: int = 1
    error: Optional[str] = None  # "TypeName: message" of the exception that stopped it
    traceback: Optional[str] = None

    @property
    def median(self) -> Optional[float]:
        return statistics.median(self.samples) if self.samples and self.error is None else None


def _sample(fn: Callable, calls: int, cuda: bool, clock: Callable[[], float]) -> float:
    """Seconds per call of ``calls`` back-to-back calls of ``fn``."""
    if cuda:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(calls):
            fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3 / calls
    t0 = clock()
    for _ in range(calls):
        fn()
    return (clock() - t0) / calls


def time_interleaved(
    steps: Mapping[str, Callable[[], object]],
    *,
    device=None,
    rounds: int = 7,
    min_rounds: int = 3,
    warmup: int = 1,
    min_sample_s: float = 0.0,
    max_calls_per_sample: int = 1000,
    budget_s: float = math.inf,
    clock: str = "wall",
    contexts: Optional[Mapping[str, Callable[[], ContextManager]]] = None,
) -> dict[str, Timing]:
    """Time every step of one shape; one ``Timing`` per step, in the order of ``steps``.

    Each step is first called ``warmup`` times untimed (compiles, autotuning, oneDNN
    primitives), then once timed to choose its calls per sample: enough that a sample
    lasts ``min_sample_s`` (capped at ``max_calls_per_sample``), so a short call is not
    dominated by the timer. Then rounds of one sample per step, each round starting one
    step later than the last. Rounds stop after ``rounds``, or earlier once ``budget_s``
    seconds have gone into them and ``min_rounds`` are done.

    On CUDA a sample is read from CUDA events (``clock`` must be "wall"); on CPU from
    ``CLOCKS[clock]``. ``contexts[name]`` is entered around that step's warm-up and each
    of its samples. A step that raises gets its ``error`` set and is not called again;
    the others go on.
    """
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}; got {clock!r}")
    if rounds < 1 or min_rounds < 1 or warmup < 0:
        raise ValueError(f"rounds and min_rounds must be positive and warmup not negative; "
                         f"got rounds={rounds}, min_rounds={min_rounds}, warmup={warmup}")
    cuda = device is not None and torch.device(device).type == "cuda"
    if cuda and clock != "wall":
        raise ValueError(f"on CUDA samples come from CUDA events; clock {clock!r} only applies on CPU")
    read = CLOCKS[clock]
    contexts = contexts or {}
    results = {name: Timing() for name in steps}

    def guarded(name: str, work: Callable[[], None]) -> None:
        try:
            with contexts.get(name, contextlib.nullcontext)():
                work()
        except Exception as exc:  # recorded in the Timing; the caller reports it
            results[name].error = f"{type(exc).__name__}: {exc}"
            results[name].traceback = traceback.format_exc()

    for name, fn in steps.items():
        def calibrate(name=name, fn=fn):
            for _ in range(warmup):
                fn()
            sync(device)
            once = _sample(fn, 1, cuda, read)
            calls = math.ceil(min_sample_s / max(once, 1e-9)) if min_sample_s > 0 else 1
            results[name].calls_per_sample = max(1, min(max_calls_per_sample, calls))
        guarded(name, calibrate)

    live = [n for n in steps if results[n].error is None]
    start = time.perf_counter()
    for r in range(rounds):
        if r >= min_rounds and time.perf_counter() - start > budget_s:
            break
        k = r % len(live) if live else 0
        for name in live[k:] + live[:k]:
            t = results[name]
            if t.error is None:
                guarded(name, lambda t=t, fn=steps[name]: t.samples.append(
                    _sample(fn, t.calls_per_sample, cuda, read)))
    return results


# ----------------------------------------------------------------------------- trust


@dataclass(frozen=True)
class Spread:
    """Median, quartiles and extremes of a list of samples."""

    median: float
    q1: float
    q3: float
    lo: float
    hi: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @property
    def rel_iqr(self) -> float:
        """The interquartile range as a fraction of the median (0 with one sample)."""
        return self.iqr / self.median if self.median > 0 else math.inf


def spread(samples: Sequence[float]) -> Spread:
    if not samples:
        raise ValueError("spread of no samples")
    xs = sorted(samples)
    if len(xs) == 1:
        q1 = q3 = xs[0]
    else:
        q1, _, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return Spread(statistics.median(xs), q1, q3, xs[0], xs[-1])


# IQR / median above this: the samples disagree too much for the median to be trusted.
WIDE_SPREAD = 0.2


def is_wide(s: Spread, threshold: float = WIDE_SPREAD) -> bool:
    return s.rel_iqr > threshold


def load_warning(load1: Optional[float] = None, cores: Optional[int] = None) -> Optional[str]:
    """A warning when the 1-minute load average is above the core count, else None.

    Both default to this machine's (``os.getloadavg``, ``os.cpu_count``); without a load
    average (not Unix) there is nothing to say.
    """
    if load1 is None:
        try:
            load1 = os.getloadavg()[0]
        except (AttributeError, OSError):  # no load average on this platform
            return None
    cores = cores or os.cpu_count() or 1
    if load1 <= cores:
        return None
    return (f"load average {load1:.1f} is above the {cores} cores: other work competes for the CPU, "
            "so the timings are noisy (compare ratios, not absolute times)")


def geomean(xs: Sequence[float]) -> float:
    """Geometric mean of positive numbers (nan for none): the mean of ratios that treats 2x and 0.5x alike."""
    xs = list(xs)
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")
