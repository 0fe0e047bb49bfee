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
import csv
import html
import json
from pathlib import Path

import numpy as np
from rapidfuzz.distance import Levenshtein

from bltlab.errors import BltlabError
from bltlab.evaluation import default_output_csv, metrics_path
from bltlab.fileio import atomic_path, write_atomic, write_json
from bltlab.stats import mcnemar_exact, paired_bootstrap, wilson_interval

MODES = ("char", "blt")
NAMES = {"char": "char baseline", "blt": "BLT"}


def read_predictions(path: Path) -> list[dict]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    except OSError as e:
        raise BltlabError(f"{path}: cannot read predictions ({e.strerror})") from None


def load_results(predictions_dir: Path, checkpoints_dir: Path, results_dir: Path) -> dict:
    """Each model's metrics, predictions and history (models not evaluated are left out)."""
    runs = {}
    for mode in MODES:
        csv_path = predictions_dir / Path(default_output_csv(mode)).name
        if not csv_path.is_file() or not metrics_path(csv_path).is_file():
            continue
        history = checkpoints_dir / f"history_{mode}.json"
        runs[mode] = {
            "metrics": json.loads(metrics_path(csv_path).read_text(encoding="utf-8")),
            "rows": read_predictions(csv_path),
            "history": (json.loads(history.read_text(encoding="utf-8"))
                        if history.is_file() else None),
        }
        tuning = results_dir / f"hyperparameter_tuning_{mode}.json"
        if tuning.is_file():
            runs[mode]["tuning"] = json.loads(tuning.read_text(encoding="utf-8"))
    if not runs:
        raise BltlabError(f"{predictions_dir}: no evaluated model (run `bltlab eval` or "
                          "`bltlab run` first)")
    return runs


def row_cer(row: dict) -> float:
    return Levenshtein.distance(row["prediction"], row["target"]) / max(1, len(row["target"]))


def comparison(runs: dict) -> dict | None:
    """Paired statistics of BLT vs the baseline on the same test rows."""
    if not all(m in runs for m in MODES):
        return None
    a, b = runs["blt"]["rows"], runs["char"]["rows"]
    if [r["input"] for r in a] != [r["input"] for r in b]:
        raise BltlabError("the two predictions files do not hold the same test rows")
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
        "decode_rows_per_s": m.get("decode_rows_per_s"),
        "parameters": m.get("parameters"),
        "checkpoint": m.get("checkpoint"),
    }
    if mode == "blt":
        out.update({k: m[k] for k in ("avg_bytes_per_row", "avg_patches_per_row",
                                      "bytes_per_patch", "patcher") if k in m})
    hist = run["history"]
    if hist:
        epochs = hist["epochs"]
        out["training"] = {
            "epochs": len(epochs), "best_epoch": hist["best"]["epoch"],
            "seconds": round(sum(e["epoch_seconds"] for e in epochs), 1),
            "samples_per_s": round(float(np.median([e["samples_per_s"] for e in epochs])), 1),
            "spec": hist["spec"]}
    return out


def seed_spread(results_dir: Path) -> dict | None:
    """Mean and standard deviation over seeds of each headline number (`run --seeds N`)."""
    path = results_dir / "seeds.json"
    if not path.is_file():
        return None
    out = {}
    for mode, runs in json.loads(path.read_text(encoding="utf-8")).items():
        names = [k for k in runs[0] if k != "seed"]
        out[mode] = {"seeds": [r["seed"] for r in runs]}
        for k in names:
            values = [r[k] for r in runs if r[k] is not None]
            out[mode][k] = {"mean": float(np.mean(values)) if values else None,
                            "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
                            "n": len(values)}
    return out


def efficiency_answer(models: dict, comp: dict | None) -> str:
    """'Is BLT tokenization more computationally efficient?', answered from the numbers."""
    if not all(m in models for m in MODES):
        return "Both models must be evaluated to answer."
    c, b = models["char"], models["blt"]
    tokens, patches = c["sequence_positions_per_row"], b["sequence_positions_per_row"]
    lines = [f"Sequence length: the baseline's encoder runs over {tokens:.1f} character tokens "
             f"per row; the BLT's global transformer over {patches:.1f} patches "
             f"({b.get('bytes_per_patch', 0):.2f} bytes/patch), {tokens / patches:.1f}x fewer "
             "positions."]
    fc, fb = c.get("forward_flops_per_row"), b.get("forward_flops_per_row")
    if fc and fb:
        parts = ", ".join(f"{k.replace('_', ' ')} {v / 1e6:.1f}M" for k, v in fb.items()
                          if k != "total")
        lines.append(f"Forward FLOPs per row (measured): BLT {fb['total'] / 1e6:.1f}M "
                     f"({parts}) vs baseline {fc['total'] / 1e6:.1f}M: "
                     f"{100 * fb['total'] / fc['total']:.0f}%.")
    tc, tb = c.get("training"), b.get("training")
    if tc and tb:
        lines.append(f"Training: BLT {tb['samples_per_s']:.0f} vs baseline "
                     f"{tc['samples_per_s']:.0f} samples/s; the BLT trained {tb['epochs']} "
                     f"epochs ({tb['seconds'] / 60:.1f} min) against the baseline's "
                     f"{tc['epochs']} ({tc['seconds'] / 60:.1f} min).")
    if c.get("decode_rows_per_s") and b.get("decode_rows_per_s"):
        lines.append(f"Decoding: BLT {b['decode_rows_per_s']:.0f} vs baseline "
                     f"{c['decode_rows_per_s']:.0f} rows/s.")
    gap = b["exact_match"] - c["exact_match"]
    p = comp["mcnemar_exact"]["p_value"] if comp else None
    same = p is not None and p >= 0.05
    lines.append(f"Exact match: BLT {100 * b['exact_match']:.2f}% vs baseline "
                 f"{100 * c['exact_match']:.2f}% ({100 * gap:+.2f} points"
                 + (f", McNemar p = {p:.3g}" if p is not None else "") + ").")
    cheaper_pass = bool(fc and fb and fb["total"] < fc["total"])
    cheaper_run = bool(tc and tb and tb["seconds"] < tc["seconds"])
    if cheaper_pass and same:
        verdict = ("Per forward pass, yes: the BLT does the same job with fewer FLOPs because "
                   "its global transformer works on patches, not bytes, and its accuracy is "
                   "not distinguishable from the baseline's on these rows.")
    elif cheaper_pass:
        verdict = ("Per forward pass, yes (fewer FLOPs, because the global transformer sees "
                   "patches), but not at equal accuracy: the accuracy gap is significant.")
    else:
        verdict = ("No: at this size the BLT's local encoder and decoder cost more than the "
                   "patching saves.")
    if cheaper_pass and not cheaper_run:
        verdict += (" Per trained model, no: it needed more epochs (and freshly generated "
                    "rows) to get there, so its total training compute is higher.")
    return " ".join(lines) + "\n\nAnswer: " + verdict


def figure_png(fig, path: Path, dpi: int) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def plot_training_curves(plt, runs: dict):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for mode, run in runs.items():
        if not run["history"]:
            continue
        ep = run["history"]["epochs"]
        x = [e["epoch"] for e in ep]
        axes[0].plot(x, [e["train_loss"] for e in ep], label=f"{NAMES[mode]} train")
        axes[0].plot(x, [e.get("val_loss", np.nan) for e in ep], "--",
                     label=f"{NAMES[mode]} validation")
        axes[1].plot(x, [100 * e.get("val_exact_match", np.nan) for e in ep],
                     label=NAMES[mode])
    axes[0].set(yscale="log", xlabel="epoch", ylabel="token loss", title="Loss")
    axes[1].set(xlabel="epoch", ylabel="%", title="Validation exact match")
    for ax in axes:
        ax.legend()
    return fig


def plot_accuracy(plt, models: dict):
    fig, ax = plt.subplots(figsize=(9, 4))
    groups = sorted({k for m in models.values() for k in m["accuracy_by_length"]},
                    key=lambda k: int(k.split("-")[0].rstrip("+")))
    labels = [f"length {g}" for g in groups] + ["non-ASCII"]
    width = 0.8 / len(models)
    for i, (mode, m) in enumerate(models.items()):
        values = [100 * m["accuracy_by_length"].get(g, {}).get("accuracy", np.nan)
                  for g in groups] + [100 * (m["non_ascii"]["accuracy"] or np.nan)]
        ax.bar(np.arange(len(labels)) + i * width, values, width, label=NAMES[mode])
    ax.set_xticks(np.arange(len(labels)) + width * (len(models) - 1) / 2, labels)
    ax.set(ylabel="exact match %", title="Exact match by input length", ylim=(0, 101))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(models))
    return fig


def plot_detailed(plt, models: dict):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    names = ["exact_match", "character_accuracy", "one_minus_cer"]
    width = 0.8 / len(models)
    for i, (mode, m) in enumerate(models.items()):
        axes[0].bar(np.arange(3) + i * width, [100 * m[k] for k in names], width,
                    label=NAMES[mode])
        bottom = 0.0
        for part, value in (m.get("forward_flops_per_row") or {}).items():
            if part != "total":
                axes[1].bar(i, value / 1e6, bottom=bottom, label=f"{NAMES[mode]}: {part}")
                bottom += value / 1e6
    axes[0].set_xticks(np.arange(3) + width * (len(models) - 1) / 2,
                       ["exact match", "char. accuracy", "1 - CER"])
    axes[0].set(ylim=(min(90, *(100 * m["exact_match"] for m in models.values())), 100.5),
                ylabel="%", title="Accuracy")
    axes[0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(models))
    axes[1].set_xticks(range(len(models)), [NAMES[m] for m in models])
    axes[1].set(ylabel="MFLOPs per row (forward)", title="Forward FLOPs by part")
    axes[1].legend(fontsize=7)
    return fig


def plot_patcher_frontier(plt, points: dict):
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, p in points.items():
        ax.scatter(p["bytes_per_patch"], 100 * p["exact_match"])
        ax.annotate(name, (p["bytes_per_patch"], 100 * p["exact_match"]), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.set(xlabel="bytes per patch (test set)", ylabel="exact match %",
           title="BLT: accuracy vs compression, by patcher")
    return fig


def plot_tuning(plt, tuned: dict):
    params = sorted({p for t in tuned.values() for tr in t["trials"] for p in tr["params"]})
    fig, axes = plt.subplots(1, len(params), figsize=(3 * len(params), 3), squeeze=False)
    for ax, p in zip(axes[0], params):
        for mode, t in tuned.items():
            pts = [(tr["params"][p], 100 * tr["value"]) for tr in t["trials"]
                   if tr["value"] is not None and p in tr["params"]]
            if pts:
                ax.scatter(*zip(*pts), s=12, label=NAMES[mode])
        ax.set(title=p, ylabel="val exact match %")
    axes[0][0].legend()
    return fig


def make_plots(runs: dict, models: dict, predictions_dir: Path, results_dir: Path,
               dpi: int) -> dict[str, Path]:
    """The report's plots, each written as a PNG; returns name -> path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {"training_curves": figure_png(plot_training_curves(plt, runs),
                                         predictions_dir / "training_curves.png", dpi),
           "accuracy_analysis": figure_png(plot_accuracy(plt, models),
                                           predictions_dir / "accuracy_analysis.png", dpi),
           "detailed_metrics": figure_png(plot_detailed(plt, models),
                                          predictions_dir / "detailed_metrics.png", dpi)}
    ablation = results_dir / "ablation_patchers.json"
    if ablation.is_file():
        points = json.loads(ablation.read_text(encoding="utf-8"))
        out["patcher_frontier"] = figure_png(plot_patcher_frontier(plt, points),
                                             results_dir / "patcher_frontier.png", dpi)
    tuned = {m: r["tuning"] for m, r in runs.items() if r.get("tuning")}
    if tuned:
        out["hyperparameter_analysis"] = figure_png(
            plot_tuning(plt, tuned), results_dir / "hyperparameter_analysis.png", dpi)
    return out


def blt_patches(blt_checkpoint: str | None, texts: list[str]):
    """The BLT checkpoint's segmentation of `texts`, the per-byte entropy its patcher
    used (None for rules without one) and the threshold to draw (None if per-row);
    None without a checkpoint."""
    if not blt_checkpoint or not Path(blt_checkpoint).is_file():
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


def patching_png(patches, path: Path, dpi: int, rows: int = 4) -> Path:
    """The first `rows` rows: one coloured band per patch under each row's per-byte
    entropy, the bytes as labels (a character on its first byte, '·' on the others)."""
    import matplotlib.pyplot as plt

    from bltlab.patchview import COLOURS

    seg, entropy, level = patches
    rows = min(rows, len(seg.batch))
    fig, axes = plt.subplots(rows, 1, figsize=(11, 1.9 * rows), squeeze=False)
    for r, ax in enumerate(axes[:, 0]):
        lo, hi = seg.batch.offsets[r], seg.batch.offsets[r + 1]
        start = 0
        for i, patch in enumerate(seg.row_patches(r)):
            ax.axvspan(start - 0.5, start + len(patch) - 0.5, color=COLOURS[i % len(COLOURS)])
            start += len(patch)
        if entropy is not None:
            ax.plot(np.arange(hi - lo), entropy[lo:hi], color="#1d4ed8", marker=".")
        if level is not None:
            ax.axhline(level, color="#dc2626", linestyle="--", linewidth=1)
        labels = [chr(b) if b < 0x80 else "·" if b < 0xC0 else "" for b in seg.batch.data[lo:hi]]
        text = bytes(seg.batch.data[lo:hi]).decode("utf-8")
        multi = iter(c for c in text if ord(c) >= 0x80)
        labels = [next(multi) if lab == "" else lab for lab in labels]
        ax.set_xticks(np.arange(hi - lo), labels, fontsize=8, fontfamily="monospace")
        ax.set(xlim=(-0.5, hi - lo - 0.5), ylabel="entropy (bits)" if entropy is not None else "")
    shown = seg.batch.offsets[rows] / sum(len(seg.row_patches(r)) for r in range(rows))
    axes[0, 0].set_title(f"BLT patches ({shown:.2f} bytes/patch over these rows) and the "
                         "entropy of each next byte")
    fig.tight_layout()
    return figure_png(fig, path, dpi)


def table(rows: list[list], header: list[str]) -> str:
    cells = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def headline_rows(models: dict) -> list[list]:
    rows = []
    for mode, m in models.items():
        lo, hi = m["exact_match_wilson_95"]
        rows.append([NAMES[mode], f"{100 * m['exact_match']:.2f}% [{100 * lo:.2f}, {100 * hi:.2f}]",
                     f"{100 * m['character_accuracy']:.2f}%", f"{100 * m['one_minus_cer']:.2f}%",
                     f"{m['avg_edit_distance']:.4f}",
                     f"{100 * (m['non_ascii']['accuracy'] or 0):.1f}% of {m['non_ascii']['count']}",
                     f"{m['sequence_positions_per_row']:.1f}",
                     f"{(m.get('forward_flops_per_row') or {}).get('total', 0) / 1e6:.1f}M"])
    return rows


HEADER = ["model", "exact match [Wilson 95%]", "char. accuracy", "1 - CER", "avg edit dist.",
          "non-ASCII rows", "positions/row", "forward FLOPs/row"]


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


def text_report(results: dict) -> str:
    lines = ["bltlab experimental report", "=" * 26, ""]
    for row in headline_rows(results["models"]):
        lines.append("  ".join(f"{h}: {c}" for h, c in zip(HEADER, row)))
    comp = results["comparison"]
    if comp:
        lines += ["", f"Paired comparison on {comp['rows']} rows:"]
        lines += [f"  {test}: {value}, {interval}" for test, value, interval in paired_rows(comp)]
    for mode, m in results["models"].items():
        lines += ["", f"{NAMES[mode]}: hyperparameters"]
        tr = m.get("training")
        if tr:
            lines += [f"  {section}: {json.dumps(values, ensure_ascii=False)}"
                      for section, values in tr["spec"].items() if isinstance(values, dict)]
    for mode, spread in (results.get("seeds") or {}).items():
        lines += ["", f"{NAMES[mode]} over seeds {spread['seeds']} (mean ± std):"]
        lines += [f"  {k}: {v['mean']:.4f} ± {v['std']:.4f} (n={v['n']})"
                  for k, v in spread.items() if k != "seeds" and v["mean"] is not None]
    lines += ["", "Is BLT tokenization more computationally efficient?", results["efficiency"]]
    return "\n".join(lines) + "\n"


def html_report(results: dict, plots: dict[str, Path], patches: str) -> str:
    from bltlab.patchview import page

    sections = [("Results", table(headline_rows(results["models"]), HEADER))]
    comp = results["comparison"]
    if comp:
        sections.append(("Paired statistics", table(paired_rows(comp),
                                                    ["test", "value", "interval / p"])))
    for mode, spread in (results.get("seeds") or {}).items():
        sections.append((f"{NAMES[mode]} over seeds {spread['seeds']}", table(
            [[k, f"{v['mean']:.4f} ± {v['std']:.4f}", v["n"]] for k, v in spread.items()
             if k != "seeds" and v["mean"] is not None], ["metric", "mean ± std", "seeds"])))
    answer = "".join(f"<p>{html.escape(p)}</p>" for p in results["efficiency"].split("\n\n"))
    sections.append(("Is BLT tokenization more computationally efficient?", answer))
    for name, path in plots.items():
        data = base64.b64encode(path.read_bytes()).decode()
        sections.append((name.replace("_", " "),
                         f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'))
    if patches:
        sections.append(("How the BLT patches test rows (entropy per byte below)", patches))
    for mode, m in results["models"].items():
        tr = m.get("training")
        if tr:
            rows = [[f"{section}.{k}", json.dumps(v, ensure_ascii=False)]
                    for section, values in tr["spec"].items() if isinstance(values, dict)
                    for k, v in values.items()]
            sections.append((f"{NAMES[mode]}: hyperparameters", table(rows, ["name", "value"])))
    return page("bltlab report", sections)


def analyze(output_dir: str | Path = "results", predictions_dir: str | Path = "predictions",
            checkpoints_dir: str | Path = "checkpoints", plots: bool = True,
            dpi: int = 120) -> dict:
    """Write the report files; returns the comprehensive results."""
    results_dir, predictions_dir = Path(output_dir), Path(predictions_dir)
    runs = load_results(predictions_dir, Path(checkpoints_dir), results_dir)
    models = {mode: model_summary(mode, run) for mode, run in runs.items()}
    comp = comparison(runs)
    results = {"models": models, "comparison": comp,
               "efficiency": efficiency_answer(models, comp),
               "seeds": seed_spread(results_dir),
               "tuning": {m: r["tuning"] for m, r in runs.items() if r.get("tuning")}}
    write_json(results_dir / "comprehensive_results.json", results)
    report = text_report(results)
    for path in (results_dir / "experimental_report.txt", predictions_dir / "summary_report.txt"):
        write_atomic(path, lambda f: f.write(report))
    made = make_plots(runs, models, predictions_dir, results_dir, dpi) if plots else {}
    sample = sorted((r["input"] for r in runs.get("blt", runs.get("char"))["rows"][:8]), key=len)
    patches = blt_patches(models.get("blt", {}).get("checkpoint"), sample)
    if plots and patches is not None:
        made["patching_example"] = patching_png(patches, results_dir / "patching_example.png",
                                                dpi)
    write_atomic(results_dir / "report.html",
                 lambda f: f.write(html_report(results, made, patch_view(patches))))
    print(report)
    print(f"wrote {results_dir}/comprehensive_results.json, experimental_report.txt, "
          f"report.html" + (f" and {len(made)} plots" if made else ""))
    return results
