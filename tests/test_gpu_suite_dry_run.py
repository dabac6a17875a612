"""The GPU suite's CPU rehearsal (``benchmarks/gpu_suite.py --dry-run``) writes a complete,
well-formed result file, and the floor model it reports behaves like a floor.

The dry run is the same code as the GPU run (kernels through the Triton interpreter,
nn.LSTM on CPU in place of cuDNN), so a broken suite shows up here, not on the GPU.
"""
import glob
import json
import math
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
TOP_KEYS = {"device", "date", "torch", "triton", "cudnn", "tf32", "rates", "correctness", "ecosystem", "rows"}
ECOSYSTEM_CHECKS = {"determinism", "deterministic_algorithms", "eval_backward", "autocast", "compile"}


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


def test_dry_run_checks_every_backend_and_tier_and_never_aborts(dry_run_result):
    result, stdout = dry_run_result
    labels = set(result["environment"]["backends"]) | {f"triton:{t}" for t in result["environment"]["tiers"]}
    checked = {e["backend"] for e in result["correctness"]}
    assert labels <= checked
    for e in result["correctness"]:
        assert e["status"] in ("pass", "fail", "error"), e
        assert e["dtype"] in ("float32", "float16", "bfloat16")
        if e["status"] == "error":
            assert e["traceback"].strip(), e
        else:
            compared = {"out", "h_n", "c_n", "grad_input", "grad_h0", "grad_c0", "grad_weight_hh_l0"}
            assert set(e["errors"]) >= compared
            for v in e["errors"].values():
                assert math.isclose(v["bound"], 2 * v["cudnn"] + e["atol"])
    # The rule must not reject the eager oracle itself: if it did, every verdict would be noise.
    reference = [e for e in result["correctness"] if e["backend"] == "reference"]
    assert reference and all(e["status"] == "pass" for e in reference), reference
    assert {e["dtype"] for e in result["correctness"]} == {"float32", "float16", "bfloat16"}
    assert "correctness (our error" in stdout


def test_dry_run_ecosystem_checks_exist_and_pass(dry_run_result):
    result, stdout = dry_run_result
    assert "triton" in result["environment"]["backends"], "the dry run needs the interpreted triton backend"
    entries = result["ecosystem"]
    failed = [e for e in entries if e["status"] != "pass"]
    assert not failed, failed
    assert {e["check"] for e in entries if e["backend"] == "triton"} == ECOSYSTEM_CHECKS
    # Every forced tier gets every check but the one deterministic-mode run, unless the
    # budget ran out (recorded, never silent).
    if not [s for s in result["skipped"] if s.get("section") == "ecosystem"]:
        for tier in result["environment"]["tiers"]:
            checks = {e["check"] for e in entries if e["backend"] == f"triton:{tier}"}
            assert checks == ECOSYSTEM_CHECKS - {"deterministic_algorithms"}, (tier, checks)

    det = [e for e in entries if e["check"] == "determinism"]
    assert {e["dtype"] for e in det} == {"float32", "bfloat16"}
    assert any(e["case"].endswith("-packed") for e in det)
    assert all(e["compared"] >= 7 for e in det)  # out, h_n, c_n, 3 input grads, parameters
    # The persistent tier's check runs several programs per step (barrier-free when interpreted).
    assert max(e.get("programs_per_step") or 0 for e in det if e["backend"] == "triton:persistent") > 2
    algos = [e for e in entries if e["check"] == "deterministic_algorithms"]
    assert len(algos) == 1 and algos[0]["changes_result"] is False
    for e in entries:
        if e["check"] == "compile":
            assert e["graphs"] == 1 and e["graph_breaks"] == 0, e
            assert e["max_err"] <= e["atol"]
        elif e["check"] == "eval_backward":
            assert set(e["nn_lstm_eval_backward"]) == {"refused", "error"}
            assert e["errors"]["grad_weight_hh_l1"]["ours"] <= e["errors"]["grad_weight_hh_l1"]["bound"]
        elif e["check"] == "autocast":
            assert e["dtype"] == "bfloat16"  # CPU autocast: bfloat16 only
            assert e["dtypes"] == e["nn_lstm_dtypes"]
    assert {e["dtype"] for e in entries if e["check"] == "compile"} == {"float32", "bfloat16"}
    assert "ecosystem (determinism" in stdout
    assert stdout.index("== ecosystem") < stdout.index("== timing")


def test_ecosystem_records_a_crashing_check_and_goes_on(monkeypatch):
    """A check that raises becomes a failed entry with its traceback; later checks still run."""
    gpu_suite = import_gpu_suite()
    cfg = gpu_suite.dry_config()
    case = cfg.compile_case
    monkeypatch.setattr(gpu_suite, "ecosystem_plan", lambda cfg: [
        ("compile", "triton", "float32", case), ("eval_backward", "triton", "float32", case)])

    def broken(*args):
        raise RuntimeError("compiler exploded")

    monkeypatch.setattr(gpu_suite, "_check_compile", broken)
    monkeypatch.setattr(gpu_suite, "_check_eval_backward", lambda *args: "")
    monkeypatch.setattr(gpu_suite, "_case_setup", lambda *args: {})
    monkeypatch.setattr(gpu_suite.lstm_kernels, "available_backends", lambda: ["triton"])
    record, skipped = [], []
    clock = gpu_suite.Clock(60.0)
    clock.begin("ecosystem", 60.0)
    gpu_suite.ecosystem(cfg, clock, gpu_suite.Timer("cpu"), False, record, skipped)
    assert [e["status"] for e in record] == ["fail", "pass"]
    assert "compiler exploded" in record[0]["error"] and "Traceback" in record[0]["error"]
    assert skipped == []


def test_ecosystem_rule_and_bitwise_comparison_catch_differences():
    gpu_suite = import_gpu_suite()
    a = {"out": torch.tensor([1.0, 2.0])}
    assert gpu_suite._differing(a, {"out": torch.tensor([1.0, 2.0])}) == []
    assert gpu_suite._differing(a, {"out": torch.tensor([1.0, 2.0 + 2**-20])}) == ["out"]
    oracle = {"out": torch.tensor([1.0, 2.0], dtype=torch.float64)}
    entry = {}
    assert gpu_suite._judge(entry, {"out": torch.tensor([1.0, 2.0])}, oracle, {"out": 0.0}, 1e-6) == ""
    assert "out" in gpu_suite._judge(entry, {"out": torch.tensor([1.0, 2.1])}, oracle, {"out": 0.0}, 1e-6)
    nan = {"out": torch.tensor([1.0, float("nan")])}
    assert "out" in gpu_suite._judge(entry, nan, oracle, {"out": 0.0}, 1.0)
    assert entry["errors"]["out"]["bound"] == 1.0


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
    assert any(c["packed"] for c in cfg.correctness_cases)
    assert any(c["H"] >= 1024 and c["B"] >= 64 for c in cfg.correctness_cases)
    order = gpu_suite.correctness_order(cfg.correctness_cases)
    first_round = order[:len(cfg.correctness_cases)]
    assert {d for _, d in first_round} == set(gpu_suite.DTYPES)
    # The ecosystem section's time comes out of the timing budget: the run's length is unchanged.
    assert sum(cfg.budgets.values()) == 15 + 120 + 150
    assert cfg.budgets["ecosystem"] >= 30 and cfg.autocast_dtypes == ("float16", "bfloat16")
    assert any(c.get("labels") == ("triton:persistent",) and c["B"] >= 64 and c["H"] >= 1024 and c["packed"]
               for c in cfg.determinism_cases)


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


def test_dry_run_with_variant_labels_checks_them(tmp_path):
    """--only takes the variant labels (a persistent change switched off, fused_step replayed
    from CUDA graphs; on CPU the latter runs eagerly) and checks them like any backend."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    labels = ["triton:fused_step/cuda-graphs", "triton:persistent/h-in-memory"]
    run = subprocess.run([sys.executable, SUITE, "--dry-run", "--out", str(tmp_path), "--only", ",".join(labels)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    (path,) = glob.glob(os.path.join(tmp_path, "*.json"))
    with open(path) as f:
        result = json.load(f)
    checked = [e for e in result["correctness"] if e["backend"] in labels]
    assert {e["backend"] for e in checked} == set(labels)
    assert all(e["status"] == "pass" for e in checked), checked
