"""benchmarks/auto_ratios.py runs end to end on its quick grid and records auto's pick."""
import json

from helpers import load_script


def test_auto_ratios_quick_run_writes_json_and_table(tmp_path, monkeypatch):
    # The script turns tuning on with a cache of its own; monkeypatch puts both back.
    monkeypatch.setenv("LSTM_KERNELS_TUNE", "0")
    monkeypatch.setenv("LSTM_KERNELS_CACHE_DIR", str(tmp_path / "cache"))
    auto_ratios = load_script("auto_ratios")
    out = tmp_path / "a.json"
    assert auto_ratios.main(["--quick", "--no-first-call", "--modes", "inference", "--rounds", "3",
                             "--budget", "0.1", "--threads", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert {r["id"] for r in data["rows"]} >= {"T24-B2-H48-L1", "T24-B2-H48-L1-bi"}
    for r in data["rows"]:
        assert r["auto_pick"] in ("native", "torchscript") and r["ratio"]["auto"] > 0
    assert "inference/padded float32/auto" in data["summary"]
    assert "| shape | mode | auto |" in (tmp_path / "a.md").read_text()
    dispatch = auto_ratios.dispatch
    dispatch.clear_cache()
