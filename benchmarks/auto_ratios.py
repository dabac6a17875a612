"""CPU: ``backend="auto"`` against nn.LSTM on shapes no other benchmark names.

The promise checked here is "never slower than nn.LSTM": ``auto`` times its candidates
(torch's own kernels as ``native``, the scripted scan) on first sight of a signature and
keeps the winner, so on every shape its time should be nn.LSTM's or better. The grid is
held out on purpose (T, B, H values that ``bench``, ``cpu_ratios`` and the pytest-benchmark
suite do not use), so a static table tuned on those grids cannot pass it by accident.

Providers, each on its own copy of the same weights and input, timed interleaved call by
call in a rotating order (``lstm_kernels.timing``):
    nn.LSTM   torch.nn.LSTM as PyTorch runs it on CPU (oneDNN where it applies)
    auto      lstm_kernels.LSTM(backend="auto"), tuning into an empty cache on its first call
    scripted  lstm_kernels.LSTM(backend="torchscript"), the compiler-free path, tracked on its own
A ratio is provider / nn.LSTM: the median over rounds of the ratio of back-to-back
samples (below 1.0 is faster than nn.LSTM). The JSON keeps every sample and auto's pick.

Besides the padded float32 grid, rows where our paths are meant to win: packed input,
proj_size > 0, float64.

Usage:
    python benchmarks/auto_ratios.py                     # writes benchmarks/results/cpu-auto-<date>.{json,md}
    python benchmarks/auto_ratios.py --quick --out /tmp/a.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import lstm_kernels  # noqa: E402
from lstm_kernels import bench, dispatch, timing  # noqa: E402
from lstm_kernels.timing import geomean  # noqa: E402

HELD_OUT = {"T": [24, 200], "B": [2, 32], "H": [48, 384], "L": [1, 2], "D": [1, 2]}
QUICK = {"T": [24], "B": [2], "H": [48], "L": [1], "D": [1, 2]}
# The grid the other CPU benchmarks name (cpu_ratios.py's 108 shapes), for --grid named.
NAMED = {"T": [16, 128, 512], "B": [1, 16, 64], "H": [64, 256, 512], "L": [1, 2], "D": [1, 2]}
GRIDS = {"held-out": HELD_OUT, "quick": QUICK, "named": NAMED}
# (name, T, B, H, proj, dtype, packed): where the scripted scan is meant to beat nn.LSTM.
EXTRAS = [
    ("packed", 200, 32, 96, 0, torch.float32, True),
    ("proj", 100, 16, 160, 80, torch.float32, False),
    ("float64", 100, 16, 96, 0, torch.float64, False),
]
PROVIDERS = ("nn.LSTM", "auto", "scripted")
MODES = ("inference", "training")


def models(I, H, L, D, proj, dtype):
    ref = nn.LSTM(I, H, L, bidirectional=D == 2, proj_size=proj, dtype=dtype)
    return {
        "nn.LSTM": ref,
        "auto": lstm_kernels.LSTM.from_torch(ref, backend="auto"),
        "scripted": lstm_kernels.LSTM.from_torch(ref, backend="torchscript"),
    }


def paired(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def bench_one(name, T, B, H, L, D, proj, dtype, packed, mode, rounds, budget, clock="wall") -> dict:
    torch.manual_seed(T * 7919 + B * 31 + H)
    mods = models(H, H, L, D, proj, dtype)
    x = torch.randn(T, B, H, dtype=dtype)
    if packed:
        lengths = torch.randint(1, T + 1, (B,))
        lengths[0] = T
        x = pack_padded_sequence(x, lengths.sort(descending=True).values)
    steps = {p: timing.make_step(m, None, mode, x=x) for p, m in mods.items()}
    # warmup=2: the first call scripts (scripted) or tunes (auto); oneDNN builds its
    # primitives over the first two. None of that is the steady state being compared.
    res = timing.time_interleaved(steps, rounds=rounds, min_rounds=3, warmup=2, min_sample_s=0.02,
                                  max_calls_per_sample=1000, budget_s=budget, clock=clock)
    failed = {p: t.error for p, t in res.items() if t.error}
    if failed:
        raise RuntimeError(f"{name} {mode}: {failed}")
    s = {p: t.samples for p, t in res.items()}
    grad = mode == "training"
    with torch.set_grad_enabled(grad):
        xin = x
        if grad and not packed:
            xin = x.detach().requires_grad_(True)
        pick = lstm_kernels.explain(mods["auto"], xin)
    return {
        "id": name, "mode": mode, "T": T, "B": B, "H": H, "L": L, "D": D, "proj": proj,
        "dtype": str(dtype).replace("torch.", ""), "packed": packed,
        "ms": {p: statistics.median(v) * 1e3 for p, v in s.items()},
        "ratio": {p: paired(s[p], s["nn.LSTM"]) for p in PROVIDERS if p != "nn.LSTM"},
        "auto_pick": pick.backend, "auto_reason": pick.reason, "auto_tuning_ms": pick.times_ms,
        "rounds": len(s["nn.LSTM"]), "samples_s": s,
    }


def jobs(grid: str):
    g = GRIDS[grid]
    quick = grid == "quick"
    for T in g["T"]:
        for B in g["B"]:
            for H in g["H"]:
                for L in g["L"]:
                    for D in g["D"]:
                        yield (f"T{T}-B{B}-H{H}-L{L}" + ("-bi" if D == 2 else ""), T, B, H, L, D, 0,
                               torch.float32, False)
    for name, T, B, H, proj, dtype, packed in EXTRAS[:1] if quick else EXTRAS:
        yield (f"{name}-T{T}-B{B}-H{H}" + (f"-P{proj}" if proj else ""), T, B, H, 1, 1, proj, dtype, packed)


def summarize(rows: list[dict]) -> dict:
    out = {}
    for mode in MODES:
        for group, pred in (("padded float32", lambda r: not r["packed"] and not r["proj"]
                             and r["dtype"] == "float32"), ("extras", lambda r: r["packed"] or r["proj"]
                             or r["dtype"] != "float32")):
            rs = [r for r in rows if r["mode"] == mode and pred(r)]
            if not rs:
                continue
            for p in ("auto", "scripted"):
                v = [r["ratio"][p] for r in rs]
                worst = max(rs, key=lambda r: r["ratio"][p])
                out[f"{mode}/{group}/{p}"] = {"geomean": geomean(v), "max": max(v), "worst": worst["id"],
                                              "n": len(v)}
    return out


def markdown(rows, summ, meta) -> str:
    lines = [f"CPU `auto` against nn.LSTM on held-out shapes. {meta['cpu']}, {meta['threads']} threads, "
             f"torch {meta['torch']}. Ratio = provider time / nn.LSTM time, median of paired rounds "
             "(below 1 is faster). Raw samples in the JSON beside this file.", "",
             "| mode | shapes | provider | geomean | max (shape) |", "|---|---|---|---|---|"]
    for k, v in summ.items():
        mode, group, p = k.split("/")
        lines.append(f"| {mode} | {group} ({v['n']}) | {p} | {v['geomean']:.3f} | {v['max']:.3f} ({v['worst']}) |")
    lines += ["", "| shape | mode | auto | scripted | auto's pick | nn.LSTM ms |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['id']} | {r['mode']} | {r['ratio']['auto']:.3f} | {r['ratio']['scripted']:.3f} | "
                     f"{r['auto_pick']} | {r['ms']['nn.LSTM']:.3f} |")
    if meta.get("first_call_s"):
        fc = meta["first_call_s"]
        lines += ["", "First training step in a fresh process (seconds, import included): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in fc.items())]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two shapes and one extra (a smoke run)")
    ap.add_argument("--grid", choices=sorted(GRIDS), default="held-out",
                    help="held-out (default): shapes no other benchmark names; named: cpu_ratios.py's grid")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clock", choices=["wall", "thread"], default="wall",
                    help="thread: CPU time of the calling thread (with --threads 1, immune to other load)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--budget", type=float, default=6.0, help="seconds of sampling per shape and mode")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    ap.add_argument("--no-first-call", action="store_true", help="skip the fresh-process start-up costs")
    ap.add_argument("--out", help="JSON path (a .md table is written beside it)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    # auto tunes into an empty cache of its own: the run measures what a new user gets.
    os.environ["LSTM_KERNELS_CACHE_DIR"] = tempfile.mkdtemp(prefix="lstm_kernels_auto_ratios_")
    os.environ["LSTM_KERNELS_TUNE"] = "1"
    dispatch.clear_cache()
    rows = []
    grid = "quick" if args.quick else args.grid
    for job in jobs(grid):
        for mode in args.modes:
            rows.append(bench_one(*job, mode, args.rounds, args.budget, args.clock))
            r = rows[-1]
            print(f"{r['id']:<28} {mode:<9} auto {r['ratio']['auto']:.3f}  scripted "
                  f"{r['ratio']['scripted']:.3f}  pick {r['auto_pick']}", flush=True)
    summ = summarize(rows)
    meta = {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(), "clock": args.clock,
            "torch": torch.__version__, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "load_avg": os.getloadavg(), "grid": grid, "grid_axes": GRIDS[grid]}
    if not args.no_first_call:
        meta["first_call_s"] = bench.first_call_costs(repeats=2)
    for k, v in summ.items():
        print(f"{k:<40} geomean {v['geomean']:.3f}  max {v['max']:.3f} ({v['worst']})")
    if meta.get("first_call_s"):
        print("first training step, fresh process (s):",
              ", ".join(f"{k} {v:.2f}" for k, v in meta["first_call_s"].items()))
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                   f"cpu-auto-{'' if grid == 'held-out' else grid + '-'}"
                                   f"{datetime.date.today().isoformat()}.json")
    with open(out, "w") as f:
        json.dump({"meta": meta, "summary": summ, "rows": rows}, f, indent=1, default=str)
    with open(os.path.splitext(out)[0] + ".md", "w") as f:
        f.write(markdown(rows, summ, meta))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
