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

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rapidfuzz.distance import Levenshtein

from bltlab.data import load_pairs
from bltlab.decoding import predict
from bltlab.fileio import write_atomic, write_csv_rows, write_json
from bltlab.profiles import BAND_NAMES, band_name
from bltlab.stats import wilson_interval

# What becomes of a character a model never saw in training, per mode.
UNSEEN_EFFECT = {"char": "read as UNK", "blt": "its bytes' n-grams back off"}


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


def write_predictions(path: str | Path, inputs: list[str], targets: list[str],
                      preds: list[str]) -> None:
    def write(f):
        write_csv_rows(f, [["input", "target", "prediction", "correct"],
                           *((x, t, p, p == t) for x, t, p in zip(inputs, targets, preds))])

    write_atomic(path, write)


def metrics_path(output_csv: str | Path) -> Path:
    """predictions/x.csv -> predictions/x_metrics.json (the seed's naming)."""
    p = Path(output_csv)
    return p.with_name(f"{p.stem}_metrics.json")


def default_output_csv(mode: str) -> str:
    return f"predictions/predictions_{'baseline' if mode == 'char' else mode}.csv"


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
    from bltlab.flops import FlopModel, row_lengths

    flops = FlopModel.fit(model.cfg)
    L, T, n = row_lengths(codec, inputs, targets)
    return {"forward_flops_per_row": flops.per_row("forward", L, T, n),
            "inference_flops_per_row": flops.per_row("infer", L, T, n),
            "flop_polynomial": flops.to_dict()}


def evaluate(model: torch.nn.Module, codec, test_csv: str | Path, output_csv: str | Path,
             batch_size: int = 256, device: str | torch.device = "cpu",
             skip_bad_rows: bool = False, beam_width: int = 1, length_penalty: float = 1.0,
             extra: dict | None = None) -> dict:
    """Decode every row of `test_csv`, write the predictions CSV and its metrics JSON."""
    pairs = load_pairs(test_csv, too_long=codec.too_long, skip_bad_rows=skip_bad_rows)
    t0 = time.perf_counter()
    preds = predict(model, codec, pairs.inputs, batch_size=batch_size, device=device,
                    beam_width=beam_width, length_penalty=length_penalty)
    seconds = time.perf_counter() - t0
    metrics = compute_metrics(pairs.inputs, pairs.targets, preds)
    metrics["unknown_characters"] = unknown_characters(model, codec, pairs.inputs)
    if codec.mode == "blt":
        metrics.update(patch_metrics(codec, pairs.inputs))
    metrics.update(flop_metrics(model, codec, pairs.inputs, pairs.targets))
    metrics.update({"parameters": sum(p.numel() for p in model.parameters()),
                    "beam_width": beam_width, "length_penalty": length_penalty,
                    "decode_rows_per_s": round(len(pairs) / seconds, 1),
                    "decode_seconds": round(seconds, 2), "test_csv": str(test_csv),
                    "skipped_rows": pairs.skipped, **(extra or {})})
    write_predictions(output_csv, pairs.inputs, pairs.targets, preds)
    write_json(metrics_path(output_csv), metrics)
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
    if m.get("skipped_rows"):
        lines.append(f"skipped rows        {sum(m['skipped_rows'].values())} "
                     f"{json.dumps(m['skipped_rows'])}")
    return "\n".join(lines)
