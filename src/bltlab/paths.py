"""Where results live: every file `bltlab run`, `eval`, `tune` and `analyze` write or read,
by name, relative to the results folder (`--output_dir`, default results/) or the
predictions folder (predictions/). Checkpoint files: bltlab.checkpoint."""

from __future__ import annotations

from pathlib import Path

RESULTS = Path("results")
PREDICTIONS = Path("predictions")
CHECKPOINTS = Path("checkpoints")

ANSWER = "answer.json"  # the study's answer, from every profile's frontier
ROBUSTNESS = "robustness.json"  # every model on the held-out sets
RUN_SUMMARY = "run_summary.json"  # bltlab run
SEEDS = "seeds.json"  # bltlab run --seeds N
COMPREHENSIVE = "comprehensive_results.json"  # bltlab analyze
REPORT_TXT = "experimental_report.txt"
REPORT_HTML = "report.html"
SUMMARY_TXT = "summary_report.txt"  # in the predictions folder (the seed's)
TUNING_DB = "tuning.db"


def frontier(profile: str) -> str:
    """A profile's compute frontier (bltlab run --frontier --profile P)."""
    return f"frontier_{profile}.json"


def sweep(profile: str) -> str:
    """The frontier's learning-rate sweep of a profile."""
    return f"lr_sweep_{profile}.json"


def tuning(results: str | Path, mode: str) -> Path:
    """A tuning study's results (the seed's name)."""
    return Path(results) / f"hyperparameter_tuning_{mode}.json"


def ablation(results: str | Path, name: str) -> Path:
    return Path(results) / f"ablation_{name}.json"


def predictions_csv(mode: str, folder: str | Path = PREDICTIONS) -> Path:
    """A model's predictions on the test set (the seed's names: the char model is the
    baseline)."""
    return Path(folder) / f"predictions_{'baseline' if mode == 'char' else mode}.csv"


def metrics_json(output_csv: str | Path) -> Path:
    """predictions/x.csv -> predictions/x_metrics.json (the seed's naming)."""
    p = Path(output_csv)
    return p.with_name(f"{p.stem}_metrics.json")


def robustness_csv(label: str, name: str) -> Path:
    """A model's predictions on one held-out set."""
    return PREDICTIONS / "robustness" / label.replace(" ", "_") / f"{name}.csv"


def ablation_csv(variant: str) -> Path:
    return PREDICTIONS / "ablation" / f"predictions_blt_{variant}.csv"


def frontier_csv(profile: str, point: str, seed: int, kind: str) -> Path:
    """A frontier run's predictions on the test (`test`) or reserved final (`final`) set."""
    return PREDICTIONS / "frontier" / profile / point / f"seed_{seed}" / f"predictions_{kind}.csv"
