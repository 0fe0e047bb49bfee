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
