"""The broad profile covers what a person types; the robustness sets are what they say."""

import re
import unicodedata

import numpy as np

from bltlab import data, profiles
from bltlab.cli import main

CYRILLIC = range(0x0400, 0x0530)


def broad_rows(n=3000, seed=0):
    return profiles.broad_inputs(n, np.random.default_rng(seed))


def test_broad_rows_cover_lengths_cases_punctuation_and_scripts():
    rows = broad_rows()
    lengths = [len(r) for r in rows]
    assert min(lengths) == 1 and 300 <= max(lengths) <= profiles.MAX_CHARS
    assert sum(n <= 10 for n in lengths) > 0.1 * len(rows)  # mass at both ends
    assert sum(n > 200 for n in lengths) > 0.03 * len(rows)
    text = "".join(rows)
    assert set(profiles.ASCII) <= set(text)  # every printable ASCII character and tab
    assert any(r.isupper() for r in rows) and any(r.istitle() for r in rows)
    scripts = {unicodedata.name(c, "?").split()[0] for c in text if not c.isascii()}
    assert {"GREEK", "ARABIC", "HEBREW", "CJK", "HANGUL", "DEVANAGARI", "ARMENIAN", "SYRIAC",
            "THAANA", "NKO"} <= scripts
    leads = {b for b in text.encode() if 0xC2 <= b < 0xE0}  # two-byte UTF-8 lead bytes
    assert set(range(0xC2, 0xE0)) - leads == {0xD0, 0xD1, 0xD2, 0xD3}  # all but Cyrillic's
    assert "\u200d" in text and any(0x1F3FB <= ord(c) <= 0x1F3FF for c in text)
    assert not any(ord(c) in CYRILLIC for c in text)  # the unseen script stays unseen
    assert set(text) <= profiles.broad_alphabet()
    assert all(len(r.encode()) <= profiles.MAX_BYTES for r in rows)


def test_random_characters_draw_the_whole_alphabet_uniformly():
    rng = np.random.default_rng(1)
    others = profiles.other_symbols(tuple(sorted(profiles.OTHER_LANGUAGES.items())))
    drawn = [c for c in profiles.random_chars(rng, 60000, profiles.OTHER_LANGUAGES)
             if not c.isascii()]
    assert 0.18 < len(drawn) / 60000 < 0.22
    counts = np.array([drawn.count(c) for c in others[::50]])  # expected ~4 each
    assert (counts > 0).mean() > 0.9 and counts.max() < 20


def test_robustness_sets_hold_what_their_names_say(tmp_path):
    sets = profiles.robustness_sets(rows=50, per_length=1, per_band=20)
    assert all(1 <= len(r) <= 10 for r in sets["short"])
    assert all(profiles.MAX_CHARS < len(r) <= 400 for r in sets["long"])
    assert all(r[0].isupper() and r[-1] in ".!?" for r in sets["real_text"])
    assert all(any(ord(c) in CYRILLIC for c in r) for r in sets["unseen_script"])
    assert [len(r) for r in sets["lengths"]] == list(range(1, 401))
    held = [re.search(r"(.)\1+", r) for r in sets["repeats"]]
    assert all(held) and any(len(m.group()) >= 5 for m in held)
    assert any(not r.isascii() for r in sets["repeats"])
    assert [profiles.band_name(len(r)) for r in sets["bands"]] == [
        name for name in profiles.BAND_NAMES for _ in range(20)]
    assert not any(ord(c) in CYRILLIC for r in sets["bands"] for c in r)
    assert profiles.robustness_sets(rows=50, per_length=1, per_band=20) == sets  # fixed seed
    added = [range(lo, hi + 1) for name, (lo, hi) in profiles.SCRIPT_RANGES.items()
             if name in ("armenian", "syriac", "thaana", "nko")]  # added to training later
    assert not any(ord(c) in r for name, rows in sets.items() if name != "bands"
                   for row in rows for c in row for r in added)  # their languages are fixed


def test_data_generate_defaults_to_the_broad_profile_in_data_broad(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["data", "generate", "--train", "20", "--test", "5"]) == 0
    rows = data.load_pairs(tmp_path / "data" / "broad" / "train.csv")
    assert len(rows) == 20 and rows.targets == [x[::-1] for x in rows.inputs]
    assert main(["data", "generate", "--profile", "seed", "--train", "0", "--test", "5"]) == 0
    assert (tmp_path / "data" / "test.csv").is_file()
    assert not (tmp_path / "data" / "train.csv").exists()
    assert "train.csv" not in capsys.readouterr().out.splitlines()[-1]  # says only what it wrote


def test_weighted_draws_are_numpys_choice():
    """The broad rows' weighted draws give the keys numpy's `choice(p=...)` gives for the
    same stream (data files made before and after stay byte-identical)."""
    table = {"a": 0.25, "b": 0.40, "c": 0.15, "d": 0.10, "e": 0.10}
    ours, theirs = np.random.default_rng(3), np.random.default_rng(3)
    p = np.array(list(table.values())) / sum(table.values())
    weights = profiles.Weights(table)
    drawn = [weights.draw(ours) for _ in range(5000)]
    assert drawn == [list(table)[int(theirs.choice(len(table), p=p))] for _ in range(5000)]
    assert set(drawn) == set(table)
