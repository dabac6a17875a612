"""The GPU suite's CPU rehearsal (``benchmarks/gpu_suite.py --dry-run``) writes a complete,
well-formed result file, and the floor model it reports behaves like a floor.

The dry run is the same code as the GPU run (kernels through the Triton interpreter,
nn.LSTM on CPU in place of cuDNN), so a broken suite shows up here, not on the GPU.
"""
import glob
import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import import_gpu_suite
from lstm_kernels import roofline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE = os.path.join(ROOT, "benchmarks", "gpu_suite.py")

ROW_KEYS = {"mode", "T", "B", "I", "H", "layers", "bidirectional", "dtype", "backend", "ms", "cudnn_ms",
            "max_err", "floor_ms"}
TOP_KEYS = {"device", "date", "torch", "triton", "cudnn", "tf32", "rates", "correctness", "tests", "rows"}


@pytest.fixture(scope="module")
def dry_run_result(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_suite")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the script must set it itself
    run = subprocess.run([sys.executable, SUITE, "--dry-run", "--out", str(out)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    files = glob.glob(os.path.join(out, "*.json"))
    assert len(files) == 1, files
    with open(files[0]) as f:
        return json.load(f), run.stdout


def test_dry_run_writes_the_documented_schema(dry_run_result):
    result, _ = dry_run_result
    assert TOP_KEYS <= set(result)
    assert result["dry_run"] is True
    assert result["torch"] == torch.__version__
    assert isinstance(result["tf32"], bool)
    assert result["rates"]["hbm_gbps"] > 0 and result["rates"]["matmul_tflops"] > 0
    assert isinstance(result["skipped"], list)
    assert result["elapsed_s"]["total"] > 0


def test_dry_run_runs_the_gpu_tests_and_records_each(dry_run_result):
    """The correctness section is tests/gpu under pytest: one entry per test, and on CPU every
    one of them skipped with its reason (none errors at collection)."""
    result, stdout = dry_run_result
    entries = result["correctness"]
    assert len(entries) >= 20, result["tests"]
    assert len({e["test"] for e in entries}) == len(entries)
    assert all(e["test"].startswith("tests/gpu/") for e in entries)
    assert {e["status"] for e in entries} == {"skip"}, [e for e in entries if e["status"] != "skip"][:3]
    assert all(e["message"] and ("CUDA" in e["message"] or "TRITON_INTERPRET" in e["message"])
               for e in entries)
    summary = result["tests"]
    assert summary["TRITON_INTERPRET"] == "1"
    assert summary["counts"] == {"pass": 0, "fail": 0, "error": 0, "skip": len(entries)}
    # One child per group, parity first; every listed file ran to its end.
    assert len(summary["runs"]) == len(gpu_suite_groups())
    assert "tests/gpu/test_gpu_parity.py" in summary["runs"][0]["command"]
    for run in summary["runs"]:
        assert run["returncode"] == 0 and run["stopped"] is None, run
        assert "-m" in run["command"] and "gpu" in run["command"]
    assert sum(r["counts"]["skip"] for r in summary["runs"]) == len(entries)
    functions = {e["test"].partition("::")[2].partition("[")[0] for e in entries}
    assert {"test_matches_cudnn", "test_two_runs_are_bitwise_equal",
            "test_deterministic_mode_changes_nothing", "test_compile_fullgraph_matches_eager",
            "test_autocast_follows_nn_lstm", "test_backward_in_eval_mode"} <= functions
    assert "correctness (tests/gpu" in stdout and "skipped because: " in stdout
    assert stdout.index("== correctness") < stdout.index("== timing")


GPU_TESTS = """
import time
import pytest


@pytest.mark.gpu
def test_passes():
    pass


@pytest.mark.gpu
def test_fails():
    assert 1 == 2, "one is not two"


@pytest.fixture
def broken():
    raise RuntimeError("fixture exploded")


@pytest.mark.gpu
def test_errors(broken):
    pass


@pytest.mark.gpu
@pytest.mark.skip(reason="not today")
def test_skipped():
    pass


def test_not_marked_gpu_is_deselected():
    pass


@pytest.mark.gpu
def test_hangs():
    time.sleep(600)
"""


def test_correctness_section_records_every_outcome_and_stops_a_hung_test(tmp_path):
    """Pass, fail (with its traceback), error, skip (with its reason) each become an entry;
    a test that never finishes is stopped after hang_s and the stop is recorded."""
    gpu_suite = import_gpu_suite()
    path = tmp_path / "test_outcomes.py"
    path.write_text(GPU_TESTS)
    cfg = gpu_suite.dry_config()
    cfg.hang_s = 15.0  # pytest's start-up and the four quick tests fit well inside
    clock = gpu_suite.Clock(120.0)
    clock.begin("correctness", 120.0)
    record, skipped = [], []
    summary = gpu_suite.run_tests(cfg, clock, record, skipped, paths=(str(path),))
    status = {e["test"].rpartition("::")[2]: e for e in record}
    assert {k: e["status"] for k, e in status.items()} == {
        "test_passes": "pass", "test_fails": "fail", "test_errors": "error", "test_skipped": "skip"}
    assert status["test_skipped"]["message"] == "not today"
    assert "one is not two" in status["test_fails"]["traceback"]
    assert "fixture exploded" in status["test_errors"]["traceback"]
    assert summary["stopped"] == f"no test finished for {cfg.hang_s:.0f} s"
    assert skipped == [{"section": "correctness", "reason": summary["stopped"], "paths": [str(path)],
                        "tests_finished": 4, "after": record[-1]["test"]}]
    assert summary["counts"] == {"pass": 1, "fail": 1, "error": 1, "skip": 1}


def test_correctness_section_stops_at_its_deadline_and_says_so(tmp_path):
    """A group past its share of the budget is interrupted like a hung one, its finished
    tests kept; the next group does not start once the section's budget is spent."""
    gpu_suite = import_gpu_suite()
    path = tmp_path / "test_outcomes.py"
    path.write_text(GPU_TESTS)
    cfg = gpu_suite.dry_config()
    clock = gpu_suite.Clock(120.0)
    clock.begin("correctness", 120.0)
    record, skipped = [], []
    summary = gpu_suite.run_tests(cfg, clock, record, skipped, paths=(str(path),),
                                  deadline=gpu_suite.time.perf_counter() + 20.0)
    assert summary["stopped"] == "time budget spent" and len(record) == 4
    assert skipped[0]["reason"] == "time budget spent"
    clock.begin("correctness", 0.0)
    skipped.clear()
    assert gpu_suite.correctness(cfg, clock, record, skipped)["runs"] == []
    assert [s["paths"] for s in skipped] == [list(p) for p, _ in gpu_suite.TEST_GROUPS]


def test_test_summary_prints_failures_with_or_without_their_text(capsys):
    """A test stopped before the JUnit XML was written has no traceback; a child that never
    started leaves no runs: the final summary must still print."""
    gpu_suite = import_gpu_suite()
    parity = "tests/gpu/test_gpu_parity.py::test_matches_cudnn"
    crash = "Traceback (most recent call last):\nRuntimeError: CUDA error: an illegal memory access"
    record = [{"test": parity + "[a]", "status": "fail", "message": None},
              {"test": parity + "[b]", "status": "error", "message": None, "traceback": crash},
              {"test": "tests/gpu/test_gpu_cell.py::test_cell_matches_cudnn[c]", "status": "skip",
               "message": "needs a CUDA GPU"}]
    gpu_suite.print_test_summary(record, {"error": "Traceback ...\nOSError: no python"})
    out = capsys.readouterr().out
    assert "FAIL tests/gpu/test_gpu_parity.py::test_matches_cudnn[a]" in out
    assert "ERROR tests/gpu/test_gpu_parity.py::test_matches_cudnn[b]: RuntimeError: CUDA error" in out
    assert "skipped because: needs a CUDA GPU" in out
    assert "test_matches_cudnn" in out and "test_cell_matches_cudnn" in out


def gpu_suite_groups():
    return import_gpu_suite().TEST_GROUPS


def test_the_suite_runs_every_gpu_test_file():
    """A file added to tests/gpu without being listed would silently never run on a GPU."""
    gpu_suite = import_gpu_suite()
    listed = {os.path.basename(p) for p in gpu_suite.TEST_PATHS}
    present = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "tests", "gpu", "test_gpu_*.py"))}
    assert listed == present and len(gpu_suite.TEST_PATHS) == len(listed)


def test_dry_run_timing_rows(dry_run_result):
    result, stdout = dry_run_result
    rows = result["rows"]
    assert rows, result["skipped"]
    for r in rows:
        assert ROW_KEYS <= set(r), r
        assert r["mode"] in ("inference", "training")
        assert r["floor_ms"] > 0
        if r.get("error") is None:
            assert r["ms"] > 0
    cudnn_rows = [r for r in rows if r["backend"] == "nn.LSTM"]
    assert cudnn_rows and all(r["ms"] == r["cudnn_ms"] for r in cudnn_rows)
    # Every shape is timed with nn.LSTM and at least one of ours, side by side.
    shapes = {(r["mode"], r["T"], r["B"], r["H"], r["layers"], r["bidirectional"], r["dtype"]) for r in rows}
    for s in shapes:
        assert len([r for r in rows if (r["mode"], r["T"], r["B"], r["H"], r["layers"], r["bidirectional"],
                                        r["dtype"]) == s]) >= 2
    assert {r["mode"] for r in rows} == {"inference", "training"}
    # native, every tier forced, and auto with a fresh tuning cache before every call
    # ("auto/cold") and with its cache kept ("auto"), beside nn.LSTM on every timed shape.
    tiers = {f"triton:{t}" for t in result["environment"]["tiers"]}
    expected = {"nn.LSTM", "native", "auto/cold", "auto"} | tiers
    for s in shapes:
        labels = {r["backend"] for r in rows if (r["mode"], r["T"], r["B"], r["H"], r["layers"],
                                                  r["bidirectional"], r["dtype"]) == s}
        assert expected <= labels, (s, labels)
    for r in rows:
        if r["backend"] in ("auto/cold", "auto", "native"):
            assert r.get("error") is None and r["max_err"] <= 1e-5, r
    assert "wrote " in stdout


def test_gpu_grid_keeps_every_listed_value():
    gpu_suite = import_gpu_suite()
    cfg = gpu_suite.gpu_config()
    first_pass = cfg.timing_passes[0]  # what a run cut short by its budget still times
    assert {s["B"] for s in first_pass} == {1, 8, 32, 128}
    assert {s["H"] for s in first_pass} == {128, 256, 512, 1024}
    assert {s["T"] for s in first_pass} == {64, 512}
    assert {s["layers"] for s in first_pass} == {1, 2}
    assert {s["bidirectional"] for s in first_pass} == {False, True}
    assert {s["dtype"] for s in first_pass} == {"float32", "float16", "bfloat16"}
    assert {s["mode"] for s in first_pass} == {"inference", "training"}
    # The GPU tests get the time the suite's own correctness and ecosystem checks had: the
    # run's length is unchanged.
    assert sum(cfg.budgets.values()) == 15 + 120 + 150
    assert cfg.budgets["correctness"] >= 150


# ------------------------------------------------------------------ floor model

RATES = dict(hbm_gbps=4000.0, matmul_tflops=700.0)


def _shape(**kw):
    base = dict(mode="inference", T=64, B=32, I=256, H=512, P=None, layers=1, directions=1, dtype="bfloat16")
    base.update(kw)
    return roofline.Shape(**base)


def test_floor_is_the_largest_of_its_terms():
    for s in (_shape(), _shape(B=1, H=128), _shape(B=4096, H=2048, T=4), _shape(mode="training", layers=2)):
        f = roofline.floor(s, **RATES)
        assert f.floor_ms == max(f.compute_ms, f.memory_ms, f.latency_ms)
        assert getattr(f, f"{f.bound}_ms") == f.floor_ms


def test_floor_terms_scale_as_documented():
    s = _shape()
    assert roofline.flops(_shape(mode="training")) == pytest.approx(3 * roofline.flops(s))
    assert roofline.flops(_shape(directions=2)) == pytest.approx(2 * roofline.flops(s))
    assert roofline.flops(_shape(T=128)) == pytest.approx(2 * roofline.flops(s))
    assert roofline.hbm_bytes(_shape(dtype="float32")) > roofline.hbm_bytes(s)
    assert roofline.hbm_bytes(_shape(mode="training")) > roofline.hbm_bytes(s)
    lat = roofline.floor(s, **RATES).latency_ms
    assert roofline.floor(_shape(layers=3), **RATES).latency_ms == pytest.approx(3 * lat)
    assert roofline.floor(_shape(directions=2), **RATES).latency_ms == pytest.approx(lat)  # side by side
    assert roofline.floor(_shape(mode="training"), **RATES).latency_ms == pytest.approx(2 * lat)
    assert lat == pytest.approx(s.T * roofline.STEP_LATENCY_US * 1e-3)


def test_small_batches_are_latency_bound_and_large_ones_are_not():
    assert roofline.floor(_shape(B=1, H=128, T=512), **RATES).bound == "latency"
    assert roofline.floor(_shape(B=8192, H=2048, T=8), **RATES).bound != "latency"


def test_floor_ms_matches_floor():
    s = _shape(mode="training", P=128, layers=2, directions=2)
    assert roofline.floor_ms("training", 64, 32, 256, 512, 128, 2, 2, "bfloat16", **RATES) == \
        roofline.floor(s, **RATES).floor_ms


@pytest.mark.parametrize("kw, exc", [
    (dict(mode="eval"), ValueError), (dict(T=0), ValueError), (dict(directions=3), ValueError),
    (dict(P=512), ValueError), (dict(dtype="int8"), TypeError), (dict(dtype=torch.int32), TypeError),
], ids=["mode", "T0", "directions3", "proj-not-below-H", "dtype-name", "int-dtype"])
def test_shape_rejects_bad_values(kw, exc):
    with pytest.raises(exc):
        _shape(**kw)


def test_floor_rejects_bad_rates():
    with pytest.raises(ValueError, match="hbm_gbps"):
        roofline.floor(_shape(), hbm_gbps=0, matmul_tflops=1.0)
    with pytest.raises(ValueError, match="matmul_tflops"):
        roofline.floor(_shape(), hbm_gbps=1.0, matmul_tflops=float("nan"))


def test_dry_run_with_variant_labels_times_them(tmp_path):
    """--only takes the variant labels (a persistent change switched off, fused_step replayed
    from CUDA graphs; on CPU the latter runs eagerly) and times them beside nn.LSTM, each
    row's forward within float32 rounding of nn.LSTM's."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    labels = ["triton:fused_step/cuda-graphs", "triton:persistent/h-in-memory"]
    run = subprocess.run([sys.executable, SUITE, "--dry-run", "--out", str(tmp_path), "--only", ",".join(labels)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    (path,) = glob.glob(os.path.join(tmp_path, "*.json"))
    with open(path) as f:
        result = json.load(f)
    timed = [r for r in result["rows"] if r["backend"] in labels]
    assert {r["backend"] for r in timed} == set(labels)
    assert all(r.get("error") is None and r["ms"] > 0 and r["max_err"] <= 1e-5 for r in timed), timed
