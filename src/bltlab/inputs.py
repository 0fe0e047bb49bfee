"""From text to model inputs and back.

A codec encodes a list of strings at once into encoder features and target ids (numpy
arrays, every row concatenated: batching.Ragged), pads the rows of a batch from them into
tensors, and turns output ids back into text. It is stored in checkpoints.

- `CharCodec` (the char baseline): character ids, after a start token (BOS) when the
  spec asks; `ByteCodec` (the byte baseline): the same over UTF-8 bytes.
- `PatchCodec` (BLT): UTF-8 byte ids, hashed n-gram ids per byte, and the patching:
  each byte's patch index and position inside its patch, and per patch its distance
  (in bytes) from its last byte to the end of the input.

A codec also knows its unit (characters or bytes) and the longest input its model
takes (`max_input`), so every reader of inputs checks lengths the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from bltlab.batching import Ragged
from bltlab.patching import ByteNgramLM, Patcher, PatcherConfig, Segmentation, ngram_ids
from bltlab.vocab import BOS, PAD, SPECIALS, ByteVocab, CharVocab, vocab_from_state

Features = dict[str, Ragged]


def as_text(text: str) -> str:
    """`text` as valid Unicode: bytes that were not UTF-8 (surrogate escapes) and lone
    surrogates become U+FFFD, the same for both models."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    raw = b"".join(bytes([ord(c) - 0xDC00]) if 0xDC80 <= ord(c) <= 0xDCFF
                   else "\ufffd".encode() if 0xD800 <= ord(c) <= 0xDFFF else c.encode()
                   for c in text)
    return raw.decode("utf-8", errors="replace")


class Codec:
    """Targets are the vocabulary's ids of the target text; outputs decode through it."""

    mode: str
    unit: str
    vocab: CharVocab | ByteVocab
    max_input: int | None = None  # the longest input the model takes, in `unit`s

    @staticmethod
    def length(text: str) -> int:
        """Length of `text` in this codec's unit."""
        raise NotImplementedError

    @classmethod
    def check_length(cls, text: str, limit: int | None) -> str | None:
        """Why `text` is too long for a model taking `limit` units, or None."""
        size = cls.length(text)
        if limit is not None and size > limit:
            return f"is {size} {cls.unit} long; the model takes at most {limit}"
        return None

    def too_long(self, text: str) -> str | None:
        """Why `text` is too long for this codec's model, or None."""
        return self.check_length(text, self.max_input)

    def target_ids(self, texts: Sequence[str]) -> Ragged:
        return Ragged(*self.vocab.ids(texts))

    def decode(self, ids: Sequence[int]) -> str:
        return self.vocab.decode(ids)

    def encode(self, texts: Sequence[str]) -> Features:
        """The encoder's features of every text ("src": the input ids, and per codec more)."""
        raise NotImplementedError

    def collate(self, features: Features, rows: np.ndarray) -> dict[str, Tensor]:
        """The padded tensors of rows `rows` of `features` ("src", "src_lens", ...)."""
        raise NotImplementedError

    def batch(self, texts: Sequence[str]) -> dict[str, Tensor]:
        """The encoder's padded tensors of `texts`, in order."""
        return self.collate(self.encode(texts), np.arange(len(texts)))


class CharCodec(Codec):
    mode, unit = "char", "characters"

    def __init__(self, vocab: CharVocab, max_input: int | None = None, start: bool = False):
        self.vocab, self.max_input, self.start = vocab, max_input, start

    @staticmethod
    def length(text: str) -> int:
        return len(text)

    def unknown(self, text: str) -> list[str]:
        """The characters of `text` outside the vocabulary (read as UNK), in order."""
        return list(dict.fromkeys(c for c in text if c not in self.vocab.index))

    def encode(self, texts: Sequence[str]) -> Features:
        """Character ids, after BOS when the codec has a start token."""
        ids = self.target_ids(texts)
        return {"src": ids.framed(BOS) if self.start else ids}

    def collate(self, features: Features, rows: np.ndarray) -> dict[str, Tensor]:
        src = features["src"]
        return {"src": src.padded(rows, PAD), "src_lens": torch.from_numpy(src.lengths[rows])}

    def to_state(self) -> dict:
        return {"mode": self.mode, "vocab": self.vocab.to_state(), "start": self.start}


class ByteCodec(CharCodec):
    """The byte baseline's: UTF-8 byte ids as tokens (every string is representable)."""

    mode, unit = "byte", "bytes"

    def __init__(self, max_input: int | None = None, start: bool = False):
        super().__init__(ByteVocab(), max_input, start)

    @staticmethod
    def length(text: str) -> int:
        return len(text.encode("utf-8", "surrogatepass"))

    def unknown(self, text: str) -> list[str]:
        return []

    def to_state(self) -> dict:
        return {"mode": self.mode, "start": self.start}


class PatchCodec(Codec):
    mode, unit = "blt", "bytes"

    def __init__(self, patcher: Patcher, ngram_sizes: Sequence[int] = (1, 2, 3),
                 ngram_buckets: int = 4096, max_input: int | None = None):
        self.vocab, self.patcher = ByteVocab(), patcher
        self.ngram_sizes, self.ngram_buckets = tuple(ngram_sizes), ngram_buckets
        self.max_input = max_input

    @staticmethod
    def length(text: str) -> int:
        return len(text.encode("utf-8", "surrogatepass"))

    def segment(self, texts: Sequence[str]) -> Segmentation:
        return self.patcher.segment(texts)

    def encode(self, texts: Sequence[str]) -> Features:
        """Byte ids and n-gram ids per byte, each byte's patch and position in it, and per
        patch the bytes after its last byte ("patch_to_end")."""
        seg = self.segment(texts)
        batch = seg.batch
        idx = np.arange(len(batch.data))
        in_patch = idx - np.maximum.accumulate(np.where(seg.starts, idx, 0))
        # the last byte of every patch (no patch at all when every row is empty)
        last = np.flatnonzero(np.append(seg.starts[1:], len(seg.starts) > 0))
        to_end = (batch.offsets[1:][batch.row_ids[last]] - 1 - last) if len(last) else last
        patch_offsets = np.concatenate([[0], np.cumsum(seg.patches_per_row())])
        per_byte = {"src": batch.data.astype(np.int64) + len(SPECIALS),
                    "ngrams": ngram_ids(batch, self.ngram_sizes, self.ngram_buckets),
                    "patch": seg.patch_ids(), "in_patch": in_patch}
        return {**{k: Ragged(v, batch.offsets) for k, v in per_byte.items()},
                "patch_to_end": Ragged(to_end.astype(np.int64), patch_offsets)}

    def collate(self, features: Features, rows: np.ndarray) -> dict[str, Tensor]:
        src, per_patch = features["src"], features["patch_to_end"]
        n_patches = per_patch.lengths[rows]
        most = int(n_patches.max(initial=0))  # padding bytes: in no patch
        return {"src": src.padded(rows, PAD), "src_lens": torch.from_numpy(src.lengths[rows]),
                "ngrams": features["ngrams"].padded(rows, 0),
                "patch": features["patch"].padded(rows, most),
                "in_patch": features["in_patch"].padded(rows, 0),
                "n_patches": torch.from_numpy(n_patches),
                "patch_to_end": per_patch.padded(rows, PAD)}

    def to_state(self) -> dict:
        lm = self.patcher.lm
        return {"mode": self.mode, "patcher": self.patcher.cfg.to_dict(),
                "ngram_sizes": list(self.ngram_sizes), "ngram_buckets": self.ngram_buckets,
                "entropy_model": lm.state_dict() if lm is not None else None}


CODECS: dict[str, type[Codec]] = {"char": CharCodec, "byte": ByteCodec, "blt": PatchCodec}


def codec_from_state(state: dict, max_input: int | None = None) -> Codec:
    """Rebuild a codec stored in a checkpoint."""
    if state["mode"] == "char":
        return CharCodec(vocab_from_state(state["vocab"]), max_input, state.get("start", False))
    if state["mode"] == "byte":
        return ByteCodec(max_input, state["start"])
    lm = ByteNgramLM.from_state(state["entropy_model"]) if state["entropy_model"] else None
    return PatchCodec(Patcher(PatcherConfig.from_dict(state["patcher"]), lm),
                     state["ngram_sizes"], state["ngram_buckets"], max_input)
