"""Gradient error of the persistent tier with 16-bit saved state against fp32 saved state.

    python benchmarks/saved_state_error.py                 # GPU if there is one, else the interpreter
    python benchmarks/saved_state_error.py --json out.json

For each 16-bit dtype and shape, the training gradients of the persistent tier with its saved
gates and cell states in the model's dtype (for bf16 switched on here: off by default) and
in fp32 (the "saved-fp32" variant), and of torch's own LSTM in the same dtype are compared with a float64 nn.LSTM holding the
same weights. Errors are max |grad - oracle| / max |oracle| per tensor, the worst tensor
reported; the flash-attention rule the tests apply is ours <= 2 x torch's (+ slack).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton is imported

import lstm_kernels  # noqa: E402
from lstm_kernels._triton.backend import force_tier  # noqa: E402
from lstm_kernels._triton.common import variants  # noqa: E402

DTYPES = (torch.bfloat16, torch.float16)


def _grads(module, x, g):
    x = x.detach().requires_grad_()
    out, (h, c) = module(x)
    loss = (out * g.to(out)).sum() + h.float().sum() + c.float().sum()
    params = [p for _, p in module.named_parameters()]
    grads = torch.autograd.grad(loss, [x] + params)
    names = ["input"] + [n for n, _ in module.named_parameters()]
    return dict(zip(names, (t.double() for t in grads)))


def worst_error(got: dict, want: dict) -> tuple[float, str]:
    errs = {k: ((got[k] - want[k]).abs().max() / want[k].abs().max().clamp_min(1e-30)).item() for k in want}
    name = max(errs, key=errs.get)
    return errs[name], name


def measure(T: int, B: int, H: int, dtype: torch.dtype, device: str, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    oracle = torch.nn.LSTM(H, H, dtype=torch.float64, device=device)
    torch_lp = torch.nn.LSTM(H, H, dtype=dtype, device=device)
    torch_lp.load_state_dict({k: v.to(dtype) for k, v in oracle.state_dict().items()})
    ours = lstm_kernels.LSTM.from_torch(torch_lp, backend="triton")
    x = torch.randn(T, B, H, device=device).to(dtype)
    g = torch.randn(T, B, H, device=device)
    want = _grads(oracle, x.double(), g.double())
    row = dict(T=T, B=B, H=H, dtype=str(dtype).replace("torch.", ""))
    row["torch"], _ = worst_error(_grads(torch_lp, x, g), want)
    with force_tier("persistent"), variants.use(dataclasses.replace(variants.current(), saved_bf16=True)):
        row["storage"], row["storage_worst"] = worst_error(_grads(ours, x, g), want)
        with variants.variant("saved-fp32"):
            row["fp32"], _ = worst_error(_grads(ours, x, g), want)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=None)
    parser.add_argument("--shapes", default="24x4x32,128x4x32,128x8x64",
                        help="TxBxH, comma-separated (default small enough for the interpreter)")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    print(f"{'dtype':9} {'T':>4} {'B':>3} {'H':>4}  {'torch':>8} {'saved fp32':>10} {'saved 16-bit':>12}  "
          "16-bit / torch  worst tensor")
    for shape in args.shapes.split(","):
        T, B, H = (int(v) for v in shape.split("x"))
        for dtype in DTYPES:
            r = measure(T, B, H, dtype, device)
            rows.append(r)
            print(f"{r['dtype']:9} {T:4d} {B:3d} {H:4d}  {r['torch']:8.2e} {r['fp32']:10.2e} {r['storage']:12.2e}  "
                  f"{r['storage'] / r['torch']:14.2f}  {r['storage_worst']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name() if device == "cuda" else "cpu (interpreter)",
                       "torch": torch.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
