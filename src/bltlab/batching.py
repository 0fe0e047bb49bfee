"""Turning encoded rows into padded tensors, in batches of similar length."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import Sampler

from bltlab.vocab import BOS, EOS, PAD


def pad(seqs: Sequence[Sequence[int]], value: int = PAD) -> tuple[Tensor, Tensor]:
    """Right-pad id lists into a (B, T) tensor; also return the (B,) lengths."""
    lens = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    out = torch.full((len(seqs), int(lens.max())), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out, lens


class PairDataset(torch.utils.data.Dataset):
    """Encoder features (one dict per row, from a codec) and target ids."""

    def __init__(self, src: list[dict], tgt: list[list[int]]):
        self.src, self.tgt = src, tgt

    @classmethod
    def build(cls, codec, pairs) -> PairDataset:
        """Features of the inputs and ids of the targets of `Pairs`, through `codec`."""
        return cls(codec.rows(pairs.inputs), [codec.target(t) for t in pairs.targets])

    def lengths(self) -> list[int]:
        return [len(r["src"]) for r in self.src]

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int) -> tuple[dict, list[int]]:
        return self.src[i], self.tgt[i]


class Collate:
    """Pads a list of (features, target ids) into a batch; teacher forcing gives the
    decoder BOS + target as input and target + EOS as output."""

    def __init__(self, codec):
        self.codec = codec

    def __call__(self, rows: list[tuple[dict, list[int]]]) -> dict[str, Tensor]:
        batch = self.codec.collate([r[0] for r in rows])
        batch["tgt_in"], _ = pad([[BOS, *r[1]] for r in rows])
        batch["tgt_out"], _ = pad([[*r[1], EOS] for r in rows])
        return batch


class LengthBucketSampler(Sampler[list[int]]):
    """Batches of rows with similar lengths, in random order, reproducible per epoch.

    Shuffle all rows, cut them into pools of `pool_batches` batches, sort each pool by
    length, cut it into batches, shuffle the batches. Padding stays small while every
    epoch still sees a fresh mix. With `world` > 1 processes, the batches are global
    (batch_size x world rows) and process `rank` takes rows rank, rank + world, ... of
    each, so K processes see exactly the rows one process would at K times the batch.
    `set_epoch(epoch, skip)` starts that epoch's order after `skip` batches (resume).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0,
                 pool_batches: int = 50, rank: int = 0, world: int = 1):
        self.lengths = torch.as_tensor(lengths)
        self.seed, self.rank, self.world = seed, rank, world
        self.global_batch = batch_size * world
        self.pool = pool_batches * self.global_batch
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def _batches(self) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(len(self.lengths), generator=g)
        batches = []
        for start in range(0, len(order), self.pool):
            pool = order[start: start + self.pool]
            pool = pool[torch.argsort(self.lengths[pool], stable=True)]
            for b in range(0, len(pool), self.global_batch):
                batch = pool[b: b + self.global_batch].tolist()
                if len(batch) >= self.world:  # every process gets at least one row
                    batches.append(batch)
        perm = torch.randperm(len(batches), generator=g).tolist()
        return [batches[i][self.rank::self.world] for i in perm]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches()[self.skip:])

    def __len__(self) -> int:
        """Batches in a whole epoch (whatever `skip` is)."""
        full, rest = divmod(len(self.lengths), self.global_batch)
        return full + (rest >= self.world and rest > 0)
