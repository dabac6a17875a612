"""Hypothesis fuzzing: random configurations for every backend against nn.LSTM.

Each example draws layers, directions, proj_size, bias, batch_first, how the input is
presented (padded, unbatched, packed sorted/unsorted), whether (h0, c0) is given, the
dtype and tiny sizes, and compares outputs, states and every gradient with nn.LSTM
(``helpers.check_lstm_against_torch``). Examples are derandomized so CI is repeatable.

Dimensions: T seq len, B batch, I input, H hidden, P = proj_size or H.
"""
from __future__ import annotations

import importlib.util

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from helpers import MODES, Config, check_lstm_against_torch
from lstm_kernels.backends import available_backends

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
# The triton tiers that run small shapes (persistent, fused_step) take no float64.
TRITON_DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def triton_ready() -> bool:
    """True when the triton backend can run here (interpreter) and its first tier exists."""
    return (
        "triton" in available_backends()
        and importlib.util.find_spec("lstm_kernels._triton.pointwise") is not None
    )


@st.composite
def configs(draw, max_T: int, max_H: int):
    hidden = draw(st.integers(1, max_H))
    return Config(
        input_size=draw(st.integers(1, 4)),
        hidden_size=hidden,
        num_layers=draw(st.integers(1, 2)),
        bias=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bidirectional=draw(st.booleans()),
        proj_size=draw(st.integers(0, hidden - 1)) if hidden > 1 and draw(st.booleans()) else 0,
        T=draw(st.integers(1, max_T)),
        B=draw(st.integers(1, 4)),
        mode=draw(st.sampled_from(MODES)),
        with_hx=draw(st.booleans()),
        strided=draw(st.booleans()),
    )


COMMON = dict(
    deadline=None,
    derandomize=True,
    database=None,
    # No shrinking: a failure reports the drawn example as is, within the CI time budget.
    phases=[Phase.explicit, Phase.generate],
    # conftest's autouse fixtures (NaN-filled torch.empty, seeding) hold for every example
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _check(cfg: Config, backend: str, dtype: torch.dtype, seed: int) -> None:
    torch.manual_seed(seed)
    check_lstm_against_torch(cfg, backend, dtype)


@pytest.mark.parametrize("backend", ["reference", "torchscript"])
@settings(max_examples=25, **COMMON)
@given(cfg=configs(max_T=6, max_H=9), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**31 - 1))
def test_fuzz_cpu_backends_match_nn_lstm(backend, cfg, dtype, seed):
    _check(cfg, backend, dtype, seed)


@pytest.mark.skipif(not triton_ready(), reason="the triton backend is not available here")
@pytest.mark.interpreter
@settings(max_examples=12, **COMMON)
@given(cfg=configs(max_T=3, max_H=5), dtype=st.sampled_from(TRITON_DTYPES), seed=st.integers(0, 2**31 - 1))
def test_fuzz_triton_matches_nn_lstm(cfg, dtype, seed):
    _check(cfg, "triton", dtype, seed)
