import pytest
import torch

from bltlab.config import BLTConfig
from bltlab.inputs import PatchCodec
from bltlab.models import BLT
from bltlab.patching import Patcher, PatcherConfig
from bltlab.vocab import BOS

TEXTS = ["hello world", "café ❤️ x", "ab", "the quick brown fox"]


def codec(size=3):
    patcher = Patcher(PatcherConfig("static", static_size=size, max_patch_len=size))
    return PatchCodec(patcher, (1, 2, 3), 64)


MEMORIES = {"patches": {"global_factor": 1}, "bytes": {"decoder_memory": "bytes"},
            "wide": {"global_factor": 2},  # 2 decoder vectors per patch
            "table": {"global_factor": 2, "byte_embedding": "table"}}


def tiny(**kw):
    torch.manual_seed(0)
    cfg = BLTConfig(d_model=32, nhead=4, dim_feedforward=64, max_len=64, ngram_buckets=64,
                    patch_slots=6, **kw)
    model = BLT(cfg).eval()
    model.seen_bytes.fill_(True)  # as if trained on every byte: n-grams always count
    return model


def batch_for(c, texts):
    batch = c.batch(texts)
    batch["tgt_in"] = torch.full((len(texts), 3), BOS)
    return batch


def test_codec_rows_describe_the_patches():
    c = codec(3)
    batch = c.batch(TEXTS)
    for r, text in enumerate(TEXTS):
        data = text.encode()
        n, size = int(batch["n_patches"][r]), int(batch["src_lens"][r])
        src, patch, in_patch = (batch[k][r, :size] for k in ("src", "patch", "in_patch"))
        assert c.decode(src.tolist()) == text  # non-ASCII survives the round trip
        assert size == len(data)
        lengths = [int((patch == p).sum()) for p in range(n)]
        assert sum(lengths) == len(data)
        ends = [sum(lengths[: p + 1]) - 1 for p in range(len(lengths))]
        assert batch["patch_to_end"][r, :n].tolist() == [len(data) - 1 - e for e in ends]
        assert all(in_patch[i] == i - sum(lengths[: patch[i]]) for i in range(len(data)))
        assert (batch["patch"][r, size:] == int(batch["n_patches"].max())).all()  # padding


@pytest.mark.parametrize("pooling", ["project", "cross"])
@pytest.mark.parametrize("memory", MEMORIES)
def test_shapes(pooling, memory):
    model = tiny(pooling=pooling, **MEMORIES[memory])
    c = codec()
    batch = batch_for(c, TEXTS)
    logits = model(batch)
    assert logits.shape == (4, 3, 260) and torch.isfinite(logits).all()
    states = model.encode(batch).states
    expected = {"bytes": batch["src"].shape[1],
                "patches": int(batch["n_patches"].max()),
                "wide": 2 * int(batch["n_patches"].max()),
                "table": 2 * int(batch["n_patches"].max())}[memory]
    assert states.shape == (4, expected, 32)


@pytest.mark.parametrize("pooling", ["project", "cross"])
def test_pooling_stays_inside_each_patch(pooling):
    model = tiny(pooling=pooling)
    c = codec(3)
    batch = c.batch(["abcdefgh"])  # patches abc|def|gh
    x = torch.randn(1, 8, 32)
    pool = model.pooling
    before = pool(x, batch, 3)
    x2 = x.clone()
    x2[0, 3:6] += torch.randn(3, 32)  # change only the bytes of patch 1
    after = pool(x2, batch, 3)
    torch.testing.assert_close(after[0, [0, 2]], before[0, [0, 2]])
    assert not torch.allclose(after[0, 1], before[0, 1])


@pytest.mark.parametrize("pooling", ["project", "cross"])
@pytest.mark.parametrize("memory", MEMORIES)
def test_batch_equals_rows_one_by_one(pooling, memory):
    """Padding bytes and padding patches change nothing."""
    model = tiny(pooling=pooling, **MEMORIES[memory])
    c = codec(3)
    batched = model(batch_for(c, TEXTS))
    for i, text in enumerate(TEXTS):
        alone = model(batch_for(c, [text]))
        torch.testing.assert_close(batched[i], alone[0], atol=1e-5, rtol=1e-4)


def test_project_pooling_keeps_byte_order():
    model = tiny(pooling="project")
    c = codec(3)
    pooled = []
    for text in ("abc", "cba"):
        batch = c.batch([text])
        x, _, _ = model.embeddings(batch["src"], batch["src_lens"], None, batch["ngrams"])
        pooled.append(model.pooling(x, batch, 1))
    assert not torch.allclose(*pooled)


def test_relative_values_decode_incrementally_like_the_full_prefix():
    model = tiny(relative_values=True)
    c = codec(3)
    batch = batch_for(c, TEXTS)
    memory = model.encode(batch)
    tokens = torch.randint(4, 260, (4, 5))
    full = model.decode(tokens, memory)
    cache = model.new_cache()
    steps = [model.decode(tokens[:, t:t + 1], memory, cache, start=t) for t in range(5)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-4)
    relative = model.decoder.blocks[0].cross_attn.relative
    with torch.no_grad():
        relative.weight.normal_()
        changed = model.decode(tokens, memory)
        relative.weight.zero_()
        relative.bias.zero_()
        plain = model.decode(tokens, memory)
    assert not torch.allclose(changed, plain)  # the relative channels reach the output


def test_utf8_embeddings_give_every_byte_a_distinct_trainable_vector():
    model = tiny(byte_embedding="utf8")
    bytes_ = model.embeddings.tokens
    weight = bytes_.weight
    assert weight.shape == (260, 32) and torch.linalg.matrix_rank(weight[4:].detach()) >= 12
    assert len({tuple(row.tolist()) for row in weight[4:].detach()}) == 256
    weight[4 + 0xD0].sum().backward()  # a Cyrillic lead byte, never seen by this model
    assert bytes_.bits.weight.grad.abs().sum() > 0  # its vector is made of shared parts


def test_utf8_byte_vectors_seen_when_decoding_follow_every_optimizer_step():
    """The fused optimizer updates weights in place without bumping their versions: the
    vectors validation and decoding read must still be the new ones."""
    from bltlab.config import TrainConfig
    from bltlab.layers import fixed_weights
    from bltlab.training import make_optimizer

    model = tiny(byte_embedding="utf8")
    bytes_ = model.embeddings.tokens
    optimizer = make_optimizer(model, TrainConfig(lr=0.1))
    with torch.no_grad():
        before = bytes_.weight.clone()
    bytes_.weight[4:].pow(2).sum().backward()
    optimizer.step()
    with torch.no_grad():
        after = bytes_.weight
    assert not torch.allclose(after[4:], before[4:])
    assert torch.equal(after, bytes_.weight.detach())
    with fixed_weights(model), torch.no_grad():  # decoding: built once, the same vectors
        assert bytes_.weight is bytes_.weight and torch.equal(bytes_.weight, after)
    assert bytes_.fixed is None


def test_ngrams_holding_a_byte_never_seen_in_training_back_off_at_evaluation():
    model, c = tiny(), codec()  # RoPE: no position vector is added
    tables = model.embeddings.ngrams
    for table in tables:
        torch.nn.init.normal_(table.weight)  # every bucket "trained"
    model.seen_bytes.fill_(False)
    model.see_texts(["abc", " xyz"])
    batch = batch_for(c, ["ab\u0416cab"])  # Cyrillic Ж: bytes 0xD0 0x96, never seen
    src, plain = batch["src"], model.embeddings.tokens(batch["src"])
    x, _, _ = model.embeddings(src, batch["src_lens"], None, batch["ngrams"],
                               model.unseen_bytes(src))
    # an n-gram ending at byte t covers bytes t-n+1..t: the unseen bytes are 2 and 3
    for t, ns_in_use in enumerate([(1, 2, 3), (1, 2, 3), (), (), (1,), (1, 2), (1, 2, 3)]):
        expected = plain[0, t] + sum(tables[i](batch["ngrams"][0, t, i])
                                     for i, n in enumerate((1, 2, 3)) if n in ns_in_use)
        torch.testing.assert_close(x[0, t], expected)
    assert src.shape[1] == 7
    model.train()  # training rows are all seen: nothing backs off, nothing is checked
    assert model.unseen_bytes(src) is None


def test_old_checkpoints_without_seen_bytes_count_every_byte_as_seen():
    from bltlab.checkpoint import complete_weights
    model = tiny()
    weights = {k: v for k, v in model.state_dict().items() if k != "seen_bytes"}
    completed = complete_weights(model, weights)
    assert bool(completed["seen_bytes"].all())
    model.load_state_dict(completed)  # strict: nothing missing


def test_characters_with_unseen_bytes_are_named_for_a_blt():
    from bltlab.evaluation import unknown_characters
    model = tiny()
    model.seen_bytes.fill_(False)
    model.see_texts(["abc é"])  # é is 0xC3 0xA9: È (0xC3 0x88) is new by one byte
    found = unknown_characters(model, codec(), ["abc", "cab é", "aÈb Ж", "Жa"])
    assert found["rows"] == 2 and found["characters"] == ["È", "Ж"]
    assert found["effect"] == "its bytes' n-grams back off"
