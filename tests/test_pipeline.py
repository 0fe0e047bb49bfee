"""`bltlab run` end to end on tiny checkpoints, and the metrics it reports."""

import functools
import json
import shutil

import pytest

from bltlab import profiles
from bltlab.cli import main
from bltlab.evaluation import compute_metrics
from bltlab.experiments import PRESETS
from bltlab.pipeline import RunOptions, run, run_spec
from bltlab.spec import build_spec
from tests.conftest import strings, write_reversal


@pytest.mark.parametrize("profile", ["broad", "seed"])
@pytest.mark.parametrize("mode", ["char", "blt"])
def test_run_trains_what_train_trains_for_the_presets_epochs(tmp_path, mode, profile):
    """`bltlab run --quick` and `bltlab train` train the same model the same epochs."""
    plain = build_spec(mode, settings={"profile": profile})
    for preset, factor in PRESETS.items():
        opts = RunOptions(preset=preset, profile=profile)
        spec = run_spec(mode, opts, tmp_path / "train.csv", 0, tmp_path / "ck")
        assert spec.train.epochs == factor * plain.train.epochs
        assert spec.model == plain.model and spec.patcher == plain.patcher


def test_compute_metrics_by_hand():
    m = compute_metrics(["ab", "abcd", "é"], ["ba", "dcba", "é"], ["ba", "dcb", "x"])
    assert m["exact_match_accuracy"] == pytest.approx(1 / 3)
    assert m["character_accuracy"] == pytest.approx((1 + 3 / 4 + 0) / 3)
    assert m["one_minus_cer"] == pytest.approx(1 - 2 / 7)  # edits 0 + 1 + 1 over 7 characters
    assert (m["avg_edit_distance"], m["max_edit_distance"]) == (pytest.approx(2 / 3), 1)
    assert m["avg_length_diff"] == pytest.approx(1 / 3)
    band = m["accuracy_by_length"]["0-10"]
    assert list(m["accuracy_by_length"]) == ["0-10"]
    assert (band["accuracy"], band["count"]) == (pytest.approx(1 / 3), 3)
    assert 0.05 < band["ci95"][0] < 1 / 3 < band["ci95"][1] < 0.85  # Wilson, 1 of 3
    assert m["non_ascii"] == {"accuracy": 0.0, "count": 1}


def test_run_evaluates_once_and_skips_an_up_to_date_evaluation(
        tiny_char_run, tiny_blt_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(profiles, "robustness_sets", functools.partial(  # smaller sets
        profiles.robustness_sets, rows=30, per_length=1, per_band=20))
    rows = strings(60, 5, 12)
    write_reversal(tmp_path / "data" / "train.csv", rows)
    write_reversal(tmp_path / "data" / "test.csv", rows)
    (tmp_path / "checkpoints").mkdir()
    for mode, fixture in (("char", tiny_char_run), ("blt", tiny_blt_run)):
        shutil.copy(fixture[1]["best_checkpoint"], tmp_path / "checkpoints")
        shutil.copy(fixture[0] / "ck" / f"history_{mode}.json", tmp_path / "checkpoints")
    opts = RunOptions(profile="seed", skip_train=True, progress_bars=False,
                      modes=("char", "blt"))
    first = run(opts)
    assert "up to date" not in capsys.readouterr().out
    metrics = tmp_path / "predictions" / "predictions_blt_metrics.json"
    stamp = metrics.stat().st_mtime_ns
    second = run(opts)
    out = capsys.readouterr().out
    assert out.count("is up to date") == 2 and metrics.stat().st_mtime_ns == stamp
    assert first["blt"]["exact_match_accuracy"] == second["blt"]["exact_match_accuracy"]
    assert (tmp_path / "results" / "report.html").is_file()
    robustness = json.loads((tmp_path / "results" / "robustness.json").read_text())
    assert set(robustness) == {"char (seed)", "blt (seed)"}
    lengths = robustness["char (seed)"]["lengths"]
    assert lengths["rows"] == 400 and lengths["too_long"] == 400 - 31  # max_len 32
    bands = robustness["blt (seed)"]["bands"]["by_band"]
    assert [b["count"] for b in bands.values()] == [20] * 7  # too long: counted wrong
    low, high = bands["0-10"]["ci95"]
    assert bands["300+"]["accuracy"] == 0 and low <= bands["0-10"]["accuracy"] <= high
    assert main(["analyze", "--no_plots"]) == 0


@pytest.mark.workers
def test_the_models_train_side_by_side_in_processes_of_their_own(tmp_path, monkeypatch):
    """`bltlab run --workers 2`: each model's run in its own process (its spec and log
    beside its checkpoints), the same run `bltlab train` would do."""
    import bltlab.pipeline as pipeline

    train_csv = write_reversal(tmp_path / "train.csv", strings(200, 3, 10))
    tiny = {"d_model": 16, "nhead": 2, "dim_feedforward": 32, "epochs": 1, "max_tokens": 256,
            "progress_bars": False, "tensorboard": False, "fresh_pairs": False}
    monkeypatch.setattr(pipeline, "run_spec", lambda mode, opts, csv, seed, save_dir, params:
                        build_spec(mode, settings={**tiny, "train_csv": str(csv), "seed": seed,
                                                   "save_dir": str(save_dir)}))
    opts = RunOptions(modes=("char", "blt"), workers=2, save_dir=str(tmp_path / "ck"))
    pipeline.train_stage(opts, train_csv, [0])
    for mode in ("char", "blt"):
        assert (tmp_path / "ck" / f"best_{mode}_model.pt").is_file()
        assert "best checkpoint" in (tmp_path / "ck" / f"train_{mode}.log").read_text()
        assert (tmp_path / "ck" / f"spec_{mode}.yaml").is_file()
