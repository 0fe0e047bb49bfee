"""Training throughput (samples/s) of bltlab's char model against a plain torch.nn.Transformer.

Both models have the same width, depth, heads, feed-forward size and batch size and
train on the same rows (../shared/data/train.csv when present, else generated data)
with AdamW, one full step (forward, backward, clip, update) per batch. The
nn.Transformer is timed on the same length-bucketed batches as bltlab (a model-only
comparison) and on plain shuffled padded batches (the usual pipeline).

    python bench/train_throughput.py --json
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from bltlab.batching import LengthBucketSampler, PairDataset, collate
from bltlab.data import generate, load_pairs
from bltlab.models import CharTransformer, ModelConfig
from bltlab.training import TrainConfig, make_optimizer, train_step
from bltlab.vocab import PAD, CharVocab

SEED_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "train.csv"


class TorchTransformer(nn.Module):
    """The reference: nn.Transformer with embeddings, learned positions and a head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Embedding(cfg.max_len, cfg.d_model)
        self.net = nn.Transformer(cfg.d_model, cfg.nhead, cfg.num_encoder_layers,
                                  cfg.num_decoder_layers, cfg.dim_feedforward, cfg.dropout,
                                  activation="gelu", batch_first=True, norm_first=True)
        self.head = nn.Linear(cfg.d_model, cfg.vocab_size)

    def forward(self, src, src_lens, tgt_in):
        s = self.embed(src) + self.pos(torch.arange(src.shape[1]))
        t = self.embed(tgt_in) + self.pos(torch.arange(tgt_in.shape[1]))
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.shape[1])
        pad_src, pad_tgt = src == PAD, tgt_in == PAD
        y = self.net(s, t, tgt_mask=causal, src_key_padding_mask=pad_src,
                     tgt_key_padding_mask=pad_tgt, memory_key_padding_mask=pad_src,
                     tgt_is_causal=True)
        return self.head(y)


def throughput(model: nn.Module, loader: DataLoader, steps: int, warmup: int) -> float:
    cfg = TrainConfig(lr=1e-3)
    optimizer = make_optimizer(model, cfg)
    model.train()
    seen, start, done = 0, 0.0, 0
    while done < steps + warmup:
        for batch in loader:
            if done == warmup:
                start, seen = time.perf_counter(), 0
            train_step(model, batch, optimizer, cfg, torch.device("cpu"))
            seen += batch["src"].shape[0]
            done += 1
            if done == steps + warmup:
                break
    return seen / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print only the JSON")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    path = SEED_TRAIN
    if not path.is_file():
        path, _ = generate(tempfile.mkdtemp(), seed=0)
    pairs = load_pairs(path)
    vocab = CharVocab.build(pairs.inputs + pairs.targets)
    data = PairDataset.encode(vocab, pairs)
    cfg = ModelConfig(vocab_size=len(vocab))
    bucketed = DataLoader(data, batch_sampler=LengthBucketSampler(
        [len(s) for s in data.src], args.batch_size, seed=0), collate_fn=collate)
    shuffled = DataLoader(data, batch_size=args.batch_size, shuffle=True, collate_fn=collate,
                          generator=torch.Generator().manual_seed(0))

    result = {
        "config": {**cfg.to_dict(), "batch_size": args.batch_size, "threads": args.threads,
                   "steps": args.steps, "data": str(path)},
        "char": {"samples_per_s": throughput(CharTransformer(cfg), bucketed, args.steps,
                                             args.warmup)},
        "torch_nn_transformer": {"samples_per_s": throughput(TorchTransformer(cfg), shuffled,
                                                             args.steps, args.warmup)},
        "torch_nn_transformer_bucketed": {
            "samples_per_s": throughput(TorchTransformer(cfg), bucketed, args.steps,
                                        args.warmup)},
    }
    for k in ("char", "torch_nn_transformer", "torch_nn_transformer_bucketed"):
        result[k]["samples_per_s"] = round(result[k]["samples_per_s"], 1)
    result["speedup_vs_torch_nn_transformer"] = round(
        result["char"]["samples_per_s"] / result["torch_nn_transformer"]["samples_per_s"], 2)
    result["speedup_same_batches"] = round(
        result["char"]["samples_per_s"]
        / result["torch_nn_transformer_bucketed"]["samples_per_s"], 2)
    assert math.isfinite(result["speedup_vs_torch_nn_transformer"])
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
