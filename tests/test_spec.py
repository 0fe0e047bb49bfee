"""The run spec: recipes, run files under flags, validation, identity."""

import pytest

from bltlab.cli import main, script
from bltlab.errors import BltlabError
from bltlab.experiments import DEFAULT_PROFILE, RECIPES
from bltlab.spec import RunSpec, build_spec


def test_train_with_no_flags_is_the_modes_recipe_of_the_default_profile(capsys):
    assert main(["train", "--mode", "blt", "--print_config"]) == 0
    out = capsys.readouterr().out
    spec, recipe = build_spec("blt"), RECIPES[DEFAULT_PROFILE]["blt"]
    assert spec.data.profile == DEFAULT_PROFILE == "broad" and spec.data.fresh_pairs
    assert spec.data.train_csv == "data/broad/train.csv"
    assert spec.train.epochs == recipe["epochs"] and spec.model.byte_embedding == "utf8"
    assert f"epochs: {recipe['epochs']}" in out and "patcher: space" in out
    assert spec.patcher.max_patch_len == 3 and "max_patch_len: 3" in out
    assert spec.train.epochs == 12 and spec.train.max_tokens == 2048  # docs/log/15
    assert spec.train.label_smoothing == 0.1 and "label_smoothing: 0.1" in out  # log 31
    assert build_spec("char").train.label_smoothing == 0.0
    assert build_spec("char").model.start_token and build_spec("char").train.epochs == 4
    assert not build_spec("char", settings={"profile": "seed"}).model.start_token


@pytest.mark.parametrize("mode", ["char", "blt"])
def test_the_python_api_and_the_dataclass_defaults_are_the_default_recipe(mode):
    """RunSpec.of(mode) is what `bltlab train --mode M` trains; the dataclass defaults are
    the default profile's recipe but for what its table entry names."""
    spec = RunSpec.of(mode)
    assert spec == build_spec(mode)
    named = RECIPES[DEFAULT_PROFILE][mode]
    assert spec.with_settings(named) == RunSpec.defaults(mode).with_settings(
        {**named, "train_csv": spec.data.train_csv})


@pytest.mark.parametrize("settings", [{"profile": "seed"}, {"data.profile": "seed"}])
def test_naming_a_profile_picks_its_recipe_under_the_flags(settings):
    spec = build_spec("blt", settings={**settings, "lr": 0.01})
    assert spec.data.profile == "seed" and spec.train.epochs == RECIPES["seed"]["blt"]["epochs"]
    assert spec.model.byte_embedding == "table" and spec.train.lr == 0.01
    assert spec.data.train_csv == "data/train.csv"  # the seed's own layout


def test_a_run_file_names_the_profile(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("mode: char\ndata: {profile: seed}\n")
    assert build_spec(None, path).data.fresh_non_ascii == RECIPES["seed"]["char"]["fresh_non_ascii"]
    with pytest.raises(BltlabError, match="--profile nope: "):
        build_spec("char", settings={"profile": "nope"})


def test_the_seed_scripts_train_on_the_seed_profile(monkeypatch, capsys):
    monkeypatch.setattr("sys.argv", ["train.py", "--mode", "char", "--print_config"])
    with pytest.raises(SystemExit) as done:
        script("train")
    assert done.value.code == 0 and "profile: seed" in capsys.readouterr().out


def test_a_run_file_under_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("mode: blt\nmodel: {d_model: 32, nhead: 2}\ntrain: {epochs: 3, lr: 0.01}\n"
                    "patcher: {patcher: static, W: 7}\nseed: 5\n")
    spec = build_spec(None, path, {"epochs": 4, "entropy_threshold": 1.5})
    assert spec.mode == "blt" and spec.model.d_model == 32 and spec.train.lr == 0.01
    assert spec.train.epochs == 4 and spec.train.seed == 5  # flags win; flat names work
    assert spec.patcher.window == 7 and spec.patcher.threshold == 1.5
    assert RunSpec.from_dict(spec.to_dict()) == spec  # round trip through plain values


@pytest.mark.parametrize("content, message", [
    ("mode: blt\nmodel: {d_modle: 3}\n", "model.d_modle: no such setting"),
    ("model: {nhead: 3}\n", "--nhead 3: must divide --d_model 64"),
    ("- a\n- b\n", "a run file is a mapping"),
    ("mode: char\nmodel: {d_model: [\n", "not valid YAML"),
    ("mode: char\npooling: cross\n", "pooling: no such setting for --mode char"),
])
def test_bad_run_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "run.yaml"
    path.write_text(content)
    with pytest.raises(BltlabError, match=message) as e:
        build_spec(None, path)
    assert "\n" not in str(e.value)


def test_identity_ignores_where_and_how_a_run_is_watched():
    a = RunSpec.of("char", save_dir="a", progress_bars=False, device="cpu", val_batch_size=8)
    b = RunSpec.of("char", save_dir="b", progress_bars=True, device="auto")
    assert a.identity("sha") == b.identity("sha") != RunSpec.of("char", lr=1e-3).identity("sha")


def test_a_batch_size_given_means_rows_a_step_unless_max_tokens_is_given_too():
    assert build_spec("char").train.max_tokens == 4096  # the broad recipe: token batches
    rows = build_spec("char", settings={"batch_size": 32}).train
    assert (rows.batch_size, rows.max_tokens) == (32, 0)
    both = build_spec("char", settings={"batch_size": 32, "max_tokens": 1024}).train
    assert (both.batch_size, both.max_tokens) == (32, 1024)
