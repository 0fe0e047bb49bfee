"""Data: generated deterministically, loaded with row-level checks."""

import csv
import functools
import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bltlab import data, profiles
from bltlab.checkpoint import load_checkpoint
from bltlab.cli import main
from bltlab.config import DataConfig
from bltlab.errors import BltlabError
from bltlab.inputs import CharCodec

LIMIT_20 = functools.partial(CharCodec.check_length, limit=20)


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_generate_is_deterministic(tmp_path):
    a = data.generate(tmp_path / "a", seed=7, n_train=300, n_test=50)
    b = data.generate(tmp_path / "b", seed=7, n_train=300, n_test=50)
    c = data.generate(tmp_path / "c", seed=8, n_train=300, n_test=50)
    assert [sha(p) for p in a] == [sha(p) for p in b]
    assert sha(a[0]) != sha(c[0])
    assert sha(a[0]) != sha(a[1])


def test_generated_distribution(tmp_path):
    train, _ = data.generate(tmp_path, seed=1, n_train=4000, n_test=10)
    pairs = data.load_pairs(train)
    s = data.stats(pairs)
    assert s["rows"] == 4000 and s["all_targets_reversed"]
    assert s["words_per_row"]["min"] >= 3 and s["words_per_row"]["max"] <= 16
    assert 8.8 < s["words_per_row"]["mean"] < 9.9  # seed: 9.35
    assert 64 < s["length_chars"]["mean"] < 78  # seed: 70.9
    assert 0.003 < s["non_ascii_share"] < 0.03  # seed: 1.2%
    symbols = set(profiles.SYMBOLS)
    with_symbol = sum(any(t in symbols for t in x.split(" ")) for x in pairs.inputs) / 4000
    assert 0.26 < with_symbol < 0.34  # seed: 30%
    assert all(ord(c) < 0x10000 for x in pairs.inputs for c in x)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("content, message", [
    ("", "empty"),
    ("a,b\nx,y\n", "missing column(s) input, target"),
    ("input,target\nabc,cba\n,x\n", "row 2 (line 3): empty 'input' field"),
    ("input,target\nabc,\n", "row 1 (line 2): empty 'target' field"),
    ("input,target\nabc\n", "row 1 (line 2): empty 'target' field"),
    ("input,target\n" + "a" * 30 + ",b\n",
     "row 1 (line 2): 'input' is 30 characters long; the model takes at most 20"),
])
def test_loader_errors_name_file_and_row(tmp_path, content, message):
    path = write(tmp_path / "bad.csv", content)
    with pytest.raises(BltlabError) as e:
        data.load_pairs(path, too_long=LIMIT_20)
    assert str(path) in str(e.value) and message in str(e.value)
    assert "\n" not in str(e.value)


def test_loader_missing_file(tmp_path):
    with pytest.raises(BltlabError, match="nope.csv: no such file"):
        data.load_pairs(tmp_path / "nope.csv")


def test_loader_rejects_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"input,target\nabc,cba\ncaf\xe9,\xe9fac\n")
    with pytest.raises(BltlabError, match=r"row 2 \(line 3\): 'input' holds bytes that are not"):
        data.load_pairs(path)


def test_skip_bad_rows_counts(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_bytes(b"input,target\nabc,cba\n,x\ncaf\xe9,x\n" + b"z" * 50 + b",z\nok,ko\n")
    pairs = data.load_pairs(path, too_long=LIMIT_20, skip_bad_rows=True)
    assert pairs.inputs == ["abc", "ok"]
    assert pairs.skipped == {"empty field": 1, "not UTF-8": 1, "too long": 1}


def test_quoted_fields_with_commas_quotes_newlines(tmp_path):
    rows = [("a, b", "b ,a"), ('say "hi"', '"ih" yas'), ("two\nlines", "senil\nowt")]
    path = tmp_path / "quoted.csv"
    data.write_pairs(path, [r[0] for r in rows], [r[1] for r in rows])
    pairs = data.load_pairs(path)
    assert list(zip(pairs.inputs, pairs.targets)) == rows
    assert data.stats(pairs)["all_targets_reversed"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    path = write(tmp_path / "bad.csv", "input,target\n,x\n")
    assert main(["data", "stats", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err


def test_cli_generate_and_stats_json(tmp_path, capsys):
    assert main(["data", "generate", "--out", str(tmp_path), "--train", "40", "--test", "9"]) == 0
    with open(tmp_path / "test.csv", newline="", encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == 9
    capsys.readouterr()
    assert main(["data", "stats", str(tmp_path / "train.csv"), "--json"]) == 0
    out = capsys.readouterr().out
    assert '"rows": 40' in out and '"all_targets_reversed": true' in out


def test_fresh_pairs_are_new_each_epoch_and_reproducible():
    from bltlab.training import generated_pairs

    seed = DataConfig()
    a, b, again = (generated_pairs(50, 0, e, seed) for e in (0, 1, 0))
    assert a.inputs == again.inputs and a.inputs != b.inputs
    assert all(t == x[::-1] for x, t in zip(a.inputs + b.inputs, a.targets + b.targets))


def test_a_carriage_return_in_a_field_keeps_its_row(tmp_path):
    """A model's output may hold '\\r'; the predictions file must still read back row by row."""
    from bltlab.evaluation import write_predictions

    inputs, targets = ["ab", "c\rd", "ef"], ["ba", "d\rc", "fe"]
    path = tmp_path / "p.csv"
    write_predictions(path, inputs, targets, ["ba", "x\r\ry", "fe"])
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["input"] for r in rows] == inputs and rows[1]["prediction"] == "x\r\ry"
    data.write_pairs(tmp_path / "d.csv", inputs, targets)
    assert data.load_pairs(tmp_path / "d.csv").inputs == inputs
    data.write_pairs(tmp_path / "plain.csv", ["ab"], ["ba"])
    assert (tmp_path / "plain.csv").read_text() == "input,target\nab,ba\n"  # unchanged format


def test_a_bom_a_directory_and_an_unclosed_quote(tmp_path, capsys):
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeffinput,target\nabc,cba\n".encode())
    assert data.load_pairs(bom).inputs == ["abc"]
    with pytest.raises(BltlabError, match="is a folder, not a CSV file"):
        data.load_pairs(tmp_path)
    with pytest.raises(BltlabError, match="is a folder, not a checkpoint"):
        load_checkpoint(tmp_path)
    quote = tmp_path / "quote.csv"
    quote.write_text('input,target\n"abc,cba\nx,y\n', encoding="utf-8")
    with pytest.raises(BltlabError, match="a quote that is never closed"):
        data.load_pairs(quote)


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


@pytest.mark.parametrize("flag", ["--test_csv", "--train_csv", "--config"])
def test_an_endless_input_is_refused_with_a_bound(tmp_path, capsys, flag, tiny_char_run):
    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    zero = str(tmp_path / "zero.csv")
    args = {"--test_csv": ["eval", "--checkpoint", tiny_char_run[1]["best_checkpoint"],
                           "--test_csv", zero, "--output_csv", str(tmp_path / "p.csv")],
            "--train_csv": ["train", "--train_csv", zero, "--save_dir", str(tmp_path / "ck")],
            "--config": ["train", "--config", zero]}[flag]
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and "zero.csv: larger than" in err and err.count("\n") == 1, err


def test_a_repeated_column_is_refused(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("input,target,input\nab,ba,cd\n", encoding="utf-8")
    with pytest.raises(BltlabError, match="column.s. input appear more than once"):
        data.load_pairs(path)
