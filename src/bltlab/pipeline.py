"""`bltlab run`: the experiment end to end (data if missing, (tune,) train both models,
evaluate them, analyse).

Every stage resumes: training continues (or skips) a run found in the save dir with the
same spec and data, and evaluation is skipped when the metrics JSON already describes
the same checkpoint and test file.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bltlab import paths
from bltlab.checkpoint import checkpoint_paths, load_model
from bltlab.data import default_data_dir, final_test, generate, load_pairs, robustness_files
from bltlab.decoding import predict
from bltlab.errors import BltlabError
from bltlab.evaluation import (
    by_band,
    evaluate_checkpoint,
    held_out,
    length_buckets,
    longest_at,
    trained_rows,
    unknown_characters,
    write_predictions,
)
from bltlab.experiments import ABLATIONS, DEFAULT_PROFILE, PRESETS
from bltlab.fileio import read_json, write_json
from bltlab.patching import PatcherConfig
from bltlab.runtime import pick_device, torch_threads
from bltlab.spec import RunSpec, build_spec
from bltlab.training import train

SEED_METRICS = ("exact_match_accuracy", "character_accuracy", "one_minus_cer",
                "avg_edit_distance")


@dataclass(frozen=True)
class RunOptions:
    """What `bltlab run` does; `bltlab run --help` describes each."""

    preset: str = "quick"  # quick, full or tune
    modes: tuple[str, ...] = ("char", "blt")  # the families trained and compared
    profile: str = DEFAULT_PROFILE  # the data: broad (what people type) or the seed's
    data_dir: str | None = None  # default: data/broad (broad profile), data (seed)
    save_dir: str = "checkpoints"
    output_dir: str = "results"
    records_dir: str | None = None  # frontier: the runs' records (default <output_dir>/runs)
    epochs: int | None = None
    batch_size: int | None = None
    seed: int = 0
    seeds: int = 1
    device: str = "auto"
    beam_width: int = 1
    skip_train: bool = False
    fresh: bool = False  # train anew where a save dir holds another run
    skip_bad_rows: bool = False
    progress_bars: bool = True
    ablation: str | None = None
    frontier: bool = False  # the compute frontier instead of the two models
    workers: int = 0  # runs trained at a time (0: one per core, at most one per run)
    executor: str = "local"  # frontier: here, or cluster jobs (bltlab.cluster.EXECUTORS)
    slurm_partition: str | None = None
    job_minutes: int = 240
    points: tuple[str, ...] = ()  # frontier: only these points (default: all)
    near_front: float = 0.0  # frontier: later seeds only near each family's front
    use_existing_tuning: bool = False
    tune_epochs: int = 3
    max_tune_combinations: int = 20
    sampler: str = "tpe"
    search_space: str | None = None
    storage: str | None = None
    runs_dir: str = "checkpoints/tuning"


def run_spec(mode: str, opts: RunOptions, train_csv: Path, seed: int, save_dir: Path,
             params: dict | None = None) -> RunSpec:
    """The spec of one model's run in the pipeline: the mode's recipe (both recipes share
    one data regime), the preset's epochs (experiments.PRESETS), then tuned parameters."""
    recipe_epochs = build_spec(mode, settings={"profile": opts.profile}).train.epochs
    settings = {"train_csv": str(train_csv), "save_dir": str(save_dir), "seed": seed,
                "device": opts.device, "skip_bad_rows": opts.skip_bad_rows,
                "profile": opts.profile, "progress_bars": opts.progress_bars,
                "resume": "never" if opts.fresh else "auto",
                "epochs": opts.epochs or PRESETS[opts.preset] * recipe_epochs}
    if opts.batch_size:
        settings["batch_size"] = opts.batch_size
    return build_spec(mode, settings={**settings, **(params or {})})


def tune_stage(mode: str, opts: RunOptions, train_csv: Path) -> dict:
    """The best parameters of the mode's tuning study (run or continued now, or read
    from its results file with --use_existing_tuning)."""
    from bltlab.tuning import tune

    path = paths.tuning(opts.output_dir, mode)
    if opts.use_existing_tuning and path.is_file():
        print(f"{mode}: using the tuning results in {path}")
        done = read_json(path, "tuning results")
        if not isinstance(done, dict) or not isinstance(done.get("best_params"), dict | None):
            raise BltlabError(f"{path}: damaged tuning results (no best_params)")
        return done["best_params"] or {}
    base = run_spec(mode, opts, train_csv, opts.seed, Path(opts.save_dir))
    result = tune(base, opts.tune_epochs, opts.max_tune_combinations, opts.sampler,
                  opts.search_space, opts.storage, opts.output_dir, opts.runs_dir)
    return result["best_params"] or {}


def ablation_stage(train_csv: Path, test_csv: Path, opts: RunOptions) -> dict:
    """Train and evaluate the BLT in each variant of the ablation; results/ablation_<name>.json."""
    out = {}
    for name, settings in ABLATIONS[opts.ablation].items():
        save_dir = Path(opts.save_dir) / "ablation" / name
        if not opts.skip_train:
            train(run_spec("blt", opts, train_csv, opts.seed, save_dir, settings))
        m = evaluate_checkpoint(checkpoint_paths(save_dir, "blt")[0], "blt", test_csv,
                                paths.ablation_csv(name), opts.device, opts.skip_bad_rows,
                                opts.beam_width, {"ablation": name}, opts.progress_bars)
        described = PatcherConfig.from_dict(m["patcher"]).describe()
        out[name] = {"patcher": described, "bytes_per_patch": m["bytes_per_patch"],
                     "exact_match": m["exact_match_accuracy"],
                     "character_accuracy": m["character_accuracy"],
                     "forward_flops_per_row": m["forward_flops_per_row"]["total"]}
        print(f"ablation {name}: {described}, {m['bytes_per_patch']:.2f} bytes/patch, "
              f"exact match {100 * m['exact_match_accuracy']:.2f}%")
    write_json(paths.ablation(opts.output_dir, opts.ablation), out)
    return out


def seed_paths(mode: str, opts: RunOptions, k: int, seed: int) -> tuple[Path, Path]:
    """Save dir and predictions CSV of the k-th seed (the first at the usual paths)."""
    save_dir = Path(opts.save_dir) / (f"seed_{seed}" if k else "")
    out = paths.predictions_csv(mode)
    return save_dir, (out.parent / f"seed_{seed}" / out.name if k else out)


def data_dir(opts: RunOptions) -> Path:
    return Path(opts.data_dir or default_data_dir(opts.profile))


def data_files(opts: RunOptions) -> tuple[Path, Path]:
    """train.csv and test.csv of the data dir, generated (of the profile) when absent."""
    folder = data_dir(opts)
    train_csv, test_csv = folder / "train.csv", folder / "test.csv"
    if not train_csv.exists() or not test_csv.exists():
        print(f"no data in {folder}/: generating it ({opts.profile} profile, seed {opts.seed})")
        generate(folder, seed=opts.seed, profile=opts.profile)
    return train_csv, test_csv


def robustness_stage(mode: str, opts: RunOptions, save_dir: Path,
                     label: str | None = None) -> dict:
    """Evaluate a model on every held-out robustness set (a row too long for the model
    counts as wrong); predictions in predictions/robustness/, results merged into
    results/robustness.json under '<mode> (<profile>)'."""
    device = pick_device(opts.device)
    best = checkpoint_paths(save_dir, mode)[0]
    model, codec, _ = load_model(best, mode, device)
    trained = trained_rows(best, mode)
    label = label or f"{mode} ({opts.profile})"
    out: dict = {}
    for name, csv_path in robustness_files().items():
        pairs = load_pairs(csv_path)
        keep = held_out(pairs, trained)  # rows of the training stream are not scored
        preds = [None if codec.too_long(x) else p for x, p in zip(pairs.inputs, predict(
            model, codec, [x if not codec.too_long(x) else "" for x in pairs.inputs],
            device=device, drafts=pairs.targets))]
        write_predictions(paths.robustness_csv(label, name), pairs.inputs, pairs.targets,
                          [p if p is not None else "" for p in preds], ~keep)
        rows = [(x, p == t, p is None) for x, p, t, k in
                zip(pairs.inputs, preds, pairs.targets, keep) if k]
        inputs, correct = [x for x, _, _ in rows], [c for _, c, _ in rows]
        buckets = length_buckets(inputs, correct)
        out[name] = {"exact_match": sum(correct) / len(rows) if rows else None,
                     "rows": len(rows),
                     "rows_in_training": int((~keep).sum()),
                     "too_long": sum(t for _, _, t in rows), "by_length": buckets,
                     "longest_length_at_99": longest_at(buckets),
                     "by_band": by_band(inputs, correct),
                     "unknown_character_rows": unknown_characters(model, codec, inputs)["rows"]}
        print(f"{label} on {name}: " + (f"{100 * sum(correct) / len(rows):.2f}% exact"
                                        if rows else "every row occurs in training")
              + (f" ({out[name]['rows_in_training']} rows in training left out)"
                 if out[name]["rows_in_training"] else ""))
    path = Path(opts.output_dir) / paths.ROBUSTNESS
    merged = read_json(path, "robustness results") if path.is_file() else {}
    if not isinstance(merged, dict):
        raise BltlabError(f"{path}: damaged robustness results (not a mapping); move it away "
                          "to start it again")
    write_json(path, {**merged, label: out})
    return out


def frontier_stage(opts: RunOptions) -> dict:
    """`bltlab run --frontier`: the three families over the profile's grid at one FLOP
    budget, each run evaluated on the test set and on the reserved final set; then the
    answer over every profile measured (results/answer.json, via the report)."""
    from bltlab.frontier import check_points, frontier
    from bltlab.report import analyze

    preset = "full" if opts.preset == "full" else "quick"
    check_points(opts.profile, preset, list(opts.points))  # before any data is made
    train_csv, test_csv = data_files(opts)
    result = frontier(opts.profile, preset, train_csv,
                      test_csv, final_test(opts.profile), Path(opts.save_dir),
                      Path(opts.output_dir), [opts.seed + k for k in range(opts.seeds)],
                      opts.device, executor(opts, Path(opts.save_dir) / "frontier" / "jobs"),
                      list(opts.points), opts.skip_train, opts.skip_bad_rows,
                      opts.near_front, opts.records_dir and Path(opts.records_dir))
    analyze(opts.output_dir, paths.PREDICTIONS, opts.save_dir)
    return result


def executor(opts: RunOptions, jobs: Path, runs: int | None = None):
    """Where runs train: here, `--workers` at a time (0: one per core this process may
    use, at most `runs`), or as cluster jobs (bltlab.cluster)."""
    import torch

    from bltlab.cluster import Executor

    cores = torch.get_num_threads()
    workers = opts.workers or max(1, min(runs or cores, cores))
    return Executor(opts.executor, workers, opts.slurm_partition, opts.job_minutes, jobs)


def train_stage(opts: RunOptions, train_csv: Path, seeds: list[int],
                then: Callable[[tuple[str, int], int], None] | None = None) -> None:
    """Train every model and seed (tuned first with --tune): side by side, each in a
    process of its own with its share of the cores (logs beside the checkpoints,
    train_<mode>.log), or in this process with all of them when one runs at a time.
    Side by side, `then((mode, seed), threads)` follows each run as soon as it ends (see
    cluster.train_points)."""
    from bltlab.cluster import train_points

    specs = {}
    for mode in opts.modes:
        params = tune_stage(mode, opts, train_csv) if opts.preset == "tune" else {}
        for k, seed in enumerate(seeds):
            specs[mode, seed] = run_spec(mode, opts, train_csv, seed,
                                         seed_paths(mode, opts, k, seed)[0], params)
    where = executor(opts, Path(opts.save_dir) / "jobs", len(specs))
    if where.workers == 1 and where.kind == "local":
        for spec in specs.values():
            train(spec)
        return
    folders = sorted({s.train.save_dir for s in specs.values()})
    print(f"training {', '.join(f'{m} (seed {s})' for m, s in specs)}, {where.workers} at a "
          f"time; logs: {', '.join(folders)} (train_<mode>.log)", flush=True)
    train_points(specs, where, then)


def trained(save_dir: Path, mode: str) -> Path:
    """The best checkpoint of a run (--skip_train: it must be there already)."""
    best = checkpoint_paths(save_dir, mode)[0]
    if not best.is_file():
        raise BltlabError(f"--skip_train: {best}: no such checkpoint; train it first")
    return best


def evaluate_run(mode: str, seed: int, k: int, opts: RunOptions, test_csv: Path
                 ) -> tuple[dict, dict | None]:
    """A trained run's metrics on the test set, and (the first seed's) on every
    robustness set."""
    save_dir, out = seed_paths(mode, opts, k, seed)
    metrics = evaluate_checkpoint(trained(save_dir, mode), mode, test_csv, out, opts.device,
                                  opts.skip_bad_rows, opts.beam_width,
                                  progress=opts.progress_bars)
    return metrics, robustness_stage(mode, opts, save_dir) if k == 0 else None


def run(opts: RunOptions) -> dict:
    """Generate data when absent, train both models, evaluate them, write a summary."""
    if opts.frontier:
        return frontier_stage(opts)
    if opts.skip_train:  # everything it evaluates is there, before anything is written
        for mode in opts.modes:
            for k, seed in enumerate(range(opts.seed, opts.seed + opts.seeds)):
                trained(seed_paths(mode, opts, k, seed)[0], mode)
    train_csv, test_csv = data_files(opts)
    results = {"preset": opts.preset, "profile": opts.profile, "data_dir": str(data_dir(opts))}
    seeds = [opts.seed + k for k in range(opts.seeds)]
    done: dict[tuple[str, int], tuple[dict, dict | None]] = {}
    one_at_a_time = threading.Lock()  # evaluations write shared results files

    def evaluate(key: tuple[str, int], threads: int) -> None:
        with one_at_a_time, torch_threads(threads):
            done[key] = evaluate_run(*key, seeds.index(key[1]), opts, test_csv)

    if not opts.skip_train:  # a model is evaluated while the others still train
        train_stage(opts, train_csv, seeds, evaluate)
    per_seed: dict[str, list[dict]] = {}
    for mode in opts.modes:
        for k, seed in enumerate(seeds):
            metrics, robustness = done.get((mode, seed)) or evaluate_run(
                mode, seed, k, opts, test_csv)
            if k == 0:
                results[mode], results[f"{mode}_robustness"] = metrics, robustness
            per_seed.setdefault(mode, []).append(
                {"seed": seed, **{name: metrics[name] for name in SEED_METRICS},
                 "non_ascii_accuracy": metrics["non_ascii"]["accuracy"]})
    if len(seeds) > 1:
        write_json(Path(opts.output_dir) / paths.SEEDS, per_seed)
    if opts.ablation:
        results[f"ablation_{opts.ablation}"] = ablation_stage(train_csv, test_csv, opts)
    write_json(Path(opts.output_dir) / paths.RUN_SUMMARY, results)
    from bltlab.report import analyze

    analyze(opts.output_dir, paths.PREDICTIONS, opts.save_dir)
    return results
