"""Vocabularies: characters for the baseline, UTF-8 bytes for BLT.

Both share the special ids PAD=0, BOS=1, EOS=2, UNK=3, so models and decoding never
need to know which one they hold.
"""

from __future__ import annotations

from collections.abc import Iterable

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")


class CharVocab:
    """Characters (Unicode code points) seen in training, plus the specials."""

    kind = "char"

    def __init__(self, chars: Iterable[str]):
        self.chars = sorted(set(chars))
        self.index = {c: i + len(SPECIALS) for i, c in enumerate(self.chars)}

    @classmethod
    def build(cls, texts: Iterable[str]) -> CharVocab:
        return cls(c for t in texts for c in t)

    def __len__(self) -> int:
        return len(SPECIALS) + len(self.chars)

    def encode(self, text: str) -> list[int]:
        return [self.index.get(c, UNK) for c in text]

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
