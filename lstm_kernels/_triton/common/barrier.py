"""The grid barrier the persistent kernels meet at between steps.

One int32 counter per barrier group, zero at launch; barrier k of a launch waits until the
counter reaches ``k * NP``. A CTA barrier first, so that every thread's stores are issued
before the program's one arriving atomic releases them at gpu scope. Then the wait, in one
of two forms (``PER_THREAD_POLL``):

- True: every thread polls with its own ``ld.acquire.gpu`` (inline PTX), and the arrive is a
  ``release`` atomic whose result is unused, so Triton emits no shared-memory broadcast for
  it. No CTA barrier in the loop or after it: each thread's acquire orders its own later
  loads, and Triton places the barriers that shared-memory reuse needs.
- False: the arrive is ``acq_rel`` and the poll a scalar ``atomic_add(p, 0)`` with acquire.
  Triton runs a scalar atomic on one thread and broadcasts its result through shared memory
  with a ``bar.sync`` on every poll iteration (triton-lang/triton#7125); a CTA barrier
  after the loop.

Variants label ``atomic-poll`` switches to the second form, so the GPU suite times the two
side by side (docs/latency-anatomy.md gives the prediction). The interpreter runs programs
one after another and never reaches a barrier (``tiling``: NP == 1 there), so the inline PTX
is only compiled, by the AOT check (tests/test_aot.py).
"""
import triton
import triton.language as tl


@triton.jit
def _acquire_load(p):
    return tl.inline_asm_elementwise("ld.acquire.gpu.global.b32 $0, [$1];", "=r,l", [p],
                                     dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def grid_barrier(p_sync, target, PER_THREAD_POLL: tl.constexpr):
    tl.debug_barrier()
    if PER_THREAD_POLL:
        tl.atomic_add(p_sync, 1, sem="release", scope="gpu")
        seen = _acquire_load(p_sync)
        while seen < target:
            seen = _acquire_load(p_sync)
    else:
        tl.atomic_add(p_sync, 1, sem="acq_rel", scope="gpu")
        seen = tl.atomic_add(p_sync, 0, sem="acquire", scope="gpu")
        while seen < target:
            seen = tl.atomic_add(p_sync, 0, sem="acquire", scope="gpu")
        tl.debug_barrier()
