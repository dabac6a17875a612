"""Interpreter-safe activations for Triton kernels (fp32 in, fp32 out).

The interpreter has no ``libdevice.tanh``, so tanh is written through ``exp``; both
forms saturate cleanly for large |x| (no inf/inf).
"""
import triton
import triton.language as tl


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    # tanh(x) = sign(x) * (1 - e) / (1 + e) with e = exp(-2|x|) in (0, 1]: no overflow.
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)
