"""The `bltlab` command line: data, train, eval, run. The seed's scripts call into it."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

import torch

from bltlab.errors import BltlabError
from bltlab.layers import POS_ENCODINGS
from bltlab.training import TrainConfig, default_threads


def _bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Model flags; unset ones take the chosen mode's defaults (ModelConfig, BLTConfig)."""
    g = p.add_argument_group("model (defaults depend on --mode)")
    g.add_argument("--d_model", type=int, help="width (64)")
    g.add_argument("--nhead", type=int, help="attention heads (4)")
    g.add_argument("--num_encoder_layers", type=int, help="char: encoder blocks (2)")
    g.add_argument("--num_decoder_layers", type=int, help="decoder blocks (char 2, blt 1)")
    g.add_argument("--dim_feedforward", type=int, help="feed-forward width (256)")
    g.add_argument("--dropout", type=float, help="dropout (0)")
    g.add_argument("--max_len", type=int, help="longest sequence in tokens, EOS included (512)")
    g.add_argument("--pos_encoding", choices=POS_ENCODINGS, help="position signal (rope)")
    g.add_argument("--from_end", type=_bool,
                   help="add a distance-to-end position signal (true/false; true)")
    g.add_argument("--num_local_layers", type=int, help="blt: local encoder blocks (1)")
    g.add_argument("--num_global_layers", type=int, help="blt: global transformer blocks (2)")
    g.add_argument("--global_factor", type=int,
                   help="blt: the global transformer is k times as wide as d_model and each "
                        "patch reaches the decoder as k vectors (2)")
    g.add_argument("--pooling", choices=("project", "cross"),
                   help="blt: bytes to patches by in-patch position slots + linear map "
                        "(project) or k cross-attention queries per patch (cross)")
    g.add_argument("--slots", type=int, help="blt, cross pooling: queries per patch (2)")
    g.add_argument("--ngram_buckets", type=int, help="blt: hash buckets per n (4096)")
    g.add_argument("--ngram_sizes", type=int, nargs="+", help="blt: n-gram sizes (1 2 3)")
    g.add_argument("--ngram_init_std", type=float,
                   help="blt: initial std of the n-gram tables (0, the default: zeros)")
    g.add_argument("--decoder_memory", choices=("patches", "bytes"),
                   help="blt: the decoder attends to patch states (default) or, as an "
                        "ablation, to byte states upsampled from them")
    g.add_argument("--relative_values", type=_bool,
                   help="blt with rope: decoder cross-attention also returns how far the "
                        "step is past each attended patch's end (true/false; true)")


def add_train_args(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    g = p.add_argument_group("training")
    g.add_argument("--train_csv", default=d.train_csv)
    g.add_argument("--save_dir", default=d.save_dir)
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--batch_size", type=int, default=d.batch_size)
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--weight_decay", type=float, default=d.weight_decay)
    g.add_argument("--optimizer", choices=("adamw", "adam", "sgd"), default=d.optimizer)
    g.add_argument("--lr_scheduler", choices=("cosine", "step", "constant", "plateau"),
                   default=d.lr_scheduler,
                   help="after warmup: cosine to 0, halve each quarter (step), constant, or "
                        "constant with cuts when validation stalls (plateau)")
    g.add_argument("--warmup_steps", type=int, default=d.warmup_steps)
    g.add_argument("--plateau_patience", type=int, default=d.plateau_patience,
                   help="plateau: epochs without improvement before each lr cut")
    g.add_argument("--plateau_factor", type=float, default=d.plateau_factor)
    g.add_argument("--grad_clip", type=float, default=d.grad_clip)
    g.add_argument("--grad_accum_steps", type=int, default=d.grad_accum_steps,
                   help="micro-batches per optimiser step (effective batch: batch_size x N)")
    g.add_argument("--val_fraction", type=float, default=d.val_fraction)
    g.add_argument("--early_stopping_patience", type=int, default=d.early_stopping_patience,
                   help="stop after N epochs without a better validation score (0: off)")
    g.add_argument("--early_stopping_metric", choices=("exact_match", "loss"),
                   default=d.early_stopping_metric,
                   help="the validation score for early stopping, plateau and the best "
                        "checkpoint")
    g.add_argument("--use_amp", action="store_true", help="autocast on (same as --amp on)")
    g.add_argument("--amp", choices=("auto", "on", "off"), default=d.amp,
                   help="mixed precision: bf16 autocast (fp16 + loss scaling on GPUs "
                        "without bf16); auto: on for CUDA, off on CPU")
    g.add_argument("--compile", action="store_true", help="torch.compile the model for training")
    g.add_argument("--save_every_steps", type=int, default=d.save_every_steps,
                   help="also write the latest checkpoint every N steps (0: epoch ends only)")
    g.add_argument("--no_tensorboard", dest="tensorboard", action="store_false",
                   help="no TensorBoard event files")
    g.add_argument("--num_workers", type=int, default=d.num_workers)
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N")
    g.add_argument("--fresh_pairs", action="store_true",
                   help="each epoch, train on as many newly generated rows (reversal data "
                        "of the generator's distribution) instead of the training rows")
    g.add_argument("--fresh_non_ascii", type=float, default=d.fresh_non_ascii,
                   help="with --fresh_pairs: share of rows given one word with non-ASCII "
                        "characters (the data's own rate is about 0.01)")
    g.add_argument("--resume", nargs="?", const="latest", default=d.resume,
                   help="continue from the save dir's latest checkpoint (or from PATH); by "
                        "default (auto) a run continues when --save_dir holds the latest "
                        "checkpoint of the same configuration and data")
    g.add_argument("--fresh", dest="resume", action="store_const", const="never",
                   help="start a new run even if --save_dir holds one to continue")


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all available)")
    p.add_argument("--skip_bad_rows", action="store_true",
                   help="skip and count bad CSV rows instead of stopping at the first")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")


def pick(cls, args: argparse.Namespace, **override):
    """Build a dataclass config from the parsed arguments that match its fields and
    were given (None means: the dataclass default)."""
    values = {f.name: getattr(args, f.name) for f in fields(cls)
              if getattr(args, f.name, None) is not None}
    return cls(**{**values, **override})


def cmd_data(args: argparse.Namespace) -> None:
    from bltlab import data

    if args.data_cmd == "generate":
        train, test = data.generate(args.out, args.seed, args.train, args.test)
        print(f"wrote {train} ({args.train} rows) and {test} ({args.test} rows), seed {args.seed}")
    else:
        s = data.stats(data.load_pairs(args.file, skip_bad_rows=args.skip_bad_rows))
        print(json.dumps(s, indent=2, ensure_ascii=False) if args.json else data.format_stats(s))


def cmd_train(args: argparse.Namespace) -> dict:
    from bltlab.models import CONFIGS
    from bltlab.patching import PatcherConfig
    from bltlab.training import train

    cfg = pick(TrainConfig, args, progress=not args.no_progress)
    if args.threshold is not None and args.target_bpp is None:
        cfg.target_bpp = None  # an explicit θ (e.g. the seed's 2.0) is kept as given
    patcher = pick(PatcherConfig, args) if args.mode == "blt" else None
    return train(args.mode, pick(CONFIGS[args.mode], args), cfg, patcher)


def cmd_eval(args: argparse.Namespace) -> dict:
    from bltlab.evaluation import default_output_csv, evaluate, format_metrics, metrics_path
    from bltlab.training import load_model, pick_device

    device = pick_device(args.device)
    model, codec, _ = load_model(args.checkpoint, args.mode, device)
    out = args.output_csv or default_output_csv(args.mode)
    check_search(args)
    metrics = evaluate(model, codec, args.test_csv, out, args.batch_size, device,
                       args.skip_bad_rows, args.beam_width, args.length_penalty,
                       extra={"mode": args.mode, "checkpoint": str(args.checkpoint)})
    print(format_metrics(metrics))
    print(f"wrote {out} and {metrics_path(out)}")
    return metrics


def check_search(args: argparse.Namespace) -> None:
    if args.beam_width < 1:
        raise BltlabError(f"--beam_width {args.beam_width}: must be at least 1")


def cmd_infer(args: argparse.Namespace) -> None:
    from bltlab.infer import Predictor, interactive, stream
    from bltlab.training import load_model, pick_device

    check_search(args)
    device = pick_device(args.device)
    model, codec, _ = load_model(args.checkpoint, args.mode, device)
    predictor = Predictor(model, codec, args.beam_width, args.length_penalty, device)
    if args.text is not None:
        predictor.describe(args.text, sys.stdout)
    elif not sys.stdin.isatty():
        stream(predictor, sys.stdin, sys.stdout)
    else:
        interactive(predictor)


def add_search_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--beam_width", type=int, default=1, help="1: greedy decoding")
    p.add_argument("--length_penalty", type=float, default=1.0,
                   help="beam search ranks log-probability / length**this (0: none)")


def add_patcher_args(p: argparse.ArgumentParser, multiple: bool = False) -> None:
    from bltlab.patching import PATCHERS, PatcherConfig

    d = PatcherConfig()
    g = p.add_argument_group("patching")
    if multiple:
        g.add_argument("--patcher", choices=PATCHERS, nargs="+", default=[d.patcher])
    else:
        g.add_argument("--patcher", choices=PATCHERS, default=d.patcher)
    g.add_argument("--W", dest="window", type=int, default=d.window,
                   help="window-entropy: window size in bytes")
    g.add_argument("--entropy_threshold", dest="threshold", type=float, default=None,
                   help=f"entropy patchers: threshold θ in bits ({d.threshold}); given, "
                        "it is used as it is (no calibration)")
    g.add_argument("--max_patch_len", type=int, default=d.max_patch_len,
                   help="cut patches longer than this (0: no limit)")
    g.add_argument("--entropy_mode", choices=("global", "monotonic"),
                   default=d.entropy_mode, help="entropy-model: H_t > θ or H_t - H_t-1 > θ")
    g.add_argument("--context", type=int, default=d.context,
                   help="entropy-model: bytes of context of the byte language model")
    g.add_argument("--static_size", type=int, default=d.static_size)
    g.add_argument("--target_bpp", type=float, default=None,
                   help="calibrate θ to this mean bytes/patch on the training inputs "
                        "(train --mode blt: 4.05 unless --entropy_threshold is given)")


def cmd_patch(args: argparse.Namespace) -> None:
    from bltlab import patchview
    from bltlab.data import load_pairs
    from bltlab.fileio import write_atomic
    from bltlab.patching import PatcherConfig, build_patcher

    if (args.text is None) == (args.file is None):
        raise BltlabError("give either a TEXT to patch or --file CSV")
    texts = [args.text] if args.text is not None else load_pairs(
        args.file, skip_bad_rows=args.skip_bad_rows).inputs
    needs_train = args.target_bpp is not None or "entropy-model" in args.patcher
    train = load_pairs(args.train_csv).inputs if needs_train else None
    results, sections = {}, []
    for name in args.patcher:
        cfg = pick(PatcherConfig, args, patcher=name)
        patcher = build_patcher(cfg, train, args.target_bpp if name in (
            "window-entropy", "entropy-model") else None)
        seg = patcher.segment(texts)
        label = patcher.cfg.describe()
        results[label] = {**patchview.stats(seg), "config": patcher.cfg.to_dict()}
        if not args.json:
            if args.text is not None:
                print(f"{label}\n  {patchview.bracketed(seg, 0)}  "
                      f"({len(seg.row_patches(0))} patches, {seg.bytes_per_patch():.2f} B/patch)")
            else:
                print(patchview.format_stats(label, results[label]))
        if args.html:
            entropy = patcher.entropy(seg.batch)
            shown = range(min(len(texts), args.html_rows))
            # the threshold is a level of H only for the global rules
            level = (patcher.cfg.threshold if entropy is not None
                     and not (name == "entropy-model" and patcher.cfg.entropy_mode == "monotonic")
                     else None)
            sections.append((label, "".join(patchview.row_html(seg, r, entropy, level)
                                            for r in shown)))
    if args.json:
        only = next(iter(results.values())) if len(results) == 1 else results
        print(json.dumps(only, indent=2, ensure_ascii=False))
    if args.html:
        write_atomic(args.html, lambda f: f.write(patchview.page("bltlab patches", sections)))
        print(f"wrote {args.html}", file=sys.stderr if args.json else sys.stdout)


def cmd_tune(args: argparse.Namespace) -> None:
    from bltlab.tuning import tune

    base = pick(TrainConfig, args, progress=False)
    for mode in ("char", "blt") if args.mode == "both" else (args.mode,):
        result = tune(mode, base, args.tune_epochs, args.max_tune_combinations, args.sampler,
                      args.search_space, args.storage, args.output_dir, args.runs_dir)
        print(f"{mode}: {result['finished_trials']} finished trials, best validation exact "
              f"match {result['best_value']} with {result['best_params']}")


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


def cmd_analyze(args: argparse.Namespace) -> None:
    from bltlab.report import analyze

    analyze(args.output_dir, args.predictions_dir, args.checkpoints_dir, not args.no_plots,
            args.dpi)


def cmd_run(args: argparse.Namespace) -> None:
    from bltlab.pipeline import run

    run(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bltlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("data", help="generate or describe reversal data")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    g = dsub.add_parser("generate", help="write train.csv and test.csv")
    g.add_argument("--out", default="data")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--train", type=int, default=10000)
    g.add_argument("--test", type=int, default=2000)
    s = dsub.add_parser("stats", help="describe a CSV")
    s.add_argument("file")
    s.add_argument("--json", action="store_true")
    s.add_argument("--skip_bad_rows", action="store_true")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("patch", help="show how a patcher cuts text into patches")
    p.add_argument("text", nargs="?", help="a string to patch")
    p.add_argument("--file", help="a CSV whose inputs to patch")
    p.add_argument("--train_csv", default="data/train.csv",
                   help="inputs to fit the entropy model and calibrate θ on")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.add_argument("--html", help="write a coloured view with the entropy curve here")
    p.add_argument("--html_rows", type=int, default=20, help="rows in the HTML view")
    p.add_argument("--skip_bad_rows", action="store_true")
    add_patcher_args(p, multiple=True)
    p.set_defaults(func=cmd_patch)

    p = sub.add_parser("train", help="train a model")
    p.add_argument("--mode", choices=("char", "blt"), default="char")
    add_model_args(p)
    add_train_args(p)
    add_patcher_args(p)
    add_common_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on a CSV")
    p.add_argument("--mode", choices=("char", "blt"), default="char")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--test_csv", default="data/test.csv")
    p.add_argument("--output_csv", default=None,
                   help="default predictions/predictions_baseline.csv (char), "
                        "predictions/predictions_blt.csv (blt)")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--device", default="auto")
    add_search_args(p)
    add_common_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("infer", help="reverse strings with a checkpoint: a prompt, --text, "
                                     "or lines from stdin")
    p.add_argument("--mode", choices=("char", "blt"), default=None,
                   help="the checkpoint's mode (checked when given)")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--text", default=None, help="one string: print its prediction and exit")
    p.add_argument("--device", default="auto")
    add_search_args(p)
    add_common_args(p)
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser("tune", help="tune hyperparameters with Optuna (resumable, "
                                    "several workers may share a study)")
    p.add_argument("--mode", choices=("char", "blt", "both"), default="both")
    add_tune_args(p)
    add_train_args(p)
    add_common_args(p)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("analyze", help="statistics, plots and the report from evaluated models")
    p.add_argument("--output_dir", default="results")
    p.add_argument("--predictions_dir", default="predictions")
    p.add_argument("--checkpoints_dir", default="checkpoints")
    p.add_argument("--no_plots", action="store_true")
    p.add_argument("--dpi", type=int, default=120)
    add_common_args(p)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("run", help="the experiment: data if missing, train, evaluate")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="short training (the default)")
    mode.add_argument("--full", action="store_true", help="training at full length")
    mode.add_argument("--tune", action="store_true",
                      help="tune both models with Optuna first, then train them at full "
                           "length with the best parameters")
    p.add_argument("--ablation", choices=("patchers",), default=None,
                   help="also train and evaluate the BLT with each patcher (window-entropy "
                        "at the seed's θ=2.0 and at ≈4 bytes/patch, entropy-model global and "
                        "monotonic, space, static-4)")
    p.add_argument("--use_existing_tuning", action="store_true",
                   help="--tune: reuse results/hyperparameter_tuning_*.json when present")
    add_tune_args(p)
    p.add_argument("--data_dir", default="data")
    p.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    p.add_argument("--batch_size", type=int, default=None)
    p.add_argument("--skip_train", action="store_true", help="evaluate existing checkpoints")
    p.add_argument("--beam_width", type=int, default=1, help="evaluation: 1 greedy, else beam")
    p.add_argument("--save_dir", default="checkpoints")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=1,
                   help="train and evaluate each model with N seeds (seed, seed+1, ...); the "
                        "report gives mean ± std")
    p.add_argument("--device", default="auto")
    add_common_args(p)
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads or default_threads() if hasattr(args, "threads")
                          else default_threads())
    try:
        args.func(args)
    except BltlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    return 0


def script(command: str) -> None:
    """Entry point of the seed-compatible scripts: `python src/train.py ...` and friends."""
    sys.exit(main([command, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
