"""One training loop for every model: AdamW, warmup + schedule, clipping, bucketed batches,
validation exact match each epoch, atomic best/latest checkpoints and a history JSON."""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from bltlab.batching import Collate, LengthBucketSampler, PairDataset
from bltlab.checkpoint import load_checkpoint, save_checkpoint
from bltlab.config import Config
from bltlab.data import Pairs, generate_inputs, load_pairs, reverse, wordlist
from bltlab.decoding import predict
from bltlab.errors import BltlabError
from bltlab.fileio import write_json
from bltlab.inputs import codec_from_state, fit_codec
from bltlab.models import CONFIGS, ModelConfig, build_model, count_parameters
from bltlab.patching import PatcherConfig
from bltlab.vocab import PAD


@dataclass
class TrainConfig(Config):
    """Everything about a run except the model's shape; serialised into checkpoints."""

    train_csv: str = "data/train.csv"
    save_dir: str = "checkpoints"
    epochs: int = 6
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    optimizer: str = "adamw"
    lr_scheduler: str = "cosine"
    warmup_steps: int = 100
    grad_clip: float = 1.0
    val_fraction: float = 0.05
    early_stopping_patience: int = 0
    use_amp: bool = False
    num_workers: int = 0
    seed: int = 0
    device: str = "auto"
    skip_bad_rows: bool = False
    resume: str = ""  # "" no, "latest" the save dir's latest checkpoint, or a path
    target_bpp: float | None = 4.0  # blt: calibrate the entropy patchers to this
    fresh_pairs: bool = False  # each epoch: as many newly generated rows instead
    fresh_non_ascii: float = 0.0  # share of fresh rows given a word with non-ASCII characters
    progress: bool = True


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BltlabError(f"--device {name}: CUDA is not available on this machine")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def split_validation(pairs: Pairs, fraction: float, seed: int) -> tuple[Pairs, Pairs]:
    """Hold out a seeded random `fraction` of the training rows for validation."""
    n_val = max(1, round(fraction * len(pairs))) if fraction > 0 else 0
    if n_val >= len(pairs):
        raise BltlabError(f"{pairs.path}: {len(pairs)} rows are too few for a validation split")
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed)).tolist()
    return pairs.subset(order[n_val:]), pairs.subset(order[:n_val])


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Weight decay on the linear layers' matrices only.

    Embeddings are not decayed: a character seen a handful of times in training gets
    few gradient updates, and decay would pull its vector towards zero, where the tied
    output head can no longer tell it from other rare characters.
    """
    decayed = {id(m.weight) for m in model.modules() if isinstance(m, nn.Linear)}
    decay = [p for p in model.parameters() if id(p) in decayed]
    rest = [p for p in model.parameters() if id(p) not in decayed]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": rest, "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98))
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=(0.9, 0.98))
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9)
    raise BltlabError(f"--optimizer {cfg.optimizer!r}: choose adamw, adam or sgd")


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine to zero, a halving every quarter (step), or constant."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    if cfg.lr_scheduler == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    if cfg.lr_scheduler == "step":
        return 0.5 ** int(4 * min(progress, 0.999))
    if cfg.lr_scheduler == "constant":
        return 1.0
    raise BltlabError(f"--lr_scheduler {cfg.lr_scheduler!r}: choose cosine, step or constant")


def train_step(model: nn.Module, batch: dict, optimizer: torch.optim.Optimizer,
               cfg: TrainConfig, device: torch.device) -> float:
    """One optimisation step on a batch; returns the mean token loss."""
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.use_amp):
        logits = model(batch)
    loss = F.cross_entropy(logits.float().flatten(0, 1), batch["tgt_out"].flatten(),
                           ignore_index=PAD)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return loss.item()


@torch.no_grad()


def validation_loss(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    model.eval()
    total, count = 0.0, 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(batch)
        total += F.cross_entropy(logits.flatten(0, 1), batch["tgt_out"].flatten(),
                                 ignore_index=PAD, reduction="sum").item()
        count += int((batch["tgt_out"] != PAD).sum())
    return total / count


def exact_match(model: nn.Module, codec, pairs: Pairs, device: torch.device) -> float:
    preds = predict(model, codec, pairs.inputs, device=device)
    return sum(p == t for p, t in zip(preds, pairs.targets)) / len(pairs)


def fresh_pairs(n: int, seed: int, epoch: int, non_ascii_rate: float = 0.0) -> Pairs:
    """`n` newly generated reversal rows for one epoch (the distribution of
    `bltlab data generate`, optionally with more non-ASCII rows; a stream of its own
    per seed and epoch)."""
    rng = np.random.default_rng([seed, epoch, 0x5EED])
    inputs = generate_inputs(n, rng, wordlist(), non_ascii_rate)
    return Pairs(inputs, [reverse(t) for t in inputs], f"generated (epoch {epoch + 1})")


def checkpoint_paths(save_dir: str | Path, mode: str) -> tuple[Path, Path, Path]:
    """best_<mode>_model.pt, latest_<mode>_model.pt, history_<mode>.json."""
    d = Path(save_dir)
    return d / f"best_{mode}_model.pt", d / f"latest_{mode}_model.pt", d / f"history_{mode}.json"


def load_model(path: str | Path, mode: str | None = None,
               device: str | torch.device = "cpu") -> tuple[nn.Module, object, dict]:
    """Model, codec and checkpoint dict from a checkpoint file."""
    state = load_checkpoint(path, mode)
    cfg = CONFIGS[state["mode"]].from_dict(state["model_config"])
    model = build_model(state["mode"], cfg)
    model.load_state_dict(state["model"])
    return model.to(device).eval(), codec_from_state(state["codec"]), state


def make_codec(mode: str, model_cfg: ModelConfig, cfg: TrainConfig, texts: list[str],
               patcher_cfg: PatcherConfig | None):
    """The codec for a run; for BLT it also sizes the model's patch slots."""
    if mode != "blt":
        return fit_codec(mode, texts)
    patcher_cfg = patcher_cfg or PatcherConfig()
    if model_cfg.pooling == "project":
        if patcher_cfg.max_patch_len <= 0:
            raise BltlabError("--pooling project needs --max_patch_len > 0 (the slots per patch)")
        # a cut that falls inside a UTF-8 character moves to its end: up to 3 bytes more
        model_cfg.max_patch_len = patcher_cfg.max_patch_len + 3
    return fit_codec(mode, texts, patcher_cfg, cfg.target_bpp, model_cfg.ngram_sizes,
                     model_cfg.ngram_buckets)


def train(mode: str, model_cfg: ModelConfig, cfg: TrainConfig,
          patcher_cfg: PatcherConfig | None = None) -> dict:
    """Train a model; returns the best checkpoint's path, its validation scores and history."""
    if not 0.0 <= cfg.fresh_non_ascii <= 1.0:
        raise BltlabError(f"--fresh_non_ascii {cfg.fresh_non_ascii}: must be between 0 and 1")
    seed_everything(cfg.seed)
    device = pick_device(cfg.device)
    unit = "bytes" if mode == "blt" else "chars"
    pairs = load_pairs(cfg.train_csv, max_len=model_cfg.max_len - 1, unit=unit,
                       skip_bad_rows=cfg.skip_bad_rows)
    if pairs.skipped:
        print(f"{cfg.train_csv}: skipped {sum(pairs.skipped.values())} bad rows {pairs.skipped}")
    train_pairs, val_pairs = split_validation(pairs, cfg.val_fraction, cfg.seed)
    best_path, latest_path, history_path = checkpoint_paths(cfg.save_dir, mode)
    resume_path = latest_path if cfg.resume == "latest" else Path(cfg.resume)
    resume = cfg.resume and (resume_path.is_file() or cfg.resume != "latest")
    state = load_checkpoint(resume_path, mode) if resume else None
    if state is not None and "optimizer" not in state:
        raise BltlabError(f"{resume_path}: cannot resume from it (not a latest checkpoint)")
    if state is not None:
        codec = codec_from_state(state["codec"])
        model_cfg = CONFIGS[mode].from_dict(state["model_config"])
    else:
        codec = make_codec(mode, model_cfg, cfg, train_pairs.inputs, patcher_cfg)
    model_cfg.vocab_size = len(codec.vocab)
    if mode == "blt":
        seg = codec.segment(train_pairs.inputs)
        print(f"patches: {codec.patcher.cfg.describe()}, {seg.bytes_per_patch():.2f} "
              "bytes/patch on the training inputs")
        if codec.patcher.lm is not None:
            codec.patcher.lm.save(Path(cfg.save_dir) / "entropy_model.pt")

    collate = Collate(codec)
    train_set = PairDataset.build(codec, train_pairs)
    steps_per_epoch = len(LengthBucketSampler(train_set.lengths(), cfg.batch_size))

    def epoch_loader(epoch: int) -> DataLoader:
        dataset = (PairDataset.build(codec, fresh_pairs(len(train_pairs), cfg.seed, epoch,
                                                           cfg.fresh_non_ascii))
                   if cfg.fresh_pairs else train_set)
        sampler = LengthBucketSampler(dataset.lengths(), cfg.batch_size, cfg.seed)
        sampler.set_epoch(epoch)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                          num_workers=cfg.num_workers)

    val_set = PairDataset.build(codec, val_pairs) if len(val_pairs) else None
    val_loader = (DataLoader(val_set, batch_sampler=LengthBucketSampler(
        val_set.lengths(), 256, 0), collate_fn=collate) if val_set else None)

    model = build_model(mode, model_cfg).to(device)
    optimizer = make_optimizer(model, cfg)
    total_steps = cfg.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, cfg))
    history: list[dict] = []
    best = {"val_exact_match": -1.0, "val_loss": math.inf, "epoch": 0}
    start_epoch = 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, best, start_epoch = state["history"], state["best"], state["epoch"]
        print(f"resumed from {resume_path} after epoch {start_epoch}")

    print(f"{mode}: {count_parameters(model):,} parameters, {len(train_set)} train / "
          f"{len(val_pairs)} val rows, {steps_per_epoch} batches per epoch, device {device}")
    base_state = {"mode": mode, "model_config": model_cfg.to_dict(), "train_config": asdict(cfg),
                  "codec": codec.to_state()}
    stale = 0
    for epoch in range(start_epoch, cfg.epochs):
        loader = epoch_loader(epoch)
        model.train()
        t0, seen, loss_sum = time.perf_counter(), 0, 0.0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   disable=None if cfg.progress else True,  # None: off when not a terminal
                   dynamic_ncols=True)
        for batch in bar:
            loss = train_step(model, batch, optimizer, cfg, device)
            scheduler.step()
            seen += batch["src"].shape[0]
            loss_sum += loss
            bar.set_postfix(loss=f"{loss:.4f}", sps=f"{seen / (time.perf_counter() - t0):.0f}")
        train_seconds = time.perf_counter() - t0
        row = {"epoch": epoch + 1, "train_loss": loss_sum / steps_per_epoch,
               "lr": optimizer.param_groups[0]["lr"], "epoch_seconds": round(train_seconds, 2),
               "samples_per_s": round(seen / train_seconds, 1)}
        if val_loader is not None:
            row["val_loss"] = validation_loss(model, val_loader, device)
            row["val_exact_match"] = exact_match(model, codec, val_pairs, device)
        history.append(row)
        improved = row.get("val_exact_match", 0) > best["val_exact_match"] or (
            row.get("val_exact_match", 0) == best["val_exact_match"]
            and row.get("val_loss", 0) < best["val_loss"])
        if improved or val_loader is None:
            best = {"val_exact_match": row.get("val_exact_match", 0.0),
                    "val_loss": row.get("val_loss", 0.0), "epoch": epoch + 1}
            save_checkpoint(best_path, {**base_state, "model": model.state_dict(),
                                        "epoch": epoch + 1, "metrics": row})
            stale = 0
        else:
            stale += 1
        save_checkpoint(latest_path, {**base_state, "model": model.state_dict(),
                                      "optimizer": optimizer.state_dict(),
                                      "scheduler": scheduler.state_dict(), "epoch": epoch + 1,
                                      "history": history, "best": best, "metrics": row})
        write_json(history_path, {"mode": mode, "model_config": model_cfg.to_dict(),
                                  "train_config": asdict(cfg), "epochs": history, "best": best})
        print(f"epoch {epoch + 1}/{cfg.epochs}  loss {row['train_loss']:.4f}  "
              f"val_loss {row.get('val_loss', float('nan')):.4f}  "
              f"val_exact {100 * row.get('val_exact_match', float('nan')):.2f}%  "
              f"{row['samples_per_s']:.0f} samples/s  {row['epoch_seconds']:.0f}s"
              + ("  *" if improved else ""), flush=True)
        if cfg.early_stopping_patience and stale >= cfg.early_stopping_patience:
            print(f"early stopping: no better validation exact match for {stale} epochs")
            break
    print(f"best checkpoint: {best_path} (epoch {best['epoch']}, "
          f"val exact match {100 * best['val_exact_match']:.2f}%)")
    return {"best_checkpoint": str(best_path), "best": best, "history": history,
            "parameters": count_parameters(model)}


def default_threads() -> int:
    """Cores this process may use (respects affinity masks and cgroup-limited CPUs)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
