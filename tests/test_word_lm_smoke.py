"""benchmarks/word_lm.py runs end to end on tiny sizes and both models learn the same way.

Both providers start from the same weights; with dropout off their first training epoch
must give the same parameters (nn.LSTM against ours, float32 tolerances).
"""
import json
import os

import torch

from conftest import tol
from helpers import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load():
    return load_script("word_lm")


def test_word_lm_runs_and_writes_json(tmp_path):
    word_lm = _load()
    out = tmp_path / "lm.json"
    rc = word_lm.main(["--ntokens", "50", "--emsize", "8", "--nhid", "8", "--bptt", "5", "--batch-size", "3",
                       "--batches", "2", "--rounds", "1", "--backend", "torchscript", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["ratio"] > 0 and len(data["times_s"]) == 2


def test_word_lm_models_train_alike():
    word_lm = _load()
    args = word_lm.main.__globals__["argparse"].Namespace(
        backend="torchscript", ntokens=40, emsize=6, nhid=7, nlayers=2, dropout=0.0, bptt=4, batch_size=3,
        batches=2)
    models = word_lm.make_models(args)
    data = word_lm.corpus(args)
    for m in models.values():
        word_lm.train_epoch(m, data, args, torch.optim.SGD(m.parameters(), lr=0.5))
    ref, ours = models.values()
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p, ref_params[name], **tol(torch.float32, "grad"))
