"""Patching: cutting each row's UTF-8 bytes into patches, and hashed n-gram ids per byte.

All patchers work on a `ByteBatch` (every row's bytes concatenated, with row offsets) and
return a boolean "a patch starts here" flag per byte, computed with numpy over the whole
batch at once. `segment()` then enforces the rules every patcher shares: each row starts
a patch, and no patch starts on a UTF-8 continuation byte (a character is never split).

Patchers (`RULES`, the registry; `PatcherConfig` holds their settings):
- `window-entropy`: the seed's rule (entropy of the byte histogram of a look-ahead window).
- `entropy-model`: the BLT paper's, next-byte entropy from a small byte language model
  (`ByteNgramLM`), with a global (H_t > θ) or monotonic (H_t - H_{t-1} > θ) threshold.
- `space`: a patch starts after each run of space-like bytes.
- `static`: fixed k-byte patches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bltlab.config import MAX_ENTROPY_BITS, MAX_LOOK, Config, at_least, need, setting
from bltlab.errors import BltlabError
from bltlab.fileio import atomic_path

UTF8_TAIL = 3  # a cut inside a UTF-8 character moves to its end: up to 3 bytes more
SPACE_BYTES = np.frombuffer(b" \t\n\r\x0b\x0c", dtype=np.uint8)
PAD_BYTE = 256  # stands for "no byte" (before a row's start, after its end)


class ByteBatch:
    """Rows of UTF-8 bytes, concatenated: row r is `data[offsets[r]:offsets[r + 1]]`.

    `padded` keeps GAP padding values before, between and after rows (row bytes sit at
    `padded[where]`), so "the byte k places away within the row" is one gather, and a
    window of up to GAP bytes never reaches into the next row. Padding values are
    PAD_BYTE + (position mod GAP): never a byte, and never equal to each other within
    GAP positions.
    """

    GAP = MAX_LOOK  # the farthest look-back or look-ahead: windows, contexts and n-grams

    def __init__(self, data: np.ndarray, offsets: np.ndarray):
        self.data, self.offsets = data, offsets
        self.lengths = np.diff(offsets)
        self.row_ids = np.repeat(np.arange(len(self.lengths)), self.lengths)
        self.where = np.arange(len(data)) + self.GAP * (self.row_ids + 1)
        size = len(data) + self.GAP * (len(self.lengths) + 1)
        self.padded = (PAD_BYTE + np.arange(size) % self.GAP).astype(np.int16)
        self.padded[self.where] = data

    @classmethod
    def from_texts(cls, texts: Sequence[str]) -> ByteBatch:
        encoded = [t.encode("utf-8") for t in texts]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        return cls(np.frombuffer(b"".join(encoded), dtype=np.uint8), offsets)

    def __len__(self) -> int:
        return len(self.lengths)

    def row_starts(self) -> np.ndarray:
        """True on the first byte of each row."""
        flags = np.zeros(len(self.data), dtype=bool)
        flags[self.offsets[:-1][self.lengths > 0]] = True
        return flags

    def position_in_row(self) -> np.ndarray:
        return np.arange(len(self.data)) - np.repeat(self.offsets[:-1], self.lengths)

    def shifted(self, k: int) -> np.ndarray:
        """The byte k places before each byte (k > 0) or after it (k < 0) in its own row,
        PAD_BYTE where that falls outside the row; int16."""
        if abs(k) > self.GAP:
            raise ValueError(f"shifts are limited to {self.GAP} bytes")
        return np.minimum(self.padded[self.where - k], PAD_BYTE)


# ---------------------------------------------------------------- window entropy (the seed)


def window_counts(batch: ByteBatch, window: int) -> tuple[np.ndarray, np.ndarray]:
    """For the window `bytes[i:i+window]` within the row at each byte i: Π_j c_j and n.

    c_j is how often the window's j-th byte occurs in the window, n how many real bytes
    it holds. Each c_j is 1 + the equal bytes before it + those after it inside the
    window, read off running sums of "byte p equals byte p+d" (d < window) over the
    padded batch: O(window) vector passes and no sorting. Π_j c_j ≤ window**window
    < 2**53 is exact in float64.
    """
    if not 1 <= window <= batch.GAP:
        raise BltlabError(f"--W must be between 1 and {batch.GAP} (got {window})")
    padded = batch.padded  # padding bytes differ from any byte fewer than GAP away
    size, starts = len(padded), len(padded) - window
    after, before = [np.zeros(size, np.uint8)], [np.zeros(size, np.uint8)]
    equal = np.zeros(size, np.uint8)
    for d in range(1, window):
        np.equal(padded[:-d], padded[d:], out=equal[:-d].view(bool))
        after.append(after[-1] + equal)  # equal real bytes among the next d
        ahead = before[-1].copy()
        ahead[d:] += equal[:-d]
        before.append(ahead)  # equal real bytes among the previous d
    # Π_j c_j in two halves of at most 8 factors ≤ 16 each (< 2**32), kept as uint32
    # until the bytes that start a window inside a row are picked out
    halves = []
    for part in (range(0, window // 2), range(window // 2, window)):
        product = np.ones(starts, np.uint32)
        for j in part:
            count = before[j][j:j + starts] + after[window - 1 - j][j:j + starts]
            count += 1
            product *= count
        halves.append(product[batch.where])
    real = (padded < PAD_BYTE).view(np.uint8)
    n = np.zeros(starts, np.uint8)
    for j in range(window):
        n += real[j:j + starts]
    return halves[0] * halves[1].astype(np.float64), np.maximum(n[batch.where], 1)


def window_entropy(batch: ByteBatch, window: int) -> np.ndarray:
    """Entropy (bits) of the byte histogram of `bytes[i:i+window]` within the row, per
    byte: H = log n − Σ_j log c_j / n (see `window_counts`)."""
    product, n = window_counts(batch, window)
    return np.log2(n) - np.log2(product) / n


def runs_cut_every(run_start: np.ndarray, every: int) -> np.ndarray:
    """True at bytes that are a positive multiple of `every` past the latest run start
    (`run_start` must include every row's first byte)."""
    first = np.flatnonzero(run_start)
    lengths = np.diff(np.append(first, len(run_start)))
    inner = (lengths - 1) // every  # cuts inside each run
    cuts = np.zeros(len(run_start), dtype=bool)
    if inner.any():
        step = np.arange(inner.sum()) - np.repeat(np.cumsum(inner) - inner, inner) + 1
        cuts[np.repeat(first, inner) + step * every] = True
    return cuts


def window_entropy_starts(batch: ByteBatch, cfg: PatcherConfig) -> np.ndarray:
    """The seed's rule, vectorised. Scanning from a patch start s, byte i closes the patch
    when H_i > θ or i − s ≥ max_len; a byte with H_i > θ therefore always becomes a
    one-byte patch (cut before and after it), and runs of low-entropy bytes are cut
    every max_len bytes from the run's start."""
    # H > θ  ⟺  log n − log Π c / n > θ  ⟺  Π c < n**n · 2**(−nθ): no logarithms, and
    # exact at integer θ, where windows of equally frequent bytes tie
    product, n = window_counts(batch, cfg.window)
    k = np.arange(cfg.window + 1, dtype=np.float64)
    high = product < (k ** k * 2.0 ** (-k * cfg.threshold))[n]
    after_high = np.zeros_like(high)
    after_high[1:] = high[:-1]
    after_high &= ~batch.row_starts()
    starts = high | after_high
    if cfg.max_patch_len > 0:
        starts |= runs_cut_every(starts | batch.row_starts(), cfg.max_patch_len)
    return starts


# ---------------------------------------------------------------- entropy model (the paper)


def context_keys(batch: ByteBatch, order: int) -> np.ndarray:
    """An int64 key per byte for its `order` preceding bytes (PAD_BYTE before the row)."""
    key = np.zeros(len(batch.data), dtype=np.int64)
    for k in range(1, order + 1):
        key = key * 257 + batch.shifted(k)
    return key


class ByteNgramLM:
    """Interpolated (Witten-Bell) byte n-gram language model giving next-byte entropy.

    Chosen over a tiny causal Transformer for speed and transparency: it trains in a
    second on 700 KB, its entropies are a table lookup per byte (vectorised, tens of
    MB/s), and with 3 bytes of context it already cuts mostly at word starts, which is
    what the paper's entropy model does on text. Entropy is precomputed for every
    context seen in training at each order; an unseen context backs off to the longest
    seen suffix of it.
    """

    def __init__(self, context: int, keys: list[np.ndarray], entropies: list[np.ndarray]):
        self.context, self.keys, self.entropies = context, keys, entropies

    @classmethod
    def fit(cls, texts: Sequence[str], context: int = 3) -> ByteNgramLM:
        """Count (context, next byte) pairs at orders 0..context and smooth each order
        with the one below: p(x|c) = (C(c,x) + T(c)·p(x|c')) / (C(c) + T(c)), where c' is
        c without its oldest byte and T(c) the number of distinct bytes seen after c."""
        batch = ByteBatch.from_texts(texts)
        if len(batch.data) == 0:
            raise BltlabError("the entropy model needs non-empty training text")
        nxt = batch.data.astype(np.int64)
        lower = np.full((1, 256), 1 / 256, dtype=np.float32)
        keys: list[np.ndarray] = []
        entropies: list[np.ndarray] = []
        for order in range(context + 1):
            uniq, inverse = np.unique(context_keys(batch, order), return_inverse=True)
            counts = np.zeros((len(uniq), 256), dtype=np.float32)
            np.add.at(counts, (inverse, nxt), 1)
            total = counts.sum(1, keepdims=True)
            types = (counts > 0).sum(1, keepdims=True).astype(np.float32)
            parent = np.searchsorted(keys[-1], uniq // 257) if keys else np.zeros(len(uniq), int)
            probs = (counts + types * lower[parent]) / (total + types)
            keys.append(uniq)
            entropies.append(-(probs * np.log2(np.maximum(probs, 1e-30))).sum(1))
            lower = probs
        return cls(context, keys, entropies)

    def entropy(self, batch: ByteBatch) -> np.ndarray:
        """H(byte_t | the bytes before it) in bits, per byte, from the longest seen context.

        Orders whose key space is small are looked up in a dense table, the rest by
        binary search in the sorted keys."""
        out = np.full(len(batch.data), self.entropies[0][0], dtype=np.float64)
        key = np.zeros(len(batch.data), dtype=np.int64)
        for order in range(1, self.context + 1):
            key = key * 257 + batch.shifted(order)
            table, values = self.keys[order], self.entropies[order]
            if 257 ** order <= 1 << 20:
                dense = np.full(257 ** order, np.nan)
                dense[table] = values
                found_values = dense[key]
                found = ~np.isnan(found_values)
                out[found] = found_values[found]
            else:
                at = np.minimum(np.searchsorted(table, key), len(table) - 1)
                found = table[at] == key
                out[found] = values[at[found]]
        return out

    def state_dict(self) -> dict:
        return {"context": self.context,
                "keys": [torch.from_numpy(k) for k in self.keys],
                "entropies": [torch.from_numpy(e.astype(np.float32)) for e in self.entropies]}

    @classmethod
    def from_state(cls, state: dict) -> ByteNgramLM:
        return cls(int(state["context"]), [k.numpy() for k in state["keys"]],
                   [e.numpy().astype(np.float64) for e in state["entropies"]])

    def save(self, path: str | Path) -> None:
        """Write the model as a weights-only torch file, atomically."""
        with atomic_path(path) as tmp:
            torch.save(self.state_dict(), tmp)

    @classmethod
    def load(cls, path: str | Path) -> ByteNgramLM:
        try:
            return cls.from_state(torch.load(path, map_location="cpu", weights_only=True))
        except FileNotFoundError:
            raise BltlabError(f"{path}: no such entropy model") from None
        except Exception as e:
            raise BltlabError(f"{path}: unreadable entropy model ({type(e).__name__})") from None


def entropy_model_starts(batch: ByteBatch, cfg: PatcherConfig, lm: ByteNgramLM) -> np.ndarray:
    """Global: a patch starts at byte t when H_t > θ. Monotonic: when H_t − H_{t−1} > θ."""
    h = lm.entropy(batch)
    if cfg.entropy_mode == "global":
        return h > cfg.threshold
    prev = np.concatenate([[np.inf], h[:-1]])  # a row's first byte starts a patch anyway
    return (h - prev) > cfg.threshold


# ---------------------------------------------------------------- space and static


def space_starts(batch: ByteBatch) -> np.ndarray:
    """A patch starts on the first non-space byte after a run of space-like bytes."""
    is_space = np.isin(batch.data, SPACE_BYTES)
    starts = np.zeros(len(batch.data), dtype=bool)
    starts[1:] = is_space[:-1] & ~is_space[1:]
    return starts


def static_starts(batch: ByteBatch, k: int) -> np.ndarray:
    return batch.position_in_row() % k == 0


# ---------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Rule:
    """One patcher: where its patches start, the per-byte entropy it thresholds (None for
    rules without one), the level to draw under that entropy, and its short label."""

    starts: Callable[[ByteBatch, PatcherConfig, ByteNgramLM | None], np.ndarray]
    entropy: Callable[[ByteBatch, PatcherConfig, ByteNgramLM | None], np.ndarray] | None
    level: Callable[[PatcherConfig], float | None]
    label: Callable[[PatcherConfig], str]
    uses_lm: bool = False  # needs a byte language model fitted on training text
    own_max_len: bool = False  # cuts long patches itself (else the shared max_patch_len cut)


def theta(cfg: PatcherConfig) -> str:
    return (f"θ={cfg.threshold:.4g}" if cfg.threshold is not None
            else f"θ for {cfg.target_bpp:g} B/patch")


RULES: dict[str, Rule] = {
    "window-entropy": Rule(
        lambda b, cfg, lm: window_entropy_starts(b, cfg),
        lambda b, cfg, lm: window_entropy(b, cfg.window),
        lambda cfg: cfg.threshold, lambda cfg: f"window-entropy W={cfg.window} {theta(cfg)}",
        own_max_len=True),
    "entropy-model": Rule(
        entropy_model_starts, lambda b, cfg, lm: lm.entropy(b),
        lambda cfg: cfg.threshold if cfg.entropy_mode == "global" else None,  # monotonic:
        lambda cfg: f"entropy-model {cfg.entropy_mode} {theta(cfg)} context={cfg.context}",
        uses_lm=True),  # its θ is not a level of H
    "space": Rule(lambda b, cfg, lm: space_starts(b), None, lambda cfg: None,
                  lambda cfg: "space"),
    "static": Rule(lambda b, cfg, lm: static_starts(b, cfg.static_size), None,
                   lambda cfg: None, lambda cfg: f"static k={cfg.static_size}"),
}


@dataclass(frozen=True)
class PatcherConfig(Config):
    """Which patcher and its parameters (BLT only).

    θ rule: an entropy patcher with `threshold` unset is calibrated at resolve() time to
    `target_bpp` mean bytes/patch on the training inputs; a given `threshold` is used as
    it is (the seed's rule: window-entropy with threshold 2.0)."""

    patcher: str = setting("space", "how bytes are cut into patches", choices=tuple(RULES))
    window: int = setting(10, "window-entropy: window size W in bytes", flag="W")
    threshold: float | None = setting(
        None, "entropy patchers: θ in bits; given, it is used as it is (no calibration)",
        flag="entropy_threshold")
    target_bpp: float = setting(4.0, "entropy patchers without a threshold: calibrate θ to "
                                      "this mean bytes/patch on the training inputs")
    max_patch_len: int = setting(3, "cut patches longer than this (0: no limit; the seed: 15)")
    entropy_mode: str = setting("global", "entropy-model: H_t > θ (global) or "
                                "H_t - H_t-1 > θ (monotonic)", choices=("global", "monotonic"))
    context: int = setting(3, "entropy-model: bytes of context of the byte language model")
    static_size: int = setting(3, "static: bytes per patch (at most max_patch_len)")

    def __post_init__(self) -> None:
        super().__post_init__()
        need(1 <= self.window <= MAX_LOOK, "W", self.window, f"must be 1 to {MAX_LOOK}")
        need(0 <= self.context < MAX_LOOK, "context", self.context,
             f"must be 0 to {MAX_LOOK - 1}")
        at_least(self, 0, "max_patch_len")
        at_least(self, 1, "static_size")
        need(self.patcher != "static" or not self.max_patch_len
             or self.static_size <= self.max_patch_len, "static_size", self.static_size,
             f"longer than --max_patch_len {self.max_patch_len}")
        if self.threshold is not None:
            low = -MAX_ENTROPY_BITS if self.entropy_mode == "monotonic" else 0.0
            need(math.isfinite(self.threshold) and low <= self.threshold <= MAX_ENTROPY_BITS,
                 "entropy_threshold", self.threshold, f"must be {low:g} to {MAX_ENTROPY_BITS:g} "
                                                      "bits")
        top = (self.max_patch_len or 64) if self.calibrated else 64
        need(math.isfinite(self.target_bpp) and 1.0 <= self.target_bpp <= top,
             "target_bpp", self.target_bpp, f"must be 1 to {top} (the longest patch)")

    @property
    def rule(self) -> Rule:
        return RULES[self.patcher]

    @property
    def calibrated(self) -> bool:
        """Whether resolve() sets θ from `target_bpp` (an entropy patcher with no θ)."""
        return self.rule.entropy is not None and self.threshold is None

    @property
    def needs_text(self) -> bool:
        """Whether building it needs training text (a byte LM to fit, or θ to calibrate)."""
        return self.rule.uses_lm or self.calibrated

    def describe(self) -> str:
        return self.rule.label(self) + (f" max_len={self.max_patch_len}"
                                        if self.max_patch_len else "")


# ---------------------------------------------------------------- segmentation


def utf8_safe(batch: ByteBatch, starts: np.ndarray) -> np.ndarray:
    """Every row starts a patch; a start on a UTF-8 continuation byte (10xxxxxx) moves
    on to the next character's first byte, so no character is split and a patch
    grows by at most 3 bytes."""
    lead = (batch.data & 0xC0) != 0x80
    out = (starts & lead) | batch.row_starts()
    moved = np.flatnonzero(starts & ~lead)
    if len(moved):
        idx = np.arange(len(lead))
        next_lead = np.minimum.accumulate(np.where(lead, idx, len(lead))[::-1])[::-1]
        target = next_lead[moved]
        out[target[target < len(lead)]] = True  # past a row's end it is the next row's start
    return out


@dataclass
class Segmentation:
    """Patch starts of a batch of rows."""

    batch: ByteBatch
    starts: np.ndarray  # bool per byte

    def _count_before(self) -> np.ndarray:
        """Patch starts before each byte position 0..N (inclusive prefix sums)."""
        return np.concatenate([[0], np.cumsum(self.starts)])

    def patch_ids(self) -> np.ndarray:
        """Index of each byte's patch within its row."""
        before = self._count_before()
        return before[1:] - 1 - before[self.batch.offsets[:-1]][self.batch.row_ids]

    def patches_per_row(self) -> np.ndarray:
        before = self._count_before()
        return before[self.batch.offsets[1:]] - before[self.batch.offsets[:-1]]

    def row_patches(self, row: int) -> list[bytes]:
        lo, hi = self.batch.offsets[row], self.batch.offsets[row + 1]
        cuts = [*np.flatnonzero(self.starts[lo:hi]), hi - lo]
        data = self.batch.data[lo:hi].tobytes()
        return [data[a:b] for a, b in zip(cuts[:-1], cuts[1:])]

    def bytes_per_patch(self) -> float:
        return len(self.batch.data) / max(1, int(self.starts.sum()))


class Patcher:
    """A configured patcher; `entropy-model` needs a fitted `ByteNgramLM`."""

    def __init__(self, cfg: PatcherConfig, lm: ByteNgramLM | None = None):
        if cfg.rule.uses_lm and lm is None:
            raise BltlabError(f"the {cfg.patcher} patcher needs a fitted byte language model")
        if cfg.calibrated:
            raise BltlabError(f"--patcher {cfg.patcher} needs a threshold: give "
                              "--entropy_threshold, or build it with build_patcher()")
        self.cfg, self.lm = cfg, lm

    def entropy(self, batch: ByteBatch) -> np.ndarray | None:
        """The per-byte entropy the rule compares with θ (None for rules without one)."""
        rule = self.cfg.rule
        return None if rule.entropy is None else rule.entropy(batch, self.cfg, self.lm)

    def segment(self, texts: Sequence[str] | ByteBatch) -> Segmentation:
        batch = texts if isinstance(texts, ByteBatch) else ByteBatch.from_texts(texts)
        cfg = self.cfg
        starts = cfg.rule.starts(batch, cfg, self.lm)
        if cfg.max_patch_len > 0 and not cfg.rule.own_max_len:
            starts |= runs_cut_every(starts | batch.row_starts(), cfg.max_patch_len)
        return Segmentation(batch, utf8_safe(batch, starts))

    def threshold_level(self) -> float | None:
        """The level to draw under an entropy curve: θ where θ is a level of H, else None."""
        return self.cfg.rule.level(self.cfg)


def patch_slots(cfg: PatcherConfig) -> int:
    """In-patch positions a patch of this patcher can need: its longest patch, plus the
    tail of a character a cut would have split."""
    return cfg.max_patch_len + UTF8_TAIL


CALIBRATION_TOLERANCE = 0.05  # relative: a target the rule cannot get this close to is refused


def calibrate(texts: Sequence[str], cfg: PatcherConfig, lm: ByteNgramLM | None = None,
              iters: int = 40) -> PatcherConfig:
    """The threshold θ whose mean bytes/patch on `texts` is closest to `cfg.target_bpp`,
    by bisection (bytes/patch never falls as θ rises). Returns a copy of `cfg` with it."""
    batch = ByteBatch.from_texts(texts)
    monotonic = cfg.rule.uses_lm and cfg.entropy_mode == "monotonic"
    lo, hi = (-MAX_ENTROPY_BITS if monotonic else 0.0), MAX_ENTROPY_BITS
    best = (lo, 0.0)
    for _ in range(iters):
        mid = (lo + hi) / 2
        bpp = Patcher(cfg.replace(threshold=mid), lm).segment(batch).bytes_per_patch()
        if abs(bpp - cfg.target_bpp) < abs(best[1] - cfg.target_bpp):
            best = (mid, bpp)
        if bpp < cfg.target_bpp:
            lo = mid
        else:
            hi = mid
    if abs(best[1] - cfg.target_bpp) > CALIBRATION_TOLERANCE * cfg.target_bpp:
        raise BltlabError(f"--target_bpp {cfg.target_bpp:g}: {cfg.describe()} cannot reach it "
                          f"on the training inputs (closest: {best[1]:.2f} bytes/patch)")
    return cfg.replace(threshold=round(best[0], 6))


# ---------------------------------------------------------------- hashed n-grams

HASH_MULT = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio, odd
HASH_SEED = np.uint64(0xCBF29CE484222325)


def ngram_ids(batch: ByteBatch, ns: Sequence[int] = (1, 2, 3), buckets: int = 4096) -> np.ndarray:
    """Bucket id of the n-gram ending at each byte, for each n: (N, len(ns)) int64.

    A multiplicative hash over 64-bit unsigned integers (wrapping arithmetic) that takes
    the bytes from the newest back, so the (n+1)-gram's hash extends the n-gram's; bytes
    before a row's start enter as 256. Identical on every run, process and machine,
    unlike Python's salted `hash()`.
    """
    if min(ns) < 1 or max(ns) > batch.GAP:
        raise BltlabError(f"n-gram sizes must be between 1 and {batch.GAP} (got {list(ns)})")
    out = np.empty((len(batch.data), len(ns)), dtype=np.int64)
    padded = np.minimum(batch.padded, PAD_BYTE).astype(np.uint64)
    h = np.full(len(padded), HASH_SEED, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(max(ns)):
            h[k:] ^= padded[: len(padded) - k]  # the byte k places back (rows have GAP pads)
            h *= HASH_MULT
            if k + 1 in ns:
                mixed = h[batch.where]
                mixed ^= mixed >> np.uint64(29)
                out[:, list(ns).index(k + 1)] = mixed % np.uint64(buckets)
    return out


# ---------------------------------------------------------------- building and caching


def build_patcher(cfg: PatcherConfig, train_texts: Sequence[str] | None = None) -> Patcher:
    """A ready patcher: fits the byte LM for `entropy-model` on `train_texts` and, when
    `cfg` has no θ, calibrates it on them (the θ found is in the returned config)."""
    lm = None
    if cfg.needs_text and not train_texts:
        raise BltlabError(f"{cfg.describe()} needs training text (--train_csv) to fit on")
    if cfg.rule.uses_lm:
        lm = ByteNgramLM.fit(train_texts, cfg.context)
    if cfg.calibrated:
        cfg = calibrate(train_texts, cfg, lm)
    return Patcher(cfg, lm)
