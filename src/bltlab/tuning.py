"""Hyperparameter tuning with Optuna.

The search space is a YAML (or JSON) file users can edit; the package ships a default
(`bltlab/resources/search_space.yaml`). Trials train with the ordinary training loop
for `tune_epochs` and report validation exact match after each epoch, so weak trials
are pruned (median rule). The study lives in a database (SQLite `results/tuning.db` by
default): a killed tuning run loses no completed trial, the trial that was running is
noticed by its missing heartbeat and retried, and several workers on several machines
can share one study through `--storage postgresql://...`.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
import yaml
from optuna.storages import RDBStorage, RetryFailedTrialCallback
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from bltlab.errors import BltlabError
from bltlab.fileio import owner_gone, process_owner, write_json
from bltlab.models import CONFIGS
from bltlab.patching import PatcherConfig
from bltlab.training import TrainConfig, train

DEFAULT_SPACE = Path(__file__).with_name("resources") / "search_space.yaml"
KINDS = {"float": ("low", "high"), "int": ("low", "high"), "categorical": ("choices",)}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def load_search_space(path: str | Path | None, mode: str) -> dict[str, dict]:
    """The `mode` section of a search-space file, checked entry by entry."""
    path = Path(path) if path else DEFAULT_SPACE
    try:
        text = path.read_text(encoding="utf-8")
        spaces = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise BltlabError(f"{path}: cannot read the search space ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(spaces, dict) or not isinstance(spaces.get(mode), dict):
        raise BltlabError(f"{path}: no '{mode}' section")
    known = known_flags(mode)
    for name, spec in spaces[mode].items():
        where = f"{path}: {mode}.{name}"
        if name not in known:
            raise BltlabError(f"{where}: not a flag of `bltlab train --mode {mode}`")
        if not isinstance(spec, dict) or spec.get("type") not in KINDS:
            raise BltlabError(f"{where}: needs type float, int or categorical")
        missing = [k for k in KINDS[spec["type"]] if k not in spec]
        if missing:
            raise BltlabError(f"{where}: missing {', '.join(missing)}")
    return spaces[mode]


def known_flags(mode: str) -> set[str]:
    return {f.name for cls in (CONFIGS[mode], TrainConfig, PatcherConfig)
            for f in dataclasses.fields(cls)}


def suggest(trial: optuna.Trial, space: dict[str, dict]) -> dict[str, Any]:
    """Draw one value per entry of the search space."""
    params = {}
    for name, spec in space.items():
        if spec["type"] == "float":
            params[name] = trial.suggest_float(name, spec["low"], spec["high"],
                                               log=spec.get("log", False))
        elif spec["type"] == "int":
            params[name] = trial.suggest_int(name, spec["low"], spec["high"],
                                             step=spec.get("step", 1))
        else:
            params[name] = trial.suggest_categorical(name, spec["choices"])
    return params


def grid(space: dict[str, dict]) -> dict[str, list]:
    """The values `--sampler grid` tries: each entry's `grid`, else its choices."""
    out = {}
    for name, spec in space.items():
        values = spec.get("grid", spec.get("choices"))
        if values is None:
            raise BltlabError(f"search space {name}: --sampler grid needs a 'grid' list")
        out[name] = list(values)
    return out


def split(mode: str, params: dict[str, Any]) -> tuple[dict, dict, dict]:
    """Parameters for the model config, the training config and the patcher config (a
    name in several, like max_patch_len, goes to the patcher, which sizes the model)."""
    parts: list[dict] = []
    for cls in (PatcherConfig, TrainConfig, CONFIGS[mode]):
        names = {f.name for f in dataclasses.fields(cls)}
        parts.append({k: v for k, v in params.items() if k in names and
                      not any(k in p for p in parts)})
    patcher, training, model = parts
    return model, training, patcher


def objective(mode: str, space: dict, base: TrainConfig, tune_epochs: int, runs_dir: Path):
    def run_trial(trial: optuna.Trial) -> float:
        params = suggest(trial, space)
        model_over, train_over, patcher_over = split(mode, params)
        model_cfg = CONFIGS[mode](**model_over)
        if model_cfg.d_model % model_cfg.nhead:
            raise optuna.TrialPruned(f"d_model {model_cfg.d_model} % nhead {model_cfg.nhead}")
        # a retried trial (its worker died) resumes the first attempt's checkpoints
        trial.set_user_attr("worker", process_owner())
        frozen = next(t for t in trial.study.get_trials(deepcopy=False)
                      if t.number == trial.number)
        number = frozen.user_attrs.get("retry_of",
                                       RetryFailedTrialCallback.retried_trial_number(frozen))
        number = trial.number if number is None else number
        cfg = dataclasses.replace(base, **train_over, epochs=tune_epochs, progress=False,
                                  tensorboard=False,
                                  save_dir=str(runs_dir / mode / f"trial_{number:04d}"))

        def report(row: dict) -> bool:
            trial.report(row.get("val_exact_match", 0.0), row["epoch"])
            return trial.should_prune()

        result = train(mode, model_cfg, cfg, PatcherConfig(**patcher_over) if mode == "blt"
                       else None, report)
        trial.set_user_attr("save_dir", cfg.save_dir)
        if result["stopped"] and trial.should_prune():
            raise optuna.TrialPruned()
        return result["best"]["val_exact_match"]

    return run_trial


def tune(mode: str, base: TrainConfig, tune_epochs: int = 3, max_trials: int = 20,
         sampler: str = "tpe", search_space: str | Path | None = None,
         storage: str | None = None, out_dir: str | Path = "results",
         runs_dir: str | Path = "checkpoints/tuning") -> dict:
    """Run (or continue) the study `bltlab-<mode>` until it has `max_trials` finished
    trials; write and return `results/hyperparameter_tuning_<mode>.json`."""
    space = load_search_space(search_space, mode)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    url = storage or f"sqlite:///{out_dir / 'tuning.db'}"
    db = open_storage(url)
    if sampler not in ("tpe", "grid"):
        raise BltlabError(f"--sampler {sampler!r}: choose tpe or grid")
    study = retry(lambda: optuna.create_study(
        study_name=f"bltlab-{mode}", storage=db, direction="maximize", load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)))
    # a worker joining (or resuming) a study draws its own stream: seed + trials so far
    seed = base.seed + len(study.get_trials(deepcopy=False))
    study.sampler = (optuna.samplers.TPESampler(seed=seed) if sampler == "tpe"
                     else optuna.samplers.GridSampler(grid(space), seed=seed))
    requeue_dead_trials(study, db)
    busy = (*FINISHED, TrialState.RUNNING, TrialState.WAITING)
    if len(study.get_trials(deepcopy=False, states=busy)) < max_trials:
        study.optimize(objective(mode, space, base, tune_epochs, Path(runs_dir)),
                       n_trials=max_trials, callbacks=[MaxTrialsCallback(max_trials, busy)],
                       catch=(BltlabError,))
    return write_results(study, mode, out_dir / f"hyperparameter_tuning_{mode}.json",
                         sampler, tune_epochs, url)


def requeue_dead_trials(study: optuna.Study, db: RDBStorage) -> None:
    """Trials left running by a worker of this host that is gone (killed) are failed now
    and queued again with the same parameters; they resume the dead attempt's
    checkpoints. (Workers elsewhere are caught by the heartbeat after 90 s.)"""
    study_id = db.get_study_id_from_name(study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if owner_gone(str(t.user_attrs.get("worker", "?"))):
            trial_id = db.get_trial_id_from_study_id_trial_number(study_id, t.number)
            if db.set_trial_state_values(trial_id, TrialState.FAIL):
                print(f"trial {t.number}: its worker is gone; queued again")
                study.enqueue_trial(t.params, user_attrs={
                    "retry_of": t.user_attrs.get("retry_of", t.number)})


def retry(make, attempts: int = 6):
    """Workers started together race to create the same tables or study; the losers of
    the race simply try again and find them."""
    for attempt in range(attempts):
        try:
            return make()
        except sqlalchemy.exc.SQLAlchemyError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1) + random.random() * 0.2)


def open_storage(url: str) -> RDBStorage:
    """The study database; a trial whose worker died (no heartbeat for 90 s) is failed
    and retried with the same parameters."""
    return retry(lambda: RDBStorage(url, heartbeat_interval=30, grace_period=90,
                                    failed_trial_callback=RetryFailedTrialCallback(2)))


def write_results(study: optuna.Study, mode: str, path: Path, sampler: str,
                  tune_epochs: int, url: str) -> dict:
    trials = [{"number": t.number, "state": t.state.name, "value": t.value,
               "params": t.params, "epochs_reported": len(t.intermediate_values),
               "seconds": t.duration.total_seconds() if t.duration else None}
              for t in study.get_trials(deepcopy=False)]
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    best = max(complete, key=lambda t: t.value) if complete else None
    result = {"mode": mode, "study": study.study_name, "storage": url, "sampler": sampler,
              "tune_epochs": tune_epochs, "metric": "validation exact match",
              "best_params": best.params if best else None,
              "best_value": best.value if best else None,
              "finished_trials": sum(t["state"] in ("COMPLETE", "PRUNED") for t in trials),
              "trials": trials}
    write_json(path, result)
    return result
