"""Reversal data: generate it, describe it, and load it with row-level validation.

What the generator draws (the seed's distribution, or the broad one) is in profiles.py.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bltlab import profiles
from bltlab.errors import BltlabError
from bltlab.fileio import ensure_dir, write_atomic, write_csv_rows


def reverse(text: str) -> str:
    """The task: reverse by code point (a multi-byte character keeps its bytes in order)."""
    return text[::-1]


def write_pairs(path: str | Path, inputs: list[str], targets: list[str]) -> None:
    """Write an `input,target` CSV atomically."""

    def write(f):
        write_csv_rows(f, [["input", "target"], *zip(inputs, targets, strict=True)])

    write_atomic(path, write)


FINAL_SEED = 20261129  # reserved: the final test set, which only the report reads
FINAL_DIR = Path("data") / "final"


def default_data_dir(profile: str) -> Path:
    """Where a profile's train.csv and test.csv live by default: data/broad, or data for
    the seed's distribution (the seed's own layout)."""
    return Path("data") if profile == "seed" else Path("data") / profile


def generate(out_dir: str | Path = "data", seed: int = 0, n_train: int = 10000,
             n_test: int = 2000, profile: str = "seed") -> tuple[Path, Path]:
    """Write `train.csv` (none with `n_train` 0) and `test.csv` of a profile; the same
    seed gives byte-identical files."""
    if n_train < 0 or n_test < 1:
        raise BltlabError(f"--train must be at least 0 and --test at least 1 (got {n_train}, "
                          f"{n_test})")
    if profile not in profiles.PROFILES:
        raise BltlabError(f"--profile {profile}: choose one of {', '.join(profiles.PROFILES)}")
    out = ensure_dir(out_dir, "--out")
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    paths = []
    for name, n, rng in (("train.csv", n_train, train_rng), ("test.csv", n_test, test_rng)):
        if n:
            inputs = profiles.draw(profile, n, rng)
            write_pairs(out / name, inputs, [reverse(t) for t in inputs])
        paths.append(out / name)
    return paths[0], paths[1]


ROBUSTNESS_DIR = Path("data") / "robustness"
ROBUSTNESS_SETS = ("short", "long", "real_text", "unseen_script", "lengths", "repeats", "bands")


def robustness_files(out_dir: str | Path = ROBUSTNESS_DIR) -> dict[str, Path]:
    """The held-out robustness sets as CSVs (made once; see profiles.robustness_sets)."""
    out = Path(out_dir)
    paths = {name: out / f"{name}.csv" for name in ROBUSTNESS_SETS}
    if not all(p.is_file() for p in paths.values()):
        ensure_dir(out, "--out")
        for name, inputs in profiles.robustness_sets().items():
            write_pairs(paths[name], inputs, [reverse(t) for t in inputs])
    return paths


def final_test(profile: str = "seed") -> Path:
    """The reserved final test set of a profile (2,000 rows, seed FINAL_SEED), made once:
    `bltlab data generate --out data/final/<profile> --seed 20261129 --train 0`. No
    setting is ever chosen on it; only the report's final numbers read it."""
    path = FINAL_DIR / profile / "test.csv"
    if not path.is_file():
        generate(path.parent, FINAL_SEED, 0, 2000, profile)
    return path


@dataclass
class Pairs:
    """Validated rows of an `input,target` CSV."""

    inputs: list[str]
    targets: list[str]
    path: str = ""
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, rows: list[int]) -> Pairs:
        return Pairs([self.inputs[i] for i in rows], [self.targets[i] for i in rows], self.path)


TooLong = Callable[[str], "str | None"]


def _row_problem(row: dict, too_long: TooLong | None) -> tuple[str, str] | None:
    """(kind, message) for a bad row, None for a good one."""
    for col in ("input", "target"):
        value = row.get(col)
        if value is None or value == "":
            return "empty field", f"empty '{col}' field"
        if any("\udc80" <= c <= "\udcff" for c in value):
            return "not UTF-8", f"'{col}' holds bytes that are not UTF-8"
        why = too_long(value) if too_long else None
        if why:
            return "too long", f"'{col}' {why}"
    return None


def read_text(path: str | Path, what: str = "file") -> str:
    """A file's text (a byte-order mark dropped; bytes that are not UTF-8 kept as
    surrogate escapes for the row checks); a missing or unreadable file is one line."""
    path = Path(path)
    if path.is_dir():
        raise BltlabError(f"{path}: is a directory, not a {what}")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BltlabError(f"{path}: no such file") from None
    except OSError as e:
        raise BltlabError(f"{path}: cannot read it ({e.strerror})") from None
    return raw.decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")


def load_pairs(path: str | Path, too_long: TooLong | None = None,
               skip_bad_rows: bool = False) -> Pairs:
    """Read and validate an `input,target` CSV.

    A bad row raises a one-line BltlabError naming the file and the row, unless
    `skip_bad_rows`, in which case it is counted in `Pairs.skipped` by reason.
    `too_long(text)` says why a field is too long for the model (e.g. a codec's).
    Rows are numbered from 1 after the header; quoted fields may hold commas,
    quotes and newlines.
    """
    path = Path(path)
    text = read_text(path, "CSV file")
    if not text.strip():
        raise BltlabError(f"{path}: the file is empty")
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    header = reader.fieldnames or []
    missing = [c for c in ("input", "target") if c not in header]
    if missing:
        raise BltlabError(f"{path}: missing column(s) {', '.join(missing)} in header {header}")
    pairs = Pairs([], [], str(path))
    try:
        for i, row in enumerate(reader, start=1):
            problem = _row_problem(row, too_long)
            if problem is None:
                pairs.inputs.append(row["input"])
                pairs.targets.append(row["target"])
            elif skip_bad_rows:
                pairs.skipped[problem[0]] = pairs.skipped.get(problem[0], 0) + 1
            else:
                raise BltlabError(f"{path}: row {i} (line {reader.line_num}): {problem[1]}"
                                  " (use --skip_bad_rows to skip such rows)")
    except csv.Error as e:
        hint = "; a quote that is never closed?" if "end of data" in str(e) else ""
        raise BltlabError(f"{path}: line {reader.line_num}: malformed CSV ({e}{hint})") from None
    if not pairs.inputs:
        raise BltlabError(f"{path}: no usable rows")
    return pairs


def stats(pairs: Pairs) -> dict:
    """Row count, lengths, words per row, non-ASCII share, and whether targets reverse inputs."""
    lengths = [len(t) for t in pairs.inputs]
    words = [len(t.split()) for t in pairs.inputs]
    return {
        "file": pairs.path,
        "rows": len(pairs),
        "length_chars": {"min": min(lengths), "mean": round(statistics.mean(lengths), 2),
                         "max": max(lengths)},
        "length_bytes_mean": round(statistics.mean(len(t.encode()) for t in pairs.inputs), 2),
        "words_per_row": {"min": min(words), "mean": round(statistics.mean(words), 2),
                          "max": max(words)},
        "non_ascii_rows": sum(not t.isascii() for t in pairs.inputs),
        "non_ascii_share": round(sum(not t.isascii() for t in pairs.inputs) / len(pairs), 4),
        "all_targets_reversed": all(reverse(i) == t for i, t in zip(pairs.inputs, pairs.targets)),
        "skipped_rows": pairs.skipped,
    }


def format_stats(s: dict) -> str:
    """Human-readable lines for `bltlab data stats`."""
    lc, wp = s["length_chars"], s["words_per_row"]
    return "\n".join([
        f"file                 {s['file']}",
        f"rows                 {s['rows']}",
        f"length (chars)       min {lc['min']}  mean {lc['mean']}  max {lc['max']}",
        f"length (bytes) mean  {s['length_bytes_mean']}",
        f"words per row        min {wp['min']}  mean {wp['mean']}  max {wp['max']}",
        f"non-ASCII rows       {s['non_ascii_rows']} ({100 * s['non_ascii_share']:.2f}%)",
        f"targets reversed     {'yes' if s['all_targets_reversed'] else 'NO'}",
    ] + ([f"skipped rows         {json.dumps(s['skipped_rows'])}"] if s["skipped_rows"] else []))
