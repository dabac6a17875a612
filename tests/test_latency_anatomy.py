"""The latency anatomy (``benchmarks/latency_anatomy.py``): its CPU rehearsal runs every level
through the interpreter and matches torch, its checks catch a wrong h or a broken barrier,
and every kernel it would launch compiles for sm_80 and sm_90 without spilling.

Dimensions: T steps, B batch, H hidden, NP programs.
"""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from helpers import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "latency_anatomy.py")
ROW_KEYS = {"component", "level", "poll", "arrive_seen", "NP", "gate_major", "us_per_step",
            "marginal_us_per_step", "delta_us", "polls_per_step", "spin_budget_spent", "ok", "problems"}
TOP_KEYS = {"device", "date", "sm_count", "dry_run", "B", "H", "T", "dtype", "num_warps", "rows", "skipped",
            "elapsed_s"}


@pytest.fixture(scope="module")
def anatomy():
    return load_script("latency_anatomy")


def _dry_run(anatomy, out, *extra):
    rc = anatomy.main(["--dry-run", "--out", str(out), "--runs", "1", *extra])
    with open(os.path.join(out, "latency_anatomy.json")) as f:
        return rc, json.load(f)


def test_dry_run_times_every_level_and_poll_and_matches_torch(anatomy, tmp_path, capsys):
    rc, result = _dry_run(anatomy, tmp_path)
    assert rc == 0, capsys.readouterr().out
    assert TOP_KEYS <= set(result)
    assert result["dry_run"] is True and result["device"].startswith("cpu")
    assert (result["B"], result["H"], result["T"], result["dtype"]) == (16, 16, 4, "bfloat16")
    rows = result["rows"]
    assert all(ROW_KEYS <= set(r) for r in rows)
    assert all(r["NP"] == 1 and r["ok"] for r in rows), [r for r in rows if not r["ok"]]
    interpretable = [p for p in anatomy.POLLS if p != "acquire"]  # inline PTX: GPU only
    barrier = {(r["poll"], r["arrive_seen"]) for r in rows if r["level"] == 1}
    assert barrier == {(p, a) for p in interpretable for a in (False, True)}
    # Each interpretable poll's stack, the first one's gate-major twin, and the tagged exchange
    # (no barrier) in the gate-major form.
    stacks = [(p, False) for p in interpretable] + [(anatomy.POLLS[0], True), ("tagged", True)]
    assert {(r["poll"], r["gate_major"]) for r in rows if r["level"] >= 2} == set(stacks)
    for poll, gate_major in stacks:
        stack = [r for r in rows if (r["poll"], r["gate_major"]) == (poll, gate_major) and r["level"] >= 2]
        assert [r["level"] for r in stack] == list(range(2, len(anatomy.LEVELS) + 1))
        assert all(r["max_err"] <= anatomy.TOLERANCE[torch.bfloat16] for r in stack)
        assert all(r["us_per_step"] > 0 for r in stack)
        # Each level against the one before; the tagged exchange has no barrier row below it.
        assert all(r["delta_us"] is not None for r in stack[poll == "tagged":])
    assert len(result["skipped"]) == 2 + len(anatomy.LEVELS) - 1
    assert all(s["poll"] == "acquire" and "inline PTX" in s["reason"] for s in result["skipped"])
    assert "+stores[atomic]" in capsys.readouterr().out


def test_the_script_sets_the_interpreter_itself_for_a_dry_run(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # as on a GPU machine
    run = subprocess.run([sys.executable, SCRIPT, "--dry-run", "--out", str(tmp_path), "--runs", "1",
                          "--poll", "atomic"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert re.search(r"^\+stores\[atomic\]\s+1\s", run.stdout, re.MULTILINE), run.stdout
    with open(tmp_path / "latency_anatomy.json") as f:
        assert json.load(f)["dry_run"] is True


def test_tagged_exchange_needs_no_barrier_and_refuses_32_bit_h(anatomy, tmp_path):
    # The tagged stack never touches the barrier's counter; its h words carry the step's tag.
    prob = anatomy.Problem(16, 16, 5, torch.bfloat16, torch.device("cpu"))
    v = anatomy.Variant(6, "tagged", False, 1, gate_major=True)
    bufs = anatomy.buffers(v, prob, 5)
    anatomy.launch(v, prob, 5, bufs)
    row = anatomy.check(v, prob, 5, bufs)
    assert row["ok"] and int(bufs["sync"].item()) == 0, row
    assert ((bufs["hx"][0] >> 16) & 0xFFFF == 4).all()  # step 4 (the last) wrote buffer 0
    torch.testing.assert_close(anatomy.untagged(anatomy.tagged_words(prob.h0, 7), torch.bfloat16), prob.h0)
    bufs["hx"][0, 2, 3] += 1 << 6  # one h, not its tag
    assert not anatomy.check(v, prob, 5, bufs)["ok"]
    assert "16-bit" in anatomy.fit_problem(v, 16, 16, torch.float32, None)


def test_dry_run_in_float32_matches_the_step_loop_to_fp32_tolerance(anatomy, tmp_path):
    rc, result = _dry_run(anatomy, tmp_path, "--dtype", "float32", "--H", "32", "--T", "5",
                          "--poll", "volatile")
    assert rc == 0
    computed = [r for r in result["rows"] if r["level"] >= 2]
    assert len(computed) == 2 * (len(anatomy.LEVELS) - 1)  # batch-major and gate-major
    assert all(r["max_err"] <= 1e-5 for r in computed), computed


def test_the_reference_step_loop_is_nn_lstm(anatomy):
    # Levels 4-6 are checked against anatomy.reference; it must itself be nn.LSTM's step,
    # here with W_ih = I and no bias, so its input is exactly gx.
    prob = anatomy.Problem(4, 16, 6, torch.float32, torch.device("cpu"))
    lstm = torch.nn.LSTM(64, 16, bias=False)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.eye(64))
        lstm.weight_hh_l0.copy_(prob.w)
        out, (h_n, c_n) = lstm(prob.gx, (prob.h0[None], prob.c0[None]))
    ref = anatomy.reference(6, prob, 6)
    torch.testing.assert_close(ref["out"], out, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(ref["c"], c_n[0], atol=1e-6, rtol=1e-5)


def test_check_catches_a_wrong_h_and_an_incomplete_barrier(anatomy):
    prob = anatomy.Problem(16, 16, 3, torch.float32, torch.device("cpu"))
    v = anatomy.Variant(6, "atomic", False, 1)
    bufs = anatomy.buffers(v, prob, 3)
    anatomy.launch(v, prob, 3, bufs)
    assert anatomy.check(v, prob, 3, bufs)["ok"]
    bufs["hx"][0, 3, 5] += 0.01  # step 3's h, one element
    bad = anatomy.check(v, prob, 3, bufs)
    assert not bad["ok"] and "max error" in bad["problems"][0]
    bufs["sync"].sub_(1)
    assert any("barrier count" in p for p in anatomy.check(v, prob, 3, bufs)["problems"])
    bufs["stat"].fill_(anatomy.MAX_SPIN)  # a program that stopped waiting
    spent = anatomy.check(v, prob, 3, bufs)
    assert spent["spin_budget_spent"] and any("spin budget" in p for p in spent["problems"])


def test_a_barrier_that_spins_out_is_not_timed(anatomy, monkeypatch):
    prob = anatomy.Problem(16, 16, 4, torch.float32, torch.device("cpu"))
    real = anatomy.launch
    launches = []

    def spin_out(v, prob, T, bufs):
        launches.append(T)
        real(v, prob, T, bufs)
        bufs["stat"].fill_(anatomy.MAX_SPIN)

    monkeypatch.setattr(anatomy, "launch", spin_out)
    v = anatomy.Variant(1, "volatile", False, 1)
    row = anatomy.time_variant(v, prob, anatomy.Timer(prob.device), runs=3)
    assert launches == [4] and not row["ok"] and row["us_per_step"] is None


def test_a_launch_that_fails_fails_its_row_and_the_exit_status(anatomy, tmp_path, monkeypatch):
    real = anatomy.launch

    def refuse_wide_grids(v, *args):
        if v.level == 3:
            raise RuntimeError("cooperative launch too large")
        return real(v, *args)

    monkeypatch.setattr(anatomy, "launch", refuse_wide_grids)
    rc, result = _dry_run(anatomy, tmp_path, "--poll", "atomic")
    assert rc == 1
    failed = [r for r in result["rows"] if not r["ok"]]
    assert [r["component"] for r in failed] == ["+dot[atomic]", "+dot[atomic,gate-major]"]
    assert "cooperative launch too large" in failed[0]["problems"][0]
    after = next(r for r in result["rows"] if r["component"] == "+cell[atomic]")
    assert after["ok"] and after["delta_us"] is None  # nothing to compare against


def test_variants_that_cannot_run_are_named_not_launched(anatomy):
    wide = anatomy.Variant(3, "atomic", False, 1)  # H=256: a [256, 1024] bf16 slice per program
    assert "KiB" in anatomy.fit_problem(wide, 16, 256, torch.bfloat16, 132)
    assert anatomy.fit_problem(anatomy.Variant(3, "atomic", False, 8), 16, 256, torch.bfloat16, 132) is None
    many = anatomy.Variant(1, "volatile", False, 128)
    assert "SMs" in anatomy.fit_problem(many, 16, 256, torch.bfloat16, 114)


@pytest.mark.parametrize("argv, message", [
    (["--np", "1,8"], "NP=1 only"),
    (["--B", "12"], "--B must be a power of two"),
    (["--H", "8"], "--H must be a power of two"),
], ids=["np-above-one", "batch", "hidden"])
def test_dry_run_refuses_what_it_cannot_run(anatomy, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        anatomy.main(["--dry-run", "--out", str(tmp_path), *argv])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_aot_refuses_an_unknown_target(anatomy, capsys):
    with pytest.raises(SystemExit) as e:
        anatomy.main(["--aot", "sm_75"])
    assert e.value.code == 2
    assert "--aot: --arch must be one of" in capsys.readouterr().err


def test_the_kernels_compile_for_sm80_and_sm90_without_spills():
    # Both architectures at once, one process each: they share the 2 CPUs. NP=8 holds the
    # largest W slice on chip, NP=128 the narrowest (padded) gates; every poll compiles in
    # the barrier variants, the levels above on the package's atomic poll. The full sweep
    # (every NP, every poll's stack) is `python benchmarks/latency_anatomy.py --aot sm_90`.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the script sets it itself
    args = ["--np", "8,128", "--poll", "atomic"]
    procs = {
        arch: subprocess.Popen([sys.executable, SCRIPT, "--aot", f"sm_{arch}", *args], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for arch in (80, 90)
    }
    try:
        for arch, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=300)
            assert proc.returncode == 0, f"sm_{arch}:\n{stdout}\n{stderr[-4000:]}"
            # 6 barrier variants (one compile for every NP) + 5 levels, batch- and gate-major,
            # per NP that fits: sm_80's 108 SMs cannot hold NP=128 resident, so NP=8 only.
            count = {80: 6 + 10, 90: 6 + 20}[arch]
            assert f"sm_{arch}: {count} kernels checked, 0 failed to compile, 0 spill" in stdout, stdout
            ptx = _ptx_table(stdout)
            # The volatile and acquire polls are every thread's own load: no shared-memory
            # broadcast of the count (the atomic poll's, triton-lang/triton#7125).
            for poll, load in (("volatile", "ld.volatile"), ("acquire", "ld.acquire.gpu")):
                row = ptx[f"barrier[{poll}] BH=1 NG=1"]
                assert row["st.shared"] == 0 and row[load] > 0, (poll, row)
            if arch == 90:  # the gate-major dot has the tier's >= 64-row operand: Hopper's wgmma
                assert ptx["+dot[atomic,gate-major] BH=32 NG=32"]["wgmma"] > 0
    finally:
        for proc in procs.values():  # a failed assertion must not leave a compile running
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_the_tagged_exchange_compiles_without_atomics_or_spills():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, SCRIPT, "--aot", "sm_90", "--np", "8", "--poll", "tagged",
                          "--no-gate-major"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    ptx = _ptx_table(run.stdout)
    stores = ptx["+stores[tagged] BH=32 NG=32"]
    assert stores["atom."] == 0 and stores["ld.volatile"] > 0, stores  # no counter: h is its own flag


def _ptx_table(stdout: str) -> dict:
    """{kernel: {instruction: count}} from the --aot output's PTX table."""
    lines = stdout.split("PTX instructions per kernel", 1)[1].splitlines()[1:]
    head = lines[0].split()[1:]
    table = {}
    for line in lines[2:]:
        if line.startswith("sm_"):
            break
        name = line.split()[:-len(head)]
        table[" ".join(name)] = dict(zip(head, map(int, line.split()[-len(head):])))
    return table


@pytest.mark.gpu
def test_gpu_run_is_correct_at_every_np_that_fits(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, SCRIPT, "--out", str(tmp_path)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    with open(tmp_path / "latency_anatomy.json") as f:
        result = json.load(f)
    assert result["device"] == torch.cuda.get_device_name(0)
    assert result["elapsed_s"] < 60
    assert {r["NP"] for r in result["rows"]} >= {n for n in (1, 8, 32, 64) if n <= result["sm_count"]}
