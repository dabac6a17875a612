"""``python -m lstm_kernels.bench``: every backend against ``torch.nn.LSTM`` on this machine.

Dimensions: T sequence length, B batch, I input size (= H unless a grid says otherwise),
H hidden size, L layers, D directions (1, or 2 when bidirectional).

For each shape of a grid and each mode ("inference": ``no_grad`` forward in eval mode;
"training": forward + backward of the output under a random upstream gradient, with
gradients for the input and every parameter), every provider runs the same problem with
the same weights:

    nn.LSTM             ``torch.nn.LSTM`` as shipped (oneDNN on CPU, cuDNN on CUDA)
    nn.LSTM-no-onednn   CPU only: ``nn.LSTM`` with oneDNN disabled, for context
    <backend>           ``lstm_kernels.LSTM(backend=<backend>)`` for each available backend
    triton[<tier>]      CUDA only: the triton backend forced to one tier

Providers are interleaved per shape (round-robin, with a rotating start), each is warmed
up outside the timed region, CUDA is synchronised around every sample, and the reported
time is the median over samples. ``ratio`` is ``provider_ms / nn.LSTM_ms``: below 1 means
faster than ``nn.LSTM``.

The same grids, providers and step functions serve the pytest-benchmark suite in
``benchmarks/``.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Callable, Iterator, Optional, Sequence

import torch
from torch import nn

from ._base import triton_interpreting
from .backends import available_backends
from .modules import LSTM

BASELINE = "nn.LSTM"
MODES = ("inference", "training")
SCHEMA_VERSION = 1
DTYPES = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
}

# The eager reference backend runs one Python-level step per time step and gate; it is
# only worth timing where it finishes quickly, unless asked for with --full.
REFERENCE_MAX_T = 32
MIN_REPEATS = 3


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


def _product(T, B, H, L, D, I=(None,)) -> list[Shape]:  # noqa: E741
    return [
        Shape(t, b, h, layers, d == 2, i)
        for t, b, h, layers, d, i in itertools.product(T, B, H, L, D, I)
    ]


# Named grids. "full" is the grid the project's speed goals are stated on.
GRIDS: dict[str, list[Shape]] = {
    "smoke": [Shape(6, 2, 8), Shape(4, 3, 5, 2, True)],
    "quick": [Shape(16, 1, 64), Shape(32, 16, 128), Shape(8, 4, 32, 2, True)],
    "small": (
        _product((16, 128), (1, 16), (64, 256), (1,), (1,))
        + [Shape(128, 16, 256, 2, True), Shape(512, 16, 256), Shape(128, 64, 512, 2, False)]
    ),
    "full": _product((16, 128, 512), (1, 16, 64), (64, 256, 512), (1, 2), (1, 2)),
}
_SPEC_EXAMPLE = "T=16,128 B=1,16 H=64 L=1,2 D=1,2"
GRID_KEYS = {"T": "T", "B": "B", "H": "H", "I": "I", "L": "L", "D": "D"}


def parse_grid(spec: str) -> list[Shape]:
    """Shapes of a grid: a name in ``GRIDS`` or a product spec like ``"T=16,128 B=1,16 H=64 L=1,2 D=1,2"``.

    In a spec, T, B and H are required; L (layers) defaults to 1, D (directions, 1 or 2)
    to 1, and I (input size) to H.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"grid must be one of {sorted(GRIDS)} or a spec like {_SPEC_EXAMPLE!r}; "
                         f"got {spec!r}")
    spec = spec.strip()
    if spec in GRIDS:
        return list(GRIDS[spec])
    if "=" not in spec:
        raise ValueError(f"unknown grid {spec!r}: use one of {sorted(GRIDS)} "
                         f"or a spec like {_SPEC_EXAMPLE!r}")
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
    return _product(
        axes["T"], axes["B"], axes["H"], axes.get("L", [1]), axes.get("D", [1]), axes.get("I", [None])
    )


@dataclass(frozen=True)
class Provider:
    """Something that runs an LSTM: ``nn.LSTM`` (``backend is None``) or an ``lstm_kernels`` backend."""

    name: str
    backend: Optional[str] = None
    tier: Optional[str] = None
    onednn: bool = True

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """The global settings this provider runs under (oneDNN switch, forced triton tier)."""
        with contextlib.ExitStack() as stack:
            if not self.onednn:
                stack.enter_context(_onednn_disabled())
            if self.tier is not None:
                from ._triton.backend import force_tier

                stack.enter_context(force_tier(self.tier))
            yield


@contextlib.contextmanager
def _onednn_disabled() -> Iterator[None]:
    # The same switch as torch.backends.mkldnn.flags(enabled=False), without that helper
    # also resetting oneDNN's TF32 setting (which warns on every entry on CPU builds).
    old = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = old


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def triton_tiers() -> list[str]:
    """The triton tiers implemented in this version; ImportError when the triton backend cannot load."""
    from ._triton.backend import TIERS, implemented_tiers

    implemented = implemented_tiers()
    return [t for t in TIERS if t in implemented]


def providers(device: torch.device, notes: Optional[list[str]] = None) -> list[Provider]:
    """Every provider that can run on ``device``, baseline first.

    Triton on CPU only runs through its interpreter, whose timings mean nothing, so it
    is listed on CUDA only, and only when TRITON_INTERPRET is not set. Reasons for leaving
    a provider out are appended to ``notes``.
    """
    notes = [] if notes is None else notes
    out = [Provider(BASELINE)]
    if device.type == "cpu":
        out.append(Provider("nn.LSTM-no-onednn", onednn=False))
    for name in available_backends():
        if name == "triton" and (device.type != "cuda" or triton_interpreting()):
            notes.append("triton: not timed, it would run through the Triton interpreter "
                         + ("(TRITON_INTERPRET is set)" if triton_interpreting() else "on CPU"))
            continue
        out.append(Provider(name, backend=name))
        if name == "triton":
            try:
                tiers = triton_tiers()
            except ImportError as e:  # the plain "triton" row still runs and reports the failure
                notes.append(f"triton tiers: not listed, the triton backend does not import ({e})")
                tiers = []
            out.extend(Provider(f"triton[{t}]", backend="triton", tier=t) for t in tiers)
    return out


def providers_for(shape: Shape, all_providers: Sequence[Provider], full: bool) -> list[Provider]:
    """The providers timed on ``shape``: the slow reference backend only on short T, or with ``full``."""
    return [p for p in all_providers if full or p.backend != "reference" or shape.T <= REFERENCE_MAX_T]


def sync(device: torch.device) -> None:
    """Wait for queued device work, so a timer read after it covers that work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(
    provider: Provider,
    shape: Shape,
    mode: str,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Callable[[], torch.Tensor]:
    """A function running one call of ``provider`` on ``shape`` in ``mode``; it returns the output.

    Weights and data depend only on ``seed`` and ``shape``, so every provider of a shape
    computes the same numbers. The function does not synchronise; callers do.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        base = nn.LSTM(shape.input_size, shape.H, shape.layers, bidirectional=shape.bidirectional)
    base = base.to(device=device, dtype=dtype)
    module = base if provider.backend is None else LSTM.from_torch(base, backend=provider.backend)
    D = 2 if shape.bidirectional else 1
    x = torch.randn(shape.T, shape.B, shape.input_size, generator=gen).to(device=device, dtype=dtype)
    if mode == "inference":
        module.eval()

        def infer() -> torch.Tensor:
            with torch.no_grad():
                return module(x)[0]

        return infer

    module.train()
    x.requires_grad_(True)
    grad_out = torch.randn(shape.T, shape.B, D * shape.H, generator=gen).to(device=device, dtype=dtype)
    params = list(module.parameters())

    def train() -> torch.Tensor:
        # Fresh gradients each call, so every call does the same work (no accumulation).
        x.grad = None
        for p in params:
            p.grad = None
        out = module(x)[0]
        out.backward(grad_out)
        return out.detach()

    return train


def _time_once(fn: Callable, n: int, device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / n


@dataclass
class _Entry:
    provider: Provider
    fn: Optional[Callable] = None
    inner: int = 1
    samples: list = None
    error: Optional[str] = None


def measure(
    shape: Shape,
    mode: str,
    provs: Sequence[Provider],
    device: torch.device,
    dtype: torch.dtype,
    repeats: int,
    warmup: int,
    min_sample_s: float,
    budget_s: float = math.inf,
) -> list[dict]:
    """Time every provider on one shape and mode, interleaved; one result row per provider.

    Sampling rounds stop after ``repeats``, or earlier once ``budget_s`` seconds have gone
    into them and every provider has at least ``MIN_REPEATS`` samples.

    A provider that raises gets a row with ``error`` set (and no time) instead of
    stopping the whole run; the command exits non-zero when any row has an error.
    """
    entries = [_Entry(p, samples=[]) for p in provs]
    for e in entries:
        try:
            with e.provider.context():
                e.fn = make_step(e.provider, shape, mode, device, dtype)
                for _ in range(warmup):
                    e.fn()
                # Calls per sample: enough that one sample is not dominated by timer and sync.
                once = _time_once(e.fn, 1, device)
            e.inner = max(1, min(1000, math.ceil(min_sample_s / max(once, 1e-9))))
        except Exception as exc:  # reported in the row and in the exit status
            e.error = f"{type(exc).__name__}: {exc}"
    live = [e for e in entries if e.error is None]
    start = time.perf_counter()
    for r in range(repeats):
        if r >= MIN_REPEATS and time.perf_counter() - start > budget_s:
            break
        # Rotate the order so no provider always runs right after the same neighbour.
        k = r % len(live) if live else 0
        for e in live[k:] + live[:k]:
            if e.error is not None:
                continue
            try:
                with e.provider.context():
                    e.samples.append(_time_once(e.fn, e.inner, device))
            except Exception as exc:  # reported in the row and in the exit status
                e.error = f"{type(exc).__name__}: {exc}"
    base_ms = None
    rows = []
    for e in entries:
        ms = statistics.median(e.samples) * 1e3 if e.error is None and e.samples else None
        if e.provider.name == BASELINE:
            base_ms = ms
        rows.append({
            **shape.as_dict(),
            "shape": shape.id,
            "mode": mode,
            "provider": e.provider.name,
            "backend": e.provider.backend,
            "tier": e.provider.tier,
            "ms": ms,
            "ms_min": min(e.samples) * 1e3 if ms is not None else None,
            "samples": len(e.samples),
            "calls_per_sample": e.inner,
            "tokens_per_s": shape.tokens / (ms / 1e3) if ms else None,
            "error": e.error,
        })
    for row in rows:
        row["ratio"] = row["ms"] / base_ms if row["ms"] is not None and base_ms else None
    return rows


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # not Linux: fall back to what platform knows
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device, dtype: torch.dtype) -> dict:
    """Versions and machine facts recorded beside the rows."""
    try:
        triton_version = metadata.version("triton")
    except metadata.PackageNotFoundError:
        triton_version = None
    from . import __version__ as ours
    info = {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
        "torch": torch.__version__,
        "triton": triton_version,
        "lstm_kernels": ours,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "onednn": torch.backends.mkldnn.is_available(),
        "dtype": str(dtype).replace("torch.", ""),
    }
    if device.type == "cuda":
        # TF32 changes float32 results and speed on both sides; record what both ran with.
        info.update(
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
            matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
        )
    return info


def _fmt(x: Optional[float], spec: str) -> str:
    return "-" if x is None else format(x, spec)


def render_table(rows: Sequence[dict], console) -> None:
    from rich.table import Table

    table = Table(title="lstm_kernels vs nn.LSTM", title_justify="left",
                  caption="ratio = ms / nn.LSTM ms (below 1: faster than nn.LSTM)", caption_justify="left")
    table.add_column("shape", no_wrap=True)
    table.add_column("mode", no_wrap=True)
    table.add_column("provider", no_wrap=True)
    table.add_column("ms/call", justify="right", no_wrap=True)
    table.add_column("ms / nn.LSTM ms", justify="right", no_wrap=True)
    table.add_column("tokens/s", justify="right", no_wrap=True)
    last = None
    for row in rows:
        key = (row["shape"], row["mode"])
        if last is not None and key != last:
            table.add_section()
        last = key
        ratio = row["ratio"]
        style = "red" if row["error"] else ("green" if ratio is not None and ratio < 1 else None)
        table.add_row(
            row["shape"], row["mode"], row["provider"],
            _fmt(row["ms"], ".3f") if not row["error"] else "error",
            _fmt(ratio, ".3g"),
            _fmt(row["tokens_per_s"], ",.0f"),
            style=style,
        )
    console.print(table)
    for row in rows:
        if row["error"]:
            console.print(f"[red]{row['shape']} {row['mode']} {row['provider']}: {row['error']}[/red]")


def plot(rows: Sequence[dict], path: str, env: dict) -> None:
    """Bar chart of the ratios to nn.LSTM, one panel per mode, log scale; saved as PNG."""
    try:
        import matplotlib
    except ImportError:
        raise RuntimeError("--plot needs matplotlib: pip install 'lstm_kernels[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    names = [p for p in dict.fromkeys(r["provider"] for r in rows) if p != BASELINE]
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    fig, axes = plt.subplots(
        len(modes), 1, figsize=(max(6.0, 0.9 * len(shapes) * max(1, len(names)) * 0.5 + 2), 3.6 * len(modes)),
        squeeze=False,
    )
    width = 0.8 / max(1, len(names))
    for ax, mode in zip(axes[:, 0], modes):
        ratio = {(r["shape"], r["provider"]): r["ratio"] for r in rows if r["mode"] == mode}
        for k, name in enumerate(names):
            offset = (k - (len(names) - 1) / 2) * width
            xs = [i + offset for i, s in enumerate(shapes) if ratio.get((s, name))]
            ys = [ratio[(s, name)] for s in shapes if ratio.get((s, name))]
            ax.bar(xs, ys, width=width, label=name)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_title(f"{mode}: time / nn.LSTM time (below 1 is faster)")
        ax.set_xticks(range(len(shapes)))
        ax.set_xticklabels(shapes, rotation=45, ha="right", fontsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(
        f"lstm_kernels on {env['device']} ({env['device_name']}), torch {env['torch']}, {env['dtype']}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m lstm_kernels.bench",
        description="Time every lstm_kernels backend against torch.nn.LSTM on this machine "
        "(ratio = provider time / nn.LSTM time; below 1 is faster).",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny grid, few repeats (< 1 min on 2 cores)")
    size.add_argument("--full", action="store_true",
                      help="the full grid T{16,128,512} x B{1,16,64} x H{64,256,512} x L{1,2} x uni/bi, "
                      "with the reference backend on every shape")
    size.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
    size.add_argument("--grid", help=f"a grid name ({', '.join(GRIDS)}) or a spec like {_SPEC_EXAMPLE!r}")
    p.add_argument("--modes", default=",".join(MODES), help="comma list: inference,training (default both)")
    p.add_argument("--providers", help="comma list of providers besides nn.LSTM (default: all)")
    p.add_argument("--repeats", type=_positive_int, help="samples per provider and shape (median reported)")
    p.add_argument("--warmup", type=_positive_int, help="untimed calls per provider before timing")
    p.add_argument("--threads", type=_positive_int, help="torch.set_num_threads(N) before timing")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available, else cpu")
    p.add_argument("--json", metavar="PATH", help="write rows and environment as JSON")
    p.add_argument("--plot", metavar="PATH", help="write a PNG chart of the ratios")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    bad = [m for m in args.modes if m not in MODES]
    if bad or not args.modes:
        p.error(f"--modes: expected a comma list of {', '.join(MODES)}, got {bad or args.modes}")
    if args.grid is not None:
        try:
            parse_grid(args.grid)
        except ValueError as e:
            p.error(f"--grid: {e}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    return args


def run(argv: Optional[Sequence[str]] = None) -> int:
    """The command line entry point; returns the exit status (1 when any provider failed)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device) if args.device else default_device()
    dtype = DTYPES[args.dtype]
    # (grid, repeats, seconds per sample at least, seconds of sampling per shape and mode, warm-up calls)
    if args.smoke:
        grid, repeats, min_sample, budget, warmup = "smoke", 2, 0.0, 0.0, 1
    elif args.quick:
        grid, repeats, min_sample, budget, warmup = "quick", 3, 0.002, 1.0, 2
    elif args.full:
        grid, repeats, min_sample, budget, warmup = "full", 10, 0.02, math.inf, 3
    else:
        grid, repeats, min_sample, budget, warmup = args.grid or "small", 7, 0.02, 10.0, 3
    shapes = parse_grid(grid)
    repeats = args.repeats or repeats
    warmup = args.warmup or warmup

    notes: list[str] = []
    all_provs = providers(device, notes)
    if args.providers:
        wanted = [s.strip() for s in args.providers.split(",") if s.strip()]
        known = [p.name for p in all_provs]
        unknown = [w for w in wanted if w not in known]
        if unknown:
            raise SystemExit(f"--providers: {unknown} not available here; available: {known}")
        all_provs = [p for p in all_provs if p.name == BASELINE or p.name in wanted]

    # Wide enough for the table when the output is a file or pipe (rich assumes 80 columns).
    out = Console() if sys.stdout.isatty() else Console(width=120)
    err = Console(stderr=True)
    env = environment(device, dtype)
    err.print(
        f"device {env['device']} ({env['device_name']}), torch {env['torch']}, triton {env['triton']}, "
        f"{env['threads']} threads, {env['dtype']}; {len(shapes)} shapes x {len(args.modes)} modes, "
        f"median of {repeats}"
    )
    for note in notes:
        err.print(f"note: {note}")

    rows: list[dict] = []
    jobs = [(s, m) for s in shapes for m in args.modes]
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, transient=True, disable=args.no_progress,
    ) as progress:
        task = progress.add_task("benchmarking", total=len(jobs))
        for shape, mode in jobs:
            progress.update(task, description=f"{shape.id} {mode}")
            provs = providers_for(shape, all_provs, full=args.full)
            rows.extend(measure(shape, mode, provs, device, dtype, repeats, warmup, min_sample, budget))
            progress.advance(task)

    render_table(rows, out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"schema": SCHEMA_VERSION, "environment": env, "grid": grid, "repeats": repeats,
                       "ratio": "ms / nn.LSTM ms", "notes": notes, "rows": rows}, f, indent=1)
        err.print(f"wrote {args.json}")
    if args.plot:
        plot(rows, args.plot, env)
        err.print(f"wrote {args.plot}")
    return 1 if any(r["error"] for r in rows) else 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
