"""The measured size thresholds that choose the CPU scan's paths (oneDNN or BLAS matmuls,
tanh through sigmoid, blocks of backward steps, paired directions, single-row weight
layouts): one module, read as ``thresholds.NAME`` at call time, so a test that sets one
(``monkeypatch.setattr(thresholds, ...)``, e.g. tests/test_scripted_internals.py) changes
every path that reads it. Timings are from the reference machine, an AMD EPYC."""
from __future__ import annotations

# oneDNN's linear runs float32 matmuls at about twice MKL's speed on the reference machine
# (an AMD EPYC, where MKL does not take its AVX-512 path); it costs ~10 us more per call,
# so it is used only from DNN_MIN_MACS multiply-adds per matmul. Where PyTorch lacks the op
# (built without oneDNN) the helpers fall back to BLAS, and the scripted code is the same.
DNN_MIN_MACS = 1 << 21
# Below that, MKL is still the slower one where the summed dimension P is 256 or more and the
# product has a few rows (1 thread, us per step product, MKL / oneDNN with the blocked
# weight: B=4, H=256 43 / 26; B=2, H=512 106 / 57; but B=1, H=512 57 / 65 and every H=128
# shape a tie or MKL's). With 2 threads MKL's single-row and few-row products stay on one
# thread while oneDNN's use both (B=1, H=512 57 / 42; B=2, H=256 28 / 19; B=1, H=256 14 /
# 19), so there the bound halves and B=1 qualifies.
DNN_SMALL_MIN_MACS = 1 << 20
DNN_SMALL_MIN_K = 256

# A weight reordered once into oneDNN's blocked layout makes each step's matmul ~30% faster
# at B=16, H=256 (less at larger B); the reorder costs 2-3 steps, so it pays from this T.
# It is redone every call: nothing is cached, so a changed parameter can never be stale.
PACK_MIN_T = 32

# The input projection of a layer (all steps and directions, [T*B, I] x [I, D*4H]) goes
# through oneDNN's linear too, from this many multiply-adds (see ``input_projection``;
# crossover measured with backward between 2M and 4M: the custom op costs ~40 us more).
PROJ_MIN_MACS = 1 << 22

# ATen's CPU tanh runs at ~2.2 ns per float32 element on the reference machine, sigmoid at
# ~0.25: from this many elements per call, tanh(x) = 2 sigmoid(2x) - 1 in three ops is
# faster than one tanh (measured 9.8 -> 5.3 us at 4096 elements, 35 -> 9 us at 16384;
# break-even near 1500). Padded forward steps use it from B * H elements, the backward for
# tanh(c) of the whole sequence. The result differs from tanh by at most ~2e-7.
SIGMOID_TANH_MIN = 2048

# The cell input's tanh needs no sigmoid of its own: its pre-activation block is doubled in
# place before the one sigmoid over all four gate blocks, and tanh(g) = 2 sigmoid(2g) - 1
# follows in one op, three ops for sigmoid and tanh instead of two. From this many B x H
# elements that is faster than ATen's tanh (measured, 1 thread, the two activations of a
# step in the scripted loop: 4.1 -> 3.6 us at 1024 elements, but 2.5 -> 3.0 at 512; against
# the three-op sigmoid form used before from 2048 elements: 6.2 -> 4.5 us at 2048, 8.6 ->
# 6.4 at 4096, 24 -> 18 at 16384). The doubling is exact, so the result is that form's.
GATE_SIGMOID_MIN = 1024


# The backward (padded and packed) computes its gradient-independent factors (five
# [steps, B, H]-sized tensors and their temporaries) in blocks of steps of about this many
# B x H elements each, small enough to stay in cache; small layers take all T steps in one
# block, as before.
# Measured (1 thread, training of one layer): T=512, B=64, H=256 1335 ms in one block,
# 927-944 ms with blocks of 2^14-2^18 elements; T=128 shapes unchanged within noise.
BACKWARD_BLOCK_ELEMS = 1 << 17


# Both directions of a bidirectional layer share one scripted loop (``use_paired``) up to
# this many multiply-adds per direction and step matmul ([B, P] x [P, 4H]) and this many
# elements of w_hh per direction. Measured: a win where the step is
# interpreter-bound (H=64, B<=16); at B=1 with H>=256, and at B=64, H=64 in training, MKL's
# batched matmul is slower than two plain ones, and pairing lost 5-15%.
PAIRED_MAX_MACS = 1 << 18
PAIRED_MAX_WEIGHT = 1 << 16

# With a single batch row, BLAS's product h @ w_hh^T runs faster from a contiguous copy of
# w_hh^T than from the transposed view (measured, 1 thread: 14.6 -> 12.2 us at H=256, 2.2
# -> 1.9 at H=64; none from B=4 on, and none at H=512, where whole scans got 2-7% slower).
# The copy costs about 40 such steps at H=256 (105 us; 8 us at H=64), so the forward makes
# it only for scans of this many steps and weights of up to MATVEC_COPY_MAX_WEIGHT elements.
# Measured, one layer, B=1: T=128 H=256 5% faster in inference, 2.5% in training; T=512 6%
# and 5%; T=128 H=64 2%; T=64 H=256 unchanged.
MATVEC_COPY_MIN_T = 128
MATVEC_COPY_MAX_WEIGHT = 1 << 18


# With more than one thread, a single-row step product [1, P] x [P, 4H] runs as a batched
# product over S column blocks of the result (the four gates in the forward, two blocks of
# dh's columns in the backward), with w_hh as strided views (no copy): MKL runs a single-row
# product on one thread, the batched one on all (2 threads, us per product, plain / batched:
# forward 14.8 / 10.3 at H=256, 54.8 / 29.9 at H=512, where oneDNN's takes 42; backward
# ~11 / 10.7 and ~54 / 41). With one thread it gains nothing (forward 14.8 / 14.4, 53.4 /
# 52.7) and the backward loses at H=512 (59.5), so it is not used there. From this P.
SPLIT_ROWS_MIN_P = 256
