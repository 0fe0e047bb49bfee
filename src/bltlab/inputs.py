"""From text to model inputs and back.

A codec turns strings into per-row encoder features and target ids, pads a batch of
them into tensors, and turns output ids back into text. It is stored in checkpoints.

- `CharCodec` (baseline): character ids.
- `ByteCodec` (BLT): UTF-8 byte ids, hashed n-gram ids per byte, and the patching:
  each byte's patch index and position inside its patch, and per patch its distance
  (in bytes) from its last byte to the end of the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from bltlab.batching import pad
from bltlab.errors import BltlabError
from bltlab.patching import (
    ByteNgramLM,
    Patcher,
    PatcherConfig,
    Segmentation,
    build_patcher,
    ngram_ids,
)
from bltlab.vocab import SPECIALS, ByteVocab, CharVocab, vocab_from_state

Row = dict[str, np.ndarray]


class Codec:
    """Targets are the vocabulary's ids of the target text; outputs decode through it."""

    vocab: CharVocab | ByteVocab

    def target(self, text: str) -> list[int]:
        return self.vocab.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.vocab.decode(ids)


class CharCodec(Codec):
    mode = "char"

    def __init__(self, vocab: CharVocab):
        self.vocab = vocab

    def rows(self, texts: Sequence[str]) -> list[Row]:
        return [{"src": np.asarray(self.vocab.encode(t), dtype=np.int64)} for t in texts]

    def collate(self, rows: Sequence[Row]) -> dict[str, Tensor]:
        src, lens = pad([r["src"] for r in rows])
        return {"src": src, "src_lens": lens}

    def to_state(self) -> dict:
        return {"mode": self.mode, "vocab": self.vocab.to_state()}


class ByteCodec(Codec):
    mode = "blt"

    def __init__(self, patcher: Patcher, ngram_sizes: Sequence[int] = (1, 2, 3),
                 ngram_buckets: int = 4096):
        self.vocab, self.patcher = ByteVocab(), patcher
        self.ngram_sizes, self.ngram_buckets = tuple(ngram_sizes), ngram_buckets

    def segment(self, texts: Sequence[str]) -> Segmentation:
        return self.patcher.segment(texts)

    def rows(self, texts: Sequence[str]) -> list[Row]:
        """Per row: byte ids, n-gram ids, patch index and in-patch position per byte,
        and per patch the bytes after its last byte."""
        seg = self.segment(texts)
        batch = seg.batch
        ngrams = ngram_ids(batch, self.ngram_sizes, self.ngram_buckets)
        patch = seg.patch_ids()
        idx = np.arange(len(batch.data))
        in_patch = idx - np.maximum.accumulate(np.where(seg.starts, idx, 0))
        last = np.flatnonzero(np.append(seg.starts[1:], True))  # last byte of every patch
        to_end = (batch.offsets[1:][batch.row_ids[last]] - 1 - last) if len(last) else last
        patch_bounds = np.concatenate([[0], np.cumsum(seg.patches_per_row())])
        out = []
        for r in range(len(batch)):
            lo, hi = batch.offsets[r], batch.offsets[r + 1]
            out.append({"src": batch.data[lo:hi].astype(np.int64) + len(SPECIALS),
                        "ngrams": ngrams[lo:hi], "patch": patch[lo:hi],
                        "in_patch": in_patch[lo:hi],
                        "patch_to_end": to_end[patch_bounds[r]:patch_bounds[r + 1]]})
        return out

    def collate(self, rows: Sequence[Row]) -> dict[str, Tensor]:
        src, lens = pad([r["src"] for r in rows])
        n_patches = torch.tensor([len(r["patch_to_end"]) for r in rows])
        most = int(n_patches.max())
        size = src.shape[1]
        patch = torch.full((len(rows), size), most, dtype=torch.long)  # padding: no patch
        in_patch = torch.zeros((len(rows), size), dtype=torch.long)
        ngrams = torch.zeros((len(rows), size, len(self.ngram_sizes)), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["src"])
            patch[i, :n] = torch.from_numpy(r["patch"])
            in_patch[i, :n] = torch.from_numpy(r["in_patch"])
            ngrams[i, :n] = torch.from_numpy(r["ngrams"])
        patch_to_end, _ = pad([r["patch_to_end"] for r in rows])
        return {"src": src, "src_lens": lens, "ngrams": ngrams, "patch": patch,
                "in_patch": in_patch, "n_patches": n_patches, "patch_to_end": patch_to_end}

    def to_state(self) -> dict:
        lm = self.patcher.lm
        return {"mode": self.mode, "patcher": self.patcher.cfg.to_dict(),
                "ngram_sizes": list(self.ngram_sizes), "ngram_buckets": self.ngram_buckets,
                "entropy_model": lm.state_dict() if lm is not None else None}


def fit_codec(mode: str, texts: Sequence[str], patcher_cfg: PatcherConfig | None = None,
              target_bpp: float | None = None, ngram_sizes: Sequence[int] = (1, 2, 3),
              ngram_buckets: int = 4096) -> CharCodec | ByteCodec:
    """A codec built from training inputs: the character set, or the fitted (and
    calibrated) patcher."""
    if mode == "char":
        return CharCodec(CharVocab.build(texts))
    if mode == "blt":
        cfg = patcher_cfg or PatcherConfig()
        calibrate = target_bpp if cfg.patcher in ("window-entropy", "entropy-model") else None
        return ByteCodec(build_patcher(cfg, texts, calibrate), ngram_sizes, ngram_buckets)
    raise BltlabError(f"--mode {mode!r}: choose char or blt")


def codec_from_state(state: dict) -> CharCodec | ByteCodec:
    if state["mode"] == "char":
        return CharCodec(vocab_from_state(state["vocab"]))
    lm = ByteNgramLM.from_state(state["entropy_model"]) if state["entropy_model"] else None
    return ByteCodec(Patcher(PatcherConfig.from_dict(state["patcher"]), lm),
                     state["ngram_sizes"], state["ngram_buckets"])
