"""FLOPs on real positions only: a row's cost does not depend on its batch, and the
polynomial equals torch's counter on real rows and a hand count of the matmuls."""

import random

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from bltlab.batching import Collate
from bltlab.evaluation import flop_metrics
from bltlab.flops import FlopModel, row_lengths
from bltlab.models import build_model
from bltlab.spec import RunSpec, resolve
from tests.conftest import strings

TINY = dict(d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
            dim_feedforward=24, max_len=64)


def counted(model, codec, inputs):
    """torch's FlopCounterMode over one teacher-forced pass of these rows as one batch."""
    collate = Collate(codec)
    batch = collate([(r, codec.target(x[::-1])) for r, x in zip(codec.rows(inputs), inputs)])
    with FlopCounterMode(display=False) as c, sdpa_kernel(SDPBackend.MATH), torch.no_grad():
        model(batch)
    return c.get_total_flops()


@pytest.fixture(scope="module", params=["char", "blt", "blt-offsets", "blt-both"])
def setup(request):
    texts = strings(300, 7, 30)
    mode, _, memory = request.param.partition("-")
    extra = {"decoder_memory": memory} if memory else {}
    spec, codec = resolve(RunSpec.of(mode, **TINY, **extra), texts)
    return build_model(spec.model).eval(), codec, texts


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
    expected = flops.per_row("forward", *row_lengths(codec, rows, [x[::-1] for x in rows]))
    assert counted(model, codec, rows) / size == pytest.approx(expected["total"], rel=0.005)


def test_a_tiny_char_model_costs_a_hand_count_of_its_matmuls():
    d, ff, V, L = 16, 24, 10, 9
    T = L + 1  # BOS + the target
    cfg = RunSpec.of("char", **TINY).model.replace(vocab_size=V)
    attention = lambda q, k: 2 * q * k * d * 2  # noqa: E731 scores and weighted values
    encoder = 2 * L * d * 3 * d + attention(L, L) + 2 * L * d * d + 2 * 2 * L * d * ff
    decoder = (2 * T * d * 3 * d + attention(T, T) + 2 * T * d * d  # self-attention
               + 2 * T * d * d + 2 * L * d * 2 * d + attention(T, L) + 2 * T * d * d  # cross
               + 2 * 2 * T * d * ff + 2 * T * d * V)  # feed-forward, tied output head
    got = FlopModel.fit(cfg).cost("forward", L, T, 0)
    assert (got["encoder"], got["decoder"], got["total"]) == (encoder, decoder, encoder + decoder)
    assert FlopModel.fit(cfg).cost("train", L, T, 0)["total"] == 3 * (encoder + decoder)
