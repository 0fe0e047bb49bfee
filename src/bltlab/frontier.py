"""`bltlab run --frontier`: the three families (char, byte, BLT) over a grid of sizes and,
for the BLT, patchings (bltlab.experiments.GRIDS), each run trained to the same budget of
training FLOPs in its profile's data regime.

First a small learning-rate sweep gives each family its rate (on its reference point,
read on validation rows only); then every grid point is a run spec (written to
`<save_dir>/frontier/<profile>/<point>/seed_<s>/spec_<mode>.yaml`), an independent job:
`--workers N` runs N at a time here, `--executor slurm` submits them to a cluster
(bltlab.cluster), `--points NAME ...` runs some. A finished run is not trained again;
an unfinished one is named and left out. Each run, as it ends, is scored on the test set
(a development set) and on the reserved final set, and its record (history and scores,
the final set's rows as outcomes) is kept in `<records_dir>/<profile>/`: a grid resumes
from its records in another session or on another machine, checkpoints gone. Choices read
validation rows (the sweep, the points near a front) or the test set, never the final
set; `results/frontier_<profile>.json` holds every run's figures, and bltlab.answer reads
the fronts from it alone.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bltlab import paths
from bltlab.checkpoint import checkpoint_paths, load_checkpoint
from bltlab.cluster import Executor, train_points
from bltlab.errors import BltlabError
from bltlab.evaluation import evaluate_checkpoint, row_outcomes
from bltlab.experiments import FRONTIER_SHARED, GRIDS, PASS_AT, SWEEP_LRS
from bltlab.fileio import lock_holder, read_json, write_json
from bltlab.runtime import file_sha256, torch_threads
from bltlab.spec import RunSpec, build_spec
from bltlab.stats import first_reaching, mean_std, reach_and_stay

THRESHOLDS = (0.99, 0.999)  # validation exact match the table reads the FLOPs at


def grid(profile: str, preset: str) -> dict[str, Any]:
    return GRIDS[profile][preset]


def spec_of(mode: str, settings: dict, profile: str, budget: float, train_csv: Path,
            save_dir: Path, seed: int, device: str) -> RunSpec:
    """A frontier run: the mode's recipe of the profile, the grid's shared settings, the
    budget, then the point's own settings."""
    return build_spec(mode, settings={
        **FRONTIER_SHARED, "profile": profile, "train_csv": str(train_csv),
        "flops_budget": budget, "seed": seed, "device": device, **settings,
        "save_dir": str(save_dir / f"seed_{seed}")})


def point_specs(profile: str, preset: str, train_csv: Path, save_dir: Path, seeds: list[int],
                device: str, lrs: dict[str, float] | None = None
                ) -> dict[tuple[str, int], RunSpec]:
    """The grid's run specs, by (point, seed), each family at its swept learning rate.
    A family's reference point, seed 0, is its sweep's run at that rate (the same spec):
    it is read from the sweep, not trained twice."""
    g = grid(profile, preset)

    def home(name: str, mode: str, seed: int) -> Path:
        if lrs and seed == 0 and g["reference"].get(mode) == name:
            return sweep_dir(save_dir, name, lrs[mode])
        return save_dir / name

    return {(name, seed): spec_of(mode, {**settings, **({"lr": lrs[mode]} if lrs else {})},
                                  profile, g["budget"], train_csv, home(name, mode, seed),
                                  seed, device)
            for name, (mode, settings) in g["points"].items() for seed in seeds}


def sweep_dir(save_dir: Path, name: str, lr: float) -> Path:
    return save_dir / "sweep" / f"{name}-lr{lr:g}"


def sweep_specs(profile: str, preset: str, train_csv: Path, save_dir: Path,
                device: str) -> dict[tuple[str, float], RunSpec]:
    """The learning-rate sweep: each family's reference point at each rate, seed 0."""
    g = grid(profile, preset)
    out = {}
    for family, name in g["reference"].items():
        mode, settings = g["points"][name]
        for lr in SWEEP_LRS:
            out[family, lr] = spec_of(mode, {**settings, "lr": lr}, profile, g["budget"],
                                      train_csv, sweep_dir(save_dir, name, lr), 0, device)
    return out


def comparable(spec: dict) -> dict:
    """A spec as JSON, without what may differ between two homes of one run; a setting
    added since the spec was written reads as its default (the run did not have it)."""
    with contextlib.suppress(BltlabError):  # a setting since removed: another run
        spec = RunSpec.from_dict(spec, where="run record").to_dict()
    d = json.loads(json.dumps(spec))
    for key in ("save_dir", "device"):
        d.get("train", {}).pop(key, None)
    return d


@dataclass(frozen=True)
class Records:
    """One small JSON file per finished run (its spec, its training history, its scores on
    the test and final sets with the final set's rows as outcomes) in `folder`, named as
    the run's checkpoint folder is under `home`. A run with a record is not trained again."""

    folder: Path  # <records_dir>/<profile>
    home: Path  # <save_dir>/frontier/<profile>

    def path(self, spec: RunSpec) -> Path:
        run = Path(spec.train.save_dir).relative_to(self.home)
        return self.folder / run.with_suffix(".json")

    def read(self, spec: RunSpec) -> dict | None:
        """The run's record, if one of this spec and its training file is kept."""
        path = self.path(spec)
        if not path.is_file():
            return None
        record = read_json(path, "run record")
        if not isinstance(record, dict) or not isinstance(record.get("spec"), dict) or \
                comparable(record["spec"]) != comparable(spec.to_dict()) or \
                record.get("train_csv_sha256") != data_sha256(spec.data.train_csv):
            print(f"warning: {path} records another run (spec or training file); not used")
            return None
        return record

    def write(self, spec: RunSpec, record: dict) -> None:
        write_json(self.path(spec), {**record, "spec": spec.to_dict(),
                                     "train_csv_sha256": data_sha256(spec.data.train_csv)})


@functools.lru_cache(maxsize=16)
def file_digest(path: str, mtime_ns: int, size: int) -> str:
    return file_sha256(path)


def data_sha256(path: str) -> str:
    """A data file's SHA-256, hashed once while the file is unchanged."""
    st = Path(path).stat()
    return file_digest(str(path), st.st_mtime_ns, st.st_size)


def history(spec: RunSpec, records: Records) -> dict:
    """A run's training history: its record's, else its checkpoint folder's."""
    record = records.read(spec)
    if record is not None:
        return record["history"]
    return read_json(checkpoint_paths(spec.train.save_dir, spec.mode)[2], "training history")


def curve(spec: RunSpec, records: Records) -> list[dict]:
    return [{"train_flops": e["train_flops"], "val_exact_match": e["val_exact_match"],
             "epoch": e["epoch"]} for e in history(spec, records)["epochs"]]


def best_rates(specs: dict[tuple[str, float], RunSpec], records: Records) -> dict[str, dict]:
    """Per family, each swept rate's validation figures and the best rate: the fewest
    training FLOPs to reach and stay at 99% validation exact match, else the highest
    validation exact match at the end of the budget."""
    out: dict[str, dict] = {}
    for (family, lr), spec in specs.items():
        c = curve(spec, records)
        out.setdefault(family, {"rates": {}})["rates"][f"{lr:g}"] = {
            "train_flops_to_stay_0.99": reach_and_stay(c, 0.99),
            "val_exact_match": c[-1]["val_exact_match"]}
    for entry in out.values():
        rank = {lr: (r["train_flops_to_stay_0.99"] is None,
                     r["train_flops_to_stay_0.99"] or 0.0, -r["val_exact_match"])
                for lr, r in entry["rates"].items()}
        entry["best"] = float(min(rank, key=rank.get))
    return out


def finished(spec: RunSpec, records: Records | None = None) -> str | None:
    """Why a point's run is not a result yet (None when it finished training)."""
    if records is not None and records.read(spec) is not None:
        return None
    history = checkpoint_paths(spec.train.save_dir, spec.mode)[2]
    if not history.is_file():
        return "not trained"
    try:
        done = read_json(history, "training history")
        if isinstance(done, dict) and "finished" not in done:  # written before it said so
            latest = load_checkpoint(checkpoint_paths(spec.train.save_dir, spec.mode)[1])
            done["finished"] = latest.get("run_state", {}).get("finished")
        ok = isinstance(done, dict) and done.get("finished") is True and done.get("epochs")
    except BltlabError as e:
        return str(e)
    if not ok:
        epochs = done.get("epochs") if isinstance(done, dict) else None
        return f"unfinished ({len(epochs) if isinstance(epochs, list) else 0} epochs trained)"
    return None


def point_result(name: str, spec: RunSpec, metrics: dict[str, dict], records: Records) -> dict:
    """One run's row of frontier_<profile>.json: its validation curve, its figures on each
    set, its FLOPs per row by part, its final-set rows as outcomes (1, 0, - not scored)."""
    c, test, final = curve(spec, records), metrics["test"], metrics["final"]
    epochs = history(spec, records)["epochs"]
    out = {"name": name, "seed": spec.train.seed, "family": spec.mode,
           "d_model": spec.model.d_model, "parameters": test["parameters"],
           "lr": spec.train.lr, "curve": c, "val_exact_match": c[-1]["val_exact_match"],
           "test_exact_match": test["exact_match_accuracy"],
           "final_exact_match": final["exact_match_accuracy"],
           "final_rows": final["total_samples"], "final_correct": final["total_correct"],
           "final_rows_in_training": final.get("rows_in_training", 0),
           "final_outcomes": final["outcomes"],
           "test_rows_in_training": test.get("rows_in_training", 0),
           "forward_flops_per_row": test["forward_flops_per_row"]["total"],
           "inference_flops_per_row": final["inference_flops_per_row"]["total"],
           "inference_flops_by_part": final["inference_flops_per_row"],
           "train_seconds": sum(e.get("epoch_seconds", 0.0) for e in epochs),
           "eval_seconds": sum(m.get("decode_seconds", 0.0) for m in (test, final))}
    if spec.mode == "blt":
        out["bytes_per_patch"] = final["bytes_per_patch"]
    return out


def by_part(runs: list[dict]) -> dict[str, float]:
    """Inference FLOPs per row by model part, mean over a point's seeds."""
    parts = [r.get("inference_flops_by_part") or {} for r in runs]
    return {k: float(np.mean([p.get(k, 0.0) for p in parts])) for k in parts[0]}


def table(points: list[dict]) -> dict[str, dict]:
    """Per grid point, mean ± std over its seeds of what the report's table shows."""
    out = {}
    for name in dict.fromkeys(p["name"] for p in points):
        runs = [p for p in points if p["name"] == name]
        out[name] = {"family": runs[0]["family"], "seeds": [p["seed"] for p in runs],
                     "parameters": runs[0].get("parameters"),
                     **{k: mean_std([p.get(k) for p in runs]) for k in (
                         "val_exact_match", "test_exact_match", "final_exact_match",
                         "forward_flops_per_row", "inference_flops_per_row",
                         "bytes_per_patch")},
                     **{f"train_flops_to_{level:g}": mean_std(
                         [first_reaching(p["curve"], level) for p in runs])
                        for level in THRESHOLDS},
                     "train_flops_to_stay_0.99": mean_std(
                         [reach_and_stay(p["curve"], 0.99) for p in runs]),
                     "reached_0.99": sum(first_reaching(p["curve"], 0.99) is not None
                                         for p in runs),
                     "inference_flops_by_part": by_part(runs)}
    return out


def evaluate_point(name: str, spec: RunSpec, sets: dict[str, Path], device: str,
                   skip_bad_rows: bool, records: Records) -> dict[str, dict]:
    """A finished run's metrics on each set (`test`, `final`), leaving out rows of its
    training stream: from its record, else evaluated (its best checkpoint) and recorded."""
    record = records.read(spec) or {"history": history(spec, records)}
    todo = [kind for kind in sets  # not scored yet, or scored on another file
            if record.get(kind, {}).get("test_csv_sha256") != data_sha256(sets[kind])]
    best = checkpoint_paths(spec.train.save_dir, spec.mode)[0]
    for kind in todo:
        out = paths.frontier_csv(spec.data.profile, name, spec.train.seed, kind)
        metrics = evaluate_checkpoint(best, spec.mode, sets[kind], out, device, skip_bad_rows,
                                      extra={"frontier_point": name})
        record[kind] = {**{k: v for k, v in metrics.items() if k != "spec"},
                        "outcomes": row_outcomes(out)}
    if todo:
        records.write(spec, record)
    return {kind: record[kind] for kind in sets}


def recorder(specs: dict, sets: dict[str, Path], device: str, skip_bad_rows: bool,
             records: Records) -> Callable[[Any, int], None]:
    """What follows each run of `specs` as it ends (train_points' `then`): its record,
    scored on `sets` with the threads it freed, one run at a time (its predictions filed
    under its folder's name: the point's, or the sweep run's)."""
    one_at_a_time = threading.Lock()

    def then(key, threads: int) -> None:
        with one_at_a_time, torch_threads(threads):
            spec = specs[key]
            if finished(spec) is None:
                evaluate_point(Path(spec.train.save_dir).parent.name, spec, sets, device,
                               skip_bad_rows, records)

    return then


def train_missing(specs: dict, workers: Executor | int, then: Callable[[Any, int], None],
                  records: Records) -> None:
    """Train the runs of `specs` that have no record (an unfinished one resumes), but for
    those another process is training now (another `bltlab run --frontier` on this
    folder): they are left to it."""
    def elsewhere(key) -> str | None:
        spec = specs[key]
        holder = lock_holder(spec.train.save_dir, spec.mode)
        return holder and (f"frontier: {spec.train.save_dir} is training in another process "
                           f"({holder}); left to it")

    train_points({k: s for k, s in specs.items() if records.read(s) is None}, workers, then,
                 elsewhere)


def missing_runs(specs: dict, records: Records) -> dict[str, str]:
    """The runs that are not results yet, and why."""
    return {f"{k[0]} seed {k[1]}": why for k, spec in specs.items()
            if (why := finished(spec, records))}


def lr_sweep(profile: str, preset: str, train_csv: Path, home: Path, out_dir: Path,
             device: str, workers: Executor | int, skip_train: bool, records: Records,
             follow: Callable[[dict], Callable[[Any, int], None]]) -> dict[str, float] | None:
    """Each family's learning rate from the sweep (run unless `skip_train`, each run
    followed by `follow(specs)`); None when the sweep has not finished (the recipes' rate
    is used)."""
    specs = sweep_specs(profile, preset, train_csv, home, device)
    if not skip_train:
        train_missing(specs, workers, follow(specs), records)
    if missing_runs(specs, records):
        return None
    rates = best_rates(specs, records)
    write_json(out_dir / paths.sweep(profile), rates)
    return {family: entry["best"] for family, entry in rates.items()}


def check_points(profile: str, preset: str, only: list[str] | None) -> None:
    names = list(grid(profile, preset)["points"])
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise BltlabError(f"--points {' '.join(unknown)}: not in the {profile} {preset} "
                          f"grid ({', '.join(names)})")


def near_front(specs: dict, test_csv: Path, device: str, skip_bad_rows: bool,
               factor: float, records: Records) -> set[str]:
    """The points whose inference FLOPs per row (on the test set: FLOPs depend on the rows'
    lengths only) are within `factor` x of their family's cheapest point passing on
    validation (the mean of its finished seeds), from the finished runs of `specs`."""
    cost: dict[str, float] = {}
    val: dict[str, list[float]] = {}
    for (name, _), spec in specs.items():
        if finished(spec, records) is None:
            test = evaluate_point(name, spec, {"test": test_csv}, device, skip_bad_rows,
                                  records)["test"]
            cost.setdefault(name, test["inference_flops_per_row"]["total"])
            val.setdefault(name, []).append(curve(spec, records)[-1]["val_exact_match"])
    mode = {name: spec.mode for (name, _), spec in specs.items()}
    near = set()
    for family in set(mode.values()):
        mine = [n for n in cost if mode[n] == family]
        front = min((cost[n] for n in mine if np.mean(val[n]) >= PASS_AT), default=None)
        if front is not None:
            near |= {n for n in mine if front / factor <= cost[n] <= front * factor}
    return near


def later_seeds(first: dict, later: dict, test_csv: Path, device: str, skip_bad_rows: bool,
                factor: float, records: Records, train: Callable[[dict], None] | None
                ) -> dict:
    """The runs of `later` (seeds after the first) for the points near a front, trained by
    `train` (None: not trained). A point's seeds can move its family's front (it passes on
    their mean), so the points near it are read again until no new one comes in."""
    chosen: set[str] = set()
    while True:
        runs = {**first, **{k: v for k, v in later.items() if k[0] in chosen}}
        new = near_front(runs, test_csv, device, skip_bad_rows, factor, records) - chosen
        if not new:
            return {k: v for k, v in later.items() if k[0] in chosen}
        print(f"frontier: later seeds for the points near a front: {', '.join(sorted(new))}")
        chosen |= new
        if train is not None:
            train({k: v for k, v in later.items() if k[0] in new})


def frontier(profile: str, preset: str, train_csv: Path, test_csv: Path, final_csv: Path,
             save_dir: Path, out_dir: Path, seeds: list[int], device: str = "auto",
             workers: Executor | int = 1, only: list[str] | None = None,
             skip_train: bool = False, skip_bad_rows: bool = False,
             near: float = 0.0, records_dir: Path | None = None) -> dict:
    """Sweep, train (unless `skip_train`) and evaluate the grid's runs (points x seeds),
    each recorded in `records_dir` (default `out_dir`/runs) as it ends; with `near`, seeds
    after the first only for points within `near` x of a family's front (see later_seeds);
    write frontier_<profile>.json."""
    home = save_dir / "frontier" / profile
    records = Records((records_dir or out_dir / "runs") / profile, home)
    sets = {"test": test_csv, "final": final_csv}  # final: scored, not read, until the end

    def follow(specs: dict) -> Callable[[Any, int], None]:
        return recorder(specs, sets, device, skip_bad_rows, records)

    check_points(profile, preset, only)
    lrs = lr_sweep(profile, preset, train_csv, home, out_dir, device, workers, skip_train,
                   records, follow)
    specs = point_specs(profile, preset, train_csv, home, seeds[:1] if near else seeds,
                        device, lrs)
    if not skip_train:
        chosen = {k: v for k, v in specs.items() if not only or k[0] in only}
        train_missing(chosen, workers, follow(chosen), records)
    if near and len(seeds) > 1:
        specs |= later_seeds(specs, point_specs(profile, preset, train_csv, home, seeds[1:],
                                                device, lrs),
                             test_csv, device, skip_bad_rows, near, records,
                             None if skip_train else
                             lambda more: train_missing(more, workers, follow(more), records))
    missing = missing_runs(specs, records)
    done = {k: v for k, v in specs.items() if f"{k[0]} seed {k[1]}" not in missing}
    result_path = out_dir / paths.frontier(profile)
    if not done:
        raise BltlabError(f"no finished frontier run ({len(missing)} missing: e.g. "
                          f"{next(iter(missing.items()), ('-', '-'))}); {result_path} is "
                          "left as it was")
    if missing:
        print(f"warning: {len(missing)} of {len(specs)} frontier runs are not finished and "
              f"are left out: {', '.join(list(missing)[:6])}{' ...' if len(missing) > 6 else ''}")
    points = [point_result(name, spec, evaluate_point(name, spec, sets, device, skip_bad_rows,
                                                      records), records)
              for (name, _), spec in done.items()]
    result = {"profile": profile, "preset": preset,
              "budget_train_flops": grid(profile, preset)["budget"], "learning_rates": lrs,
              "test_csv": str(test_csv), "final_csv": str(final_csv), "points": points,
              "table": table(points), "missing": missing, "near_front": near or None,
              "records": str(records.folder)}
    write_json(result_path, result)
    return result
