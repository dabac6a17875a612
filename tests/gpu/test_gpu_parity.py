"""Every Triton tier (forced), the triton backend's own tier choice, ``native``, ``auto``,
``torchscript`` and the eager ``reference`` against nn.LSTM (cuDNN) with copied weights,
per precision: outputs, final states and the gradients of input, h0, c0 and every
parameter under random upstream gradients, judged by the rule in gpu_cases (our error
<= 2 x cuDNN's + slack, against a float64 oracle).

The cases cover packed input, proj_size, bidirectional multi-layer models and the
persistent tier's launch regimes (one program, several, a grid barrier).
"""
import pytest
import torch

import lstm_kernels
from gpu_cases import (CASES, IMPL_IDS, IMPLS, OTHER_IMPLS, PRECISIONS, REQUIRES_GPU, SMALL, assert_rule,
                       case_setup, ordered_pairs, ours_like, run_case, slack, tf32)
from lstm_kernels import dispatch

pytestmark = REQUIRES_GPU

PAIRS = ordered_pairs(CASES)


# Every implementation on one (case, precision) before the next: a run cut short by a time
# budget (benchmarks/gpu_suite.py) still covers every implementation and both axes.
@pytest.mark.parametrize("impl", IMPLS + OTHER_IMPLS, ids=IMPL_IDS + [i for i, _, _ in OTHER_IMPLS])
@pytest.mark.parametrize("case, precision", PAIRS, ids=[f"{p}-{c.id}" for c, p in PAIRS])
def test_matches_cudnn(impl, case, precision):
    name, backend, tier = impl
    setup = case_setup(case, precision)
    with tf32(precision == "float32+tf32"):
        got = run_case(ours_like(setup.cudnn, backend), setup.inputs, tier)
        torch.cuda.synchronize()
    assert_rule(got, setup.oracle, setup.cudnn_err, slack(precision),
                f"{name} {precision} {case.id} vs {setup.versus}")


@pytest.fixture
def fresh_tuning(tmp_path, monkeypatch):
    """Tuning on, into an empty cache of this test's own, forgotten again afterwards."""
    monkeypatch.setenv("LSTM_KERNELS_TUNE", "1")
    monkeypatch.setenv("LSTM_KERNELS_CACHE_DIR", str(tmp_path))
    dispatch.clear_cache()
    yield
    dispatch.clear_cache()


@pytest.mark.parametrize("precision", PRECISIONS)
def test_measured_auto_matches_cudnn_cold_and_cached(precision, fresh_tuning):
    """``auto`` measuring on a fresh cache: the first call times its candidates, the second
    reuses the choice (``explain`` says so too); both results pass the rule."""
    setup = case_setup(SMALL, precision)
    module = ours_like(setup.cudnn, "auto")
    reasons = []
    with tf32(precision == "float32+tf32"):
        for _ in range(2):
            got = run_case(module, setup.inputs)
            reasons.append(dispatch.last_choice().reason)
            assert_rule(got, setup.oracle, setup.cudnn_err, slack(precision), f"auto {precision} {SMALL.id}")
        choice = lstm_kernels.explain(module, setup.inputs[0], setup.inputs[1:3])
    assert reasons == ["measured", "cached"], reasons
    assert choice.reason == "cached" and choice.backend.split(":")[0] in ("native", "triton"), choice
