"""One training loop for every model: AdamW, warmup + schedule, clipping, bucketed batches,
validation exact match each epoch, atomic best/latest checkpoints and a history JSON.

`train(spec)` runs it in named parts: `setup` (rows, resume, codec, model, optimizer),
then per epoch `run_epoch` (the steps), `validate` and `end_epoch` (best checkpoint,
schedule cuts, early stopping, latest checkpoint, history, the epoch's line).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm import tqdm

from bltlab import distributed, profiles
from bltlab.batching import EncodedPairs, LengthBucketSampler, as_is
from bltlab.checkpoint import (
    checkpoint_paths,
    complete_weights,
    find_resume,
    save_checkpoint,
    save_latest,
    trained_rows_path,
)
from bltlab.config import Config, DataConfig, TrainConfig
from bltlab.data import Pairs, TrainedRows, load_pairs, reverse
from bltlab.distributed import World
from bltlab.errors import BltlabError
from bltlab.fileio import RunLock, ensure_dir, write_json
from bltlab.flops import FlopModel, batch_lengths
from bltlab.inputs import CODECS, Codec, codec_from_state
from bltlab.models import BLT, EncoderDecoder, build_model, count_parameters
from bltlab.runtime import pick_device, release_memory, seed_everything
from bltlab.spec import RunSpec, resolve
from bltlab.vocab import PAD, UNK


def split_validation(pairs: Pairs, fraction: float, seed: int) -> tuple[Pairs, Pairs]:
    """Hold out a seeded random `fraction` of the training rows for validation."""
    n_val = max(1, round(fraction * len(pairs)))
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
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.beta1, foreach=True)
    adam = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    # fused: one kernel per tensor for the whole update (CPU and CUDA; 4x faster than
    # foreach on this project's CPU, within float rounding of it)
    return adam(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine to zero, `step_cuts` even cuts by `step_factor` (step),
    or constant (constant and plateau; plateau's cuts come from validation, in RunState)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    frac = min((step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps), 1.0)
    if cfg.lr_scheduler == "cosine":
        return 0.5 * (1 + math.cos(math.pi * frac))
    if cfg.lr_scheduler == "step":
        return cfg.step_factor ** min(int(cfg.step_cuts * frac), cfg.step_cuts - 1)
    return 1.0


@dataclass
class Precision:
    """Autocast settings of a run: bf16 where the device has it, else fp16 with loss scaling."""

    enabled: bool = False
    dtype: torch.dtype = torch.bfloat16
    scaler: torch.amp.GradScaler | None = None


def pick_precision(cfg: TrainConfig, device: torch.device) -> Precision:
    """--amp on/off, or auto: on for CUDA; off on CPU, where bf16 autocast measured slower
    at the study's width (see docs/results.md)."""
    if not (cfg.amp == "on" or (cfg.amp == "auto" and device.type == "cuda")):
        return Precision()
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return Precision(True, torch.float16, torch.amp.GradScaler("cuda"))
    return Precision(True, torch.bfloat16)


def token_loss(logits: Tensor, batch: dict[str, Tensor], reduction: str = "sum",
               smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of the target tokens (PAD ignored), with `smoothing` of the target's
    probability spread evenly over the vocabulary."""
    return F.cross_entropy(logits.float().flatten(0, 1), batch["tgt_out"].flatten(),
                           ignore_index=PAD, reduction=reduction, label_smoothing=smoothing)


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
            loss = token_loss(logits, batch, smoothing=cfg.label_smoothing)
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
        token_loss(logits, batch, "mean").backward()
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
def validation_scores(model: nn.Module, loader: DataLoader, device: torch.device,
                      smoothing: float = 0.0) -> tuple[float, float]:
    """Validation token loss (the training objective: with `smoothing` where training has
    it) and exact match from one teacher-forced pass. Greedy decoding
    writes a target exactly iff, fed the target's own prefix, the model's top token is the
    target's at every position, the end token included; so no decoding is needed. A
    target holding UNK (a character outside the alphabet) can never come back."""
    model.eval()
    loss, tokens, exact, rows = 0.0, 0, 0, 0
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        logits, tgt = model(batch), batch["tgt_out"]
        loss += token_loss(logits, batch, smoothing=smoothing).item()
        tokens += int((tgt != PAD).sum())
        hit = ((logits.argmax(-1) == tgt) & (tgt != UNK)) | (tgt == PAD)
        exact += int(hit.all(-1).sum())
        rows += tgt.shape[0]
    return loss / tokens, exact / rows


def generated_pairs(n: int, seed: int, epoch: int, data: DataConfig) -> Pairs:
    """`n` newly generated reversal rows of `data.profile` for one epoch (a stream of its
    own per seed and epoch)."""
    rng = np.random.default_rng([seed, epoch, 0x5EED])
    inputs = profiles.draw(data.profile, n, rng, data.fresh_non_ascii)
    return Pairs(inputs, [reverse(t) for t in inputs], f"generated (epoch {epoch + 1})")


def rows_of_epoch(spec: RunSpec, codec: Codec, train: Pairs, epoch: int) -> Pairs:
    """The rows one epoch trains on: the training rows, or generated ones (those longer
    than the model takes left out)."""
    if not spec.data.fresh_pairs:
        return train
    pairs = generated_pairs(len(train), spec.train.seed, epoch, spec.data)
    return pairs.subset([i for i, x in enumerate(pairs.inputs) if not codec.too_long(x)])


@dataclass
class RunState(Config):
    """Where a run stands; saved in every latest checkpoint so a resume continues exactly."""

    epoch: int = 0  # epochs completed
    batch: int = 0  # optimiser steps done in the current epoch
    step: int = 0  # optimiser steps done in all
    stale: int = 0  # epochs since the monitored validation score last improved
    held: int = 0  # epochs in a row at or above --stop_at validation exact match
    lr_scale: float = 1.0  # plateau scheduler: the factor it has cut the lr to
    loss_sum: float = 0.0  # the current epoch so far: summed step losses, rows, seconds
    seen: int = 0
    seconds: float = 0.0
    train_flops: float = 0.0  # the whole run so far: forward + backward, real positions only
    finished: bool = False  # all epochs done, or stopped early


def score(row: dict, metric: str) -> tuple:
    """Validation score, higher is better: exact match (loss breaks ties), or -loss."""
    if metric == "exact_match":
        return (row.get("val_exact_match", 0.0), -row.get("val_loss", 0.0))
    return (-row.get("val_loss", 0.0),)


@dataclass
class Rows:
    """A run's data: the training CSV's rows, split (fresh-row runs read only their count
    from the training part), the validation rows encoded, and, when every epoch trains
    on the training rows, those encoded once."""

    train: Pairs
    val: Pairs
    val_loader: DataLoader
    fixed: EncodedPairs | None


@dataclass
class Epoch:
    """One epoch's rows, generated (fresh-row runs) and encoded once."""

    number: int
    pairs: Pairs
    encoded: EncodedPairs


@dataclass
class Run:
    """A training run set up: what the epoch loop reads and updates."""

    spec: RunSpec  # resolved
    codec: Codec
    model: EncoderDecoder
    net: nn.Module  # the model as trained: wrapped by DDP and/or torch.compile
    optimizer: torch.optim.Optimizer
    precision: Precision
    device: torch.device
    world: World
    rows: Rows
    micro: int  # rows per micro-batch
    accum: int  # micro-batches per step
    steps_per_epoch: int
    key: dict  # the run's identity (resume key)
    flops: FlopModel  # FLOPs of a row from its lengths
    epoch: Epoch | None = None  # the rows of the epoch being trained (or about to be)
    trained: TrainedRows = field(default_factory=TrainedRows)  # every row trained on
    budget_steps: int = 0  # with a FLOP budget: the steps it buys (at the first epoch's rate)
    state: RunState = field(default_factory=RunState)
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"val_exact_match": -1.0, "val_loss": math.inf,
                                                "epoch": 0})
    writer: Any = None
    ema: AveragedModel | None = None  # --ema_decay: the averaged weights, validated and kept

    @property
    def kept(self) -> nn.Module:
        """The weights validated and saved as the best checkpoint."""
        return self.ema.module if self.ema is not None else self.model

    def say(self, *args: Any, **kwargs: Any) -> None:
        if self.world.main:
            print(*args, **kwargs)

    @property
    def paths(self) -> tuple[Path, Path, Path]:
        return checkpoint_paths(self.spec.train.save_dir, self.spec.mode)

    @property
    def total_steps(self) -> int:
        """The schedule's length: the epochs' steps, or the steps a FLOP budget buys."""
        return self.budget_steps or self.spec.train.epochs * self.steps_per_epoch


def load_rows(spec: RunSpec) -> tuple[Pairs, Pairs, str]:
    """The training CSV's rows (checked against the model's longest input), split, and
    the SHA-256 of the bytes read (a pipe is read once)."""
    too_long = functools.partial(CODECS[spec.mode].check_length, limit=spec.model.max_input)
    pairs = load_pairs(spec.data.train_csv, too_long=too_long,
                       skip_bad_rows=spec.data.skip_bad_rows)
    if pairs.skipped and distributed.is_main():
        print(f"{spec.data.train_csv}: skipped {sum(pairs.skipped.values())} bad rows "
              f"{pairs.skipped}")
    not_reversed = sum(reverse(x) != t for x, t in zip(pairs.inputs, pairs.targets))
    if not_reversed and distributed.is_main():
        print(f"warning: {spec.data.train_csv}: {not_reversed} of {len(pairs)} targets are not "
              "their input reversed")
    return (*split_validation(pairs, spec.data.val_fraction, spec.train.seed), pairs.sha256)


def codec_and_spec(spec: RunSpec, state: dict | None, train: Pairs) -> tuple[RunSpec, Codec]:
    """Resolve the spec on the training inputs, or take the resumed checkpoint's model,
    patcher and codec (its training and data settings stay this run's)."""
    if state is None:
        return resolve(spec, train.inputs)
    saved = RunSpec.from_dict(state["spec"])
    spec = dataclasses.replace(spec, model=saved.model, patcher=saved.patcher)
    return spec, codec_from_state(state["codec"], spec.model.max_input)


def encode_rows(spec: RunSpec, codec: Codec, train: Pairs, val: Pairs) -> Rows:
    val_set = EncodedPairs.build(codec, val.inputs, val.targets)
    tokens = 2 * spec.train.max_tokens  # no gradients to keep: twice the training batch
    val_loader = DataLoader(val_set, collate_fn=as_is, batch_sampler=LengthBucketSampler(
        val_set.positions() if tokens else val_set.lengths(), spec.train.val_batch_size, 0,
        max_tokens=tokens))
    fixed = None if spec.data.fresh_pairs else EncodedPairs.build(codec, train.inputs,
                                                                   train.targets)
    return Rows(train, val, val_loader, fixed)


def epoch_data(run: Run, epoch: int) -> Epoch:
    """The rows epoch `epoch` trains on, generated and encoded once."""
    if run.epoch is None or run.epoch.number != epoch:
        pairs = rows_of_epoch(run.spec, run.codec, run.rows.train, epoch)
        if len(pairs) < run.micro * run.accum * run.world.size:
            raise BltlabError(f"--max_len {run.spec.model.max_len}: {len(pairs)} of "
                              f"{len(run.rows.train)} generated rows fit the model, too few "
                              "for one step")
        encoded = run.rows.fixed or EncodedPairs.build(run.codec, pairs.inputs, pairs.targets)
        run.epoch = Epoch(epoch, pairs, encoded)
    return run.epoch


def micro_batch(run: Run) -> int:
    """Rows per micro-batch: the batch size, split on CUDA when it does not fit (tried
    on the first epoch's longest rows)."""
    if run.device.type != "cuda" or run.spec.train.max_tokens:  # tokens bound memory
        return run.spec.train.batch_size
    data = epoch_data(run, 0).encoded
    longest = np.argsort(data.lengths(), kind="stable")
    return fit_micro_batch(lambda n: step_fits(run.model, data.batch(longest[-n:]), run.device,
                                               run.precision), run.spec.train.batch_size)


def setup(spec: RunSpec, device: torch.device, world: World) -> Run:
    """Everything the epoch loop needs: rows, codec, model, optimizer, resumed state."""
    seed_everything(spec.train.seed)
    train, val, data_sha256 = load_rows(spec)
    key = spec.identity(data_sha256)
    if world.main:  # temporary files of this mode's, left by a run killed mid-write
        for path in checkpoint_paths(spec.train.save_dir, spec.mode):
            for tmp in path.parent.glob(f".{path.name}.*.tmp"):
                tmp.unlink()
    state = find_resume(spec.train.resume, spec.train.save_dir, spec.mode, key)
    spec, codec = codec_and_spec(spec, state, train)
    model = build_model(spec.model).to(device)
    run = Run(spec, codec, model, model, make_optimizer(model, spec.train),
              pick_precision(spec.train, device), device, world,
              encode_rows(spec, codec, train, val), spec.train.batch_size, 1, 0, key,
              FlopModel.fit(spec.model))
    run.micro = micro_batch(run)
    run.accum = spec.train.grad_accum_steps * (spec.train.batch_size // run.micro)
    run.steps_per_epoch = len(epoch_sampler(run, 0)) // run.accum  # the schedule's unit
    if run.steps_per_epoch == 0:
        raise BltlabError(f"{spec.data.train_csv}: too few rows for one step of {run.micro} x "
                          f"{run.accum} accumulation x {world.size} processes")
    epochs_for_budget(run)
    if state is not None:
        restore(run, state)
    if spec.train.ema_decay:  # from the weights restored, if any; its own state if kept
        run.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(spec.train.ema_decay),
                                use_buffers=True)
        if state is not None and "ema" in state:
            run.ema.load_state_dict(state["ema"])
    run.net = wrap(run)
    return run


def epochs_for_budget(run: Run) -> None:
    """With a FLOP budget, the steps and epochs it buys at the first epoch's FLOPs per
    step (rounded up); training stops as soon as the budget is spent, mid-epoch."""
    spec = run.spec
    if not spec.train.flops_budget:
        return
    sizes = epoch_data(run, 0).encoded.sizes()
    per_epoch = float(run.flops.cost("train", *sizes)["total"].sum())
    per_step = per_epoch / run.steps_per_epoch
    run.budget_steps = max(1, math.ceil(spec.train.flops_budget / per_step))
    epochs = max(1, math.ceil(spec.train.flops_budget / per_epoch))
    run.spec = dataclasses.replace(spec, train=spec.train.replace(epochs=epochs))


def budget_spent(run: Run) -> bool:
    budget = run.spec.train.flops_budget
    return bool(budget) and run.state.train_flops >= budget


def restore(run: Run, state: dict) -> None:
    """Continue from a latest checkpoint: weights, optimizer, RNG, position, history."""
    run.model.load_state_dict(complete_weights(run.model, state["model"]))
    run.optimizer.load_state_dict(state["optimizer"])
    if run.precision.scaler and "scaler" in state:
        run.precision.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"]["torch"])
    if run.device.type == "cuda" and "cuda" in state["rng"]:
        torch.cuda.set_rng_state(state["rng"]["cuda"])
    run.history, run.best = state["history"], state["best"]
    homes = [run.spec.train.save_dir, *([Path(run.spec.train.resume).parent] if
                                        run.spec.train.resume not in ("auto", "latest") else [])]
    found = (TrainedRows.load(trained_rows_path(home, run.spec.mode)) for home in homes)
    run.trained = next((t for t in found if t is not None), TrainedRows())
    run.state = RunState.from_dict(state["run_state"])
    if run.spec.train.resume != "auto" and run.state.epoch < run.spec.train.epochs:
        run.state.finished = False  # continued on purpose, for more epochs
    if run.state.finished:
        run.say(f"{run.spec.train.save_dir}: this run is already complete "
                f"({run.state.epoch} epochs)")
    else:
        run.say(f"resumed after step {run.state.step} (epoch {run.state.epoch + 1}, "
                f"step {run.state.batch} of the epoch)")


def wrap(run: Run) -> nn.Module:
    """The model as trained: DDP across processes, torch.compile when asked."""
    net: nn.Module = run.model
    if run.world.distributed:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[run.world.local_rank] if run.device.type == "cuda" else None)
    if run.spec.train.compile:
        net = torch.compile(net, dynamic=True)  # batch shapes vary: compile once
    return net


def epoch_sampler(run: Run, epoch: int) -> LengthBucketSampler:
    """The order and batches of an epoch's rows: `batch_size` rows a batch, or as many as
    fit `max_tokens` positions."""
    data, cfg = epoch_data(run, epoch).encoded, run.spec.train
    sampler = LengthBucketSampler(data.positions() if cfg.max_tokens else data.lengths(),
                                  run.micro, cfg.seed, rank=run.world.rank,
                                  world=run.world.size, max_tokens=cfg.max_tokens)
    sampler.set_epoch(epoch)
    return sampler


def epoch_batches(run: Run, epoch: int, skip_steps: int) -> tuple[int, Iterator[list[dict]]]:
    """The epoch's number of steps, and its steps (each a list of micro-batches) from
    step `skip_steps` on (a last partial group of micro-batches is left out)."""
    data = epoch_data(run, epoch)
    run.trained.add(data.pairs.inputs)  # so held-out sets can leave these rows out
    if isinstance(run.model, BLT):  # the bytes its n-gram vectors are trained on
        run.model.see_texts(data.pairs.inputs)
    sampler = epoch_sampler(run, epoch)
    steps = len(sampler) // run.accum
    sampler.set_epoch(epoch, skip_steps * run.accum)
    loader = iter(DataLoader(data.encoded, batch_sampler=sampler, collate_fn=as_is,
                             num_workers=run.spec.train.num_workers))
    return steps, ([next(loader) for _ in range(run.accum)] for _ in range(skip_steps, steps))


def base_state(run: Run) -> dict:
    """What every checkpoint of the run holds besides its weights."""
    return {"mode": run.spec.mode, "spec": run.spec.to_dict(), "codec": run.codec.to_state()}


def save_resumable(run: Run) -> None:
    """Write the latest checkpoint (rank 0): everything an exact resume needs."""
    if not run.world.main:
        return
    rng = {"torch": torch.get_rng_state()}
    if run.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state()
    extra = {"scaler": run.precision.scaler.state_dict()} if run.precision.scaler else {}
    if run.ema is not None:
        extra["ema"] = run.ema.state_dict()
    save_latest(run.paths[1], {**base_state(run), "model": run.model.state_dict(),
                               "optimizer": run.optimizer.state_dict(), "rng": rng,
                               "run_state": run.state.to_dict(), "history": run.history,
                               "best": run.best, "run_key": run.key, **extra})


def run_epoch(run: Run) -> None:
    """The optimiser steps of the current epoch (from where a resume left it)."""
    s, cfg, epoch = run.state, run.spec.train, run.state.epoch
    run.net.train()
    t0 = time.perf_counter() - s.seconds
    steps, batches = epoch_batches(run, epoch, s.batch)
    bar = tqdm(batches, desc=f"epoch {epoch + 1}/{cfg.epochs}", total=steps, initial=s.batch,
               leave=False, dynamic_ncols=True,
               disable=None if cfg.progress_bars and run.world.main else True)
    for micro_batches in bar:
        for group in run.optimizer.param_groups:
            group["lr"] = cfg.lr * lr_factor(s.step, run.total_steps, cfg) * s.lr_scale
        loss = train_step(run.net, micro_batches, run.optimizer, cfg, run.device,
                          run.precision, run.world)
        if run.ema is not None:
            run.ema.update_parameters(run.model)
        s.step, s.batch = s.step + 1, s.batch + 1
        s.train_flops += step_flops(run, micro_batches)
        s.seen += sum(b["src"].shape[0] for b in micro_batches) * run.world.size
        s.loss_sum += loss
        s.seconds = time.perf_counter() - t0
        bar.set_postfix(loss=f"{loss:.4f}", sps=f"{s.seen / s.seconds:.0f}")
        if run.writer:
            run.writer.add_scalar("train/loss", loss, s.step)
            run.writer.add_scalar("train/lr", run.optimizer.param_groups[0]["lr"], s.step)
        if budget_spent(run):  # the budget is hit exactly: the run ends mid-epoch
            break
        if cfg.save_every_steps and s.step % cfg.save_every_steps == 0 and s.batch < steps:
            save_resumable(run)


def step_flops(run: Run, micro_batches: list[dict]) -> float:
    """Training FLOPs of one step on all processes (real positions only)."""
    local = sum(float(run.flops.cost("train", *batch_lengths(b))["total"].sum())
                for b in micro_batches)
    return distributed.total(local, run.world, run.device)


def validate(run: Run) -> dict:
    """The epoch's history row: training loss, lr, speed, validation loss and exact match.
    The validation loss is the objective training lowers (label-smoothed where training
    is), so the best checkpoint's tie-break follows it (docs/log/32-tie-break.md)."""
    s, smoothing = run.state, run.spec.train.label_smoothing
    val_loss, val_exact = validation_scores(run.kept, run.rows.val_loader, run.device,
                                            smoothing)
    row = {"epoch": s.epoch + 1, "step": s.step, "train_loss": s.loss_sum / max(1, s.batch),
           "lr": run.optimizer.param_groups[0]["lr"], "epoch_seconds": round(s.seconds, 2),
           "samples_per_s": round(s.seen / s.seconds, 1), "train_flops": s.train_flops,
           "val_loss": val_loss, "val_exact_match": val_exact}
    if run.ema is not None:  # the weights as trained, beside their average
        row["val_loss_raw"], row["val_exact_match_raw"] = validation_scores(
            run.model, run.rows.val_loader, run.device, smoothing)
    return row


def keep_best(run: Run, row: dict) -> bool:
    """Save the best checkpoint when `row` beats it; plateau cuts when it does not."""
    cfg = run.spec.train
    improved = run.best["epoch"] == 0 or (
        score(row, cfg.early_stopping_metric) > score(run.best, cfg.early_stopping_metric))
    if improved:
        run.best = {"val_exact_match": row["val_exact_match"], "val_loss": row["val_loss"],
                    "epoch": row["epoch"]}
        if run.world.main:
            save_checkpoint(run.paths[0], {**base_state(run), "model": run.kept.state_dict(),
                                           "epoch": row["epoch"], "metrics": row,
                                           "run_key": run.key})
        run.state.stale = 0
    else:
        run.state.stale += 1
        if cfg.lr_scheduler == "plateau" and run.state.stale % cfg.plateau_patience == 0:
            run.state.lr_scale *= cfg.plateau_factor
    return improved


def end_epoch(run: Run, row: dict, epoch_callback: Callable[[dict], bool] | None) -> None:
    """Best checkpoint, early stopping, latest checkpoint, history and the epoch's line."""
    cfg = run.spec.train
    run.history.append(row)
    improved = keep_best(run, row)
    stopped_early = bool(cfg.early_stopping_patience
                         and run.state.stale >= cfg.early_stopping_patience)
    s = run.state
    held = s.held + 1 if cfg.stop_at and row["val_exact_match"] >= cfg.stop_at else 0
    done = bool(cfg.stop_at) and held >= cfg.stop_for
    stop = bool(epoch_callback and epoch_callback(row)) or stopped_early or done
    run.state = RunState(epoch=s.epoch + 1, step=s.step, stale=s.stale, held=held,
                         lr_scale=s.lr_scale, train_flops=s.train_flops,
                         finished=stop or s.epoch + 1 == cfg.epochs or budget_spent(run))
    if run.world.main:  # before the checkpoint that says the epoch is done
        write_json(run.paths[2], {"mode": run.spec.mode, "spec": run.spec.to_dict(),
                                  "epochs": run.history, "best": run.best,
                                  "finished": run.state.finished})
        run.trained.save(trained_rows_path(run.spec.train.save_dir, run.spec.mode))
    save_resumable(run)
    log_epoch(run, row, improved)
    if stopped_early:
        run.say(f"early stopping: validation {cfg.early_stopping_metric} has not improved "
                f"for {run.state.stale} epochs")
    if done:
        run.say(f"done: validation exact match at or above {100 * cfg.stop_at:g}% for "
                f"{held} epochs in a row")


def log_epoch(run: Run, row: dict, improved: bool) -> None:
    if run.writer:
        for name in ("val_exact_match", "val_loss", "samples_per_s", "train_loss"):
            run.writer.add_scalar(f"epoch/{name}", row[name], run.state.step)
        run.writer.flush()
    run.say(f"epoch {row['epoch']}/{run.spec.train.epochs}  loss {row['train_loss']:.4f}  "
            f"val_loss {row['val_loss']:.4f}  val_exact {100 * row['val_exact_match']:.2f}%  "
            f"lr {row['lr']:.2e}  {row['samples_per_s']:.0f} samples/s  "
            f"{row['epoch_seconds']:.0f}s" + ("  *" if improved else ""), flush=True)


def tensorboard_writer(run: Run):
    """TensorBoard event files in <save_dir>/tensorboard/<mode> (None when off); a resumed
    run drops the events logged after its checkpoint."""
    if not run.spec.train.tensorboard or not run.world.main:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(Path(run.spec.train.save_dir) / "tensorboard" / run.spec.mode),
                         purge_step=run.state.step + 1)


def describe(run: Run) -> str:
    tokens = run.spec.train.max_tokens
    batch = f"{tokens} positions" if tokens else f"batch {run.micro}"
    return (f"{run.spec.mode}: {count_parameters(run.model):,} parameters, "
            f"{len(run.rows.train)} train / {len(run.rows.val)} val rows, "
            f"{run.steps_per_epoch} steps per epoch ({batch} x {run.accum} "
            f"accumulation x {run.world.size} processes), device {run.device}"
            + (f", autocast {str(run.precision.dtype).removeprefix('torch.')}"
               if run.precision.enabled else ""))


def announce(run: Run) -> None:
    """The run's first lines (patches for a BLT) and, on rank 0, its entropy model file."""
    if run.spec.mode == "blt":
        seg = run.codec.segment(run.rows.train.inputs)
        run.say(f"patches: {run.spec.patcher.describe()}, {seg.bytes_per_patch():.2f} "
                "bytes/patch on the training inputs")
        if run.codec.patcher.lm is not None and run.world.main:
            run.codec.patcher.lm.save(Path(run.spec.train.save_dir) / "entropy_model.pt")
    run.say(describe(run))


def train(spec: RunSpec, epoch_callback: Callable[[dict], bool] | None = None) -> dict:
    """Train a model (on every process torchrun started); returns the best checkpoint's
    path, its validation scores and the history. `epoch_callback(row)` sees each epoch's
    history row and returns True to stop the run there (e.g. a pruned tuning trial)."""
    device = pick_device(spec.train.device)
    world = distributed.init(device)
    try:
        if world.main:
            ensure_dir(spec.train.save_dir, "--save_dir")
        lock = RunLock(spec.train.save_dir, spec.mode)  # char and blt runs may share a folder
        with lock if world.main else contextlib.nullcontext():
            return train_loop(setup(spec, device, world), epoch_callback)
    finally:
        distributed.shutdown(world)


def train_loop(run: Run, epoch_callback: Callable[[dict], bool] | None) -> dict:
    announce(run)
    run.writer = tensorboard_writer(run)
    while not run.state.finished:
        run_epoch(run)
        end_epoch(run, validate(run), epoch_callback)
        release_memory()
    if run.writer:
        run.writer.close()
    run.say(f"best checkpoint: {run.paths[0]} (epoch {run.best['epoch']}, "
            f"val exact match {100 * run.best['val_exact_match']:.2f}%)")
    return {"best_checkpoint": str(run.paths[0]), "best": run.best, "history": run.history,
            "parameters": count_parameters(run.model), "spec": run.spec.to_dict(),
            "stopped": run.state.epoch < run.spec.train.epochs}

