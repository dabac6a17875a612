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

Shapes, steps and the timer come from ``lstm_kernels.timing``: providers are interleaved
per shape (round-robin, with a rotating start), each is warmed up outside the timed
region, samples are read from CUDA events on a GPU and ``perf_counter`` on CPU, and the
reported time is the median over samples, with the interquartile range (IQR) beside it.
``ratio`` is ``provider_ms / nn.LSTM_ms``: below 1 means faster than ``nn.LSTM``.

The report says when not to trust it: rows whose IQR is above ``timing.WIDE_SPREAD`` of
their median are marked ``!`` and counted in a warning, as is a 1-minute load average
above the core count; it ends with the geometric mean of the ratios per mode and
provider. The table fits an 80-column terminal (short headers, folded cells).

The same grids, providers and step functions serve the pytest-benchmark suite in
``benchmarks/``.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import metadata
from typing import Callable, Iterator, Optional, Sequence

import torch

from . import dispatch, timing
from ._base import triton_interpreting
from .backends import available_backends
from .modules import LSTM
from .timing import (  # noqa: F401  (GRIDS, parse_grid, sync: part of this module's interface)
    GRIDS, MODES, SPEC_EXAMPLE, WIDE_SPREAD, Shape, Timing, geomean, load_warning, parse_grid,
    reference_lstm, spread, sync, time_interleaved,
)

BASELINE = "nn.LSTM"
SCHEMA_VERSION = 1
DTYPES = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
}

# The eager reference backend runs one Python-level step per time step and gate; it is
# only worth timing where it finishes quickly, unless asked for with --full.
REFERENCE_MAX_T = 32
MIN_REPEATS = 3


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
    """The triton tiers; ImportError when the triton backend (or one of its tiers) cannot load."""
    from ._triton.backend import tier_scans
    from ._triton.dispatch import TIERS

    tier_scans()  # imports every tier, so a broken one is reported here, not mid-run
    return list(TIERS)


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
    # What a user of LSTM(...) gets: the measured choice among the rows below (its row
    # names the pick, "auto (native)"; tests/test_bench_smoke.py::test_auto_row_names_its_pick).
    out.append(Provider("auto", backend="auto"))
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


def make_step(
    provider: Provider,
    shape: Shape,
    mode: str,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> Callable[[], torch.Tensor]:
    """``timing.make_step`` for ``provider`` on ``shape``: it returns the output.

    Weights and data depend only on ``seed`` and ``shape``, so every provider of a shape
    computes the same numbers. The provider's context is not entered here; callers
    enter it (``measure`` does, around each sample).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    base = reference_lstm(shape, seed).to(device=device, dtype=dtype)
    module = base if provider.backend is None else LSTM.from_torch(base, backend=provider.backend)
    return timing.make_step(module, shape, mode, device, dtype, seed=seed)


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
    steps, errors = {}, {}
    for p in provs:
        try:
            with p.context():
                steps[p.name] = make_step(p, shape, mode, device, dtype)
        except Exception as exc:  # reported in the row and in the exit status
            errors[p.name] = f"{type(exc).__name__}: {exc}"
    by_name = {p.name: p for p in provs}
    timings = time_interleaved(
        steps, device=device, rounds=repeats, min_rounds=MIN_REPEATS, warmup=warmup,
        min_sample_s=min_sample_s, budget_s=budget_s,
        contexts={name: by_name[name].context for name in steps},
    )
    rows = [result_row(shape, mode, p, timings.get(p.name), errors.get(p.name)) for p in provs]
    choice = dispatch.last_choice() if "auto" in steps else None  # only the auto row calls auto
    for row in rows:
        row["pick"] = choice.backend if row["provider"] == "auto" and choice is not None else None
        row["pick_reason"] = choice.reason if row["pick"] is not None else None
    base_ms = next((r["ms"] for r in rows if r["provider"] == BASELINE), None)
    for row in rows:
        row["ratio"] = row["ms"] / base_ms if row["ms"] is not None and base_ms else None
    return rows


def result_row(shape: Shape, mode: str, provider: Provider, t: Optional[Timing], error: Optional[str]) -> dict:
    """One provider's JSON row; ``ratio`` is filled in by ``measure`` once the baseline is known."""
    error = error or (t.error if t is not None else "not timed")
    samples = t.samples if t is not None and error is None else []
    s = spread(samples) if samples else None
    ms = s.median * 1e3 if s else None
    return {
        **shape.as_dict(),
        "shape": shape.id,
        "mode": mode,
        "provider": provider.name,
        "backend": provider.backend,
        "tier": provider.tier,
        "ms": ms,
        "ms_min": s.lo * 1e3 if s else None,
        "ms_max": s.hi * 1e3 if s else None,
        "ms_q1": s.q1 * 1e3 if s else None,
        "ms_q3": s.q3 * 1e3 if s else None,
        # IQR / median; above timing.WIDE_SPREAD the row is flagged as noisy.
        "spread": s.rel_iqr if s else None,
        "samples": len(samples),
        "samples_ms": [x * 1e3 for x in samples],
        "calls_per_sample": t.calls_per_sample if t is not None else 1,
        "tokens_per_s": shape.tokens / (ms / 1e3) if ms else None,
        "error": error,
    }


def summary(rows: Sequence[dict]) -> list[dict]:
    """Geometric mean of the ratio to nn.LSTM per mode and provider (baseline and failed rows left out)."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        if r["provider"] != BASELINE and r["ratio"] is not None:
            groups.setdefault((r["mode"], r["provider"]), []).append(r["ratio"])
    order = {m: i for i, m in enumerate(MODES)}
    return [
        {"mode": mode, "provider": prov, "geomean_ratio": geomean(rs), "shapes": len(rs)}
        for (mode, prov), rs in sorted(groups.items(), key=lambda kv: order.get(kv[0][0], len(order)))
    ]


def summary_lines(summ: Sequence[dict]) -> list[str]:
    """One line per mode and provider, e.g. ``geomean inference torchscript: 0.91 x nn.LSTM over 12 shapes``."""
    return [
        f"geomean {s['mode']} {s['provider']}: {s['geomean_ratio']:.3g} x nn.LSTM "
        f"over {s['shapes']} shape{'s' if s['shapes'] != 1 else ''}"
        for s in summ
    ]


def noise_warnings(rows: Sequence[dict], load1: Optional[float] = None, cores: Optional[int] = None) -> list[str]:
    """Why the timings may not be trusted: rows whose IQR is wide, a machine busier than its cores."""
    out = []
    wide = [r for r in rows if r["spread"] is not None and r["spread"] > WIDE_SPREAD]
    if wide:
        worst = max(wide, key=lambda r: r["spread"])
        out.append(
            f"{len(wide)} of {len(rows)} rows (marked !) have an IQR above {WIDE_SPREAD:.0%} of their median "
            f"(worst {worst['spread']:.0%}: {worst['shape']} {worst['mode']} {worst['provider']}); "
            "rerun them with more --repeats on a quieter machine"
        )
    load = load_warning(load1, cores)
    if load:
        out.append(load)
    return out

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


def _si(x: Optional[float]) -> str:
    """``1234567`` -> ``1.23M``: three significant digits and a unit letter."""
    if x is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _spread_cell(row: dict) -> str:
    if row["spread"] is None:
        return "-"
    return f"{row['spread']:.0%}" + ("!" if row["spread"] > WIDE_SPREAD else "")


@dataclass(frozen=True)
class Column:
    """One table column: its header, its cell for a row, and its shorter forms on a narrow terminal."""

    header: str
    cell: Callable[[dict], str]
    justify: str = "left"
    short_header: Optional[str] = None
    short_cell: Optional[Callable[[dict], str]] = None
    narrow: bool = True  # shown on a narrow terminal


COLUMNS: list[Column] = [
    Column("shape", lambda r: r["shape"]),
    Column("mode", lambda r: r["mode"], short_cell=lambda r: r["mode"][:5]),
    Column("provider", lambda r: r["provider"] + (f" ({r['pick']})" if r.get("pick") else "")),
    Column("ms/call", lambda r: "error" if r["error"] else _fmt(r["ms"], ".3f"), "right", "ms"),
    Column("IQR", _spread_cell, "right"),
    Column("ms / nn.LSTM ms", lambda r: _fmt(r["ratio"], ".3g"), "right", "ratio"),
    Column("tokens/s", lambda r: _si(r["tokens_per_s"]), "right", "tok/s", narrow=False),
]
# Below this many columns the table uses the short headers and cells, drops the columns
# that are not ``narrow`` and folds what still does not fit (test_table_fits_80_columns).
NARROW_WIDTH = 100


def render_table(rows: Sequence[dict], console, columns: Sequence[Column] = COLUMNS) -> None:
    from rich import box
    from rich.table import Table

    narrow = console.width < NARROW_WIDTH
    cols = [c for c in columns if c.narrow or not narrow]
    table = Table(
        title="lstm_kernels vs nn.LSTM", title_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
        caption=f"ratio = ms / nn.LSTM ms (below 1: faster than nn.LSTM); IQR = interquartile range "
        f"of the samples as a share of the median (! above {WIDE_SPREAD:.0%}: noisy)",
        caption_justify="left",
    )
    for c in cols:
        table.add_column(c.short_header or c.header if narrow else c.header, justify=c.justify,
                         overflow="fold")
    last = None
    for row in rows:
        key = (row["shape"], row["mode"])
        if last is not None and key != last:
            table.add_section()
        repeat = key == last
        last = key
        ratio = row["ratio"]
        style = "red" if row["error"] else ("green" if ratio is not None and ratio < 1 else None)
        cells = []
        for c in cols:
            fn = c.short_cell if narrow and c.short_cell else c.cell
            # On a narrow terminal a group's shape and mode are written once.
            cells.append("" if narrow and repeat and c.header in ("shape", "mode") else fn(row))
        table.add_row(*cells, style=style)
    console.print(table)
    for row in rows:
        if row["error"]:
            console.print(f"{row['shape']} {row['mode']} {row['provider']}: {row['error']}",
                          style="red", markup=False, highlight=False)


def render_report(rows: Sequence[dict], console, warnings: Sequence[str] = ()) -> None:
    """The table, the noise warnings, then one geomean line per mode and provider."""
    render_table(rows, console)
    for w in warnings:
        console.print(f"warning: {w}", style="yellow", markup=False, highlight=False)
    for line in summary_lines(summary(rows)):
        console.print(line, highlight=False)


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


def first_call_costs(shape: tuple = (32, 16, 64, 128), repeats: int = 1) -> dict:
    """Seconds of a fresh process's first training step, ``nn.LSTM`` vs ``LSTM(backend="auto")``,
    with an empty and with a filled tuning cache. ``shape`` is (T, B, I, H)."""
    T, B, I, H = shape
    code = (
        "import time, torch\n"
        "t0 = time.perf_counter()\n"
        "import lstm_kernels\n"
        f"m = (torch.nn.LSTM({I}, {H}) if '{{kind}}' == 'torch' else lstm_kernels.LSTM({I}, {H}))\n"
        f"x = torch.randn({T}, {B}, {I}, requires_grad=True)\n"
        "out, (h, c) = m(x); out.sum().backward()\n"
        "print(time.perf_counter() - t0)\n"
    )
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, LSTM_KERNELS_CACHE_DIR=d, LSTM_KERNELS_TUNE="1")

        def once(kind: str) -> float:
            out = subprocess.run([sys.executable, "-c", code.replace("{kind}", kind)], env=env,
                                 capture_output=True, text=True, check=True)
            return float(out.stdout.strip().splitlines()[-1])

        for _ in range(repeats):
            results.setdefault("nn.LSTM", 0.0)
            results["nn.LSTM"] += once("torch") / repeats
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(d, dispatch.CACHE_FILE))
            results.setdefault("auto, empty cache", 0.0)
            results["auto, empty cache"] += once("auto") / repeats
            results.setdefault("auto, filled cache", 0.0)
            results["auto, filled cache"] += once("auto") / repeats
    return results


def startup_line(costs: dict) -> str:
    """``first_call_costs``'s seconds as one line: auto's start-up beyond nn.LSTM's."""
    base = costs["nn.LSTM"]
    return (f"start-up, first training step of a fresh process: nn.LSTM {base:.2f} s; auto "
            f"{costs['auto, empty cache'] - base:+.2f} s with an empty tuning cache, "
            f"{costs['auto, filled cache'] - base:+.2f} s with a filled one")


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
    size.add_argument("--grid", help=f"a grid name ({', '.join(GRIDS)}) or a spec like {SPEC_EXAMPLE!r}")
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
    p.add_argument("--no-startup", action="store_true",
                   help="skip the start-up line (fresh processes: nn.LSTM's first training step "
                   "against auto's, with an empty and a filled tuning cache)")
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
    try:
        import rich  # noqa: F401
    except ImportError:
        raise SystemExit("python -m lstm_kernels.bench draws its table with rich: "
                         "pip install 'lstm_kernels[bench]' (or pip install rich)") from None
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
    busy = load_warning()
    if busy:
        err.print(f"warning: {busy}", style="yellow", markup=False, highlight=False)

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

    warnings = noise_warnings(rows)
    render_report(rows, out, warnings)
    startup = None
    if not (args.smoke or args.no_startup):
        startup = first_call_costs()
        out.print(startup_line(startup), highlight=False)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"schema": SCHEMA_VERSION, "environment": env, "grid": grid, "repeats": repeats,
                       "ratio": "ms / nn.LSTM ms", "notes": notes, "warnings": warnings, "startup_s": startup,
                       "summary": summary(rows), "rows": rows}, f, indent=1)
        err.print(f"wrote {args.json}")
    if args.plot:
        plot(rows, args.plot, env)
        err.print(f"wrote {args.plot}")
    return 1 if any(r["error"] for r in rows) else 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
