"""Optuna tuning: search-space checks, and workers sharing one study lose no trial."""

import json
import socket
import subprocess
import sys

import optuna
import pytest

import bltlab.tuning as tuning
from bltlab.cli import main
from bltlab.errors import BltlabError
from bltlab.spec import RunSpec
from bltlab.tuning import load_search_space, tune
from tests.conftest import strings, write_reversal


@pytest.fixture
def tiny_study(tmp_path):
    """A tiny char model's base spec, a one-setting search space and the tune() call."""
    base = RunSpec.of("char", d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                      dim_feedforward=32, max_len=32, batch_size=16, fresh_pairs=False,
                      progress_bars=False, tensorboard=False,
                      train_csv=write_reversal(tmp_path / "train.csv", strings(120, 0, 8)))
    (tmp_path / "space.yaml").write_text(
        "char:\n  lr: {type: float, low: 1.0e-3, high: 5.0e-3, log: true}\n")

    def run(trials):
        return tune(base, 1, trials, search_space=tmp_path / "space.yaml",
                    out_dir=tmp_path / "results", runs_dir=tmp_path / "runs")

    return run


def trial_states(tmp_path):
    study = optuna.load_study(study_name="bltlab-char",
                              storage=f"sqlite:///{tmp_path / 'results' / 'tuning.db'}")
    return [t.state.name for t in study.trials], study


def test_default_search_space_loads_for_both_models():
    for mode in ("char", "blt"):
        space = load_search_space(None, RunSpec.of(mode))
        assert {"lr", "d_model", "nhead", "dropout", "max_tokens"} <= set(space)
    assert {"max_patch_len", "slots"} <= set(load_search_space(None, RunSpec.of("blt")))


@pytest.mark.parametrize("entry, message", [
    ("d_modle: {type: int, low: 1, high: 2}", "char.d_modle: not a setting"),
    ("lr: {type: float, low: 0.1}", "char.lr: missing high"),
    ("lr: {type: float, low: 0.1, high: 0.01}", "low 0.1 is above high 0.01"),
    ("lr: {type: float, low: abc, high: 0.1}", "low and high must be finite float numbers"),
    ("nhead: {type: categorical, choices: [0]}", "0 does not make a valid run"),
    ("d_model: {type: int, low: -8, high: 64}", "-8 does not make a valid run"),
    ("dropout: {type: categorical, choices: []}", "choices must be a non-empty list"),
    ("lr: {type: float, low: 0.0, high: 0.1, log: true}", "log: true needs low above 0"),
    ("lr: {type: float, low: 0.01, high: 0.1, grid: 5}", "grid must be a list"),
    ("d_model: {type: int, low: 16, high: 64, step: 0}", "step must be a whole number"),
    ("dropout: {type: categorical, choices: [[0.1, 0.2]]}", "list of plain values"),
    ("lr: {type: float, low: 0.01, high: 0.1, lgo: true}", "unknown key.s. lgo"),
    ("1: {type: int, low: 1, high: 2}", "char.1: not a setting name"),
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
           "--tune_epochs", "1", "--max_tune_combinations", "4", "--output_dir",
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
    assert len(finished) == 4 and len(states) == 4
    assert len({t.number for t in study.trials}) == 4
    result = json.loads((tmp_path / "results" / "hyperparameter_tuning_char.json").read_text())
    assert result["finished_trials"] == 4 and set(result["best_params"]) >= {"lr", "d_model"}


def test_a_trial_left_running_by_a_killed_worker_is_run_again(tiny_study, tmp_path, capsys):
    """kill -9 during the last trial: the rerun queues it again and runs it, so the study
    ends with as many finished trials as asked."""
    tiny_study(2)
    _, study = trial_states(tmp_path)
    dead = study.ask()  # what a killed worker leaves: a RUNNING trial owned by a gone pid
    lr = dead.suggest_float("lr", 1e-3, 5e-3, log=True)
    dead.set_user_attr("worker", f"{socket.gethostname()} 999999999")
    result = tiny_study(3)
    assert "its worker is gone; queued again" in capsys.readouterr().out
    assert result["finished_trials"] == 3
    states, study = trial_states(tmp_path)
    assert states.count("COMPLETE") + states.count("PRUNED") == 3 and "RUNNING" not in states
    assert any(t.params.get("lr") == lr and t.state.name in ("COMPLETE", "PRUNED")
               for t in study.trials if t.number != dead.number)


@pytest.mark.parametrize("stop", [KeyboardInterrupt, ValueError])
def test_an_interrupted_or_broken_trial_does_not_stay_running(tiny_study, tmp_path,
                                                              monkeypatch, stop):
    """Ctrl-C fails the trial and queues it again; a bug fails it before the error goes
    on; either way the rerun finishes the trials asked for."""
    real = tuning.train
    calls = []

    def once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise stop("stopped")
        return real(*args, **kwargs)

    monkeypatch.setattr(tuning, "train", once)
    with pytest.raises(stop):
        tiny_study(2)
    states, _ = trial_states(tmp_path)
    assert "RUNNING" not in states and states[0] == "FAIL"
    assert ("WAITING" in states) == (stop is KeyboardInterrupt)
    assert tiny_study(2)["finished_trials"] == 2


def test_tune_print_config_prints_and_tunes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["tune", "--mode", "char", "--print_config"]) == 0
    out = capsys.readouterr().out
    assert "mode: char" in out and "search_space:" in out and "lr:" in out
    assert not (tmp_path / "results").exists()


def test_tuning_prints_no_heartbeat_warning(tiny_study, recwarn):
    tiny_study(1)
    assert not [w for w in recwarn if "heartbeat" in str(w.message).lower()]
