"""Shared test helpers: LSTM configurations, readable ids, and the nn.LSTM parity checker.

Every parity test builds an ``nn.LSTM`` and an ``lstm_kernels.LSTM`` with the same
weights, feeds both the same random input (batched, batch_first, unbatched or a
PackedSequence, with or without ``(h0, c0)``), and compares outputs, ``h_n``, ``c_n``
and the gradients of input, ``h0``, ``c0`` and every parameter (by name) under random
upstream gradients. Tolerances come only from ``conftest.tol``.

Dimensions: T seq len, B batch, I input, H hidden, P = proj_size or H, L layers,
D = 2 if bidirectional else 1.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import os
import random
import sys
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import lstm_kernels
# Script the TorchScript path now: conftest's NaN-poisoned torch.empty cannot be scripted.
import lstm_kernels.scripted  # noqa: F401
from conftest import tol

# How the input is presented to the module.
MODES = (
    "batched",  # [T, B, I] ([B, T, I] with batch_first)
    "unbatched",  # [T, I]
    "packed",  # PackedSequence from lengths sorted descending, enforce_sorted=True
    "packed-sorted-noenforce",  # lengths sorted descending, enforce_sorted=False
    "packed-unsorted",  # lengths in random order, enforce_sorted=False
)

LOW_PRECISION = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class Config:
    """One LSTM problem: constructor arguments plus the input's shape and presentation."""

    input_size: int = 5
    hidden_size: int = 7
    num_layers: int = 1
    bias: bool = True
    batch_first: bool = False
    bidirectional: bool = False
    proj_size: int = 0
    dropout: float = 0.0
    T: int = 4
    B: int = 3
    mode: str = "batched"
    with_hx: bool = True
    # Feed sliced / transposed (non-contiguous) input and states instead of fresh tensors.
    strided: bool = False
    # Multiplies the random input: large values drive the gates into saturation.
    input_scale: float = 1.0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")

    @property
    def D(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def P(self) -> int:
        return self.proj_size if self.proj_size > 0 else self.hidden_size

    @property
    def packed(self) -> bool:
        return self.mode.startswith("packed")

    def module_kwargs(self) -> dict:
        return dict(
            input_size=self.input_size, hidden_size=self.hidden_size, num_layers=self.num_layers,
            bias=self.bias, batch_first=self.batch_first, dropout=self.dropout,
            bidirectional=self.bidirectional, proj_size=self.proj_size,
        )

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)


def config_id(cfg: Config) -> str:
    """A readable pytest id, e.g. ``L2-bi-proj3-B3-T7-I5-H33-bf-packed``."""
    parts = [f"L{cfg.num_layers}"]
    if cfg.bidirectional:
        parts.append("bi")
    if cfg.proj_size:
        parts.append(f"proj{cfg.proj_size}")
    batch = "" if cfg.mode == "unbatched" else f"B{cfg.B}-"  # unbatched input has no batch size
    parts.append(f"{batch}T{cfg.T}-I{cfg.input_size}-H{cfg.hidden_size}")
    if cfg.batch_first:
        parts.append("bf")
    if not cfg.bias:
        parts.append("nobias")
    if cfg.dropout:
        parts.append(f"drop{cfg.dropout:g}")
    if cfg.mode != "batched":
        parts.append(cfg.mode)
    if not cfg.with_hx:
        parts.append("nohx")
    if cfg.strided:
        parts.append("strided")
    if cfg.input_scale != 1.0:
        parts.append(f"x{cfg.input_scale:g}")
    return "-".join(parts)


def dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _randn(shape, dtype, device, strided: bool) -> torch.Tensor:
    """Random normal tensor; with ``strided`` a non-contiguous view (transposed and sliced)."""
    if not strided:
        return torch.randn(shape, dtype=dtype, device=device)
    # Reverse the dims and double the last one, then step 2 over it and transpose back:
    # a view with no unit stride anywhere.
    big = torch.randn(tuple(reversed(shape[:-1])) + (shape[-1] * 2,), dtype=dtype, device=device)
    view = big[..., ::2]
    if len(shape) > 1:
        view = view.permute(*range(len(shape) - 2, -1, -1), len(shape) - 1)
    assert view.shape == tuple(shape)
    return view


def oracle_dtype_for(dtype: torch.dtype) -> torch.dtype:
    """nn.LSTM's dtype when comparing a module stored in ``dtype``: float64 for half/bfloat16."""
    return torch.float64 if dtype in LOW_PRECISION else dtype


def make_pair(cfg: Config, backend: str, dtype: torch.dtype = torch.float32, device="cpu", *,
              oracle_dtype: Optional[torch.dtype] = None, oracle_device=None):
    """``(torch_lstm, ours)``: an nn.LSTM and an lstm_kernels.LSTM with identical weights.

    ``ours`` is in ``dtype`` on ``device``. ``torch_lstm`` is in ``oracle_dtype`` (default:
    ``dtype``, but float64 for float16/bfloat16) on ``oracle_device`` (default ``device``),
    holding exactly the same weight values.
    """
    ref_dtype = oracle_dtype or oracle_dtype_for(dtype)
    ref_device = device if oracle_device is None else oracle_device
    ours = lstm_kernels.LSTM(**cfg.module_kwargs(), device=device, dtype=dtype, backend=backend)
    torch_lstm = nn.LSTM(**cfg.module_kwargs(), device=ref_device, dtype=ref_dtype)
    state = {k: v.to(device=ref_device, dtype=ref_dtype) for k, v in ours.state_dict().items()}
    torch_lstm.load_state_dict(state)
    return torch_lstm, ours


def _lengths(cfg: Config) -> list[int]:
    """Random lengths in [1, T], the longest exactly T; sorted descending unless 'unsorted'."""
    lengths = torch.randint(1, cfg.T + 1, (cfg.B,))
    lengths[torch.randint(0, cfg.B, ())] = cfg.T
    lengths = lengths.sort(descending=True).values
    if cfg.mode == "packed-unsorted" and cfg.B > 1:
        perm = torch.randperm(cfg.B)
        while cfg.B > 1 and torch.equal(perm, torch.arange(cfg.B)):
            perm = torch.randperm(cfg.B)
        lengths = lengths[perm]
    return lengths.tolist()


def make_inputs(cfg: Config, dtype: torch.dtype, device="cpu"):
    """Random leaf tensors ``x`` (padded layout), ``h0``, ``c0`` (or None) and the lengths."""
    if cfg.mode == "unbatched":
        x_shape = (cfg.T, cfg.input_size)
        h_shape = (cfg.num_layers * cfg.D, cfg.P)
        c_shape = (cfg.num_layers * cfg.D, cfg.hidden_size)
    else:
        x_shape = (cfg.B, cfg.T, cfg.input_size) if cfg.batch_first else (cfg.T, cfg.B, cfg.input_size)
        h_shape = (cfg.num_layers * cfg.D, cfg.B, cfg.P)
        c_shape = (cfg.num_layers * cfg.D, cfg.B, cfg.hidden_size)
    x = _randn(x_shape, dtype, device, cfg.strided)
    if cfg.input_scale != 1.0:
        x.mul_(cfg.input_scale)
    x.requires_grad_()
    h0 = c0 = None
    if cfg.with_hx:
        h0 = _randn(h_shape, dtype, device, cfg.strided).requires_grad_()
        c0 = _randn(c_shape, dtype, device, cfg.strided).requires_grad_()
    lengths = _lengths(cfg) if cfg.packed else None
    return x, h0, c0, lengths


def _as_model_input(cfg: Config, x, lengths, dtype: Optional[torch.dtype] = None):
    """Cast (keeping the autograd link to the leaf ``x``) and pack if the mode asks for it."""
    xin = x if dtype is None or x.dtype == dtype else x.to(dtype)
    if not cfg.packed:
        return xin
    enforce = cfg.mode == "packed"
    return pack_padded_sequence(
        xin, torch.tensor(lengths), batch_first=cfg.batch_first, enforce_sorted=enforce
    )


def _cast_state(t, dtype):
    return None if t is None else (t if t.dtype == dtype else t.to(dtype))


def run_module(module: nn.Module, cfg: Config, x, h0, c0, lengths, dtype: torch.dtype):
    """Forward ``module`` on the leaves (cast to ``dtype``). Returns ``(out_tensor, h_n, c_n, raw_out)``."""
    xin = _as_model_input(cfg, x, lengths, dtype)
    hx = None if h0 is None else (_cast_state(h0, dtype), _cast_state(c0, dtype))
    out, (h_n, c_n) = module(xin, hx) if hx is not None else module(xin)
    out_t = out.data if isinstance(out, PackedSequence) else out
    return out_t, h_n, c_n, out


def _grads(module, out, h_n, c_n, g_out, g_h, g_c, leaves):
    """Gradients of sum(out*g_out + h_n*g_h + c_n*g_c) w.r.t. leaves and parameters (by name)."""
    loss = (out * g_out.to(out)).sum() + (h_n * g_h.to(h_n)).sum() + (c_n * g_c.to(c_n)).sum()
    names = [n for n, _ in module.named_parameters()]
    params = [p for _, p in module.named_parameters()]
    leaf_names = [k for k, v in leaves.items() if v is not None]
    leaf_tensors = [leaves[k] for k in leaf_names]
    grads = torch.autograd.grad(loss, leaf_tensors + params, allow_unused=True)
    result = dict(zip(leaf_names, grads[: len(leaf_names)]))
    result.update({"param:" + n: g for n, g in zip(names, grads[len(leaf_names):])})
    return result


def assert_close_to_oracle(name: str, got, want, dtype, kind, eager=None):
    """Equal within the table's tolerance; for float16/bfloat16 the flash-attention rule.

    Low precision: ``got`` and ``eager`` (the reference backend in the same dtype) are
    both compared against the float64 oracle ``want``. Rounding error in half/bfloat16
    grows with T, H and the accumulation order, so no fixed tolerance fits all sizes;
    the eager path measures the error the dtype itself causes, and a backend passes if
    its max error is at most twice that plus the table's atol. Without ``eager`` (the
    reference backend checked against itself would be circular) the table applies.
    """
    assert got is not None, f"{name}: gradient missing"
    assert want is not None, f"{name}: oracle gradient missing"
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    if dtype in LOW_PRECISION and eager is not None:
        atol = tol(dtype, kind)["atol"]
        want64 = want.double()
        err = (got.to(want64) - want64).abs().max().item()
        eager_err = (eager.to(want64) - want64).abs().max().item()
        assert err <= 2 * eager_err + atol, (
            f"{name}: max error {err:.3g} > 2 * eager-reference error {eager_err:.3g} + atol {atol:g}"
        )
        return
    assert got.dtype == dtype, f"{name}: dtype {got.dtype} != {dtype}"
    torch.testing.assert_close(got.to(want), want, **tol(dtype, kind), msg=lambda m: f"{name}: {m}")


def check_lstm_against_torch(
    cfg: Config,
    backend: str,
    dtype: torch.dtype = torch.float32,
    *,
    device="cpu",
    grads: bool = True,
    training: bool = False,
    oracle_dtype: Optional[torch.dtype] = None,
    oracle_device=None,
):
    """Run nn.LSTM and lstm_kernels.LSTM(backend) on the same data and compare everything.

    Compares output (and PackedSequence metadata), h_n, c_n; with ``grads`` also the
    gradients of input, h0, c0 and every parameter under random upstream gradients.
    ``training`` puts both modules in train mode (only meaningful with dropout=0 or L=1).
    For float16/bfloat16 the oracle is a float64 nn.LSTM with the same weights, and the
    reference backend in the same dtype sets the error budget (see ``assert_close_to_oracle``).
    ``oracle_dtype`` / ``oracle_device`` move nn.LSTM elsewhere, e.g. float64 on CPU to
    check a GPU backend against an oracle free of TF32 and cuDNN's own rounding.
    Returns ``(torch_lstm, ours)`` for further checks.
    """
    torch_lstm, ours = make_pair(
        cfg, backend, dtype, device, oracle_dtype=oracle_dtype, oracle_device=oracle_device
    )
    torch_lstm.train(training)
    ours.train(training)
    x, h0, c0, lengths = make_inputs(cfg, dtype, device)
    ref_dtype = torch_lstm.weight_ih_l0.dtype
    ref_device = torch_lstm.weight_ih_l0.device

    # The oracle gets its own leaves when its dtype or device differ, so its input
    # gradients are not rounded back to the low dtype on the way to a shared leaf.
    ref_leaves = {"input": x, "h0": h0, "c0": c0}
    if ref_dtype != dtype or ref_device != x.device:
        ref_leaves = {
            k: None if v is None else v.detach().to(device=ref_device, dtype=ref_dtype).requires_grad_()
            for k, v in ref_leaves.items()
        }

    out, h_n, c_n, raw = run_module(ours, cfg, x, h0, c0, lengths, dtype)
    w_out, w_h, w_c, w_raw = run_module(
        torch_lstm, cfg, ref_leaves["input"], ref_leaves["h0"], ref_leaves["c0"], lengths, ref_dtype
    )

    eager = None
    if dtype in LOW_PRECISION and backend != "reference":
        eager_mod = lstm_kernels.LSTM(**cfg.module_kwargs(), device=device, dtype=dtype, backend="reference")
        eager_mod.load_state_dict(ours.state_dict())
        eager_mod.train(training)
        e_out, e_h, e_c, _ = run_module(eager_mod, cfg, x, h0, c0, lengths, dtype)
        eager = {"out": e_out, "h_n": e_h, "c_n": e_c}

    assert type(raw) is type(w_raw), f"output type {type(raw).__name__} != {type(w_raw).__name__}"
    if isinstance(raw, PackedSequence):
        assert torch.equal(raw.batch_sizes, w_raw.batch_sizes)
        for field in ("sorted_indices", "unsorted_indices"):
            a, b = getattr(raw, field), getattr(w_raw, field)
            assert (a is None) == (b is None), field
            if a is not None:
                assert torch.equal(a.cpu(), b.cpu()), field
    for name, got, want in (("out", out, w_out), ("h_n", h_n, w_h), ("c_n", c_n, w_c)):
        assert_close_to_oracle(name, got, want, dtype, "out", None if eager is None else eager[name])

    if not grads:
        return torch_lstm, ours
    g_out = torch.randn(w_out.shape, dtype=ref_dtype, device=ref_device)
    g_h = torch.randn(w_h.shape, dtype=ref_dtype, device=ref_device)
    g_c = torch.randn(w_c.shape, dtype=ref_dtype, device=ref_device)
    leaves = {"input": x, "h0": h0, "c0": c0}
    got = _grads(ours, out, h_n, c_n, g_out, g_h, g_c, leaves)
    want = _grads(torch_lstm, w_out, w_h, w_c, g_out, g_h, g_c, ref_leaves)
    eager_grads = None
    if eager is not None:
        eager_grads = _grads(eager_mod, eager["out"], eager["h_n"], eager["c_n"], g_out, g_h, g_c, leaves)
    assert set(got) == set(want), f"gradient names differ: {sorted(set(got) ^ set(want))}"
    for name in want:
        assert_close_to_oracle(f"grad {name}", got[name], want[name], dtype, "grad",
                               None if eager_grads is None else eager_grads[name])
    return torch_lstm, ours


def load_script(name: str):
    """``benchmarks/<name>.py`` as a module (the benchmarks are scripts, not part of the package).

    Loaded from its file, so ``sys.path`` is left as it was: a benchmarks/ entry there would
    shadow tests/conftest.py in every later import, spawned processes included
    (tests/test_dispatch.py::test_concurrent_writers_keep_every_entry).
    """
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", name + ".py")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(mod)
    return mod


def import_gpu_suite():
    return load_script("gpu_suite")


def pairwise(factors: dict, seed: int = 0, candidates: int = 60) -> list[dict]:
    """A small set of assignments covering every pair of factor values (greedy, deterministic)."""
    names = list(factors)
    uncovered = {
        (a, i, b, j)
        for a, b in itertools.combinations(range(len(names)), 2)
        for i in range(len(factors[names[a]]))
        for j in range(len(factors[names[b]]))
    }
    rng = random.Random(seed)
    rows = []
    while uncovered:
        # Seed each candidate from one uncovered pair so every round makes progress.
        a, i, b, j = min(uncovered)
        best, best_gain = None, -1
        for _ in range(candidates):
            row = [rng.randrange(len(factors[n])) for n in names]
            row[a], row[b] = i, j
            gain = sum(
                (p, row[p], q, row[q]) in uncovered for p, q in itertools.combinations(range(len(names)), 2)
            )
            if gain > best_gain:
                best, best_gain = row, gain
        uncovered -= {(p, best[p], q, best[q]) for p, q in itertools.combinations(range(len(names)), 2)}
        rows.append({n: factors[n][k] for n, k in zip(names, best)})
    return rows
