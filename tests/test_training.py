"""The training loop: accumulation, exact resume, checkpoint fallback, locks, torchrun."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

import bltlab.training as training
from bltlab.batching import Collate, PairDataset
from bltlab.checkpoint import load_checkpoint
from bltlab.data import Pairs, write_pairs
from bltlab.errors import BltlabError
from bltlab.fileio import RunLock
from bltlab.inputs import fit_codec
from bltlab.models import CharTransformer, ModelConfig
from bltlab.training import TrainConfig, train, train_step
from tests.conftest import strings

MODEL = dict(d_model=32, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
             dim_feedforward=64, max_len=32)


def small_run(tmp_path, **overrides):
    inputs = strings(400, 0, 10)
    write_pairs(tmp_path / "train.csv", inputs, [s[::-1] for s in inputs])
    cfg = dict(train_csv=str(tmp_path / "train.csv"), save_dir=str(tmp_path / "ck"), epochs=2,
               batch_size=16, lr=3e-3, warmup_steps=5, progress=False, save_every_steps=7,
               tensorboard=False)
    cfg.update(overrides)
    return TrainConfig(**cfg)


def test_accumulation_gives_the_gradients_of_one_big_batch():
    inputs = strings(32, 3, 12)
    codec = fit_codec("char", inputs)
    data = PairDataset.build(codec, Pairs(inputs, [s[::-1] for s in inputs]))
    collate = Collate(codec)
    big = collate([data[i] for i in range(32)])
    micro = [collate([data[i] for i in range(j, j + 8)]) for j in range(0, 32, 8)]
    grads = []
    for batches in ([big], micro):
        torch.manual_seed(0)
        model = CharTransformer(ModelConfig(vocab_size=len(codec.vocab), **MODEL))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        loss = train_step(model, batches, optimizer, TrainConfig(grad_clip=0),
                          torch.device("cpu"))
        grads.append((loss, [p.grad.clone() for p in model.parameters()]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_batch_too_big_for_memory_is_split_into_the_largest_micro_batches_that_fit():
    inputs = strings(12, 3, 12)
    codec = fit_codec("char", inputs)
    data = PairDataset.build(codec, Pairs(inputs, [s[::-1] for s in inputs]))
    model = CharTransformer(ModelConfig(vocab_size=len(codec.vocab), **MODEL))
    forward = model.forward

    def limited(batch):  # a device that holds 5 rows
        if batch["src"].shape[0] > 5:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return forward(batch)

    model.forward = limited
    fits = lambda n: training.step_fits(  # noqa: E731
        model, Collate(codec)([data[i] for i in range(n)]), torch.device("cpu"),
        training.Precision())
    assert training.fit_micro_batch(fits, 12) == 4  # 12, 6 do not fit; 12 / 3 does
    assert training.fit_micro_batch(fits, 5) == 5
    assert all(p.grad is None for p in model.parameters())  # the probes leave no gradients
    with pytest.raises(BltlabError, match="not even one row"):
        training.fit_micro_batch(lambda n: False, 8)


def final_weights(cfg):
    return load_checkpoint(training.checkpoint_paths(cfg.save_dir, "char")[1], "char")["model"]


def test_killed_and_resumed_run_ends_with_the_same_weights(tmp_path, monkeypatch):
    straight = small_run(tmp_path / "a")
    train("char", ModelConfig(**MODEL), straight)

    interrupted = small_run(tmp_path / "b")
    calls = {"n": 0}
    real_step = training.train_step

    def dying_step(*args, **kwargs):  # the process dies in step 38 (epoch 2, mid-way)
        calls["n"] += 1
        if calls["n"] == 38:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(training, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train("char", ModelConfig(**MODEL), interrupted)
    monkeypatch.setattr(training, "train_step", real_step)
    state = load_checkpoint(training.checkpoint_paths(interrupted.save_dir, "char")[1], "char")
    assert state["progress"]["step"] == 35 and state["progress"]["batch"] == 11  # mid-epoch
    result = train("char", ModelConfig(**MODEL), interrupted)  # same command: it resumes
    a, b = final_weights(straight), final_weights(interrupted)
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = json.loads((tmp_path / "b" / "ck" / "history_char.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2] == [
        e["epoch"] for e in result["history"]]


def test_truncated_latest_checkpoint_falls_back_to_the_one_before(tmp_path, capsys):
    cfg = small_run(tmp_path, epochs=1)
    train("char", ModelConfig(**MODEL), cfg)
    _, latest, _ = training.checkpoint_paths(cfg.save_dir, "char")
    previous = training.previous_path(latest)
    step_before = load_checkpoint(previous, "char")["progress"]["step"]
    latest.write_bytes(latest.read_bytes()[:1000])
    state, path = training.load_latest(latest, "char")
    assert path == previous and state["progress"]["step"] == step_before
    assert "warning" in capsys.readouterr().out


def test_a_finished_run_is_not_trained_again(tmp_path, monkeypatch):
    cfg = small_run(tmp_path, epochs=1, tensorboard=True)
    train("char", ModelConfig(**MODEL), cfg)
    assert list((tmp_path / "ck" / "tensorboard" / "char").glob("events.out.tfevents.*"))
    monkeypatch.setattr(training, "train_step", lambda *a, **k: pytest.fail("trained again"))
    train("char", ModelConfig(**MODEL), cfg)


def test_lock_refuses_a_live_run_and_takes_over_a_stale_one(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / ".lock").write_text(f"{socket.gethostname()} {sleeper.pid}\n")
        with pytest.raises(BltlabError, match=f"in use by another run .*{sleeper.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    lock = RunLock(tmp_path)
    assert "stale" in lock.acquire()  # its process is gone
    assert (tmp_path / ".lock").read_text().split() == [socket.gethostname(), str(os.getpid())]
    lock.release()
    assert not (tmp_path / ".lock").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_two_torchrun_processes_follow_one_process_at_the_same_global_batch(tmp_path):
    inputs = strings(400, 0, 10)
    write_pairs(tmp_path / "train.csv", inputs, [s[::-1] for s in inputs])
    common = ["train", "--mode", "char", "--train_csv", str(tmp_path / "train.csv"),
              "--epochs", "2", "--d_model", "32", "--nhead", "2", "--num_encoder_layers", "1",
              "--num_decoder_layers", "1", "--dim_feedforward", "64", "--max_len", "32",
              "--warmup_steps", "5", "--threads", "1", "--no_progress", "--no_tensorboard"]
    cli = [sys.executable, "-m", "bltlab.cli"]
    subprocess.run([*cli, *common, "--batch_size", "32", "--save_dir", str(tmp_path / "one")],
                   check=True, capture_output=True)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(free_port())]
    two = subprocess.run([*torchrun, "-m", "bltlab.cli", *common, "--batch_size", "16",
                          "--save_dir", str(tmp_path / "two")], capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-2000:]
    curves = [json.loads((tmp_path / d / "history_char.json").read_text())["epochs"]
              for d in ("one", "two")]
    for a, b in zip(*curves):
        assert a["step"] == b["step"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-3)
    assert two.stdout.count("epoch 1/2") == 1  # only rank 0 prints
