"""Inference on a trained checkpoint: one string, lines from a pipe, or an interactive prompt."""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from bltlab.decoding import predict
from bltlab.errors import BltlabError
from bltlab.patchview import bracketed

HISTORY = Path(os.environ.get("BLTLAB_HISTORY", Path.home() / ".bltlab_history"))
QUIT = {"quit", "exit", ":q"}


@dataclass
class Predictor:
    """A loaded model with its codec and search settings: text in, prediction out."""

    model: torch.nn.Module
    codec: object
    beam_width: int = 1
    length_penalty: float = 1.0
    device: str | torch.device = "cpu"

    def check(self, text: str) -> None:
        size = len(text.encode("utf-8")) if self.codec.mode == "blt" else len(text)
        unit = "bytes" if self.codec.mode == "blt" else "characters"
        longest = self.model.cfg.max_len - 1
        if size > longest:
            raise BltlabError(f"input is {size} {unit}; this model takes at most {longest}")

    def predict(self, texts: list[str]) -> list[str]:
        for text in texts:
            self.check(text)
        todo = [i for i, t in enumerate(texts) if t]  # an empty input reverses to itself
        preds = predict(self.model, self.codec, [texts[i] for i in todo], device=self.device,
                        beam_width=self.beam_width, length_penalty=self.length_penalty)
        out = [""] * len(texts)
        for i, p in zip(todo, preds):
            out[i] = p
        return out

    def patches(self, text: str) -> str | None:
        """The BLT's patch segmentation of `text` as `[patch][patch]...` (None for char)."""
        if self.codec.mode != "blt" or not text:
            return None
        seg = self.codec.segment([text])
        n = len(seg.row_patches(0))
        return f"{bracketed(seg, 0)}  ({n} patches, {len(text.encode()) / n:.2f} bytes/patch)"

    def describe(self, text: str, out: TextIO) -> None:
        """Print the prediction, and for BLT the input's patches."""
        print(f"prediction: {self.predict([text])[0]}", file=out)
        patches = self.patches(text)
        if patches is not None:
            print(f"patches:    {patches}", file=out)


def stream(predictor: Predictor, lines: TextIO, out: TextIO, batch: int = 256) -> int:
    """Predict each line of a pipe, one output line per input line; returns the count."""
    count, chunk = 0, []
    for line in lines:
        chunk.append(line.rstrip("\r\n"))
        if len(chunk) == batch:
            count += _flush(predictor, chunk, out)
            chunk = []
    return count + _flush(predictor, chunk, out)


def _flush(predictor: Predictor, chunk: list[str], out: TextIO) -> int:
    for p in predictor.predict(chunk):
        print(p, file=out)
    out.flush()
    return len(chunk)


def interactive(predictor: Predictor, out: TextIO = sys.stdout) -> None:
    """A prompt with line editing and history (readline); quit, exit or Ctrl-D leaves."""
    try:
        import readline
    except ImportError:  # not on every platform: the prompt still works without editing
        readline = None
    if readline is not None and HISTORY.is_file():
        readline.read_history_file(HISTORY)
    print(f"bltlab infer ({predictor.codec.mode}, beam width {predictor.beam_width}): "
          "type a string, or quit", file=out)
    try:
        while True:
            try:
                text = input("> ")
            except EOFError:
                print(file=out)
                break
            if text.strip() in QUIT:
                break
            if not text:
                continue
            try:
                predictor.describe(text, out)
            except BltlabError as e:
                print(f"error: {e}", file=out)
    finally:
        if readline is not None:
            with contextlib.suppress(OSError):  # a read-only home: history is a convenience
                readline.write_history_file(HISTORY)
