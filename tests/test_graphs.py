"""CUDA-graph capture of the fused_step tier (``lstm_kernels.cuda_graphs``), on CPU.

A CPU has no CUDA graphs, so these tests stand in a recording graph for the capture: its
replay runs the captured launcher again on the static input buffers and writes into the
static output buffers, which is what a replayed CUDA graph does. What they check is the
plumbing around it: which calls capture, that every call copies its own inputs in and
returns its own results (against nn.LSTM), and the cache's keys and eviction. The suite
(benchmarks/gpu_suite.py, label ``triton:fused_step/cuda-graphs``) checks real graphs on a GPU.
"""
import pytest
import torch

import lstm_kernels
from helpers import Config, check_lstm_against_torch, config_id
from lstm_kernels import graphs
from lstm_kernels._triton.backend import force_tier

pytestmark = pytest.mark.interpreter


class RecordingGraph:
    captures = []

    def __init__(self, fn, static_inputs):
        self.fn, self.static_inputs = fn, static_inputs
        self.static_outputs = tuple(torch.full_like(o, float("nan")) for o in fn(*static_inputs))
        RecordingGraph.captures.append(self)

    def replay(self):
        for static, fresh in zip(self.static_outputs, self.fn(*self.static_inputs)):
            static.copy_(fresh)


@pytest.fixture
def recording_graphs(monkeypatch):
    """Capture on CPU tensors through RecordingGraph; an empty cache before and after."""
    RecordingGraph.captures = []
    graphs.clear()
    monkeypatch.setattr(graphs, "_capture", lambda fn, inputs: (g := RecordingGraph(fn, inputs), g.static_outputs))
    monkeypatch.setattr(graphs, "usable", lambda tensors: graphs.enabled())
    yield RecordingGraph.captures
    graphs.clear()


@pytest.mark.parametrize("cfg", [
    Config(B=3, T=4, input_size=5, hidden_size=7),
    Config(B=2, T=3, input_size=4, hidden_size=6, proj_size=3, num_layers=2, bidirectional=True),
], ids=config_id)
def test_replayed_graphs_match_nn_lstm_on_every_call(cfg, recording_graphs):
    """Call 1 runs eagerly, call 2 captures, call 3 replays; every call has new weights and
    inputs (copied into the static buffers) and must give nn.LSTM's results and gradients."""
    with force_tier("fused_step"), lstm_kernels.cuda_graphs():
        for _ in range(3):
            check_lstm_against_torch(cfg, "triton", torch.float32)
    # One forward and one backward graph: both directions share each launch, and the layers
    # of an LSTM have the same recurrent shapes, so they replay the same graphs.
    assert len(recording_graphs) == 2


def test_packed_batches_and_disabled_capture_run_eagerly(recording_graphs):
    packed = Config(B=3, T=4, input_size=5, hidden_size=7, mode="packed")
    plain = Config(B=3, T=4, input_size=5, hidden_size=7)
    with force_tier("fused_step"):
        with lstm_kernels.cuda_graphs():
            for _ in range(2):
                check_lstm_against_torch(packed, "triton", torch.float32)
        for _ in range(2):
            check_lstm_against_torch(plain, "triton", torch.float32)
        with lstm_kernels.cuda_graphs(), lstm_kernels.cuda_graphs(False):
            for _ in range(2):
                check_lstm_against_torch(plain, "triton", torch.float32)
    assert recording_graphs == []
    assert not graphs.enabled()


def test_cpu_tensors_are_never_captured():
    with lstm_kernels.cuda_graphs():
        assert graphs.enabled()
        assert not graphs.usable([torch.ones(2), None])
    assert not graphs.enabled()


def test_cache_keys_and_eviction(recording_graphs, monkeypatch):
    monkeypatch.setattr(graphs, "MAX_GRAPHS", 2)
    calls = []

    def double(x):
        calls.append(1)
        return (x * 2,)

    with lstm_kernels.cuda_graphs():
        x = torch.arange(3.0)
        for key in ("a", "a", "a", "b", "b", "c", "a"):
            (y,) = graphs.run(key, double, [x])
            torch.testing.assert_close(y, x * 2)
            x = x + 1
    # "a": eager, capture, replay; "b": eager, capture; "c" evicts "a", so "a" starts over eagerly.
    assert len(recording_graphs) == 2
    assert graphs.cached_keys() == ["c", "a"]


def test_cuda_graphs_rejects_a_non_bool():
    with pytest.raises(TypeError, match="bool"):
        with lstm_kernels.cuda_graphs("yes"):
            pass
