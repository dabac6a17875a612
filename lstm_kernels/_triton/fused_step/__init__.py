"""Tier "fused_step": one kernel launch per time step, recurrent matmul fused with the cell math.

Dimensions: T seq len, B batch, H hidden, P = proj_size or H, G = 4H (gates i, f, g, o);
NB = cdiv(H, BLOCK_H) hidden blocks, NM = cdiv(B, BLOCK_B) batch tiles.

Forward, per step t: program (n, m) owns hidden units ``n*BLOCK_H ..`` of all four gates and
batch rows ``m*BLOCK_B ..``. It computes the transposed product

    gates^T [4 x BLOCK_H, BLOCK_B] = W_hh[g*H + hidden block, :] [BLOCK_H, P] @ h_prev^T [P, BLOCK_B]

(transposed so the small batch is the MMA's N side, which may be as narrow as 16, and the
weight rows of one gate/hidden block are contiguous P-vectors of nn.LSTM's own ``weight_hh``:
no packed copy is needed), adds ``gx[t]``, applies the gate and state math as the epilogue,
updates the fp32 cell state in place and writes the unprojected ``h`` (straight into ``out[t]``
without projection; into ``hs[t]`` for a torch projection matmul otherwise).

Backward, per step t (reverse order of the forward): without projection the same program
layout computes ``dh[t] = dgates[t_next] @ W_hh`` for its own hidden block (P == H) as the
prologue, using a transposed copy ``W_hh^T [P, G]`` built once per backward, then the
gate/state gradients as the epilogue, updating the fp32 ``dc`` state in place. With a
projection, ``dh`` and ``dh @ W_hr`` are torch matmuls per step. Weight gradients are single
large matmuls after the scan (deterministic, no atomics).

Variable lengths (``batch_sizes``): at step t only rows ``< batch_sizes[t]`` run; a row's
``h`` entering step t comes from ``out[t_prev]`` if it ran at ``t_prev``, else from ``h0``.

Directions: the launchers take every tensor with a leading [D] dimension, and each launch
runs one step of every direction (grid axis 2), the reverse direction at ``T - 1 - s``
while the forward one is at ``s``: a bidirectional layer costs T launches, not 2T. The
per-direction scan runs them with D = 1.

Inside ``lstm_kernels.cuda_graphs()`` the per-step loops of unpacked batches are captured
once per shape and replayed as CUDA graphs (``lstm_kernels/graphs.py``).
"""
from .launch import scan, scan_bidirectional

__all__ = ["scan", "scan_bidirectional"]
