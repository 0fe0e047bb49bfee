"""`bltlab run --frontier`: both model families over a grid of sizes and (for the BLT)
compressions (bltlab.experiments.GRIDS), each trained to the same budget of training
FLOPs, in one data regime.

Each grid point is a run spec (written to `<save_dir>/frontier/<name>/seed_<s>/spec.yaml`),
so a point is an independent job: `--workers N` runs N at a time on this machine, and
`--points NAME ...` runs some of them (e.g. on another machine sharing the folder); a
finished point is not trained again. Every point is evaluated on the test set and the
reserved final set, and `results/frontier.json` holds, per point, its validation exact
match against its cumulative training FLOPs (after each epoch) and its test exact match
against its forward and inference FLOPs per row. `summarise` reads off each family's
front.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from bltlab import paths
from bltlab.checkpoint import checkpoint_paths, load_checkpoint
from bltlab.errors import BltlabError
from bltlab.evaluation import evaluate_checkpoint
from bltlab.experiments import FRONTIER_SHARED, GRIDS
from bltlab.fileio import read_json, write_atomic, write_json
from bltlab.spec import RunSpec, build_spec
from bltlab.stats import first_reaching, mean_std

THRESHOLDS = (0.99, 0.999)  # validation exact match the summary reads the FLOPs at
TEST_TARGET = 0.995  # test exact match at which the cheapest inference is read


def point_specs(preset: str, train_csv: Path, save_dir: Path, seeds: list[int],
                device: str) -> dict[tuple[str, int], RunSpec]:
    """The grid's run specs, by (point, seed): each mode's recipe (the two share one data
    regime), the budget, the point's own settings."""
    grid = GRIDS[preset]
    specs = {}
    for name, (mode, settings) in grid["points"].items():
        for seed in seeds:
            specs[name, seed] = build_spec(mode, settings={
                **FRONTIER_SHARED, "train_csv": str(train_csv), "flops_budget": grid["budget"],
                "seed": seed, "device": device, **settings,
                "save_dir": str(save_dir / name / f"seed_{seed}")})
    return specs


class Workers:
    """The worker processes of a grid: signals sent to this process reach them (SIGINT
    and SIGTERM are passed on; a killed parent takes them down with it, see
    runtime.die_with_parent), so no point trains on with no one to wait for it."""

    def __init__(self):
        self.live: set[subprocess.Popen] = set()
        self.guard = threading.Lock()

    def run(self, args: list[str], log) -> int:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "BLTLAB_PARENT": str(os.getpid())}
        with self.guard:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
            self.live.add(proc)
        try:
            return proc.wait()
        finally:
            with self.guard:
                self.live.discard(proc)

    def signal(self, signum: int) -> None:
        with self.guard:
            for proc in self.live:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signum)

    @contextlib.contextmanager
    def passing_signals(self):
        """SIGINT and SIGTERM to this process go to every worker, then end it."""
        def forward(signum, frame):
            self.signal(signum)
            raise KeyboardInterrupt if signum == signal.SIGINT else SystemExit(128 + signum)

        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            self.signal(signal.SIGTERM)  # nothing left running behind us


def run_point(spec: RunSpec, threads: int, workers: Workers) -> str:
    """Train one point in its own process (log in its folder); returns its name."""
    folder = Path(spec.train.save_dir)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "spec.yaml"
    write_atomic(config, lambda f: f.write(spec.to_yaml()))
    with open(folder / "train.log", "a", encoding="utf-8") as log:
        code = workers.run([sys.executable, "-m", "bltlab.cli", "--threads", str(threads),
                            "train", "--config", str(config)], log)
    if code:
        raise BltlabError(f"frontier point {folder} failed: see {folder / 'train.log'}")
    return f"{folder.parent.name} {folder.name}"


def train_points(specs: dict[tuple[str, int], RunSpec], workers: int) -> None:
    """Train the points, `workers` at a time, each with its share of the threads this
    process may use (`bltlab --threads N`)."""
    threads = max(1, torch.get_num_threads() // workers)
    procs = Workers()
    with procs.passing_signals(), ThreadPoolExecutor(workers) as pool:
        for name in pool.map(lambda s: run_point(s, threads, procs), specs.values()):
            print(f"frontier: {name} trained")


def finished(spec: RunSpec) -> str | None:
    """Why a point's run is not a result yet (None when it finished training)."""
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


def point_result(name: str, spec: RunSpec, metrics: dict, final: dict) -> dict:
    """One run's row of frontier.json: its curve, its test and final-set numbers."""
    history = read_json(checkpoint_paths(spec.train.save_dir, spec.mode)[2], "training history")
    out = {"name": name, "seed": spec.train.seed, "family": spec.mode,
           "d_model": spec.model.d_model, "parameters": metrics["parameters"],
           "spec": history["spec"], "final_exact_match": final["exact_match_accuracy"],
           "curve": [{"train_flops": e["train_flops"], "val_exact_match": e["val_exact_match"],
                      "epoch": e["epoch"]} for e in history["epochs"]],
           "test_exact_match": metrics["exact_match_accuracy"],
           "forward_flops_per_row": metrics["forward_flops_per_row"]["total"],
           "inference_flops_per_row": metrics["inference_flops_per_row"]["total"]}
    if spec.mode == "blt":
        out["bytes_per_patch"] = metrics["bytes_per_patch"]
    return out


def table(points: list[dict]) -> dict[str, dict]:
    """Per grid point, mean ± std over its seeds of what the report's table shows."""
    out = {}
    for name in dict.fromkeys(p["name"] for p in points):
        runs = [p for p in points if p["name"] == name]
        out[name] = {"family": runs[0]["family"], "seeds": [p["seed"] for p in runs],
                     "parameters": runs[0].get("parameters"),
                     **{k: mean_std([p.get(k) for p in runs]) for k in (
                         "test_exact_match", "final_exact_match", "forward_flops_per_row",
                         "inference_flops_per_row", "bytes_per_patch")},
                     **{f"train_flops_to_{level:g}": mean_std(
                         [first_reaching(p["curve"], level) for p in runs])
                        for level in THRESHOLDS},
                     "reached_0.99": sum(first_reaching(p["curve"], 0.99) is not None
                                         for p in runs)}
    return out


def summarise(rows: dict[str, dict]) -> dict:
    """Per family, from the table (means over each point's seeds): the fewest training
    FLOPs a point needs to reach each validation threshold (only points where every seed
    reached it), and the cheapest inference FLOPs per row at ≥ 99.5% mean test exact
    match."""
    out = {}
    for family in sorted({r["family"] for r in rows.values()}):
        mine = {name: r for name, r in rows.items() if r["family"] == family}
        entry: dict[str, Any] = {}
        for level in THRESHOLDS:
            key = f"train_flops_to_{level:g}"
            reached = [(r[key]["mean"], name) for name, r in mine.items()
                       if r[key] and r[key]["n"] == len(r["seeds"])]
            entry[key] = ({"flops": min(reached)[0], "point": min(reached)[1],
                           "seeds": len(mine[min(reached)[1]]["seeds"])} if reached else None)
        good = [(r["inference_flops_per_row"]["mean"], name) for name, r in mine.items()
                if r["test_exact_match"]["mean"] >= TEST_TARGET]
        entry["cheapest_inference_at_test_target"] = (
            {"flops": min(good)[0], "point": min(good)[1],
             "test_exact_match": mine[min(good)[1]]["test_exact_match"]["mean"],
             "seeds": len(mine[min(good)[1]]["seeds"])} if good else None)
        entry["best_test_exact_match"] = max(r["test_exact_match"]["mean"]
                                             for r in mine.values())
        out[family] = entry
    return out


def evaluate_point(name: str, spec: RunSpec, sets: dict[str, Path], device: str,
                   skip_bad_rows: bool = False) -> dict[str, dict]:
    """A point's metrics on each set (`test`, `final`), evaluated once per checkpoint."""
    best = checkpoint_paths(spec.train.save_dir, spec.mode)[0]
    return {kind: evaluate_checkpoint(best, spec.mode, csv_path,
                                      paths.frontier_csv(name, spec.train.seed, kind), device,
                                      skip_bad_rows, extra={"frontier_point": name})
            for kind, csv_path in sets.items()}


def frontier(preset: str, train_csv: Path, test_csv: Path, final_csv: Path, save_dir: Path,
             out_dir: Path, seeds: list[int], device: str = "auto", workers: int = 1,
             only: list[str] | None = None, skip_train: bool = False,
             skip_bad_rows: bool = False) -> dict:
    """Train (unless `skip_train`) and evaluate the grid's runs (points x seeds) on the
    test and final sets; write frontier.json."""
    specs = point_specs(preset, train_csv, save_dir / "frontier", seeds, device)
    names = list(GRIDS[preset]["points"])
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise BltlabError(f"--points {' '.join(unknown)}: not in the {preset} grid "
                          f"({', '.join(names)})")
    if not skip_train:
        train_points({k: v for k, v in specs.items() if not only or k[0] in only}, workers)
    missing = {f"{name} seed {seed}": why for (name, seed), spec in specs.items()
               if (why := finished(spec))}
    done = {k: v for k, v in specs.items() if f"{k[0]} seed {k[1]}" not in missing}
    if not done:
        raise BltlabError(f"no finished frontier run ({len(missing)} missing: e.g. "
                          f"{next(iter(missing.items()), ('-', '-'))}); "
                          f"{out_dir / paths.FRONTIER} is left as it was")
    if missing:
        print(f"warning: {len(missing)} of {len(specs)} frontier runs are not finished and "
              f"are left out: {', '.join(list(missing)[:6])}{' ...' if len(missing) > 6 else ''}")
    sets = {"test": test_csv, "final": final_csv}
    points = []
    for (name, _), spec in done.items():
        metrics = evaluate_point(name, spec, sets, device, skip_bad_rows)
        points.append(point_result(name, spec, metrics["test"], metrics["final"]))
    rows = table(points)
    result = {"preset": preset, "budget_train_flops": GRIDS[preset]["budget"],
              "test_csv": str(test_csv), "points": points, "table": rows,
              "summary": summarise(rows), "missing": missing}
    write_json(out_dir / paths.FRONTIER, result)
    return result
