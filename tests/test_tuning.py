"""Optuna tuning: search-space checks, and workers sharing one study lose no trial."""

import json
import subprocess
import sys

import optuna
import pytest

from bltlab.cli import main
from bltlab.errors import BltlabError
from bltlab.spec import RunSpec
from bltlab.tuning import load_search_space
from tests.conftest import strings


def test_default_search_space_loads_for_both_models():
    for mode in ("char", "blt"):
        space = load_search_space(None, RunSpec.of(mode))
        assert {"lr", "d_model", "nhead", "dropout", "batch_size"} <= set(space)
    assert {"max_patch_len", "slots"} <= set(load_search_space(None, RunSpec.of("blt")))


@pytest.mark.parametrize("entry, message", [
    ("d_modle: {type: int, low: 1, high: 2}", "char.d_modle: not a setting"),
    ("lr: {type: float, low: 0.1}", "char.lr: missing high"),
    ("lr: {type: float, low: 0.1, high: 0.01}", "low 0.1 is above high 0.01"),
    ("lr: {type: float, low: abc, high: 0.1}", "low and high must be float numbers"),
    ("nhead: {type: categorical, choices: [0]}", "0 does not make a valid run"),
    ("d_model: {type: int, low: -8, high: 64}", "-8 does not make a valid run"),
    ("dropout: {type: categorical, choices: []}", "choices must be a non-empty list"),
])
def test_bad_search_space_is_a_one_line_error(tmp_path, entry, message):
    path = tmp_path / "space.yaml"
    path.write_text(f"char:\n  {entry}\n")
    with pytest.raises(BltlabError, match=message) as e:
        load_search_space(path, RunSpec.of("char"))
    assert "\n" not in str(e.value)


def test_settings_are_named_as_flags_and_go_to_their_sections():
    spec = RunSpec.of("blt").with_settings({"d_model": 96, "lr": 0.01, "target_bpp": 5.0,
                                            "max_patch_len": 12, "entropy_threshold": 1.5})
    assert spec.model.d_model == 96 and spec.train.lr == 0.01
    assert (spec.patcher.target_bpp, spec.patcher.max_patch_len) == (5.0, 12)
    assert spec.patcher.threshold == 1.5


@pytest.mark.parametrize("storage, message", [
    ("notaurl", "not a database URL"),
    ("sqlite:////proc/foo/x.db", "/proc/foo"),
    ("postgresql://u:p@localhost/db", "pip install psycopg2-binary"),
])
def test_bad_storage_is_one_line_before_any_trial(tmp_path, capsys, storage, message):
    code = main(["tune", "--mode", "char", "--storage", storage, "--train_csv",
                 str(tmp_path / "none.csv"), "--output_dir", str(tmp_path / "results")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err


@pytest.mark.workers
def test_two_workers_share_one_study_without_losing_trials(tmp_path):
    inputs = strings(200, 0, 8)
    (tmp_path / "train.csv").write_text(
        "input,target\n" + "".join(f"{s},{s[::-1]}\n" for s in inputs), encoding="utf-8")
    (tmp_path / "space.yaml").write_text(
        "char:\n  lr: {type: float, low: 1.0e-3, high: 5.0e-3, log: true}\n"
        "  d_model: {type: categorical, choices: [16, 32]}\n"
        "  nhead: {type: categorical, choices: [2]}\n"
        "  num_encoder_layers: {type: int, low: 1, high: 1}\n"
        "  num_decoder_layers: {type: int, low: 1, high: 1}\n"
        "  dim_feedforward: {type: categorical, choices: [32]}\n")
    cmd = [sys.executable, "-m", "bltlab.cli", "tune", "--mode", "char", "--train_csv",
           str(tmp_path / "train.csv"), "--search_space", str(tmp_path / "space.yaml"),
           "--tune_epochs", "1", "--max_tune_combinations", "6", "--output_dir",
           str(tmp_path / "results"), "--runs_dir", str(tmp_path / "runs"), "--threads", "1",
           "--batch_size", "32", "--fresh_pairs", "false"]
    (tmp_path / "results").mkdir()
    workers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outputs = [w.communicate(timeout=600) for w in workers]
    for w, (_, err) in zip(workers, outputs):
        assert w.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="bltlab-char",
                              storage=f"sqlite:///{tmp_path / 'results' / 'tuning.db'}")
    states = [t.state for t in study.trials]
    finished = [s for s in states if s in (optuna.trial.TrialState.COMPLETE,
                                           optuna.trial.TrialState.PRUNED)]
    assert len(finished) == 6 and len(states) == 6
    assert len({t.number for t in study.trials}) == 6
    result = json.loads((tmp_path / "results" / "hyperparameter_tuning_char.json").read_text())
    assert result["finished_trials"] == 6 and set(result["best_params"]) >= {"lr", "d_model"}
