"""Optional CUDA-graph capture of the per-step Triton tier's time loop.

The "fused_step" tier launches a kernel per time step (and, with a projection, torch
matmuls between them) from the host. On an H200 that host work took 35-60 us per step
while the GPU work of a step takes a few, so the tier is bound by the host. Replaying a
captured CUDA graph issues all T steps of a layer with one host call.

    with lstm_kernels.cuda_graphs():
        out, (h_n, c_n) = model(x)      # forward and backward of fused_step layers

How a launcher is run (:func:`run`): the first call with a given key (shapes, dtypes,
flags: everything the launch sequence depends on) runs eagerly; the second captures the
launcher into a graph over static copies of its inputs, and that call and later ones copy
the inputs into those buffers, replay the graph and return copies of its static outputs.
Shapes seen once cost nothing extra; each cached graph holds its static inputs and
outputs (about the memory of one more forward or backward), and at most
``MAX_GRAPHS`` are kept, least recently used dropped first.

Eager launches are used instead when the tensors are not on a CUDA device, when the
current stream is already being captured (``torch.compile(mode="reduce-overhead")`` or a
user's own graph: the launches then go into that graph) and for packed batches (their
row bookkeeping copies index tensors from the host, which a capture may not contain).
Captures and replays run on the current stream; calls from several threads at once are
not supported while capture is on.
"""
from __future__ import annotations

import collections
import contextlib
from typing import Callable, Hashable, Optional, Sequence

import torch
from torch import Tensor

MAX_GRAPHS = 8
_enabled = [False]


@contextlib.contextmanager
def cuda_graphs(enabled: bool = True):
    """Inside the block, the fused_step tier runs its per-step loops as CUDA graphs
    (``enabled=False``: eagerly). Cached graphs outlive the block; :func:`clear` drops them."""
    if not isinstance(enabled, bool):
        raise TypeError(f"cuda_graphs(enabled) takes a bool; got {type(enabled).__name__}")
    old = _enabled[0]
    _enabled[0] = enabled
    try:
        yield
    finally:
        _enabled[0] = old


def enabled() -> bool:
    return _enabled[0]


class _Entry:
    """A key's state: seen once (``graph is None``), or captured with its static buffers."""

    def __init__(self):
        self.graph = None
        self.static_inputs: tuple = ()
        self.static_outputs: tuple = ()


_cache: "collections.OrderedDict[Hashable, _Entry]" = collections.OrderedDict()


def cached_keys() -> list:
    """The keys with a cached entry, least recently used first (the next to be evicted at
    MAX_GRAPHS; tests/test_graphs.py checks the order)."""
    return list(_cache)


def clear() -> None:
    """Drop every cached graph and its buffers."""
    _cache.clear()


def usable(tensors: Sequence[Optional[Tensor]]) -> bool:
    """Whether a launch over ``tensors`` may be captured now."""
    if not _enabled[0]:
        return False
    present = [t for t in tensors if t is not None]
    if not present or any(t.device.type != "cuda" for t in present):
        return False
    return not torch.cuda.is_current_stream_capturing()


def signature(tensors: Sequence[Optional[Tensor]]) -> tuple:
    """The part of a key the tensors give: shape, dtype and device of each (None stays None)."""
    return tuple(None if t is None else (tuple(t.shape), t.dtype, t.device) for t in tensors)


def _static_copy(t: Optional[Tensor]) -> Optional[Tensor]:
    return None if t is None else t.detach().clone(memory_format=torch.contiguous_format)


def _capture(fn: Callable, static_inputs: tuple):
    """Capture ``fn(*static_inputs)``; return (graph, its static outputs).

    A warm-up run on a side stream comes first, as torch.cuda.graphs documents: it makes
    the libraries the launcher calls (cuBLAS) set up their per-stream state outside the
    capture. Triton kernels are already compiled by the eager first call.
    """
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn(*static_inputs)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_outputs = fn(*static_inputs)
    return graph, tuple(static_outputs)


def run(key: Hashable, fn: Callable, inputs: Sequence[Optional[Tensor]]) -> tuple:
    """``fn(*inputs)``, replayed from a captured graph from the second call with ``key`` on.

    ``fn`` must be a function of its tensor arguments alone (every host-side value it
    depends on is part of ``key``) that returns a tuple of tensors, none of them an input.
    """
    inputs = tuple(inputs)
    entry = _cache.get(key)
    if entry is None:
        _cache[key] = _Entry()
        _evict()
        return tuple(fn(*inputs))
    _cache.move_to_end(key)
    if entry.graph is None:
        entry.static_inputs = tuple(_static_copy(t) for t in inputs)
        entry.graph, entry.static_outputs = _capture(fn, entry.static_inputs)
    else:
        for static, t in zip(entry.static_inputs, inputs):
            if static is not None:
                static.copy_(t)
    entry.graph.replay()
    return tuple(o.clone() for o in entry.static_outputs)


def _evict() -> None:
    while len(_cache) > MAX_GRAPHS:
        _cache.popitem(last=False)
