"""benchmarks/saved_state_error.py runs end to end under the interpreter and writes its JSON."""
import json

import pytest

from helpers import load_script

pytestmark = pytest.mark.interpreter


def test_saved_state_error_tiny_run_writes_json(tmp_path):
    script = load_script("saved_state_error")
    out = tmp_path / "e.json"
    assert script.main(["--shapes", "4x2x16", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert {r["dtype"] for r in rows} == {"bfloat16", "float16"}
    for r in rows:
        assert r["torch"] > 0 and r["fp32"] >= 0 and r["storage"] >= 0 and r["storage_worst"]
