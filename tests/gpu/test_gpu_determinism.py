"""Bitwise determinism on a GPU: two identical runs give identical outputs, states and
gradients, and ``torch.use_deterministic_algorithms(True)`` neither raises nor changes a bit."""
import pytest
import torch

from gpu_cases import (BARRIER, CASES, IMPLS, REQUIRES_GPU, SMALL, TRITON_IMPLS, case_setup, differing,
                       ours_like, run_case)

pytestmark = REQUIRES_GPU

PACKED = CASES[5]  # two bidirectional layers, packed
# (impl, case): every implementation on the small cases; the barrier shape (64 hidden blocks
# x 2 directions, several programs per step) for the persistent tier and the automatic one.
PLAN = [(impl, case) for case in (SMALL, PACKED) for impl in IMPLS]
PLAN += [(impl, BARRIER) for impl in TRITON_IMPLS if impl[0] in ("persistent", "triton-auto")]


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
@pytest.mark.parametrize("impl, case", PLAN, ids=[f"{i[0]}-{c.id}" for i, c in PLAN])
def test_two_runs_are_bitwise_equal(impl, case, precision):
    name, backend, tier = impl
    setup = case_setup(case, precision)
    module = ours_like(setup.cudnn, backend)
    first = run_case(module, setup.inputs, tier)
    second = run_case(module, setup.inputs, tier)
    assert len(first) >= 7  # out, h_n, c_n, the three input gradients, parameters
    assert not differing(first, second), f"{name}: differ between identical runs: {differing(first, second)}"


@pytest.mark.parametrize("case", [SMALL, BARRIER], ids=lambda c: c.id)
@pytest.mark.parametrize("impl", TRITON_IMPLS, ids=[i[0] for i in TRITON_IMPLS])
def test_deterministic_mode_changes_nothing(impl, case):
    """Under deterministic algorithms (which also fill new tensors with NaN) the same bits as
    without, twice; the previous setting is restored."""
    name, backend, tier = impl
    setup = case_setup(case, "float32")
    module = ours_like(setup.cudnn, backend)
    plain = run_case(module, setup.inputs, tier)
    was = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first = run_case(module, setup.inputs, tier)
        second = run_case(module, setup.inputs, tier)
    finally:
        torch.use_deterministic_algorithms(was, warn_only=warn_only)
    assert not differing(plain, first), f"{name}: deterministic mode changes {differing(plain, first)}"
    assert not differing(first, second), f"{name}: differ between runs in deterministic mode"
