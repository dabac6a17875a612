"""The pointwise tier's two kernels in isolation, through the Triton interpreter.

Forward (``lstm_cell_forward``) against ``reference.lstm_cell_from_gates``; backward
(``lstm_cell_backward``) against autograd through the same reference. Every buffer a
kernel writes starts as NaN, so an element it should write but does not shows up, and
every element it must leave alone is checked to be still NaN (or unchanged).
Also: argument checks, and that neither the sequence length nor the step changes the
kernels' specialization (the interpreter does not compile, so the test computes the
specialization key the way Triton's JIT does and compares it across lengths).

Dimensions: T seq len, B batch (state rows), bs active rows, H hidden.
"""
from __future__ import annotations

import inspect

import pytest
import torch

import lstm_kernels.scripted  # noqa: F401  (script before conftest poisons torch.empty)
from conftest import tol
from helpers import dtype_id
from lstm_kernels._triton import pointwise
from lstm_kernels._triton.pointwise import aot_specs as pointwise_aot
from lstm_kernels._triton.pointwise import kernels as pointwise_kernels
from lstm_kernels._triton.pointwise import launch as pointwise_launch
from lstm_kernels._triton.pointwise import tiling as pointwise_tiling
from lstm_kernels._base import triton_interpreting
from lstm_kernels.reference import compute_dtype, lstm_cell_from_gates

STORAGE = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
# (B, bs, H): B=1, an inactive-row tail, odd H, H spanning two BLOCK_H=1024 blocks.
SIZES = [(1, 1, 1), (3, 3, 7), (4, 2, 33), (2, 1, 1030)]


def size_id(size) -> str:
    B, bs, H = size
    return f"B{B}-bs{bs}-H{H}"


def nan(*shape, dtype) -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=dtype)


def close(got, want, dtype, kind="out"):
    torch.testing.assert_close(got.double(), want.double(), **tol(dtype, kind))


@pytest.mark.interpreter
@pytest.mark.parametrize("size", SIZES, ids=size_id)
@pytest.mark.parametrize("dtype", STORAGE, ids=dtype_id)
@pytest.mark.parametrize("mode", ["infer", "train", "proj-infer", "proj-train"])
def test_forward_matches_reference(mode, dtype, size):
    """float64 storage is held to the float64 tolerance, which float32 math would miss."""
    B, bs, H = size
    T, t = 3, 1
    proj, save = mode.startswith("proj"), mode.endswith("train")
    cdt = compute_dtype(dtype)
    # Pre-activations as rows of a wider buffer: any row stride must work.
    pre = torch.randn(bs, 4 * H + 5, dtype=dtype)[:, 2:2 + 4 * H]
    c_prev = torch.randn(B, H, dtype=cdt)
    c = c_prev.clone()
    h = nan(B, H, dtype=dtype)
    out = None if proj else nan(T, B, H, dtype=dtype)
    gates = nan(T, B, 4 * H, dtype=cdt) if save else None
    cs = nan(T, B, H, dtype=cdt) if save else None
    hs = nan(T, B, H, dtype=cdt) if save and proj else None

    pointwise.lstm_cell_forward(pre, c, h, t=t, out=out, gates=gates, cs=cs, hs=hs)

    want_h, want_c = lstm_cell_from_gates(pre, c_prev[:bs], out_dtype=dtype)
    assert h.dtype == dtype and c.dtype == cdt
    close(h[:bs], want_h, dtype)
    close(c[:bs], want_c, dtype)
    assert torch.isnan(h[bs:]).all(), "rows past bs of h were written"
    assert torch.equal(c[bs:], c_prev[bs:]), "rows past bs of c changed"
    written = torch.zeros(T, B, dtype=torch.bool)
    written[t, :bs] = True
    if out is not None:
        assert torch.equal(out[t, :bs], h[:bs])
        assert torch.isnan(out[~written]).all(), "out written outside [t, :bs]"
    if save:
        p = pre.to(cdt)
        want_gates = torch.cat(
            [torch.sigmoid(p[:, :2 * H]), torch.tanh(p[:, 2 * H:3 * H]), torch.sigmoid(p[:, 3 * H:])], 1
        )
        close(gates[t, :bs], want_gates, cdt)
        assert torch.equal(cs[t, :bs], c[:bs])
        assert torch.isnan(gates[~written]).all() and torch.isnan(cs[~written]).all()
    if hs is not None:
        close(hs[t, :bs], want_h.to(cdt), dtype)
        assert torch.isnan(hs[~written]).all()


@pytest.mark.interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=dtype_id)
def test_forward_accepts_compute_dtype_pre_activations(dtype):
    B, H = 2, 5
    pre = torch.randn(B, 4 * H)
    c_prev = torch.randn(B, H)
    c, h = c_prev.clone(), nan(B, H, dtype=dtype)
    pointwise.lstm_cell_forward(pre, c, h, out=nan(1, B, H, dtype=dtype))
    want_h, want_c = lstm_cell_from_gates(pre, c_prev, out_dtype=dtype)
    close(h, want_h, dtype)
    close(c, want_c, dtype)


@pytest.mark.interpreter
@pytest.mark.parametrize("size", SIZES, ids=size_id)
@pytest.mark.parametrize("dtype", STORAGE, ids=dtype_id)
def test_backward_matches_autograd(dtype, size):
    """The saved tensors come from storage-dtype pre-activations; the kernel runs in the compute dtype."""
    B, bs, H = size
    T, t = 3, 2
    cdt = compute_dtype(dtype)
    pre = torch.randn(bs, 4 * H, dtype=dtype).to(cdt).requires_grad_()
    c_prev_rows = torch.randn(bs, H, dtype=cdt, requires_grad=True)
    h_ref, c_ref = lstm_cell_from_gates(pre, c_prev_rows)
    dh = torch.randn(bs, H, dtype=cdt)
    dc_in = torch.randn(B, H, dtype=cdt)
    d_pre, d_c_prev = torch.autograd.grad((h_ref * dh).sum() + (c_ref * dc_in[:bs]).sum(), [pre, c_prev_rows])

    with torch.no_grad():
        gates = nan(T, B, 4 * H, dtype=cdt)
        gates[t, :bs] = torch.cat(
            [torch.sigmoid(pre[:, :2 * H]), torch.tanh(pre[:, 2 * H:3 * H]), torch.sigmoid(pre[:, 3 * H:])], 1
        )
        cs = nan(T, B, H, dtype=cdt)
        cs[t, :bs] = c_ref
        c_prev = nan(T, B, H, dtype=cdt)
        c_prev[t, :bs] = c_prev_rows
    dc = dc_in.clone()
    d_gates = nan(T, B, 4 * H, dtype=cdt)

    pointwise.lstm_cell_backward(dh, dc, gates, cs, c_prev, d_gates, t=t)

    close(d_gates[t, :bs], d_pre, cdt, "grad")
    close(dc[:bs], d_c_prev, cdt, "grad")
    assert torch.equal(dc[bs:], dc_in[bs:]), "rows past bs of dc changed"
    written = torch.zeros(T, B, dtype=torch.bool)
    written[t, :bs] = True
    assert torch.isnan(d_gates[~written]).all(), "d_gates written outside [t, :bs]"


@pytest.mark.interpreter
def test_zero_active_rows_is_a_no_op():
    B, H = 2, 3
    c = torch.randn(B, H)
    h = nan(B, H, dtype=torch.float32)
    before = c.clone()
    pointwise.lstm_cell_forward(torch.randn(0, 4 * H), c, h, out=nan(1, B, H, dtype=torch.float32))
    assert torch.equal(c, before) and torch.isnan(h).all()


def _fwd_args(B=2, H=3, T=2, dtype=torch.float32):
    cdt = compute_dtype(dtype)
    return dict(
        pre=torch.randn(B, 4 * H, dtype=dtype), c=torch.randn(B, H, dtype=cdt),
        h=torch.randn(B, H, dtype=dtype),
        out=torch.randn(T, B, H, dtype=dtype),
    )


@pytest.mark.interpreter
@pytest.mark.parametrize(
    "change, exc, match",
    [
        (lambda a: a.update(pre=torch.randn(2, 11)), ValueError, "columns"),
        (lambda a: a.update(pre=torch.randn(3, 12)), ValueError, "rows"),
        (lambda a: a.update(pre=torch.randn(12, 2).t()), ValueError, "unit column stride"),
        (lambda a: a.update(pre=torch.randn(2, 12, dtype=torch.float64)), TypeError, "pre must be"),
        (lambda a: a.update(c=torch.randn(2, 3, dtype=torch.float64)), TypeError, "c must be"),
        (lambda a: a.update(c=torch.randn(3, 2).t()), ValueError, "contiguous"),
        (lambda a: a.update(h=torch.randint(0, 2, (2, 3))), TypeError, "dtype"),
        (lambda a: a.update(out=torch.randn(2, 2, 4)), ValueError, "out must have shape"),
        (lambda a: a.update(gates=torch.randn(2, 2, 12)), ValueError, "both gates and cs"),
        (lambda a: a.update(out=None, gates=torch.randn(2, 2, 12), cs=torch.randn(2, 2, 3)),
         ValueError, "needs hs"),
        (lambda a: a.update(hs=torch.randn(2, 2, 3)), ValueError, "hs is only written"),
        (lambda a: a.update(t=2), ValueError, "out of range"),
    ],
    ids=["pre-cols", "pre-rows", "pre-stride", "pre-dtype", "c-dtype", "c-noncontig", "h-int", "out-shape",
         "gates-without-cs", "proj-save-without-hs", "hs-with-out", "t-range"],
)
def test_forward_rejects_bad_arguments(change, exc, match):
    args = _fwd_args()
    change(args)
    pre, c, h = args.pop("pre"), args.pop("c"), args.pop("h")
    with pytest.raises(exc, match=match):
        pointwise.lstm_cell_forward(pre, c, h, **args)


@pytest.mark.interpreter
@pytest.mark.parametrize(
    "change, exc, match",
    [
        (lambda a: a.update(dc=torch.randn(2, 3, dtype=torch.float16)), TypeError, "float32 or float64"),
        (lambda a: a.update(dh=torch.randn(3, 3)), ValueError, "rows"),
        (lambda a: a.update(cs=torch.randn(2, 2, 4)), ValueError, "cs must have shape"),
        (lambda a: a.update(c_prev=torch.randn(2, 2, 3, dtype=torch.float64)), TypeError, "c_prev must be"),
        (lambda a: a.update(t=-1), ValueError, "out of range"),
    ],
    ids=["dc-half", "dh-rows", "cs-shape", "c_prev-dtype", "t-range"],
)
def test_backward_rejects_bad_arguments(change, exc, match):
    B, H, T = 2, 3, 2
    args = dict(
        dh=torch.randn(B, H), dc=torch.randn(B, H), gates=torch.rand(T, B, 4 * H), cs=torch.randn(T, B, H),
        c_prev=torch.randn(T, B, H), d_gates=torch.randn(T, B, 4 * H), t=1,
    )
    change(args)
    with pytest.raises(exc, match=match):
        pointwise.lstm_cell_backward(**args)


# ---------------------------------------------------------------------------------------
# Specialization: what Triton's JIT keys a compiled kernel on, per launch.


def _specialization_key(kernel, args, kwargs) -> tuple:
    """The launch's compile key as Triton's JIT forms it: constexpr values, tensor dtype and
    16-byte alignment, and for integers not in do_not_specialize: ==1 and %16==0."""
    names = list(inspect.signature(kernel.fn).parameters)
    bound = dict(zip(names, args))
    bound.update(kwargs)
    key = []
    for name in names:
        v = bound[name]
        ann = kernel.fn.__annotations__.get(name)
        if ann is not None and "constexpr" in str(ann):
            key.append((name, v))
        elif isinstance(v, torch.Tensor):
            key.append((name, v.dtype, v.data_ptr() % 16 == 0))
        elif isinstance(v, int) and name not in pointwise_kernels.DO_NOT_SPECIALIZE:
            key.append((name, v == 1, v % 16 == 0))
        else:
            key.append((name, type(v).__name__))
    key.append(("num_warps", kwargs.get("num_warps")))
    return tuple(key)


class _Recorder:
    """Stands in for a @triton.jit kernel: records each launch's specialization key."""

    def __init__(self, kernel, keys: set):
        self.kernel, self.keys = kernel, keys

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.keys.add(_specialization_key(self.kernel, args, kwargs))
            return self.kernel[grid](*args, **kwargs)

        return launch


def _run_scan(T, batch_sizes, proj, reverse):
    B, H, P = 3, 5, (3 if proj else 5)
    gx = torch.randn(T, B, 4 * H, requires_grad=True)
    h0, c0 = torch.randn(B, P, requires_grad=True), torch.randn(B, H, requires_grad=True)
    w_hh = torch.randn(4 * H, P, requires_grad=True)
    w_hr = torch.randn(P, H, requires_grad=True) if proj else None
    bs = None if batch_sizes is None else torch.tensor(batch_sizes, dtype=torch.int64)
    out, h_n, c_n = pointwise.scan(gx, h0, c0, w_hh, w_hr, bs, reverse)
    (out.sum() + h_n.sum() + c_n.sum()).backward()


@pytest.mark.interpreter
@pytest.mark.parametrize("proj", [False, True], ids=["noproj", "proj"])
def test_sequence_length_and_step_do_not_change_the_specialization(monkeypatch, proj):
    assert set(pointwise_kernels.DO_NOT_SPECIALIZE) == {"t", "bs"}
    for k in (pointwise_launch.forward_kernel, pointwise_launch.backward_kernel):
        # The interpreter keeps the jit options in .kwargs, a compiled JITFunction as indices.
        opts = getattr(k, "kwargs", None)
        if opts is not None:
            assert list(opts.get("do_not_specialize", [])) == list(pointwise_kernels.DO_NOT_SPECIALIZE)
    keys_by_run = []
    for T, batch_sizes, reverse in [(1, None, False), (2, [3, 1], True), (5, [3, 3, 2, 2, 1], False)]:
        fwd, bwd = set(), set()
        monkeypatch.setattr(pointwise_launch, "forward_kernel", _Recorder(pointwise_launch.forward_kernel, fwd))
        monkeypatch.setattr(pointwise_launch, "backward_kernel", _Recorder(pointwise_launch.backward_kernel, bwd))
        _run_scan(T, batch_sizes, proj, reverse)
        monkeypatch.undo()
        keys_by_run.append((fwd, bwd))
    for fwd, bwd in keys_by_run:
        assert len(fwd) == 1 and len(bwd) == 1, "one scan compiled more than one variant per kernel"
        assert (fwd, bwd) == keys_by_run[0], "the sequence length or batch_sizes changed the specialization"


def test_aot_specs_cover_every_launch_configuration():
    """Each (dtype, BLOCK_H, flags) the launchers can produce has exactly one spec."""
    specs = pointwise_aot.aot_specs(90)
    fwd = {(s.signature["p_h"], s.constexprs["BLOCK_H"], s.constexprs["SAVE"], s.constexprs["PROJ"])
           for s in specs if s.kernel is pointwise_launch.forward_kernel}
    bwd = {(s.signature["p_dc"], s.constexprs["BLOCK_H"])
           for s in specs if s.kernel is pointwise_launch.backward_kernel}
    assert len(fwd) + len(bwd) == len(specs)
    types = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16", torch.float64: "*fp64"}
    for H in (1, 31, 32, 33, 100, 1000, 1024, 1025, 5000):
        BLOCK_H = pointwise_tiling.block_h(H)
        assert BLOCK_H in pointwise_tiling.BLOCK_H_CHOICES and BLOCK_H * pointwise_tiling.block_rows(BLOCK_H) == pointwise_tiling.TILE
        for dtype in pointwise_launch.STORAGE_DTYPES:
            for save in (False, True):
                for proj in (False, True):
                    assert (types[dtype], BLOCK_H, save, proj) in fwd
            assert (types[compute_dtype(dtype)], BLOCK_H) in bwd
    for s in specs:
        names = list(inspect.signature(s.kernel.fn).parameters)
        assert list(s.signature) == names, "signature must list every kernel argument in order"
        assert set(s.constexprs) == {n for n, ty in s.signature.items() if ty == "constexpr"}


@pytest.mark.gpu
def test_compiled_kernels_do_not_grow_with_sequence_length():
    """On a GPU: the JIT caches stop growing after the first scan, whatever T is."""
    if triton_interpreting():
        pytest.fail("GPU tests compile real kernels: run them with TRITON_INTERPRET=0")
    device = torch.device("cuda")

    def cache_size(kernel):
        caches = kernel.device_caches[device.index or torch.cuda.current_device()]
        return len(caches[0])

    def run(T):
        B, H = 4, 40
        gx = torch.randn(T, B, 4 * H, device=device, requires_grad=True)
        h0 = torch.randn(B, H, device=device, requires_grad=True)
        c0 = torch.randn(B, H, device=device, requires_grad=True)
        w_hh = torch.randn(4 * H, H, device=device, requires_grad=True)
        bs = torch.tensor(sorted(torch.randint(1, B + 1, (T,)).tolist(), reverse=True))
        out, h_n, c_n = pointwise.scan(gx, h0, c0, w_hh, None, bs, False)
        (out.sum() + h_n.sum() + c_n.sum()).backward()
        torch.cuda.synchronize()

    run(3)
    sizes = (cache_size(pointwise_launch.forward_kernel), cache_size(pointwise_launch.backward_kernel))
    for T in (1, 7, 50):
        run(T)
    assert (cache_size(pointwise_launch.forward_kernel), cache_size(pointwise_launch.backward_kernel)) == sizes
