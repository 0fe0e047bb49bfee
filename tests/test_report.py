"""`bltlab analyze`: report files, paired statistics and escaping, from evaluated runs."""

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bltlab.cli import main
from bltlab.evaluation import compute_metrics, write_predictions
from bltlab.fileio import write_json

INPUTS = ["abc def", "<script>alert(1)</script>", "héllo", "xyz"] * 25


def fake_run(tmp_path, mode, preds, flops):
    name = "baseline" if mode == "char" else mode
    targets = [x[::-1] for x in INPUTS]
    write_predictions(tmp_path / "predictions" / f"predictions_{name}.csv", INPUTS, targets, preds)
    metrics = {**compute_metrics(INPUTS, targets, preds), "forward_flops_per_row": flops,
               "decode_rows_per_s": 100.0}
    if mode == "blt":
        metrics.update(avg_bytes_per_row=12.0, avg_patches_per_row=3.0, bytes_per_patch=4.0)
    write_json(tmp_path / "predictions" / f"predictions_{name}_metrics.json", metrics)
    write_json(tmp_path / "checkpoints" / f"history_{mode}.json", {
        "spec": {"mode": mode, "model": {"d_model": 64}, "train": {"lr": 0.002}},
        "best": {"epoch": 2},
        "epochs": [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "val_exact_match": 0.4 * e,
                    "epoch_seconds": 10.0, "samples_per_s": 300.0} for e in (1, 2)]})


def test_analyze_writes_the_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    targets = [x[::-1] for x in INPUTS]
    fake_run(tmp_path, "char", targets, {"encoder": 3e6, "decoder": 5e6, "total": 8e6})
    blt = [t if i % 10 else t + "!" for i, t in enumerate(targets)]  # 10 rows wrong
    fake_run(tmp_path, "blt", blt, {"local_encoder": 2e6, "global": 1e6, "decoder": 2e6,
                                    "total": 5e6})
    assert main(["analyze", "--dpi", "50"]) == 0
    results = json.loads((tmp_path / "results" / "comprehensive_results.json").read_text())
    mc = results["comparison"]["mcnemar_exact"]
    assert (mc["only_a_correct"], mc["only_b_correct"]) == (0, 10)
    assert mc["p_value"] == pytest.approx(2 * 0.5 ** 10)
    assert results["models"]["blt"]["exact_match"] == 0.9
    assert "10.0 character positions" in results["efficiency"]
    assert "BLT 5.0M vs baseline 8.0M (0.62x)" in results["efficiency"]
    assert "but is not shown as accurate" in results["efficiency"]  # 10 rows the other way
    for path in ("predictions/training_curves.png", "predictions/accuracy_analysis.png",
                 "predictions/detailed_metrics.png", "predictions/summary_report.txt",
                 "results/experimental_report.txt"):
        assert (tmp_path / path).stat().st_size > 0
    page = (tmp_path / "results" / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 3 and "<script" not in page


def test_seed_spread_in_the_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    targets = [x[::-1] for x in INPUTS]
    for mode in ("char", "blt"):
        fake_run(tmp_path, mode, targets, {"total": 1e6})
    write_json(tmp_path / "results" / "seeds.json", {mode: [
        {"seed": s, "exact_match_accuracy": v, "non_ascii_accuracy": None if s else 1.0}
        for s, v in ((0, 0.99), (1, 0.97))] for mode in ("char", "blt")})
    assert main(["analyze", "--no_plots"]) == 0
    spread = json.loads((tmp_path / "results" / "comprehensive_results.json").read_text())["seeds"]
    assert spread["blt"]["exact_match_accuracy"]["mean"] == pytest.approx(0.98)
    assert spread["blt"]["exact_match_accuracy"]["std"] == pytest.approx(0.0141421, rel=1e-4)
    assert "0.9800 ± 0.0141" in (tmp_path / "results" / "experimental_report.txt").read_text()


def test_patching_example_png(tmp_path):
    import numpy as np

    from bltlab.inputs import PatchCodec
    from bltlab.patching import Patcher, PatcherConfig
    from bltlab.report import patch_view, patching_png

    codec = PatchCodec(Patcher(PatcherConfig("static", static_size=3)), (1, 2), 64)
    seg = codec.segment(["café ❤️ x", "hello world", "ab"])
    entropy = np.linspace(0.0, 3.0, len(seg.batch.data))
    path = patching_png((seg, entropy, 1.5), tmp_path / "patching_example.png", 50)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    view = patch_view((seg, entropy, 1.5))
    assert view.count('class="row"') == 3 and "<svg" in view


def write_frontier(folder, blt_inference: float, blt_train: float) -> None:
    """A synthetic seed-profile frontier under `folder` (run from there): per family a
    cheaper point that fails and one that passes, 3 seeds each, with final-set
    outcomes (the passing points right on every row)."""
    from bltlab import paths
    from bltlab.frontier import table

    points = []
    for name, family, inference, train, val in (
            ("char-small", "char", 20e6, None, 0.9), ("char-x", "char", 40e6, 1e13, 0.999),
            ("blt-small", "blt", 10e6, None, 0.8), ("blt-x", "blt", blt_inference, blt_train,
                                                    0.999)):
        for seed in range(3):
            wrong = 0 if train else 20
            curve = [{"train_flops": 5e11, "val_exact_match": 0.5, "epoch": 0},
                     {"train_flops": train or 2e13, "val_exact_match": val, "epoch": 1}]
            points.append({"name": name, "family": family, "seed": seed, "parameters": 1000,
                           "curve": curve, "val_exact_match": val, "test_exact_match": val,
                           "final_exact_match": 1 - wrong / 200,
                           "final_outcomes": "0" * wrong + "1" * (200 - wrong),
                           "final_rows_in_training": seed, "train_seconds": 1700.0,
                           "eval_seconds": 100.0,
                           "forward_flops_per_row": inference,
                           "inference_flops_per_row": inference,
                           "inference_flops_by_part": {"encoder": inference / 4,
                                                       "head": 3 * inference / 4,
                                                       "total": inference}})
    (folder / "results").mkdir(exist_ok=True)
    (folder / "results" / paths.frontier("seed")).write_text(json.dumps(
        {"profile": "seed", "preset": "quick", "budget_train_flops": 2e13,
         "test_csv": "test.csv", "final_csv": "final.csv", "points": points,
         "table": table(points), "missing": {}}))


@pytest.mark.parametrize("blt, answer", [((30e6, 5e12), "the BLT needs fewer inference"),
                                         ((50e6, 2e13), "the BLT needs more inference")])
def test_opposite_results_give_opposite_answers(tmp_path, monkeypatch, blt, answer):
    from bltlab.report import analyze

    monkeypatch.chdir(tmp_path)
    write_frontier(tmp_path, *blt)
    text = analyze(Path("results"), Path("predictions"), Path("none"))["efficiency"]
    assert text.startswith("Answer (compute frontiers") and answer in text, text
    assert f"it needs {blt[1] / 1e13:.1f}x the FLOPs of the cheapest baseline" in text
    assert "and is non-inferior in accuracy" in text


def test_a_folder_with_only_a_frontier_is_reported(tmp_path, monkeypatch):
    from bltlab.report import README_END, README_START, analyze, readme_answer

    monkeypatch.chdir(tmp_path)
    write_frontier(tmp_path, 30e6, 5e12)
    analyze(Path("results"), Path("predictions"), Path("none"))
    saved = json.loads((tmp_path / "results" / "answer.json").read_text())
    blt = saved["profiles"]["seed"]["families"]["blt"]
    assert (blt["cheapest_passing"], blt["cheapest_failing"], blt["located"]) == (
        "blt-x", "blt-small", True)
    assert blt["points"][1]["inference_flops_by_part"] == {"encoder": 7.5e6, "head": 22.5e6,
                                                           "total": 30e6}
    assert "Seed profile: against char" in saved["verdict"]
    readme = readme_answer(saved)
    assert readme.startswith(README_START) and readme.endswith(README_END)
    assert "| BLT | blt-x | blt-small | 100.00% [" in readme and saved["verdict"] in readme
    assert "12 runs, 6.0 h of training and evaluation at one thread a run; 0–2 final-set " \
           "rows of a run's training stream left out of its score" in readme
    assert "char baseline (char-x): encoder 10.00, output layer 30.00; BLT (blt-x): " \
           "encoder 7.50, output layer 22.50." in readme  # where the FLOPs go, by part
    assert (tmp_path / "results" / "answer.png").is_file()
    assert (tmp_path / "results" / "report.html").is_file()
    assert not (tmp_path / "predictions" / "accuracy_analysis.png").exists()  # no model


DAMAGES = {  # a results file, and what is left of it
    "metrics truncated": ("predictions/predictions_blt_metrics.json", lambda t: t[: len(t) // 2]),
    "metrics empty": ("predictions/predictions_blt_metrics.json", lambda t: ""),
    "metrics a list": ("predictions/predictions_blt_metrics.json", lambda t: "[1, 2]"),
    "metrics key missing": ("predictions/predictions_blt_metrics.json",
                            lambda t: json.dumps({k: v for k, v in json.loads(t).items()
                                                  if k != "exact_match_accuracy"})),
    "metrics null": ("predictions/predictions_blt_metrics.json",
                     lambda t: json.dumps({**json.loads(t), "total_correct": None})),
    "exact match null": ("predictions/predictions_baseline_metrics.json",
                         lambda t: json.dumps({**json.loads(t), "exact_match_accuracy": None})),
    "history truncated": ("checkpoints/history_char.json", lambda t: t[:40]),
    "history no epochs": ("checkpoints/history_char.json",
                          lambda t: json.dumps({**json.loads(t), "epochs": []})),
    "predictions not UTF-8": ("predictions/predictions_baseline.csv",
                              lambda t: t.encode() + b"\xff\xfe"),
    "predictions without input": ("predictions/predictions_baseline.csv",
                                  lambda t: t.replace("input,", "inp,", 1)),
    "frontier truncated": ("results/frontier_seed.json", lambda t: '{"points": [{"name": '),
    "frontier a list": ("results/frontier_seed.json", lambda t: "[]"),
    "frontier no table": ("results/frontier_seed.json", lambda t: '{"points": [{"name": "a"}]}'),
    "robustness damaged": ("results/robustness.json", lambda t: '{"char (seed)": 5}'),
    "seeds damaged": ("results/seeds.json", lambda t: '{"char": [{"x": 1}]}'),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_damaged_results_are_one_line_errors_naming_the_file(tmp_path, monkeypatch, capsys,
                                                            damage):
    monkeypatch.chdir(tmp_path)
    targets = [x[::-1] for x in INPUTS]
    for mode in ("char", "blt"):
        fake_run(tmp_path, mode, targets, {"total": 1e6})
    name, change = DAMAGES[damage]
    path = tmp_path / name
    text = path.read_text(encoding="utf-8") if path.is_file() else "{}"
    changed = change(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(changed, bytes) else path.write_text)(changed)
    code = main(["analyze", "--no_plots"])
    err = capsys.readouterr().err
    if code == 0:  # an empty history is not damage: there is nothing to plot
        assert damage == "history no epochs"
        return
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert path.name in err


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted({name for name, _ in DAMAGES.values()})),
       st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from(["points", "table", "epochs", "name",
                                                       "total", "exact_match", "seed",
                                                       "best", "spec", "curve"]), inner,
                                      max_size=4), max_leaves=12))
def test_fuzz_analyze_never_breaks_on_results_files(tmp_path, monkeypatch, name, value):
    monkeypatch.chdir(tmp_path)
    targets = [x[::-1] for x in INPUTS]
    for mode in ("char", "blt"):
        fake_run(tmp_path, mode, targets, {"total": 1e6})
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value) if name.endswith(".json") else str(value))
    assert main(["analyze", "--no_plots"]) in (0, 2)


def test_a_damaged_cached_evaluation_is_evaluated_again(tiny_char_run, tmp_path, capsys):
    from bltlab.evaluation import evaluate_checkpoint
    from tests.conftest import strings, write_reversal

    test_csv = write_reversal(tmp_path / "t.csv", strings(20, 3, 12))
    out = tmp_path / "p.csv"
    first = evaluate_checkpoint(tiny_char_run[1]["best_checkpoint"], "char", test_csv, out)
    (tmp_path / "p_metrics.json").write_text('{"checkpoint_sha256": "x"')  # truncated
    again = evaluate_checkpoint(tiny_char_run[1]["best_checkpoint"], "char", test_csv, out)
    assert "evaluating again" in capsys.readouterr().out
    assert again["exact_match_accuracy"] == first["exact_match_accuracy"]
