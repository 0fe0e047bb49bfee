"""`bltlab run`: the experiment end to end (data if missing, train, evaluate, summary)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bltlab.data import generate
from bltlab.evaluation import default_output_csv, evaluate, format_metrics
from bltlab.fileio import write_json
from bltlab.models import ModelConfig
from bltlab.training import TrainConfig, checkpoint_paths, load_model, pick_device, train

# Epochs per preset; every other setting is the package default (see README).
PRESET_EPOCHS = {"quick": 4, "full": 10}


def run(args: argparse.Namespace) -> dict:
    """Generate data when absent, train the models, evaluate them, write a summary."""
    data_dir = Path(args.data_dir)
    train_csv, test_csv = data_dir / "train.csv", data_dir / "test.csv"
    if not train_csv.exists() or not test_csv.exists():
        print(f"no data in {data_dir}/: generating it (seed {args.seed})")
        generate(data_dir, seed=args.seed)
    preset = "full" if args.full else "quick"
    device = pick_device(args.device)
    results = {"preset": preset, "data_dir": str(data_dir)}
    for mode in ("char",):
        if not args.skip_train:
            overrides = {"epochs": args.epochs or PRESET_EPOCHS[preset]}
            if args.batch_size:
                overrides["batch_size"] = args.batch_size
            cfg = TrainConfig(train_csv=str(train_csv), save_dir=args.save_dir, seed=args.seed,
                              device=args.device, skip_bad_rows=args.skip_bad_rows,
                              progress=not args.no_progress, **overrides)
            train(mode, ModelConfig(), cfg)
        best, _, _ = checkpoint_paths(args.save_dir, mode)
        model, codec, _ = load_model(best, mode, device)
        out = default_output_csv(mode)
        metrics = evaluate(model, codec, test_csv, out, device=device,
                           skip_bad_rows=args.skip_bad_rows,
                           extra={"mode": mode, "checkpoint": str(best)})
        print(f"\n== {mode} on {test_csv} ==\n{format_metrics(metrics)}\n")
        results[mode] = metrics
    write_json(Path("results") / "run_summary.json", results)
    return results
