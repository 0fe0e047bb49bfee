"""What bltlab writes never replaces what is not a regular file of its own: not a device,
FIFO or folder, not an input of the same command; a link is written through; files that
belong together are committed together or not at all."""

import os
import resource
import stat
import subprocess
from pathlib import Path

import pytest

from bltlab.cli import main
from bltlab.errors import BltlabError
from bltlab.fileio import output_target, write_files
from tests.conftest import CLI, one_line_error, strings, write_reversal


@pytest.fixture
def eval_args(tiny_char_run, tmp_path):
    test_csv = write_reversal(tmp_path / "test.csv", strings(30, 3, 12))
    return ["eval", "--mode", "char", "--checkpoint", tiny_char_run[1]["best_checkpoint"],
            "--test_csv", test_csv]


def test_a_device_fifo_or_folder_is_refused_and_left_as_it_is(eval_args, tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "folder").mkdir()
    for path, kind in ((Path("/dev/null"), "a character device"), (fifo, "a pipe (FIFO)"),
                       (tmp_path / "folder", "a folder")):
        before = path.lstat()
        code = main([*eval_args, "--output_csv", str(path)])
        assert f"is {kind}, not a regular file" in one_line_error(capsys, code)
        after = path.lstat()
        assert (after.st_ino, stat.S_IFMT(after.st_mode)) == (before.st_ino,
                                                               stat.S_IFMT(before.st_mode))


def test_proc_self_fd_pointing_at_a_pipe_is_refused(tmp_path):
    err = subprocess.run([*CLI, "patch", "abc def", "--patcher", "space", "--html",
                          "/proc/self/fd/1"], capture_output=True, text=True, timeout=120).stderr
    assert "is a pipe (FIFO), not a regular file" in err and err.count("\n") == 1, err


def test_a_link_is_written_through_and_kept(eval_args, tmp_path):
    real = tmp_path / "real.csv"
    real.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    assert main([*eval_args, "--output_csv", str(link)]) == 0
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text().startswith("input,target,prediction,correct,in_training\n")
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(tmp_path / "new.csv")
    assert output_target(dangling) == tmp_path / "new.csv"


def test_an_output_that_is_an_input_is_refused(tmp_path, capsys):
    csv_path = write_reversal(tmp_path / "v.csv", ["abc", "de"])
    original = Path(csv_path).read_bytes()
    code = main(["patch", "--file", csv_path, "--patcher", "space", "--html", csv_path])
    assert "is also an input" in one_line_error(capsys, code)
    assert Path(csv_path).read_bytes() == original


def test_predictions_and_their_metrics_are_committed_together(eval_args, tmp_path):
    """With room for the CSV but not for both files, neither replaces the old pair."""
    out = tmp_path / "o" / "c.csv"
    assert main([*eval_args, "--output_csv", str(out)]) == 0
    metrics = out.with_name("c_metrics.json")
    before = {p: p.read_bytes() for p in (out, metrics)}
    limit = len(before[out]) + 200  # the predictions fit, the metrics file does not

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    small = write_reversal(tmp_path / "small.csv", strings(2, 4, 12))
    done = subprocess.run([*CLI, "--threads", "1", *eval_args[:-1], small, "--output_csv",
                           str(out)], capture_output=True, text=True, preexec_fn=small_files,
                          timeout=120)
    assert done.returncode == 2 and "could not write" in done.stderr, done.stderr
    assert {p: p.read_bytes() for p in before} == before
    assert not list(out.parent.glob(".*.tmp"))


def test_write_files_replaces_none_when_one_write_fails(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("old a")
    b.write_text("old b")

    def broken(f):
        raise OSError(28, "No space left on device")

    with pytest.raises(BltlabError, match="could not write .*No space left"):
        write_files({a: lambda f: f.write("new a"), b: broken})
    assert (a.read_text(), b.read_text()) == ("old a", "old b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.txt"]
