"""ONNX export of LSTM / LSTMCell with torch.onnx.export, both exporters, run in onnxruntime.

Under export the forward runs nn.LSTM's own aten::lstm on our weights (functional.exporting),
so the exported graph is the same ONNX LSTM op as the nn.LSTM twin's export.
"""
from __future__ import annotations

import io
import warnings

import pytest
import torch
from torch import nn

from conftest import tol
from lstm_kernels import LSTM, LSTMCell

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

CONFIGS = [
    dict(num_layers=1),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=3, batch_first=True),
    dict(num_layers=2, bidirectional=True, batch_first=True, bias=False),
]


def _run(model_bytes: bytes, args) -> list:
    sess = ort.InferenceSession(model_bytes)
    feeds = {i.name: a.numpy() for i, a in zip(sess.get_inputs(), args)}
    return [torch.from_numpy(o) for o in sess.run(None, feeds)]


def _legacy(model, args) -> bytes:
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, f, dynamo=False)
    return f.getvalue()


def _dynamo(model, args, dynamic_shapes=None) -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(model, args, dynamo=True, dynamic_shapes=dynamic_shapes, verbose=False)
    return prog.model_proto.SerializeToString()


def _pair(cfg):
    torch.manual_seed(0)
    ref = nn.LSTM(4, 6, **cfg).eval()
    return ref, LSTM.from_torch(ref).eval()


def _flat(args):
    return [a for x in args for a in (x if isinstance(x, tuple) else (x,))]


def _eager(ref, args):
    out, (h, c) = ref(*args)
    return [out, h, c]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("with_hx", [False, True], ids=["no-hx", "hx"])
def test_legacy_export_matches_nn_lstm_export_and_eager(cfg, with_hx):
    ref, ours = _pair(cfg)
    D = 2 if cfg.get("bidirectional") else 1
    L = cfg["num_layers"]
    x = torch.randn(3, 5, 4)
    args = (x, (torch.randn(L * D, 3 if cfg.get("batch_first") else 5, 6),) * 2) if with_hx else (x,)
    if with_hx:
        args = (x, (args[1][0], torch.randn_like(args[1][0])))
    got = _run(_legacy(ours, args), _flat(args))
    twin = _run(_legacy(ref, args), _flat(args))
    with torch.no_grad():
        want = _eager(ref, args)
    for g, t, w in zip(got, twin, want):
        torch.testing.assert_close(g, t, **tol(torch.float32))
        torch.testing.assert_close(g, w, **tol(torch.float32))


@pytest.mark.parametrize("cfg", CONFIGS[1:3], ids=["bi", "L3-batch_first"])
def test_dynamo_export_with_dynamic_batch(cfg):
    ref, ours = _pair(cfg)
    bdim = 0 if cfg.get("batch_first") else 1
    x = torch.randn(3, 5, 4)
    model = _dynamo(ours, (x,), dynamic_shapes={"input": {bdim: torch.export.Dim.DYNAMIC}})
    twin = _dynamo(ref, (x,), dynamic_shapes={"input": {bdim: torch.export.Dim.DYNAMIC}})
    for B in (5, 2, 9):
        shape = list(x.shape)
        shape[bdim] = B
        x2 = torch.randn(*shape)
        got, want_twin = _run(model, [x2]), _run(twin, [x2])
        with torch.no_grad():
            want = _eager(ref, (x2,))
        for g, t, w in zip(got, want_twin, want):
            torch.testing.assert_close(g, t, **tol(torch.float32))
            torch.testing.assert_close(g, w, **tol(torch.float32))


@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_proj_size_export_is_refused(exporter):
    # ONNX's LSTM op has no projection. The legacy exporter refuses nn.LSTM with one; the
    # dynamo exporter writes a graph for it that onnxruntime rejects when run. Ours is
    # refused at export by both.
    ref, ours = _pair(dict(proj_size=3))
    x = torch.randn(3, 5, 4)
    if exporter == "legacy":
        with pytest.raises(Exception, match="projections"):
            _legacy(ref, (x,))
        with pytest.raises(RuntimeError, match=r"proj_size > 0 is not supported: ONNX's LSTM op has no projections"):
            _legacy(ours, (x,))
    else:
        # The dynamo exporter retries other capture strategies after our error, and the
        # last one reports that the scan op has no ONNX translation: refused all the same.
        with pytest.raises(Exception, match="No ONNX function found|no projections"):
            _dynamo(ours, (x,))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("exporter", ["legacy", "dynamo"])
def test_lstm_cell_export(bias, exporter):
    torch.manual_seed(0)
    ref = nn.LSTMCell(4, 6, bias=bias)
    ours = LSTMCell.from_torch(ref)
    args = (torch.randn(3, 4), (torch.randn(3, 6), torch.randn(3, 6)))
    export = _legacy if exporter == "legacy" else _dynamo
    got = _run(export(ours, args), _flat(args))
    with torch.no_grad():
        want = ref(*args)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **tol(torch.float32))
