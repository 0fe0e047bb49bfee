import pytest
import torch

from bltlab.config import BLTConfig, PatcherConfig
from bltlab.inputs import ByteCodec
from bltlab.models import BLT
from bltlab.patching import Patcher
from bltlab.vocab import BOS

TEXTS = ["hello world", "café ❤️ x", "ab", "the quick brown fox"]


def codec(size=3):
    patcher = Patcher(PatcherConfig("static", static_size=size, max_patch_len=size))
    return ByteCodec(patcher, (1, 2, 3), 64)


MEMORIES = {"patches": {"global_factor": 1}, "bytes": {"decoder_memory": "bytes"},
            "offsets": {"global_factor": 2, "decoder_memory": "offsets"},
            "both": {"global_factor": 2, "decoder_memory": "both"},
            "wide": {"global_factor": 2},  # 2 decoder vectors per patch
            "utf8": {"global_factor": 2, "byte_embedding": "utf8"},
            "utf8-pairs": {"global_factor": 2, "byte_embedding": "utf8-pairs"}}


def tiny(**kw):
    torch.manual_seed(0)
    cfg = BLTConfig(d_model=32, nhead=4, dim_feedforward=64, max_len=64, ngram_buckets=64,
                    patch_slots=6, **kw)
    model = BLT(cfg).eval()
    model.seen_bytes.fill_(True)  # as if trained on every byte: n-grams always count
    return model


def batch_for(c, texts):
    batch = c.collate(c.rows(texts))
    batch["tgt_in"] = torch.full((len(texts), 3), BOS)
    return batch


def test_codec_rows_describe_the_patches():
    c = codec(3)
    rows = c.rows(TEXTS)
    for text, row in zip(TEXTS, rows):
        assert c.decode(row["src"].tolist()) == text  # non-ASCII survives the round trip
        data = text.encode()
        assert len(row["src"]) == len(data)
        lengths = [int((row["patch"] == p).sum()) for p in range(len(row["patch_to_end"]))]
        assert sum(lengths) == len(data)
        ends = [sum(lengths[: p + 1]) - 1 for p in range(len(lengths))]
        assert row["patch_to_end"].tolist() == [len(data) - 1 - e for e in ends]
        assert all(row["in_patch"][i] == i - sum(lengths[: row["patch"][i]])
                   for i in range(len(data)))


@pytest.mark.parametrize("pooling", ["project", "cross"])
@pytest.mark.parametrize("memory", MEMORIES)
def test_shapes(pooling, memory):
    model = tiny(pooling=pooling, **MEMORIES[memory])
    c = codec()
    batch = batch_for(c, TEXTS)
    logits = model(batch)
    assert logits.shape == (4, 3, 260) and torch.isfinite(logits).all()
    states = model.encode(batch).states
    expected = {"bytes": batch["src"].shape[1], "offsets": batch["src"].shape[1],
                "both": 2 * int(batch["n_patches"].max()) + batch["src"].shape[1],
                "patches": int(batch["n_patches"].max()),
                "wide": 2 * int(batch["n_patches"].max()),
                "utf8": 2 * int(batch["n_patches"].max()),
                "utf8-pairs": 2 * int(batch["n_patches"].max())}[memory]
    assert states.shape == (4, expected, 32)


def test_offsets_memory_reads_each_byte_from_its_patch_at_its_offset():
    model = tiny(decoder_memory="offsets")
    c = codec(3)
    batch = batch_for(c, ["abcdefgh", "xy"])  # patches abc|def|gh and xy
    with torch.no_grad():
        model.unpool.weight.zero_()  # every vector is then its in-patch position's bias
        model.unpool.bias.normal_()
        memory = model.encode(batch)
    per_offset = model.unpool.bias.view(6, 32)
    expected = per_offset[batch["in_patch"]]
    torch.testing.assert_close(memory.states, expected)
    assert memory.mask[:, 0, 0].tolist() == [[True] * 8, [True] * 2 + [False] * 6]
    with torch.no_grad():
        model.unpool.weight.normal_()
        states = model.encode(batch).states
    assert not torch.allclose(states[0, 0], states[0, 1])  # one patch, two offsets
    both = tiny(decoder_memory="both")
    both.load_state_dict(model.state_dict())  # same weights: offsets' vectors come last
    with torch.no_grad():
        joined = both.encode(batch)
    torch.testing.assert_close(joined.states[:, -8:], states)
    assert joined.states.shape[1] == 2 * 3 + 8 and joined.rot[0].shape[2] == 2 * 3 + 8


@pytest.mark.parametrize("pooling", ["project", "cross"])
def test_pooling_stays_inside_each_patch(pooling):
    model = tiny(pooling=pooling)
    c = codec(3)
    batch = c.collate(c.rows(["abcdefgh"]))  # patches abc|def|gh
    x = torch.randn(1, 8, 32)
    pool = model.pool_project if pooling == "project" else model.pool_cross
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
    a = model.pool_project(model.embed_bytes(c.collate(c.rows(["abc"]))),
                           c.collate(c.rows(["abc"])), 1)
    b = model.pool_project(model.embed_bytes(c.collate(c.rows(["cba"]))),
                           c.collate(c.rows(["cba"])), 1)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("kind", ["patches", "offsets", "both"])
def test_relative_values_decode_incrementally_like_the_full_prefix(kind):
    model = tiny(relative_values=True, decoder_memory=kind)
    c = codec(3)
    batch = batch_for(c, TEXTS)
    memory = model.encode(batch)
    tokens = torch.randint(4, 260, (4, 5))
    full = model.decoder(tokens, memory)
    cache = model.new_cache()
    steps = [model.decode(tokens[:, t:t + 1], memory, cache, start=t) for t in range(5)]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-4)
    relative = model.decoder.blocks[0].cross_attn.relative
    with torch.no_grad():
        relative.weight.normal_()
        changed = model.decoder(tokens, memory)
        relative.weight.zero_()
        relative.bias.zero_()
        plain = model.decoder(tokens, memory)
    assert not torch.allclose(changed, plain)  # the relative channels reach the output


def test_utf8_embeddings_give_every_byte_a_distinct_trainable_vector():
    model = tiny(byte_embedding="utf8")
    weight = model.embed.weight
    assert weight.shape == (260, 32) and torch.linalg.matrix_rank(weight[4:].detach()) >= 12
    assert len({tuple(row.tolist()) for row in weight[4:].detach()}) == 256
    weight[4 + 0xD0].sum().backward()  # a Cyrillic lead byte, never seen by this model
    assert model.embed.bits.weight.grad.abs().sum() > 0  # its vector is made of shared parts


def test_bit_pair_terms_start_at_zero_and_add_sign_products():
    pairs = tiny(byte_embedding="utf8-pairs")
    assert not pairs.embed.pairs.weight.any()  # starts as a bits-only model
    before = pairs.embed.weight.detach().clone()
    u = torch.randn(32, 28)
    with torch.no_grad():
        pairs.embed.pairs.weight.copy_(u)
    b = 0xD0  # 1101 0000: bits 4, 6, 7 set
    signs = [1.0 if b >> k & 1 else -1.0 for k in range(8)]
    products = [signs[i] * signs[j] for i in range(8) for j in range(i + 1, 8)]
    added = pairs.embed.weight[4 + b] - before[4 + b]
    assert torch.allclose(added, u @ torch.tensor(products), atol=1e-5)
    pairs.embed.build()[4 + b].sum().backward()  # an unseen byte's pair terms are shared ones
    assert pairs.embed.pairs.weight.grad.abs().sum() > 0


def test_utf8_byte_vectors_are_built_once_per_parameter_state_when_decoding():
    model = tiny(byte_embedding="utf8")
    with torch.no_grad():
        first = model.embed.weight
        assert model.embed.weight is first  # decoding steps reuse it
        model.embed.bits.weight.mul_(2.0)  # an optimizer step changes the parameters
        assert model.embed.weight is not first
        assert torch.equal(model.embed.weight, model.embed.build())
    assert model.embed.weight.requires_grad  # training always builds a fresh one


def test_ngrams_holding_a_byte_never_seen_in_training_back_off_at_evaluation():
    model, c = tiny(), codec()
    for table in model.ngram_embeds:
        torch.nn.init.normal_(table.weight)  # every bucket "trained"
    model.seen_bytes.fill_(False)
    model.see_texts(["abc", " xyz"])
    batch = batch_for(c, ["ab\u0416cab"])  # Cyrillic Ж: bytes 0xD0 0x96, never seen
    src, plain = batch["src"], model.embed(batch["src"])
    x = model.embed_bytes(batch)
    # an n-gram ending at byte t covers bytes t-n+1..t: the unseen bytes are 2 and 3
    for t, ns_in_use in enumerate([(1, 2, 3), (1, 2, 3), (), (), (1,), (1, 2), (1, 2, 3)]):
        expected = plain[0, t] + sum(model.ngram_embeds[i](batch["ngrams"][0, t, i])
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
