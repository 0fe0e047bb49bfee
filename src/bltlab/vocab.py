"""Vocabularies: characters for the baseline, UTF-8 bytes for BLT.

Both share the special ids PAD=0, BOS=1, EOS=2, UNK=3, so models and decoding never
need to know which one they hold.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


class CharVocab:
    """Characters (Unicode code points) seen in training, plus the specials."""

    kind = "char"

    def __init__(self, chars: Iterable[str]):
        self.chars = sorted(set(chars))
        self.index = {c: i + len(SPECIALS) for i, c in enumerate(self.chars)}
        self.code_points = np.array([ord(c) for c in self.chars], dtype=np.uint32)

    @classmethod
    def build(cls, texts: Iterable[str]) -> CharVocab:
        return cls(c for t in texts for c in t)

    def __len__(self) -> int:
        return len(SPECIALS) + len(self.chars)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(c, UNK) for c in text]

    def ids(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Every text's ids, concatenated (int64), and the row offsets: one lookup of all
        code points in the sorted alphabet."""
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum([len(t) for t in texts], out=offsets[1:])
        points = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"),
                               dtype=np.uint32)
        at = np.searchsorted(self.code_points, points)
        found = at < len(self.code_points)
        found[found] = self.code_points[at[found]] == points[found]
        return np.where(found, at + len(SPECIALS), UNK).astype(np.int64), offsets

    def decode(self, ids: Iterable[int]) -> str:
        out = []
        for i in ids:
            if i == EOS:
                break
            if i >= len(SPECIALS):
                out.append(self.chars[i - len(SPECIALS)])
            elif i == UNK:
                out.append("\ufffd")
        return "".join(out)

    def to_state(self) -> dict:
        return {"kind": self.kind, "chars": self.chars}


class ByteVocab:
    """The 256 byte values, plus the specials: every string is representable."""

    kind = "byte"

    def __len__(self) -> int:
        return len(SPECIALS) + 256

    def encode(self, text: str) -> list[int]:
        return [b + len(SPECIALS) for b in text.encode("utf-8")]

    def ids(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Every text's byte ids, concatenated (int64), and the row offsets."""
        encoded = [t.encode("utf-8") for t in texts]
        offsets = np.zeros(len(texts) + 1, dtype=np.int64)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        data = np.frombuffer(b"".join(encoded), dtype=np.uint8).astype(np.int64)
        return data + len(SPECIALS), offsets

    def decode(self, ids: Iterable[int]) -> str:
        out = bytearray()
        for i in ids:
            if i == EOS:
                break
            if i >= len(SPECIALS):
                out.append(i - len(SPECIALS))
        return out.decode("utf-8", errors="replace")

    def to_state(self) -> dict:
        return {"kind": self.kind}


def vocab_from_state(state: dict) -> CharVocab | ByteVocab:
    """Rebuild a vocabulary stored in a checkpoint."""
    if state["kind"] == "char":
        return CharVocab(state["chars"])
    if state["kind"] == "byte":
        return ByteVocab()
    raise ValueError(f"unknown vocabulary kind {state['kind']!r}")
