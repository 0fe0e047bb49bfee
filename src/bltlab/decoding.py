"""Batched decoding: KV-cached greedy search, beam search, and text-in, text-out prediction.

Both searches encode the batch once; the decoder's cross-attention keys and values are
computed at the first step and kept in the cache, self-attention keys and values are
appended per step, and rows that have finished are dropped from the batch, so they
stop costing work.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from bltlab.errors import BltlabError
from bltlab.models import EncoderDecoder
from bltlab.vocab import BOS, EOS, PAD

MAX_BEAM = 64  # wider beams cost time and memory for no gain on this task
DECODE_TOKENS = 16384  # input positions decoded together at most (rows x the longest)


def check_search(beam_width: int, length_penalty: float) -> None:
    """One-line errors for search settings that make no sense."""
    if not 1 <= beam_width <= MAX_BEAM:
        raise BltlabError(f"--beam_width {beam_width}: must be 1 to {MAX_BEAM}")
    if not -10.0 <= length_penalty <= 10.0:
        raise BltlabError(f"--length_penalty {length_penalty}: must be -10 to 10")


def max_output_len(src_lens: Tensor, limit: int) -> Tensor:
    """Per-row output budget: the input length with a margin, within the model's limit.

    Reversal needs exactly the input length; the margin lets a wrong model show its
    over-long output rather than being cut silently.
    """
    return torch.clamp(src_lens + src_lens // 4 + 8, max=limit)


def next_logits(logits: Tensor) -> Tensor:
    """The last position's logits, with PAD and BOS (never outputs) ruled out."""
    out = logits[:, -1].float()
    out[:, [PAD, BOS]] = float("-inf")
    return out


def until_eos(ids: list[int]) -> list[int]:
    """A generated row up to (not incl.) its EOS, or up to the padding after its budget."""
    out = []
    for t in ids:
        if t in (EOS, PAD):
            break
        out.append(t)
    return out


@torch.no_grad()
def greedy_decode(model: EncoderDecoder, batch: dict[str, Tensor],
                  use_cache: bool = True) -> list[list[int]]:
    """Greedy decoding of a padded batch; returns each row's ids up to (not incl.) EOS.

    With `use_cache` each step feeds only the newest token and reuses the keys and
    values of earlier steps; without it every step re-runs the whole prefix.
    """
    src_lens = batch["src_lens"]
    rows, device = len(src_lens), src_lens.device
    budget = max_output_len(src_lens, model.max_len)
    memory = model.encode(batch)
    cache = model.new_cache() if use_cache else None
    out = torch.full((rows, int(budget.max())), PAD, dtype=torch.long, device=device)
    alive = torch.arange(rows, device=device)  # original row of each batch row
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    ys = torch.full((rows, 1), BOS, dtype=torch.long, device=device)
    for step in range(out.shape[1]):
        if use_cache:
            logits = model.decode(ys[:, -1:], memory, cache, start=step)
        else:
            logits = model.decode(ys, memory)
        nxt = next_logits(logits).argmax(-1).masked_fill(done, PAD)
        out[alive, step] = nxt
        done |= (nxt == EOS) | (step + 1 >= budget[alive])
        if bool(done.all()):
            break
        if 4 * int(done.sum()) >= len(alive):  # drop finished rows (in bulk: copies cost)
            keep = (~done).nonzero().squeeze(1)
            memory = memory.select(keep)
            cache = cache.select(keep) if cache is not None else None
            alive, ys, nxt, done = alive[keep], ys[keep], nxt[keep], done[keep]
        ys = torch.cat([ys, nxt[:, None]], dim=1)
    return [until_eos(row) for row in out.tolist()]


def length_normalised(scores: Tensor, lengths: Tensor, length_penalty: float) -> Tensor:
    """Log-probability divided by length**length_penalty (0: plain log-probability)."""
    return scores / lengths.clamp(min=1).to(scores.dtype) ** length_penalty


@torch.no_grad()
def beam_search(model: EncoderDecoder, batch: dict[str, Tensor], beam_width: int = 5,
                length_penalty: float = 1.0) -> list[list[int]]:
    """Batched beam search; returns each row's best hypothesis up to (not incl.) EOS.

    All rows' beams decode together as one batch of rows x beam_width with a KV cache
    that is reordered after each step. A beam that emits EOS is frozen (it can only
    continue with PAD at no cost); a row whose beams are all frozen, or that reached its
    budget, leaves the batch. Candidates are ranked by log-probability divided by
    length**length_penalty. With beam_width 1 this is greedy decoding.
    """
    k = beam_width
    src_lens = batch["src_lens"]
    rows, device = len(src_lens), src_lens.device
    budget = max_output_len(src_lens, model.max_len)
    memory = model.encode(batch).select(torch.arange(rows, device=device).repeat_interleave(k))
    cache = model.new_cache()
    vocab = model.vocab_size
    frozen = torch.full((vocab,), float("-inf"), device=device)
    frozen[PAD] = 0.0
    scores = torch.full((rows, k), float("-inf"), device=device)
    scores[:, 0] = 0.0  # at the start all beams are the same: keep one
    lengths = torch.zeros(rows, k, dtype=torch.long, device=device)
    finished = torch.zeros(rows, k, dtype=torch.bool, device=device)
    tokens = torch.full((rows * k, 1), BOS, dtype=torch.long, device=device)
    alive = torch.arange(rows, device=device)
    results: list[list[int]] = [[] for _ in range(rows)]
    for step in range(int(budget.max())):
        n = len(alive)
        logits = model.decode(tokens[:, -1:], memory, cache, start=step)
        logp = torch.log_softmax(next_logits(logits), dim=-1).view(n, k, vocab)
        logp = torch.where(finished[..., None], frozen, logp)
        total = scores[..., None] + logp  # (n, k, V)
        new_len = lengths + (~finished).long()
        ranked = length_normalised(total, new_len[..., None], length_penalty)
        top = ranked.view(n, k * vocab).topk(k, dim=-1).indices
        parent, tok = top // vocab, top % vocab
        scores = total.view(n, k * vocab).gather(1, top)
        lengths = new_len.gather(1, parent)
        finished = (finished.gather(1, parent) | (tok == EOS)
                    | (step + 1 >= budget[alive])[:, None])
        flat = (torch.arange(n, device=device)[:, None] * k + parent).view(-1)
        tokens = torch.cat([tokens[flat], tok.view(-1, 1)], dim=1)
        cache = cache.select(flat)
        done = finished.all(dim=1)
        if not bool(done.any()):
            continue
        best = length_normalised(scores, lengths, length_penalty).argmax(dim=1)
        for i in done.nonzero().squeeze(1).tolist():
            results[int(alive[i])] = until_eos(tokens[i * k + int(best[i]), 1:].tolist())
        if bool(done.all()):
            break
        keep = (~done).nonzero().squeeze(1)
        keep_flat = (keep[:, None] * k + torch.arange(k, device=device)).view(-1)
        memory, cache = memory.select(keep_flat), cache.select(keep_flat)
        tokens = tokens[keep_flat]
        alive, scores, lengths, finished = (t[keep] for t in (alive, scores, lengths, finished))
    return results


def decode_batches(order: np.ndarray, lengths: np.ndarray, rows: int, tokens: int
                   ) -> list[np.ndarray]:
    """Rows in `order` (shortest first) cut into batches of at most `rows` rows and about
    `tokens` input positions (rows x the longest; a longer row goes alone)."""
    batches, start = [], 0
    for i, length in enumerate(lengths[order]):
        if i > start and (i - start >= rows or (i - start + 1) * length > tokens):
            batches.append(order[start:i])
            start = i
    return [*batches, order[start:]] if len(order) else []


def decode_batch(model: EncoderDecoder, batch: dict[str, Tensor], beam_width: int = 1,
                 length_penalty: float = 1.0, use_cache: bool = True) -> list[list[int]]:
    """Greedy decoding for beam_width 1 (`use_cache` False: the slow reference), beam
    search otherwise."""
    if beam_width == 1:
        return greedy_decode(model, batch, use_cache)
    return beam_search(model, batch, beam_width, length_penalty)


@torch.no_grad()
def predict(model: EncoderDecoder, codec, texts: list[str], batch_size: int = 256,
            device: str | torch.device = "cpu", beam_width: int = 1,
            length_penalty: float = 1.0, use_cache: bool = True,
            progress: bool = False) -> list[str]:
    """Decode a list of strings, batching rows of similar length together (an empty
    string reverses to itself without the model); `progress`: a bar on a terminal."""
    check_search(beam_width, length_penalty)
    model.eval()
    out: list[str] = [""] * len(texts)
    todo = [i for i, t in enumerate(texts) if t]
    if not todo:
        return out
    features = codec.encode([texts[i] for i in todo])
    lengths = features["src"].lengths
    order = np.argsort(lengths, kind="stable")
    for rows in tqdm(decode_batches(order, lengths, max(1, batch_size // beam_width),
                                    DECODE_TOKENS // beam_width), desc="decoding",
                     unit="batch", leave=False, disable=None if progress else True):
        batch = {k: v.to(device) for k, v in codec.collate(features, rows).items()}
        for r, ids in zip(rows, decode_batch(model, batch, beam_width, length_penalty,
                                             use_cache)):
            out[todo[r]] = codec.decode(ids)
    return out
