"""The `bltlab` command line: data, patch, train, eval, infer, tune, analyze and run.

The seed's scripts (src/train.py, src/eval.py, src/infer.py, run_experiments.py,
analyze_results.py) call into it. Training flags are made from the run spec's fields
(bltlab.config): one flag per setting, with the field's help.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import fields
from typing import Any

import torch

from bltlab.config import MODES, BLTConfig, DataConfig, TrainConfig, flag
from bltlab.errors import BltlabError
from bltlab.patching import PatcherConfig

SPEC = "spec:"  # argparse dest prefix of the run-spec flags
SPEC_GROUPS = (("model", BLTConfig), ("patching (blt)", PatcherConfig), ("data", DataConfig),
               ("training", TrainConfig))


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def flag_kwargs(f) -> dict[str, Any]:
    """argparse keywords for a config field, from its type and metadata."""
    kinds = {"int": int, "float": float, "str": str, "float | None": float}
    kwargs: dict[str, Any] = {"default": None, "dest": SPEC + flag(f),
                              "help": f.metadata["help"]}
    if f.type == "bool":
        kwargs.update(type=_bool, nargs="?", const=True, metavar="true|false")
    elif f.type.startswith("tuple"):
        kwargs.update(type=int, nargs="+")
    else:
        kwargs["type"] = kinds[f.type]
    if "choices" in f.metadata:
        kwargs["choices"] = f.metadata["choices"]
    return kwargs


def add_spec_args(p: argparse.ArgumentParser) -> None:
    """One flag per run-spec setting (defaults come from the mode's recipe), the seed's
    aliases, and --config / --print_config."""
    p.add_argument("--config", help="a YAML or JSON run file (sections model, patcher, data, "
                                    "train); flags override it")
    p.add_argument("--print_config", action="store_true",
                   help="print the run spec (recipe + file + flags) and exit")
    seen: set[str] = set()
    for title, cls in SPEC_GROUPS:
        g = p.add_argument_group(title, "defaults: the --mode's recipe (see --print_config)")
        for f in fields(cls):
            if f.metadata.get("derived") or f.name in seen or f.name == "resume":
                continue
            seen.add(f.name)
            g.add_argument(f"--{flag(f)}", **flag_kwargs(f))
    g = p.add_argument_group("aliases")
    g.add_argument("--resume", nargs="?", const="latest", dest=SPEC + "resume",
                   help="continue the save dir's latest checkpoint (or PATH); by default a run "
                        "continues when --save_dir holds the same run")
    g.add_argument("--fresh", dest=SPEC + "resume", action="store_const", const="never",
                   help="start a new run even if --save_dir holds one to continue")
    g.add_argument("--use_amp", dest=SPEC + "amp", action="store_const", const="on",
                   help="autocast on (--amp on)")
    g.add_argument("--no_tensorboard", dest=SPEC + "tensorboard", action="store_const",
                   const=False, help="no TensorBoard event files (--tensorboard false)")
    g.add_argument("--no_progress", dest=SPEC + "progress_bars", action="store_const",
                   const=False, help="no progress bars (--progress_bars false)")


def spec_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The run-spec flags given on the command line, by flag name."""
    return {k.removeprefix(SPEC): v for k, v in vars(args).items()
            if k.startswith(SPEC) and v is not None}


def check_at_least(args: argparse.Namespace, **lows: int) -> None:
    """One-line errors for numeric flags below their minimum (None: not given)."""
    for name, low in lows.items():
        value = getattr(args, name, None)
        if value is not None and value < low:
            raise BltlabError(f"--{name} {value}: must be at least {low}")


def cmd_data(args: argparse.Namespace) -> None:
    from bltlab import data

    if args.data_cmd == "generate":
        check_at_least(args, seed=0, train=0, test=1)
        for name in ("train", "test"):
            if getattr(args, name) > data.MAX_ROWS:
                raise BltlabError(f"--{name} {getattr(args, name)}: at most {data.MAX_ROWS:,} "
                                  "rows a file")
        out = args.out or data.default_data_dir(args.profile)
        train, test = data.generate(out, args.seed, args.train, args.test, args.profile)
        files = f"{train} ({args.train} rows) and " if args.train else ""
        print(f"wrote {files}{test} ({args.test} rows), {args.profile} profile, seed {args.seed}")
    elif args.data_cmd == "robustness":
        paths = data.robustness_files(args.out)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    else:
        s = data.stats(data.load_pairs(args.file, skip_bad_rows=args.skip_bad_rows))
        print(json.dumps(s, indent=2, ensure_ascii=False) if args.json else data.format_stats(s))


def cmd_train(args: argparse.Namespace) -> None:
    from bltlab.spec import build_spec
    from bltlab.training import train

    spec = build_spec(args.mode, args.config, spec_settings(args))
    if args.print_config:
        print(spec.to_yaml(), end="")
        return
    train(spec)


def cmd_eval(args: argparse.Namespace) -> None:
    from bltlab.checkpoint import load_model
    from bltlab.data import default_data_dir
    from bltlab.decoding import check_search
    from bltlab.evaluation import evaluate, format_metrics, trained_rows
    from bltlab.fileio import check_output_file
    from bltlab.paths import metrics_json, predictions_csv
    from bltlab.runtime import pick_device

    check_search(args.beam_width, args.length_penalty)
    check_at_least(args, batch_size=1)
    device = pick_device(args.device)
    model, codec, state = load_model(args.checkpoint, args.mode, device)
    test_csv = args.test_csv or default_data_dir(state["spec"]["data"]["profile"]) / "test.csv"
    out = args.output_csv or predictions_csv(args.mode)
    for path in (out, metrics_json(out)):
        check_output_file(path, "--output_csv", inputs=(test_csv, args.checkpoint))
    metrics = evaluate(model, codec, test_csv, out, args.batch_size, device,
                       args.skip_bad_rows, args.beam_width, args.length_penalty,
                       extra={"mode": args.mode, "checkpoint": str(args.checkpoint),
                              "spec": state["spec"]}, progress=args.progress_bars,
                       trained=trained_rows(args.checkpoint, args.mode))
    print(format_metrics(metrics))
    print(f"wrote {out} and {metrics_json(out)}")


def cmd_infer(args: argparse.Namespace) -> int:
    from bltlab.checkpoint import load_model
    from bltlab.decoding import check_search
    from bltlab.infer import Predictor, interactive, line_groups, stream
    from bltlab.runtime import pick_device

    check_search(args.beam_width, args.length_penalty)
    check_at_least(args, batch_size=1)
    device = pick_device(args.device)
    model, codec, _ = load_model(args.checkpoint, args.mode, device)
    predictor = Predictor(model, codec, args.beam_width, args.length_penalty, device,
                          args.batch_size)
    if args.text is not None:
        return 0 if predictor.describe(args.text, sys.stdout, sys.stderr) else 1
    if not sys.stdin.isatty():
        failed = stream(predictor, line_groups(sys.stdin.fileno()), sys.stdout, sys.stderr)
        return 1 if failed else 0
    interactive(predictor)
    return 0


def cmd_patch(args: argparse.Namespace) -> None:
    from bltlab.patchview import show_patches

    if (args.text is None) == (args.file is None):
        raise BltlabError("give either a TEXT to patch or --file CSV")
    settings = {k: v for k, v in spec_settings(args).items() if k != "patcher"}
    show_patches(args.text, args.file, args.train_csv, args.patcher, settings, args.json,
                 args.html, args.html_rows, args.skip_bad_rows)


def cmd_tune(args: argparse.Namespace) -> None:
    import yaml

    from bltlab.spec import build_spec, settings_for
    from bltlab.tuning import load_search_space, tune

    modes = {"all": MODES, "both": ("char", "blt")}.get(args.mode, (args.mode,))
    for mode in modes:
        settings = spec_settings(args)
        base = build_spec(mode, args.config, settings_for(mode, settings)
                          if len(modes) > 1 else settings)
        if args.print_config:  # the base run, and the space its trials draw from
            space = {mode: load_search_space(args.search_space, base)}
            print(base.to_yaml() + yaml.safe_dump({"search_space": space}, sort_keys=False),
                  end="")
            continue
        result = tune(base, args.tune_epochs, args.max_tune_combinations, args.sampler,
                      args.search_space, args.storage, args.output_dir, args.runs_dir)
        print(f"{mode}: {result['finished_trials']} finished trials, best validation exact "
              f"match {result['best_value']} with {result['best_params']}")


def cmd_analyze(args: argparse.Namespace) -> None:
    from bltlab.report import analyze

    if not 10 <= args.dpi <= 1000:
        raise BltlabError(f"--dpi {args.dpi}: must be 10 to 1000")
    analyze(args.output_dir, args.predictions_dir, args.checkpoints_dir, not args.no_plots,
            args.dpi)


def cmd_run(args: argparse.Namespace) -> None:
    from bltlab.decoding import check_search
    from bltlab.pipeline import RunOptions, run

    names = {f.name for f in fields(RunOptions)}
    preset = "tune" if args.tune else "full" if args.full else "quick"
    check_at_least(args, workers=0, seeds=1, seed=0, epochs=1, batch_size=1, tune_epochs=1,
                   max_tune_combinations=1, job_minutes=1)
    check_search(args.beam_width, 1.0)
    if args.near_front and args.near_front < 1:
        raise BltlabError(f"--near_front {args.near_front:g}: must be 0 (off) or at least 1")
    run(RunOptions(preset=preset, **{k: v for k, v in vars(args).items() if k in names}
                   | {"points": tuple(args.points), "modes": tuple(dict.fromkeys(args.modes))}))


def add_search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--beam_width", type=int, default=1, help="1: greedy decoding")
    p.add_argument("--length_penalty", type=float, default=1.0,
                   help="beam search ranks log-probability / length**this (0: none)")


def add_tune_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("tuning")
    g.add_argument("--tune_epochs", type=int, default=3, help="epochs per trial")
    g.add_argument("--max_tune_combinations", type=int, default=20,
                   help="finished trials the study stops at (all workers together)")
    g.add_argument("--sampler", choices=("tpe", "grid"), default="tpe")
    g.add_argument("--search_space", default=None,
                   help="YAML/JSON search space (default: the package's "
                        "bltlab/resources/search_space.yaml)")
    g.add_argument("--storage", default=None,
                   help="Optuna storage URL shared by workers (default sqlite:///"
                        "<output_dir>/tuning.db; e.g. postgresql://user:pw@host/db)")
    g.add_argument("--output_dir", default="results")
    g.add_argument("--runs_dir", default="checkpoints/tuning", help="trials' checkpoints")


def add_data_parser(sub) -> None:
    from bltlab.data import ROBUSTNESS_DIR
    from bltlab.experiments import DEFAULT_PROFILE
    from bltlab.profiles import PROFILES

    p = sub.add_parser("data", help="generate or describe reversal data")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    g = dsub.add_parser("generate", help="write train.csv and test.csv")
    g.add_argument("--out", default=None, help="default: data/broad (broad), data (seed)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--train", type=int, default=10000, help="training rows (0: none)")
    g.add_argument("--test", type=int, default=2000)
    g.add_argument("--profile", choices=tuple(PROFILES), default=DEFAULT_PROFILE,
                   help="broad: what people type; seed: the seed data's distribution")
    r = dsub.add_parser("robustness", help="write the held-out robustness sets (short, long, "
                                           "real text, unseen script, every length 1-400, "
                                           "repeats, 500 broad rows per length band)")
    r.add_argument("--out", default=str(ROBUSTNESS_DIR))
    s = dsub.add_parser("stats", help="describe a CSV")
    s.add_argument("file")
    s.add_argument("--json", action="store_true")
    s.add_argument("--skip_bad_rows", action="store_true")
    p.set_defaults(func=cmd_data)


def add_patch_parser(sub) -> None:

    p = sub.add_parser("patch", help="show how a patcher cuts text into patches")
    p.add_argument("text", nargs="?", help="a string to patch")
    p.add_argument("--file", help="a CSV whose inputs to patch")
    p.add_argument("--train_csv", default="data/train.csv",
                   help="inputs to fit the entropy model and calibrate θ on")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.add_argument("--html", help="write a coloured view with the entropy curve here")
    p.add_argument("--html_rows", type=int, default=20, help="rows in the HTML view")
    p.add_argument("--skip_bad_rows", action="store_true")
    g = p.add_argument_group("patching")
    for f in fields(PatcherConfig):
        kwargs = flag_kwargs(f)
        if f.name == "patcher":
            kwargs.update(nargs="+", default=[PatcherConfig.patcher], dest="patcher")
        g.add_argument(f"--{flag(f)}", **kwargs)
    p.set_defaults(func=cmd_patch)


def add_model_parsers(sub) -> None:
    """train, eval, infer and tune."""
    p = sub.add_parser("train", help="train a model")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="char or byte (the baselines) or blt; default: the --config file's, "
                        "else char")
    add_spec_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on a CSV")
    p.add_argument("--mode", choices=MODES, default="char")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--test_csv", default=None,
                   help="default: the test set of the checkpoint's profile (data/broad/"
                        "test.csv, or data/test.csv for the seed profile)")
    p.add_argument("--output_csv", default=None,
                   help="default predictions/predictions_baseline.csv (char), "
                        "predictions/predictions_blt.csv (blt)")
    p.add_argument("--batch_size", type=int, default=256, help="rows decoded together")
    p.add_argument("--device", default="auto")
    p.add_argument("--skip_bad_rows", action="store_true")
    p.add_argument("--no_progress", dest="progress_bars", action="store_false",
                   help="no progress bar")
    add_search_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("infer", help="reverse strings with a checkpoint: a prompt, --text, "
                                     "or lines from stdin")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="the checkpoint's mode (checked when given)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--text", default=None, help="one string: print its prediction and exit")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch_size", type=int, default=256,
                   help="lines that arrive together are decoded together, this many at most")
    add_search_args(p)
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("tune", help="tune hyperparameters with Optuna (resumable, "
                                    "several workers may share a study)")
    p.add_argument("--mode", choices=(*MODES, "all", "both"), default="all",
                   help="a family, or all of them (both: char and blt, as the seed's)")
    add_tune_args(p)
    add_spec_args(p)
    p.set_defaults(func=cmd_tune)


def add_frontier_args(p, d) -> None:
    """Where `bltlab run`'s runs train (side by side, on a cluster) and which of the
    frontier's grid points and seeds."""
    from bltlab.cluster import EXECUTORS

    p.add_argument("--workers", type=int, default=d.workers,
                   help="models (or --frontier's grid points) trained at a time, each in a "
                        "process of its own with its share of the cores (0: one per core, "
                        "at most one per model)")
    p.add_argument("--records_dir", default=d.records_dir,
                   help="--frontier: where each finished run's record is kept (history, "
                        "scores, final-set outcomes; default <output_dir>/runs): the grid "
                        "resumes from it, checkpoints gone")
    p.add_argument("--points", nargs="+", default=(),
                   help="--frontier: only these grid points (independent jobs)")
    p.add_argument("--near_front", type=float, default=d.near_front, metavar="F",
                   help="--frontier with --seeds N: seeds after the first only for the "
                        "points within F x the inference FLOPs of their family's cheapest "
                        "point passing on validation (e.g. 2); 0: every point")
    p.add_argument("--executor", choices=("local", *EXECUTORS),
                   default=d.executor, help="train the runs here (--workers at a time) or as "
                   "jobs of a SLURM cluster through submitit (submitit-local: the same jobs "
                   "on this machine); the save dir must be shared")
    p.add_argument("--slurm_partition", default=None, help="--executor slurm: the partition")
    p.add_argument("--job_minutes", type=int, default=d.job_minutes,
                   help="--executor: a job's time limit")


def add_run_parser(sub) -> None:
    from bltlab.experiments import ABLATIONS
    from bltlab.pipeline import RunOptions

    d = RunOptions()
    p = sub.add_parser("run", help="the experiment: data if missing, train, evaluate, analyse")
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_true", help="short training (the default)")
    preset.add_argument("--full", action="store_true", help="training at full length")
    preset.add_argument("--tune", action="store_true",
                        help="tune both models with Optuna first, then train them at full "
                             "length with the best parameters")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(d.modes),
                   help="the families to train and compare (default: the study's two, char "
                        "and blt; the frontier always has all three)")
    p.add_argument("--ablation", choices=tuple(ABLATIONS), default=None,
                   help="also train and evaluate the BLT in each variant of an ablation "
                        "(patchers: one BLT per patcher)")
    p.add_argument("--frontier", action="store_true",
                   help="the compute frontier of --profile: the three families over a grid "
                        "of sizes and patchings at one training-FLOP budget (--quick: the "
                        "CPU grid, --full: the GPU grid); results/frontier_<profile>.json, "
                        "results/answer.json and their plots")
    add_frontier_args(p, d)
    p.add_argument("--use_existing_tuning", action="store_true",
                   help="--tune: reuse results/hyperparameter_tuning_*.json when present")
    add_tune_args(p)
    p.add_argument("--profile", choices=("seed", "broad"), default=d.profile,
                   help="the data the models train on: broad (what people type: any "
                        "length, case, punctuation, script) or the seed's distribution")
    p.add_argument("--data_dir", default=d.data_dir,
                   help="train.csv and test.csv (generated when absent); default data/broad, "
                        "or data for --profile seed")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--skip_train", action="store_true", help="evaluate existing checkpoints")
    p.add_argument("--fresh", action="store_true",
                   help="train anew where a save dir holds a run of other settings (it is "
                        "replaced); without it such a run is refused")
    p.add_argument("--beam_width", type=int, default=1, help="evaluation: 1 greedy, else beam")
    p.add_argument("--save_dir", default=d.save_dir)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--seeds", type=int, default=d.seeds,
                   help="train and evaluate each model with N seeds (seed, seed+1, ...); the "
                        "report gives mean ± std")
    p.add_argument("--device", default=d.device)
    p.add_argument("--skip_bad_rows", action="store_true")
    p.add_argument("--no_progress", dest="progress_bars", action="store_false")
    p.set_defaults(func=cmd_run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bltlab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: all available)")
    sub = parser.add_subparsers(dest="command", required=True)
    add_data_parser(sub)
    add_patch_parser(sub)
    add_model_parsers(sub)
    p = sub.add_parser("analyze", help="statistics, plots and the report from evaluated models")
    p.add_argument("--output_dir", default="results")
    p.add_argument("--predictions_dir", default="predictions")
    p.add_argument("--checkpoints_dir", default="checkpoints")
    p.add_argument("--no_plots", action="store_true")
    p.add_argument("--dpi", type=int, default=120)
    p.set_defaults(func=cmd_analyze)
    add_run_parser(sub)
    for action in sub.choices.values():  # --threads is also taken after the subcommand
        action.add_argument("--threads", type=int, default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        from bltlab.runtime import default_threads, die_with_parent

        if os.environ.get("BLTLAB_PARENT"):  # a worker: it ends when its parent does
            die_with_parent(int(os.environ["BLTLAB_PARENT"]))
        if args.threads < 0:
            raise BltlabError(f"--threads {args.threads}: must be at least 0")
        torch.set_num_threads(args.threads or default_threads())
        return args.func(args) or 0
    except BltlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (torch.OutOfMemoryError, MemoryError) as e:
        print(f"error: out of memory ({type(e).__name__}); a smaller model, --batch_size "
              "or input, or a machine with more memory", file=sys.stderr)
        return 2
    except RuntimeError as e:
        if "can't allocate memory" not in str(e) and "not enough memory" not in str(e):
            return internal_error(e)
        print("error: out of memory (the allocator refused); a smaller model, --batch_size "
              "or input, or a machine with more memory", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except Exception as e:  # a bug: one line, and the traceback on request
        return internal_error(e)


def internal_error(e: Exception) -> int:
    """A bug: one line (exit 70), and the traceback with BLTLAB_DEBUG=1."""
    if os.environ.get("BLTLAB_DEBUG"):
        raise e
    first = str(e).splitlines()[0] if str(e) else ""
    print(f"error: internal error ({type(e).__name__}: {first}); this is a bug; "
          "BLTLAB_DEBUG=1 shows the traceback", file=sys.stderr)
    return 70


def script(command: str) -> None:
    """Entry point of the seed-compatible scripts: `python src/train.py ...` and friends.
    Training and running default to the seed's profile there (the seed's data and study);
    a `--profile` given on the command line wins."""
    seed = ["--profile", "seed"] if command in ("train", "run") else []
    sys.exit(main([command, *seed, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
