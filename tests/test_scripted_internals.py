"""Internals of the TorchScript scan (the package ``lstm_kernels/scripted/``).

The op-level scan (forward and hand-written backward) against the eager oracle
``reference.lstm_scan`` under autograd, for both directions, padded and packed input
(including sequences that start late in the reverse direction from a non-zero h0),
projection and low-precision storage; the saved gates' layout; outputs that must not
alias each other; parameter changes (in place and through ``load_state_dict``) taking
effect at the next call; and the graph-executor setting being restored.

Dimensions: T seq len, B batch, H hidden, P = proj_size or H, G = 4H.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

import lstm_kernels
# Script the TorchScript path now: conftest's NaN-poisoned torch.empty cannot be scripted.
import lstm_kernels.scripted  # noqa: F401
from conftest import tol
from helpers import Config, check_lstm_against_torch, config_id
from lstm_kernels import reference
from lstm_kernels.scripted import dnn, single, thresholds
from lstm_kernels.scripted import paired as paired_module
from lstm_kernels.scripted import scan as scripted_scan

# (T, B, H, P, batch_sizes): awkward sizes; packed cases have sequences that end (forward)
# or start (reverse) at different steps, including several rows changing at once.
CASES = [
    (1, 1, 3, 3, None),
    (5, 3, 7, 7, None),
    (6, 4, 5, 3, None),
    (5, 4, 7, 7, [4, 4, 2, 1, 1]),
    (6, 5, 9, 4, [5, 3, 3, 3, 1, 1]),
    (3, 2, 33, 33, [2, 2, 2]),
]


def case_id(case) -> str:
    T, B, H, P, bs = case
    return f"T{T}-B{B}-H{H}" + (f"-P{P}" if P != H else "") + ("-packed" if bs else "")


def _inputs(T, B, H, P, dtype, requires_grad=True):
    """Random scan inputs (never zeros), w_hr only when P != H."""
    mk = lambda *s: (torch.randn(*s, dtype=dtype) * 0.5).requires_grad_(requires_grad)  # noqa: E731
    w_hr = mk(P, H) if P != H else None
    return mk(T, B, 4 * H), mk(B, P), mk(B, H), mk(4 * H, P), w_hr


def _grads(outs, inputs, seed=1):
    g = torch.Generator().manual_seed(seed)
    ups = [torch.randn(o.shape, generator=g, dtype=o.dtype) for o in outs]
    leaves = [t for t in inputs if t is not None]
    return torch.autograd.grad(outs, leaves, ups)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_scan_matches_oracle_with_grads(case, reverse, dtype):
    check_scan_against_reference(case, reverse, dtype)


def check_scan_against_reference(case, reverse: bool, dtype=torch.float32) -> None:
    """The scripted scan of ``case`` against ``reference.lstm_scan``: outputs, states and
    the gradients of every input."""
    T, B, H, P, bs = case
    inputs = _inputs(T, B, H, P, dtype)
    bs_t = torch.tensor(bs, dtype=torch.int64) if bs else None
    before = [t.detach().clone() for t in inputs if t is not None]
    ours = scripted_scan(*inputs, bs_t, reverse)
    for a, b in zip([t for t in inputs if t is not None], before):
        assert torch.equal(a, b), "the scan changed one of its inputs"
    ref = reference.lstm_scan(*inputs, bs, reverse)
    for a, b, what in zip(ours, ref, ("out", "h_n", "c_n")):
        torch.testing.assert_close(a, b, **tol(dtype, "out"), msg=lambda m: f"{what}: {m}")
    names = ("gx", "h0", "c0", "w_hh", "w_hr")
    for a, b, what in zip(_grads(ours, inputs), _grads(ref, inputs), names):
        torch.testing.assert_close(a, b, **tol(dtype, "grad"), msg=lambda m: f"d_{what}: {m}")


@pytest.mark.parametrize("gate_sigmoid", [False, True], ids=["tanh-g", "sigmoid-g"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
@pytest.mark.parametrize("proj", [False, True], ids=["noproj", "proj"])
def test_low_precision_storage_matches_oracle(dtype, proj, gate_sigmoid, monkeypatch):
    """Half storage: compare with the oracle on the same (rounded) inputs; tanh(g) both
    ways (``GATE_SIGMOID_MIN``: the doubled g block is the float32 upcast, never gx)."""
    if gate_sigmoid:
        monkeypatch.setattr(thresholds, "GATE_SIGMOID_MIN", 1)
    T, B, H = 4, 3, 8
    P = 5 if proj else H
    inputs = _inputs(T, B, H, P, dtype)
    ours = scripted_scan(*inputs, None, False)
    ref = reference.lstm_scan(*inputs, None, False)
    assert ours[0].dtype == dtype and ours[2].dtype == dtype
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.double(), b.double(), **tol(dtype, "out"))
    for a, b in zip(_grads(ours, inputs), _grads(ref, inputs)):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a.double(), b.double(), **tol(dtype, "grad"))


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
def test_saved_gates_are_activated_in_torch_order(reverse):
    """gates[t] = (sigmoid i, sigmoid f, tanh g, sigmoid o) of gx[t] + h[t-1] @ w_hh^T."""
    T, B, H = 4, 2, 5
    gx, h0, c0, w_hh, _ = _inputs(T, B, H, H, torch.float64, requires_grad=False)
    out, _, _, gates, cs, hs = scripted_scan.forward_op(gx, h0, c0, w_hh, None, None, reverse, True)
    assert hs.numel() == 0
    steps = range(T - 1, -1, -1) if reverse else range(T)
    h, c = h0, c0
    for t in steps:
        pre = gx[t] + h @ w_hh.t()
        i, f, g, o = pre.chunk(4, 1)
        want = torch.cat([i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()], 1)
        torch.testing.assert_close(gates[t], want, **tol(torch.float64))
        c = want[:, H:2 * H] * c + want[:, :H] * want[:, 2 * H:3 * H]
        torch.testing.assert_close(cs[t], c, **tol(torch.float64))
        h = out[t]


@pytest.mark.parametrize("save", [False, True], ids=["nosave", "save"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_outputs_do_not_alias(save, packed):
    """h_n / c_n are the last step's row of out / cs inside the loop; they must be copies."""
    T, B, H = 3, 3, 4
    args = _inputs(T, B, H, H, torch.float32, requires_grad=False)
    bs = torch.tensor([3, 2, 1]) if packed else None
    res = scripted_scan.forward_op(*args, bs, False, save)
    ptrs = [r.untyped_storage().data_ptr() for r in res if r.numel()]
    assert len(ptrs) == len(set(ptrs))
    if not save:
        assert all(r.numel() == 0 for r in res[3:])


def _pair(**kw):
    torch_lstm = nn.LSTM(4, 6, **kw)
    ours = lstm_kernels.LSTM(4, 6, backend="torchscript", **kw)
    ours.load_state_dict(torch_lstm.state_dict())
    return torch_lstm, ours


@pytest.mark.parametrize("how", ["inplace", "load_state_dict", "assign"])
def test_parameter_changes_take_effect(how):
    """No stale weights: every call reads the current parameters, however they changed."""
    torch_lstm, ours = _pair(num_layers=2, bidirectional=True, proj_size=3)
    x = torch.randn(5, 2, 4)
    ours(x)  # a first call, so anything that could be cached has been
    if how == "inplace":
        with torch.no_grad():
            for p in list(torch_lstm.parameters()) + list(ours.parameters()):
                p.mul_(1.5)
    elif how == "load_state_dict":
        new = nn.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3)
        torch_lstm.load_state_dict(new.state_dict())
        ours.load_state_dict(new.state_dict())
    else:
        w = torch.randn_like(ours.weight_hh_l1_reverse)
        ours.weight_hh_l1_reverse = nn.Parameter(w.clone())
        torch_lstm.weight_hh_l1_reverse = nn.Parameter(w.clone())
    want, (h_want, c_want) = torch_lstm(x)
    got, (h_got, c_got) = ours(x)
    for a, b in ((got, want), (h_got, h_want), (c_got, c_want)):
        torch.testing.assert_close(a, b, **tol(torch.float32))


def test_graph_executor_setting_is_restored():
    """The scan turns the JIT's profiling optimisations off only for its own calls."""
    args = _inputs(3, 2, 4, 4, torch.float32)
    before = torch._C._get_graph_executor_optimize()
    out = scripted_scan(*args, None, True)
    out[0].sum().backward()
    assert torch._C._get_graph_executor_optimize() == before
    with torch.jit.optimized_execution(False):
        scripted_scan(*args, None, False)
        assert torch._C._get_graph_executor_optimize() is False


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_packed_equals_per_sequence_runs(bidirectional):
    """A packed batch gives each sequence exactly what it gets when run alone, unpadded."""
    _, ours = _pair(bidirectional=bidirectional, num_layers=2)
    lengths = [6, 4, 4, 1]
    xs = [torch.randn(n, 4) for n in lengths]
    packed = nn.utils.rnn.pack_sequence(xs)
    out, (h_n, c_n) = ours(packed)
    padded, _ = nn.utils.rnn.pad_packed_sequence(out)
    for b, x in enumerate(xs):
        o1, (h1, c1) = ours(x.unsqueeze(1))
        torch.testing.assert_close(padded[: lengths[b], b], o1[:, 0], **tol(torch.float32))
        assert torch.count_nonzero(padded[lengths[b]:, b]) == 0
        torch.testing.assert_close(h_n[:, b], h1[:, 0], **tol(torch.float32))
        torch.testing.assert_close(c_n[:, b], c1[:, 0], **tol(torch.float32))


@pytest.mark.skipif(not lstm_kernels.scripted.HAS_DNN_LINEAR, reason="PyTorch built without oneDNN linear")
@pytest.mark.parametrize("blocked", [False, True], ids=["dense-w", "blocked-w"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("case", [CASES[2], CASES[3], CASES[4]], ids=case_id)
def test_onednn_matmul_path_matches_oracle(case, reverse, blocked, monkeypatch):
    """float32 step and weight-gradient matmuls through oneDNN (forced here at tiny sizes) give the same scan,
    with the weight as is and reordered into oneDNN's blocked layout (used for long scans;
    packed input runs the blocked weight with fewer rows than it was reordered for)."""
    monkeypatch.setattr(thresholds, "DNN_MIN_MACS", 1)
    monkeypatch.setattr(thresholds, "PROJ_MIN_MACS", 1)  # weight gradients too
    monkeypatch.setattr(thresholds, "PACK_MIN_T", 1 if blocked else 10**9)
    T, B, H, P, bs = case
    assert dnn.use_dnn(torch.ones(1), B, 4 * H, P)
    check_scan_against_reference(case, reverse)
    with torch.backends.mkldnn.flags(enabled=False):
        assert not dnn.use_dnn(torch.ones(1), B, 4 * H, P)


@pytest.mark.skipif(not lstm_kernels.scripted.HAS_DNN_LINEAR, reason="PyTorch built without oneDNN linear")
@pytest.mark.parametrize("threads", [1, 2])
def test_step_matmul_choice_follows_the_measured_rule(threads):
    """oneDNN for the step matmul from DNN_MIN_MACS; below it only where the summed
    dimension is >= DNN_SMALL_MIN_K and MKL measured slower: a few rows with 1 thread, from
    half the bound (single rows included) with more threads."""
    use = lambda B, H: dnn.use_dnn(torch.ones(1), B, 4 * H, H)  # noqa: E731
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert use(64, 256) and use(16, 512)  # from DNN_MIN_MACS, any thread count
        assert use(4, 256) and not use(16, 128) and not use(64, 64) and not use(1, 256)
        assert use(1, 512) == (threads > 1)
        assert use(2, 256) == (threads > 1)
        with torch.backends.mkldnn.flags(enabled=False):
            assert not use(64, 512)
        assert not dnn.use_dnn(torch.ones(1, dtype=torch.float64), 64, 4 * 512, 512)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("dnn", [False, True], ids=["blas", "onednn"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("case", [CASES[1], CASES[2], CASES[4]], ids=case_id)
def test_tanh_through_sigmoid_matches_oracle(case, reverse, dnn, monkeypatch):
    """tanh as 2 sigmoid(2x) - 1 (taken for large steps, forced here at tiny sizes: tanh(c)
    in three ops, tanh(g) from the gates' sigmoid of the doubled g block) gives the same
    scan and gradients, with and without a projection, padded and packed (the packed
    forward takes tanh(g) from the sigmoid too but keeps tanh(c); the backward's tanh(c)
    takes the sigmoid form in both)."""
    monkeypatch.setattr(thresholds, "SIGMOID_TANH_MIN", 1)
    monkeypatch.setattr(thresholds, "GATE_SIGMOID_MIN", 1)
    if dnn:
        if not lstm_kernels.scripted.HAS_DNN_LINEAR:
            pytest.skip("PyTorch built without oneDNN linear")
        monkeypatch.setattr(thresholds, "DNN_MIN_MACS", 1)
    check_scan_against_reference(case, reverse)


def _spy(monkeypatch, module, name: str) -> list:
    """Replace ``module.<name>`` (the module that calls it) by a wrapper that records each
    call's arguments."""
    calls = []
    real = getattr(module, name)

    def spy(*args):
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(module, name, spy)
    return calls


def _projection_calls(monkeypatch) -> list:
    """Route every input projection through oneDNN and record the dnn_linear calls."""
    monkeypatch.setattr(thresholds, "PROJ_MIN_MACS", 1)
    return _spy(monkeypatch, dnn, "dnn_linear")


@pytest.mark.skipif(not lstm_kernels.scripted.HAS_DNN_LINEAR, reason="PyTorch built without oneDNN linear")
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("strided", [False, True], ids=["contig", "strided"])
@pytest.mark.parametrize("rows", [5, 437], ids=["one-block", "three-blocks"])
def test_dnn_linear_op_matches_f_linear(bias, strided, rows):
    """The oneDNN projection op: values and all three gradients equal F.linear's, also for
    non-contiguous input and for weight gradients summed over several 512-row blocks
    (437 x 3 rows); and it passes torch.library.opcheck."""
    mk = lambda *s: torch.randn(*s).requires_grad_()  # noqa: E731
    x = mk(3, rows, 7).transpose(0, 1) if strided else mk(rows, 3, 7)
    w = mk(11, 7)
    b = mk(11) if bias else None
    leaves = [t for t in (x, w, b) if t is not None]
    got = lstm_kernels.scripted.dnn_linear(x, w, b)
    want = torch.nn.functional.linear(x, w, b)
    torch.testing.assert_close(got, want, **tol(torch.float32, "out"))
    g = torch.randn_like(want)
    for a, e in zip(torch.autograd.grad(got, leaves, g), torch.autograd.grad(want, leaves, g)):
        torch.testing.assert_close(a, e, **tol(torch.float32, "grad"))
    fresh = (x.detach().requires_grad_(), w.detach().requires_grad_(),
                        None if b is None else b.detach().requires_grad_())
    torch.library.opcheck(torch.ops.lstm_kernels.dnn_linear.default, fresh)


@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("case", [(5, 1, 7, 7, None), (5, 1, 6, 4, None), (4, 1, 5, 5, [1, 1, 1, 1])], ids=case_id)
def test_single_row_column_major_weight_matches_oracle(case, reverse, monkeypatch):
    """A single-row forward with w_hh copied column-major (``MATVEC_COPY_MIN_T``, forced
    here at T = 4 and 5) gives the same scan and gradients, with a projection and packed."""
    monkeypatch.setattr(thresholds, "MATVEC_COPY_MIN_T", 1)
    calls = _spy(monkeypatch, single, "scan_forward_scripted")
    check_scan_against_reference(case, reverse)
    w_step = calls[0][9]
    assert w_step.t().is_contiguous() and not w_step.is_contiguous()


@pytest.mark.parametrize("cfg", [
    Config(T=6, B=1, input_size=5, hidden_size=7, num_layers=2, bidirectional=True),
    Config(T=6, B=1, input_size=5, hidden_size=8, proj_size=4, mode="unbatched"),
], ids=config_id)
def test_single_row_column_major_weight_matches_nn_lstm(cfg, monkeypatch):
    """The column-major w_hh of long single-row forwards (``MATVEC_COPY_MIN_T``, forced at
    T = 6) through the module against nn.LSTM, all gradients; bidirectional layers unpaired,
    as they are at the sizes that take it."""
    monkeypatch.setattr(thresholds, "MATVEC_COPY_MIN_T", 1)
    monkeypatch.setattr(thresholds, "PAIRED_MAX_MACS", 0)
    monkeypatch.setattr(thresholds, "SPLIT_ROWS_MIN_P", 1 << 30)
    calls = _spy(monkeypatch, single, "scan_forward_scripted")
    check_lstm_against_torch(cfg, "torchscript", torch.float32, training=True)
    assert calls and all(c[9].t().is_contiguous() and not c[9].is_contiguous() for c in calls)


@pytest.fixture
def two_threads():
    """Two intra-op threads for the test (the gate split is a multi-thread path), then back."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("gate_sigmoid", [False, True], ids=["tanh-g", "sigmoid-g"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("case", [(5, 1, 7, 7, None), (5, 1, 6, 4, None), (6, 1, 8, 8, None)], ids=case_id)
def test_single_row_gate_split_matches_oracle(case, reverse, gate_sigmoid, two_threads, monkeypatch):
    """Single-row step products as batched products over column blocks (``_split_rows``,
    forced here at tiny sizes and as if with 2 threads): the forward over the four gates,
    the backward over two blocks of dh's columns (only for even P; P = 7 keeps the plain
    product there), both from strided views of w_hh."""
    monkeypatch.setattr(thresholds, "SPLIT_ROWS_MIN_P", 1)
    if gate_sigmoid:
        monkeypatch.setattr(thresholds, "GATE_SIGMOID_MIN", 1)
    fwd = _spy(monkeypatch, single, "scan_forward_scripted")
    bwd = _spy(monkeypatch, single, "scan_backward_scripted")
    check_scan_against_reference(case, reverse)
    T, B, H, P, _ = case
    assert fwd[0][9].shape == (4, P, H)
    assert bwd[0][14].shape == ((2, 4 * H, P // 2) if P % 2 == 0 else (P, 4 * H))


@pytest.mark.parametrize("cfg", [
    Config(T=6, B=1, input_size=5, hidden_size=8, num_layers=2, bidirectional=True),
    Config(T=6, B=1, input_size=5, hidden_size=8, proj_size=4, mode="unbatched"),
], ids=config_id)
def test_single_row_gate_split_matches_nn_lstm(cfg, two_threads, monkeypatch):
    """The gate-split single-row path through the module against nn.LSTM, all gradients
    (bidirectional layers unpaired, as they are at the sizes that split)."""
    monkeypatch.setattr(thresholds, "PAIRED_MAX_MACS", 0)
    monkeypatch.setattr(thresholds, "SPLIT_ROWS_MIN_P", 1)
    calls = _spy(monkeypatch, single, "scan_forward_scripted")
    check_lstm_against_torch(cfg, "torchscript", torch.float32, training=True)
    assert calls and all(c[9].dim() == 3 for c in calls)


@pytest.mark.parametrize("steps", [1, 2, 4])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("case", [CASES[1], CASES[2], CASES[3], CASES[4]], ids=case_id)
def test_backward_in_blocks_of_steps_matches_oracle(case, reverse, steps, monkeypatch):
    """The backward's precomputed factors in blocks of 1, 2 and 4 steps (T = 5 and 6: blocks
    that do and do not divide T), padded and packed (sequences ending or, in reverse,
    starting inside a block), give the same gradients as one block over all steps."""
    T, B, H, P, bs = case
    monkeypatch.setattr(thresholds, "BACKWARD_BLOCK_ELEMS", steps * B * H)
    check_scan_against_reference(case, reverse)


@pytest.mark.parametrize("cfg", [
    Config(T=40, B=15, input_size=5, hidden_size=7, num_layers=2, bidirectional=True),
    Config(T=40, B=15, input_size=5, hidden_size=7, proj_size=3, mode="packed-unsorted"),
], ids=config_id)
def test_large_step_paths_match_nn_lstm(cfg, monkeypatch):
    """The paths large layers take, all forced at a small size, against nn.LSTM with copied
    weights: tanh through sigmoid, the backward's factors in blocks of 3 steps, oneDNN step
    matmuls, and weight gradients over 600 rows (two 512-row blocks)."""
    monkeypatch.setattr(thresholds, "SIGMOID_TANH_MIN", 1)
    monkeypatch.setattr(thresholds, "GATE_SIGMOID_MIN", 1)
    monkeypatch.setattr(thresholds, "BACKWARD_BLOCK_ELEMS", 3 * cfg.B * cfg.hidden_size)
    if lstm_kernels.scripted.HAS_DNN_LINEAR:
        monkeypatch.setattr(thresholds, "DNN_MIN_MACS", 1)
        monkeypatch.setattr(thresholds, "PROJ_MIN_MACS", 1)
    check_lstm_against_torch(cfg, "torchscript", torch.float32, training=True)


@pytest.mark.skipif(not lstm_kernels.scripted.HAS_DNN_LINEAR, reason="PyTorch built without oneDNN linear")
@pytest.mark.parametrize("M", [1, 511, 512, 1300])
def test_blocked_transposed_product_matches_mm(M):
    """a^T @ b in 512-row blocks through oneDNN (the weight gradients) equals torch.mm."""
    a, b = torch.randn(M, 12), torch.randn(M, 5)
    torch.testing.assert_close(dnn.mm_tn(a, b, True), a.t() @ b, **tol(torch.float32, "grad"))


def test_dnn_linear_double_backward():
    """Its backward is made of the same op, so it can be differentiated again (float64
    runs the F.linear branch; gradgradcheck needs double precision)."""
    mk = lambda *s: torch.randn(*s, dtype=torch.float64).requires_grad_()  # noqa: E731
    args = (mk(2, 3, 4), mk(5, 4), mk(5))
    assert torch.autograd.gradcheck(lstm_kernels.scripted.dnn_linear, args)
    assert torch.autograd.gradgradcheck(lstm_kernels.scripted.dnn_linear, args)


@pytest.mark.skipif(not lstm_kernels.scripted.HAS_DNN_LINEAR, reason="PyTorch built without oneDNN linear")
@pytest.mark.parametrize(
    "cfg",
    [
        Config(num_layers=2, bidirectional=True, T=5, B=3),
        Config(num_layers=2, bias=False, batch_first=True, proj_size=3, T=4, B=2),
        Config(bidirectional=True, mode="packed-unsorted", T=6, B=4),
        Config(num_layers=2, mode="packed", strided=True, with_hx=False, T=5, B=3),
    ],
    ids=config_id,
)
def test_onednn_input_projection_matches_nn_lstm(cfg, monkeypatch):
    """float32 input projections through oneDNN (forced at tiny sizes): same outputs, states
    and gradients as nn.LSTM, and every layer's projection took that path."""
    calls = _projection_calls(monkeypatch)
    check_lstm_against_torch(cfg, "torchscript", torch.float32)
    assert len(calls) >= cfg.num_layers


@pytest.mark.skipif(not lstm_kernels.scripted.HAS_DNN_LINEAR, reason="PyTorch built without oneDNN linear")
def test_onednn_input_projection_frozen_and_disabled(monkeypatch):
    """Frozen weights (only the input needs a gradient) work through the op, whose backward
    then computes only the input's gradient; with oneDNN
    disabled, or for float64, the projection is plain F.linear."""
    calls = _projection_calls(monkeypatch)
    torch_lstm, ours = _pair(num_layers=2, bidirectional=True)
    for m in (torch_lstm, ours):
        m.requires_grad_(False)
    x = torch.randn(5, 2, 4, requires_grad=True)
    out, want = ours(x)[0], torch_lstm(x)[0]
    torch.testing.assert_close(out, want, **tol(torch.float32, "out"))
    assert len(calls) == 2  # one projection per layer
    g = torch.randn_like(want)
    (gx,) = torch.autograd.grad((out * g).sum(), x)
    (wx,) = torch.autograd.grad((want * g).sum(), x)
    torch.testing.assert_close(gx, wx, **tol(torch.float32, "grad"))
    assert len(calls) == 4  # backward: grad of each layer's input only, no weight grads
    with torch.backends.mkldnn.flags(enabled=False):
        ours(x)
    ours.double()(x.double())
    assert len(calls) == 4


@pytest.mark.parametrize("gate_sigmoid", [False, True], ids=["tanh-g", "sigmoid-g"])
@pytest.mark.parametrize("T", [1, 5])
@pytest.mark.parametrize("proj", [False, True], ids=["noproj", "proj"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
def test_paired_scan_matches_two_oracle_scans(T, proj, dtype, gate_sigmoid, monkeypatch):
    """Both directions in one loop (``scan_bidirectional``) equal the oracle run per
    direction, direction 1 reversed: outputs, states and the gradients of every input,
    with tanh(g) both ways (``GATE_SIGMOID_MIN``)."""
    if gate_sigmoid:
        monkeypatch.setattr(thresholds, "GATE_SIGMOID_MIN", 1)
    B, H = 3, 7
    P = 4 if proj else H
    fwd, rev = _inputs(T, B, H, P, dtype), _inputs(T, B, H, P, dtype)
    ours = lstm_kernels.scripted.scan_bidirectional(*[[a, b] for a, b in zip(fwd, rev)])
    ref = [reference.lstm_scan(*fwd, None, False), reference.lstm_scan(*rev, None, True)]
    for got, want in zip(ours, ref):
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, **tol(dtype, "out"))
    leaves = list(fwd) + list(rev)
    got = _grads([t for r in ours for t in r], leaves)
    want = _grads([t for r in ref for t in r], leaves)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol(dtype, "grad"))


@pytest.mark.parametrize("save", [False, True], ids=["nosave", "save"])
def test_paired_outputs_do_not_alias(save):
    T, B, H = 3, 2, 4
    args = [torch.stack([a, b]) for a, b in zip(_inputs(T, B, H, H, torch.float32, requires_grad=False)[:4],
                                                _inputs(T, B, H, H, torch.float32, requires_grad=False)[:4])]
    res = lstm_kernels.scripted.paired_scan.forward_op(*args, None, None, False, save)
    ptrs = [r.untyped_storage().data_ptr() for r in res if r.numel()]
    assert len(ptrs) == len(set(ptrs))


@pytest.mark.parametrize(
    "cfg, dtype, paired",
    [
        (Config(bidirectional=True, num_layers=2, T=5, B=3), torch.float32, True),
        (Config(bidirectional=True, proj_size=3, batch_first=True, T=4, B=2), torch.float64, True),
        (Config(bidirectional=True, mode="packed", T=5, B=3), torch.float32, False),
        (Config(bidirectional=True, T=4, B=2), torch.bfloat16, False),
    ],
    ids=lambda v: config_id(v) if isinstance(v, Config) else str(v),
)
def test_bidirectional_layers_take_the_paired_scan(cfg, dtype, paired, monkeypatch):
    """Padded full-precision bidirectional layers run one paired scan per layer; packed
    input and half storage keep one scan per direction. Results match nn.LSTM either way."""
    calls = _spy(monkeypatch, paired_module, "paired_scan")
    check_lstm_against_torch(cfg, "torchscript", dtype)
    assert len(calls) == (cfg.num_layers if paired else 0)


@pytest.mark.skipif(not lstm_kernels.scripted.HAS_DNN_LINEAR, reason="PyTorch built without oneDNN linear")
def test_bidirectional_above_paired_cutoff_uses_two_scans(monkeypatch):
    """Above PAIRED_MAX_MACS (or in oneDNN's step-matmul range) each direction has its own scan."""
    monkeypatch.setattr(thresholds, "PAIRED_MAX_MACS", 0)
    calls = []
    monkeypatch.setattr(paired_module, "paired_scan", lambda *a: calls.append(a))
    check_lstm_against_torch(Config(bidirectional=True, num_layers=2), "torchscript", torch.float32)
    monkeypatch.setattr(thresholds, "PAIRED_MAX_MACS", 1 << 40)
    monkeypatch.setattr(thresholds, "DNN_MIN_MACS", 1)
    check_lstm_against_torch(Config(bidirectional=True, num_layers=2), "torchscript", torch.float32)
    assert not calls
