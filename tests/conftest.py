import random
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(2)


@pytest.fixture
def seed_test_csv() -> Path:
    """The seed's test.csv from ../shared/data (skipped when absent)."""
    path = SHARED_DATA / "test.csv"
    if not path.is_file():
        pytest.skip("../shared/data/test.csv is not present")
    return path


def strings(n, seed, longest=16):
    """Random strings over a small alphabet with a space and a non-ASCII letter."""
    rng = random.Random(seed)
    return ["".join(rng.choice("abcdefgh éz") for _ in range(rng.randint(4, longest)))
            for _ in range(n)]


@pytest.fixture(scope="session")
def tiny_char_run(tmp_path_factory):
    """A tiny char model trained for 5 epochs on 8,000 random strings (shared by tests):
    (its folder, train()'s result, its training inputs)."""
    from bltlab.data import write_pairs
    from bltlab.models import ModelConfig
    from bltlab.training import TrainConfig, train

    torch.set_num_threads(2)
    tmp_path = tmp_path_factory.mktemp("tiny_char")
    inputs = strings(8000, 0)
    write_pairs(tmp_path / "train.csv", inputs, [s[::-1] for s in inputs])
    model_cfg = ModelConfig(d_model=48, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                            dim_feedforward=96, max_len=32, pos_encoding="rope")
    cfg = TrainConfig(train_csv=str(tmp_path / "train.csv"), save_dir=str(tmp_path / "ck"),
                      epochs=5, batch_size=32, lr=3e-3, warmup_steps=20, progress=False)
    return tmp_path, train("char", model_cfg, cfg), inputs
