"""Inference on a trained checkpoint: one string, lines from a pipe, or an interactive prompt.

Every input line gets exactly one output line, in order. A line the model cannot take
(too long) gets an empty line and a one-line message on stderr naming its line number;
bytes that are not UTF-8 read as U+FFFD (for both models), and characters outside a
char model's vocabulary are named on stderr. Lines are answered as they arrive: those
that arrive together are decoded together, so a fast pipe still gets batches.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import torch

from bltlab.data import reverse
from bltlab.decoding import predict
from bltlab.evaluation import UNSEEN_EFFECT, unseen_in
from bltlab.inputs import Codec, as_text
from bltlab.models import EncoderDecoder
from bltlab.patchview import bracketed

HISTORY = Path(os.environ.get("BLTLAB_HISTORY", Path.home() / ".bltlab_history"))
QUIT = {"quit", "exit", ":q"}
READ = 1 << 16
GROUP_BYTES = 1 << 20  # read at most this much before answering what has arrived
MAX_LINE = 1 << 20  # bytes: a longer line is refused, whatever the model


@dataclass
class Predictor:
    """A loaded model with its codec and search settings: text in, prediction out."""

    model: EncoderDecoder
    codec: Codec
    beam_width: int = 1
    length_penalty: float = 1.0
    device: str | torch.device = "cpu"
    batch_size: int = 256  # lines decoded together at most

    def problems(self, text: str) -> tuple[str | None, str | None]:
        """(why the line cannot be answered, a warning) for one input."""
        why = self.codec.too_long(text)
        if why:
            return f"input {why}", None
        unknown = unseen_in(self.model, self.codec)(text)
        if unknown:
            shown = " ".join(repr(c) for c in unknown[:10])
            return None, (f"{len(unknown)} character(s) this model never saw in training "
                          f"({UNSEEN_EFFECT[self.codec.mode]}): {shown}")
        return None, None

    def predict(self, texts: list[str]) -> list[str | None]:
        """Predictions; None for an input the model cannot take."""
        texts = [as_text(t) for t in texts]
        ok = [i for i, t in enumerate(texts) if self.codec.too_long(t) is None]
        preds = predict(self.model, self.codec, [texts[i] for i in ok], self.batch_size,
                        device=self.device,
                        beam_width=self.beam_width, length_penalty=self.length_penalty,
                        drafts=[reverse(texts[i]) for i in ok])  # the task's answer
        out: list[str | None] = [None] * len(texts)
        for i, p in zip(ok, preds):
            out[i] = p
        return out

    def patches(self, text: str) -> str | None:
        """The BLT's patch segmentation of `text` as `[patch][patch]...` (None for char)."""
        if self.codec.mode != "blt" or not text:
            return None
        seg = self.codec.segment([as_text(text)])
        n = len(seg.row_patches(0))
        return f"{bracketed(seg, 0)}  ({n} patches, {len(seg.batch.data) / n:.2f} bytes/patch)"

    def describe(self, text: str, out: TextIO, err: TextIO) -> bool:
        """Print the prediction (and for BLT the input's patches); False if it cannot."""
        text = as_text(text)
        why, warning = self.problems(text)
        if warning:
            print(f"warning: {warning}", file=err)
        if why:
            print(f"error: {why}", file=err)
            return False
        print(f"prediction: {self.predict([text])[0]}", file=out)
        patches = self.patches(text)
        if patches is not None:
            print(f"patches:    {patches}", file=out)
        return True


def one_line(text: str) -> str:
    """A prediction as one output line: a line feed in it (never right: input lines
    hold none) becomes U+FFFD."""
    return text.replace("\n", "\ufffd")


def decode_line(raw: bytes) -> tuple[str, bool]:
    """A line's text and whether it was valid UTF-8 (invalid bytes read as U+FFFD)."""
    try:
        return raw.decode("utf-8"), True
    except UnicodeDecodeError:
        return raw.decode("utf-8", errors="replace"), False


def line_groups(fd: int) -> Iterator[list[bytes]]:
    """Lines of a file descriptor, in groups: each group holds every complete line that
    had arrived when the previous group was answered (a slow writer gets its lines
    answered one at a time, a fast one in batches). A line longer than MAX_LINE bytes is
    given as its first MAX_LINE + 1 bytes as soon as it is that long (and is answered as
    too long); the rest of it is skipped. Memory stays bounded whatever the input."""
    line, skipping, ended = b"", False, False
    while not ended:
        data = os.read(fd, READ)  # waits for the next bytes
        ended = not data
        while not ended and len(data) < GROUP_BYTES and select.select([fd], [], [], 0)[0]:
            more = os.read(fd, READ)
            ended = not more
            data += more
        group = []
        for i, piece in enumerate(data.split(b"\n")):
            if i:  # a newline ended the line before this piece
                if not skipping:
                    group.append(line)
                line, skipping = b"", False
            if skipping:
                continue
            line += piece
            if len(line) > MAX_LINE:
                group.append(line[: MAX_LINE + 1])
                line, skipping = b"", True
        if ended and line and not skipping:
            group.append(line)
        if group:
            yield [raw.removesuffix(b"\r") for raw in group]


def stream(predictor: Predictor, groups: Iterable[list[bytes]], out: TextIO,
           err: TextIO) -> int:
    """Answer each input line with one output line, in order; returns how many lines
    could not be answered (each got an empty line and a message on stderr)."""
    failed, number = 0, 0
    for group in groups:
        size = predictor.batch_size
        for start in range(0, len(group), size):
            lines = [decode_line(raw) if len(raw) <= MAX_LINE else ("", True)
                     for raw in group[start: start + size]]
            preds = predictor.predict([text for text, _ in lines])
            for raw, (text, valid), pred in zip(group[start: start + size], lines, preds):
                number += 1
                if len(raw) > MAX_LINE:
                    failed += 1
                    print(f"error: line {number}: longer than {MAX_LINE // (1 << 20)} MiB "
                          "(the rest of it was not read)", file=err)
                    print("", file=out)
                    continue
                if not valid:
                    print(f"warning: line {number}: not valid UTF-8 (read with U+FFFD)",
                          file=err)
                why, warning = predictor.problems(text)
                if warning:
                    print(f"warning: line {number}: {warning}", file=err)
                if pred is None:
                    failed += 1
                    print(f"error: line {number}: {why}", file=err)
                print(one_line(pred or ""), file=out)
            out.flush()
    return failed


def interactive(predictor: Predictor, out: TextIO = sys.stdout) -> None:
    """A prompt with line editing and history (readline); quit, exit or Ctrl-D leaves."""
    try:
        import readline
    except ImportError:  # not on every platform: the prompt still works without editing
        readline = None
    if readline is not None and HISTORY.is_file():
        with contextlib.suppress(OSError):
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
            if text:
                predictor.describe(text, out, out)
    finally:
        if readline is not None:
            with contextlib.suppress(OSError):  # a read-only home: history is a convenience
                readline.write_history_file(HISTORY)
