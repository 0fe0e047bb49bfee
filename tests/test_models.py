
import pytest
import torch

from bltlab.config import POS_ENCODINGS, ModelConfig
from bltlab.decoding import greedy_decode
from bltlab.inputs import CharCodec, codec_from_state
from bltlab.models import CharTransformer
from bltlab.vocab import BOS, CharVocab


def batch_of(rows, tgt=None):
    src = torch.nn.utils.rnn.pad_sequence([torch.tensor(r) for r in rows], batch_first=True)
    batch = {"src": src, "src_lens": torch.tensor([len(r) for r in rows])}
    if tgt is not None:
        batch["tgt_in"] = torch.tensor(tgt)
    return batch


def tiny(pos="rope", from_end=True, vocab_size=20):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=vocab_size, d_model=32, nhead=4, num_encoder_layers=1,
                      num_decoder_layers=1, dim_feedforward=64, max_len=64,
                      pos_encoding=pos, from_end=from_end)
    return CharTransformer(cfg).eval()


@pytest.mark.parametrize("pos", POS_ENCODINGS)
@pytest.mark.parametrize("from_end", [True, False])
def test_shapes(pos, from_end):
    model = tiny(pos, from_end)
    logits = model(batch_of([[5, 6, 7], [8, 9]], [[1, 5], [1, 6]]))
    assert logits.shape == (2, 2, 20)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("pos", POS_ENCODINGS)
def test_batch_equals_rows_one_by_one(pos):
    model = tiny(pos)
    rows = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]
    tgt = [[1, 7, 6], [1, 12, 11], [1, 16, 15]]
    batched = model(batch_of(rows, tgt))
    for i, row in enumerate(rows):
        alone = model(batch_of([row], [tgt[i]]))
        torch.testing.assert_close(batched[i], alone[0], atol=1e-5, rtol=1e-4)


def test_from_end_signal_changes_encoding():
    model = tiny("learned", True)
    a = model.encode(batch_of([[5, 6, 7, 8]])).states[0, :2]
    b = model.encode(batch_of([[5, 6]])).states[0, :2]
    assert not torch.allclose(a, b)  # same prefix, different distance to the end


def test_greedy_decode_is_batch_invariant():
    model = tiny("rope")
    rows = [[5, 6, 7, 8, 9], [10, 11]]
    batched = greedy_decode(model, batch_of(rows))
    for row, out in zip(rows, batched):
        assert greedy_decode(model, batch_of([row]))[0] == out
        assert len(out) <= len(row) + len(row) // 4 + 8




def test_start_token_comes_first_and_is_kept_in_checkpoints():
    vocab = CharVocab.build(["abc"])
    codec = CharCodec(vocab, start=True)
    batch = codec.batch(["ab", ""])
    assert batch["src"][0].tolist() == [BOS, *vocab.encode("ab")]
    assert batch["src_lens"].tolist() == [3, 1]
    assert codec_from_state(codec.to_state()).start
    older = {k: v for k, v in codec.to_state().items() if k != "start"}
    assert codec_from_state(older).batch(["ab"])["src"][0].tolist() == vocab.encode("ab")




MARKER = ""






@pytest.mark.parametrize("pos", POS_ENCODINGS)
def test_cached_decoder_matches_full_prefix(pos):
    model = tiny(pos)
    batch = batch_of([[5, 6, 7, 8, 9], [10, 11, 12]])
    memory = model.encode(batch)
    tokens = torch.tensor([[1, 9, 8, 7, 6, 5], [1, 12, 11, 10, 2, 0]])
    full = model.decode(tokens, memory)
    cache = model.new_cache()
    steps = [model.decode(tokens[:, t:t + 1], memory, cache, start=t)
             for t in range(tokens.shape[1])]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)
    assert greedy_decode(model, batch) == greedy_decode(model, batch, use_cache=False)
