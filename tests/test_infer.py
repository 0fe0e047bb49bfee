"""`bltlab infer`: a terminal session, one string, a pipe, and bad checkpoints."""

import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from bltlab.cli import main

CLI = [sys.executable, "-m", "bltlab.cli", "infer", "--threads", "1"]


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
