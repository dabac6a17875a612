"""Smoke tests of ``python -m lstm_kernels.bench``: CLI, JSON schema, chart, grids, error rows.

Dimensions: T sequence length, B batch, H hidden size. The CLI runs on the hidden
``--smoke`` grid (a few seconds); nothing here judges speed.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

import lstm_kernels.scripted  # noqa: F401  (script before conftest poisons torch.empty)
from conftest import tol
from helpers import load_script
from lstm_kernels import bench

ROW_KEYS = {
    "T": int, "B": int, "I": int, "H": int, "layers": int, "bidirectional": bool, "shape": str, "mode": str,
    "provider": str, "samples": int, "calls_per_sample": int,
}
NULLABLE_FLOAT_KEYS = ("ms", "ms_min", "ratio", "tokens_per_s")
ENV_KEYS = ("device", "device_name", "torch", "triton", "lstm_kernels", "threads", "dtype")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One CLI run on the smoke grid; returns (completed process, parsed JSON, PNG path)."""
    out = tmp_path_factory.mktemp("bench")
    json_path, png_path = out / "bench.json", out / "bench.png"
    proc = subprocess.run(
        [sys.executable, "-m", "lstm_kernels.bench", "--smoke", "--threads", "1", "--no-progress",
         "--json", str(json_path), "--plot", str(png_path)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(json_path) as f:
        data = json.load(f)
    return proc, data, png_path


def test_cli_json_schema(smoke_run):
    proc, data, _ = smoke_run
    assert data["schema"] == bench.SCHEMA_VERSION
    assert data["grid"] == "smoke"
    for key in ENV_KEYS:
        assert key in data["environment"], key
    assert data["environment"]["torch"] == torch.__version__
    assert data["environment"]["threads"] == 1
    device = bench.default_device()
    all_provs = bench.providers(device)
    expected = [
        (s.id, m, p.name)
        for s in bench.GRIDS["smoke"]
        for m in bench.MODES
        for p in bench.providers_for(s, all_provs, full=False)
    ]
    assert [(r["shape"], r["mode"], r["provider"]) for r in data["rows"]] == expected
    for row in data["rows"]:
        for key, typ in ROW_KEYS.items():
            assert isinstance(row[key], typ), (key, row)
        assert row["error"] is None, row
        for key in NULLABLE_FLOAT_KEYS:
            assert isinstance(row[key], float) and row[key] > 0, (key, row)
        assert row["tokens_per_s"] * row["ms"] / 1e3 == pytest.approx(row["T"] * row["B"], rel=1e-9)
        assert row["ms_min"] <= row["ms"]
        if row["provider"] == bench.BASELINE:
            assert row["ratio"] == 1.0
    # The table went to stdout, one line per row.
    for shape, mode, provider in expected:
        assert any(shape in line and mode in line and provider in line for line in proc.stdout.splitlines())


def test_cli_providers_on_this_device(smoke_run):
    _, data, _ = smoke_run
    names = {r["provider"] for r in data["rows"]}
    assert {"nn.LSTM", "torchscript", "reference"} <= names
    if not torch.cuda.is_available():
        assert "nn.LSTM-no-onednn" in names
    # Interpreted Triton (conftest sets TRITON_INTERPRET=1 for the test session) is never timed.
    from lstm_kernels._base import triton_interpreting

    if triton_interpreting() or not torch.cuda.is_available():
        assert not any(n.startswith("triton") for n in names)
        if "triton" in lstm_kernels.available_backends():
            assert any("triton: not timed" in note for note in data["notes"])


def test_auto_row_names_its_pick(smoke_run):
    """The auto row says which candidate auto ran, and nothing else claims a pick."""
    proc, data, _ = smoke_run
    auto_rows = [r for r in data["rows"] if r["provider"] == "auto"]
    assert auto_rows and len(auto_rows) == len({(r["shape"], r["mode"]) for r in data["rows"]})
    for r in auto_rows:
        assert r["pick"] in ("native", "torchscript"), r
        assert f"auto ({r['pick']})" in proc.stdout
    assert all(r["pick"] is None for r in data["rows"] if r["provider"] != "auto")


def test_first_call_costs_time_fresh_processes():
    """Three fresh interpreters, each timing its first training step; tuning on in them
    whatever this session sets, and their cache a temporary one."""
    costs = bench.first_call_costs(shape=(4, 2, 3, 5))
    assert set(costs) == {"nn.LSTM", "auto, empty cache", "auto, filled cache"}
    assert all(v > 0 for v in costs.values())
    assert bench.startup_line(costs).startswith("start-up, first training step")


def test_startup_line_reports_auto_beyond_nn_lstm():
    line = bench.startup_line({"nn.LSTM": 1.0, "auto, empty cache": 2.25, "auto, filled cache": 1.5})
    assert "nn.LSTM 1.00 s" in line and "+1.25 s with an empty" in line and "+0.50 s with a filled" in line


def test_cli_plot_is_png(smoke_run):
    _, _, png = smoke_run
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "spec, count",
    [("smoke", len(bench.GRIDS["smoke"])), ("T=4,8 B=1 H=8", 2), ("T=4 B=1,2 H=8 L=1,2 D=1,2 I=3", 8)],
    ids=["named", "spec-T2", "spec-all-axes"],
)
def test_parse_grid(spec, count):
    shapes = bench.parse_grid(spec)
    assert len(shapes) == count
    assert len({s.id for s in shapes}) == count


def test_parse_grid_ids():
    (shape,) = bench.parse_grid("T=7 B=3 H=33 L=2 D=2")
    assert shape.id == "T7-B3-H33-L2-bi"
    assert shape.input_size == 33
    assert bench.parse_grid("T=7 B=3 H=33 I=5")[0].id == "T7-B3-I5-H33-L1-uni"


@pytest.mark.parametrize("spec, needle", [
    ("", "grid must be"), ("medium", "unknown grid"), ("T=4 B=1", "missing H"), ("T=4 B=1 H=x", "integers"),
    ("T=4 B=1 H=8 D=3", "directions"), ("T=0 B=1 H=8", "positive"), ("T=4 T=5 B=1 H=8", "twice"),
    ("T=4 B=1 H=8 Q=2", "bad item"),
], ids=["empty", "unknown-name", "missing-H", "not-int", "D3", "zero", "twice", "unknown-key"])
def test_parse_grid_errors(spec, needle):
    with pytest.raises(ValueError, match=needle):
        bench.parse_grid(spec)


@pytest.mark.parametrize("argv, needle", [
    (["--threads", "0"], "positive integer"), (["--modes", "eval"], "--modes"),
    (["--quick", "--full"], "not allowed"), (["--dtype", "int8"], "invalid choice"),
    (["--grid", "T=4 B=1"], "missing H"),
], ids=["threads0", "bad-mode", "quick-and-full", "bad-dtype", "bad-grid"])
def test_cli_argument_errors(argv, needle, capsys):
    with pytest.raises(SystemExit) as exc:
        bench.parse_args(argv)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("mode", bench.MODES)
def test_providers_compute_the_same_problem(mode):
    """Every provider's step runs the same weights and data, so the timings compare like with like."""
    shape = bench.Shape(4, 2, 5, 2, True)
    device = torch.device("cpu")
    provs = [p for p in bench.providers(device) if p.backend in (None, "torchscript", "reference")]
    outs = {}
    for p in provs:
        with p.context():
            outs[p.name] = bench.make_step(p, shape, mode, device, torch.float64)()
    for name, out in outs.items():
        torch.testing.assert_close(out, outs[bench.BASELINE], **tol(torch.float64), msg=name)


def test_onednn_switch_is_restored():
    before = torch.backends.mkldnn.enabled
    with bench.Provider("nn.LSTM-no-onednn", onednn=False).context():
        assert torch.backends.mkldnn.enabled is False
    assert torch.backends.mkldnn.enabled == before


def test_failing_provider_gives_error_row():
    """A provider that raises is reported in its row (and the command's exit status), not dropped."""
    shape = bench.GRIDS["smoke"][0]
    provs = [bench.Provider(bench.BASELINE), bench.Provider("broken", backend="no-such-backend")]
    rows = bench.measure(shape, "inference", provs, torch.device("cpu"), torch.float32,
                         repeats=1, warmup=1, min_sample_s=0.0)
    base, broken = rows
    assert base["error"] is None and base["ratio"] == 1.0
    assert broken["ms"] is None and broken["ratio"] is None
    assert "no-such-backend" in broken["error"] and broken["error"].startswith("ValueError")


# The README's Quickstart promises that its test command is what CI runs.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _quickstart_commands() -> list[str]:
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    section = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = section.split("```bash\n")[1:]
    assert len(blocks) == 1, "Quickstart must hold exactly one bash block"
    lines = [line for line in blocks[0].split("```", 1)[0].splitlines() if line.strip()]
    assert len(lines) == 2, lines
    return lines


def test_readme_quickstart_matches_ci():
    install_and_bench, install_and_test = _quickstart_commands()
    assert install_and_bench.startswith("pip install torch==2.13.0 -e '.[bench]' && ")
    assert "python -m lstm_kernels.bench --quick" in install_and_bench
    assert install_and_test.startswith("pip install torch==2.13.0 -e '.[test]' && ")
    with open(os.path.join(REPO, ".ci", "run")) as f:
        ci = [line.strip() for line in f if line.strip() and not line.startswith("#")]
    assert install_and_test in ci
    # Both suites, so the README's command covers everything CI runs.
    assert "python -m pytest tests" in install_and_test
    assert "python -m pytest benchmarks --benchmark-disable" in install_and_test


def test_triton_tier_providers_run_their_tier():
    """The per-tier providers listed on CUDA force their tier; checked here through the interpreter, tiny."""
    from lstm_kernels._triton.common import variants

    tiers = bench.triton_tiers()
    assert tiers, "no triton tier is implemented"
    shape = bench.Shape(3, 2, 4)
    device = torch.device("cpu")
    expected = bench.make_step(bench.Provider(bench.BASELINE), shape, "inference", device)()
    for tier in tiers:
        provider = bench.Provider(f"triton[{tier}]", backend="triton", tier=tier)
        with provider.context():
            assert variants.current().tier == tier
            out = bench.make_step(provider, shape, "inference", device)()
        torch.testing.assert_close(out, expected, **tol(torch.float32), msg=tier)
    assert variants.current().tier is None


CPU_RATIOS = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "cpu_ratios.py")


def test_cpu_ratios_classes_cover_the_grid():
    """Every grid shape has exactly one miss class, and every class is used."""
    cpu_ratios = load_script("cpu_ratios")
    from dataclasses import asdict

    classes = [cpu_ratios.shape_class(asdict(s)) for s in cpu_ratios.shapes_of(cpu_ratios.GRID)]
    assert set(classes) == set(cpu_ratios.SHAPE_CLASSES)


def test_cpu_ratios_cli_and_merge(tmp_path):
    """One tiny shape measured (one round), then the merge of its JSON: both write a table
    with the class column and per-class geometric means."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    run = [sys.executable, CPU_RATIOS, "--threads", "1", "--rounds", "1", "--min-rounds", "1",
           "--only", "T16-B1-H64-L1-uni", "--modes", "inference", "--no-packed", "--out", str(tmp_path / "r")]
    proc = subprocess.run(run, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(tmp_path / "r.json") as f:
        doc = json.load(f)
    assert [r["id"] for r in doc["grid"]] == ["T16-B1-H64-L1-uni"]
    assert doc["summary"]["inference/onednn class A"]["n"] == 1
    proc = subprocess.run([sys.executable, CPU_RATIOS, "--merge", str(tmp_path / "r.json"), "--out",
                           str(tmp_path / "m")], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    md = (tmp_path / "m.md").read_text()
    assert "| T16-B1-H64-L1-uni | A |" in md and "inference/onednn class A" in md
