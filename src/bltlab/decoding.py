"""Batched decoding: KV-cached greedy search, beam search, and text-in, text-out prediction.

Both searches encode the batch once; the decoder's cross-attention keys and values are
computed at the first step and kept in the cache, self-attention keys and values are
appended per step, and rows that have finished are dropped from the batch, so they
stop costing work.

Greedy decoding can be given a draft per row (evaluation gives the expected output):
one teacher-forced pass over the drafts finds the rows whose greedy output is their
draft, and only the others are decoded step by step. The outputs are greedy decoding's
(see `accepted`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from bltlab.errors import BltlabError
from bltlab.layers import fixed_weights
from bltlab.models import EncoderDecoder, Memory
from bltlab.vocab import BOS, EOS, PAD

MAX_BEAM = 64  # wider beams cost time and memory for no gain on this task
DECODE_TOKENS = 16384  # input positions decoded together at most (rows x the longest)
DRAFT_MARGIN = 1e-3  # logits: far above float rounding, far below any real preference


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


def accepted(model: EncoderDecoder, memory: Memory, drafts: Tensor, budget: Tensor
             ) -> Tensor:
    """(B,) True where greedy decoding writes the row's draft (B, T: ids, EOS, then PAD).

    Greedy decoding writes a draft iff, fed the draft's own prefix, the model's top
    token is the draft's at every position up to its EOS, within the row's budget. One
    teacher-forced pass checks every position at once. The top token must also lead the
    runner-up by `DRAFT_MARGIN`: the pass and step-by-step decoding add in different
    orders, and only a near-tie could tell their rounding apart (such rows are decoded).
    """
    fits = (drafts != PAD).sum(-1) <= budget  # EOS included
    drafts = drafts[:, :int(budget.max())]
    tgt_in = torch.cat([torch.full_like(drafts[:, :1], BOS), drafts[:, :-1]], 1)
    scores = model.decode(tgt_in.masked_fill(tgt_in == EOS, PAD), memory).float()
    scores[..., [PAD, BOS]] = float("-inf")
    top = scores.topk(2, dim=-1)
    right = (top.indices[..., 0] == drafts) & (top.values[..., 0] - top.values[..., 1]
                                               > DRAFT_MARGIN)
    return fits & (right | (drafts == PAD)).all(-1)


@torch.no_grad()
def greedy_decode(model: EncoderDecoder, batch: dict[str, Tensor], use_cache: bool = True,
                  drafts: Tensor | None = None) -> list[list[int]]:
    """Greedy decoding of a padded batch; returns each row's ids up to (not incl.) EOS.

    With `use_cache` each step feeds only the newest token and reuses the keys and
    values of earlier steps; without it every step re-runs the whole prefix. With
    `drafts` (B, T: ids, EOS, PAD) the rows whose greedy output is their draft are
    found in one pass (`accepted`) and only the others are decoded.
    """
    src_lens = batch["src_lens"]
    rows, device = len(src_lens), src_lens.device
    budget = max_output_len(src_lens, model.max_len)
    memory = model.encode(batch)
    out = torch.full((rows, int(budget.max())), PAD, dtype=torch.long, device=device)
    alive = torch.arange(rows, device=device)  # original row of each batch row
    if drafts is not None:
        ok = accepted(model, memory, drafts, budget)
        width = min(drafts.shape[1], out.shape[1])
        out[ok, :width] = drafts[ok, :width]
        alive = (~ok).nonzero().squeeze(1)
        if len(alive) == 0:
            return [until_eos(row) for row in out.tolist()]
        memory = memory.select(alive)
    cache = model.new_cache() if use_cache else None
    done = torch.zeros(len(alive), dtype=torch.bool, device=device)
    ys = torch.full((len(alive), 1), BOS, dtype=torch.long, device=device)
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
                 length_penalty: float = 1.0, use_cache: bool = True,
                 drafts: Tensor | None = None) -> list[list[int]]:
    """Greedy decoding for beam_width 1 (`use_cache` False: the slow reference; `drafts`:
    checked first), beam search otherwise."""
    if beam_width == 1:
        return greedy_decode(model, batch, use_cache, drafts)
    return beam_search(model, batch, beam_width, length_penalty)


@torch.no_grad()
def predict(model: EncoderDecoder, codec, texts: list[str], batch_size: int = 256,
            device: str | torch.device = "cpu", beam_width: int = 1,
            length_penalty: float = 1.0, use_cache: bool = True,
            progress: bool = False, drafts: list[str] | None = None) -> list[str]:
    """Decode a list of strings, batching rows of similar length together (an empty
    string reverses to itself without the model); `progress`: a bar on a terminal.
    `drafts` (greedy search): a likely output per row, e.g. the expected one; rows whose
    greedy output it is cost one teacher-forced pass instead of a step per token, and
    every output is still the model's own."""
    check_search(beam_width, length_penalty)
    model.eval()
    out: list[str] = [""] * len(texts)
    todo = [i for i, t in enumerate(texts) if t]
    if not todo:
        return out
    features = codec.encode([texts[i] for i in todo])
    lengths = features["src"].lengths
    order = np.argsort(lengths, kind="stable")
    guesses = (codec.target_ids([drafts[i] for i in todo]).framed(last=EOS)
               if drafts is not None and beam_width == 1 else None)
    batches = tqdm(decode_batches(order, lengths, max(1, batch_size // beam_width),
                                  DECODE_TOKENS // beam_width), desc="decoding",
                   unit="batch", leave=False, disable=None if progress else True)
    with fixed_weights(model):
        for rows in batches:
            batch = {k: v.to(device) for k, v in codec.collate(features, rows).items()}
            draft = guesses.padded(rows, PAD).to(device) if guesses is not None else None
            for r, ids in zip(rows, decode_batch(model, batch, beam_width, length_penalty,
                                                 use_cache, draft)):
                out[todo[r]] = codec.decode(ids)
    return out
