"""Cached greedy decoding and batched beam search agree with their slow references."""

import numpy as np
import pytest
import torch

from bltlab.config import BLTConfig
from bltlab.decoding import beam_search, greedy_decode, max_output_len
from bltlab.inputs import PatchCodec
from bltlab.models import BLT
from bltlab.patching import Patcher, PatcherConfig
from bltlab.vocab import EOS, PAD
from tests.test_models import batch_of, tiny


def lively(model):
    """Large random weights, so outputs vary and rows stop (EOS) at different steps."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.5)
    return model


def char_case():
    g = torch.Generator().manual_seed(1)
    rows = [torch.randint(4, 30, (int(torch.randint(2, 20, (1,), generator=g)),),
                          generator=g).tolist() for _ in range(40)]
    return lively(tiny("rope", vocab_size=30)), batch_of(rows), lambda i: batch_of([rows[i]])


def blt_case():
    torch.manual_seed(0)
    model = BLT(BLTConfig(vocab_size=260, d_model=32, nhead=4, dim_feedforward=64,
                          max_len=64, ngram_buckets=64, patch_slots=6)).eval()
    patcher = Patcher(PatcherConfig("static", static_size=3, max_patch_len=3))
    codec = PatchCodec(patcher, (1, 2, 3), 64)
    texts = ["hello world", "café ❤️ x", "ab", "the quick brown fox", "reversal", "été"] * 3
    features = codec.encode(texts)
    return (lively(model), codec.collate(features, np.arange(len(texts))),
            lambda i: codec.collate(features, np.array([i])))


def test_rows_stop_at_different_steps():
    model, batch, _ = char_case()
    lengths = [len(o) for o in greedy_decode(model, batch)]
    budgets = max_output_len(batch["src_lens"], 64).tolist()
    assert len(set(lengths)) > 10 and sum(n < b for n, b in zip(lengths, budgets)) > 10


@pytest.mark.parametrize("case", [char_case, blt_case])
def test_cached_greedy_equals_uncached(case):
    model, batch, _ = case()
    assert greedy_decode(model, batch) == greedy_decode(model, batch, use_cache=False)


@pytest.mark.parametrize("case", [char_case, blt_case])
def test_beam_width_one_is_greedy(case):
    model, batch, _ = case()
    assert beam_search(model, batch, 1) == greedy_decode(model, batch)


@pytest.mark.parametrize("case", [char_case, blt_case])
def test_batched_beam_equals_rows_one_by_one(case):
    model, batch, single = case()
    batched = beam_search(model, batch, 4, length_penalty=0.5)
    for i in range(0, len(batched), 7):
        assert beam_search(model, single(i), 4, length_penalty=0.5)[0] == batched[i]


def sequence_logprob(model, row, ids):
    """log P(ids + EOS | row) under the model, by teacher forcing."""
    tgt = torch.tensor([[1] + ids + [2]])
    logits = model.decode(tgt[:, :-1], model.encode(row)).detach()
    logits[..., :2] = float("-inf")  # PAD and BOS are never outputs
    logp = torch.log_softmax(logits, -1)
    return float(logp[0].gather(1, tgt[0, 1:, None]).sum())


def test_beam_without_length_penalty_finds_likelier_answers():
    """Beam search maximises log-probability: where both searches end with EOS within
    the budget, beam's answer is mostly at least as likely as greedy's (a beam can lose
    greedy's path, so not always), and sometimes more."""
    model, batch, single = char_case()
    greedy, beam = greedy_decode(model, batch), beam_search(model, batch, 5, 0.0)
    budget = max_output_len(batch["src_lens"], 64).tolist()
    compared = [(sequence_logprob(model, single(i), g), sequence_logprob(model, single(i), b))
                for i, (g, b) in enumerate(zip(greedy, beam))
                if max(len(g), len(b)) < budget[i]]
    assert len(compared) >= 10
    assert sum(b >= g - 1e-4 for g, b in compared) >= 0.8 * len(compared)
    assert any(b > g + 1e-3 for g, b in compared)


def test_memory_and_cache_select_every_per_row_tensor():
    model, batch, _ = blt_case()
    memory, cache = model.encode(batch), model.new_cache()
    model.decode(torch.full((len(batch["src_lens"]), 1), 1), memory, cache)
    rows = torch.tensor([2, 0, 2])
    picked, picked_cache = memory.select(rows), cache.select(rows)
    for a, b in ((picked.states, memory.states), (picked.mask, memory.mask),
                 (picked.rot[0], memory.rot[0])):
        assert torch.equal(a, b[rows])
    for block, original in zip(picked_cache.blocks, cache.blocks):
        for part in ("self", "cross"):
            assert torch.equal(block[part]["k"], original[part]["k"][rows])


def drafts_of(rows: list[list[int]]) -> torch.Tensor:
    """(B, T) ids, EOS, then PAD."""
    width = max(len(r) for r in rows) + 1
    return torch.tensor([r + [EOS] + [PAD] * (width - len(r) - 1) for r in rows])


@pytest.mark.parametrize("case", [char_case, blt_case])
def test_drafts_change_no_output(case):
    """Right drafts, wrong ones (a changed token, one token short, one too many, longer
    than the budget) and none: always greedy decoding's outputs."""
    model, batch, _ = case()
    greedy = greedy_decode(model, batch)
    budget = max_output_len(batch["src_lens"], model.max_len).tolist()
    vocab = model.vocab_size
    wrong = [r[:-1] + [(r[-1] - 3) % (vocab - 4) + 4] if r else [5] for r in greedy]
    mixed = [[g, w, g[:-1], g + [7], g + [7] * b][i % 5]
             for i, (g, w, b) in enumerate(zip(greedy, wrong, budget))]
    for drafts in (greedy, wrong, mixed):
        assert greedy_decode(model, batch, drafts=drafts_of(drafts)) == greedy


def test_a_right_draft_costs_one_pass(monkeypatch):
    """A row whose draft is its greedy output: the decoder runs once (the check), not
    once per step."""
    model, batch, one_row = char_case()
    greedy = greedy_decode(model, batch)
    budget = max_output_len(batch["src_lens"], model.max_len).tolist()
    i = next(i for i, (g, b) in enumerate(zip(greedy, budget)) if 2 < len(g) < b)
    calls = []
    decode = model.decode
    monkeypatch.setattr(model, "decode", lambda *a, **k: calls.append(1) or decode(*a, **k))
    assert greedy_decode(model, one_row(i), drafts=drafts_of([greedy[i]])) == [greedy[i]]
    assert len(calls) == 1
    greedy_decode(model, one_row(i))
    assert len(calls) == 1 + len(greedy[i]) + 1  # step by step, EOS included
