import collections
import csv
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bltlab import patchview
from bltlab.cli import main
from bltlab.errors import BltlabError
from bltlab.patching import (
    ByteBatch,
    ByteNgramLM,
    Patcher,
    PatcherConfig,
    build_patcher,
    calibrate,
    ngram_ids,
    window_entropy,
    window_entropy_starts,
)

TEXTS = ["the quick brown fox jumps over the lazy dog", "café ❤️ \u2800 naïve",
         "aaaaaaaaaaaaaaaaaaaa", "x", "reconciliation trolls realized scene"] * 20


def reference_window_entropy(data: bytes, w=10, theta=2.0, max_len=15) -> list[int]:
    """The seed's rule as a plain loop (STUDY.md §2): patch start offsets."""
    def entropy(chunk):
        n = len(chunk)
        return -sum(c / n * math.log2(c / n) for c in collections.Counter(chunk).values())

    starts, start, i = [], 0, 0
    while i < len(data):
        if entropy(data[i:i + w]) > theta or i - start >= max_len:
            starts.append(start)
            if i == start:
                start = i = i + 1
            else:
                start = i
        else:
            i += 1
    if start < len(data):
        starts.append(start)
    return starts


def vector_starts(texts, **kw) -> list[list[int]]:
    batch = ByteBatch.from_texts(texts)
    flags = window_entropy_starts(batch, PatcherConfig("window-entropy", **kw)) | batch.row_starts()
    return [list(np.flatnonzero(flags[a:b])) for a, b in zip(batch.offsets[:-1], batch.offsets[1:])]


@pytest.mark.parametrize("threshold", [1.0, 2.0, 2.5, 3.0, 3.2])
@pytest.mark.parametrize("max_len", [3, 15])
def test_window_entropy_matches_reference_loop(threshold, max_len):
    texts = [t for t in TEXTS[:5] if t]
    got = vector_starts(texts, threshold=threshold, max_patch_len=max_len)
    for text, starts in zip(texts, got):
        assert starts == reference_window_entropy(text.encode(), 10, threshold, max_len)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=5),
       st.floats(0.5, 3.5), st.integers(1, 16), st.integers(1, 20))
def test_window_entropy_matches_reference_on_any_text(texts, threshold, window, max_len):
    got = vector_starts(texts, threshold=threshold, window=window, max_patch_len=max_len)
    for text, starts in zip(texts, got):
        assert starts == reference_window_entropy(text.encode(), window, threshold, max_len)


def test_seed_figures_on_seed_test_csv(seed_test_csv):
    with open(seed_test_csv, encoding="utf-8", newline="") as f:
        rows = [r["input"] for r in csv.DictReader(f)]
    bpp = {th: Patcher(PatcherConfig("window-entropy", threshold=th, max_patch_len=15))
           .segment(rows)
           .bytes_per_patch() for th in (2.0, 3.0)}
    assert round(bpp[2.0], 2) == 1.05 and round(bpp[3.0], 2) == 2.30


LM = ByteNgramLM.fit(TEXTS, context=3)
ALL_PATCHERS = [
    Patcher(PatcherConfig("window-entropy", threshold=2.0)),
    Patcher(PatcherConfig("window-entropy", threshold=3.0, max_patch_len=4)),
    Patcher(PatcherConfig("entropy-model", threshold=1.0), LM),
    Patcher(PatcherConfig("entropy-model", threshold=0.2, entropy_mode="monotonic",
                          max_patch_len=0), LM),
    Patcher(PatcherConfig("space")),
    Patcher(PatcherConfig("static", static_size=3)),
]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.text(max_size=30), min_size=1, max_size=6))
def test_patches_are_utf8_safe_and_lossless(texts):
    for patcher in ALL_PATCHERS:
        seg = patcher.segment(texts)
        for row, text in enumerate(texts):
            patches = seg.row_patches(row)
            assert b"".join(patches) == text.encode("utf-8")
            assert "".join(p.decode("utf-8") for p in patches) == text  # no split character
            assert all(patches)
        ids = seg.patch_ids()
        assert len(ids) == len(seg.batch.data)
        assert (seg.patches_per_row() == [len(seg.row_patches(r)) for r in range(len(texts))]).all()


def test_space_and_static():
    seg = Patcher(PatcherConfig("space", max_patch_len=8)).segment(["ab  cd e", "  x", "a" * 20])
    assert seg.row_patches(2) == [b"a" * 8, b"a" * 8, b"a" * 4]  # max_patch_len applies to all
    assert seg.row_patches(0) == [b"ab  ", b"cd ", b"e"]
    assert seg.row_patches(1) == [b"  ", b"x"]
    seg = Patcher(PatcherConfig("static", static_size=4, max_patch_len=8)).segment(["abcdefghij"])
    with pytest.raises(BltlabError, match="--static_size 4: longer than --max_patch_len 3"):
        PatcherConfig("static", static_size=4, max_patch_len=3)
    assert seg.row_patches(0) == [b"abcd", b"efgh", b"ij"]
    assert list(seg.patch_ids()) == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]


def test_entropy_model_is_low_where_text_is_predictable():
    lm = ByteNgramLM.fit(["the cat sat on the mat"] * 50 + ["a dog ran"] * 50, context=3)
    h = lm.entropy(ByteBatch.from_texts(["the cat"]))
    assert h[0] > 0.9  # first byte: "t" or "a" at a row start
    assert h[2] < 0.2  # "e" after "th" is certain


def test_entropy_model_file_round_trip(tmp_path):
    batch = ByteBatch.from_texts(TEXTS[:5])
    LM.save(tmp_path / "entropy_model.pt")
    loaded = ByteNgramLM.load(tmp_path / "entropy_model.pt")
    np.testing.assert_allclose(loaded.entropy(batch), LM.entropy(batch), rtol=1e-6)


@pytest.mark.parametrize("mode", ["global", "monotonic"])
def test_calibration_reaches_the_target(mode):
    cfg = PatcherConfig("entropy-model", entropy_mode=mode, max_patch_len=0, target_bpp=3.0)
    cfg = calibrate(TEXTS, cfg, LM)
    assert abs(Patcher(cfg, LM).segment(TEXTS).bytes_per_patch() - 3.0) < 0.35
    higher = PatcherConfig.from_dict({**cfg.to_dict(), "threshold": cfg.threshold + 0.5})
    assert Patcher(higher, LM).segment(TEXTS).bytes_per_patch() >= 3.0 - 0.35


@pytest.mark.subprocess
def test_ngram_ids_are_stable_across_processes():
    batch = ByteBatch.from_texts(["hello world", "é❤"])
    ids = ngram_ids(batch, (1, 2, 3), 4096)
    assert ids.shape == (len(batch.data), 3) and ids.min() >= 0 and ids.max() < 4096
    code = ("from bltlab.patching import ByteBatch, ngram_ids;"
            "print(ngram_ids(ByteBatch.from_texts(['hello world', 'é❤']), (1, 2, 3), 4096)"
            ".tolist())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True, env={"PYTHONHASHSEED": "123"})
    assert json.loads(other.stdout) == ids.tolist()
    # equal n-grams share an id wherever they are; "l" (1-gram) at 2, 3 and 9
    assert ids[2, 0] == ids[3, 0] == ids[9, 0]
    assert ids[3, 1] != ids[2, 1]  # "ll" vs "el"
    assert ids[0, 1] != ids[5 + 1, 1]  # "h" after the row start vs "w" after a space


def test_html_view_escapes_text(tmp_path):
    texts = ["<script>alert(1)</script>", "a & b > c"]
    seg = Patcher(PatcherConfig("static", static_size=40, max_patch_len=0)).segment(texts)
    entropy = window_entropy(seg.batch, 10)
    body = "".join(patchview.row_html(seg, r, entropy, 2.0) for r in range(2))
    page = patchview.page("t <b>", [("window <x>", body)])
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&amp;" in page and "<polyline" in page and "t &lt;b&gt;" in page


def test_cli_patch_json_and_html(tmp_path, capsys):
    path = tmp_path / "t.csv"
    path.write_text('input,target\n"<script>alert(1)</script>",x\nhello there,y\n',
                    encoding="utf-8")
    html_path = tmp_path / "view.html"
    assert main(["patch", "--file", str(path), "--patcher", "space", "--max_patch_len", "0",
                 "--json", "--html", str(html_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bytes"] == 36 and out["patches"] == 3
    assert out["bytes_per_patch"] == pytest.approx(12.0)
    assert "<script>alert" not in html_path.read_text(encoding="utf-8")


def test_theta_rule_a_given_threshold_is_kept_an_absent_one_is_calibrated():
    given = build_patcher(PatcherConfig("entropy-model", threshold=1.5, max_patch_len=0), TEXTS)
    assert given.cfg.threshold == 1.5
    calibrated = build_patcher(PatcherConfig("entropy-model", max_patch_len=0, target_bpp=4.0),
                               TEXTS)
    bpp = calibrated.segment(TEXTS).bytes_per_patch()
    assert abs(bpp - 4.0) < 0.5
    again = Patcher(calibrated.cfg, calibrated.lm).segment(TEXTS)  # the θ stored reproduces it
    assert again.bytes_per_patch() == bpp
    with pytest.raises(BltlabError, match="target_bpp 7.9: .* cannot reach it"):
        build_patcher(PatcherConfig("entropy-model", max_patch_len=8, target_bpp=7.9), TEXTS)


def test_a_cut_inside_a_character_moves_to_its_end():
    seg = Patcher(PatcherConfig("static", static_size=2, max_patch_len=4)).segment(["gééégb"])
    assert seg.row_patches(0) == ["gé".encode(), "é".encode(), "é".encode(), b"g", b"b"]
