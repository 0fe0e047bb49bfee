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

from bltlab.checkpoint import checkpoint_paths
from bltlab.errors import BltlabError
from bltlab.fileio import write_atomic, write_json
from bltlab.spec import RunSpec, build_spec

THRESHOLDS = (0.99, 0.999)  # validation exact match the summary reads the FLOPs at
TEST_TARGET = 0.995  # test exact match at which the cheapest inference is read
SHARED = {"fresh_pairs": True, "fresh_non_ascii": 0.05, "tensorboard": False,
          "progress_bars": False, "save_every_steps": 200}
SMALL = {"d_model": 32, "dim_feedforward": 128}
GRIDS: dict[str, dict[str, Any]] = {
    # ≤ 60 min on a 2-core CPU with --workers 2 (one thread each)
    "quick": {"budget": 1.2e13, "points": {
        "char-d64": ("char", {}),
        "char-d64-3+1": ("char", {"num_encoder_layers": 3, "num_decoder_layers": 1}),
        "char-d32": ("char", SMALL),
        "blt-d64-e2": ("blt", {"target_bpp": 2.0}),
        "blt-d64-e4": ("blt", {"target_bpp": 4.0}),
        "blt-d64-e6": ("blt", {"target_bpp": 6.0, "max_patch_len": 12}),
        "blt-d64-space": ("blt", {"patcher": "space"}),
        "blt-d32-e4": ("blt", {"target_bpp": 4.0, **SMALL}),
    }},
    # for a GPU: three widths, more compressions, ten times the budget
    "full": {"budget": 1.2e14, "points": {
        **{f"char-d{d}": ("char", {"d_model": d, "dim_feedforward": 4 * d})
           for d in (64, 128, 256)},
        **{f"char-d{d}-3+1": ("char", {"d_model": d, "dim_feedforward": 4 * d,
                                       "num_encoder_layers": 3, "num_decoder_layers": 1})
           for d in (64, 128)},
        **{f"blt-d{d}-e{b}": ("blt", {"d_model": d, "dim_feedforward": 4 * d,
                                      "target_bpp": float(b),
                                      "max_patch_len": 8 if b < 6 else 12})
           for d in (64, 128, 256) for b in (2, 4, 6)},
        **{f"blt-d{d}-space": ("blt", {"d_model": d, "dim_feedforward": 4 * d,
                                       "patcher": "space"}) for d in (64, 128, 256)},
    }},
}


def point_specs(preset: str, train_csv: Path, save_dir: Path, seed: int,
                device: str) -> dict[str, RunSpec]:
    """The grid's run specs: each mode's recipe, the shared data regime and budget, the
    point's own settings."""
    grid = GRIDS[preset]
    specs = {}
    for name, (mode, settings) in grid["points"].items():
        specs[name] = build_spec(mode, settings={
            **SHARED, "train_csv": str(train_csv), "flops_budget": grid["budget"],
            "seed": seed, "device": device, "save_dir": str(save_dir / name), **settings})
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
        raise BltlabError(f"frontier point {folder.name} failed: see {folder / 'train.log'}")
    return folder.name


def train_points(specs: dict[str, RunSpec], workers: int) -> None:
    """Train the points, `workers` at a time, each with its share of the cores."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ThreadPoolExecutor(workers) as pool:
        for name in pool.map(lambda s: run_point(s, threads), specs.values()):
            print(f"frontier: {name} trained")


def point_result(name: str, spec: RunSpec, metrics: dict) -> dict:
    """One point's row of frontier.json: its curve and its test numbers."""
    history = json.loads(checkpoint_paths(spec.train.save_dir, spec.mode)[2]
                         .read_text(encoding="utf-8"))
    out = {"name": name, "family": spec.mode, "d_model": spec.model.d_model,
           "parameters": metrics["parameters"], "spec": history["spec"],
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


def summarise(points: list[dict]) -> dict:
    """Per family: the training FLOPs its best point needs to reach each validation
    threshold, and its cheapest inference FLOPs per row at ≥ 99.5% test exact match."""
    out = {}
    for family in sorted({p["family"] for p in points}):
        mine = [p for p in points if p["family"] == family]
        entry: dict[str, Any] = {}
        for level in THRESHOLDS:
            reached = [(first_reaching(p["curve"], level), p["name"]) for p in mine]
            reached = [r for r in reached if r[0] is not None]
            entry[f"train_flops_to_{level:g}"] = (
                {"flops": min(reached)[0], "point": min(reached)[1]} if reached else None)
        good = [p for p in mine if p["test_exact_match"] >= TEST_TARGET]
        best = min(good, key=lambda p: p["inference_flops_per_row"]) if good else None
        entry["cheapest_inference_at_test_target"] = (
            {"flops": best["inference_flops_per_row"], "point": best["name"],
             "test_exact_match": best["test_exact_match"]} if best else None)
        entry["best_test_exact_match"] = max(p["test_exact_match"] for p in mine)
        out[family] = entry
    return out


def frontier(preset: str, train_csv: Path, test_csv: Path, save_dir: Path, out_dir: Path,
             seed: int, device: str, workers: int, only: list[str] | None, skip_train: bool,
             evaluate_point) -> dict:
    """Train (unless `skip_train`) and evaluate the grid's points; write frontier.json."""
    specs = point_specs(preset, train_csv, save_dir / "frontier", seed, device)
    unknown = sorted(set(only or []) - set(specs))
    if unknown:
        raise BltlabError(f"--points {' '.join(unknown)}: not in the {preset} grid "
                          f"({', '.join(specs)})")
    chosen = {k: v for k, v in specs.items() if not only or k in only}
    if not skip_train:
        train_points(chosen, workers)
    done = {k: v for k, v in specs.items() if checkpoint_paths(v.train.save_dir, v.mode)[0]
            .is_file()}
    points = [point_result(name, spec, evaluate_point(name, spec)) for name, spec in done.items()]
    result = {"preset": preset, "budget_train_flops": GRIDS[preset]["budget"],
              "test_csv": str(test_csv), "points": points, "summary": summarise(points)}
    write_json(out_dir / "frontier.json", result)
    return result
