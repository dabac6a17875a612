"""A real training script: PyTorch's word-level language model, nn.LSTM against ours.

The model is the one in PyTorch's ``examples/word_language_model`` (embedding, a
2-layer LSTM with dropout between layers, a linear decoder over the vocabulary), trained
with truncated backpropagation through time and gradient clipping. The corpus is
synthetic (Zipf-distributed token ids), so the script needs no download; the work per
step is the same as on a real corpus of that vocabulary.

Both models start from the same weights and see the same batches. Epochs alternate
between the providers (nn.LSTM, then ours, then nn.LSTM, ...) so a slow phase of a
shared machine hits both alike, and the ratio reported is the median over rounds of
``ours / nn.LSTM`` for epochs run back to back (below 1.0: ours is faster).

Usage:
    python benchmarks/word_lm.py                   # 5 rounds of 40-batch epochs
    python benchmarks/word_lm.py --backend torchscript --rounds 3 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import lstm_kernels  # noqa: E402


class WordLM(nn.Module):
    """Embedding -> LSTM -> dropout -> linear decoder, as in PyTorch's example."""

    def __init__(self, rnn: nn.Module, ntoken: int, ninp: int, dropout: float):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = rnn
        self.decoder = nn.Linear(rnn.hidden_size, ntoken)

    def forward(self, tokens, hidden):
        emb = self.drop(self.encoder(tokens))
        out, hidden = self.rnn(emb, hidden)
        return self.decoder(self.drop(out)), hidden


def make_models(args) -> dict[str, WordLM]:
    ref_rnn = nn.LSTM(args.emsize, args.nhid, args.nlayers, dropout=args.dropout)
    ours_rnn = lstm_kernels.LSTM(args.emsize, args.nhid, args.nlayers, dropout=args.dropout,
                                 backend=args.backend)
    ours_rnn.load_state_dict(ref_rnn.state_dict())
    ref = WordLM(ref_rnn, args.ntokens, args.emsize, args.dropout)
    ours = WordLM(ours_rnn, args.ntokens, args.emsize, args.dropout)
    ours.encoder.load_state_dict(ref.encoder.state_dict())
    ours.decoder.load_state_dict(ref.decoder.state_dict())
    return {"nn.LSTM": ref, f"lstm_kernels ({args.backend})": ours}


def corpus(args) -> torch.Tensor:
    """[n_batches * bptt + 1, batch] token ids, Zipf-like over the vocabulary."""
    g = torch.Generator().manual_seed(0)
    ranks = torch.arange(1, args.ntokens + 1, dtype=torch.float64)
    probs = (1.0 / ranks) / (1.0 / ranks).sum()
    n = args.batches * args.bptt + 1
    return torch.multinomial(probs, n * args.batch_size, replacement=True, generator=g).view(n, args.batch_size)


CLOCKS = {"wall": time.perf_counter, "thread": time.thread_time}


def train_epoch(model: WordLM, data: torch.Tensor, args, opt) -> float:
    """One epoch of truncated BPTT; returns its time in seconds (``args.clock``)."""
    clock = CLOCKS[getattr(args, "clock", "wall")]
    model.train()
    crit = nn.CrossEntropyLoss()
    hidden = None
    start = clock()
    for i in range(0, data.size(0) - 1, args.bptt):
        inp, target = data[i:i + args.bptt], data[i + 1:i + 1 + args.bptt]
        if hidden is not None:
            hidden = tuple(h.detach() for h in hidden)
        opt.zero_grad()
        logits, hidden = model(inp, hidden)
        loss = crit(logits.view(-1, args.ntokens), target.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
    return clock() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--ntokens", type=int, default=10000)
    ap.add_argument("--emsize", type=int, default=200)
    ap.add_argument("--nhid", type=int, default=200)
    ap.add_argument("--nlayers", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.2)
    ap.add_argument("--bptt", type=int, default=35)
    ap.add_argument("--batch-size", type=int, default=20)
    ap.add_argument("--batches", type=int, default=40, help="batches per epoch")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="thread: CPU time of the calling thread (with --threads 1, immune to other load)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = make_models(args)
    data = corpus(args)
    opts = {k: torch.optim.SGD(m.parameters(), lr=20.0) for k, m in models.items()}
    names = list(models)
    for k in names:  # warm-up epoch each: scripting, tuning and allocator growth stay out of the timing
        train_epoch(models[k], data[: 2 * args.bptt + 1], args, opts[k])
    choice = lstm_kernels.dispatch.last_choice()  # what auto runs for this model's batches
    times = {k: [] for k in names}
    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for k in order:
            times[k].append(train_epoch(models[k], data, args, opts[k]))
    ref, ours = names
    ratio = statistics.median(o / t for o, t in zip(times[ours], times[ref]))
    for k in names:
        print(f"{k:28s} median epoch {statistics.median(times[k]):.3f} s  (min {min(times[k]):.3f})")
    print(f"ratio {ours} / nn.LSTM: {ratio:.3f}  (below 1.0: faster)")
    if choice is not None:
        print(f"auto runs: {choice}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "times_s": times, "ratio": ratio,
                       "auto_choice": None if choice is None else str(choice), "torch": torch.__version__,
                       "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine()},
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
