"""Checkpoints: saved and loaded whole, refused when they are not ours or do not fit,
never lost to a failed write."""

import json
import os
import pickle
import resource
import stat
import subprocess
from pathlib import Path

import pytest
import torch

from bltlab.checkpoint import (
    checkpoint_paths,
    load_checkpoint,
    load_model,
    save_checkpoint,
)
from bltlab.cli import main
from bltlab.errors import BltlabError
from bltlab.inputs import CharCodec
from bltlab.spec import RunSpec
from bltlab.vocab import CharVocab
from tests.conftest import CLI, one_line_error, strings, write_reversal
from tests.test_models import batch_of, tiny


@pytest.mark.subprocess
def test_a_failed_checkpoint_write_keeps_the_good_ones(tmp_path, capsys):
    spec = dict(train_csv=write_reversal(tmp_path / "train.csv", strings(200, 0, 8)),
                save_dir=str(tmp_path / "ck"), d_model=32, nhead=2, num_encoder_layers=1,
                num_decoder_layers=1, dim_feedforward=64, max_len=32, batch_size=16,
                warmup_steps=2, save_every_steps=0, tensorboard=False, progress_bars=False,
                fresh_pairs=False)
    flags = [a for k, v in spec.items() for a in (f"--{k}", str(v).lower() if
                                                    isinstance(v, bool) else str(v))]
    assert main(["train", "--threads", "1", "--epochs", "2", *flags]) == 0
    _, latest, _ = checkpoint_paths(tmp_path / "ck", "char")
    before = {p: p.read_bytes() for p in (latest, latest.with_name(latest.stem + ".prev.pt"))}
    limit = min(len(b) for b in before.values()) // 2

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run([*CLI, "train", "--threads", "1", "--epochs", "3", "--resume",
                           "latest", *flags], capture_output=True, text=True,
                          preexec_fn=small_files, timeout=300)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: could not write ") and "Traceback" not in done.stderr
    assert {p: p.read_bytes() for p in before} == before  # both good checkpoints intact
    assert not list((tmp_path / "ck").glob(".*.tmp"))


def broken_checkpoints(checkpoint: str, tmp_path: Path) -> dict[str, Path]:
    state = load_checkpoint(checkpoint)
    cases = {}
    for name, change in {
        "wrong shape": lambda s: s["model"].update(
            {"embeddings.tokens.weight": torch.zeros(3, 3)}),
        "missing weight": lambda s: s["model"].pop("embeddings.tokens.weight"),
        "edited config": lambda s: s["spec"]["model"].update(d_model=48, nhead=5),
        "NaN weights": lambda s: s["model"]["embeddings.tokens.weight"].fill_(float("nan")),
        "int32 weights": lambda s: s["model"].update(
            {"embeddings.tokens.weight": s["model"]["embeddings.tokens.weight"].to(torch.int32)}),
    }.items():
        broken = {**state, "model": dict(state["model"]),
                  "spec": json.loads(json.dumps(state["spec"]))}
        broken["model"] = {k: v.clone() for k, v in broken["model"].items()}
        change(broken)
        path = tmp_path / f"{name.replace(' ', '_')}.pt"
        save_checkpoint(path, {k: v for k, v in broken.items() if k != "format"})
        cases[name] = path
    return cases


@pytest.mark.parametrize("case, message", [
    ("wrong shape", "has shape (3, 3)"), ("missing weight", "missing weights"),
    ("edited config", "--nhead 5: must divide --d_model 48"),
    ("NaN weights", "NaN or infinite"), ("int32 weights", "is torch.int32")])
def test_checkpoints_that_do_not_fit_are_refused(tiny_char_run, tmp_path, capsys, case,
                                                   message):
    path = broken_checkpoints(tiny_char_run[1]["best_checkpoint"], tmp_path)[case]
    code = main(["infer", "--checkpoint", str(path), "--text", "abc"])
    err = one_line_error(capsys, code)
    assert str(path) in err and message in err


def test_written_files_get_the_usual_permissions(tiny_char_run):
    mask = os.umask(0)
    os.umask(mask)
    mode = stat.S_IMODE(os.stat(tiny_char_run[1]["best_checkpoint"]).st_mode)
    assert mode == 0o666 & ~mask


def test_checkpoint_round_trip(tmp_path):
    codec = CharCodec(CharVocab.build(["abcdefghijklmnop"]))
    model = tiny("sinusoidal", vocab_size=len(codec.vocab))
    path = tmp_path / "best_char_model.pt"
    spec = RunSpec(mode="char", model=model.cfg)
    save_checkpoint(path, {"mode": "char", "spec": spec.to_dict(), "codec": codec.to_state(),
                           "model": model.state_dict()})
    loaded, loaded_codec, _ = load_model(path, "char")
    assert loaded_codec.vocab.chars == codec.vocab.chars and loaded.cfg == model.cfg
    batch = batch_of([[5, 6, 7]], [[1, 7]])
    torch.testing.assert_close(loaded(batch), model(batch))
    assert not list(tmp_path.glob(".*.tmp"))  # nothing half-written left behind
    with pytest.raises(BltlabError, match="is a 'char' checkpoint, not 'blt'"):
        load_checkpoint(path, "blt")


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_object_is_refused_without_running(tmp_path):
    global MARKER
    MARKER = str(tmp_path / "pwned")
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": "bltlab-checkpoint-v2", "model": Payload()}, f)
    with pytest.raises(BltlabError, match="refused: it holds pickled Python objects") as e:
        load_checkpoint(path)
    assert not os.path.exists(MARKER)
    assert "weights_only" not in str(e.value) and "\x1b" not in str(e.value)


def test_corrupt_and_missing_checkpoints(tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(b"\x00garbage")
    with pytest.raises(BltlabError, match="bad.pt"):
        load_checkpoint(path)
    with pytest.raises(BltlabError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
