"""`bltlab analyze`: the study's results, statistics, plots and report.

Reads what training and evaluation wrote (checkpoints/history_*.json,
predictions/predictions_{baseline,blt}.csv and their metrics JSON, results/
hyperparameter_tuning_*.json when tuned) and writes:
results/comprehensive_results.json, results/experimental_report.txt,
results/report.html (one self-contained file), predictions/summary_report.txt and the
plots (predictions/training_curves.png, accuracy_analysis.png, detailed_metrics.png,
results/patching_example.png, results/hyperparameter_analysis.png when tuned).
"""

from __future__ import annotations

import base64
import contextlib
import csv
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rapidfuzz.distance import Levenshtein

from bltlab import answer as study_answer
from bltlab import paths
from bltlab.answer import n_seeds, picked
from bltlab.config import MODE_NAMES, MODES, PROFILES
from bltlab.data import ROBUSTNESS_SETS
from bltlab.errors import BltlabError
from bltlab.experiments import MATCHED, NONINFERIORITY_MARGIN, PASS_AT
from bltlab.fileio import MIB, json_text, read_bounded, read_json, write_files
from bltlab.plots import make_plots, patching_png
from bltlab.profiles import BAND_NAMES, PER_BAND
from bltlab.stats import mcnemar_exact, mean_std, paired_bootstrap, reach_and_stay, wilson_interval

PAIR = ("char", "blt")  # the models the per-row answer compares


@contextlib.contextmanager
def damaged(*files: Path):
    """Results that do not have the shape they should (a missing key, a null, a list for a
    mapping) as a one-line error naming the files they came from."""
    try:
        yield
    except (KeyError, TypeError, ValueError, IndexError, AttributeError,
            ZeroDivisionError) as e:
        names = " or ".join(map(str, files))
        raise BltlabError(f"{names}: damaged or from another bltlab ({type(e).__name__}: "
                          f"{str(e)[:80]}); evaluate or train again") from None


def read_predictions(path: Path) -> list[dict]:
    """A predictions CSV's rows (input, target, prediction)."""
    text = read_bounded(path, 512 * MIB, "predictions file")
    with damaged(path):
        rows = list(csv.DictReader(io.StringIO(text.decode("utf-8"), newline="")))
        if rows and not {"input", "target", "prediction"} <= set(rows[0]):
            raise KeyError("input, target and prediction columns")
        return rows


def load_results(predictions_dir: Path, checkpoints_dir: Path, results_dir: Path) -> dict:
    """Each model's metrics, predictions and history (models not evaluated are left out)."""
    runs = {}
    for mode in MODES:
        csv_path = paths.predictions_csv(mode, predictions_dir)
        if not csv_path.is_file() or not paths.metrics_json(csv_path).is_file():
            continue
        history = checkpoints_dir / f"history_{mode}.json"
        runs[mode] = {"metrics": read_json(paths.metrics_json(csv_path), "metrics file"),
                      "rows": read_predictions(csv_path),
                      "history": read_json(history, "training history")
                      if history.is_file() else None,
                      "files": (paths.metrics_json(csv_path), csv_path, history)}
        tuning = paths.tuning(results_dir, mode)
        if tuning.is_file():
            runs[mode]["tuning"] = read_json(tuning, "tuning results")
    if not runs and not any((results_dir / paths.frontier(p)).is_file() for p in PROFILES):
        raise BltlabError(f"{predictions_dir}: no evaluated model (run `bltlab eval` or "
                          "`bltlab run` first)")
    return runs


def load_json(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


def robustness_cell(entry: dict | None) -> str:
    """A set's exact match on its held-out rows, and how many rows training had seen."""
    if not entry or entry.get("exact_match") is None:
        return "—"
    seen = entry.get("rows_in_training", 0)
    return f"{100 * entry['exact_match']:.1f}%" + (f" ({seen} seen, left out)" if seen else "")


def robustness_rows(robustness: dict) -> list[list[str]]:
    """Exact match of each model (and training profile) on each held-out set."""
    return [[label, *(robustness_cell(sets.get(name)) for name in ROBUSTNESS_SETS)]
            for label, sets in robustness.items()]


def band_rows(robustness: dict) -> list[list[str]]:
    """Exact match [95% Wilson interval] of each model in each length band of the
    `bands` set (models evaluated before it existed are left out)."""
    rows = []
    for label, sets in robustness.items():
        bands = sets.get("bands", {}).get("by_band")
        if bands:
            rows.append([label, *(f"{100 * b['accuracy']:.2f}% [{100 * b['ci95'][0]:.1f}, "
                                  f"{100 * b['ci95'][1]:.1f}]" if b else "—"
                                  for b in (bands.get(name) for name in BAND_NAMES))])
    return rows


def pm(v: dict | None, scale: float = 1.0, fmt: str = ".2f", unit: str = "") -> str:
    """'mean ± std' of a mean_std entry (— when absent)."""
    if not v:
        return "—"
    return f"{scale * v['mean']:{fmt}}{unit} ± {scale * v['std']:{fmt}}{unit}"


FRONTIER_HEADER = ["point", "seeds", "validation exact match %",
                   "test exact match % (development)", "final-set exact match %",
                   "inference FLOPs/row", "training FLOPs to stay at 99% val", "parameters",
                   "bytes/patch"]


def frontier_rows(frontier: dict) -> list[list[str]]:
    """The frontier's table: one row per grid point, mean ± std over its seeds."""
    return [[name, len(r["seeds"]), pm(r["val_exact_match"], 100), pm(r["test_exact_match"], 100),
             pm(r["final_exact_match"], 100), pm(r["inference_flops_per_row"], 1e-6, ".1f", "M"),
             pm(r["train_flops_to_stay_0.99"], 1e-12, ".2f", "T"),
             f"{r['parameters']:,}", pm(r.get("bytes_per_patch"))]
            for name, r in frontier["table"].items()]


ANSWER_HEADER = ["family", "cheapest passing (val)", "cheapest failing", "front located",
                 *(f"inference FLOPs at {x:.1%} final [95% CI]" for x in MATCHED),
                 "training FLOPs to stay at 99% val"]


def interval(m: dict) -> str:
    if not m["point"]:
        return "not reached"
    low, high = m["ci95"]
    return (f"{mflops(m['flops'])} ({m['point']}) [{mflops(low)}, "
            f"{mflops(high) if high is not None else 'not reached'}]")


def answer_rows(profile: dict) -> list[list[str]]:
    """A profile's answer table: one row per family."""
    return [[MODE_NAMES[f], a["cheapest_passing"] or "—", a["cheapest_failing"] or "—",
             "yes" if a["located"] else "no",
             *(interval(a["flops_at_matched_accuracy"][f"{x:g}"]) for x in MATCHED),
             f"{a['train_flops_to_stay_0.99']['flops']:.3g} "
             f"({a['train_flops_to_stay_0.99']['point']})"
             if a["train_flops_to_stay_0.99"] else "—"]
            for f, a in profile["families"].items()]


README_START, README_END = "<!-- answer: start -->", "<!-- answer: end -->"
PART_NAMES = {"embeddings": "embeddings", "encoder": "encoder", "decoder": "decoder",
              "local_encoder": "local encoder", "pooling": "pooling",
              "global_transformer": "global", "local_decoder": "local decoder",
              "head": "output layer"}


def where_flops_go(profile: dict) -> str:
    """Each family's cheapest passing point's inference FLOPs per row, by part."""
    said = []
    for family, f in profile["families"].items():
        best = next((p for p in f["points"] if p["name"] == f["cheapest_passing"]), None)
        parts = (best or {}).get("inference_flops_by_part") or {}
        shown = [f"{PART_NAMES.get(k, k)} {v / 1e6:.2f}" for k, v in parts.items()
                 if k != "total" and v]
        bpp = best.get("bytes_per_patch") if best else None
        if shown:
            said.append(f"{MODE_NAMES[family]} ({best['name']}"
                        f"{f', {bpp:.2f} bytes a patch' if bpp else ''}): {', '.join(shown)}")
    return ("Where a row's inference FLOPs go, in millions, at each cheapest passing "
            "point: " + "; ".join(said) + ".") if said else ""


def readme_answer(answer: dict) -> str:
    """The README's answer, generated from answer.json: the verdict, one table (per profile
    and family: its front, its final-set accuracy there, the inference FLOPs at 99.5%
    final-set exact match with their interval, the training FLOPs), a line per profile
    (its budget and runs, where its FLOPs go), one plot."""
    lines = [README_START, "", f"**Is BLT tokenization more computationally efficient?** "
             f"{answer['verdict']}", "",
             "| profile | family | cheapest passing | cheaper, failing | its final-set exact "
             "match [95% CI] | inference FLOPs/row at 99.5% final [95% CI] | training FLOPs "
             "to stay ≥ 99% val |", "|---|---|---|---|---|---|---|"]
    notes = []
    for profile, a in answer["profiles"].items():
        for family, f in a["families"].items():
            best = next((p for p in f["points"] if p["name"] == f["cheapest_passing"]), None)
            acc = (f"{100 * best['final_exact_match']:.2f}% [{100 * best['final_ci95'][0]:.2f}, "
                   f"{100 * best['final_ci95'][1]:.2f}] ({n_seeds(len(best['seeds']))})"
                   if best and best["final_exact_match"] is not None else "—")
            train = f["train_flops_to_stay_0.99"]
            trained = f"{train['flops']:.2g} ({picked(train)})" if train else "—"
            lines.append(f"| {profile} | {MODE_NAMES[family]} | "
                         f"{f['cheapest_passing'] or 'none'} | {f['cheapest_failing'] or 'none'} | "
                         f"{acc} | "
                         f"{interval(f['flops_at_matched_accuracy']['0.995'])} | {trained} |")
        hours = (f"; {a['runs']} runs, {a['run_hours']:.1f} h of training and evaluation "
                 "at one thread a run" if a.get("run_hours") else "")
        seen = a.get("final_rows_in_training") or [0]
        if max(seen):
            hours += (f"; {min(seen)}–{max(seen)} final-set rows of a run's training stream "
                      "left out of its score")
        notes += ["", f"*{profile.capitalize()} profile*: budget "
                  f"{a['budget_train_flops']:.2g} training FLOPs a run; passing: ≥ 99.5% "
                  f"validation exact match, mean of the seeds{hours}. {where_flops_go(a)}"]
    lines += [*notes, "", "![accuracy against inference FLOPs per row](docs/results/answer.png)",
              "", README_END]
    return "\n".join(lines)


def row_cer(row: dict) -> float:
    return Levenshtein.distance(row["prediction"], row["target"]) / max(1, len(row["target"]))


def comparison(runs: dict) -> dict | None:
    """Paired statistics of BLT vs the char baseline on the same test rows."""
    if not all(m in runs for m in PAIR):
        return None
    a, b = runs["blt"]["rows"], runs["char"]["rows"]
    if [r["input"] for r in a] != [r["input"] for r in b]:
        raise BltlabError("the two predictions files do not hold the same test rows")
    scored = [r.get("in_training") != "True" and s.get("in_training") != "True"
              for r, s in zip(a, b)]  # rows held out from both models' training
    a, b = [r for r, k in zip(a, scored) if k], [r for r, k in zip(b, scored) if k]
    exact_a = [r["prediction"] == r["target"] for r in a]
    exact_b = [r["prediction"] == r["target"] for r in b]
    return {
        "rows": len(a),
        "mcnemar_exact": mcnemar_exact(exact_a, exact_b),
        "exact_match_difference_blt_minus_char": paired_bootstrap(exact_a, exact_b),
        "cer_difference_blt_minus_char": paired_bootstrap([row_cer(r) for r in a],
                                                          [row_cer(r) for r in b]),
    }


def model_summary(mode: str, run: dict) -> dict:
    m = run["metrics"]
    n, correct = m["total_samples"], m["total_correct"]
    inputs = [r["input"] for r in run["rows"]]
    if len(inputs) != n + m.get("rows_in_training", 0):
        raise ValueError(f"{len(inputs)} prediction rows for {n} scored")
    out = {
        "exact_match": m["exact_match_accuracy"],
        "exact_match_wilson_95": wilson_interval(correct, n),
        "character_accuracy": m["character_accuracy"],
        "one_minus_cer": m["one_minus_cer"],
        "avg_edit_distance": m["avg_edit_distance"],
        "non_ascii": m["non_ascii"],
        "accuracy_by_length": m["accuracy_by_length"],
        "sequence_positions_per_row": (m["avg_patches_per_row"] if mode == "blt"
                                       else float(np.mean([len(x) for x in inputs]))),
        "forward_flops_per_row": m.get("forward_flops_per_row"),
        "inference_flops_per_row": m.get("inference_flops_per_row"),
        "decode_rows_per_s": m.get("decode_rows_per_s"),
        "parameters": m.get("parameters"),
        "checkpoint": m.get("checkpoint"),
    }
    if mode == "blt":
        out.update({k: m[k] for k in ("avg_bytes_per_row", "avg_patches_per_row",
                                      "bytes_per_patch", "patcher") if k in m})
    hist = run["history"]
    if hist and hist["epochs"]:  # a run with no epoch finished has no curve yet
        epochs = hist["epochs"]
        out["training"] = {
            "epochs": len(epochs), "best_epoch": hist["best"]["epoch"],
            "seconds": round(sum(e["epoch_seconds"] for e in epochs), 1),
            "samples_per_s": round(float(np.median([e["samples_per_s"] for e in epochs])), 1),
            "train_flops": epochs[-1].get("train_flops"), "spec": hist["spec"]}
        out["curve"] = [{k: e.get(k) for k in ("epoch", "train_flops", "val_exact_match")}
                        for e in epochs]
    return out


def seed_spread(results_dir: Path) -> dict | None:
    """Mean and standard deviation over seeds of each headline number (`run --seeds N`)."""
    runs_by_mode = load_json(results_dir / paths.SEEDS)
    if runs_by_mode is None:
        return None
    with damaged(results_dir / paths.SEEDS):
        return {mode: {"seeds": [r["seed"] for r in runs],
                       **{k: mean_std([r[k] for r in runs]) for k in runs[0] if k != "seed"}}
                for mode, runs in runs_by_mode.items()}


def mflops(x: float) -> str:
    return f"{x / 1e6:.1f}M"


def more_or_fewer(a: float, b: float) -> str:
    return "fewer" if a < b else "more" if a > b else "as many"


def per_row_findings(models: dict, comp: dict | None) -> tuple[list[str], dict]:
    """Sentences on the two evaluated models' per-row cost, accuracy and training
    compute, and what they say (cheaper to run, as accurate, cheaper to train)."""
    c, b = models["char"], models["blt"]
    lines = [f"Sequence length: the baseline's encoder runs over "
             f"{c['sequence_positions_per_row']:.1f} character positions per row, the BLT's "
             f"global transformer over {b['sequence_positions_per_row']:.1f} patches "
             f"({b.get('bytes_per_patch', 0):.2f} bytes/patch)."]
    verdict: dict = {}
    for kind, what in (("forward", "a teacher-forced forward pass"),
                       ("inference", "cached greedy decoding of one row")):
        fc, fb = (m.get(f"{kind}_flops_per_row") for m in (c, b))
        if fc and fb:
            lines.append(f"FLOPs per row on real positions, {what}: BLT {mflops(fb['total'])}"
                         f" vs baseline {mflops(fc['total'])} ({fb['total'] / fc['total']:.2f}x).")
            verdict[f"{kind}_cheaper"] = fb["total"] < fc["total"]
    p = comp["mcnemar_exact"]["p_value"] if comp else None
    lines.append(f"Exact match: BLT {100 * b['exact_match']:.2f}% vs baseline "
                 f"{100 * c['exact_match']:.2f}%" + (f" (McNemar p = {p:.3g})" if p else "") + ".")
    if comp:  # non-inferiority at the stated margin: the interval's lower end above -margin
        low = comp["exact_match_difference_blt_minus_char"]["ci_low"]
        verdict["as_accurate"] = low > -NONINFERIORITY_MARGIN
        lines.append(f"BLT minus baseline exact match, 95% lower bound {100 * low:+.2f} points: "
                     f"{'non-inferior' if verdict['as_accurate'] else 'not shown non-inferior'}"
                     f" at a {100 * NONINFERIORITY_MARGIN:g}-point margin.")
    reach = {m: reach_and_stay(models[m].get("curve") or [], 0.99) for m in PAIR}
    if all(reach.values()):
        lines.append(f"Training FLOPs to reach and stay at 99% validation exact match: BLT "
                     f"{reach['blt']:.3g} vs "
                     f"baseline {reach['char']:.3g} ({reach['blt'] / reach['char']:.2f}x).")
        verdict["train_cheaper"] = reach["blt"] < reach["char"]
    return lines, verdict


def seeds(entry: dict) -> str:
    n = entry.get("seeds", 1)
    return f"mean of {n_seeds(n)}" if n > 1 else n_seeds(n)


def verdict_text(v: dict) -> str:
    """The per-row answer of two evaluated models, assembled only from their comparisons;
    'as accurate' needs the BLT non-inferior at the stated margin, not a large p-value."""
    run = next((v[k] for k in ("inference_cheaper", "forward_cheaper") if k in v), None)
    train = v.get("train_cheaper")
    if run is None:
        return "Not enough measurements to answer."
    accurate = v.get("as_accurate", False)
    parts = [f"to run, the BLT needs {'fewer' if run else 'more'} FLOPs per reversed string "
             "than the character baseline" + ("" if accurate else
                                              " but is not shown as accurate")]
    if train is not None:
        parts.append(f"to train to 99% validation exact match and stay there it needs "
                     f"{'fewer' if train else 'more'} FLOPs")
    word = "Yes" if run and train is not False and accurate else \
        "No" if not run and train is not True else "Partly"
    return f"{word}: " + "; ".join(parts) + "."


def efficiency_answer(models: dict, comp: dict | None, answer: dict | None = None) -> str:
    """'Is BLT tokenization more computationally efficient?', answered from the numbers:
    the compute frontiers' answer when measured, and the evaluated models' per-row costs."""
    lines, verdict = [], {}
    if all(m in models for m in PAIR):
        lines, verdict = per_row_findings(models, comp)
    if answer:
        head = " ".join(lines) + "\n\n" if lines else ""
        return f"{head}Answer (compute frontiers, bltlab.answer): {answer['verdict']}"
    if not lines:
        return "Both models must be evaluated (or the frontier measured) to answer."
    return " ".join(lines) + "\n\nAnswer: " + verdict_text(verdict)


def blt_patches(blt_checkpoint: str | None, texts: list[str]):
    """The BLT checkpoint's segmentation of `texts`, the per-byte entropy its patcher
    used (None for rules without one) and the threshold to draw (None if per-row);
    None without a checkpoint."""
    if not isinstance(blt_checkpoint, str) or not Path(blt_checkpoint).is_file():
        return None
    from bltlab.checkpoint import load_model

    _, codec, _ = load_model(blt_checkpoint, "blt")
    seg = codec.segment(texts)
    return seg, codec.patcher.entropy(seg.batch), codec.patcher.threshold_level()


def patch_view(patches) -> str:
    """HTML rows of the BLT's patches (coloured) with the entropy curve."""
    if patches is None:
        return ""
    from bltlab.patchview import row_html

    seg, entropy, level = patches
    return "".join(row_html(seg, r, entropy, level) for r in range(len(seg.batch)))


def table(rows: list[list], header: list[str]) -> str:
    cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def headline_rows(models: dict) -> list[list]:
    rows = []
    for mode, m in models.items():
        lo, hi = m["exact_match_wilson_95"]
        rows.append([MODE_NAMES[mode],
                     f"{100 * m['exact_match']:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}]",
                     f"{100 * m['character_accuracy']:.2f}%", f"{100 * m['one_minus_cer']:.2f}%",
                     f"{m['avg_edit_distance']:.4f}",
                     f"{100 * (m['non_ascii']['accuracy'] or 0):.1f}% of {m['non_ascii']['count']}",
                     f"{m['sequence_positions_per_row']:.1f}",
                     f"{(m.get('forward_flops_per_row') or {}).get('total', 0) / 1e6:.1f}M",
                     f"{(m.get('inference_flops_per_row') or {}).get('total', 0) / 1e6:.1f}M"])
    return rows


HEADER = ["model", "exact match [Wilson 95%]", "char. accuracy", "1 - CER", "avg edit dist.",
          "non-ASCII rows", "positions/row", "forward FLOPs/row", "inference FLOPs/row"]


def paired_rows(comp: dict) -> list[list[str]]:
    """The paired statistics as (test, value, interval / p) rows."""
    mc, em, ce = (comp["mcnemar_exact"], comp["exact_match_difference_blt_minus_char"],
                  comp["cer_difference_blt_minus_char"])
    return [["McNemar exact test", f"only BLT right {mc['only_a_correct']}, only baseline "
                                   f"right {mc['only_b_correct']}", f"p = {mc['p_value']:.4g}"],
            ["exact match, BLT - baseline", f"{100 * em['mean_difference']:+.2f} points",
             f"95% bootstrap CI [{100 * em['ci_low']:+.2f}, {100 * em['ci_high']:+.2f}]"],
            ["CER, BLT - baseline", f"{100 * ce['mean_difference']:+.3f} points",
             f"95% CI [{100 * ce['ci_low']:+.3f}, {100 * ce['ci_high']:+.3f}]"]]


@dataclass
class Section:
    """One part of the report: a table (`header` and `rows`) and/or paragraphs."""

    title: str
    header: list[str] = field(default_factory=list)
    rows: list[list] = field(default_factory=list)
    paragraphs: list[str] = field(default_factory=list)


def sections(results: dict) -> list[Section]:
    """The report's parts, in order; the text and the HTML report render the same list."""
    out = [Section("Results", HEADER, headline_rows(results["models"]))]
    if comp := results["comparison"]:
        out.append(Section(f"Paired statistics on {comp['rows']} rows",
                           ["test", "value", "interval / p"], paired_rows(comp)))
    for mode, spread in (results.get("seeds") or {}).items():
        out.append(Section(f"{MODE_NAMES[mode]} over seeds {spread['seeds']}",
                           ["metric", "mean ± std", "seeds"],
                           [[k, f"{v['mean']:.4f} ± {v['std']:.4f}", v["n"]]
                            for k, v in spread.items() if k != "seeds" and v is not None]))
    for profile, f in (results.get("frontiers") or {}).items():
        out.append(Section(f"Compute frontier, {profile} profile ({f['preset']}): every run "
                           f"{f['budget_train_flops']:.3g} training FLOPs, same data, "
                           f"learning rates {f.get('learning_rates')}, test set "
                           f"{f['test_csv']} (mean ± std over seeds)", FRONTIER_HEADER,
                           frontier_rows(f)))
    for profile, a in ((results.get("answer") or {}).get("profiles") or {}).items():
        out.append(Section(f"The answer, {profile} profile: fronts (passing: validation exact "
                           f"match ≥ {PASS_AT:.1%}) and inference FLOPs per row at matched "
                           "final-set accuracy", ANSWER_HEADER, answer_rows(a)))
    if robustness := results.get("robustness"):
        out.append(Section("Robustness sets (development sets: the broad profile's choices "
                           "were read from them, log rounds 6-11): exact match on the rows "
                           "that never occur in the model's training stream",
                           ["model (training profile)", *ROBUSTNESS_SETS],
                           robustness_rows(robustness)))
        if bands := band_rows(robustness):
            out.append(Section(f"Exact match per input length band (characters) on the bands "
                               f"set: {PER_BAND} unseen broad-profile rows per band [95% "
                               "Wilson interval]", ["model (training profile)", *BAND_NAMES],
                               bands))
    out.append(Section("Is BLT tokenization more computationally efficient?",
                       paragraphs=results["efficiency"].split("\n\n")))
    for mode, m in results["models"].items():
        if tr := m.get("training"):
            out.append(Section(f"{MODE_NAMES[mode]}: hyperparameters", ["name", "value"],
                               [[f"{section}.{k}", json.dumps(v, ensure_ascii=False)]
                                for section, values in tr["spec"].items()
                                if isinstance(values, dict) for k, v in values.items()]))
    return out


def text_report(results: dict) -> str:
    lines = ["bltlab experimental report", "=" * 26]
    for sec in sections(results):
        lines += ["", sec.title]
        lines += ["  " + "  ".join(f"{h}: {c}" for h, c in zip(sec.header, row))
                  for row in sec.rows]
        lines += sec.paragraphs
    return "\n".join(lines) + "\n"


def html_report(results: dict, plots: dict[str, Path], patches: str) -> str:
    """The same sections as the text report, then the plots and the BLT's patches (the
    hyperparameters last)."""
    from bltlab.patchview import page

    parts = []
    for sec in sections(results):
        body = (table(sec.rows, sec.header) if sec.header else "") + "".join(
            f"<p>{html.escape(p)}</p>" for p in sec.paragraphs)
        parts.append((sec.title, body))
    last = [i for i, (title, _) in enumerate(parts) if title.endswith("hyperparameters")]
    extra = [(name.replace("_", " "), f'<img alt="{html.escape(name)}" src="data:image/png;'
                                      f'base64,{base64.b64encode(path.read_bytes()).decode()}">')
             for name, path in plots.items()]
    if patches:
        extra.append(("How the BLT patches test rows (entropy per byte below)", patches))
    at = last[0] if last else len(parts)
    return page("bltlab report", parts[:at] + extra + parts[at:])


def gather(results_dir: Path, predictions_dir: Path, checkpoints_dir: Path) -> tuple:
    """Every result the report reads, checked: (runs, results); a damaged file is a
    one-line error naming it."""
    runs = load_results(predictions_dir, checkpoints_dir, results_dir)
    models = {}
    for mode, run in runs.items():
        with damaged(*run["files"]):
            models[mode] = model_summary(mode, run)
    with damaged(*(runs[m]["files"][1] for m in runs)):
        comp = comparison(runs)
    files = {name: results_dir / name for name in (*map(paths.frontier, PROFILES),
                                                    paths.ROBUSTNESS)}
    loaded = {name: load_json(path) for name, path in files.items()}
    for name, value in loaded.items():
        if value is not None and not isinstance(value, dict):
            raise BltlabError(f"{files[name]}: damaged (not a mapping); run it again")
    frontiers = {p: loaded[paths.frontier(p)] for p in PROFILES if loaded[paths.frontier(p)]}
    results = {"models": models, "comparison": comp, "frontiers": frontiers,
               "robustness": loaded[paths.ROBUSTNESS], "seeds": seed_spread(results_dir),
               "ablation": load_json(paths.ablation(results_dir, "patchers")),
               "tuning": {m: r["tuning"] for m, r in runs.items() if r.get("tuning")}}
    inputs = [*(f for run in runs.values() for f in run["files"]),
              *(path for path in files.values() if path.is_file())]
    with damaged(*inputs):  # the summaries and the answer read them all
        results["answer"] = study_answer.build(results_dir) if frontiers else None
        results["efficiency"] = efficiency_answer(models, comp, results["answer"])
        text_report(results)  # every section renders
    return runs, results


def analyze(output_dir: str | Path = "results", predictions_dir: str | Path = "predictions",
            checkpoints_dir: str | Path = "checkpoints", plots: bool = True,
            dpi: int = 120) -> dict:
    """Write the report files (together: all or none); returns the comprehensive results."""
    results_dir, predictions_dir = Path(output_dir), Path(predictions_dir)
    runs, results = gather(results_dir, predictions_dir, Path(checkpoints_dir))
    report = text_report(results)
    with damaged(*(results_dir / paths.frontier(p) for p in PROFILES),
                 results_dir / paths.ROBUSTNESS):
        made = make_plots(runs, results, predictions_dir, results_dir, dpi) if plots else {}
    shown = runs.get("blt", runs.get("char", {"rows": []}))["rows"][:8]
    patches = blt_patches(results["models"].get("blt", {}).get("checkpoint"),
                          sorted((r["input"] for r in shown), key=len))
    if plots and patches is not None:
        made["patching_example"] = patching_png(patches, results_dir / "patching_example.png",
                                                dpi)
    page = html_report(results, made, patch_view(patches))
    answer = {results_dir / paths.ANSWER: lambda f: f.write(json_text(results["answer"]))}
    write_files({**(answer if results["answer"] else {}),
                 results_dir / paths.COMPREHENSIVE: lambda f: f.write(json_text(results)),
                 results_dir / paths.REPORT_TXT: lambda f: f.write(report),
                 predictions_dir / paths.SUMMARY_TXT: lambda f: f.write(report),
                 results_dir / paths.REPORT_HTML: lambda f: f.write(page)})
    print(report)
    print(f"wrote {results_dir}/comprehensive_results.json, experimental_report.txt, "
          f"report.html" + (f" and {len(made)} plots" if made else ""))
    return results
