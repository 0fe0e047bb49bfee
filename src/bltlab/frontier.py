"""`bltlab run --frontier`: both model families over a grid of sizes and (for the BLT)
compressions, each trained to the same budget of training FLOPs, in one data regime.

Each grid point is a run spec (written to `<save_dir>/frontier/<name>/spec.yaml`), so a
point is an independent job: `--workers N` runs N at a time on this machine, and
`--points NAME ...` runs some of them (e.g. on another machine sharing the folder);
a finished point is not trained again. Every point is evaluated on the test set, and
`results/frontier.json` holds, per point, its validation exact match against its
cumulative training FLOPs (after each epoch) and its test exact match against its
forward and inference FLOPs per row. `summarise` reads off each family's Pareto front.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bltlab.checkpoint import checkpoint_paths
from bltlab.errors import BltlabError
from bltlab.fileio import write_atomic, write_json
from bltlab.spec import RunSpec, build_spec

THRESHOLDS = (0.99, 0.999)  # validation exact match the summary reads the FLOPs at
TEST_TARGET = 0.995  # test exact match at which the cheapest inference is read
SHARED = {"profile": "seed", "tensorboard": False, "progress_bars": False,
          "save_every_steps": 200}
SMALL = {"d_model": 32, "dim_feedforward": 128}
ENTROPY = {"patcher": "entropy-model"}  # θ calibrated to the point's target_bpp
GRIDS: dict[str, dict[str, Any]] = {
    # about an hour on a 2-core CPU with --workers 2 (one thread each), per seed
    "quick": {"budget": 1.2e13, "points": {
        "char-d64": ("char", {}),
        "char-d64-3+1": ("char", {"num_encoder_layers": 3, "num_decoder_layers": 1}),
        "char-d32": ("char", SMALL),
        "char-d32-3+1": ("char", {**SMALL, "num_encoder_layers": 3, "num_decoder_layers": 1}),
        "blt-d64-e2": ("blt", {**ENTROPY, "target_bpp": 2.0}),
        "blt-d64-e4": ("blt", {**ENTROPY, "target_bpp": 4.0}),
        "blt-d64-e6": ("blt", {**ENTROPY, "target_bpp": 6.0, "max_patch_len": 12}),
        "blt-d64-space": ("blt", {"patcher": "space"}),
        "blt-d32-e4": ("blt", {**ENTROPY, "target_bpp": 4.0, **SMALL}),
        "blt-d32-space": ("blt", {"patcher": "space", **SMALL}),
    }},
    # for a GPU: three widths, more compressions, ten times the budget
    "full": {"budget": 1.2e14, "points": {
        **{f"char-d{d}": ("char", {"d_model": d, "dim_feedforward": 4 * d})
           for d in (64, 128, 256)},
        **{f"char-d{d}-3+1": ("char", {"d_model": d, "dim_feedforward": 4 * d,
                                       "num_encoder_layers": 3, "num_decoder_layers": 1})
           for d in (64, 128)},
        **{f"blt-d{d}-e{b}": ("blt", {"d_model": d, "dim_feedforward": 4 * d, **ENTROPY,
                                      "target_bpp": float(b),
                                      "max_patch_len": 8 if b < 6 else 12})
           for d in (64, 128, 256) for b in (2, 4, 6)},
        **{f"blt-d{d}-space": ("blt", {"d_model": d, "dim_feedforward": 4 * d,
                                       "patcher": "space"}) for d in (64, 128, 256)},
    }},
}


def point_specs(preset: str, train_csv: Path, save_dir: Path, seeds: list[int],
                device: str) -> dict[tuple[str, int], RunSpec]:
    """The grid's run specs, by (point, seed): each mode's recipe (the two share one data
    regime), the budget, the point's own settings."""
    grid = GRIDS[preset]
    specs = {}
    for name, (mode, settings) in grid["points"].items():
        for seed in seeds:
            specs[name, seed] = build_spec(mode, settings={
                **SHARED, "train_csv": str(train_csv), "flops_budget": grid["budget"],
                "seed": seed, "device": device, **settings,
                "save_dir": str(save_dir / name / f"seed_{seed}")})
    return specs


def run_point(spec: RunSpec, threads: int) -> str:
    """Train one point in its own process (log in its folder); returns its name."""
    folder = Path(spec.train.save_dir)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "spec.yaml"
    write_atomic(config, lambda f: f.write(spec.to_yaml()))
    with open(folder / "train.log", "a", encoding="utf-8") as log:
        done = subprocess.run([sys.executable, "-m", "bltlab.cli", "--threads", str(threads),
                               "train", "--config", str(config)], stdout=log,
                              stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if done.returncode:
        raise BltlabError(f"frontier point {folder} failed: see {folder / 'train.log'}")
    return f"{folder.parent.name} {folder.name}"


def train_points(specs: dict[tuple[str, int], RunSpec], workers: int) -> None:
    """Train the points, `workers` at a time, each with its share of the threads this
    process may use (`bltlab --threads N`)."""
    threads = max(1, torch.get_num_threads() // workers)
    with ThreadPoolExecutor(workers) as pool:
        for name in pool.map(lambda s: run_point(s, threads), specs.values()):
            print(f"frontier: {name} trained")


def point_result(name: str, spec: RunSpec, metrics: dict, final: dict) -> dict:
    """One run's row of frontier.json: its curve, its test and final-set numbers."""
    history = json.loads(checkpoint_paths(spec.train.save_dir, spec.mode)[2]
                         .read_text(encoding="utf-8"))
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


def first_reaching(curve: list[dict], level: float) -> float | None:
    return next((p["train_flops"] for p in curve if p["val_exact_match"] >= level), None)


def mean_std(values: list[float]) -> dict | None:
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1))
            if len(values) > 1 else 0.0, "n": len(values)}


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


def frontier(preset: str, train_csv: Path, test_csv: Path, save_dir: Path, out_dir: Path,
             seeds: list[int], device: str, workers: int, only: list[str] | None,
             skip_train: bool, evaluate_run) -> dict:
    """Train (unless `skip_train`) and evaluate the grid's runs (points x seeds); write
    frontier.json. `evaluate_run(name, spec)` returns (test metrics, final-set metrics)."""
    specs = point_specs(preset, train_csv, save_dir / "frontier", seeds, device)
    names = list(GRIDS[preset]["points"])
    unknown = sorted(set(only or []) - set(names))
    if unknown:
        raise BltlabError(f"--points {' '.join(unknown)}: not in the {preset} grid "
                          f"({', '.join(names)})")
    if not skip_train:
        train_points({k: v for k, v in specs.items() if not only or k[0] in only}, workers)
    done = {k: v for k, v in specs.items() if checkpoint_paths(v.train.save_dir, v.mode)[0]
            .is_file()}
    points = [point_result(name, spec, *evaluate_run(name, spec))
              for (name, _), spec in done.items()]
    rows = table(points)
    result = {"preset": preset, "budget_train_flops": GRIDS[preset]["budget"],
              "test_csv": str(test_csv), "points": points, "table": rows,
              "summary": summarise(rows)}
    write_json(out_dir / "frontier.json", result)
    return result
