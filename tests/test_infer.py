"""`bltlab infer`: a terminal session, one string, a pipe (every line answered, in
order, as it arrives), and bad checkpoints or input."""

import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pexpect
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bltlab.checkpoint import load_model
from bltlab.cli import main
from bltlab.infer import Predictor, stream
from bltlab.inputs import as_text

CLI = [sys.executable, "-m", "bltlab.cli", "infer", "--threads", "1"]


@pytest.mark.subprocess
def test_terminal_session(tiny_char_run, tmp_path):
    checkpoint = tiny_char_run[1]["best_checkpoint"]
    child = pexpect.spawn(CLI[0], [*CLI[1:], "--checkpoint", checkpoint], encoding="utf-8",
                          timeout=60, env={"BLTLAB_HISTORY": str(tmp_path / "history"),
                                           "TERM": "dumb", "PATH": "/usr/bin:/bin"})
    child.expect("type a string")
    for text in ("abc defg", "héhe ab"):
        child.expect_exact("> ")
        child.sendline(text)
        child.expect(r"prediction: (.*)\r\n")
        assert child.match.group(1) == text[::-1]
    child.expect_exact("> ")
    child.sendline("quit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "abc defg" in (tmp_path / "history").read_text()  # readline history kept


@pytest.mark.subprocess
def test_text_and_pipe(tiny_char_run, capsys):
    checkpoint = tiny_char_run[1]["best_checkpoint"]
    assert main(["infer", "--checkpoint", checkpoint, "--text", "abcde", "--beam_width", "2"]) == 0
    assert capsys.readouterr().out == "prediction: edcba\n"
    out = subprocess.run([*CLI, "--checkpoint", checkpoint], input="ab cd\n\nfeed\n",
                         capture_output=True, text=True, check=True).stdout
    assert out == "dc ba\n\ndeef\n"


@pytest.mark.parametrize("problem", ["other mode", "missing", "corrupt", "beam"])
def test_bad_checkpoint_or_flag_is_one_line(tiny_char_run, tmp_path, capsys, problem):
    checkpoint = tiny_char_run[1]["best_checkpoint"]
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(Path(checkpoint).read_bytes()[:200])
    args = {"other mode": ["--mode", "blt", "--checkpoint", checkpoint],
            "missing": ["--checkpoint", str(tmp_path / "nope.pt")],
            "corrupt": ["--checkpoint", str(corrupt)],
            "beam": ["--checkpoint", checkpoint, "--beam_width", "0"]}[problem]
    assert main(["infer", *args, "--text", "abc"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


def test_blt_checkpoint_answers_and_shows_its_patches(tiny_blt_run, capsys):
    assert main(["infer", "--checkpoint", tiny_blt_run[1]["best_checkpoint"], "--text",
                 "abcde fgh"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "prediction: hgf edcba"
    assert out[1] == "patches:    [ab][cd][e ][fg][h]  (5 patches, 1.80 bytes/patch)"


@pytest.fixture(scope="module")
def predictors(tiny_char_run, tiny_blt_run):
    return {mode: Predictor(*load_model(run[1]["best_checkpoint"], mode)[:2])
            for mode, run in (("char", tiny_char_run), ("blt", tiny_blt_run))}


def run_infer(checkpoint, stdin: bytes):
    return subprocess.run([*CLI, "--checkpoint", checkpoint],
                          input=stdin, capture_output=True, timeout=120)


@pytest.mark.subprocess
@pytest.mark.parametrize("mode", ["char", "blt"])
def test_a_bad_line_in_a_pipe_loses_no_other_line(tiny_char_run, tiny_blt_run, mode):
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


@pytest.mark.subprocess
def test_a_slow_pipe_is_answered_line_by_line(tiny_char_run):
    proc = subprocess.Popen([*CLI, "--checkpoint",
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
def test_empty_and_invalid_text_are_answered_alike(predictors, mode, text, read_as):
    """Bytes that are not UTF-8 (as the shell passes them) and lone surrogates read as
    U+FFFD for both models; an empty input reverses to itself."""
    assert as_text(text) == read_as
    out, err = io.StringIO(), io.StringIO()
    assert predictors[mode].describe(text, out, err)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("prediction: ") and (text or lines[0] == "prediction: ")
    if mode == "char" and text:
        assert "never saw in training" in err.getvalue()  # U+FFFD is not in its vocabulary


def test_the_patches_line_escapes_control_bytes(predictors):
    line = predictors["blt"].patches("a\x1b[31mb\u202ec")
    assert "\x1b" not in line and "\\x1b" in line and "\u202e" not in line


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


def test_an_endless_line_is_answered_and_memory_stays_bounded(predictors):
    """A line longer than MAX_LINE gets its error as soon as it is that long; the rest of
    it is skipped, and the lines after it are answered."""
    from bltlab import infer

    read, write = os.pipe()
    chunk = b"x" * infer.READ

    def feed():
        for _ in range(3 * infer.MAX_LINE // infer.READ):
            os.write(write, chunk)
        os.write(write, b"\nabc\n")
        os.close(write)

    threading.Thread(target=feed).start()
    groups = list(infer.line_groups(read))
    os.close(read)
    lines = [line for group in groups for line in group]
    assert [len(x) for x in lines] == [infer.MAX_LINE + 1, 3]
    out, err = io.StringIO(), io.StringIO()
    assert stream(predictors["char"], groups, out, err) == 1
    assert out.getvalue() == "\ncba\n" and "longer than 1 MiB" in err.getvalue()
