"""The report's plots: matplotlib figures written as PNG files (atomically)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bltlab.config import MODE_NAMES
from bltlab.fileio import atomic_path


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
        axes[0].plot(x, [e["train_loss"] for e in ep], label=f"{MODE_NAMES[mode]} train")
        axes[0].plot(x, [e.get("val_loss", np.nan) for e in ep], "--",
                     label=f"{MODE_NAMES[mode]} validation")
        axes[1].plot(x, [100 * e.get("val_exact_match", np.nan) for e in ep],
                     label=MODE_NAMES[mode])
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
        ax.bar(np.arange(len(labels)) + i * width, values, width, label=MODE_NAMES[mode])
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
                    label=MODE_NAMES[mode])
        bottom = 0.0
        for part, value in (m.get("forward_flops_per_row") or {}).items():
            if part != "total":
                axes[1].bar(i, value / 1e6, bottom=bottom, label=f"{MODE_NAMES[mode]}: {part}")
                bottom += value / 1e6
    axes[0].set_xticks(np.arange(3) + width * (len(models) - 1) / 2,
                       ["exact match", "char. accuracy", "1 - CER"])
    axes[0].set(ylim=(min(90, *(100 * m["exact_match"] for m in models.values())), 100.5),
                ylabel="%", title="Accuracy")
    axes[0].legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(models))
    axes[1].set_xticks(range(len(models)), [MODE_NAMES[m] for m in models])
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
                ax.scatter(*zip(*pts), s=12, label=MODE_NAMES[mode])
        ax.set(title=p, ylabel="val exact match %")
    axes[0][0].legend()
    return fig


def make_plots(runs: dict, results: dict, predictions_dir: Path, results_dir: Path,
               dpi: int) -> dict[str, Path]:
    """The report's plots, each written as a PNG; returns name -> path."""
    models = results["models"]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    if any(r.get("history") for r in runs.values()):
        out["training_curves"] = figure_png(plot_training_curves(plt, runs),
                                            predictions_dir / "training_curves.png", dpi)
    if models:  # a folder may hold only a frontier or robustness results
        out["accuracy_analysis"] = figure_png(plot_accuracy(plt, models),
                                              predictions_dir / "accuracy_analysis.png", dpi)
        out["detailed_metrics"] = figure_png(plot_detailed(plt, models),
                                             predictions_dir / "detailed_metrics.png", dpi)
    if results.get("ablation"):
        out["patcher_frontier"] = figure_png(plot_patcher_frontier(plt, results["ablation"]),
                                             results_dir / "patcher_frontier.png", dpi)
    tuned = {m: r["tuning"] for m, r in runs.items() if r.get("tuning")}
    if tuned:
        out["hyperparameter_analysis"] = figure_png(
            plot_tuning(plt, tuned), results_dir / "hyperparameter_analysis.png", dpi)
    if results.get("robustness"):
        out["robustness_by_length"] = figure_png(plot_robustness(plt, results["robustness"]),
                                                 results_dir / "robustness_by_length.png", dpi)
    if results.get("frontiers"):
        out["answer"] = figure_png(plot_answer(plt, results["frontiers"]),
                                   results_dir / "answer.png", dpi)
    for profile, frontier in (results.get("frontiers") or {}).items():
        out[f"frontier_training_{profile}"] = figure_png(
            plot_frontier_training(plt, frontier), results_dir /
            f"frontier_training_{profile}.png", dpi)
        out[f"frontier_inference_{profile}"] = figure_png(
            plot_frontier_inference(plt, frontier), results_dir /
            f"frontier_inference_{profile}.png", dpi)
    return out


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


def plot_frontier_training(plt, frontier: dict):
    """Validation exact match against cumulative training FLOPs (log x): a thin curve per
    run, and each family's Pareto front (the best reached at or below each budget)."""
    fig, ax = plt.subplots(figsize=(9, 5))
    colours = {"char": "#1d4ed8", "byte": "#059669", "blt": "#dc2626"}
    for p in frontier["points"]:
        x = [c["train_flops"] for c in p["curve"]]
        y = [100 * c["val_exact_match"] for c in p["curve"]]
        ax.plot(x, y, color=colours[p["family"]], alpha=0.35, linewidth=1)
        ax.annotate(p["name"], (x[-1], y[-1]), fontsize=6, alpha=0.7)
    for family, colour in colours.items():
        pts = sorted((c["train_flops"], c["val_exact_match"]) for p in frontier["points"]
                     if p["family"] == family for c in p["curve"])
        if pts:
            front = np.maximum.accumulate([e for _, e in pts])
            ax.step([f for f, _ in pts], 100 * front, where="post", color=colour,
                    linewidth=2.5, label=f"{MODE_NAMES[family]}: Pareto front")
    ax.set(xscale="log", xlabel="training FLOPs (forward + backward, real positions)",
           ylabel="validation exact match %", ylim=(max(0, ax.get_ylim()[0]), 100.5),
           title="Compute frontier: accuracy against training compute")
    ax.legend(loc="lower right")
    return fig


def draw_inference(ax, frontier: dict, title: str) -> None:
    """Final-set exact match (mean over seeds) against inference FLOPs per row (log x)."""
    markers = {"char": ("o", "#1d4ed8"), "byte": ("^", "#059669"), "blt": ("s", "#dc2626")}
    for name, row in frontier["table"].items():
        marker, colour = markers[row["family"]]
        x, y = row["inference_flops_per_row"]["mean"], 100 * row["final_exact_match"]["mean"]
        ax.errorbar(x, y, yerr=100 * row["final_exact_match"]["std"], fmt=marker, color=colour)
        ax.annotate(name, (x, y), fontsize=7, xytext=(4, 3), textcoords="offset points")
    for family, (marker, colour) in markers.items():
        ax.scatter([], [], marker=marker, color=colour, label=MODE_NAMES[family])
    ax.axhline(99.5, color="#6b7280", linestyle="--", linewidth=1)
    ax.set(xscale="log", xlabel="inference FLOPs per row (cached greedy decoding)",
           ylabel="final-set exact match %", title=title)
    ax.legend(loc="lower right")


def plot_frontier_inference(plt, frontier: dict):
    fig, ax = plt.subplots(figsize=(9, 5))
    draw_inference(ax, frontier, "Accuracy against the cost of reversing a string")
    return fig


def plot_answer(plt, frontiers: dict):
    """The README's plot: each profile's points, accuracy against inference FLOPs."""
    fig, axes = plt.subplots(1, len(frontiers), figsize=(7 * len(frontiers), 4.8),
                             squeeze=False)
    for ax, (profile, frontier) in zip(axes[0], frontiers.items()):
        draw_inference(ax, frontier, f"{profile} profile ({frontier['preset']} grid)")
    fig.tight_layout()
    return fig


def plot_robustness(plt, robustness: dict):
    """Exact match by input length (1-400 characters), one line per model and profile."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for label, sets in robustness.items():
        buckets = sets["lengths"]["by_length"]
        x = [int(k.split("-")[0]) + 0.5 * (int(k.split("-")[1]) - int(k.split("-")[0]))
             for k in buckets]
        ax.plot(x, [100 * v for v in buckets.values()], marker=".", label=label)
    ax.set(xlabel="input length (characters)", ylabel="exact match %", ylim=(-2, 102),
           title="Exact match by input length (held-out rows of every length 1-400)")
    ax.legend(loc="lower left")
    return fig
