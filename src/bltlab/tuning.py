"""Hyperparameter tuning with Optuna.

The default search space is bltlab.experiments.SEARCH_SPACE; a YAML (or JSON) file of
the same shape replaces it (`--search_space FILE`; `bltlab tune --print_config` prints
the default to start from). Trials train with the ordinary training loop
for `tune_epochs` and report validation exact match after each epoch, so weak trials
are pruned (median rule). The study lives in a database (SQLite `results/tuning.db` by
default): a killed tuning run loses no completed trial, the trial that was running is
noticed by its missing heartbeat and retried, and several workers on several machines
can share one study through `--storage postgresql://...`.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import random
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.storages import RDBStorage, RetryFailedTrialCallback
from optuna.trial import TrialState

from bltlab import paths
from bltlab.errors import BltlabError
from bltlab.experiments import SEARCH_SPACE
from bltlab.fileio import (
    check_output_file,
    ensure_dir,
    owner_gone,
    process_owner,
    read_settings,
    write_json,
)
from bltlab.spec import RunSpec, locate
from bltlab.training import train

KINDS = {"float": ("low", "high"), "int": ("low", "high"), "categorical": ("choices",)}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
HEARTBEAT_S = 30  # a trial whose worker sends none for 90 s is failed and retried


@contextlib.contextmanager
def quiet_optuna():
    """Optuna's notices that are not the user's business: its heartbeat API is marked
    experimental (and "supposed to be used with Study.optimize", which this driver
    replaces), and some of it deprecated."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*[Hh]eartbeat.*")
        yield
DRIVERS = {"postgresql": "psycopg2-binary", "mysql": "mysqlclient"}  # the default drivers


SCALARS = (bool, int, float, str)  # what a categorical choice can be
EXTRAS = {"float": {"log", "grid"}, "int": {"step", "grid"}, "categorical": {"grid"}}


def check_entry(base: RunSpec, name: str, spec: Any, where: str) -> None:
    """A search-space entry's shape, and that each value it can take makes a valid spec
    and a valid Optuna distribution."""
    if not isinstance(spec, dict) or spec.get("type") not in KINDS:
        raise BltlabError(f"{where}: needs type float, int or categorical")
    missing = [k for k in KINDS[spec["type"]] if k not in spec]
    unknown = sorted(map(str, set(spec) - {"type", *KINDS[spec["type"]], *EXTRAS[spec["type"]]}))
    if missing or unknown:
        raise BltlabError(f"{where}: " + "; ".join(
            ([f"missing {', '.join(missing)}"] if missing else [])
            + ([f"unknown key(s) {', '.join(unknown)}"] if unknown else [])))
    grid = spec.get("grid", [])
    if not isinstance(grid, list) or not all(isinstance(v, SCALARS) for v in grid):
        raise BltlabError(f"{where}: grid must be a list of plain values")
    if spec["type"] == "categorical":
        values = spec["choices"]
        if not isinstance(values, list) or not values or \
                not all(isinstance(v, SCALARS) for v in values):
            raise BltlabError(f"{where}: choices must be a non-empty list of plain values")
    else:
        values = [spec["low"], spec["high"]]
        number = int if spec["type"] == "int" else (int, float)
        if not all(isinstance(v, number) and not isinstance(v, bool) and math.isfinite(v)
                   for v in values):
            raise BltlabError(f"{where}: low and high must be finite {spec['type']} numbers")
        if values[0] > values[1]:
            raise BltlabError(f"{where}: low {values[0]} is above high {values[1]}")
        if spec.get("log") not in (None, True, False):
            raise BltlabError(f"{where}: log must be true or false")
        if spec.get("log") and values[0] <= 0:
            raise BltlabError(f"{where}: log: true needs low above 0 (got {values[0]})")
        step = spec.get("step", 1)
        if spec["type"] == "int" and (not isinstance(step, int) or isinstance(step, bool)
                                      or step < 1):
            raise BltlabError(f"{where}: step must be a whole number of at least 1")
    for value in [*values, *grid]:
        try:
            base.with_settings({name: value}, where)
        except BltlabError as e:
            raise BltlabError(f"{where}: {value!r} does not make a valid run ({e})") from None


def load_search_space(path: str | Path | None, base: RunSpec) -> dict[str, dict]:
    """The `base.mode` section of a search-space file, checked entry by entry: keys name
    settings as flags do (`d_model`, `entropy_threshold`), and every value they can
    take must make a valid run on its own."""
    spaces = read_settings(path, "search space") if path else SEARCH_SPACE
    path = path or "experiments.SEARCH_SPACE"
    mode = base.mode
    if not isinstance(spaces.get(mode), dict):
        raise BltlabError(f"{path}: no '{mode}' section")
    for name, spec in spaces[mode].items():
        where = f"{path}: {mode}.{name}"
        if not isinstance(name, str):
            raise BltlabError(f"{where}: not a setting name")
        try:
            locate(mode, name, where)
        except BltlabError:
            raise BltlabError(f"{where}: not a setting of `bltlab train --mode {mode}`"
                              ) from None
        check_entry(base, name, spec, where)
    return spaces[mode]


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


def objective(base: RunSpec, space: dict, tune_epochs: int, runs_dir: Path):
    def run_trial(trial: optuna.Trial) -> float:
        try:
            spec = base.with_settings(suggest(trial, space), f"trial {trial.number}")
        except BltlabError as e:  # e.g. a d_model that nhead does not divide
            raise optuna.TrialPruned(str(e)) from None
        # a retried trial (its worker died) resumes the first attempt's checkpoints
        trial.set_user_attr("worker", process_owner())
        frozen = next(t for t in trial.study.get_trials(deepcopy=False)
                      if t.number == trial.number)
        number = frozen.user_attrs.get("retry_of",
                                       RetryFailedTrialCallback.retried_trial_number(frozen))
        number = trial.number if number is None else number
        save_dir = runs_dir / base.mode / f"trial_{number:04d}"
        spec = spec.with_settings({"epochs": tune_epochs, "progress_bars": False,
                                   "tensorboard": False, "save_dir": str(save_dir)})

        def report(row: dict) -> bool:
            trial.report(row["val_exact_match"], row["epoch"])
            return trial.should_prune()

        result = train(spec, report)
        trial.set_user_attr("save_dir", str(save_dir))
        if result["stopped"] and trial.should_prune():
            raise optuna.TrialPruned()
        return result["best"]["val_exact_match"]

    return run_trial


def tune(base: RunSpec, tune_epochs: int = 3, max_trials: int = 20, sampler: str = "tpe",
         search_space: str | Path | None = None, storage: str | None = None,
         out_dir: str | Path = "results", runs_dir: str | Path = "checkpoints/tuning") -> dict:
    """Run (or continue) the study `bltlab-<mode>` until it has `max_trials` finished
    trials of `base` with the search space's settings; write and return
    `results/hyperparameter_tuning_<mode>.json`."""
    if sampler not in ("tpe", "grid"):
        raise BltlabError(f"--sampler {sampler!r}: choose tpe or grid")
    for name, value in (("tune_epochs", tune_epochs), ("max_tune_combinations", max_trials)):
        if value < 1:
            raise BltlabError(f"--{name} {value}: must be at least 1")
    space = load_search_space(search_space, base)
    out_dir = ensure_dir(out_dir, "--output_dir")
    url = storage or f"sqlite:///{out_dir / paths.TUNING_DB}"
    with quiet_optuna():  # the heartbeat and retry API works across optuna 3.4-4.x
        return run_study(base, space, tune_epochs, max_trials, sampler, url, out_dir,
                         Path(runs_dir))


def run_study(base: RunSpec, space: dict, tune_epochs: int, max_trials: int, sampler: str,
              url: str, out_dir: Path, runs_dir: Path) -> dict:
    """tune()'s work, once its arguments are checked."""
    mode = base.mode
    db = open_storage(url)
    study = retry(lambda: optuna.create_study(
        study_name=f"bltlab-{mode}", storage=db, direction="maximize", load_if_exists=True,
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)))
    # a worker joining (or resuming) a study draws its own stream: seed + trials so far
    seed = base.train.seed + len(study.get_trials(deepcopy=False))
    study.sampler = (optuna.samplers.TPESampler(seed=seed) if sampler == "tpe"
                     else optuna.samplers.GridSampler(grid(space), seed=seed))
    requeue_dead_trials(study, db)
    gate = trial_gate(url)
    work(study, db, objective(base, space, tune_epochs, runs_dir), max_trials, gate)
    with gate():  # read and written whole: a worker ending first cannot write last
        return write_results(study, mode, paths.tuning(out_dir, mode), sampler, tune_epochs,
                             url)


def trial_gate(url: str):
    """A lock that makes "count the trials, then start one" atomic among this machine's
    workers on an SQLite study (the usual case); other databases get none, so workers
    that finish at the same instant may start one trial more than asked."""
    parsed = sqlalchemy.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return contextlib.nullcontext
    path = Path(parsed.database).with_suffix(".lock")

    @contextlib.contextmanager
    def gate():
        with open(path, "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    return gate


@contextlib.contextmanager
def heartbeat(db: RDBStorage, trial_id: int, interval: float = HEARTBEAT_S):
    """Record the trial's heartbeat while it runs, so a worker that dies is noticed."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            db.record_heartbeat(trial_id)

    db.record_heartbeat(trial_id)
    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def work(study: optuna.Study, db: RDBStorage, run_trial, max_trials: int, gate) -> None:
    """Start trials until the study holds `max_trials` finished or running ones (all
    workers together; a trial queued again is run before new ones). A trial whose settings
    or data fail is failed, not fatal; one stopped by Ctrl-C is failed and queued again
    (a rerun continues it), one broken by a bug is failed before the error goes on."""
    busy = (*FINISHED, TrialState.RUNNING)
    study_id = db.get_study_id_from_name(study.study_name)
    while True:
        optuna.storages.fail_stale_trials(study)  # dead workers elsewhere: queued again
        with gate():
            if len(study.get_trials(deepcopy=False, states=busy)) >= max_trials:
                return
            trial = study.ask()
        with heartbeat(db, db.get_trial_id_from_study_id_trial_number(study_id, trial.number)):
            try:
                study.tell(trial, run_trial(trial))
            except optuna.TrialPruned:
                study.tell(trial, state=TrialState.PRUNED)
            except BltlabError as e:
                print(f"trial {trial.number} failed: {e}")
                study.tell(trial, state=TrialState.FAIL)
            except BaseException:
                study.tell(trial, state=TrialState.FAIL)
                if sys.exc_info()[0] is KeyboardInterrupt:
                    retry_later(study, trial.number)
                raise


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
                retry_later(study, t.number)


def retry_later(study: optuna.Study, number: int) -> None:
    """Queue trial `number` again with its parameters; it resumes the first attempt's
    checkpoints."""
    t = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    study.enqueue_trial(t.params, user_attrs={"retry_of": t.user_attrs.get("retry_of",
                                                                            t.number)})


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


def driver_package(url: sqlalchemy.engine.URL, module: str | None) -> str:
    """The package to install for a URL whose driver is missing."""
    if "+" not in url.drivername and url.get_backend_name() in DRIVERS:
        return DRIVERS[url.get_backend_name()]
    return module or url.drivername


def check_storage(url: str) -> None:
    """A one-line error, before any trial, for a URL that is not a database, a missing
    driver, or an SQLite file that cannot be written."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
        parsed.get_dialect().import_dbapi()
    except sqlalchemy.exc.ArgumentError:
        raise BltlabError(f"--storage {url}: not a database URL (e.g. sqlite:///results/"
                          "tuning.db, postgresql://user:pw@host/db)") from None
    except sqlalchemy.exc.NoSuchModuleError:
        raise BltlabError(f"--storage {url}: no database kind {parsed.drivername!r}") from None
    except ImportError as e:
        raise BltlabError(f"--storage {url}: its driver is not installed (pip install "
                          f"{driver_package(parsed, e.name)})") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        check_output_file(parsed.database, "--storage")


def open_storage(url: str) -> RDBStorage:
    """The study database; a trial whose worker died (no heartbeat for 90 s) is failed
    and retried with the same parameters."""
    check_storage(url)
    try:
        return retry(lambda: RDBStorage(url, heartbeat_interval=HEARTBEAT_S, grace_period=90,
                                        failed_trial_callback=RetryFailedTrialCallback(2)))
    except sqlalchemy.exc.SQLAlchemyError as e:
        first = str(e.orig if getattr(e, "orig", None) else e).splitlines()[0]
        raise BltlabError(f"--storage {url}: cannot open the database ({first})") from None


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
