"""Run files: every value type-checked before use, with the file and the key named;
YAML 1.1's quirks read as a person means them or refused; no alias expands a file."""

import dataclasses
import time

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bltlab.cli import main
from bltlab.config import BLTConfig, DataConfig, TrainConfig
from bltlab.errors import BltlabError
from bltlab.patching import PatcherConfig
from bltlab.spec import build_spec


def spec_from(tmp_path, text: str, mode: str | None = None):
    path = tmp_path / "run.yaml"
    path.write_text(text, encoding="utf-8")
    return build_spec(mode, path)


@pytest.mark.parametrize("text, message", [
    ("train: {epochs: 1.5}", "train: --epochs 1.5: must be a whole number"),  # never ended
    ("train: {epochs: .inf}", "--epochs inf: must be a whole number"),
    ("train: {epochs: true}", "--epochs True: must be a whole number (it is bool)"),
    ("train: {tensorboard: \"false\"}", "--tensorboard 'false': must be true or false (it is "
                                        "str: write it without quotes)"),
    ("data: {fresh_pairs: \"false\"}", "--fresh_pairs 'false': must be true or false"),
    ("model: {from_end: \"false\"}", "--from_end 'false': must be true or false"),
    ("mode: BLT", "mode BLT: choose one of char, byte, blt"),
    ("mode: 5", "mode 5: choose one of char, byte, blt"),
    ("1: 3", "1: not a setting name"), ("null: 3", "None: not a setting name"),
    ("train: {1: 3}", "train: 1: not a setting name"),
    ("model: {dropout: \"0.1\"}", "--dropout '0.1': must be a finite number"),
    ("mode: blt\nmodel: {ngram_sizes: 3}", "--ngram_sizes 3: must be a list of whole numbers"),
    ("model: {d_model: 16.0}", "--d_model 16.0: must be a whole number (it is float)"),
    ("model: {d_model: \"16\"}", "model: --d_model '16': must be a whole number"),
    ("train: {seed: 1.5}", "--seed 1.5: must be a whole number"),
    ("train: {seed: -1}", "--seed -1: must be 0 to 2**32 - 1"),
    ("data: {train_csv: 123}", "--train_csv 123: must be a string (it is int)"),
    ("train: {save_dir: null}", "--save_dir None: must be a string (it is null)"),
    ("train: {device: 5}", "--device 5: must be a string"),
    ("train: {flops_budget: .inf}", "--flops_budget inf: must be a finite number"),
    ("train: {lr: .nan}", "--lr nan: must be a finite number"),
    ("model: 5", "model: no such setting"),
    ("a: &x [1, 2]\ntrain: {seed: *x}", "aliases (*name) are not allowed"),
])
def test_a_wrong_value_is_one_line_naming_the_file_and_key(tmp_path, text, message):
    with pytest.raises(BltlabError) as e:
        spec_from(tmp_path, text + "\n")
    assert message in str(e.value) and "run.yaml" in str(e.value) and "\n" not in str(e.value)


def test_a_wrong_mode_in_the_file_is_refused_where_a_flag_names_the_mode(tmp_path):
    (tmp_path / "run.yaml").write_text("mode: BLT\n", encoding="utf-8")
    with pytest.raises(BltlabError, match="run.yaml: mode BLT: choose one of"):
        build_spec("char", tmp_path / "run.yaml")


def test_yaml_1_1_exponents_are_numbers(tmp_path):
    spec = spec_from(tmp_path, "train: {lr: 1e-3, weight_decay: 2E-2, epochs: 2}\n")
    assert spec.train.lr == 0.001 and spec.train.weight_decay == 0.02


def test_an_alias_bomb_is_refused_at_once(tmp_path, capsys):
    lines = ["a: &a [1,1,1,1,1,1,1,1,1]"] + [
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\ntrain: {seed: *i}\n")
    start = time.monotonic()
    code = main(["train", "--config", str(tmp_path / "bomb.yaml")])
    assert code == 2 and time.monotonic() - start < 10
    assert "aliases" in capsys.readouterr().err


SECTIONS = {"model": BLTConfig, "patcher": PatcherConfig, "data": DataConfig,
            "train": TrainConfig}
KEYS = {name: [f.name for f in dataclasses.fields(cls)] for name, cls in SECTIONS.items()}
WRONG = st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True),
                  st.text(max_size=8), st.lists(st.integers(-2, 20), max_size=3),
                  st.sampled_from(["true", "false", "1e-3", "16", ".inf", "blt", "space"]),
                  st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["char", "blt"]), st.dictionaries(
    st.sampled_from(list(SECTIONS)), st.dictionaries(
        st.sampled_from(sorted({k for keys in KEYS.values() for k in keys})), WRONG,
        max_size=3), max_size=3))
def test_fuzz_run_files_never_break_bltlab(tmp_path, mode, sections):
    """Random run files of the spec's keys and wrong types: a spec or a one-line error,
    never an internal error, never a hang."""
    text = yaml.safe_dump({"mode": mode, **sections}, allow_unicode=True)
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        build_spec(None, path)
    except BltlabError as e:
        assert "\n" not in str(e) and len(str(e)) < 400
