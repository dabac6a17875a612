"""The backward latency anatomy (``benchmarks/backward_anatomy.py``): its CPU rehearsal runs
every level of both layouts through the interpreter and matches torch, its reference is
nn.LSTM's backward, its checks catch a wrong gradient or a broken barrier, and every kernel
it would launch compiles for sm_90 without spilling.

Dimensions: T steps, B batch, H hidden, NP programs.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "backward_anatomy.py")
ROW_KEYS = {"component", "level", "layout", "NP", "prefetch", "us_per_step", "marginal_us_per_step", "delta_us",
            "polls_per_step", "spin_budget_spent", "max_err", "ok", "problems"}


@pytest.fixture(scope="module")
def bwd():
    return load_script("backward_anatomy")


def _dry_run(bwd, out, *extra):
    rc = bwd.main(["--dry-run", "--out", str(out), "--runs", "1", *extra])
    with open(os.path.join(out, "backward_anatomy.json")) as f:
        return rc, json.load(f)


@pytest.mark.parametrize("extra", [(), ("--dtype", "float32", "--H", "32", "--T", "6")], ids=["bf16", "fp32"])
def test_dry_run_times_every_level_of_both_layouts_and_matches_torch(bwd, tmp_path, capsys, extra):
    rc, result = _dry_run(bwd, tmp_path, *extra)
    assert rc == 0, capsys.readouterr().out
    assert result["dry_run"] is True and result["device"].startswith("cpu") and result["poll"] == "atomic"
    rows = result["rows"]
    assert all(ROW_KEYS <= set(r) for r in rows)
    assert all(r["ok"] and r["NP"] == 1 for r in rows), [r for r in rows if not r["ok"]]
    for layout in bwd.LAYOUTS:
        stack = [r for r in rows if r["layout"] == layout]
        assert [(r["level"], r["prefetch"]) for r in stack] == \
            [(k, False) for k in range(1, len(bwd.LEVELS) + 1)] + [(len(bwd.LEVELS), True)]
        assert all(r["delta_us"] is not None for r in stack[1:])
        assert all(r["max_err"] <= 1e-5 for r in stack)  # the interpreter computes in fp32
    assert result["skipped"] == []
    assert "+stores[rows,prefetch]" in capsys.readouterr().out


def test_the_script_sets_the_interpreter_itself_for_a_dry_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # as on a GPU machine
    run = subprocess.run([sys.executable, SCRIPT, "--dry-run", "--out", str(tmp_path), "--runs", "1",
                          "--layout", "rows"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    with open(tmp_path / "backward_anatomy.json") as f:
        assert {r["layout"] for r in json.load(f)["rows"]} == {"rows"}


def test_the_reference_is_nn_lstms_backward(bwd):
    # Levels 3-4 are checked against bwd.reference; given the saved state of a real forward,
    # its gate gradients must be nn.LSTM's input gradients (W_ih = I, no bias: the input is
    # the pre-activation) and its final dc the gradient of c0.
    B, H, T = 3, 16, 5
    prob = bwd.Problem(B, H, T, torch.float32, torch.device("cpu"))
    gx = torch.randn(T, B, 4 * H, requires_grad=True)
    h0 = torch.randn(B, H)
    c0 = torch.randn(B, H, requires_grad=True)
    lstm = torch.nn.LSTM(4 * H, H, bias=False)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.eye(4 * H))
        lstm.weight_hh_l0.copy_(prob.w)
    out, (h_n, _) = lstm(gx, (h0[None], c0[None]))
    (out * prob.dout).sum().add((h_n[0] * prob.dh0).sum()).backward()
    with torch.no_grad():  # the forward's saved state, from its own step loop
        h, c, gates, cs = h0, c0.detach(), [], [c0.detach()]
        for t in range(T):
            i, f, g, o = (gx[t] + h @ prob.w.t()).chunk(4, dim=1)
            i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
            c = f * c + i * g
            h = o * torch.tanh(c)
            gates.append(torch.cat([i, f, g, o], dim=1))
            cs.append(c)
    prob.sg, prob.sc = torch.stack(gates), torch.stack(cs)
    ref = bwd.reference(bwd.Variant(4, "rows", 1), prob)
    torch.testing.assert_close(ref["dg"], gx.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ref["dc"], c0.grad, atol=1e-6, rtol=1e-5)


def test_check_catches_a_wrong_gradient_and_an_incomplete_barrier(bwd):
    prob = bwd.Problem(16, 16, 3, torch.float32, torch.device("cpu"))
    for layout in bwd.LAYOUTS:
        v = bwd.Variant(4, layout, 1)
        bufs = bwd.buffers(v, prob)
        bwd.launch(v, prob, 3, bufs)
        assert bwd.check(v, prob, bufs)["ok"]
        bufs["dg"][1, 3, 5] += 0.01
        bad = bwd.check(v, prob, bufs)
        assert not bad["ok"] and "max error" in bad["problems"][0]
        bufs["sync"].sub_(1)
        assert any("barrier count" in p for p in bwd.check(v, prob, bufs)["problems"])


def test_variants_that_cannot_run_are_named_not_launched(bwd):
    assert "KiB" in bwd.fit_problem(bwd.Variant(2, "rows", 2), 16, 256, torch.bfloat16, 132)
    assert "at least 16" in bwd.fit_problem(bwd.Variant(2, "columns", 32), 16, 256, torch.bfloat16, 132)
    assert "SMs" in bwd.fit_problem(bwd.Variant(1, "rows", 16), 16, 256, torch.bfloat16, 8)
    assert "sm_90" in bwd.fit_problem(bwd.Variant(1, "rows", 8), 16, 256, torch.bfloat16, 108, major=8)
    assert bwd.fit_problem(bwd.Variant(4, "columns", 4), 16, 256, torch.bfloat16, 132, major=9) is None


@pytest.mark.parametrize("argv, message", [
    (["--dry-run", "--out", "x", "--np", "1,8"], "NP=1 only"),
    (["--aot", "sm_80"], "need sm_90"),
], ids=["np-above-one", "sm80"])
def test_refuses_what_it_cannot_run(bwd, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        bwd.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_the_kernels_compile_for_sm90_without_spills():
    # NP=4 holds the largest slices (128 KiB; the column layout's wgmma operand), NP=16 the
    # widest share sum. The full sweep is `python benchmarks/backward_anatomy.py --aot sm_90`.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, SCRIPT, "--aot", "sm_90", "--np", "4,16"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "sm_90: 20 kernels checked, 0 failed to compile, 0 spill" in run.stdout, run.stdout


@pytest.mark.gpu
def test_gpu_run_is_correct_at_every_np(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, SCRIPT, "--out", str(tmp_path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    with open(tmp_path / "backward_anatomy.json") as f:
        result = json.load(f)
    assert result["device"] == torch.cuda.get_device_name(0) and result["elapsed_s"] < 60
    assert {r["NP"] for r in result["rows"]} == set(load_script("backward_anatomy").NP_DEFAULT)
