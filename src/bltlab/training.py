"""One training loop for every model: AdamW, warmup + schedule, clipping, bucketed batches,
validation exact match each epoch, atomic best/latest checkpoints and a history JSON."""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from bltlab import distributed
from bltlab.batching import Collate, LengthBucketSampler, PairDataset
from bltlab.checkpoint import load_checkpoint, save_checkpoint
from bltlab.config import Config
from bltlab.data import Pairs, generate_inputs, load_pairs, reverse, wordlist
from bltlab.decoding import predict
from bltlab.distributed import World
from bltlab.errors import BltlabError
from bltlab.fileio import RunLock, write_json
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
    lr_scheduler: str = "cosine"  # cosine, step, constant, plateau
    warmup_steps: int = 100
    plateau_patience: int = 2  # plateau: epochs without improvement before each lr cut
    plateau_factor: float = 0.5
    grad_clip: float = 1.0
    grad_accum_steps: int = 1
    val_fraction: float = 0.05
    early_stopping_patience: int = 0
    early_stopping_metric: str = "exact_match"  # or loss (validation)
    use_amp: bool = False  # the seed's flag: --amp on
    amp: str = "auto"  # auto (on for CUDA, off on CPU), on, off
    compile: bool = False
    save_every_steps: int = 100
    tensorboard: bool = True
    num_workers: int = 0
    seed: int = 0
    device: str = "auto"
    skip_bad_rows: bool = False
    resume: str = "auto"  # auto: continue the same run if save_dir has one; latest; never; PATH
    target_bpp: float | None = 4.05  # blt: calibrate the entropy patchers to this (on train;
    # 4.05 there gives ≥ 4.0 on held-out text)
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
    """Linear warmup, then cosine to zero, a halving every quarter (step), or constant
    (constant and plateau; plateau's cuts come from the validation score, in Progress)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    if cfg.lr_scheduler == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    if cfg.lr_scheduler == "step":
        return 0.5 ** int(4 * min(progress, 0.999))
    if cfg.lr_scheduler in ("constant", "plateau"):
        return 1.0
    raise BltlabError(f"--lr_scheduler {cfg.lr_scheduler!r}: choose cosine, step, constant "
                      "or plateau")


@dataclass
class Precision:
    """Autocast settings of a run: bf16 where the device has it, else fp16 with loss scaling."""

    enabled: bool = False
    dtype: torch.dtype = torch.bfloat16
    scaler: torch.amp.GradScaler | None = None


def pick_precision(cfg: TrainConfig, device: torch.device) -> Precision:
    """--amp on/off, or auto: on for CUDA; off on CPU, where bf16 autocast measured slower
    at the study's width (see README)."""
    if cfg.amp not in ("auto", "on", "off"):
        raise BltlabError(f"--amp {cfg.amp!r}: choose auto, on or off")
    on = cfg.use_amp or cfg.amp == "on" or (cfg.amp == "auto" and device.type == "cuda")
    if not on:
        return Precision()
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return Precision(True, torch.float16, torch.amp.GradScaler("cuda"))
    return Precision(True, torch.bfloat16)


def train_step(model: nn.Module, micro_batches: list[dict], optimizer: torch.optim.Optimizer,
               cfg: TrainConfig, device: torch.device, precision: Precision | None = None,
               world: World | None = None) -> float:
    """One optimisation step over `micro_batches` (gradient accumulation) on every
    process; returns the mean token loss of the whole global batch.

    Each micro-batch's summed token loss is divided by the global batch's token count
    (times the processes, which DDP averages over), so accumulation and several
    processes give the gradient of one big batch.
    """
    precision, world = precision or Precision(), world or World()
    micro_batches = [{k: v.to(device, non_blocking=True) for k, v in b.items()}
                     for b in micro_batches]
    tokens = distributed.total(sum(float((b["tgt_out"] != PAD).sum()) for b in micro_batches),
                               world, device)
    optimizer.zero_grad(set_to_none=True)
    loss_sum = 0.0
    for i, batch in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        sync = contextlib.nullcontext() if last or not world.distributed else model.no_sync()
        with sync:
            with torch.autocast(device.type, dtype=precision.dtype, enabled=precision.enabled):
                logits = model(batch)
            loss = F.cross_entropy(logits.float().flatten(0, 1), batch["tgt_out"].flatten(),
                                   ignore_index=PAD, reduction="sum")
            scaled = loss * (world.size / tokens)
            (precision.scaler.scale(scaled) if precision.scaler else scaled).backward()
        loss_sum += loss.item()
    if precision.scaler:
        precision.scaler.unscale_(optimizer)
    if cfg.grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    if precision.scaler:
        precision.scaler.step(optimizer)
        precision.scaler.update()
    else:
        optimizer.step()
    return distributed.total(loss_sum, world, device) / tokens


def step_fits(model: nn.Module, batch: dict, device: torch.device,
              precision: Precision) -> bool:
    """Whether a forward and backward pass over `batch` fits in the device's memory
    (the gradients are dropped again)."""
    try:
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=precision.dtype, enabled=precision.enabled):
            logits = model(batch)
        F.cross_entropy(logits.float().flatten(0, 1), batch["tgt_out"].flatten(),
                        ignore_index=PAD).backward()
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        model.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()


def fit_micro_batch(fits: Callable[[int], bool], batch_size: int) -> int:
    """The largest exact divisor of `batch_size` (itself, /2, /3, ...) for which `fits`:
    the batch is then split into that many micro-batches with the same gradients."""
    for parts in range(1, batch_size + 1):
        if batch_size % parts == 0 and fits(batch_size // parts):
            return batch_size // parts
    raise BltlabError("--batch_size: not even one row fits in the device's memory")


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


@dataclass
class Progress(Config):
    """Where a run stands; saved in every latest checkpoint so a resume continues exactly."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # optimiser steps done in the current epoch
    step: int = 0  # optimiser steps done in all
    stale: int = 0  # epochs since the monitored validation score last improved
    lr_scale: float = 1.0  # plateau scheduler: the factor it has cut the lr to
    loss_sum: float = 0.0  # the current epoch so far: summed step losses, rows, seconds
    seen: int = 0
    seconds: float = 0.0
    finished: bool = False  # all epochs done, or stopped early


def previous_path(latest: Path) -> Path:
    """Where the latest checkpoint before the newest one is kept."""
    return latest.with_name(latest.stem + ".prev.pt")


def save_latest(path: Path, state: dict) -> None:
    """Write the latest checkpoint atomically, keeping the one before as a fallback."""
    if path.exists():
        os.replace(path, previous_path(path))
    save_checkpoint(path, state)


def load_latest(path: Path, mode: str) -> tuple[dict, Path] | None:
    """The newest readable resumable checkpoint: `path`, else (with a warning) the one
    before it; None when there is none."""
    for candidate in (path, previous_path(path)):
        if not candidate.exists():
            continue
        try:
            state = load_checkpoint(candidate, mode)
        except BltlabError as e:
            print(f"warning: {e}; trying the checkpoint before it")
            continue
        if "optimizer" not in state or "progress" not in state:
            raise BltlabError(f"{candidate}: cannot resume from it (not a latest checkpoint)")
        return state, candidate
    return None


def run_key(mode: str, model_cfg: ModelConfig, cfg: TrainConfig,
            patcher_cfg: PatcherConfig | None, data_sha: str) -> dict:
    """What makes two runs the same run: a checkpoint resumes only a run with this key."""
    volatile = {"resume", "progress", "num_workers", "device", "save_dir"}
    return {"mode": mode, "model": model_cfg.to_dict(),
            "train": {k: v for k, v in cfg.to_dict().items() if k not in volatile},
            "patcher": patcher_cfg.to_dict() if patcher_cfg else None, "data": data_sha}


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def find_resume(cfg: TrainConfig, mode: str, latest_path: Path, key: dict) -> dict | None:
    """The checkpoint to continue from: --resume PATH; --resume (the save dir's latest,
    which must exist); by default the save dir's latest when it is of the same run."""
    if cfg.resume not in ("auto", "latest", "never"):
        found = load_latest(Path(cfg.resume), mode)
        if found is None:
            raise BltlabError(f"--resume {cfg.resume}: no such checkpoint")
        return found[0]
    found = None if cfg.resume == "never" else load_latest(latest_path, mode)
    if found is None:
        if cfg.resume == "latest":
            raise BltlabError(f"--resume: no latest checkpoint in {cfg.save_dir}")
        return None
    state, path = found
    if cfg.resume == "auto" and state.get("run_key") != key:
        print(f"{path} is from another configuration or data: starting a new run")
        return None
    return state


def lr_at(step: int, total: int, cfg: TrainConfig, progress: Progress) -> float:
    return cfg.lr * lr_factor(step, total, cfg) * progress.lr_scale


def score(row: dict, metric: str) -> tuple:
    """Validation score, higher is better: exact match (loss breaks ties), or -loss."""
    if metric == "exact_match":
        return (row.get("val_exact_match", 0.0), -row.get("val_loss", 0.0))
    if metric == "loss":
        return (-row.get("val_loss", 0.0),)
    raise BltlabError(f"--early_stopping_metric {metric!r}: choose exact_match or loss")


def check_config(cfg: TrainConfig) -> None:
    if not 0.0 <= cfg.fresh_non_ascii <= 1.0:
        raise BltlabError(f"--fresh_non_ascii {cfg.fresh_non_ascii}: must be between 0 and 1")
    for name in ("epochs", "batch_size", "grad_accum_steps"):
        if getattr(cfg, name) < 1:
            raise BltlabError(f"--{name} {getattr(cfg, name)}: must be at least 1")
    score({}, cfg.early_stopping_metric)
    lr_factor(cfg.warmup_steps, 1, cfg)


def train(mode: str, model_cfg: ModelConfig, cfg: TrainConfig,
          patcher_cfg: PatcherConfig | None = None,
          epoch_callback: Callable[[dict], bool] | None = None) -> dict:
    """Train a model (on every process torchrun started); returns the best checkpoint's
    path, its validation scores and the history. `epoch_callback(row)` sees each epoch's
    history row and returns True to stop the run there (e.g. a pruned tuning trial)."""
    check_config(cfg)
    device = pick_device(cfg.device)
    world = distributed.init(device)
    try:
        with RunLock(cfg.save_dir) if world.main else contextlib.nullcontext():
            return _train(mode, model_cfg, cfg, patcher_cfg, device, world, epoch_callback)
    finally:
        distributed.shutdown(world)


def _train(mode: str, model_cfg: ModelConfig, cfg: TrainConfig,
           patcher_cfg: PatcherConfig | None, device: torch.device, world: World,
           epoch_callback: Callable[[dict], bool] | None) -> dict:
    say = print if world.main else (lambda *a, **k: None)
    seed_everything(cfg.seed)
    unit = "bytes" if mode == "blt" else "chars"
    pairs = load_pairs(cfg.train_csv, max_len=model_cfg.max_len - 1, unit=unit,
                       skip_bad_rows=cfg.skip_bad_rows)
    if pairs.skipped:
        say(f"{cfg.train_csv}: skipped {sum(pairs.skipped.values())} bad rows {pairs.skipped}")
    train_pairs, val_pairs = split_validation(pairs, cfg.val_fraction, cfg.seed)
    best_path, latest_path, history_path = checkpoint_paths(cfg.save_dir, mode)
    if world.main:
        for tmp in Path(cfg.save_dir).glob(".*.tmp"):  # left by a run killed mid-write
            tmp.unlink()
    key = run_key(mode, model_cfg, cfg, patcher_cfg, file_sha256(cfg.train_csv))
    state = find_resume(cfg, mode, latest_path, key)
    if state is not None:
        codec = codec_from_state(state["codec"])
        model_cfg = CONFIGS[mode].from_dict(state["model_config"])
    else:
        codec = make_codec(mode, model_cfg, cfg, train_pairs.inputs, patcher_cfg)
    model_cfg.vocab_size = len(codec.vocab)
    if mode == "blt":
        seg = codec.segment(train_pairs.inputs)
        say(f"patches: {codec.patcher.cfg.describe()}, {seg.bytes_per_patch():.2f} "
            "bytes/patch on the training inputs")
        if codec.patcher.lm is not None and world.main:
            codec.patcher.lm.save(Path(cfg.save_dir) / "entropy_model.pt")

    collate = Collate(codec)
    train_set = PairDataset.build(codec, train_pairs)
    model = build_model(mode, model_cfg).to(device)
    precision = pick_precision(cfg, device)
    micro = cfg.batch_size
    if device.type == "cuda":  # split the batch into micro-batches if it does not fit
        longest = sorted(range(len(train_set)), key=train_set.lengths().__getitem__)
        micro = fit_micro_batch(lambda n: step_fits(
            model, collate([train_set[i] for i in longest[-n:]]), device, precision),
            cfg.batch_size)
        if micro < cfg.batch_size:
            say(f"batch {cfg.batch_size} does not fit in {device}'s memory: "
                f"{cfg.batch_size // micro} micro-batches of {micro}")
    optimizer = make_optimizer(model, cfg)
    sampler_args = {"batch_size": micro, "seed": cfg.seed, "rank": world.rank,
                    "world": world.size}
    accum = cfg.grad_accum_steps * (cfg.batch_size // micro)
    steps_per_epoch = len(LengthBucketSampler(train_set.lengths(), **sampler_args)) // accum
    if steps_per_epoch == 0:
        raise BltlabError(f"{cfg.train_csv}: too few rows for one step of {micro} x "
                          f"{accum} accumulation x {world.size} processes")

    def epoch_batches(epoch: int, skip_steps: int):
        dataset = (PairDataset.build(codec, fresh_pairs(len(train_pairs), cfg.seed, epoch,
                                                           cfg.fresh_non_ascii))
                   if cfg.fresh_pairs else train_set)
        sampler = LengthBucketSampler(dataset.lengths(), **sampler_args)
        sampler.set_epoch(epoch, skip_steps * accum)
        loader = iter(DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                                 num_workers=cfg.num_workers))
        for _ in range(skip_steps, steps_per_epoch):  # a last partial group is left out
            yield [next(loader) for _ in range(accum)]

    val_set = PairDataset.build(codec, val_pairs) if len(val_pairs) else None
    val_loader = (DataLoader(val_set, batch_sampler=LengthBucketSampler(
        val_set.lengths(), 256, 0), collate_fn=collate) if val_set else None)

    total_steps = cfg.epochs * steps_per_epoch
    history: list[dict] = []
    best = {"val_exact_match": -1.0, "val_loss": math.inf, "epoch": 0}
    progress = Progress()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if precision.scaler and "scaler" in state:
            precision.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"]["torch"])
        if device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"])
        history, best = state["history"], state["best"]
        progress = Progress.from_dict(state["progress"])
        if progress.finished:
            say(f"{cfg.save_dir}: this run is already complete ({progress.epoch} epochs)")
        else:
            say(f"resumed after step {progress.step} (epoch {progress.epoch + 1}, "
                f"batch {progress.batch} of {steps_per_epoch})")
    net = model
    if world.distributed:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[world.local_rank] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net, dynamic=True)  # batch shapes vary: compile once
    writer = tensorboard_writer(cfg, mode, progress.step) if world.main else None

    say(f"{mode}: {count_parameters(model):,} parameters, {len(train_set)} train / "
        f"{len(val_pairs)} val rows, {steps_per_epoch} steps per epoch (batch "
        f"{micro} x {accum} accumulation x {world.size} processes), device {device}"
        + (f", autocast {str(precision.dtype).removeprefix('torch.')}"
           if precision.enabled else ""))
    base_state = {"mode": mode, "model_config": model_cfg.to_dict(), "train_config": asdict(cfg),
                  "codec": codec.to_state()}

    def save_resumable() -> None:
        if not world.main:
            return
        rng = {"torch": torch.get_rng_state()}
        if device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state()
        extra = {"scaler": precision.scaler.state_dict()} if precision.scaler else {}
        save_latest(latest_path, {**base_state, "model": model.state_dict(),
                                  "optimizer": optimizer.state_dict(), "rng": rng,
                                  "progress": progress.to_dict(), "history": history,
                                  "best": best, "run_key": key, **extra})

    while progress.epoch < cfg.epochs and not progress.finished:
        epoch = progress.epoch
        net.train()
        t0 = time.perf_counter() - progress.seconds
        bar = tqdm(epoch_batches(epoch, progress.batch), desc=f"epoch {epoch + 1}/{cfg.epochs}",
                   total=steps_per_epoch, initial=progress.batch, leave=False,
                   disable=None if cfg.progress and world.main else True, dynamic_ncols=True)
        for micro_batches in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(progress.step, total_steps, cfg, progress)
            loss = train_step(net, micro_batches, optimizer, cfg, device, precision, world)
            progress.step, progress.batch = progress.step + 1, progress.batch + 1
            progress.seen += sum(b["src"].shape[0] for b in micro_batches) * world.size
            progress.loss_sum += loss
            progress.seconds = time.perf_counter() - t0
            bar.set_postfix(loss=f"{loss:.4f}", sps=f"{progress.seen / progress.seconds:.0f}")
            if writer:
                writer.add_scalar("train/loss", loss, progress.step)
                writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], progress.step)
            if (cfg.save_every_steps and progress.step % cfg.save_every_steps == 0
                    and progress.batch < steps_per_epoch):
                save_resumable()
        row = {"epoch": epoch + 1, "step": progress.step,
               "train_loss": progress.loss_sum / steps_per_epoch,
               "lr": optimizer.param_groups[0]["lr"], "epoch_seconds": round(progress.seconds, 2),
               "samples_per_s": round(progress.seen / progress.seconds, 1)}
        if val_loader is not None:
            row["val_loss"] = validation_loss(model, val_loader, device)
            row["val_exact_match"] = exact_match(model, codec, val_pairs, device)
        history.append(row)
        improved = val_loader is None or best["epoch"] == 0 or (
            score(row, cfg.early_stopping_metric) > score(best, cfg.early_stopping_metric))
        if improved:
            best = {"val_exact_match": row.get("val_exact_match", 0.0),
                    "val_loss": row.get("val_loss", 0.0), "epoch": epoch + 1}
            if world.main:
                save_checkpoint(best_path, {**base_state, "model": model.state_dict(),
                                            "epoch": epoch + 1, "metrics": row})
            progress.stale = 0
        else:
            progress.stale += 1
            if cfg.lr_scheduler == "plateau" and progress.stale % cfg.plateau_patience == 0:
                progress.lr_scale *= cfg.plateau_factor
        stopped_early = bool(cfg.early_stopping_patience
                             and progress.stale >= cfg.early_stopping_patience)
        stopped_by_callback = bool(epoch_callback and epoch_callback(row))
        stop = stopped_early or stopped_by_callback
        progress = Progress(epoch=epoch + 1, step=progress.step, stale=progress.stale,
                            lr_scale=progress.lr_scale,
                            finished=stop or epoch + 1 == cfg.epochs)
        save_resumable()
        if world.main:
            write_json(history_path, {"mode": mode, "model_config": model_cfg.to_dict(),
                                      "train_config": asdict(cfg), "epochs": history,
                                      "best": best})
        if writer:
            for name in ("val_exact_match", "val_loss", "samples_per_s", "train_loss"):
                if name in row:
                    writer.add_scalar(f"epoch/{name}", row[name], progress.step)
            writer.flush()
        say(f"epoch {epoch + 1}/{cfg.epochs}  loss {row['train_loss']:.4f}  "
            f"val_loss {row.get('val_loss', float('nan')):.4f}  "
            f"val_exact {100 * row.get('val_exact_match', float('nan')):.2f}%  "
            f"lr {row['lr']:.2e}  {row['samples_per_s']:.0f} samples/s  "
            f"{row['epoch_seconds']:.0f}s" + ("  *" if improved else ""), flush=True)
        if stopped_early:
            say(f"early stopping: validation {cfg.early_stopping_metric} has not improved "
                f"for {progress.stale} epochs")
    if writer:
        writer.close()
    say(f"best checkpoint: {best_path} (epoch {best['epoch']}, "
        f"val exact match {100 * best['val_exact_match']:.2f}%)")
    return {"best_checkpoint": str(best_path), "best": best, "history": history,
            "parameters": count_parameters(model),
            "stopped": progress.finished and progress.epoch < cfg.epochs}


def tensorboard_writer(cfg: TrainConfig, mode: str, step: int):
    """TensorBoard event files in <save_dir>/tensorboard/<mode> (None with --no_tensorboard);
    a resumed run drops the events logged after its checkpoint."""
    if not cfg.tensorboard:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(Path(cfg.save_dir) / "tensorboard" / mode), purge_step=step + 1)


def default_threads() -> int:
    """Cores this process may use (respects affinity masks and cgroup-limited CPUs)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
