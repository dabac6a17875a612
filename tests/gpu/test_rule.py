"""The GPU tests' rule and case list, checked on CPU (these tests are not marked gpu): the
rule rejects what it must, so a passing GPU run means something."""
import torch

from gpu_cases import (BARRIER, CASES, FACTOR, PRECISIONS, assert_rule, differing, ordered_pairs, rel_err,
                       slack)


def _fails(*args) -> str:
    try:
        assert_rule(*args)
    except AssertionError as e:
        return str(e)
    return ""


def test_rule_accepts_within_and_rejects_beyond_the_bound():
    oracle = {"out": torch.tensor([1.0, 2.0], dtype=torch.float64)}
    exact = {"out": torch.tensor([1.0, 2.0])}
    assert not _fails(exact, oracle, {"out": 0.0}, 1e-6)
    off = {"out": torch.tensor([1.0, 2.1])}  # relative error 0.05
    assert "out" in _fails(off, oracle, {"out": 0.0}, 1e-6)
    assert not _fails(off, oracle, {"out": 0.025}, 1e-6)  # 2 x cuDNN's 0.025 covers it
    assert "out" in _fails(off, oracle, {"out": 0.02}, 1e-6)
    nan = {"out": torch.tensor([1.0, float("nan")])}
    assert "out" in _fails(nan, oracle, {"out": 0.0}, 1.0)


def test_rule_names_every_failing_tensor():
    oracle = {"out": torch.ones(3, dtype=torch.float64), "h_n": torch.ones(2, dtype=torch.float64)}
    got = {"out": torch.full((3,), 1.5), "h_n": torch.full((2,), 1.5)}
    message = _fails(got, oracle, {"out": 0.0, "h_n": 0.0}, 1e-3)
    assert "out:" in message and "h_n:" in message


def test_relative_error_and_bitwise_comparison():
    assert rel_err(torch.tensor([0.0, 2.0]), torch.tensor([0.0, 4.0], dtype=torch.float64)) == 0.5
    a = {"out": torch.tensor([1.0, 2.0])}
    assert differing(a, {"out": torch.tensor([1.0, 2.0])}) == []
    assert differing(a, {"out": torch.tensor([1.0, 2.0 + 2**-20])}) == ["out"]
    assert FACTOR == 2.0


def test_slacks_come_from_the_central_table_and_grow_as_precision_drops():
    values = [slack(p) for p in ("float32", "float32+tf32", "float16", "bfloat16")]
    assert values == sorted(values) and all(v > 0 for v in values)


def test_cases_cover_packed_projection_bidirectional_and_the_barrier_shape():
    assert any(c.packed for c in CASES) and any(c.proj for c in CASES)
    assert any(c.bi and c.layers > 1 for c in CASES)
    assert any(c.H >= 1024 and c.B >= 64 for c in CASES)
    assert BARRIER.B >= 64 and BARRIER.H >= 1024 and BARRIER.packed and BARRIER.bi
    assert CASES[3].id == "B3-T7-I10-H33-L2-bi-proj17"
    first_round = ordered_pairs(CASES)[:len(CASES)]
    assert {p for _, p in first_round} == set(PRECISIONS)
    assert len(ordered_pairs(CASES)) == len(CASES) * len(PRECISIONS)
