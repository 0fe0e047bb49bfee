"""Optuna tuning: search-space checks, and workers sharing one study lose no trial."""

import json
import subprocess
import sys

import optuna
import pytest

from bltlab.errors import BltlabError
from bltlab.tuning import load_search_space, split
from tests.conftest import strings


def test_default_search_space_loads_for_both_models():
    for mode in ("char", "blt"):
        space = load_search_space(None, mode)
        assert {"lr", "d_model", "nhead", "dropout", "batch_size"} <= set(space)
    assert {"target_bpp", "slots"} <= set(load_search_space(None, "blt"))


def test_bad_search_space_is_a_one_line_error(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text("char:\n  d_modle: {type: int, low: 1, high: 2}\n")
    with pytest.raises(BltlabError, match=r"space.yaml: char.d_modle: not a flag"):
        load_search_space(path, "char")
    path.write_text("char:\n  lr: {type: float, low: 0.1}\n")
    with pytest.raises(BltlabError, match="char.lr: missing high"):
        load_search_space(path, "char")


def test_parameters_go_to_their_configs():
    model, training, patcher = split("blt", {"d_model": 96, "lr": 0.01, "target_bpp": 5.0,
                                             "max_patch_len": 12})
    assert model == {"d_model": 96} and training == {"lr": 0.01, "target_bpp": 5.0}
    assert patcher == {"max_patch_len": 12}


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
           "--batch_size", "32"]
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
