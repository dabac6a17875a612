"""The Triton tiers "fused_step" and "persistent" against nn.LSTM, under the interpreter.

Each tier is forced with ``force_tier`` and compared with ``helpers.check_lstm_against_torch``
(outputs, h_n, c_n and all gradients; NaN-poisoned allocations come from conftest). The
persistent kernel runs here in its single-program configuration (the interpreter runs
programs one after another, so its grid barrier cannot run here); its multi-program tiling
is checked on single-step launches, which exchange nothing between programs.

Sizes: T seq len, B batch, H hidden, P = proj_size or H.
"""
import pytest
import torch
import triton

from helpers import LOW_PRECISION, Config, check_lstm_against_torch, config_id, dtype_id
from lstm_kernels._triton.fused_step import launch as fused_step_launch
from lstm_kernels._triton.persistent import launch as persistent_launch
from lstm_kernels._triton.persistent import tiling as persistent
from lstm_kernels._triton.backend import TIERS, force_tier, tier_scans
from lstm_kernels._triton.common import variants
from lstm_kernels._triton.common.variants import Variants
from lstm_kernels._triton.dispatch import choose_tier

pytestmark = pytest.mark.interpreter

# "persistent-chunked": the persistent tier with its forward streaming W_hh in K chunks
# (the tiling for slices too large to hold on-chip) instead of the resident default.
MY_TIERS = ("fused_step", "persistent", "persistent-chunked")


@pytest.fixture
def run_tier():
    def enter(tier):
        if tier == "persistent-chunked":
            return variants.use(Variants(tier="persistent", resident_forward=False, resident_backward=False))
        return force_tier(tier)
    return enter

FP32_CONFIGS = [
    Config(B=3, T=4, input_size=5, hidden_size=7),
    Config(B=1, T=1, input_size=3, hidden_size=5, with_hx=False),
    Config(B=3, T=5, input_size=4, hidden_size=33, num_layers=2, bidirectional=True),
    Config(B=4, T=5, input_size=5, hidden_size=7, proj_size=3, bidirectional=True, mode="packed-unsorted"),
    Config(B=4, T=6, input_size=5, hidden_size=9, num_layers=2, mode="packed", batch_first=True),
    Config(B=2, T=3, input_size=4, hidden_size=6, bias=False, strided=True, mode="unbatched"),
]

LOW_CONFIGS = [
    Config(B=3, T=4, input_size=5, hidden_size=17, bidirectional=True),
    Config(B=3, T=4, input_size=5, hidden_size=7, proj_size=4, mode="packed"),
]


@pytest.mark.parametrize("cfg", FP32_CONFIGS, ids=config_id)
@pytest.mark.parametrize("tier", MY_TIERS)
def test_tier_matches_nn_lstm_fp32(tier, cfg, run_tier):
    with run_tier(tier):
        check_lstm_against_torch(cfg, "triton", torch.float32)


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=dtype_id)
@pytest.mark.parametrize("cfg", LOW_CONFIGS, ids=config_id)
@pytest.mark.parametrize("tier", MY_TIERS)
def test_tier_matches_fp64_oracle_low_precision(tier, cfg, dtype, run_tier):
    with run_tier(tier):
        check_lstm_against_torch(cfg, "triton", dtype)


def test_persistent_independent_batch_tiles():
    # B > 64 splits the batch over two programs that never synchronise.
    cfg = Config(B=70, T=3, input_size=3, hidden_size=5, mode="packed")
    assert persistent.persistent_config(70, 5, 5, False, torch.float32, None).NM == 2
    with force_tier("persistent"):
        check_lstm_against_torch(cfg, "triton", torch.float32)


@pytest.mark.parametrize("cfg", [
    Config(B=3, T=1, input_size=4, hidden_size=40, bidirectional=True),
    Config(B=20, T=1, input_size=4, hidden_size=33, with_hx=False),
], ids=config_id)
@pytest.mark.parametrize("resident", [True, False], ids=["resident", "chunked"])
def test_persistent_multi_program_tiling_single_step(cfg, resident, monkeypatch):
    """The GPU tiling (several programs own hidden blocks) on launches whose programs need no barrier.

    With T=1 and no projection, no program reads what another writes, so the barrier can be
    left out and the interpreter runs the multi-program index math exactly as a GPU would.
    The resident forward holds all of P per program, the resident backward all 4H rows
    of its columns.
    """
    def config_for(B, H, P, has_proj, dtype, device, directions=1, resident=True, precision=None, variants=None):
        BB = 16
        res = resident and wanted_resident
        return persistent.PersistentConfig(BLOCK_H=16, BLOCK_P=16, BLOCK_B=BB,
                                           BLOCK_K=triton.next_power_of_2(P) if res else 16,
                                           NP=triton.cdiv(H, 16), NM=triton.cdiv(B, BB), num_warps=4,
                                           barrier=False, resident=res)

    def backward_config(B, H, P, has_proj, dtype, n_sm, interpreting=None, directions=1, major=None,
                        precision=None, variants=None):
        BB = 16
        res = wanted_resident and not has_proj
        return persistent.PersistentConfig(BLOCK_H=16, BLOCK_P=16, BLOCK_B=BB,
                                           BLOCK_K=triton.next_power_of_2(H) if res else 16,
                                           NP=triton.cdiv(H, 16), NM=triton.cdiv(B, BB), num_warps=4,
                                           barrier=False, resident=res)

    wanted_resident = resident
    monkeypatch.setattr(persistent_launch, "backward_config", backward_config)

    monkeypatch.setattr(persistent_launch, "config_for", config_for)
    assert triton.cdiv(cfg.hidden_size, 16) > 1
    with force_tier("persistent"):
        check_lstm_against_torch(cfg, "triton", torch.float32)


ROW_SPLIT_CONFIGS = [
    # Three programs of 16 units (the last one part masked) over one batch tile, packed.
    Config(B=3, T=5, input_size=4, hidden_size=40, bidirectional=True, mode="packed-unsorted"),
    # Two batch tiles of 16 rows: each program loops over both per step.
    Config(B=20, T=4, input_size=4, hidden_size=33, num_layers=2, with_hx=False),
    # One program: no barrier, the gradient carried in registers, the saved state prefetched.
    Config(B=3, T=4, input_size=5, hidden_size=12, mode="packed"),
]


def _row_split_backward(monkeypatch):
    def backward_config(B, H, P, has_proj, dtype, n_sm, interpreting=None, directions=1, major=None,
                        precision=None, variants=None):
        assert not has_proj
        BB = 16
        return persistent.PersistentConfig(BLOCK_H=16, BLOCK_P=16, BLOCK_B=BB, BLOCK_K=triton.next_power_of_2(H),
                                           NP=triton.cdiv(H, 16), NM=triton.cdiv(B, BB), num_warps=4,
                                           resident=True, row_split=True)

    monkeypatch.setattr(persistent_launch, "backward_config", backward_config)


@pytest.mark.parametrize("cfg", ROW_SPLIT_CONFIGS, ids=config_id)
def test_row_split_backward_matches_nn_lstm(cfg, monkeypatch):
    """The row-split resident backward with several programs: each holds its units' W_hh rows
    and the shares of dh cross programs through memory. Under the interpreter a barrier grid
    runs one launch per step (``tiling.rows_steps``), so every gradient is checked with the
    multi-program exchange the GPU runs behind its barrier."""
    _row_split_backward(monkeypatch)
    assert persistent.rows_steps(persistent.PersistentConfig(16, 16, 16, 64, NP=3, NM=1, num_warps=4,
                                                             row_split=True), 5) == [(s, s + 1) for s in range(5)]
    with force_tier("persistent"):
        check_lstm_against_torch(cfg, "triton", torch.float32)


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=dtype_id)
def test_row_split_backward_matches_fp64_oracle_low_precision(dtype, monkeypatch):
    _row_split_backward(monkeypatch)
    with force_tier("persistent"):
        check_lstm_against_torch(ROW_SPLIT_CONFIGS[0], "triton", dtype)


def test_row_split_backward_tilings_fit_and_need_hopper():
    """Row-split tilings: the slice within 128 KB in the dot's operand width, >= 128 rows per
    operand, the share accumulator and the share sum within 16 K elements, a grid resident at
    once (else a batch loop of NP programs per direction); none before sm_90, with fp32 IEEE
    dots or where the column slice fits."""
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for B in SWEEP_B:
            for H in (64, 128, 256, 512, 768, 1024, 2048):
                assert persistent.row_split_backward_config(B, H, dtype, 108, 1, 8) is None
                if dtype == torch.float32:
                    assert persistent.row_split_backward_config(B, H, dtype, 132, 1, 9, ieee=True) is None
                for directions in (1, 2):
                    cfg = persistent.row_split_backward_config(B, H, dtype, 132, directions, 9)
                    if cfg is None:
                        continue
                    assert cfg.row_split and cfg.resident and H % 16 == 0
                    size = 2 if persistent.uses_low_dot(dtype, cfg) else 4
                    assert 4 * cfg.BLOCK_H * cfg.BLOCK_K * size <= 128 * 1024 and cfg.BLOCK_K >= max(H, 128)
                    assert cfg.BLOCK_K * cfg.BLOCK_B <= 16384
                    assert triton.next_power_of_2(cfg.NP) * cfg.BLOCK_H * cfg.BLOCK_B <= 16384
                    assert cfg.NP * cfg.grid_m * directions <= 132
                    chosen = persistent.backward_config(B, H, H, False, dtype, 132, interpreting=False,
                                                        directions=directions, major=9, precision="tf32")
                    column = persistent.resident_backward_config(B, H, H, False, dtype, 132, False, directions, 9)
                    assert chosen == (column or cfg)
    # bf16 at H=1024: 64 programs of 16 units; B=128 loops over its batch tiles. fp16 takes
    # 16-bit operands only where its TF32 slice would not fit.
    big = persistent.row_split_backward_config(128, 1024, torch.bfloat16, 132, 2, 9)
    assert big is not None and big.batch_loop and big.NP == 64
    for H, low in ((512, False), (1024, True)):
        cfg = persistent.row_split_backward_config(16, H, torch.float16, 132, 1, 9)
        assert cfg is not None and persistent.uses_low_dot(torch.float16, cfg) == low
    assert not persistent.uses_low_dot(torch.float32, persistent.row_split_backward_config(16, 512, torch.float32,
                                                                                            132, 1, 9))


def test_persistent_fp32_ieee_takes_narrow_streamed_tilings():
    # IEEE dots hold their operands in registers: no resident forward, tiles of <= 512
    # elements (16 x 16 with a projection) at 4 warps (8 for the 16 x 16 forward with one);
    # a barrier tiling that is returned fits its grid.
    for n_sm in (132, 108):
        for B in (1, 16, 40, 300):
            for H in (16, 48, 256, 1024):
                for P, has_proj in ((H, False), (max(1, H // 2), True)):
                    for directions in (1, 2):
                        args = (B, H, P, has_proj, torch.float32, n_sm)
                        cfg = persistent.persistent_config(*args, interpreting=False, directions=directions,
                                                           precision="ieee")
                        if cfg is None:
                            continue
                        assert not cfg.resident and not cfg.batch_loop
                        assert cfg.BLOCK_H * cfg.BLOCK_B <= (256 if has_proj else 512)
                        assert cfg.NP * cfg.NM * directions <= n_sm or cfg.NP == 1
                        assert cfg.backward_warps == 4
                        assert cfg.num_warps == (8 if has_proj else 4)
                        assert persistent.backward_block_k(cfg, has_proj, True) == 16


def test_persistent_rejects_shapes_it_cannot_hold():
    # 4096 hidden units in blocks of at most 64 need 64 programs per batch tile; 8 SMs hold 8.
    assert persistent.persistent_config(4, 4096, 4096, False, torch.float16, 8, interpreting=False) is None
    cfg = persistent.persistent_config(4, 4096, 4096, False, torch.float16, 132, interpreting=False)
    assert cfg is not None and cfg.NP * cfg.grid_m <= 132 and cfg.use_barrier
    small = persistent.persistent_config(4, 48, 48, False, torch.float16, 132, interpreting=False)
    assert small.NP == 1 and not small.use_barrier
    # Both directions in one launch need twice the resident programs.
    assert persistent.persistent_config(4, 4096, 4096, False, torch.float16, 100,
                                        interpreting=False) is not None
    assert persistent.persistent_config(4, 4096, 4096, False, torch.float16, 100, interpreting=False,
                                        directions=2) is None


SWEEP_B = (1, 8, 32, 128, 512)
SWEEP_H = (1, 7, 64, 128, 256, 1000, 1024, 2048, 4096)


@pytest.mark.parametrize("device_type", ["cpu", "cuda"])
def test_choose_tier_returns_runnable_tier(device_type, monkeypatch):
    """Over a sweep of shapes the dispatch only picks tiers that exist and can run the shape.

    On CUDA the persistent tier is taken wherever its forward and backward grids can be
    resident on the chip's 132 SMs; the other shapes go to fused_step or pointwise.
    """
    monkeypatch.setattr(persistent, "sm_count", lambda device: 132 if device.type == "cuda" else None)
    device = torch.device(device_type)
    available = set(tier_scans())
    assert available == set(TIERS)
    picked = set()
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        for B in SWEEP_B:
            for H in SWEEP_H:
                tier = choose_tier(B, H, dtype, device)
                picked.add(tier)
                assert tier in available, (B, H, dtype, tier)
                if dtype == torch.float64:
                    # The only tier with float64 kernels; the others raise TypeError for it.
                    assert tier == "pointwise", (B, H, tier)
                if tier == "persistent":
                    for resident in (True, False):
                        cfg = persistent.persistent_config(B, H, H, False, dtype, persistent.sm_count(device),
                                                           interpreting=device_type == "cpu", resident=resident)
                        assert cfg is not None, (B, H, dtype, resident)
                        if device_type == "cuda":
                            assert cfg.NP * cfg.grid_m <= 132, (B, H, dtype, resident)
    expected = {"persistent", "pointwise"} | ({"fused_step"} if device_type == "cuda" else set())
    assert picked == expected


def test_automatic_choice_runs_multi_program_barrier_configs(monkeypatch):
    """The barrier, proven on an H200, is used by the automatic choice for large H."""
    monkeypatch.setattr(persistent, "sm_count", lambda device: 132)
    cfg = persistent.persistent_config(4, 1024, 1024, False, torch.float16, 132, interpreting=False)
    assert cfg is not None and cfg.NP > 1 and cfg.use_barrier
    assert choose_tier(4, 1024, torch.float16, torch.device("cuda")) == "persistent"


def test_resident_backward_tilings_fit_and_need_hopper():
    """Resident backward: weights and gate-gradient operand within 200 KB, a 64-row operand
    (or one program), every program of a barrier grid resident; none before sm_90."""
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        size = 2 if dtype == torch.bfloat16 else 4  # fp16 runs the dot on fp32 operands
        for B in SWEEP_B:
            for H in (16, 32, 64, 96, 128, 256, 512, 1024):
                assert persistent.resident_backward_config(B, H, H, False, dtype, 108, False, 1, 8) is None
                for directions in (1, 2):
                    cfg = persistent.resident_backward_config(B, H, H, False, dtype, 132, False, directions, 9)
                    if cfg is None:
                        continue
                    assert (cfg.BLOCK_P + cfg.BLOCK_B) * 4 * cfg.BLOCK_K * size <= 200 * 1024
                    assert cfg.BLOCK_K >= H and H % 16 == 0 and (cfg.BLOCK_P == 64 or cfg.NP == 1)
                    assert cfg.NP == 1 or cfg.NP * cfg.NM * directions <= 132


def test_resident_tilings_fit_shared_memory_and_the_chip():
    """Resident forward tilings: the weights plus the h operand fit a block's 227 KB, the rows
    of each operand suit wgmma (>= 64), and every program of a barrier grid is resident."""
    for n_sm in (108, 132):
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            size = torch.tensor([], dtype=dtype).element_size()
            for B in SWEEP_B:
                for H in (16, 32, 64, 96, 128, 256, 512, 1024, 2048):
                    for directions in (1, 2):
                        cfg = persistent.persistent_config(B, H, H, False, dtype, n_sm, interpreting=False,
                                                           directions=directions)
                        if cfg is None or not cfg.resident:
                            continue
                        smem = (4 * cfg.BLOCK_H + cfg.BLOCK_B) * cfg.BLOCK_K * size
                        assert smem <= 227 * 1024, (B, H, dtype)
                        rows = (2 if cfg.BLOCK_H >= 32 else 4) * cfg.BLOCK_H
                        assert cfg.BLOCK_K >= H and rows >= 64 and H % 16 == 0
                        assert cfg.NP == 1 or cfg.NP * cfg.grid_m * directions <= n_sm


def test_persistent_gpu_tilings_use_measured_warps():
    """Every GPU tiling takes its warps from the tables the AOT check measured spill-free.

    A tile outside them would fall back to step_warps, which spills on some tiles (sm_80).
    """
    for n_sm in (108, 132):
        for dtype in (torch.float32, torch.float16):
            for B in SWEEP_B:
                for H in SWEEP_H:
                    for P, has_proj in ((H, False), (max(1, H // 2), True)):
                        cfg = persistent.persistent_config(B, H, P, has_proj, dtype, n_sm, interpreting=False,
                                                           resident=False)
                        if cfg is None:
                            continue
                        tile = (cfg.BLOCK_H, cfg.BLOCK_B)
                        assert tile in persistent.FWD_WARPS and tile in persistent.BWD_WARPS, (B, H, P)
                        assert cfg.num_warps == persistent.FWD_WARPS[tile]


def test_auto_tier_runs():
    cfg = Config(B=2, T=3, input_size=3, hidden_size=5)
    check_lstm_against_torch(cfg, "triton", torch.float32)


def test_forced_persistent_on_unrunnable_shape_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(persistent, "persistent_config", lambda *a, **k: None)
    cfg = Config(B=2, T=2, input_size=3, hidden_size=5)
    with force_tier("persistent"), pytest.raises(RuntimeError, match="persistent.*cannot run"):
        check_lstm_against_torch(cfg, "triton", torch.float32, grads=False)


class LaunchSpy:
    """Stands in for a Triton kernel: records each launch's grid, then launches the kernel."""

    def __init__(self, kernel, grids):
        self.kernel, self.grids = kernel, grids

    def __getitem__(self, grid):
        self.grids.append(grid)
        return self.kernel[grid]


@pytest.mark.parametrize("tier, kernels", [
    ("persistent", ("forward_kernel", "backward_kernel")),
    ("fused_step", ("forward_kernel", "backward_kernel")),
])
def test_bidirectional_layers_run_both_directions_in_each_launch(tier, kernels, monkeypatch):
    """Every forward and backward launch of a bidirectional layer covers both directions
    (grid axis 2 is 2): one launch per layer for persistent, one per step for fused_step."""
    module = persistent_launch if tier == "persistent" else fused_step_launch
    grids = {name: [] for name in kernels}
    for name in kernels:
        monkeypatch.setattr(module, name, LaunchSpy(getattr(module, name), grids[name]))
    cfg = Config(B=3, T=4, input_size=3, hidden_size=6, num_layers=2, bidirectional=True, proj_size=2,
                 mode="packed-unsorted")
    with force_tier(tier):
        check_lstm_against_torch(cfg, "triton", torch.float32)
    per_layer = 1 if tier == "persistent" else cfg.T
    for name in kernels:
        assert len(grids[name]) == cfg.num_layers * per_layer, name
        assert all(grid[2] == 2 for grid in grids[name]), name


@pytest.mark.parametrize("mode", ["batched", "packed"])
@pytest.mark.parametrize("changes_off", ["", "streamed-fwd", "h-in-memory", "narrow-bwd-k", "ieee-bwd", "streamed-bwd",
                                         "no-batch-loop", "atomic-poll", "no-gx-prefetch", "no-saved-prefetch",
                                         "state-every-step", "no-row-split-bwd", "streamed-fwd+streamed-bwd+narrow-bwd-k",
                                         "no-gx-prefetch+no-saved-prefetch+state-every-step"])
def test_persistent_variants_match_nn_lstm_and_restore_switches(changes_off, mode):
    """Each change can be switched off for side-by-side timing; the result is still nn.LSTM's,
    batched and packed (the prefetches and the once-only final-state stores follow the rows
    each step runs)."""
    before = variants.current()
    cfg = Config(B=3, T=4, input_size=5, hidden_size=40, bidirectional=True, mode=mode)
    with force_tier("persistent"):
        pinned = variants.current()
        with variants.variant(changes_off):
            assert (variants.current() != pinned) == bool(changes_off) and variants.current().tier == "persistent"
            check_lstm_against_torch(cfg, "triton", torch.float32)
    assert variants.current() == before


def test_unknown_persistent_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown persistent variant.*no-such-change"):
        with variants.variant("h-in-memory+no-such-change"):
            pass
    assert variants.current().h_on_chip


@pytest.mark.parametrize("cfg", [
    Config(B=37, T=4, input_size=3, hidden_size=20, bidirectional=True, mode="packed"),
    Config(B=33, T=3, input_size=4, hidden_size=16, with_hx=False),
], ids=config_id)
def test_persistent_batch_loop_matches_nn_lstm(cfg, monkeypatch):
    """The resident forward whose programs run every batch tile per step (for grids too large
    to be resident at once), its fp32 cell state kept in a scratch buffer between steps."""
    real = persistent.config_for

    def config_for(B, H, P, has_proj, dtype, device, directions=1, resident=True, precision=None, variants=None):
        if not resident or has_proj:
            return real(B, H, P, has_proj, dtype, device, directions, resident, variants=variants)
        BB, HK = 16, triton.next_power_of_2(max(H, 16))
        return persistent.PersistentConfig(BLOCK_H=HK, BLOCK_P=HK, BLOCK_B=BB, BLOCK_K=HK, NP=1,
                                           NM=triton.cdiv(B, BB), num_warps=4, resident=True, batch_loop=True)

    monkeypatch.setattr(persistent_launch, "config_for", config_for)
    launches = []
    monkeypatch.setattr(persistent_launch, "forward_tiles_kernel",
                        LaunchSpy(persistent_launch.forward_tiles_kernel, launches))
    assert triton.cdiv(cfg.B, 16) > 2
    with force_tier("persistent"):
        check_lstm_against_torch(cfg, "triton", torch.float32)
    assert launches and all(grid[1] == 1 for grid in launches)


def test_batch_loop_only_where_the_grid_would_not_fit():
    """bf16, B=128, H=1024 needs 64 programs per direction: 8 batch tiles would not be
    resident at once, so the programs loop over them; B=16 keeps one tile per program."""
    big = persistent.persistent_config(128, 1024, 1024, False, torch.bfloat16, 132, interpreting=False)
    assert big.resident and big.batch_loop and big.NP * big.grid_m <= 132
    small = persistent.persistent_config(16, 1024, 1024, False, torch.bfloat16, 132, interpreting=False)
    assert small.resident and not small.batch_loop
    off = persistent.persistent_config(128, 1024, 1024, False, torch.bfloat16, 132, interpreting=False,
                                       variants=Variants().without("no-batch-loop"))
    assert off is None or not off.resident


def test_backend_instance_pins_its_tier():
    """``TritonBackend(tier=...)`` runs that tier whatever ``force_tier`` says; without one it
    follows ``force_tier``, else the automatic choice."""
    from lstm_kernels._triton.backend import TritonBackend

    cpu = torch.device("cpu")
    assert TritonBackend().tier_for(3, 7, torch.float32, cpu) == choose_tier(3, 7, torch.float32, cpu)
    pinned = TritonBackend(tier="fused_step")
    with force_tier("pointwise"):
        assert TritonBackend().tier_for(3, 7, torch.float32, cpu) == "pointwise"
        assert pinned.tier_for(3, 7, torch.float32, cpu) == "fused_step"
    with pytest.raises(ValueError, match="tier must be one of"):
        TritonBackend(tier="no-such-tier")
    gx, h0, c0 = torch.randn(4, 3, 28), torch.randn(3, 7), torch.randn(3, 7)
    w_hh = torch.randn(28, 7)
    with force_tier("fused_step"):
        expected = TritonBackend().scan(gx, h0, c0, w_hh, None, None, False)
    with force_tier("pointwise"):
        got = pinned.scan(gx, h0, c0, w_hh, None, None, False)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=0, atol=0)


def test_candidate_tiers_lists_the_tiers_worth_timing_first_choice_first():
    from lstm_kernels._triton.dispatch import candidate_tiers

    cpu = torch.device("cpu")
    for B, H in ((1, 7), (32, 256), (4, 1024)):
        tiers = candidate_tiers(B, H, torch.float32, cpu)
        assert tiers[0] == choose_tier(B, H, torch.float32, cpu)
        assert len(tiers) == len(set(tiers)) and set(tiers) <= set(TIERS)
        assert "fused_step" in tiers and "pointwise" not in tiers
    assert candidate_tiers(4, 32, torch.float64, cpu) == ["pointwise"]
    assert candidate_tiers(4, 32, torch.float32, torch.device("meta")) == []


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=dtype_id)
@pytest.mark.parametrize("saved_off", ["", "saved-fp32"])
def test_persistent_saves_16_bit_state_in_the_storage_dtype(dtype, saved_off):
    """fp16 models' saved gates and cell states are stored in fp16 (half the backward's saved
    memory) and the gradients still pass the flash-attention rule against the float64
    oracle, over a sequence long enough for the rounding to accumulate; bf16 and the
    "saved-fp32" variant keep them in fp32 (common/precision.py, saved_dtype, says why)."""
    cfg = Config(B=5, T=24, input_size=6, hidden_size=40, bidirectional=True, mode="packed")
    with force_tier("persistent"), variants.variant(saved_off):
        check_lstm_against_torch(cfg, "triton", dtype)
        H = 8
        gx, h0, c0 = torch.randn(3, 2, 4 * H, dtype=dtype), torch.randn(2, H, dtype=dtype), torch.randn(2, H, dtype=dtype)
        w_hh = torch.randn(4 * H, H, dtype=dtype)
        saved = torch.ops.lstm_kernels.persistent_scan(gx, h0, c0, w_hh, None, None, False, True)
    want = dtype if dtype == torch.float16 and not saved_off else torch.float32
    assert saved[3].dtype == want and saved[4].dtype == want, (saved[3].dtype, saved[4].dtype)
    assert saved[5].dtype == torch.float32 or saved[5].numel() == 0
