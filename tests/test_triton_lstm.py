"""LSTM(backend="triton") against nn.LSTM, through the Triton interpreter on CPU.

The parity grid is the pairwise covering the CPU backends use (``test_parity.py``),
over tiny sizes (H <= 16, T <= 6, B <= 3) so the interpreter, which runs every program
of every per-step launch in Python, keeps the file fast. The triton backend runs with
the "pointwise" tier forced; one test runs its automatic tier choice. Also: the device
checks (a CPU tensor without the interpreter is refused), ``available_backends`` and
what ``backend="auto"`` picks.

Dimensions: T seq len, B batch, I input, H hidden, P = proj_size or H.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import lstm_kernels
import lstm_kernels.scripted  # noqa: F401  (script before conftest poisons torch.empty)
from conftest import tol
from helpers import Config, check_lstm_against_torch, config_id, dtype_id, pairwise
from lstm_kernels import backends
from lstm_kernels._triton.backend import TritonBackend, force_tier

TIER = "pointwise"

# (B, T, I, H): B=1, T=1, odd H, and H=16.
SHAPES = [(3, 4, 5, 7), (1, 1, 3, 5), (1, 5, 4, 9), (3, 1, 2, 3), (2, 6, 3, 16)]

FACTORS = {
    "num_layers": [1, 2],
    "bidirectional": [False, True],
    "batch_first": [False, True],
    "bias": [True, False],
    "proj": [False, True],
    "mode": ["batched", "unbatched", "packed", "packed-sorted-noenforce", "packed-unsorted"],
    "with_hx": [True, False],
    "shape": SHAPES,
    "dtype": [torch.float32, torch.float64],
    "strided": [False, True],
}


def _to_case(row: dict):
    B, T, I, H = row["shape"]
    cfg = Config(
        input_size=I, hidden_size=H, num_layers=row["num_layers"], bias=row["bias"],
        batch_first=row["batch_first"], bidirectional=row["bidirectional"],
        proj_size=max(1, H // 2) if row["proj"] else 0, T=T, B=B, mode=row["mode"],
        with_hx=row["with_hx"], strided=row["strided"],
    )
    return pytest.param(cfg, row["dtype"], id=f"{config_id(cfg)}-{dtype_id(row['dtype'])}")


GRID = [_to_case(row) for row in pairwise(FACTORS, seed=1)]

CORNERS = [
    Config(num_layers=1, T=1, B=1, input_size=1, hidden_size=1),
    Config(num_layers=2, bidirectional=True, proj_size=2, T=1, B=1, hidden_size=5, mode="packed"),
    Config(num_layers=2, bidirectional=True, proj_size=3, T=5, B=3, hidden_size=9, mode="packed-unsorted"),
]

LOW_PRECISION_CASES = [
    Config(num_layers=2, bidirectional=True, proj_size=3, T=4, mode="packed-unsorted"),
    Config(num_layers=1, T=5, B=2, hidden_size=9, batch_first=True),
]

pytestmark = pytest.mark.interpreter


@pytest.fixture
def pointwise_tier():
    with force_tier(TIER):
        yield


@pytest.mark.parametrize("cfg, dtype", GRID)
def test_parity_grid(cfg, dtype, pointwise_tier):
    check_lstm_against_torch(cfg, "triton", dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=dtype_id)
@pytest.mark.parametrize("cfg", CORNERS, ids=config_id)
def test_parity_corners(cfg, dtype, pointwise_tier):
    check_lstm_against_torch(cfg, "triton", dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize("cfg", LOW_PRECISION_CASES, ids=config_id)
def test_parity_low_precision(cfg, dtype, pointwise_tier):
    """Half/bfloat16 storage against a float64 nn.LSTM oracle (error budget set by the reference path)."""
    check_lstm_against_torch(cfg, "triton", dtype)


@pytest.mark.parametrize("proj_size", [0, 3], ids=["noproj", "proj3"])
def test_inference_without_grad(proj_size, pointwise_tier):
    """Under no_grad nothing is saved (the kernels' SAVE=False variants); results are unchanged."""
    cfg = Config(num_layers=2, bidirectional=True, proj_size=proj_size, hidden_size=6, mode="packed-unsorted")
    torch_lstm, ours = check_lstm_against_torch(cfg, "triton", torch.float32, grads=False)
    x = torch.randn(cfg.T, cfg.B, cfg.input_size)
    with torch.no_grad():
        out, (h_n, c_n) = ours(x)
        want, (w_h, w_c) = torch_lstm(x)
    for got, ref in ((out, want), (h_n, w_h), (c_n, w_c)):
        torch.testing.assert_close(got, ref, **tol(torch.float32))


def test_automatic_tier_choice():
    """Without force_tier the backend picks a tier itself; the result is still nn.LSTM's."""
    check_lstm_against_torch(Config(num_layers=1, bidirectional=True, T=3, B=2, hidden_size=6), "triton")


def test_torch_compile_fullgraph(pointwise_tier):
    """The tier's custom ops let Dynamo capture the whole LSTM; results and grads equal eager."""
    torch._dynamo.reset()
    lstm = lstm_kernels.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2, backend="triton")
    compiled = torch.compile(lstm, backend="aot_eager", fullgraph=True)
    x = torch.randn(4, 2, 3, requires_grad=True)
    results = []
    for module in (compiled, lstm):
        out, (h_n, c_n) = module(x)
        (grad_x,) = torch.autograd.grad((out * out).sum() + h_n.sum() + c_n.sum(), [x])
        results.append((out, h_n, c_n, grad_x))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, **tol(torch.float32))


def test_lstm_cell_runs_on_triton(pointwise_tier):
    cell = lstm_kernels.LSTMCell(4, 7, backend="triton")
    ref = nn.LSTMCell(4, 7)
    ref.load_state_dict(cell.state_dict())
    x, h0, c0 = torch.randn(3, 4), torch.randn(3, 7), torch.randn(3, 7)
    h, c = cell(x, (h0, c0))
    w_h, w_c = ref(x, (h0, c0))
    torch.testing.assert_close(h, w_h, **tol(torch.float32))
    torch.testing.assert_close(c, w_c, **tol(torch.float32))


def test_available_backends_lists_triton_under_the_interpreter():
    assert backends.triton_interpreting()
    assert "triton" in lstm_kernels.available_backends()


def test_auto_picks_triton_only_for_cuda_tensors():
    assert backends.resolve("auto", torch.device("cpu")).name == "torchscript"
    assert isinstance(backends.resolve("triton", torch.device("cpu")), TritonBackend)
    # Resolution needs no GPU: it only looks at the device type.
    assert isinstance(backends.resolve("auto", torch.device("cuda", 0)), TritonBackend)


_NO_INTERPRETER_SCRIPT = """
import os
import torch
import lstm_kernels
lstm = lstm_kernels.LSTM(3, 4, backend="triton")
print("available:", lstm_kernels.available_backends())
for value in (None, "0"):
    if value is not None:
        os.environ["TRITON_INTERPRET"] = value
    try:
        lstm(torch.randn(2, 1, 3))
    except RuntimeError as e:
        print(f"TRITON_INTERPRET={value}: RuntimeError: {e}")
    else:
        print(f"TRITON_INTERPRET={value}: no error")
"""


def test_cpu_tensor_without_interpreter_is_refused():
    """backend='triton' on a CPU tensor needs the interpreter: a clear RuntimeError otherwise."""
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    root = str(Path(lstm_kernels.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([root] + [p for p in [env.get("PYTHONPATH")] if p])
    res = subprocess.run(
        [sys.executable, "-c", _NO_INTERPRETER_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    available, unset, zero = lines[0], lines[1], lines[2]
    for line in (unset, zero):
        assert "RuntimeError:" in line and "CUDA GPU" in line and "TRITON_INTERPRET=1" in line, res.stdout
    assert "was not '1'" in zero, res.stdout
    if not torch.cuda.is_available():
        assert "'triton'" not in available, res.stdout
