"""pytest-benchmark suite configuration: which shapes, modes and providers are timed.

Dimensions: T sequence length, B batch, H hidden size (input size = H), L layers,
uni/bi directions.

    pytest benchmarks --benchmark-only        time the "small" grid (or LSTM_KERNELS_BENCH_GRID)
    pytest benchmarks --benchmark-disable     smoke test: one untimed call per case, "smoke" grid

LSTM_KERNELS_BENCH_GRID selects the grid: a name from ``lstm_kernels.timing.GRIDS``
("smoke", "quick", "small", "full") or a product spec such as
"T=16,128 B=1,16 H=64 L=1,2 D=1,2". "full" is T{16,128,512} x B{1,16,64} x H{64,256,512}
x L{1,2} x uni/bi, with the reference backend on every shape.

Unlike tests/, this suite never sets TRITON_INTERPRET: interpreted Triton timings mean
nothing, so providers that cannot run natively here are simply not listed.
"""
import os
from dataclasses import dataclass

import pytest

from lstm_kernels import bench, timing

GRID_ENV = "LSTM_KERNELS_BENCH_GRID"


@dataclass(frozen=True)
class Case:
    shape: timing.Shape
    mode: str
    provider: bench.Provider

    @property
    def id(self) -> str:
        return f"{self.shape.id}-{self.mode}-{self.provider.name}"

    @property
    def group(self) -> str:
        return f"{self.shape.id}-{self.mode}"


def _benchmarks_disabled(config) -> bool:
    disabled = config.getoption("benchmark_disable", False)
    return bool(disabled) and not config.getoption("benchmark_enable", False)


def grid_name(config) -> str:
    """The grid to run: the environment variable, else "smoke" when benchmarks are disabled, else "small"."""
    return os.environ.get(GRID_ENV) or ("smoke" if _benchmarks_disabled(config) else "small")


def cases(config) -> list[Case]:
    name = grid_name(config)
    try:
        shapes = timing.parse_grid(name)
    except ValueError as e:
        raise ValueError(f"{GRID_ENV}: {e}") from None
    device = bench.default_device()
    provs = bench.providers(device)
    return [
        Case(shape, mode, p)
        for shape in shapes
        for mode in timing.MODES
        for p in bench.providers_for(shape, provs, full=name == "full")
    ]


def pytest_generate_tests(metafunc):
    if "case" in metafunc.fixturenames:
        cs = cases(metafunc.config)
        metafunc.parametrize("case", cs, ids=[c.id for c in cs])


def pytest_report_header(config):
    device = bench.default_device()
    names = ", ".join(p.name for p in bench.providers(device))
    return f"lstm_kernels benchmarks: grid {grid_name(config)!r} on {device}; providers: {names}"


@pytest.fixture
def device():
    return bench.default_device()
