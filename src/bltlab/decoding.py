"""Batched greedy decoding and the text-in, text-out prediction helper."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bltlab.vocab import BOS, EOS, PAD


def max_output_len(src_lens: Tensor, limit: int) -> Tensor:
    """Per-row output budget: the input length with a margin, within the model's limit.

    Reversal needs exactly the input length; the margin lets a wrong model show its
    over-long output rather than being cut silently.
    """
    return torch.clamp(src_lens + src_lens // 4 + 8, max=limit)


@torch.no_grad()
def greedy_decode(model: nn.Module, batch: dict[str, Tensor],
                  use_cache: bool = True) -> list[list[int]]:
    """Greedy decoding of a padded batch; returns each row's ids up to (not incl.) EOS.

    With `use_cache` each step feeds only the newest token and reuses the keys and
    values of earlier steps; without it every step re-runs the whole prefix.
    """
    src_lens = batch["src_lens"]
    budget = max_output_len(src_lens, model.cfg.max_len)
    memory = model.encode(batch)
    rows, device = len(src_lens), src_lens.device
    ys = torch.full((rows, 1), BOS, dtype=torch.long, device=device)
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    cache = model.decoder.new_cache() if use_cache else None
    for step in range(int(budget.max())):
        if use_cache:
            logits = model.decoder(ys[:, -1:], memory, cache=cache, start=step)
        else:
            logits = model.decoder(ys, memory)
        nxt = logits[:, -1].argmax(-1)
        nxt = nxt.masked_fill(done, PAD)
        ys = torch.cat([ys, nxt[:, None]], dim=1)
        done |= (nxt == EOS) | (step + 1 >= budget)
        if bool(done.all()):
            break
    return [[t for t in row if t != PAD] for row in ys[:, 1:].tolist()]


@torch.no_grad()
def predict(model: nn.Module, codec, texts: list[str], batch_size: int = 256,
            device: str | torch.device = "cpu") -> list[str]:
    """Decode a list of strings, batching rows of similar length together."""
    model.eval()
    rows = codec.rows(texts)
    order = sorted(range(len(texts)), key=lambda i: len(rows[i]["src"]))
    out: list[str] = [""] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start: start + batch_size]
        batch = {k: v.to(device) for k, v in codec.collate([rows[i] for i in idx]).items()}
        for i, ids in zip(idx, greedy_decode(model, batch)):
            out[i] = codec.decode(ids)
    return out
