"""Time ``lstm_kernels.LSTM`` backends and ``nn.LSTM`` per shape and mode with pytest-benchmark.

Dimensions: T sequence length, B batch, H hidden size. One benchmark group per shape and
mode, so ``--benchmark-only`` prints each group's providers side by side; the grid and
the providers come from conftest.py, the step from ``lstm_kernels.timing.make_step``
(both shared with ``python -m lstm_kernels.bench``). pytest-benchmark keeps its own
clock and statistics; the step synchronises CUDA before it returns, so that clock
covers the device work.
"""
import torch

from lstm_kernels import bench

WARMUP_CALLS = 3


def test_lstm(benchmark, case, device):
    """One shape, mode and provider: warm up untimed, then time calls that end in a device sync."""
    benchmark.group = case.group
    benchmark.extra_info.update(
        provider=case.provider.name, mode=case.mode, **case.shape.as_dict(), tokens_per_call=case.shape.tokens
    )
    with case.provider.context():
        step = bench.make_step(case.provider, case.shape, case.mode, device)
        if benchmark.enabled:
            for _ in range(WARMUP_CALLS):
                step()
        out = benchmark(step)

    assert out.shape == (case.shape.T, case.shape.B, case.shape.directions * case.shape.H)
    assert torch.isfinite(out).all()
    if benchmark.stats is not None:
        benchmark.extra_info["tokens_per_s"] = case.shape.tokens / benchmark.stats.stats.median
