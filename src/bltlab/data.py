"""Reversal data: generate it, describe it, and load it with row-level validation.

Generation mirrors the seed's data (measured on its train.csv): each row has 3-15 words
drawn uniformly from the 20,000 most frequent English words of `wordfreq` (words with
characters outside the Basic Multilingual Plane, i.e. emoji, never occur in the seed's
data and are left out), and with probability 0.3 one single-character symbol
(punctuation or a digit) is inserted at a uniform position. Words are joined by spaces.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bltlab.errors import BltlabError
from bltlab.fileio import write_atomic

PUNCTUATION = list(".)?;>@}+/*|\\(^#$%'[=<_:-]!&{")
SYMBOLS = PUNCTUATION + list("0123456789")
MIN_WORDS, MAX_WORDS = 3, 15
SYMBOL_PROB = 0.3
WORDLIST_SIZE = 20000


def wordlist() -> list[str]:
    """The generator's words: wordfreq's top 20,000 English words within the BMP."""
    from wordfreq import top_n_list

    return [w for w in top_n_list("en", WORDLIST_SIZE) if all(ord(c) < 0x10000 for c in w)]


def reverse(text: str) -> str:
    """The task: reverse by code point (a multi-byte character keeps its bytes in order)."""
    return text[::-1]


def generate_inputs(n: int, rng: np.random.Generator, words: list[str],
                    non_ascii_rate: float = 0.0) -> list[str]:
    """Draw `n` input strings with the seed data's distribution; with `non_ascii_rate`
    > 0, that share of rows has one word replaced by a word with non-ASCII characters
    (of the same word list), to show rare bytes more often than the ~1% of rows."""
    rare = [w for w in words if not w.isascii()]
    rows = []
    for _ in range(n):
        k = int(rng.integers(MIN_WORDS, MAX_WORDS + 1))
        tokens = [words[i] for i in rng.integers(0, len(words), size=k)]
        if non_ascii_rate > 0 and rng.random() < non_ascii_rate:
            tokens[int(rng.integers(k))] = rare[int(rng.integers(len(rare)))]
        if rng.random() < SYMBOL_PROB:
            tokens.insert(int(rng.integers(0, k + 1)), SYMBOLS[int(rng.integers(len(SYMBOLS)))])
        rows.append(" ".join(tokens))
    return rows


def write_pairs(path: str | Path, inputs: list[str], targets: list[str]) -> None:
    """Write an `input,target` CSV atomically."""

    def write(f):
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["input", "target"])
        w.writerows(zip(inputs, targets, strict=True))

    write_atomic(path, write)


def generate(out_dir: str | Path = "data", seed: int = 0, n_train: int = 10000,
             n_test: int = 2000) -> tuple[Path, Path]:
    """Write `train.csv` and `test.csv`; the same seed gives byte-identical files."""
    if n_train < 1 or n_test < 1:
        raise BltlabError(f"--train and --test must be positive (got {n_train}, {n_test})")
    words = wordlist()
    train_rng, test_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    out = Path(out_dir)
    paths = []
    for name, n, rng in (("train.csv", n_train, train_rng), ("test.csv", n_test, test_rng)):
        inputs = generate_inputs(n, rng, words)
        write_pairs(out / name, inputs, [reverse(t) for t in inputs])
        paths.append(out / name)
    return paths[0], paths[1]


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


def _row_problem(row: dict, max_len: int | None, unit: str) -> tuple[str, str] | None:
    """(kind, message) for a bad row, None for a good one."""
    for col in ("input", "target"):
        value = row.get(col)
        if value is None or value == "":
            return "empty field", f"empty '{col}' field"
        if any("\udc80" <= c <= "\udcff" for c in value):
            return "not UTF-8", f"'{col}' holds bytes that are not UTF-8"
        if max_len is not None:
            size = len(value.encode("utf-8", "surrogateescape")) if unit == "bytes" else len(value)
            if size > max_len:
                return "too long", f"'{col}' is {size} {unit} long, over the maximum of {max_len}"
    return None


def load_pairs(path: str | Path, max_len: int | None = None, unit: str = "chars",
               skip_bad_rows: bool = False) -> Pairs:
    """Read and validate an `input,target` CSV.

    A bad row raises a one-line BltlabError naming the file and the row, unless
    `skip_bad_rows`, in which case it is counted in `Pairs.skipped` by reason.
    Rows are numbered from 1 after the header; quoted fields may hold commas,
    quotes and newlines.
    """
    path = Path(path)
    if not path.is_file():
        raise BltlabError(f"{path}: no such file")
    raw = path.read_bytes()
    if not raw.strip():
        raise BltlabError(f"{path}: the file is empty")
    text = raw.decode("utf-8", errors="surrogateescape")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [c for c in ("input", "target") if c not in header]
    if missing:
        raise BltlabError(f"{path}: missing column(s) {', '.join(missing)} in header {header}")
    pairs = Pairs([], [], str(path))
    try:
        for i, row in enumerate(reader, start=1):
            problem = _row_problem(row, max_len, unit)
            if problem is None:
                pairs.inputs.append(row["input"])
                pairs.targets.append(row["target"])
            elif skip_bad_rows:
                pairs.skipped[problem[0]] = pairs.skipped.get(problem[0], 0) + 1
            else:
                raise BltlabError(f"{path}: row {i} (line {reader.line_num}): {problem[1]}"
                                  " (use --skip_bad_rows to skip such rows)")
    except csv.Error as e:
        raise BltlabError(f"{path}: line {reader.line_num}: malformed CSV ({e})") from None
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
