"""The "pointwise" tier: per step a torch recurrent matmul, then one fused gate/state kernel.

Dimensions:
    T  sequence length     B  batch size (rows)     bs  active rows at a step (<= B)
    H  hidden size         P  output width (proj_size or H)
    G  = 4H, the gate pre-activations in nn.LSTM's order (i, f, g, o)

Forward, per step ``t`` (in time order, or reversed):
    pre = gx[t, :bs] + h[:bs] @ W_hh^T            torch.addmm (cuBLAS on a GPU)
    _lstm_fwd_kernel(pre, c)                       gates, c, h in one launch
    out[t, :bs] = h_unprojected[:bs] @ W_hr^T      torch.mm, only with a projection
Backward, per step in the opposite order:
    dh_t = dh[:bs] + grad_out[t, :bs]              (then @ W_hr with a projection)
    _lstm_bwd_kernel(dh_t, dc)                     d_gates[t] and dc_prev in one launch
    dh[:bs] = d_gates[t, :bs] @ W_hh               torch.mm
and after the loop dW_hh, dW_hr as one matmul each over all steps.

Kernel precision: every load is upcast to the compute dtype (float32 for float16,
bfloat16 and float32 storage; float64 for float64 storage, which the kernels support),
all math runs there, and each value is cast once at its store. The saved activations
(gates, cs, hs) are in the compute dtype, as the scan contract in ``ops.py`` asks.

Specializations: the grid is (blocks of BLOCK_B active rows, blocks of BLOCK_H hidden
units). ``BLOCK_H`` is the next power of two of H clamped to ``BLOCK_H_CHOICES``
(32 .. 1024; a larger H uses several 1024-wide blocks) and ``BLOCK_B = 1024 // BLOCK_H``,
so every program covers 1024 units of each gate with ``NUM_WARPS`` = 8 warps (with 4
warps some float16 variants spill at sm_90). The step index ``t`` and the active row
count ``bs`` are never specialized on, and the per-step tensors are addressed as fixed
base pointers plus an offset computed from ``t`` inside the kernel, so neither the
sequence length nor the step changes the compiled kernel. ``aot_specs`` lists exactly
the (dtype, BLOCK_H, flags) combinations the launchers below can produce.
"""
from .launch import lstm_cell_backward, lstm_cell_forward, scan

__all__ = ["lstm_cell_backward", "lstm_cell_forward", "scan"]
