"""Encoded rows kept concatenated, padded batches cut from them, and the order of batches.

A codec encodes a whole list of rows at once into `Ragged` arrays (every row's values
concatenated, with row offsets); `EncodedPairs.batch(rows)` pads the rows asked for into
tensors with one gather per array, so no step loops over rows in Python.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler

from bltlab.vocab import BOS, EOS, PAD

if TYPE_CHECKING:
    from bltlab.inputs import Codec


@dataclass
class Ragged:
    """Rows of varying length, concatenated: row r is `data[offsets[r]:offsets[r + 1]]`
    (`data` may have trailing dimensions, e.g. one id per n-gram size)."""

    data: np.ndarray
    offsets: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def padded(self, rows: np.ndarray, fill: int, lo: int = 0, hi: int = 0) -> Tensor:
        """The rows' values from `lo` after their start to `hi` before their end,
        right-padded with `fill` into a (len(rows), longest, ...) int64 tensor."""
        start = self.offsets[rows] + lo
        lengths = self.offsets[rows + 1] - hi - start
        size = int(lengths.max(initial=0))
        real = np.arange(size) < lengths[:, None]
        at = np.where(real, start[:, None] + np.arange(size), 0)
        out = (self.data[at] if len(self.data)
               else np.zeros((*at.shape, *self.data.shape[1:]), dtype=np.int64))
        out[~real] = fill
        return torch.from_numpy(out.astype(np.int64, copy=False))

    def framed(self, first: int | None = None, last: int | None = None) -> Ragged:
        """Each row with `first` before it and/or `last` after it."""
        extra = (first is not None) + (last is not None)
        rows = np.repeat(np.arange(len(self.offsets) - 1), self.lengths)
        offsets = self.offsets + extra * np.arange(len(self.offsets))
        data = np.empty(offsets[-1], dtype=np.int64)
        if first is not None:
            data[offsets[:-1]] = first
        if last is not None:
            data[offsets[1:] - 1] = last
        data[np.arange(len(self.data)) + extra * rows + (first is not None)] = self.data
        return Ragged(data, offsets)


@dataclass
class EncodedPairs:
    """A list of (input, target) pairs encoded by a codec: encoder features and target ids
    with BOS before and EOS after. `batch(rows)` gives the padded tensors of a step
    (teacher forcing: the decoder reads BOS + target and writes target + EOS)."""

    codec: Codec
    features: dict[str, Ragged]
    targets: Ragged  # BOS, target ids, EOS

    @classmethod
    def build(cls, codec: Codec, inputs: Sequence[str], targets: Sequence[str]) -> EncodedPairs:
        return cls(codec, codec.encode(inputs), codec.target_ids(targets).framed(BOS, EOS))

    def __len__(self) -> int:
        return len(self.targets.offsets) - 1

    def lengths(self) -> np.ndarray:
        """Input length of each row in the model's units (tokens the encoder reads)."""
        return self.features["src"].lengths

    def positions(self) -> np.ndarray:
        """What a row takes in a batch: the longer of its input and its decoder positions
        (what token batches are cut by)."""
        return np.maximum(self.lengths(), self.targets.lengths - 1)

    def sizes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What a row's FLOPs depend on (bltlab.flops): L encoder positions, T decoder
        positions (target + EOS) and n patches (0 without patches), per row."""
        L = self.lengths()
        patches = self.features.get("patch_to_end")
        return L, self.targets.lengths - 1, (patches.lengths if patches else np.zeros_like(L))

    def batch(self, rows: Sequence[int] | np.ndarray) -> dict[str, Tensor]:
        rows = np.asarray(rows, dtype=np.int64)
        out = self.codec.collate(self.features, rows)
        out["tgt_in"] = self.targets.padded(rows, PAD, hi=1)
        out["tgt_out"] = self.targets.padded(rows, PAD, lo=1)
        return out

    def __getitems__(self, rows: list[int]) -> dict[str, Tensor]:
        """A DataLoader's batched fetch (with `collate_fn=as_is`)."""
        return self.batch(rows)


def as_is(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """The DataLoader's collate step: `EncodedPairs` batches come collated already."""
    return batch


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of rows with similar lengths, in random order, reproducible per epoch.

    Shuffle all rows, cut them into pools of `pool_batches` batches, sort each pool by
    length, cut it into batches, shuffle the batches. Padding stays small while every
    epoch still sees a fresh mix. A batch holds `batch_size` rows, or with `max_tokens`
    as many rows as fit that many positions padded (rows x the longest row's length), so
    a batch of long rows holds few and one of short rows many: memory stays flat and
    matrix products large. With `world` > 1 processes, the batches are global (world
    times as large) and process `rank` takes rows rank, rank + world, ... of each, so K
    processes see exactly the rows one process would with K times the batch.
    `set_epoch(epoch, skip)` starts that epoch's order after `skip` batches (resume).
    """

    def __init__(self, lengths: Sequence[int] | np.ndarray, batch_size: int, seed: int = 0,
                 pool_batches: int = 50, rank: int = 0, world: int = 1, max_tokens: int = 0):
        self.lengths = torch.as_tensor(np.asarray(lengths))
        self.seed, self.rank, self.world = seed, rank, world
        self.global_batch, self.global_tokens = batch_size * world, max_tokens * world
        self.pool = pool_batches * self.global_batch
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def cut(self, pool: Tensor) -> list[list[int]]:
        """A pool of rows sorted by length, cut into batches."""
        if not self.global_tokens:
            return [pool[b: b + self.global_batch].tolist()
                    for b in range(0, len(pool), self.global_batch)]
        batches, start = [], 0
        for i, size in enumerate(self.lengths[pool].tolist()):  # ascending: size is the max
            if i - start >= self.world and (i - start + 1) * size > self.global_tokens:
                batches.append(pool[start:i].tolist())
                start = i
        return [*batches, pool[start:].tolist()]

    def _batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g)
        batches = []
        for start in range(0, len(order), self.pool):
            pool = order[start: start + self.pool]
            pool = pool[torch.argsort(self.lengths[pool], stable=True)]
            batches += [b for b in self.cut(pool) if len(b) >= self.world]  # a row each
        perm = torch.randperm(len(batches), generator=g).tolist()
        return [batches[i][self.rank::self.world] for i in perm]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches()[self.skip:])

    def __len__(self) -> int:
        """Batches in a whole epoch (whatever `skip` is)."""
        if self.global_tokens:
            return len(self._batches())
        full, rest = divmod(len(self.lengths), self.global_batch)
        return full + (rest >= self.world and rest > 0)
