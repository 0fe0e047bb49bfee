"""FLOPs on real positions only: a row's cost does not depend on its batch, and the
polynomial equals torch's counter on real rows and a hand count of the matmuls."""

import random

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from bltlab.batching import EncodedPairs
from bltlab.evaluation import flop_metrics
from bltlab.flops import KINDS, FlopModel, measure, parts
from bltlab.layers import fixed_weights
from bltlab.models import build_model
from bltlab.spec import RunSpec, resolve
from tests.conftest import strings

TINY = dict(d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
            dim_feedforward=24, max_len=64, fresh_pairs=False)


def encoded(codec, inputs):
    return EncodedPairs.build(codec, inputs, [x[::-1] for x in inputs])


def counted(model, codec, inputs):
    """torch's FlopCounterMode over one teacher-forced pass of these rows as one batch."""
    batch = encoded(codec, inputs).batch(range(len(inputs)))
    with fixed_weights(model), FlopCounterMode(display=False) as c, \
            sdpa_kernel(SDPBackend.MATH), torch.no_grad():  # utf8 vectors: once per model
        model(batch)
    return c.get_total_flops()


@pytest.fixture(scope="module", params=["char", "blt", "blt-cross"])
def setup(request):
    texts = strings(300, 7, 30)
    mode, _, pooling = request.param.partition("-")
    extra = {"pooling": pooling} if pooling else {}
    spec, codec = resolve(RunSpec.of(mode, **TINY, **extra), texts)
    return build_model(spec.model).eval(), codec, texts


VARIANTS = {"char": ("char", {}), "char-sinusoidal": ("char", {"pos_encoding": "sinusoidal"}),
            "char-learned": ("char", {"pos_encoding": "learned", "from_end": False}),
            "blt": ("blt", {}), "blt-cross-table": ("blt", {"pooling": "cross",
                                                           "byte_embedding": "table"}),
            "blt-bytes-sinusoidal": ("blt", {"decoder_memory": "bytes",
                                             "pos_encoding": "sinusoidal"})}


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_flop_lands_in_a_named_part(variant):
    mode, extra = VARIANTS[variant]
    spec, _ = resolve(RunSpec.of(mode, **TINY, **extra), strings(50, 7, 30))
    model = build_model(spec.model).eval()
    expected = (["embeddings", "encoder", "decoder", "head"] if mode == "char" else
                ["embeddings", "local_encoder", "pooling", "global_transformer",
                 "local_decoder", "head"])
    assert parts(model) == expected
    for kind in KINDS:
        seen = measure(model, kind, 13, 14, 5)
        assert "other" not in seen and seen["total"] == sum(seen[p] for p in expected)
        assert all(seen[p] > 0 for p in expected if p != "embeddings")


def test_each_rows_cost_is_its_own_and_not_its_batchs(setup):
    model, codec, texts = setup
    rows = texts[:20]
    per_row = flop_metrics(model, codec, rows, [x[::-1] for x in rows])
    total = per_row["forward_flops_per_row"]["total"]
    alone = [counted(model, codec, [x]) for x in rows]  # batch of one: no padding
    assert total == pytest.approx(sum(alone) / len(alone), abs=0.5)  # rounded to whole FLOPs
    shuffled = random.Random(0).sample(rows, len(rows))
    again = flop_metrics(model, codec, shuffled, [x[::-1] for x in shuffled])
    assert again["forward_flops_per_row"]["total"] == pytest.approx(total, rel=1e-12)
    padded = counted(model, codec, rows) / len(rows)  # what a padded batch executes
    assert padded > 1.2 * total


@pytest.mark.parametrize("size", [1, 7, 256])
def test_equal_rows_in_a_batch_of_any_size_cost_the_same_per_row(setup, size):
    model, codec, _ = setup
    rows = ["abcdefgh abc"] * size  # equal rows: a batch holds no padding
    flops = FlopModel.fit(model.cfg)
    expected = flops.per_row("forward", *encoded(codec, rows).sizes())
    assert counted(model, codec, rows) / size == pytest.approx(expected["total"], rel=0.005)


def test_a_tiny_char_model_costs_a_hand_count_of_its_matmuls():
    d, ff, V, L = 16, 24, 10, 9
    T = L + 1  # BOS + the target
    cfg = RunSpec.of("char", **TINY).model.replace(vocab_size=V)
    attention = lambda q, k: 2 * q * k * d * 2  # noqa: E731 scores and weighted values
    encoder = 2 * L * d * 3 * d + attention(L, L) + 2 * L * d * d + 2 * 2 * L * d * ff
    decoder = (2 * T * d * 3 * d + attention(T, T) + 2 * T * d * d  # self-attention
               + 2 * T * d * d + 2 * L * d * 2 * d + attention(T, L) + 2 * T * d * d  # cross
               + 2 * 2 * T * d * ff)  # feed-forward
    head = 2 * T * d * V  # the tied output layer
    got = FlopModel.fit(cfg).cost("forward", L, T, 0)
    assert (got["embeddings"], got["encoder"], got["decoder"], got["head"], got["total"]) == (
        0, encoder, decoder, head, encoder + decoder + head)
    assert FlopModel.fit(cfg).cost("train", L, T, 0)["total"] == 3 * (encoder + decoder + head)
