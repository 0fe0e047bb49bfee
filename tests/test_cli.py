"""The command line: a bad flag, path or file is a one-line error, found before any work."""

from pathlib import Path

import pytest

from bltlab import data
from bltlab.cli import main
from tests.conftest import one_line_error, strings, write_reversal


def test_output_paths_are_checked_before_any_work(tiny_char_run, tmp_path, capsys):
    checkpoint = tiny_char_run[1]["best_checkpoint"]
    test_csv = write_reversal(tmp_path / "test.csv", ["abc", "de"])
    original = Path(test_csv).read_bytes()
    (tmp_path / "out").mkdir()
    for output, message in ((tmp_path / "out", "is a folder"), (test_csv, "is also an input")):
        code = main(["eval", "--checkpoint", checkpoint, "--test_csv", test_csv,
                     "--output_csv", str(output)])
        assert message in one_line_error(capsys, code)
    assert Path(test_csv).read_bytes() == original


@pytest.mark.parametrize("where", ["file", "below a file", "unwritable"])
def test_save_dir_problems_are_one_line(tmp_path, capsys, where):
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
def test_nonsense_flags_are_one_line_errors(tmp_path, capsys, flags, message):
    code = main(["train", *flags, "--train_csv", str(tmp_path / "none.csv")])
    assert message in one_line_error(capsys, code)


@pytest.mark.parametrize("flags, message", [
    (["--beam_width", "1000"], "--beam_width 1000: must be 1 to 64"),
    (["--beam_width", "0"], "--beam_width 0")])
def test_nonsense_search_flags_are_one_line_errors(tiny_char_run, capsys, flags, message):
    code = main(["infer", "--checkpoint", tiny_char_run[1]["best_checkpoint"], "--text", "ab",
                 *flags])
    assert message in one_line_error(capsys, code)


def test_nonsense_patch_flags_are_one_line_errors(capsys):
    code = main(["patch", "abc", "--patcher", "space", "--max_patch_len", "-1"])
    assert "--max_patch_len -1" in one_line_error(capsys, code)


def test_skipped_rows_are_shown(tiny_char_run, tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text("input,target\nabc,cba\n,x\n", encoding="utf-8")
    assert main(["eval", "--checkpoint", tiny_char_run[1]["best_checkpoint"], "--test_csv",
                 str(path), "--output_csv", str(tmp_path / "p.csv"), "--skip_bad_rows"]) == 0
    assert 'skipped rows        1 {"empty field": 1}' in capsys.readouterr().out


def test_targets_that_are_not_reversals_are_counted(tmp_path, capsys):
    inputs = strings(100, 0, 8)
    data.write_pairs(tmp_path / "t.csv", inputs, [s[::-1] if i % 10 else s + "x"
                                                  for i, s in enumerate(inputs)])
    main(["train", "--train_csv", str(tmp_path / "t.csv"), "--fresh_pairs", "false",
          "--epochs", "1", "--d_model", "16",
          "--nhead", "2", "--dim_feedforward", "16", "--save_dir", str(tmp_path / "ck"),
          "--no_progress", "--no_tensorboard"])
    assert "10 of 100 targets are not their input reversed" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["run", "--quick", "--seeds", "0"], "--seeds 0: must be at least 1"),
    (["run", "--frontier", "--seeds", "-2"], "--seeds -2: must be at least 1"),
    (["run", "--quick", "--epochs", "0"], "--epochs 0: must be at least 1"),
    (["run", "--quick", "--batch_size", "0"], "--batch_size 0: must be at least 1"),
    (["run", "--quick", "--skip_train", "--save_dir", "none"],
     "--skip_train: none/best_char_model.pt: no such checkpoint"),
    (["data", "generate", "--seed", "-1"], "--seed -1: must be at least 0"),
    (["data", "generate", "--train", "100000000000"], "--train 100000000000: at most"),
    (["train", "--seed", "-1"], "--seed -1: must be 0 to 2**32 - 1"),
    (["train", "--device", "meta"], "--device meta: not a device bltlab runs on"),
    (["train", "--device", "mps"], "--device mps: not a device bltlab runs on"),
    (["analyze", "--dpi", "0"], "--dpi 0: must be 10 to 1000"),
    (["analyze", "--dpi", "5000"], "--dpi 5000: must be 10 to 1000"),
    (["infer", "--checkpoint", "x.pt", "--batch_size", "0"], "--batch_size 0"),
])
def test_flags_out_of_range_are_one_line_before_anything_is_written(tmp_path, capsys,
                                                                     monkeypatch, args,
                                                                     message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "run_summary.json").write_text("{}")
    code = main(args)
    assert message in one_line_error(capsys, code)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["results", "run_summary.json"]
    assert (tmp_path / "results" / "run_summary.json").read_text() == "{}"


def test_a_model_too_big_for_memory_is_one_line(tmp_path, capsys):
    csv_path = write_reversal(tmp_path / "t.csv", strings(40, 0, 8))
    code = main(["train", "--train_csv", csv_path, "--fresh_pairs", "false", "--d_model",
                 "1000000", "--nhead", "2", "--save_dir", str(tmp_path / "ck")])
    assert "out of memory" in one_line_error(capsys, code)
