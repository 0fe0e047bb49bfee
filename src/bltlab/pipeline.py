"""`bltlab run`: the experiment end to end (data if missing, (tune,) train both models,
evaluate them, analyse).

Every stage resumes: training continues (or skips) a run found in the save dir with the
same configuration and data, and evaluation is skipped when the metrics JSON already
describes the same checkpoint and test file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bltlab.data import generate
from bltlab.evaluation import default_output_csv, evaluate, format_metrics, metrics_path
from bltlab.fileio import write_json
from bltlab.models import CONFIGS
from bltlab.training import (
    TrainConfig,
    checkpoint_paths,
    file_sha256,
    load_model,
    pick_device,
    train,
)

# Epochs per preset and model. Both models train on freshly generated rows each epoch
# (5% of them given a non-ASCII word), the setting that made the BLT exact (README).
PRESET_EPOCHS = {"quick": {"char": 4, "blt": 30}, "full": {"char": 10, "blt": 45}}
SHARED_TRAINING = {"fresh_pairs": True, "fresh_non_ascii": 0.05}
SEED_METRICS = ("exact_match_accuracy", "character_accuracy", "one_minus_cer",
                "avg_edit_distance")


def base_config(train_csv: Path, args: argparse.Namespace, **overrides) -> TrainConfig:
    values = {"train_csv": str(train_csv), "save_dir": args.save_dir, "seed": args.seed,
              "device": args.device, "skip_bad_rows": args.skip_bad_rows,
              "progress": not args.no_progress, **SHARED_TRAINING}
    if args.batch_size:
        values["batch_size"] = args.batch_size
    return TrainConfig(**{**values, **overrides})


def tune_stage(mode: str, train_csv: Path, args: argparse.Namespace) -> dict:
    """The best parameters of the mode's tuning study (run or continued now, or read
    from its results file with --use_existing_tuning)."""
    from bltlab.tuning import tune

    path = Path(args.output_dir) / f"hyperparameter_tuning_{mode}.json"
    if args.use_existing_tuning and path.is_file():
        print(f"{mode}: using the tuning results in {path}")
        return json.loads(path.read_text(encoding="utf-8"))["best_params"] or {}
    result = tune(mode, base_config(train_csv, args), args.tune_epochs,
                  args.max_tune_combinations, args.sampler, args.search_space, args.storage,
                  args.output_dir, args.runs_dir)
    return result["best_params"] or {}


def train_stage(mode: str, preset: str, train_csv: Path, args: argparse.Namespace,
                params: dict, seed: int, save_dir: Path) -> None:
    from bltlab.patching import PatcherConfig
    from bltlab.tuning import split

    model_over, train_over, patcher_over = split(mode, params)
    cfg = base_config(train_csv, args, **train_over, seed=seed, save_dir=str(save_dir),
                      epochs=args.epochs or PRESET_EPOCHS[preset][mode])
    patcher = PatcherConfig(**patcher_over) if mode == "blt" else None
    train(mode, CONFIGS[mode](**model_over), cfg, patcher)


def eval_stage(mode: str, test_csv: Path, args: argparse.Namespace, save_dir: Path,
               out: Path) -> dict:
    """Evaluate the best checkpoint, unless its metrics for this test file exist."""
    best, _, _ = checkpoint_paths(save_dir, mode)
    stamp = {"checkpoint_sha256": file_sha256(best), "test_csv_sha256": file_sha256(test_csv),
             "beam_width": args.beam_width}
    done = metrics_path(out)
    if done.is_file() and Path(out).is_file():
        old = json.loads(done.read_text(encoding="utf-8"))
        if all(old.get(k) == v for k, v in stamp.items()):
            print(f"{mode}: {done} is up to date")
            return old
    device = pick_device(args.device)
    model, codec, _ = load_model(best, mode, device)
    metrics = evaluate(model, codec, test_csv, out, device=device,
                       skip_bad_rows=args.skip_bad_rows, beam_width=args.beam_width,
                       extra={"mode": mode, "checkpoint": str(best), **stamp})
    print(f"\n== {mode} on {test_csv} ==\n{format_metrics(metrics)}\n")
    return metrics


def ablation_patchers() -> dict[str, tuple]:
    """The patcher ablation: name -> (patcher config, target bytes/patch to calibrate to)."""
    from bltlab.patching import PatcherConfig

    target = TrainConfig().target_bpp
    return {
        "window-entropy-seed": (PatcherConfig("window-entropy", threshold=2.0,
                                              max_patch_len=15), None),
        "window-entropy-4": (PatcherConfig("window-entropy"), target),
        "entropy-model-global": (PatcherConfig(), target),
        "entropy-model-monotonic": (PatcherConfig(entropy_mode="monotonic"), target),
        "space": (PatcherConfig("space"), None),
        "static-4": (PatcherConfig("static", static_size=4), None),
    }


def ablation_stage(preset: str, train_csv: Path, test_csv: Path,
                   args: argparse.Namespace) -> dict:
    """Train and evaluate the BLT with each patcher; results/ablation_patchers.json."""
    device = pick_device(args.device)
    out = {}
    for name, (patcher, target) in ablation_patchers().items():
        save_dir = Path(args.save_dir) / "ablation" / name
        if not args.skip_train:
            cfg = base_config(train_csv, args, epochs=args.epochs or PRESET_EPOCHS[preset]["blt"],
                              target_bpp=target)
            cfg.save_dir = str(save_dir)
            train("blt", CONFIGS["blt"](), cfg, patcher)
        best, _, _ = checkpoint_paths(save_dir, "blt")
        model, codec, _ = load_model(best, "blt", device)
        csv_path = Path("predictions") / "ablation" / f"predictions_blt_{name}.csv"
        m = evaluate(model, codec, test_csv, csv_path, device=device,
                     extra={"mode": "blt", "checkpoint": str(best), "ablation": name})
        out[name] = {"patcher": codec.patcher.cfg.describe(),
                     "bytes_per_patch": m["bytes_per_patch"],
                     "exact_match": m["exact_match_accuracy"],
                     "character_accuracy": m["character_accuracy"],
                     "forward_flops_per_row": m["forward_flops_per_row"]["total"]}
        print(f"ablation {name}: {codec.patcher.cfg.describe()}, {m['bytes_per_patch']:.2f} "
              f"bytes/patch, exact match {100 * m['exact_match_accuracy']:.2f}%")
    write_json(Path(args.output_dir) / "ablation_patchers.json", out)
    return out


def run(args: argparse.Namespace) -> dict:
    """Generate data when absent, train both models, evaluate them, write a summary."""
    data_dir = Path(args.data_dir)
    train_csv, test_csv = data_dir / "train.csv", data_dir / "test.csv"
    if not train_csv.exists() or not test_csv.exists():
        print(f"no data in {data_dir}/: generating it (seed {args.seed})")
        generate(data_dir, seed=args.seed)
    preset = "full" if args.full or args.tune else "quick"
    results = {"preset": "tune" if args.tune else preset, "data_dir": str(data_dir)}
    seeds = [args.seed + k for k in range(args.seeds)]
    per_seed: dict[str, list[dict]] = {}
    for mode in ("char", "blt"):
        params = tune_stage(mode, train_csv, args) if args.tune else {}
        for k, seed in enumerate(seeds):  # the first seed at the usual paths
            save_dir = Path(args.save_dir) / (f"seed_{seed}" if k else "")
            out = Path(default_output_csv(mode))
            out = out.parent / f"seed_{seed}" / out.name if k else out
            if not args.skip_train:
                train_stage(mode, preset, train_csv, args, params, seed, save_dir)
            metrics = eval_stage(mode, test_csv, args, save_dir, out)
            results.setdefault(mode, metrics)
            per_seed.setdefault(mode, []).append(
                {"seed": seed, **{name: metrics[name] for name in SEED_METRICS},
                 "non_ascii_accuracy": metrics["non_ascii"]["accuracy"]})
    if len(seeds) > 1:
        write_json(Path(args.output_dir) / "seeds.json", per_seed)
    if args.ablation == "patchers":
        results["ablation_patchers"] = ablation_stage(preset, train_csv, test_csv, args)
    write_json(Path(args.output_dir) / "run_summary.json", results)
    from bltlab.report import analyze

    analyze(args.output_dir, Path(default_output_csv("char")).parent, args.save_dir)
    return results
