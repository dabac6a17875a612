"""Code paths that only run on a GPU, exercised on CPU through monkeypatching or pure arithmetic.

The GPU suite gets one unattended run per GPU session; these tests cover the parts of it
(and of the persistent tier's launch configuration) that the CPU dry run never reaches.
"""
import pytest
import torch

from helpers import import_gpu_suite
from lstm_kernels._triton.persistent import tiling as persistent


class _Exited(Exception):
    """Stands in for os._exit, which would end the test process."""


def test_watchdog_exits_even_when_writing_the_results_fails(monkeypatch):
    """A save that raises (e.g. the main thread mutating the results mid-dump three times in
    a row) must not end only the watchdog thread and leave a hung run going."""
    gpu_suite = import_gpu_suite()
    exits = []

    def fake_exit(code):
        exits.append(code)
        raise _Exited

    def failing_save(event):
        raise RuntimeError("dictionary changed size during iteration")

    monkeypatch.setattr(gpu_suite.time, "sleep", lambda s: None)
    monkeypatch.setattr(gpu_suite.os, "_exit", fake_exit)
    dog = gpu_suite.Watchdog(gpu_suite.Clock(0.0), hang_s=1e9, hard_s=-1.0)  # past its hard limit at once
    dog.save = failing_save
    with pytest.raises(_Exited):
        dog._watch()
    assert exits == [3]


def test_watchdog_saves_then_exits(monkeypatch):
    gpu_suite = import_gpu_suite()
    saved, exits = [], []

    def fake_exit(code):
        exits.append(code)
        raise _Exited

    monkeypatch.setattr(gpu_suite.time, "sleep", lambda s: None)
    monkeypatch.setattr(gpu_suite.os, "_exit", fake_exit)
    dog = gpu_suite.Watchdog(gpu_suite.Clock(1e9), hang_s=-1.0, hard_s=1e9)  # "no progress" at once
    dog.beat("correctness B64-T6 float32 triton:persistent")
    dog.save = saved.append
    with pytest.raises(_Exited):
        dog._watch()
    assert exits == [3]
    assert saved and saved[0]["section"] == "watchdog" and "persistent" in saved[0]["what"]


@pytest.mark.parametrize("n_sm", [108, 132], ids=["sm108", "sm132"])
def test_persistent_grid_never_exceeds_the_sm_count(n_sm):
    """A grid-barrier launch needs every program resident: NP x NM x D <= SMs, over the GPU
    suite's shapes (B up to 128, H up to 1024, both directions, with and without projection)."""
    for B in (1, 3, 8, 32, 64, 128):
        for H in (33, 48, 64, 128, 256, 512, 1024):
            for P, has_proj in ((H, False), (max(1, H // 2), True)):
                for D in (1, 2):
                    cfg = persistent.persistent_config(B, H, P, has_proj, torch.bfloat16, n_sm,
                                                       interpreting=False, directions=D)
                    if cfg is None:
                        continue
                    if cfg.use_barrier:
                        assert cfg.NP * cfg.grid_m * D <= n_sm, (B, H, P, D, cfg)
                    assert cfg.NP * cfg.BLOCK_H >= H and cfg.NP * cfg.BLOCK_P >= P, (B, H, P, cfg)
                    assert cfg.NM * cfg.BLOCK_B >= B, (B, cfg)


def test_forced_persistent_tier_refuses_a_grid_that_cannot_be_resident():
    """On a GPU, a shape whose barrier grid exceeds the SMs raises a clear error instead of
    launching a kernel that would spin forever (the timing section forces this tier)."""
    assert persistent.persistent_config(128, 2048, 2048, False, torch.bfloat16, 132, directions=2,
                                        interpreting=False) is None
    with pytest.raises(RuntimeError, match="cannot run B=128, H=2048"):
        persistent.config_for(128, 2048, 2048, False, torch.bfloat16, torch.device("cuda"), 2,
                              n_sm=132, interpreting=False)


def test_cuda_timer_synchronizes_before_reading_its_events(monkeypatch):
    """Event pairs are recorded around each call on the current stream and read only after a
    device-wide synchronize (elapsed_time on an unfinished event raises on a GPU)."""
    gpu_suite = import_gpu_suite()
    log = []

    class FakeEvent:
        def __init__(self, enable_timing=False):
            assert enable_timing
            self.t = None

        def record(self, stream=None):
            assert stream is None  # the current stream, where fn's kernels run
            log.append("record")
            self.t = len(log)

        def elapsed_time(self, end):
            assert "sync" in log and log.index("sync") > max(i for i, x in enumerate(log) if x == "record")
            return float(end.t - self.t)

    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: log.append("sync"))
    timer = gpu_suite.Timer("cuda")
    times = timer.times_ms(lambda: log.append("fn"), 3)
    assert times == [2.0, 2.0, 2.0]
    assert log == ["record", "fn", "record"] * 3 + ["sync"]


def test_cuda_environment_is_plain_json(monkeypatch):
    """The CUDA branch of the environment record holds only JSON types (no dtype, device or
    property objects), so the results file needs no str() fallback for it."""
    import json

    gpu_suite = import_gpu_suite()

    class Props:
        major, minor, multi_processor_count, total_memory = 9, 0, 132, 150_000_000_000

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: Props())
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: "NVIDIA H200")
    monkeypatch.setattr(torch.backends.cudnn, "version", lambda: 91002)
    cfg = gpu_suite.gpu_config()
    env = gpu_suite.environment(cfg, True)
    assert json.loads(json.dumps(env, allow_nan=False)) == env
    assert env["device"] == "NVIDIA H200" and env["sms"] == 132 and env["capability"] == "9.0"


def test_barrier_grids_launch_cooperatively_on_a_gpu_only():
    """A barrier grid goes out as a cooperative launch on a GPU, so the driver refuses a grid
    that cannot be co-resident instead of letting it spin; barrier-free grids and the
    interpreter launch plainly."""
    with_barrier = persistent.persistent_config(64, 1024, 1024, False, torch.bfloat16, 132,
                                                interpreting=False, directions=2)
    without = persistent.persistent_config(8, 32, 32, False, torch.bfloat16, 132, interpreting=False)
    assert with_barrier is not None and with_barrier.use_barrier
    assert without is not None and not without.use_barrier
    assert persistent.cooperative_launch(with_barrier, interpreting=False) == {"launch_cooperative_grid": True}
    assert persistent.cooperative_launch(without, interpreting=False) == {}
    assert persistent.cooperative_launch(with_barrier, interpreting=True) == {}
