"""CPU speed of the TorchScript path relative to nn.LSTM, as ratio tables.

Dimensions: T sequence length, B batch, H hidden size (= input size), L layers,
D directions (bi = bidirectional).

Providers, all with the same intra-op thread count (``--threads``, default 2):
    scripted  lstm_kernels.LSTM(backend="torchscript")
    onednn    torch.nn.LSTM with oneDNN enabled (PyTorch's default on CPU)
    native    torch.nn.LSTM with ``torch.backends.mkldnn.flags(enabled=False)``
Modes: ``inference`` (forward under no_grad) and ``training`` (forward + backward of a
random upstream gradient into the input and the parameters); shapes, steps and the
interleaved timer are ``lstm_kernels.timing``'s, shared with ``python -m lstm_kernels.bench``.

The machine this runs on may be shared, so every shape alternates the providers call by
call in a rotating order over several rounds and reports medians: slow phases of the
machine then hit all providers alike instead of one. A ratio is scripted / other
(below 1.0 means the scripted path is faster): the median over rounds of
scripted/other for calls that ran back to back, which survives a slow phase of the
machine better than a ratio of medians (the JSON also keeps medians and minimums).

The packed table compares PackedSequence input against padded input of the same
[T, B] for the scripted path and for nn.LSTM; sequence lengths are drawn uniformly
from [1, T] with one sequence of length T.

Usage:
    python benchmarks/cpu_ratios.py                       # full grid, writes results
    python benchmarks/cpu_ratios.py --quick               # a few shapes
    python benchmarks/cpu_ratios.py --only T16-B1 --modes inference --no-packed
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import time
import warnings
from typing import Callable

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import lstm_kernels  # noqa: E402
from lstm_kernels import timing  # noqa: E402
from lstm_kernels.timing import Shape, geomean  # noqa: E402

GRID = {"T": [16, 128, 512], "B": [1, 16, 64], "H": [64, 256, 512], "L": [1, 2], "bi": [False, True]}
PACKED_GRID = {"T": [16, 128, 512], "B": [16, 64], "H": [64, 256], "L": [1], "bi": [False, True]}
QUICK_GRID = {"T": [16, 128], "B": [1, 16], "H": [64, 256], "L": [1], "bi": [False, True]}
QUICK_PACKED = {"T": [128], "B": [16], "H": [64], "L": [1], "bi": [False, True]}
PROVIDERS = ("scripted", "onednn", "native")
MODES = ("inference", "training")


def shapes_of(grid: dict) -> list[Shape]:
    return timing.product(grid["T"], grid["B"], grid["H"], grid["L"], [2 if bi else 1 for bi in grid["bi"]])


def shape_record(shape: Shape) -> dict:
    """The shape as the JSON rows write it (input size = H)."""
    return {"T": shape.T, "B": shape.B, "H": shape.H, "L": shape.layers, "bi": shape.bidirectional}


def make_models(shape: Shape) -> tuple[nn.Module, nn.Module]:
    """nn.LSTM and the scripted LSTM with the same weights."""
    ref = nn.LSTM(shape.H, shape.H, shape.layers, bidirectional=shape.bidirectional)
    ours = lstm_kernels.LSTM(shape.H, shape.H, shape.layers, bidirectional=shape.bidirectional,
                             backend="torchscript")
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def make_step(model: nn.Module, shape: Shape, x, mode: str, mkldnn: bool) -> Callable[[], object]:
    """One timed call (``timing.make_step``), with oneDNN switched off when ``mkldnn`` is False."""
    context = contextlib.nullcontext if mkldnn else (lambda: torch.backends.mkldnn.flags(enabled=False))
    return timing.make_step(model, shape, mode, x=x, context=context)


CLOCK = "wall"
MIN_ROUNDS = 3


def time_interleaved(
    steps: dict[str, Callable[[], object]], rounds: int, budget_s: float
) -> dict[str, list[float]]:
    """Seconds per call of each step, one sample per round, alternating steps in a rotating order.

    One untimed call warms each step up (TorchScript compiles, oneDNN builds primitives);
    short calls repeat so one sample lasts at least ~10 ms; rounds stop early, after
    ``MIN_ROUNDS``, once ``budget_s`` is spent.
    """
    result = timing.time_interleaved(steps, rounds=rounds, min_rounds=MIN_ROUNDS, warmup=1,
                                     min_sample_s=0.01, max_calls_per_sample=10_000, budget_s=budget_s,
                                     clock=CLOCK)
    failed = {n: t.error for n, t in result.items() if t.error}
    if failed:
        raise RuntimeError(f"steps failed: {failed}")
    return {n: t.samples for n, t in result.items()}


def paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a[r] / b[r]: both samples of a round ran back to back, so a
    slow phase of a shared machine inflates both, and the ratio survives it."""
    return statistics.median(x / y for x, y in zip(a, b))


def bench_shape(shape: Shape, modes, providers, rounds: int, budget_s: float) -> dict:
    ref, ours = make_models(shape)
    x = torch.randn(shape.T, shape.B, shape.H)
    row = {"shape": shape_record(shape), "id": shape.id}
    for mode in modes:
        models = {"scripted": (ours, True), "onednn": (ref, True), "native": (ref, False)}
        steps = {p: make_step(models[p][0], shape, x, mode, models[p][1]) for p in providers}
        samples = time_interleaved(steps, rounds, budget_s)
        row[mode] = {
            "ms": {p: statistics.median(samples[p]) * 1e3 for p in providers},
            "min_ms": {p: min(samples[p]) * 1e3 for p in providers},
            "rounds": len(samples["scripted"]),
            "ratio": {p: paired_ratio(samples["scripted"], samples[p]) for p in providers if p != "scripted"},
            "ratio_of_mins": {
                p: min(samples["scripted"]) / min(samples[p]) for p in providers if p != "scripted"
            },
        }
    return row


def bench_packed(shape: Shape, modes, rounds: int, budget_s: float) -> dict:
    ref, ours = make_models(shape)
    g = torch.Generator().manual_seed(shape.T * 1000 + shape.B)
    lengths = torch.randint(1, shape.T + 1, (shape.B,), generator=g)
    lengths[0] = shape.T
    lengths, _ = lengths.sort(descending=True)
    x = torch.randn(shape.T, shape.B, shape.H)
    packed = pack_padded_sequence(x, lengths)
    row = {"shape": shape_record(shape), "id": shape.id, "mean_len_frac": float(lengths.float().mean() / shape.T)}
    for mode in modes:
        steps = {
            "scripted-padded": make_step(ours, shape, x, mode, True),
            "scripted-packed": make_step(ours, shape, packed, mode, True),
            "onednn-padded": make_step(ref, shape, x, mode, True),
            "onednn-packed": make_step(ref, shape, packed, mode, True),
        }
        smp = time_interleaved(steps, rounds, budget_s)
        row[mode] = {
            "ms": {k: statistics.median(v) * 1e3 for k, v in smp.items()},
            "scripted_packed_over_padded": paired_ratio(smp["scripted-packed"], smp["scripted-padded"]),
            "onednn_packed_over_padded": paired_ratio(smp["onednn-packed"], smp["onednn-padded"]),
            "scripted_packed_over_onednn_packed": paired_ratio(smp["scripted-packed"], smp["onednn-packed"]),
        }
    return row


# Why a shape can miss the target: every grid shape is in exactly one class
# (test_cpu_ratios_classes_cover_the_grid).
SHAPE_CLASSES = {
    "A": "H=64: interpreter-bound step",
    "B": "B=1, H>=256: memory-bound step matvec",
    "C": "B>=16, H>=256: matmul speed, unfused pointwise",
}


def shape_class(shape: dict) -> str:
    """The letter of ``SHAPE_CLASSES`` that ``shape`` (a dict with "B" and "H") belongs to."""
    if shape["H"] <= 64:
        return "A"
    return "B" if shape["B"] == 1 else "C"


def summary(rows: list[dict], modes) -> dict:
    out = {}
    for mode in modes:
        for other in ("onednn", "native"):
            for cls in [None, *SHAPE_CLASSES]:
                rs = [r[mode]["ratio"][other] for r in rows if mode in r and other in r[mode]["ratio"]
                      and (cls is None or shape_class(r["shape"]) == cls)]
                if rs:
                    key = f"{mode}/{other}" + ("" if cls is None else f" class {cls}")
                    out[key] = {"geomean": geomean(rs), "max": max(rs), "n": len(rs),
                                "over_1.5": sum(x > 1.5 for x in rs), "over_1.0": sum(x > 1.0 for x in rs)}
    return out


def markdown(rows, packed_rows, summ, modes, meta) -> str:
    lines = [f"Threads: {meta['threads']}; clock: {meta['clock']}; torch {meta['torch']}; {meta['cpu']}. "
             "Ratio = scripted time / provider time: the median over rounds of the ratio of "
             "back-to-back calls (ms columns: median per call); < 1 is faster.", ""]
    if rows:
        lines += ["Class (why a shape can miss the target): "
                  + "; ".join(f"{k} = {v}" for k, v in SHAPE_CLASSES.items()) + ".", ""]
        head = "| shape | class |" + "".join(
            f" {m[:5]} ms scripted | {m[:5]} ms oneDNN | {m[:5]} ÷oneDNN | {m[:5]} ÷native |" for m in modes
        )
        lines += [head, "|" + "---|" * (2 + 4 * len(modes))]
        for r in rows:
            cells = [r["id"], shape_class(r["shape"])]
            for m in modes:
                ms, ra = r[m]["ms"], r[m]["ratio"]
                cells += [f"{ms['scripted']:.2f}", f"{ms.get('onednn', float('nan')):.2f}",
                          f"{ra.get('onednn', float('nan')):.2f}", f"{ra.get('native', float('nan')):.2f}"]
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "| mode / vs | geomean | max | shapes > 1.0 | shapes > 1.5 | n |",
                  "|---|---|---|---|---|---|"]
        for k, v in summ.items():
            over1 = v.get("over_1.0", "")
            lines.append(f"| {k} | {v['geomean']:.2f} | {v['max']:.2f} | {over1} | {v['over_1.5']} | {v['n']} |")
    if packed_rows:
        lines += ["", "Packed (lengths uniform in [1, T], one of length T) vs padded input "
                  "of the same [T, B]:",
                  "",
                  "| shape | mode | scripted packed/padded | nn.LSTM(oneDNN) packed/padded "
                  "| scripted packed / nn.LSTM packed |", "|---|---|---|---|---|"]
        for r in packed_rows:
            for m in modes:
                p = r[m]
                lines.append(f"| {r['id']} | {m} | {p['scripted_packed_over_padded']:.2f} | "
                             f"{p['onednn_packed_over_padded']:.2f} | "
                             f"{p['scripted_packed_over_onednn_packed']:.2f} |")
    return "\n".join(lines) + "\n"


def merge(paths: list[str], out: str) -> int:
    """One table (and geometric means) from several runs, e.g. a grid measured in parts."""
    runs = []
    for p in paths:
        with open(p) as f:
            runs.append(json.load(f))
    rows = [r for run in runs for r in run["grid"]]
    packed_rows = [r for run in runs for r in run["packed"]]
    modes = [m for m in MODES if any(m in r for r in rows + packed_rows)]
    meta = dict(runs[0]["meta"])
    for run in runs[1:]:
        for k in ("threads", "clock", "torch"):
            if run["meta"].get(k) != meta.get(k):
                raise ValueError(
                    f"cannot merge runs with different {k}: {meta.get(k)!r} vs {run['meta'].get(k)!r}"
                )
    summ = summary(rows, modes)
    md = markdown(rows, packed_rows, summ, modes, meta)
    print(md)
    with open(out + ".md", "w") as f:
        f.write(md)
    with open(out + ".json", "w") as f:
        doc = {"meta": meta, "grid": rows, "packed": packed_rows, "summary": summ, "merged": paths}
        json.dump(doc, f, indent=1)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a few small shapes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7, help="interleaved rounds per shape (at least 3)")
    ap.add_argument("--min-rounds", type=int, default=3, help="rounds even when a shape exceeds --budget")
    ap.add_argument("--clock", choices=["wall", "thread"], default="wall",
                    help="wall: perf_counter. thread: CPU time of the calling thread (needs --threads 1); "
                         "it excludes time the thread spent descheduled, so it is robust on a shared machine")
    ap.add_argument("--budget", type=float, default=20.0,
                    help="seconds per shape and mode before rounds shrink to --min-rounds")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--providers", nargs="+", choices=PROVIDERS[1:], default=list(PROVIDERS[1:]),
                    help="baselines to compare against (scripted always runs)")
    ap.add_argument("--only", nargs="*", default=[],
                    help="keep shapes whose id contains all of these substrings")
    ap.add_argument("--no-grid", action="store_true", help="skip the padded grid")
    ap.add_argument("--no-packed", action="store_true", help="skip the packed-vs-padded table")
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="do not measure: combine the rows of earlier runs' JSON files into one table")
    default_out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "cpu_ratios")
    ap.add_argument("--out", default=default_out,
                    help="output path prefix: writes PREFIX.md and PREFIX.json")
    args = ap.parse_args(argv)
    if args.threads < 1 or args.rounds < 1 or args.min_rounds < 1:
        ap.error("--threads, --rounds and --min-rounds must be positive")
    if args.clock == "thread" and args.threads != 1:
        ap.error("--clock thread measures one thread's CPU time, so it needs --threads 1")
    global CLOCK, MIN_ROUNDS
    CLOCK = args.clock
    MIN_ROUNDS = args.min_rounds
    if args.merge:
        return merge(args.merge, args.out)
    warnings.filterwarnings("ignore", message=".*TorchScript.*")
    # mkldnn.flags() re-sets oneDNN's TF32 switch each call, and warns that it is GPU-only.
    warnings.filterwarnings("ignore", message=".*TF32 acceleration on top of oneDNN.*")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    meta = {
        "threads": torch.get_num_threads(), "clock": args.clock, "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    keep = lambda s: all(k in s.id for k in args.only)  # noqa: E731
    grid = [] if args.no_grid else [s for s in shapes_of(QUICK_GRID if args.quick else GRID) if keep(s)]
    pgrid = [] if args.no_packed else [
        s for s in shapes_of(QUICK_PACKED if args.quick else PACKED_GRID) if keep(s)
    ]
    providers = ["scripted"] + args.providers
    rows, packed_rows = [], []
    for s in grid:
        r = bench_shape(s, args.modes, providers, args.rounds, args.budget)
        rows.append(r)
        ratios = (f"{m}: " + " ".join(f"/{k} {v:.2f}" for k, v in r[m]["ratio"].items()) for m in args.modes)
        print(s.id, " ".join(ratios), flush=True)
    for s in pgrid:
        r = bench_packed(s, args.modes, args.rounds, args.budget)
        packed_rows.append(r)
        ratios = (f"{m}: {r[m]['scripted_packed_over_padded']:.2f}" for m in args.modes)
        print(s.id, "packed/padded", " ".join(ratios), flush=True)
    summ = summary(rows, args.modes)
    md = markdown(rows, packed_rows, summ, args.modes, meta)
    print(md)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".md", "w") as f:
        f.write(md)
    with open(args.out + ".json", "w") as f:
        json.dump({"meta": meta, "grid": rows, "packed": packed_rows, "summary": summ}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
