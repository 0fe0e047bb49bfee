"""Metrics for string prediction and the evaluation run that writes predictions and metrics.

Definitions (per row, then averaged over rows):
- exact match: prediction == target.
- character accuracy: positions i where prediction[i] == target[i], divided by the
  longer of the two lengths (a missing or extra character counts as wrong).
- CER: Levenshtein distance / target length; `one_minus_cer` is 1 - the corpus CER
  (total edits / total target characters).
- edit distance: Levenshtein distance (rapidfuzz); length difference: |len(pred) - len(target)|.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from rapidfuzz.distance import Levenshtein

from bltlab.batching import EncodedPairs
from bltlab.data import Pairs, TrainedRows, load_pairs
from bltlab.decoding import predict
from bltlab.errors import BltlabError
from bltlab.fileio import json_text, read_json, write_csv_rows, write_files
from bltlab.paths import metrics_json
from bltlab.profiles import BAND_NAMES, band_name
from bltlab.runtime import release_memory
from bltlab.stats import wilson_interval

# What becomes of a character a model never saw in training, per mode.
UNSEEN_EFFECT = {"char": "read as UNK", "byte": "none: every byte has a vector",
                 "blt": "its bytes' n-grams back off"}


def char_accuracy(pred: str, target: str) -> float:
    longest = max(len(pred), len(target))
    if longest == 0:
        return 1.0
    return sum(a == b for a, b in zip(pred, target)) / longest


def by_band(inputs: list[str], correct: list[bool]) -> dict[str, dict]:
    """Exact match per length band of the input, with its 95% Wilson interval."""
    rows: dict[str, list[bool]] = {}
    for x, ok in zip(inputs, correct):
        rows.setdefault(band_name(len(x)), []).append(ok)
    return {band: {"accuracy": sum(ok) / len(ok), "count": len(ok),
                   "ci95": wilson_interval(sum(ok), len(ok))}
            for band in BAND_NAMES if (ok := rows.get(band))}


LENGTH_BUCKET = 20  # characters per bucket of the robustness plot


def length_buckets(inputs: list[str], correct: list[bool]) -> dict[str, float]:
    """Exact match per bucket of LENGTH_BUCKET characters of input length."""
    buckets: dict[int, list[bool]] = {}
    for x, ok in zip(inputs, correct):
        buckets.setdefault(len(x) // LENGTH_BUCKET, []).append(ok)
    return {f"{b * LENGTH_BUCKET}-{(b + 1) * LENGTH_BUCKET}": sum(v) / len(v)
            for b, v in sorted(buckets.items())}


def longest_at(buckets: dict[str, float], level: float = 0.99) -> int:
    """The input length up to which every length bucket is at least `level` exact."""
    longest = 0
    for name, value in buckets.items():
        if value < level:
            break
        longest = int(name.split("-")[1])
    return longest


def compute_metrics(inputs: list[str], targets: list[str], preds: list[str]) -> dict:
    """All row-level metrics of a prediction run, as fractions in [0, 1]."""
    n = len(targets)
    correct = [p == t for p, t in zip(preds, targets)]
    edits = [Levenshtein.distance(p, t) for p, t in zip(preds, targets)]
    non_ascii = [ok for x, ok in zip(inputs, correct) if not x.isascii()]
    return {
        "exact_match_accuracy": sum(correct) / n,
        "character_accuracy": sum(char_accuracy(p, t) for p, t in zip(preds, targets)) / n,
        "one_minus_cer": 1 - sum(edits) / max(1, sum(len(t) for t in targets)),
        "total_samples": n,
        "total_correct": sum(correct),
        "total_incorrect": n - sum(correct),
        "avg_edit_distance": sum(edits) / n,
        "max_edit_distance": max(edits),
        "avg_length_diff": sum(abs(len(p) - len(t)) for p, t in zip(preds, targets)) / n,
        "accuracy_by_length": by_band(inputs, correct),
        "non_ascii": {"accuracy": sum(non_ascii) / len(non_ascii) if non_ascii else None,
                      "count": len(non_ascii)},
    }


def unseen_in(model: torch.nn.Module, codec) -> Callable[[str], list[str]]:
    """text -> its characters the model never saw in training, in order: for a char model
    those outside its vocabulary (read as UNK, so it cannot return them), for a BLT those
    holding a byte no training row had (their n-gram vectors back off)."""
    if hasattr(codec, "unknown"):
        return codec.unknown
    seen = set(torch.nonzero(model.seen_bytes).flatten().tolist())
    return lambda text: list(dict.fromkeys(
        c for c in text if not seen.issuperset(c.encode("utf-8", "surrogatepass"))))


def unknown_characters(model: torch.nn.Module, codec, inputs: list[str]) -> dict:
    """Rows holding characters the model never saw in training, and those characters."""
    per_row = list(map(unseen_in(model, codec), inputs))
    chars = sorted({c for u in per_row for c in u})
    return {"rows": sum(bool(u) for u in per_row), "characters": chars,
            "effect": UNSEEN_EFFECT[codec.mode]}


def predictions_writer(inputs: list[str], targets: list[str], preds: list[str],
                       in_training: Sequence[bool] | None = None):
    """What writes a predictions CSV: the data's columns, the prediction, whether right,
    and whether the row occurs in the model's training stream (left out of the metrics)."""
    seen = in_training if in_training is not None else [False] * len(inputs)
    return lambda f: write_csv_rows(f, [["input", "target", "prediction", "correct",
                                         "in_training"], *(
        (x, t, p, p == t, bool(s)) for x, t, p, s in zip(inputs, targets, preds, seen))])


def row_outcomes(output_csv: str | Path) -> str:
    """A predictions CSV's rows as one character each: 1 right, 0 wrong, - not scored
    (the row occurs in the model's training stream)."""
    with open(output_csv, encoding="utf-8", newline="") as f:
        return "".join("-" if r["in_training"] == "True" else "1" if r["correct"] == "True"
                       else "0" for r in csv.DictReader(f))


def write_predictions(path: str | Path, inputs: list[str], targets: list[str],
                      preds: list[str], in_training: Sequence[bool] | None = None) -> None:
    write_files({path: predictions_writer(inputs, targets, preds, in_training)})


def held_out(pairs: Pairs, trained: TrainedRows | None) -> np.ndarray:
    """Per row, whether it may be scored: it never occurred in the training stream."""
    if trained is None:
        return np.ones(len(pairs), dtype=bool)
    keep = ~trained.contains(pairs.inputs)
    if not keep.any():
        raise BltlabError(f"{pairs.path}: every row occurs in the model's training stream; "
                          "nothing is held out to score")
    return keep


def patch_metrics(codec, inputs: list[str]) -> dict:
    """Bytes and patches per row of a BLT codec's segmentation of `inputs`."""
    seg = codec.segment(inputs)
    patches = int(seg.starts.sum())
    return {"avg_bytes_per_row": len(seg.batch.data) / len(inputs),
            "avg_patches_per_row": patches / len(inputs),
            "bytes_per_patch": len(seg.batch.data) / max(1, patches),
            "patcher": codec.patcher.cfg.to_dict()}


def flop_metrics(model, codec, inputs: list[str], targets: list[str]) -> dict:
    """Mean FLOPs per row on real positions only (bltlab.flops), by part: a teacher-forced
    forward pass, and cached greedy decoding of the right answer (+ EOS)."""
    from bltlab.flops import FlopModel

    flops = FlopModel.fit(model.cfg)
    L, T, n = EncodedPairs.build(codec, inputs, targets).sizes()
    return {"forward_flops_per_row": flops.per_row("forward", L, T, n),
            "inference_flops_per_row": flops.per_row("infer", L, T, n),
            "flop_polynomial": flops.to_dict()}


def evaluate(model: torch.nn.Module, codec, test_csv: str | Path, output_csv: str | Path,
             batch_size: int = 256, device: str | torch.device = "cpu",
             skip_bad_rows: bool = False, beam_width: int = 1, length_penalty: float = 1.0,
             extra: dict | None = None, progress: bool = False,
             trained: TrainedRows | None = None) -> dict:
    """Decode every row of `test_csv`, write the predictions CSV and its metrics JSON; the
    metrics leave out the rows the model trained on (`trained`), counted apart."""
    pairs = load_pairs(test_csv, too_long=codec.too_long, skip_bad_rows=skip_bad_rows)
    keep = held_out(pairs, trained)
    t0 = time.perf_counter()
    preds = predict(model, codec, pairs.inputs, batch_size=batch_size, device=device,
                    beam_width=beam_width, length_penalty=length_penalty, progress=progress,
                    drafts=pairs.targets)
    seconds = time.perf_counter() - t0
    release_memory()
    scored = pairs.subset(np.flatnonzero(keep).tolist())
    metrics = compute_metrics(scored.inputs, scored.targets,
                              [p for p, k in zip(preds, keep) if k])
    metrics["rows_in_training"] = int((~keep).sum())
    metrics["unknown_characters"] = unknown_characters(model, codec, scored.inputs)
    if codec.mode == "blt":
        metrics.update(patch_metrics(codec, scored.inputs))
    metrics.update(flop_metrics(model, codec, scored.inputs, scored.targets))
    metrics.update({"parameters": sum(p.numel() for p in model.parameters()),
                    "beam_width": beam_width, "length_penalty": length_penalty,
                    "decode_rows_per_s": round(len(pairs) / seconds, 1),
                    "decode_seconds": round(seconds, 2), "test_csv": str(test_csv),
                    "skipped_rows": pairs.skipped, **(extra or {})})
    write_files({output_csv: predictions_writer(pairs.inputs, pairs.targets, preds, ~keep),
                 metrics_json(output_csv): lambda f: f.write(json_text(metrics))})  # together
    return metrics


def trained_rows(checkpoint: str | Path, mode: str) -> TrainedRows | None:
    """The record of the rows a checkpoint's run trained on, kept beside it (None for a run
    that kept none)."""
    from bltlab.checkpoint import trained_rows_path

    return TrainedRows.load(trained_rows_path(Path(checkpoint).parent, mode))


METRIC_KEYS = ("exact_match_accuracy", "character_accuracy", "one_minus_cer",
               "avg_edit_distance", "total_samples", "total_correct", "accuracy_by_length",
               "non_ascii", "forward_flops_per_row", "inference_flops_per_row", "parameters")


def evaluate_checkpoint(checkpoint: str | Path, mode: str, test_csv: str | Path,
                        output_csv: str | Path, device: str = "auto",
                        skip_bad_rows: bool = False, beam_width: int = 1,
                        extra: dict | None = None, progress: bool = False) -> dict:
    """Evaluate a checkpoint on `test_csv` unless `output_csv`'s metrics already describe
    the same checkpoint, test file and search (then they are returned as they are)."""
    from bltlab.checkpoint import load_model
    from bltlab.runtime import file_sha256, pick_device

    stamp = {"checkpoint_sha256": file_sha256(checkpoint),
             "test_csv_sha256": file_sha256(test_csv), "beam_width": beam_width}
    done = metrics_json(output_csv)
    if done.is_file() and Path(output_csv).is_file():
        try:
            old = read_json(done, "metrics file")
        except BltlabError as e:
            print(f"warning: {e}; evaluating again")
            old = None
        if isinstance(old, dict) and all(old.get(k) == v for k, v in stamp.items()) \
                and all(old.get(k) is not None for k in METRIC_KEYS):
            print(f"{mode}: {done} is up to date")
            return old
    device = pick_device(device)
    model, codec, state = load_model(checkpoint, mode, device)
    metrics = evaluate(model, codec, test_csv, output_csv, device=device,
                       skip_bad_rows=skip_bad_rows, beam_width=beam_width,
                       extra={"mode": mode, "checkpoint": str(checkpoint),
                              "spec": state["spec"], **stamp, **(extra or {})},
                       progress=progress, trained=trained_rows(checkpoint, mode))
    print(f"\n== {mode} on {test_csv} ==\n{format_metrics(metrics)}\n")
    return metrics


def format_metrics(m: dict) -> str:
    lines = [
        f"exact match         {100 * m['exact_match_accuracy']:.2f}%  "
        f"({m['total_correct']}/{m['total_samples']})",
        f"character accuracy  {100 * m['character_accuracy']:.2f}%",
        f"1 - CER             {100 * m['one_minus_cer']:.2f}%",
        f"avg edit distance   {m['avg_edit_distance']:.4f}  (max {m['max_edit_distance']})",
        f"avg length diff     {m['avg_length_diff']:.4f}",
    ]
    for k, v in m["accuracy_by_length"].items():
        lo, hi = v["ci95"]
        lines.append(f"  length {k:<8}    {100 * v['accuracy']:.2f}%  ({v['count']} rows; "
                     f"95% CI {100 * lo:.2f}-{100 * hi:.2f}%)")
    if m["non_ascii"]["count"]:
        lines.append(f"  non-ASCII rows      {100 * m['non_ascii']['accuracy']:.2f}%  "
                     f"({m['non_ascii']['count']} rows)")
    if "bytes_per_patch" in m:
        lines.append(f"patches             {m['bytes_per_patch']:.2f} bytes/patch, "
                     f"{m['avg_patches_per_row']:.1f} patches for "
                     f"{m['avg_bytes_per_row']:.1f} bytes per row")
    for kind in ("forward", "inference"):
        if f"{kind}_flops_per_row" in m:
            parts = ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in m[f"{kind}_flops_per_row"].items())
            lines.append(f"{kind + ' FLOPs/row':<20}{parts}")
    if "decode_rows_per_s" in m:
        lines.append(f"decode              {m['decode_rows_per_s']:.0f} rows/s")
    unknown = m.get("unknown_characters") or {}
    if unknown.get("rows"):
        shown = " ".join(repr(c) for c in unknown["characters"][:20])
        lines.append(f"unknown characters  {unknown['rows']} rows hold characters the model "
                     f"never saw ({unknown.get('effect', UNSEEN_EFFECT['char'])}): {shown}"
                     + (" ..." if len(unknown["characters"]) > 20 else ""))
    if m.get("rows_in_training"):
        lines.append(f"left out            {m['rows_in_training']} rows that occur in the "
                     "training stream")
    if m.get("skipped_rows"):
        lines.append(f"skipped rows        {sum(m['skipped_rows'].values())} "
                     f"{json.dumps(m['skipped_rows'])}")
    return "\n".join(lines)
