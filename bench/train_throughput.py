"""Training throughput (samples/s): bltlab's char model and BLT, and a plain torch.nn.Transformer.

Both models have the same width, depth, heads, feed-forward size and batch size and
train on the same rows (../shared/data/train.csv when present, else generated data)
with AdamW, one full step (forward, backward, clip, update) per batch. The
nn.Transformer is timed on the same length-bucketed batches as bltlab (a model-only
comparison) and on plain shuffled padded batches (the usual pipeline). The models take
turns, round after round, and each figure is the median over rounds: this machine's
speed drifts by tens of percent from minute to minute. The BLT ("blt") is the default
one (the BLT recipe's spec, resolved on the same rows: entropy-model patches calibrated
to its target bytes/patch).
Variants: each model under bf16 autocast (`*_bf16`) and under torch.compile
(`*_compiled`, timed after its warm-up steps have compiled it).

    python bench/train_throughput.py --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from bltlab.batching import EncodedPairs, LengthBucketSampler, as_is
from bltlab.config import ModelConfig, TrainConfig
from bltlab.data import generate, load_pairs
from bltlab.models import build_model
from bltlab.spec import build_spec, resolve
from bltlab.training import Precision, make_optimizer, train_step
from bltlab.vocab import PAD

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

    def forward(self, batch):
        src, tgt_in = batch["src"], batch["tgt_in"]
        s = self.embed(src) + self.pos(torch.arange(src.shape[1]))
        t = self.embed(tgt_in) + self.pos(torch.arange(tgt_in.shape[1]))
        causal = nn.Transformer.generate_square_subsequent_mask(tgt_in.shape[1])
        pad_src, pad_tgt = src == PAD, tgt_in == PAD
        y = self.net(s, t, tgt_mask=causal, src_key_padding_mask=pad_src,
                     tgt_key_padding_mask=pad_tgt, memory_key_padding_mask=pad_src,
                     tgt_is_causal=True)
        return self.head(y)


class Runner:
    """A model (optionally compiled, optionally under bf16 autocast), its optimizer and
    an endless stream of its batches."""

    def __init__(self, model: nn.Module, loader: DataLoader, amp: bool = False,
                 compiled: bool = False):
        self.loader, self.cfg = loader, TrainConfig(lr=1e-3)
        self.optimizer = make_optimizer(model, self.cfg)
        self.model = torch.compile(model, dynamic=True) if compiled else model
        self.precision = Precision(enabled=amp)
        self.batches = iter(())

    def next_batch(self) -> dict:
        try:
            return next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            return next(self.batches)

    def samples_per_s(self, steps: int) -> float:
        self.model.train()
        batches = [self.next_batch() for _ in range(steps)]
        start = time.perf_counter()
        for batch in batches:
            train_step(self.model, [batch], self.optimizer, self.cfg, torch.device("cpu"),
                       self.precision)
        return sum(b["src"].shape[0] for b in batches) / (time.perf_counter() - start)


def compare(runners: dict[str, Runner], steps: int, rounds: int, warmup: int) -> dict:
    """Median samples/s of each runner over `rounds`, the runners taking turns each round
    so that a slow patch of the machine hits all of them alike."""
    for runner in runners.values():
        runner.samples_per_s(warmup)
    seen: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            seen[name].append(runner.samples_per_s(steps))
    return {name: {"samples_per_s": round(statistics.median(v), 1),
                   "rounds": [round(x, 1) for x in v]} for name, v in seen.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", action="store_true", help="print only the JSON")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="steps per model per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=int, default=10, help="untimed steps first (compilation)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no_variants", action="store_true",
                   help="skip the bf16-autocast and torch.compile variants")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    path = SEED_TRAIN
    if not path.is_file():
        path, _ = generate(tempfile.mkdtemp(), seed=0)
    pairs = load_pairs(path)
    seed_profile = {"profile": "seed"}  # the seed's rows, as every earlier measurement
    char_spec, codec = resolve(build_spec("char", settings=seed_profile), pairs.inputs)
    data = EncodedPairs.build(codec, pairs.inputs, pairs.targets)
    cfg = char_spec.model
    bucketed = DataLoader(data, batch_sampler=LengthBucketSampler(
        data.lengths(), args.batch_size, seed=0), collate_fn=as_is)
    shuffled = DataLoader(data, batch_size=args.batch_size, shuffle=True, collate_fn=as_is,
                          generator=torch.Generator().manual_seed(0))

    blt_spec, blt_codec = resolve(build_spec("blt", settings=seed_profile), pairs.inputs)
    blt_data = EncodedPairs.build(blt_codec, pairs.inputs, pairs.targets)
    blt_loader = DataLoader(blt_data, batch_sampler=LengthBucketSampler(
        blt_data.lengths(), args.batch_size, seed=0), collate_fn=as_is)
    blt_cfg = blt_spec.model
    runners = {
        "char": Runner(build_model(cfg), bucketed),
        "blt": Runner(build_model(blt_cfg), blt_loader),
        "torch_nn_transformer": Runner(TorchTransformer(cfg), shuffled),
        "torch_nn_transformer_bucketed": Runner(TorchTransformer(cfg), bucketed),
    }
    if not args.no_variants:
        runners.update({
            "char_bf16": Runner(build_model(cfg), bucketed, amp=True),
            "blt_bf16": Runner(build_model(blt_cfg), blt_loader, amp=True),
            "char_compiled": Runner(build_model(cfg), bucketed, compiled=True),
            "blt_compiled": Runner(build_model(blt_cfg), blt_loader, compiled=True),
        })
    result = {"config": {**cfg.to_dict(), "batch_size": args.batch_size,
                         "threads": args.threads, "steps": args.steps, "rounds": args.rounds,
                         "data": str(path)},
              **compare(runners, args.steps, args.rounds, args.warmup)}
    char = result["char"]["samples_per_s"]
    result["speedup_vs_torch_nn_transformer"] = round(
        char / result["torch_nn_transformer"]["samples_per_s"], 2)
    result["speedup_same_batches"] = round(
        char / result["torch_nn_transformer_bucketed"]["samples_per_s"], 2)
    result["blt_vs_char"] = round(result["blt"]["samples_per_s"] / char, 2)
    for variant in ("bf16", "compiled"):
        for model in ("char", "blt"):
            if f"{model}_{variant}" in result:
                result[f"{model}_{variant}_vs_fp32_eager"] = round(
                    result[f"{model}_{variant}"]["samples_per_s"]
                    / result[model]["samples_per_s"], 2)
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
