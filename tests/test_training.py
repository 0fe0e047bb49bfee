"""The training loop: accumulation, schedules, exact resume, checkpoint fallback, locks,
torchrun."""

import functools
import hashlib
import json
import math
import multiprocessing
import os
import runpy
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import bltlab.training as training
from bltlab.batching import EncodedPairs
from bltlab.checkpoint import (
    checkpoint_paths,
    load_checkpoint,
    load_latest,
    load_model,
    previous_path,
    save_checkpoint,
)
from bltlab.cli import main
from bltlab.config import TrainConfig
from bltlab.errors import BltlabError
from bltlab.fileio import RunLock
from bltlab.models import CharTransformer
from bltlab.runtime import release_memory
from bltlab.spec import RunSpec, resolve
from bltlab.training import lr_factor, train, train_step
from bltlab.vocab import PAD
from tests.conftest import strings, write_reversal

MODEL = dict(d_model=32, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
             dim_feedforward=64, max_len=32)


def small_run(tmp_path, mode="char", **settings):
    inputs = strings(400, 0, 10)
    model = MODEL if mode == "char" else {k: v for k, v in MODEL.items()
                                          if k != "num_encoder_layers"}
    base = dict(train_csv=write_reversal(tmp_path / "train.csv", inputs),
                save_dir=str(tmp_path / "ck"), epochs=2, batch_size=16, lr=3e-3,
                warmup_steps=5, progress_bars=False, save_every_steps=7, tensorboard=False,
                fresh_pairs=False)
    if mode == "blt":
        base.update(patcher="static", static_size=3, max_patch_len=3, ngram_buckets=64)
    return RunSpec.of(mode, **{**model, **base, **settings})


def char_batches(n, rows_per_batch):
    inputs = strings(n, 3, 12)
    spec, codec = resolve(RunSpec.of("char", **MODEL, fresh_pairs=False), inputs)
    data = EncodedPairs.build(codec, inputs, [s[::-1] for s in inputs])
    return spec, [data.batch(range(j, j + rows_per_batch)) for j in range(0, n, rows_per_batch)]


def test_accumulation_gives_the_gradients_of_one_big_batch():
    spec, (big,) = char_batches(32, 32)
    _, micro = char_batches(32, 8)
    grads = []
    for batches in ([big], micro):
        torch.manual_seed(0)
        model = CharTransformer(spec.model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        loss = train_step(model, batches, optimizer, TrainConfig(grad_clip=0),
                          torch.device("cpu"))
        grads.append((loss, [p.grad.clone() for p in model.parameters()]))
    assert grads[0][0] == pytest.approx(grads[1][0], rel=1e-5)
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_batch_too_big_for_memory_is_split_into_the_largest_micro_batches_that_fit():
    spec, (batch,) = char_batches(12, 12)
    model = CharTransformer(spec.model)
    forward = model.forward

    def limited(batch):  # a device that holds 5 rows
        if batch["src"].shape[0] > 5:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return forward(batch)

    model.forward = limited
    fits = lambda n: training.step_fits(  # noqa: E731
        model, {k: v[:n] for k, v in batch.items()}, torch.device("cpu"), training.Precision())
    assert training.fit_micro_batch(fits, 12) == 4  # 12, 6 do not fit; 12 / 3 does
    assert training.fit_micro_batch(fits, 5) == 5
    assert all(p.grad is None for p in model.parameters())  # the probes leave no gradients
    with pytest.raises(BltlabError, match="not even one row"):
        training.fit_micro_batch(lambda n: False, 8)


@pytest.mark.parametrize("name, expected", [
    ("cosine", [0.25, 1.0, 0.5, 0.0]),
    ("step", [0.25, 1.0, 0.25, 0.125]),
    ("constant", [0.25, 1.0, 1.0, 1.0]),
    ("plateau", [0.25, 1.0, 1.0, 1.0])])
def test_schedules(name, expected):
    cfg = TrainConfig(lr_scheduler=name, warmup_steps=4)
    got = [lr_factor(step, 104, cfg) for step in (0, 4, 54, 104)]
    assert got == pytest.approx(expected, abs=1e-9)


def test_label_smoothing_spreads_a_share_of_each_target_over_the_vocabulary():
    """(1 - ε) · cross-entropy + ε · the mean over the vocabulary of -log p; PAD rows count
    for nothing either way."""
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 7)
    batch = {"tgt_out": torch.tensor([[4, 5, PAD], [6, 4, 5]])}
    logp, keep = logits.log_softmax(-1), batch["tgt_out"] != PAD
    nll = -logp.gather(-1, batch["tgt_out"].clamp(min=0)[..., None])[..., 0]
    expected = (0.9 * nll - 0.1 * logp.mean(-1))[keep].sum()
    assert training.token_loss(logits, batch, smoothing=0.1) == pytest.approx(float(expected))
    assert training.token_loss(logits, batch) == pytest.approx(float(nll[keep].sum()))
    with pytest.raises(BltlabError, match="label_smoothing"):
        TrainConfig(label_smoothing=1.0)


def test_label_smoothed_runs_keep_the_weights_with_the_lowest_smoothed_validation_loss(
        tmp_path, monkeypatch):
    """At equal exact match the tie-break is the validation loss of the objective trained:
    here the plain loss rises each epoch while the smoothed one falls (as in log 31's runs),
    so the last epoch is kept, not the first."""
    calls = []

    def fake_scores(model, loader, device, smoothing=0.0):
        calls.append(smoothing)
        epoch = sum(1 for s in calls if s == smoothing)
        return (1.0 - 0.1 * epoch if smoothing else 0.3 + 0.01 * epoch), 1.0

    monkeypatch.setattr(training, "validation_scores", fake_scores)
    result = train(small_run(tmp_path, epochs=3, label_smoothing=0.1))
    assert set(calls) == {0.1}
    assert result["best"]["epoch"] == 3
    assert [round(e["val_loss"], 6) for e in result["history"]] == [0.9, 0.8, 0.7]


def test_plateau_cuts_and_early_stopping(tmp_path, monkeypatch):
    scores = iter([0.5, 0.4, 0.4, 0.3, 0.3, 0.9])

    def fake_validate(run):
        row = {"epoch": run.state.epoch + 1, "step": run.state.step, "train_loss": 1.0,
               "lr": run.optimizer.param_groups[0]["lr"], "epoch_seconds": 1.0,
               "samples_per_s": 1.0, "val_loss": 1.0, "val_exact_match": next(scores)}
        return row

    monkeypatch.setattr(training, "validate", fake_validate)
    spec = small_run(tmp_path, epochs=6, lr_scheduler="plateau", plateau_patience=2,
                     plateau_factor=0.5, early_stopping_patience=4, warmup_steps=0)
    result = train(spec)
    history = result["history"]
    assert [e["epoch"] for e in history] == [1, 2, 3, 4, 5]  # stopped: 4 epochs stale
    assert result["stopped"] and result["best"]["epoch"] == 1
    lrs = [e["lr"] for e in history]
    assert lrs[1] == lrs[2] == pytest.approx(3e-3)  # epochs 2-3: one stale epoch, then two
    assert lrs[3] == pytest.approx(1.5e-3) and lrs[4] == pytest.approx(1.5e-3)


def test_fresh_pairs_give_each_epoch_new_rows(tmp_path, monkeypatch):
    seen = []
    real = training.generated_pairs

    def recording(n, seed, epoch, data):
        pairs = real(n, seed, epoch, data)
        seen.append((epoch, n, pairs.inputs[0]))
        return pairs

    monkeypatch.setattr(training, "generated_pairs", recording)
    result = train(small_run(tmp_path, fresh_pairs=True, max_len=256, profile="seed"))
    assert [e for e, _, _ in seen] == [0, 1] and seen[0][1] == 380  # 400 rows - 20 held out
    assert seen[0][2] != seen[1][2]
    assert result["spec"]["model"]["vocab_size"] > 40  # the profile's alphabet is in it


def test_a_blt_records_the_bytes_it_was_trained_on(tmp_path, monkeypatch):
    spec = small_run(tmp_path, "blt", fresh_pairs=True, max_len=256, epochs=2)
    train(spec)
    best = checkpoint_paths(spec.train.save_dir, "blt")[0]
    model, codec, _ = load_model(best, "blt")
    train_rows = training.load_rows(spec)[0]
    trained = {b for epoch in (0, 1) for b in "".join(
        training.rows_of_epoch(spec, codec, train_rows, epoch).inputs).encode()}
    assert {b for b in range(256) if model.seen_bytes[b]} == trained
    assert 0xD0 not in trained  # the broad profile leaves Cyrillic out: it backs off
    # a checkpoint from before the record gets the same one by replaying its rows
    state = load_checkpoint(best)
    del state["model"]["seen_bytes"]
    save_checkpoint(tmp_path / "old.pt", state)
    script = Path(__file__).parents[1] / "scripts" / "record_seen_bytes.py"
    monkeypatch.setattr(sys, "argv", [str(script), str(tmp_path / "old.pt"),
                                      "--out", str(tmp_path / "new.pt")])
    runpy.run_path(str(script), run_name="__main__")
    assert torch.equal(load_checkpoint(tmp_path / "new.pt")["model"]["seen_bytes"],
                       model.seen_bytes)


def final_weights(spec):
    return load_checkpoint(checkpoint_paths(spec.train.save_dir, spec.mode)[1])["model"]


@pytest.mark.parametrize("mode,settings", [("char", {}), ("blt", {}),
                                           ("char", {"ema_decay": 0.9})])
def test_killed_and_resumed_run_ends_with_the_same_weights(tmp_path, monkeypatch, mode,
                                                           settings):
    straight = small_run(tmp_path / "a", mode, **settings)
    train(straight)
    interrupted = small_run(tmp_path / "b", mode, **settings)
    calls = {"n": 0}
    real_step = training.train_step

    def dying_step(*args, **kwargs):  # the process dies in step 38 (epoch 2, mid-way)
        calls["n"] += 1
        if calls["n"] == 38:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(training, "train_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train(interrupted)
    monkeypatch.setattr(training, "train_step", real_step)
    state = load_checkpoint(checkpoint_paths(interrupted.train.save_dir, mode)[1])
    assert state["run_state"]["step"] == 35 and state["run_state"]["batch"] == 11  # mid-epoch
    result = train(interrupted)  # same command: it resumes
    a, b = final_weights(straight), final_weights(interrupted)
    assert all(torch.equal(a[k], b[k]) for k in a)
    if settings:  # the moving average went on where it stopped
        a, b = (load_checkpoint(checkpoint_paths(s.train.save_dir, mode)[1])["ema"]
                for s in (straight, interrupted))
        assert all(torch.equal(a[k], b[k]) for k in a)
    history = json.loads((tmp_path / "b" / "ck" / f"history_{mode}.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2] == [
        e["epoch"] for e in result["history"]]


def test_a_moving_average_run_validates_and_keeps_the_averaged_weights(tmp_path):
    spec = small_run(tmp_path, ema_decay=0.9, epochs=1)
    result = train(spec)
    best_path, latest_path = checkpoint_paths(spec.train.save_dir, "char")[:2]
    best, latest = load_checkpoint(best_path)["model"], load_checkpoint(latest_path)
    averaged = {k.removeprefix("module."): v for k, v in latest["ema"].items()}
    assert latest["ema"]["n_averaged"] == latest["run_state"]["step"]
    assert all(torch.equal(best[k], averaged[k]) for k in best)
    assert not all(torch.equal(best[k], latest["model"][k]) for k in best)
    load_model(best_path)  # an ordinary checkpoint
    row = result["history"][-1]
    assert row["val_loss_raw"] != row["val_loss"]  # the weights as trained, validated beside
    assert row["val_loss"] == load_checkpoint(best_path)["metrics"]["val_loss"]


def test_another_configuration_is_refused_where_a_run_lives_unless_fresh(tmp_path, capsys):
    """A new configuration never replaces another run's checkpoints and history unasked;
    --fresh (resume never) does."""
    train(small_run(tmp_path, epochs=1))
    best, latest, history = checkpoint_paths(tmp_path / "ck", "char")
    kept = {p: p.read_bytes() for p in (best, latest, history)}
    with pytest.raises(BltlabError, match=r"holds another char run \(train.lr 0.003 -> 0.001\);"
                                          " --fresh replaces it"):
        train(small_run(tmp_path, epochs=1, lr=1e-3))  # same folder, other spec
    assert {p: p.read_bytes() for p in kept} == kept
    for path in (latest, previous_path(latest)):  # a best checkpoint alone is kept as well
        path.unlink()
    with pytest.raises(BltlabError, match="cannot be continued"):
        train(small_run(tmp_path, epochs=1, lr=1e-3))
    capsys.readouterr()
    result = train(small_run(tmp_path, epochs=1, lr=1e-3, resume="never"))  # --fresh
    assert "epoch 1/1" in capsys.readouterr().out and result["spec"]["train"]["lr"] == 1e-3
    assert load_checkpoint(latest)["spec"]["train"]["lr"] == 1e-3


def test_resume_path_continues_a_given_checkpoint(tmp_path, capsys):
    first = small_run(tmp_path / "a", epochs=1)
    train(first)
    latest = checkpoint_paths(first.train.save_dir, "char")[1]
    second = small_run(tmp_path / "b", epochs=2, resume=str(latest))
    capsys.readouterr()
    result = train(second)
    assert "resumed after step 24 (epoch 2, step 0 of the epoch)" in capsys.readouterr().out
    assert [e["epoch"] for e in result["history"]] == [1, 2]
    averaged = small_run(tmp_path / "f", epochs=2, resume=str(latest), ema_decay=0.9)
    train(averaged)  # a checkpoint kept no average: it starts from the weights continued
    ema = load_checkpoint(checkpoint_paths(averaged.train.save_dir, "char")[1])["ema"]
    assert int(ema["n_averaged"]) == 24  # the steps of epoch 2
    with pytest.raises(BltlabError, match="no such checkpoint"):
        train(small_run(tmp_path / "c", resume=str(tmp_path / "none.pt")))
    with pytest.raises(BltlabError, match="is a 'char' checkpoint, not 'blt'"):  # one step
        train(small_run(tmp_path / "e", "blt", resume=str(latest)))
    with pytest.raises(BltlabError, match="no latest checkpoint"):
        train(small_run(tmp_path / "d", resume="latest"))


def test_truncated_latest_checkpoint_falls_back_to_the_one_before(tmp_path, capsys):
    spec = small_run(tmp_path, epochs=1)
    train(spec)
    _, latest, _ = checkpoint_paths(spec.train.save_dir, "char")
    previous = previous_path(latest)
    step_before = load_checkpoint(previous)["run_state"]["step"]
    latest.write_bytes(latest.read_bytes()[:1000])
    state, path = load_latest(latest, "char")
    assert path == previous and state["run_state"]["step"] == step_before
    assert "warning" in capsys.readouterr().out


def test_a_finished_run_is_not_trained_again(tmp_path, monkeypatch):
    spec = small_run(tmp_path, epochs=1, tensorboard=True)
    train(spec)
    assert list((tmp_path / "ck" / "tensorboard" / "char").glob("events.out.tfevents.*"))
    monkeypatch.setattr(training, "train_step", lambda *a, **k: pytest.fail("trained again"))
    train(spec)


@pytest.mark.subprocess
def test_lock_refuses_a_live_run_and_notes_a_gone_one(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from bltlab.fileio import RunLock; RunLock(sys.argv[1]).acquire();"
        " print('held', flush=True); time.sleep(60)"), str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(BltlabError, match=f"in use by another run .*{holder.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    lock = RunLock(tmp_path)
    assert "a run that is gone" in lock.acquire()  # killed: the kernel freed its lock
    assert (tmp_path / ".run.lock").read_text().split() == [socket.gethostname(), str(os.getpid())]
    lock.release()
    assert not (tmp_path / ".run.lock").exists()


def take_lock(folder, barrier, results):
    barrier.wait()
    try:
        RunLock(folder).acquire()
        results.put("took")
    except BltlabError:
        results.put("refused")
    barrier.wait()  # hold the lock until every process has tried


@pytest.mark.subprocess
def test_processes_racing_for_a_stale_lock_let_exactly_one_win(tmp_path):
    ctx = multiprocessing.get_context("fork")
    for attempt in range(5):
        folder = tmp_path / str(attempt)
        folder.mkdir()
        (folder / ".run.lock").write_text(f"{socket.gethostname()} 999999999\n")  # a gone run
        barrier, results = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=take_lock, args=(folder, barrier, results))
                 for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        outcomes = sorted(results.get(timeout=5) for _ in procs)
        assert outcomes == ["refused", "refused", "refused", "took"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.torchrun
@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_two_torchrun_processes_follow_one_process_at_the_same_global_batch(tmp_path):
    inputs = strings(400, 0, 10)
    common = ["train", "--mode", "char", "--train_csv",
              write_reversal(tmp_path / "train.csv", inputs),
              "--epochs", "2", "--d_model", "32", "--nhead", "2", "--num_encoder_layers", "1",
              "--num_decoder_layers", "1", "--dim_feedforward", "64", "--max_len", "32",
              "--warmup_steps", "5", "--threads", "1", "--no_progress", "--no_tensorboard",
              "--fresh_pairs", "false"]
    assert main([*common, "--batch_size", "32", "--save_dir", str(tmp_path / "one")]) == 0
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


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd"])
def test_each_optimizer_steps_downhill_and_decays_only_linear_matrices(name):
    spec, (batch,) = char_batches(32, 32)
    cfg = TrainConfig(optimizer=name, lr=0.05 if name == "sgd" else 3e-3, grad_clip=0)
    torch.manual_seed(0)
    model = CharTransformer(spec.model)
    optimizer = training.make_optimizer(model, cfg)
    kind = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}[name]
    assert type(optimizer) is kind
    decayed = {id(p) for p in optimizer.param_groups[0]["params"]}
    assert id(model.embeddings.tokens.weight) not in decayed
    assert id(model.decoder.blocks[0].mlp.fc.weight) in decayed
    losses = [train_step(model, [batch], optimizer, cfg, torch.device("cpu")) for _ in range(8)]
    assert losses[-1] < 0.9 * losses[0], losses


def test_a_compiled_model_takes_the_step_the_eager_one_takes(monkeypatch):
    """--compile wraps the model in torch.compile; traced by dynamo (its eager backend
    here: inductor's code generation takes minutes on a CPU), a step gives the same loss
    and gradients as without."""
    if not hasattr(torch, "compile"):
        pytest.skip("this torch has no torch.compile")
    spec, (batch,) = char_batches(16, 16)
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = CharTransformer(spec.model)
        run = SimpleNamespace(model=model, world=training.World(),
                              spec=spec.with_settings({"compile": compiled}))
        net = training.wrap(run)
        assert (net is not model) == compiled
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        loss = train_step(net, [batch], optimizer, TrainConfig(grad_clip=0),
                          torch.device("cpu"))
        results.append((loss, [p.grad.clone() for p in model.parameters()]))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 loss scaling needs CUDA")
def test_fp16_loss_scaling_trains_where_bf16_is_missing(monkeypatch):
    """On a GPU without bf16, --amp on is fp16 autocast with a gradient scaler."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    device = torch.device("cuda")
    precision = training.pick_precision(TrainConfig(amp="on"), device)
    assert precision.dtype == torch.float16 and precision.scaler is not None
    spec, (batch,) = char_batches(32, 32)
    torch.manual_seed(0)
    model = CharTransformer(spec.model).to(device)
    cfg = TrainConfig(lr=3e-3)
    optimizer = training.make_optimizer(model, cfg)
    losses = [train_step(model, [batch], optimizer, cfg, device, precision) for _ in range(8)]
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0]
    assert precision.scaler.get_scale() > 1  # gradients were scaled up, not skipped forever


def test_char_and_blt_runs_may_share_a_folder_but_two_of_a_kind_may_not(tmp_path):
    char, blt = RunLock(tmp_path, "char"), RunLock(tmp_path, "blt")
    char.acquire()
    blt.acquire()  # their files never collide: best_char_model.pt vs best_blt_model.pt
    with pytest.raises(BltlabError, match="in use by another run"):
        RunLock(tmp_path, "char").acquire()
    char.release()
    blt.release()


def test_a_save_dir_that_is_not_utf8_is_refused_before_any_epoch(tmp_path):
    folder = os.fsdecode(bytes(tmp_path) + b"/ck\xff")  # as a shell passes such bytes
    with pytest.raises(BltlabError, match="--save_dir .*must be valid UTF-8"):
        small_run(tmp_path, save_dir=folder)
    assert [p.name for p in tmp_path.iterdir()] == ["train.csv"]  # the test's own data


def test_a_piped_training_csv_is_fingerprinted_by_what_was_read(tmp_path):
    rows = strings(400, 0, 10)
    content = Path(write_reversal(tmp_path / "train.csv", rows)).read_bytes()
    read, write = os.pipe()
    threading.Thread(target=lambda: (os.write(write, content), os.close(write))).start()
    try:
        train(small_run(tmp_path, epochs=1, train_csv=f"/dev/fd/{read}"))
    finally:
        os.close(read)
    key = load_checkpoint(checkpoint_paths(tmp_path / "ck", "char")[1])["run_key"]
    assert key["data_sha256"] == hashlib.sha256(content).hexdigest()


def resident_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
def test_release_memory_gives_freed_blocks_back_to_the_system():
    """Batches of varying shape used to leave freed blocks with glibc, so a run grew epoch
    after epoch (3.5 to 7.6 GB); release_memory returns them (bench/memory.py measures runs)."""
    blocks = [torch.ones(16384) for _ in range(4000)]  # 4,000 blocks of 64 KB: 250 MB
    kept = blocks[::20]  # a few survivors pin the heap, as a live batch does
    del blocks
    before = resident_mb()
    release_memory()
    assert before - resident_mb() > 120, "freed blocks stayed resident"
    assert len(kept) == 200


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc (Linux)")
def test_resident_memory_stays_flat_over_the_epochs_of_a_blt(tmp_path, monkeypatch):
    """A small BLT on rows of 1-300 characters (batches of every shape): resident memory
    after its last epoch is within a few MB of after its first (measured, 600 rows and 6
    epochs: +0.8 MB; the broad BLT once grew ~80 MB an epoch, 3.5 to 7.6 GB)."""
    after = []

    def release_and_measure() -> None:
        release_memory()
        after.append(resident_mb())

    monkeypatch.setattr(training, "release_memory", release_and_measure)
    inputs = strings(400, 1, 300)
    train(RunSpec.of("blt", d_model=32, nhead=2, dim_feedforward=64, epochs=4,
                     train_csv=write_reversal(tmp_path / "train.csv", inputs),
                     save_dir=str(tmp_path / "ck"), max_tokens=2048, warmup_steps=5,
                     progress_bars=False, tensorboard=False, patcher="space",
                     max_patch_len=3))
    assert len(after) == 4
    assert after[-1] - after[0] < 20, f"resident memory grew: {after}"


def test_training_releases_memory_after_every_epoch(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(training, "release_memory", lambda: calls.append(1))
    train(small_run(tmp_path, epochs=3))
    assert len(calls) == 3
