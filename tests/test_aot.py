"""The ahead-of-time compile check: every kernel spec builds a cubin for sm_80 and sm_90
without spills or too much shared memory, the check fails when a kernel does not, and the
specs cover every tiling the dispatch can choose.

Dimensions in the test kernel: M, N output tile, K reduction length.
"""
import os
import random
import re
import subprocess
import sys

import pytest
import torch
import triton
import triton.language as tl

from lstm_kernels import aot
from lstm_kernels._triton.fused_step import aot_specs as fused_step_aot
from lstm_kernels._triton.fused_step import kernels as fused_step_kernels
from lstm_kernels._triton.fused_step import tiling as fused_step
from lstm_kernels._triton.persistent import aot_specs as persistent_aot
from lstm_kernels._triton.persistent import tiling as persistent
from lstm_kernels._triton.common.dtypes import TL_DTYPES
from lstm_kernels._triton.common.tiles import block_b
from lstm_kernels._triton.specs import KernelSpec
from lstm_kernels.reference import compute_dtype

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.abspath(__file__)


@triton.jit
def _tile_dot_kernel(
    p_a,  # [M, K] fp16
    p_b,  # [K, N] fp16
    p_c,  # [M, N] fp32
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    # Both operands of one tl.dot are staged in shared memory whole, so the block
    # sizes set what a program needs: (BLOCK_M + BLOCK_N) * BLOCK_K * 2 bytes.
    o_m = tl.arange(0, BLOCK_M)
    o_n = tl.arange(0, BLOCK_N)
    o_k = tl.arange(0, BLOCK_K)
    b_a = tl.load(p_a + o_m[:, None] * BLOCK_K + o_k[None, :])
    b_b = tl.load(p_b + o_k[:, None] * BLOCK_N + o_n[None, :])
    tl.store(p_c + o_m[:, None] * BLOCK_N + o_n[None, :], tl.dot(b_a, b_b))


def _tile_dot_spec(block_k: int) -> KernelSpec:
    return KernelSpec(
        kernel=_tile_dot_kernel,
        signature={"p_a": "*fp16", "p_b": "*fp16", "p_c": "*fp32",
                   "BLOCK_M": "constexpr", "BLOCK_N": "constexpr", "BLOCK_K": "constexpr"},
        constexprs={"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": block_k},
        num_warps=4,
        num_stages=1,
        label=f"fp16 BLOCK_M=64 BLOCK_N=32 BLOCK_K={block_k}",
    )


def small_and_oversized_specs(arch: int) -> list:
    """A kernel that fits anywhere (12 KB of shared memory) and one that needs 192 KB,
    over sm_80's 163 KB per block."""
    return [_tile_dot_spec(64), _tile_dot_spec(1024)]


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lstm_kernels.aot", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )


def _summary_count(stdout: str, arch: int) -> int:
    m = re.search(rf"^sm_{arch}: (\d+) kernels checked", stdout, re.MULTILINE)
    assert m is not None, f"no summary line in:\n{stdout}"
    return int(m.group(1))


@pytest.mark.slow
def test_kernel_specs_compile_for_sm80_and_sm90():
    # The --fast subset: every kernel, dtype, block size, flag and warp count, and the
    # heaviest spec of each kernel; the full product (hundreds of specs, many minutes
    # on 2 CPUs) is `python -m lstm_kernels.aot --arch sm_90 --jobs N` before a release.
    # Both architectures at once, one worker each: the two runs share the 2 CPUs.
    procs = {
        arch: subprocess.Popen(
            [sys.executable, "-m", "lstm_kernels.aot", "--arch", f"sm_{arch}", "--jobs", "1", "--fast"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for arch in (80, 90)
    }
    try:
        for arch, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=600)
            expected = len(aot.fast_subset(aot.collect_specs(arch)))
            assert proc.returncode == 0, f"sm_{arch} check failed:\n{stdout}\n{stderr[-4000:]}"
            assert _summary_count(stdout, arch) == expected
            assert re.search(rf"^sm_{arch}: .*: OK", stdout, re.MULTILINE)
    finally:
        for proc in procs.values():  # a failed assertion must not leave a compile running
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_fast_subset_covers_every_value_and_keeps_the_heaviest_spec():
    own = f"{HERE}:small_and_oversized_specs"
    pairs = aot.collect_specs(90) + [(own, s) for s in small_and_oversized_specs(90)]
    chosen = aot.fast_subset(pairs)
    assert 0 < len(chosen) <= len(pairs)
    kernels = {(m, s.kernel.__name__) for m, s in pairs}
    assert {(m, s.kernel.__name__) for m, s in chosen} == kernels
    for m, name in kernels:
        group = [s for mm, s in pairs if (mm, s.kernel.__name__) == (m, name)]
        picked = [s for mm, s in chosen if (mm, s.kernel.__name__) == (m, name)]
        for key in {k for s in group for k in s.constexprs}:
            values = {repr(s.constexprs.get(key)) for s in group}
            assert {repr(s.constexprs.get(key)) for s in picked} == values
        assert {s.num_warps for s in picked} == {s.num_warps for s in group}
        assert max(aot._weight(s) for s in picked) == max(aot._weight(s) for s in group)
    assert [s.label for _, s in chosen][-1] == small_and_oversized_specs(90)[-1].label


def test_check_sources_reports_shared_memory_over_the_sm80_limit():
    reports = aot.check_sources([f"{HERE}:small_and_oversized_specs"], "sm_80", jobs=1)
    assert [r.label for r in reports] == [s.label for s in small_and_oversized_specs(80)]
    small, big = reports
    assert small.error is None and small.ok, small.problems()
    assert small.registers is not None and small.registers > 0
    assert 0 < small.shared <= aot.SMEM_LIMIT[80]
    assert big.error is None
    assert big.shared > aot.SMEM_LIMIT[80]
    assert not big.ok
    assert any("shared memory" in p for p in big.problems())
    assert "FAILED" in aot.summary_line(reports, 80)


def test_cli_exits_nonzero_on_an_oversized_kernel():
    run = _run_cli("--arch", "80", "--jobs", "1", "--module", f"{HERE}:small_and_oversized_specs")
    assert run.returncode == 1, run.stdout + run.stderr
    assert _summary_count(run.stdout, 80) == 2
    assert "1 over the 166912-byte shared-memory limit: FAILED" in run.stdout


@pytest.mark.parametrize("text, arch", [("sm_80", 80), ("sm90", 90), ("90", 90), (80, 80), ("sm_90a", 90)],
                         ids=["sm_80", "sm90", "bare-90", "int-80", "sm_90a"])
def test_parse_arch_accepts_spellings(text, arch):
    assert aot.parse_arch(text) == arch


@pytest.mark.parametrize("text", ["sm_75", "hopper", "", "sm_9"], ids=["sm_75", "name", "empty", "sm_9"])
def test_parse_arch_rejects_unknown_targets(text):
    with pytest.raises(ValueError, match="--arch must be one of"):
        aot.parse_arch(text)


def test_cli_rejects_unknown_arch_without_compiling():
    run = _run_cli("--arch", "sm_75")
    assert run.returncode == 2
    assert "--arch must be one of" in run.stderr


def test_check_specs_refuses_to_compile_under_the_interpreter():
    # conftest sets TRITON_INTERPRET=1 for this process; compiling here would use the
    # interpreter-patched triton.language, so the in-process entry point says so.
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        aot.check_specs(small_and_oversized_specs(80)[:1], 80)


def _random_shapes(seed: int, count: int):
    """(B, H, P, has_proj, directions): uniform sizes mixed with sizes next to multiples of 16."""
    rng = random.Random(seed)

    def size(top):
        if top < 16 or rng.random() < 0.5:
            return rng.randint(1, top)
        return min(top, max(1, 16 * rng.randint(1, top // 16) + rng.choice((-1, 0, 1))))

    for _ in range(count):
        H = size(rng.choice((64, 256, 4096)))
        has_proj = H > 1 and rng.random() < 0.5
        P = size(H - 1) if has_proj else H
        B = size(rng.choice((64, 1024, 10000)))
        yield B, H, P, has_proj, rng.choice((1, 2))


def test_persistent_sweep_reaches_every_tiling_the_dispatch_can_send():
    # The sweep takes one shape per piece on which the config functions are constant
    # (persistent/aot_specs.py, above _aot_hidden); shapes drawn anywhere must land on a swept tiling.
    for n_sm, major in ((132, 9), (108, 8)):
        swept = set(persistent_aot.aot_configs(n_sm))
        swept_bwd = set(persistent_aot.aot_backward_configs(n_sm, major))
        for k, (B, H, P, has_proj, directions) in enumerate(_random_shapes(n_sm, 4000)):
            dtype = (torch.float32, torch.float16, torch.bfloat16)[k % 3]
            # fp32 runs TF32 or IEEE dots (cudnn.allow_tf32); IEEE takes other tilings.
            for prec in ("tf32", "ieee") if dtype == torch.float32 else ("",):
                for resident in (True, False):
                    cfg = persistent.persistent_config(B, H, P, has_proj, dtype, n_sm, interpreting=False,
                                                       resident=resident, directions=directions,
                                                       precision=prec or None)
                    if cfg is not None:
                        assert persistent_aot.aot_key(dtype, has_proj, cfg, prec) in swept, \
                            (B, H, P, dtype, directions, prec)
            cfg = persistent.resident_backward_config(B, H, P, has_proj, dtype, n_sm, False, directions,
                                                       major)
            if cfg is None and not has_proj:
                cfg = persistent.row_split_backward_config(B, H, dtype, n_sm, directions, major)
            if cfg is not None:
                assert persistent_aot.aot_backward_key(dtype, cfg) in swept_bwd, (B, H, dtype, directions)


def test_fused_step_sweep_reaches_every_block_choice():
    # fp32 takes TF32 or IEEE (cudnn.allow_tf32); both precisions must be swept.
    fwd, bwd = set(), set()
    for spec in fused_step_aot.aot_specs(90):
        c = spec.constexprs
        if spec.kernel is fused_step_kernels.forward_kernel:
            fwd.add((spec.signature["p_w"], spec.signature["p_hout"], c["BLOCK_H"], c["BLOCK_B"],
                     c["BLOCK_K"], spec.num_warps, c["DOT_PRECISION"]))
        else:
            bwd.add((spec.signature["p_wt"], c["BLOCK_H"], c["BLOCK_B"], c["BLOCK_K"], spec.num_warps,
                     c["DOT_PRECISION"]))
    for k, (B, H, P, has_proj, _) in enumerate(_random_shapes(0, 4000)):
        dtype = (torch.float32, torch.float16, torch.bfloat16)[k % 3]
        tdt = TL_DTYPES[dtype]
        # Without a projection h goes to out (storage dtype), with one to hs (compute dtype).
        hout = TL_DTYPES[compute_dtype(dtype)] if has_proj else tdt
        BB = block_b(B)
        for prec in (("tf32", "ieee") if dtype == torch.float32 else ("ieee",)):
            BH, BK, warps = fused_step.forward_blocks(H, P, BB, dtype, prec)
            assert (f"*{tdt}", f"*{hout}", BH, BB, BK, warps, prec) in fwd, (B, H, P, dtype, prec)
        for prec in (("tf32", "ieee") if dtype == torch.float32 else ("tf32",)):
            BH, BK, warps = fused_step.backward_blocks(H, BB, prec)
            assert (f"*{tdt}", BH, BB, BK, warps, prec) in bwd, (B, H, dtype, prec)
