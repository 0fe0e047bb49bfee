"""Reversal data: generate it, describe it, and load it with row-level validation.

What the generator draws (the seed's distribution, or the broad one) is in profiles.py.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bltlab import profiles
from bltlab.errors import BltlabError
from bltlab.fileio import (
    MIB,
    atomic_path,
    ensure_dir,
    read_bounded,
    sha256_of,
    write_csv_rows,
    write_files,
)


def reverse(text: str) -> str:
    """The task: reverse by code point (a multi-byte character keeps its bytes in order)."""
    return text[::-1]


def pairs_writer(inputs: list[str], targets: list[str]):
    """What writes an `input,target` CSV of these rows (for fileio.write_files)."""
    return lambda f: write_csv_rows(f, [["input", "target"], *zip(inputs, targets, strict=True)])


def write_pairs(path: str | Path, inputs: list[str], targets: list[str]) -> None:
    """Write an `input,target` CSV atomically."""
    write_files({path: pairs_writer(inputs, targets)})


MAX_ROWS = 10_000_000  # rows a generated file may hold
CHUNK = 100_000  # rows drawn at a time (the same rows as all at once: one stream)
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
    files = {}
    for name, n, rng in (("train.csv", n_train, train_rng), ("test.csv", n_test, test_rng)):
        if n:
            inputs = [row for start in tqdm(range(0, n, CHUNK), desc=name, unit="chunk",
                                            leave=False, disable=None if n > CHUNK else True)
                      for row in profiles.draw(profile, min(CHUNK, n - start), rng)]
            files[out / name] = pairs_writer(inputs, [reverse(t) for t in inputs])
    write_files(files)  # both files or neither
    return out / "train.csv", out / "test.csv"


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
    """Validated rows of an `input,target` CSV (`sha256`: of the bytes read)."""

    inputs: list[str]
    targets: list[str]
    path: str = ""
    skipped: dict[str, int] = field(default_factory=dict)
    sha256: str = ""

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, rows: list[int]) -> Pairs:
        return Pairs([self.inputs[i] for i in rows], [self.targets[i] for i in rows], self.path)


class TrainedRows:
    """The inputs a run trained on, as 64-bit keys (BLAKE2b of the text), so a held-out
    set can be scored only on rows that never occurred in the training stream. Saved
    beside the run's checkpoints (a sorted array: 8 bytes a distinct row)."""

    def __init__(self, keys: np.ndarray | None = None):
        self.keys = np.unique(keys) if keys is not None else np.zeros(0, dtype=np.uint64)

    @staticmethod
    def key(texts: Sequence[str]) -> np.ndarray:
        return np.array([int.from_bytes(hashlib.blake2b(
            t.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
            for t in texts], dtype=np.uint64)

    def add(self, texts: Sequence[str]) -> None:
        self.keys = np.union1d(self.keys, self.key(texts))

    def contains(self, texts: Sequence[str]) -> np.ndarray:
        """Per text, whether the run trained on it."""
        return np.isin(self.key(texts), self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def save(self, path: str | Path) -> None:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, self.keys)

    @classmethod
    def load(cls, path: str | Path) -> TrainedRows | None:
        """The record at `path`, or None when there is none (or it is unreadable)."""
        try:
            with open(path, "rb") as f:
                keys = np.load(f, allow_pickle=False)
        except (OSError, ValueError):
            return None
        return cls(keys) if keys.dtype == np.uint64 and keys.ndim == 1 else None


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


MAX_CSV = 512 * MIB  # a larger input is refused (or an endless one: a device)


def read_text(raw: bytes) -> str:
    """A file's text (a byte-order mark dropped; bytes that are not UTF-8 kept as
    surrogate escapes for the row checks)."""
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
    raw = read_bounded(path, MAX_CSV, "CSV file")
    text = read_text(raw)
    if not text.strip():
        raise BltlabError(f"{path}: the file is empty")
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        header = reader.fieldnames or []
    except csv.Error as e:
        raise BltlabError(f"{path}: line 1: malformed CSV header ({e})") from None
    missing = [c for c in ("input", "target") if c not in header]
    if missing:
        raise BltlabError(f"{path}: missing column(s) {', '.join(missing)} in header {header}")
    twice = sorted({c for c in header if header.count(c) > 1 and c in ("input", "target")})
    if twice:
        raise BltlabError(f"{path}: column(s) {', '.join(twice)} appear more than once in "
                          f"the header {header}")
    pairs = Pairs([], [], str(path), sha256=sha256_of(raw))
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
