"""Shared test configuration: interpreter mode, the tolerance table, NaN poisoning.

TRITON_INTERPRET must be set before anything imports lstm_kernels (or triton), so
Triton kernels run on CPU tensors through the interpreter in CI.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
# backend="auto" uses its static table in tests (timing inside every parity test would
# cost minutes on CI's 2 cores) and never the user's cache; tests/test_dispatch.py turns
# tuning on explicitly, with its own cache directory.
os.environ["LSTM_KERNELS_TUNE"] = "0"
if "LSTM_KERNELS_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["LSTM_KERNELS_CACHE_DIR"] = tempfile.mkdtemp(prefix="lstm_kernels_test_cache_")

import pytest  # noqa: E402
import torch  # noqa: E402

# Script the TorchScript scan now: scripting it later, inside a test, would try to
# compile the NaN-poisoning torch.empty replacement below.
import lstm_kernels.scripted  # noqa: E402,F401

# (atol, rtol) per dtype, for outputs/states and for gradients, against nn.LSTM with
# copied weights. float16/bfloat16 compare against an fp64 oracle (see tests that use them).
# "gpu" / "gpu_tf32" (rtol unused): the slack of tests/gpu's rule, our error <= 2 x cuDNN's
# error + slack, errors relative to the tensor's largest magnitude (tests/gpu/gpu_cases.py).
# The slack is about two units in the last place of the format the math effectively runs
# in, because cuDNN's own error can be near zero on a tensor where ours is rounding-bound.
TOLERANCES = {
    torch.float64: {"out": (1e-10, 1e-8), "grad": (1e-9, 1e-7)},
    torch.float32: {"out": (1e-5, 1e-4), "grad": (5e-5, 5e-4), "gpu": (2e-5, 0.0),
                    # TF32 matmuls keep 10 mantissa bits.
                    "gpu_tf32": (2e-3, 0.0)},
    torch.float16: {"out": (1e-2, 1e-2), "grad": (3e-2, 3e-2), "gpu": (2e-3, 0.0)},
    torch.bfloat16: {"out": (5e-2, 5e-2), "grad": (1e-1, 1e-1), "gpu": (1.6e-2, 0.0)},
}


def tol(dtype: torch.dtype, kind: str = "out") -> dict:
    atol, rtol = TOLERANCES[dtype][kind]
    return {"atol": atol, "rtol": rtol}


@pytest.fixture(autouse=True)
def poison_empty(monkeypatch):
    """Fill torch.empty / empty_like / new_empty with NaN, so unwritten output elements show up."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        if t.is_floating_point():
            t.fill_(float("nan"))
        return t

    def empty_like(*args, **kwargs):
        t = real_empty_like(*args, **kwargs)
        if t.is_floating_point():
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", empty)
    monkeypatch.setattr(torch, "empty_like", empty_like)
    yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
