"""Bad input never costs output and never shows a traceback (issue 13's cases, numbered)."""

import io
import json
import os
import resource
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bltlab import data
from bltlab.checkpoint import checkpoint_paths, load_checkpoint, load_model, save_checkpoint
from bltlab.cli import main
from bltlab.errors import BltlabError
from bltlab.infer import Predictor, stream
from bltlab.inputs import as_text
from tests.conftest import strings, write_reversal

CLI = [sys.executable, "-m", "bltlab.cli"]


def one_line_error(capsys, code, expected_code=2):
    err = capsys.readouterr().err
    assert code == expected_code, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.fixture(scope="module")
def predictors(tiny_char_run, tiny_blt_run):
    return {mode: Predictor(*load_model(run[1]["best_checkpoint"], mode)[:2])
            for mode, run in (("char", tiny_char_run), ("blt", tiny_blt_run))}


def run_infer(checkpoint, stdin: bytes):
    return subprocess.run([*CLI, "infer", "--threads", "1", "--checkpoint", checkpoint],
                          input=stdin, capture_output=True, timeout=120)


@pytest.mark.parametrize("mode", ["char", "blt"])
def test_1_a_bad_line_in_a_pipe_loses_no_other_line(tiny_char_run, tiny_blt_run, mode):
    checkpoint = {"char": tiny_char_run, "blt": tiny_blt_run}[mode][1]["best_checkpoint"]
    done = run_infer(checkpoint, b"abcdef\n" + b"a" * 600 + b"\nab\xffcd\nhe abg\n")
    out = done.stdout.decode().split("\n")
    assert done.returncode == 1  # some lines failed
    assert out[:4] == ["fedcba", "", out[2], "gba eh"] and len(out) == 5 and out[4] == ""
    assert out[2]  # the line with an invalid byte (read as U+FFFD) was answered
    err = done.stderr.decode().splitlines()
    assert any(e.startswith("error: line 2: input is 600 ") for e in err)
    assert any(e.startswith("warning: line 3: not valid UTF-8") for e in err)
    assert "Traceback" not in done.stderr.decode()


def test_2_a_slow_pipe_is_answered_line_by_line(tiny_char_run):
    proc = subprocess.Popen([*CLI, "infer", "--threads", "1", "--checkpoint",
                             tiny_char_run[1]["best_checkpoint"]], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for text in (b"abcde", b"hgfe da"):
            proc.stdin.write(text + b"\n")
            proc.stdin.flush()
            start = time.monotonic()
            assert proc.stdout.readline() == text[::-1] + b"\n"  # before the next line is sent
            assert time.monotonic() - start < 30
        proc.stdin.close()
        assert proc.wait(60) == 0
    finally:
        proc.kill()


@pytest.mark.parametrize("mode", ["char", "blt"])
@pytest.mark.parametrize("text, read_as", [("", ""), ("\udced\udca0\udc80", "\ufffd" * 3),
                                           ("a\ud800b", "a\ufffdb")])
def test_3_empty_and_invalid_text_are_answered_alike(predictors, mode, text, read_as):
    """Bytes that are not UTF-8 (as the shell passes them) and lone surrogates read as
    U+FFFD for both models; an empty input reverses to itself."""
    assert as_text(text) == read_as
    out, err = io.StringIO(), io.StringIO()
    assert predictors[mode].describe(text, out, err)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("prediction: ") and (text or lines[0] == "prediction: ")
    if mode == "char" and text:
        assert "never saw in training" in err.getvalue()  # U+FFFD is not in its vocabulary


def test_4_a_failed_checkpoint_write_keeps_the_good_ones(tmp_path, capsys):
    spec = dict(train_csv=write_reversal(tmp_path / "train.csv", strings(200, 0, 8)),
                save_dir=str(tmp_path / "ck"), d_model=32, nhead=2, num_encoder_layers=1,
                num_decoder_layers=1, dim_feedforward=64, max_len=32, batch_size=16,
                warmup_steps=2, save_every_steps=0, tensorboard=False, progress_bars=False)
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


def test_5_output_paths_are_checked_before_any_work(tiny_char_run, tmp_path, capsys):
    checkpoint = tiny_char_run[1]["best_checkpoint"]
    test_csv = write_reversal(tmp_path / "test.csv", ["abc", "de"])
    original = Path(test_csv).read_bytes()
    (tmp_path / "out").mkdir()
    for output, message in ((tmp_path / "out", "is a folder"), (test_csv, "is also an input")):
        code = main(["eval", "--checkpoint", checkpoint, "--test_csv", test_csv,
                     "--output_csv", str(output)])
        assert message in one_line_error(capsys, code)
    assert Path(test_csv).read_bytes() == original


def broken_checkpoints(checkpoint: str, tmp_path: Path) -> dict[str, Path]:
    state = load_checkpoint(checkpoint)
    cases = {}
    for name, change in {
        "wrong shape": lambda s: s["model"].update(
            {"embed.weight": torch.zeros(3, 3)}),
        "missing weight": lambda s: s["model"].pop("embed.weight"),
        "edited config": lambda s: s["spec"]["model"].update(d_model=48, nhead=5),
        "NaN weights": lambda s: s["model"]["embed.weight"].fill_(float("nan")),
        "int32 weights": lambda s: s["model"].update(
            {"embed.weight": s["model"]["embed.weight"].to(torch.int32)}),
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
def test_6_checkpoints_that_do_not_fit_are_refused(tiny_char_run, tmp_path, capsys, case,
                                                   message):
    path = broken_checkpoints(tiny_char_run[1]["best_checkpoint"], tmp_path)[case]
    code = main(["infer", "--checkpoint", str(path), "--text", "abc"])
    err = one_line_error(capsys, code)
    assert str(path) in err and message in err


@pytest.mark.parametrize("where", ["file", "below a file", "unwritable"])
def test_7_save_dir_problems_are_one_line(tmp_path, capsys, where):
    (tmp_path / "f").write_text("x")
    save_dir = {"file": tmp_path / "f", "below a file": tmp_path / "f" / "ck",
                "unwritable": Path("/proc/bltlab_test")}[where]
    csv_path = write_reversal(tmp_path / "train.csv", strings(50, 0, 8))
    code = main(["train", "--train_csv", csv_path, "--save_dir", str(save_dir),
                 "--epochs", "1"])
    assert "--save_dir" in one_line_error(capsys, code)
    code = main(["data", "generate", "--out", str(tmp_path / "f")])
    assert "is a file" in one_line_error(capsys, code)


@pytest.mark.parametrize("flags, message", [
    (["--lr", "-0.1"], "--lr -0.1: must be above 0"), (["--lr", "0"], "--lr 0.0"),
    (["--nhead", "5", "--d_model", "32"], "--nhead 5: must divide --d_model 32"),
    (["--nhead", "0"], "--nhead 0: must be at least 1"),
    (["--d_model", "0"], "--d_model 0: must be at least 1"),
    (["--dropout", "2"], "--dropout 2.0: must be in [0, 1)"),
    (["--mode", "blt", "--target_bpp", "0"], "--target_bpp 0.0: must be 1 to"),
    (["--mode", "blt", "--target_bpp", "1000"], "--target_bpp 1000.0"),
    (["--mode", "blt", "--entropy_threshold", "-1"], "--entropy_threshold -1.0: must be 0"),
    (["--val_fraction", "-0.5"], "--val_fraction -0.5"),
    (["--grad_clip", "-1"], "--grad_clip -1.0: must be at least 0"),
    (["--save_every_steps", "-5"], "--save_every_steps -5"),
    (["--mode", "blt", "--max_patch_len", "-1"], "--max_patch_len -1"),
    (["--mode", "char", "--pooling", "cross"], "pooling: no such setting for --mode char"),
    (["--threads", "-2"], "--threads -2"),
])
def test_8_nonsense_flags_are_one_line_errors(tmp_path, capsys, flags, message):
    code = main(["train", *flags, "--train_csv", str(tmp_path / "none.csv")])
    assert message in one_line_error(capsys, code)


@pytest.mark.parametrize("flags, message", [
    (["--beam_width", "1000"], "--beam_width 1000: must be 1 to 64"),
    (["--beam_width", "0"], "--beam_width 0")])
def test_8_search_flags(tiny_char_run, capsys, flags, message):
    code = main(["infer", "--checkpoint", tiny_char_run[1]["best_checkpoint"], "--text", "ab",
                 *flags])
    assert message in one_line_error(capsys, code)


def test_8_patch_flags(capsys):
    code = main(["patch", "abc", "--patcher", "space", "--max_patch_len", "-1"])
    assert "--max_patch_len -1" in one_line_error(capsys, code)


def test_11_bom_directory_and_unclosed_quote(tmp_path, capsys):
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeffinput,target\nabc,cba\n".encode())
    assert data.load_pairs(bom).inputs == ["abc"]
    with pytest.raises(BltlabError, match="is a directory, not a CSV file"):
        data.load_pairs(tmp_path)
    with pytest.raises(BltlabError, match="is a directory, not a checkpoint"):
        load_checkpoint(tmp_path)
    quote = tmp_path / "quote.csv"
    quote.write_text('input,target\n"abc,cba\nx,y\n', encoding="utf-8")
    with pytest.raises(BltlabError, match="a quote that is never closed"):
        data.load_pairs(quote)


def test_11_skipped_rows_are_shown(tiny_char_run, tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text("input,target\nabc,cba\n,x\n", encoding="utf-8")
    assert main(["eval", "--checkpoint", tiny_char_run[1]["best_checkpoint"], "--test_csv",
                 str(path), "--output_csv", str(tmp_path / "p.csv"), "--skip_bad_rows"]) == 0
    assert 'skipped rows        1 {"empty field": 1}' in capsys.readouterr().out


def test_13_patches_line_escapes_control_bytes(predictors):
    line = predictors["blt"].patches("a\x1b[31mb\u202ec")
    assert "\x1b" not in line and "\\x1b" in line and "\u202e" not in line


def test_14_written_files_get_the_usual_permissions(tiny_char_run):
    mask = os.umask(0)
    os.umask(mask)
    mode = stat.S_IMODE(os.stat(tiny_char_run[1]["best_checkpoint"]).st_mode)
    assert mode == 0o666 & ~mask


def test_15_targets_that_are_not_reversals_are_counted(tmp_path, capsys):
    inputs = strings(100, 0, 8)
    data.write_pairs(tmp_path / "t.csv", inputs, [s[::-1] if i % 10 else s + "x"
                                                  for i, s in enumerate(inputs)])
    main(["train", "--train_csv", str(tmp_path / "t.csv"), "--epochs", "1", "--d_model", "16",
          "--nhead", "2", "--dim_feedforward", "16", "--save_dir", str(tmp_path / "ck"),
          "--no_progress", "--no_tensorboard"])
    assert "10 of 100 targets are not their input reversed" in capsys.readouterr().out


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.binary(max_size=60), st.text(max_size=60).map(str.encode)),
                min_size=1, max_size=6), st.sampled_from(["char", "blt"]))
def test_fuzz_infer_answers_every_line(predictors, lines, mode):
    lines = [raw.replace(b"\n", b" ") for raw in lines]
    out, err = io.StringIO(), io.StringIO()
    failed = stream(predictors[mode], [lines], out, err)
    assert out.getvalue().count("\n") == len(lines)
    assert failed == sum(line.startswith("error:") for line in err.getvalue().splitlines())


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_csv_loader_raises_only_one_line_errors(raw):
    path = Path("/tmp") / f"bltlab_fuzz_{os.getpid()}.csv"
    path.write_bytes(b"input,target\n" + raw)
    try:
        data.load_pairs(path)
    except BltlabError as e:
        assert "\n" not in str(e)
    finally:
        path.unlink()
