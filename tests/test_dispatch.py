"""backend="auto": measured choice, cache, static table and its rules."""
import json
import os
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

import lstm_kernels
from lstm_kernels import dispatch
from conftest import tol


@pytest.fixture
def tuning(monkeypatch, tmp_path):
    monkeypatch.setenv("LSTM_KERNELS_TUNE", "1")
    monkeypatch.setenv("LSTM_KERNELS_CACHE_DIR", str(tmp_path))
    dispatch.clear_cache()
    dispatch.reset_warnings()
    yield tmp_path
    dispatch.clear_cache()


def _model():
    return lstm_kernels.LSTM(5, 7, num_layers=2)


def test_measured_then_cached_round_trip(tuning):
    m = _model()
    x = torch.randn(6, 3, 5)
    first = lstm_kernels.explain(m, x)
    assert first.reason == "measured" and first.backend in ("native", "torchscript")
    data = json.loads((tuning / dispatch.CACHE_FILE).read_text())
    assert data[first.key]["backend"] == first.backend
    dispatch.clear_memory()  # a fresh process: only the file remains
    again = lstm_kernels.explain(m, x)
    assert again.reason == "cached" and again.backend == first.backend


def test_corrupt_cache_warns_and_is_rewritten(tuning):
    (tuning / dispatch.CACHE_FILE).write_text("{not json")
    with pytest.warns(RuntimeWarning, match="unreadable tuning cache"):
        choice = lstm_kernels.explain(_model(), torch.randn(4, 2, 5))
    assert choice.reason == "measured"
    assert choice.key in json.loads((tuning / dispatch.CACHE_FILE).read_text())


_WRITER = """
import sys
import time
from lstm_kernels import dispatch
for j in range(5):
    dispatch.write_entries({f"key{sys.argv[1]}-{j}": {"backend": "native", "times_ms": {"native": 1.0}}})
"""


def test_concurrent_writers_keep_every_entry(tuning):
    # Separate interpreters, as DDP ranks are; they import only the package, so nothing
    # here depends on what earlier tests left on sys.path.
    env = dict(os.environ, LSTM_KERNELS_CACHE_DIR=str(tuning))
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(k)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(4)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    data = json.loads((tuning / dispatch.CACHE_FILE).read_text())
    assert {f"key{k}-{j}" for k in range(4) for j in range(5)} <= set(data)


def test_tune_off_uses_static_table(tuning, monkeypatch):
    monkeypatch.setenv("LSTM_KERNELS_TUNE", "0")
    choice = lstm_kernels.explain(_model(), torch.randn(4, 2, 5))
    assert choice.reason.startswith("static") and choice.backend == "native"
    assert not (tuning / dispatch.CACHE_FILE).exists()
    m64 = lstm_kernels.LSTM(5, 7, dtype=torch.float64)
    assert lstm_kernels.explain(m64, torch.randn(4, 2, 5, dtype=torch.float64)).backend == "torchscript"


def test_deterministic_mode_does_not_measure(tuning):
    with _deterministic():
        choice = lstm_kernels.explain(_model(), torch.randn(4, 2, 5))
    assert choice.reason.startswith("static")
    assert not (tuning / dispatch.CACHE_FILE).exists()


class _deterministic:
    def __enter__(self):
        self.prev = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)

    def __exit__(self, *exc):
        torch.use_deterministic_algorithms(self.prev)


def test_user_rng_unaffected_by_tuning(tuning):
    m = lstm_kernels.LSTM(5, 7, num_layers=2, dropout=0.5)
    x = torch.randn(4, 2, 5, requires_grad=True)
    torch.manual_seed(3)
    m(x)
    after_tuned = torch.rand(3)
    torch.manual_seed(3)
    m(x)  # cached now: no timing
    after_cached = torch.rand(3)
    assert torch.equal(after_tuned, after_cached)


@pytest.mark.parametrize("winner", dispatch.candidates(dispatch.Problem(
    torch.device("cpu"), torch.float32, True, 3, 5, 7, 0, 2, 2, True, False, 6)))
def test_auto_matches_nn_lstm_whichever_wins(winner):
    ref = nn.LSTM(5, 7, num_layers=2, bidirectional=True)
    ours = lstm_kernels.LSTM.from_torch(ref)
    x = torch.randn(6, 3, 5, requires_grad=True)
    with dispatch.force(winner):
        b, (hb, cb) = ours(x)
        assert lstm_kernels.explain(ours, x).backend == winner
    a, (ha, ca) = ref(x)
    for got, want in ((b, a), (hb, ha), (cb, ca)):
        torch.testing.assert_close(got, want, **tol(torch.float32))
    gb = torch.autograd.grad(b.sum() + hb.sum(), [x, *ours.parameters()])
    ga = torch.autograd.grad(a.sum() + ha.sum(), [x, *ref.parameters()])
    for got, want in zip(gb, ga):
        torch.testing.assert_close(got, want, **tol(torch.float32, "grad"))


def test_tune_cli_show_and_clear(tuning, capsys):
    from lstm_kernels import tune

    lstm_kernels.explain(_model(), torch.randn(4, 2, 5))
    assert tune.main(["--show"]) == 0
    assert "1 entries" in capsys.readouterr().out
    assert tune.main(["--clear"]) == 0
    assert not (tuning / dispatch.CACHE_FILE).exists()


def _problem():
    return dispatch.Problem(torch.device("cpu"), torch.float32, False, 3, 5, 7, 0, 1, 1, True, False, 6)


def _sleeper(costs):
    """A ``run`` whose call of backend ``b`` sleeps ``costs[b.name]()`` seconds."""
    def run(b):
        time.sleep(costs[b.name]())
    return run


def test_measure_warms_up_before_timing():
    # native's first two calls are slow, as oneDNN's are while it builds its primitives.
    calls = {"native": 0}

    def native():
        calls["native"] += 1
        return 0.05 if calls["native"] <= 2 else 0.001

    times = dispatch.measure(_problem(), ["native", "torchscript"],
                             _sleeper({"native": native, "torchscript": lambda: 0.004}))
    assert min(times, key=times.get) == "native"


def test_measure_survives_a_slow_phase():
    # One slow sample of the faster candidate (another process took the core) neither
    # drops it after the first rounds nor loses it the choice.
    calls = {"native": 0}

    def native():
        calls["native"] += 1
        return 0.03 if calls["native"] == 3 else 0.001

    times = dispatch.measure(_problem(), ["native", "torchscript"],
                             _sleeper({"native": native, "torchscript": lambda: 0.004}))
    assert min(times, key=times.get) == "native"


def test_measure_drops_a_candidate_far_behind():
    times = dispatch.measure(_problem(), ["native", "torchscript"],
                             _sleeper({"native": lambda: 0.001, "torchscript": lambda: 0.02}))
    assert list(times) == ["native"]


def test_cached_choice_follows_clear_cache(tuning):
    m = _model()
    x = torch.randn(6, 3, 5)
    assert lstm_kernels.explain(m, x).reason == "measured"
    assert lstm_kernels.explain(m, x).reason == "cached"
    dispatch.clear_cache()
    assert lstm_kernels.explain(m, x).reason == "measured"


def test_a_failing_candidate_is_left_out_with_a_warning():
    def run(b):
        if b.name == "torchscript":
            raise AssertionError("kernel exploded")  # any exception type, not only RuntimeError
        time.sleep(0.001)

    with pytest.warns(RuntimeWarning, match="leaves out torchscript.*kernel exploded"):
        times = dispatch.measure(_problem(), ["native", "torchscript"], run)
    assert list(times) == ["native"]
