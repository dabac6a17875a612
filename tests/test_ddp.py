"""DistributedDataParallel: two CPU processes (gloo) train a model holding LSTM; the
ranks stay in sync, the loss falls, and nothing warns about flattening weights.

Dimensions: T seq len, B batch (per rank), I input, H hidden.
"""
from __future__ import annotations

import os
import socket
import sys
import warnings

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import lstm_kernels.scripted  # noqa: F401  (script before conftest poisons torch.empty)
from lstm_kernels import LSTM

WORLD = 2
STEPS = 25
T, B, I, H = 5, 8, 3, 8


class Regressor(nn.Module):
    """Predict the running sum of the first input feature at every step."""

    def __init__(self):
        super().__init__()
        self.lstm = LSTM(I, H, num_layers=2, bidirectional=True, dropout=0.1, backend="torchscript")
        self.head = nn.Linear(2 * H, 1)

    def forward(self, x):
        return self.head(self.lstm(x)[0])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)  # two processes on a shared CI machine
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(100 + rank)  # different initial weights: DDP must broadcast rank 0's
        model = DistributedDataParallel(Regressor())
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        x = torch.randn(T, B, I)  # each rank its own shard of data
        y = x[..., :1].cumsum(0)
        losses = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(STEPS):
                opt.zero_grad()
                loss = nn.functional.mse_loss(model(x), y)
                loss.backward()
                opt.step()
                losses.append(loss.item())
        flat = torch.cat([p.detach().reshape(-1) for p in model.module.parameters()])
        gathered = [torch.empty_like(flat) for _ in range(WORLD)]
        dist.all_gather(gathered, flat)
        torch.save(
            {
                "losses": losses,
                "params": gathered,
                "warnings": [f"{w.filename}:{w.lineno}: {w.message}" for w in caught],
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # The work is done and saved. Leave without interpreter teardown: in about 1 run in 10,
    # a c10d/gloo thread still joinable at static destruction aborted the process
    # ("terminate called without an active exception", no Python frame on the stack).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def test_ddp_two_processes_stay_in_sync(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for r, res in enumerate(results):
        # every rank saw identical parameters on every rank after training
        assert torch.equal(res["params"][0], res["params"][1]), f"rank {r}: ranks diverged"
        assert res["losses"][-1] < 0.5 * res["losses"][0], f"rank {r}: loss {res['losses']}"
        ours = [w for w in res["warnings"] if "lstm_kernels" in w or "flatten" in w or "contiguous" in w]
        assert not ours, ours
    assert torch.equal(results[0]["params"][0], results[1]["params"][0])
