"""The run spec: recipes, run files under flags, validation, identity."""

import pytest

from bltlab.cli import main
from bltlab.errors import BltlabError
from bltlab.spec import RECIPES, RunSpec, build_spec


def test_train_with_no_flags_is_the_modes_recipe(capsys):
    assert main(["train", "--mode", "blt", "--print_config"]) == 0
    out = capsys.readouterr().out
    spec = build_spec("blt")
    assert spec.train.epochs == RECIPES["blt"]["epochs"] and spec.data.fresh_pairs
    assert f"epochs: {RECIPES['blt']['epochs']}" in out and "patcher: space" in out


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
    a = RunSpec.of("char", save_dir="a", progress_bars=False, device="cpu")
    b = RunSpec.of("char", save_dir="b", progress_bars=True, device="auto")
    assert a.identity("sha") == b.identity("sha") != RunSpec.of("char", lr=1e-3).identity("sha")
