"""Tier "persistent": one launch covers all time steps of a layer (both directions with D = 2).

Dimensions: T seq len, B batch, H hidden, P = proj_size or H, G = 4H (gates i, f, g, o);
D directions, NP programs per batch tile and direction, NM batch tiles.

Grid (NP, NM, D). Program (n, m, d) owns hidden units ``n*BLOCK_H ..`` (all four gates) and,
with a projection, output columns ``n*BLOCK_P ..``; it serves batch rows ``m*BLOCK_B ..`` of
direction d (every tensor carries a leading [D] dimension). Per step it computes the transposed
products:

    forward   gates_g^T [BLOCK_H, BLOCK_B] = W_hh[g*H + hidden block, :] @ h_prev^T
              (+ out^T [BLOCK_P, BLOCK_B] = W_hr[P block, :] @ h^T)
    backward  dh^T [BLOCK_P, BLOCK_B]      = sum_g W_hh[g*H:(g+1)*H, P block]^T @ dgates_g[t_next]^T
              (+ dhr^T [BLOCK_H, BLOCK_B]  = W_hr[:, hidden block]^T @ dh^T)

Where it fits (``tiling``) the program's weight slice
is loaded once into shared memory as operands of >= 64 rows, which Hopper's wgmma reads in
place, and each step is one full-depth dot ("resident"); a resident forward whose grid would
not be resident at once runs as ``forward_tiles_kernel``, NP programs per direction looping over
the batch tiles. Otherwise the slice is streamed every step in BLOCK_K chunks (served from
L1/L2 after the first step). The cell state (and in the backward its gradient) of the owned
block stays in registers for all T steps.

Every read of what other programs wrote (h, the unprojected h, the gate gradients, the
projected dh) bypasses L1 (``cache_modifier=".cg"``): L1 is not coherent between SMs, and a
line read one step earlier could hold a neighbouring row (rows whose byte length is not a
multiple of 128 share lines) from before its owner wrote it.

The hidden state is exchanged through global memory: each step reads the full ``h[t_prev]``
(``out[t_prev]``, or ``h0`` for rows that did not run there), writes its own block of ``h[t]``,
then the NP programs of a (batch tile, direction) meet at a grid barrier: one int32 counter each,
zeroed per launch; barrier k of a launch waits until the counter reaches ``k * NP``
(``common/barrier.py``: a CTA barrier, one release ``atomic_add`` at gpu scope, then every
thread's own acquire load until the count is reached). A projection adds a second barrier
per step (the projection needs all of ``h``). What does not depend on other programs (the
next step's gx in the forward, its saved gates and cell states in the resident backward)
is loaded before the barrier, so the wait hides it.

With NP == 1 (one program owns every hidden unit: H <= 64 on a GPU, and always under the
interpreter, which runs programs one after another so a spin barrier would deadlock) the
grid barrier is compiled out and batch tiles run independently. A CTA barrier stays in its
place: the warps of the one program still write rows of h (and of the gate gradients) that
other warps read at the next step. Without it a warp could read a row before its writer
stored it; on an H200 that showed as a 3-20% gradient error at H=33 with a projection,
in one dtype per run, never the same one.

A barrier launch needs all of its programs resident at once, so ``persistent_config`` returns
None when they exceed the SM count; ``choose_tier`` then falls back to ``fused_step``.
"""
from .launch import scan, scan_bidirectional

__all__ = ["scan", "scan_bidirectional"]
