import json
import os
import random
import sys
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


XDIST = "PYTEST_XDIST_WORKER" in os.environ  # pytest -n N: N processes share the cores
THREADS = 1 if XDIST else 2  # never more threads than cores, in all
if XDIST and hasattr(os, "sched_setaffinity"):  # one core per worker, its subprocesses too
    cores = sorted(os.sched_getaffinity(0))
    worker = int(os.environ["PYTEST_XDIST_WORKER"].removeprefix("gw"))
    os.sched_setaffinity(0, {cores[worker % len(cores)]})


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.set_num_threads(THREADS)


@pytest.fixture(scope="session", autouse=True)
def _flop_cache(tmp_path_factory):
    """FLOP polynomials kept for this test run only (subprocesses and, under pytest -n,
    the other workers share them: entries are written atomically)."""
    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if XDIST else base) / "flop-cache"
    folder.mkdir(exist_ok=True)
    os.environ["BLTLAB_CACHE"] = str(folder)


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


def write_reversal(path, inputs):
    """An input,target CSV of `inputs` and their reversals; returns its path as a str."""
    from bltlab.data import write_pairs

    write_pairs(path, inputs, [s[::-1] for s in inputs])
    return str(path)


def trained_once(tmp_path_factory, name: str, make_spec) -> tuple[Path, dict]:
    """Train a shared tiny run once per test session: under pytest -n the first worker
    trains it and the others wait for it and read its result (its files are read-only to
    the tests). Returns (its folder, train()'s result)."""
    from filelock import FileLock

    from bltlab.training import train

    base = tmp_path_factory.getbasetemp()
    folder = (base.parent if XDIST else base) / name
    with FileLock(f"{folder}.lock"):
        done = folder / "result.json"
        if not done.is_file():
            torch.set_num_threads(THREADS)
            folder.mkdir(exist_ok=True)
            done_tmp = folder / "result.json.tmp"
            done_tmp.write_text(json.dumps(train(make_spec(folder))))
            done_tmp.rename(done)
    return folder, json.loads(done.read_text())


@pytest.fixture(scope="session")
def tiny_char_run(tmp_path_factory):
    """A tiny char model (with the broad recipe's start token) trained for 4 epochs on
    6,000 random strings (shared by tests):
    (its folder, train()'s result, its training inputs)."""
    from bltlab.spec import RunSpec

    inputs = strings(6000, 0)
    folder, result = trained_once(tmp_path_factory, "tiny_char", lambda tmp_path: RunSpec.of(
        "char", d_model=48, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
        dim_feedforward=96, max_len=32, start_token=True, train_csv=write_reversal(
            tmp_path / "train.csv", inputs), save_dir=str(tmp_path / "ck"),
        epochs=4, batch_size=32, lr=3e-3, warmup_steps=20, progress_bars=False,
        fresh_pairs=False))
    return folder, result, inputs


@pytest.fixture(scope="session")
def tiny_blt_run(tmp_path_factory):
    """A tiny BLT (static 2-byte patches) trained for 20 epochs on 4,000 random strings:
    (its folder, train()'s result, its training inputs). It learns reversal in a sudden
    step whose epoch varies with the seed and the CPU's arithmetic: at 6 epochs 3 seeds
    of 6 reached 90% held out, at 12 epochs 5 of 6, at 14 epochs 10 of 10 (docs/log/19);
    with fused kernels (docs/log/26) 1 of 3 at 14 epochs on one thread, and seeds 0 and 2
    at 100% from epochs 17 and 15."""
    from bltlab.spec import RunSpec

    inputs = strings(4000, 0, 12)
    folder, result = trained_once(tmp_path_factory, "tiny_blt", lambda tmp_path: RunSpec.of(
        "blt", d_model=32, nhead=2, dim_feedforward=64, max_len=32,
        ngram_buckets=256, patcher="static", static_size=2, max_patch_len=4,
        train_csv=write_reversal(tmp_path / "train.csv", inputs),
        save_dir=str(tmp_path / "ck"), epochs=20, batch_size=32, lr=5e-3,
        warmup_steps=20, progress_bars=False, tensorboard=False, fresh_pairs=False))
    return folder, result, inputs


CLI = [sys.executable, "-m", "bltlab.cli"]  # the command line in a process of its own


def one_line_error(capsys, code, expected_code=2):
    """The error a command printed: exit code 2, one line, no traceback."""
    err = capsys.readouterr().err
    assert code == expected_code, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err
