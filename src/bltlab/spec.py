"""The run specification: one frozen object that says everything a training run does.

A `RunSpec` holds the mode and its four sections (model, patcher, data, train). It is
built in layers: the recipe of the mode and profile (bltlab.experiments.RECIPES, what
the README reports), then a YAML or JSON file (`--config run.yaml`), then flags; each
layer names settings by field name (`epochs`), flag (`entropy_threshold`) or section
and field (`train.epochs`).

`resolve()` then fits what depends on the training inputs: the char vocabulary, or
the BLT's patcher (the byte LM, θ calibrated when not given), `vocab_size` and the
pooling's `patch_slots`. Checkpoints and results folders store the resolved spec; a
run's identity (the resume key) is the spec before resolving plus the training data.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from bltlab import profiles
from bltlab.config import (
    MODES,
    BLTConfig,
    Config,
    DataConfig,
    ModelConfig,
    TrainConfig,
    need,
    one_of,
    shown,
)
from bltlab.data import default_data_dir
from bltlab.errors import BltlabError
from bltlab.experiments import DEFAULT_PROFILE, RECIPES, recipe
from bltlab.fileio import read_settings
from bltlab.inputs import ByteCodec, CharCodec, Codec, PatchCodec
from bltlab.patching import PatcherConfig, build_patcher, patch_slots
from bltlab.vocab import ByteVocab, CharVocab

MODEL_CONFIGS = {"char": ModelConfig, "byte": ModelConfig, "blt": BLTConfig}
# Settings that say where or how a run is watched, not what it computes: not part of its
# identity, so changing them continues the same run.
VOLATILE = {"save_dir", "resume", "progress_bars", "num_workers", "device", "tensorboard",
            "val_batch_size"}


def sections(mode: str) -> dict[str, type[Config]]:
    """The section classes of a mode's spec, by section name."""
    out: dict[str, type[Config]] = {"model": MODEL_CONFIGS[mode], "data": DataConfig,
                                    "train": TrainConfig}
    if mode == "blt":
        out["patcher"] = PatcherConfig
    return out


def flag_names(cls: type[Config]) -> dict[str, str]:
    """Setting name -> field name for a section: each field by its name and by its flag
    (the same unless the field says, e.g. W for window)."""
    out = {f.name: f.name for f in fields(cls)}  # type: ignore[arg-type]
    out.update({f.metadata["flag"]: f.name for f in fields(cls)  # type: ignore[arg-type]
                if "flag" in f.metadata})
    return out


@dataclass(frozen=True)
class RunSpec(Config):
    """Everything a training run does: mode, model, patcher (BLT), data and training."""

    mode: str = "char"
    model: ModelConfig = field(default_factory=ModelConfig)
    patcher: PatcherConfig | None = None
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        one_of("mode", self.mode, MODES)
        need(isinstance(self.model, MODEL_CONFIGS[self.mode]), "mode", self.mode,
             f"needs a {MODEL_CONFIGS[self.mode].__name__}")
        need((self.patcher is not None) == (self.mode == "blt"), "mode", self.mode,
             "a patcher belongs to --mode blt (and only to it)")
        if self.mode == "blt" and self.model.pooling == "project":
            need(self.patcher.max_patch_len > 0, "max_patch_len", 0,
                 "--pooling project needs a longest patch (its in-patch position slots)")

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "") -> RunSpec:
        mode = d.get("mode", "char")
        one_of("mode", mode, MODES)
        parts = {"mode": mode}
        for name, section in sections(mode).items():
            parts[name] = section.from_dict(d.get(name) or {}, where=f"{where or 'spec'}: {name}")
        unknown = sorted(k for k, v in d.items() if k not in {"mode", *sections(mode)}
                         and not (k == "patcher" and v is None))
        if unknown:
            raise BltlabError(f"{where or 'spec'}: unknown section(s) {', '.join(unknown)}")
        return cls(**parts)

    @classmethod
    def of(cls, mode: str = "char", **settings: Any) -> RunSpec:
        """What `bltlab train --mode M` trains (the recipe of the default profile, or of
        the `profile` given) with `settings` by name: the Python API's short form, e.g.
        `RunSpec.of("blt", epochs=3, d_model=32)`."""
        return build_spec(mode, settings=settings)

    @classmethod
    def defaults(cls, mode: str) -> RunSpec:
        """The dataclass defaults of a mode (the default profile's recipe but for what
        its RECIPES entry names)."""
        one_of("mode", mode, MODES)
        return cls(mode=mode, model=MODEL_CONFIGS[mode](),
                   patcher=PatcherConfig() if mode == "blt" else None)

    def with_settings(self, settings: dict[str, Any], where: str = "settings") -> RunSpec:
        """A copy with `settings` applied: keys are field names, flags or section.field.
        Settings that give `batch_size` (rows a step) and not `max_tokens` ask for batches
        of rows, whatever token batches the layers below chose."""
        d = self.to_dict()
        named = {locate(self.mode, key, where): value for key, value in settings.items()}
        if ("train", "batch_size") in named and ("train", "max_tokens") not in named:
            named["train", "max_tokens"] = 0
        for (section, name), value in named.items():
            d[section][name] = value
        return RunSpec.from_dict(d, where)

    def identity(self, data_sha256: str) -> dict:
        """What makes two runs the same run: the spec (less VOLATILE, and less the epochs
        when a FLOP budget sets them) and the data."""
        d = self.to_dict()
        ignored = VOLATILE | ({"epochs"} if self.train.flops_budget else set())
        d["train"] = {k: v for k, v in d["train"].items() if k not in ignored}
        return {**d, "data_sha256": data_sha256}

    def to_yaml(self) -> str:
        d = {k: v for k, v in self.to_dict().items() if v is not None}  # char: no patcher
        return yaml.safe_dump(json.loads(json.dumps(d)), sort_keys=False, allow_unicode=True)


def locate(mode: str, key: str, where: str) -> tuple[str, str]:
    """(section, field) of a setting named by field, flag or section.field."""
    if "." in key:
        section, name = key.split(".", 1)
        cls = sections(mode).get(section)
        if cls is None or name not in flag_names(cls):
            raise BltlabError(f"{where}: {key}: no such setting for --mode {mode}")
        return section, flag_names(cls)[name]
    found = [(s, flag_names(cls)[key]) for s, cls in sections(mode).items()
             if key in flag_names(cls)]
    if not found:
        other = [m for m in MODES if m != mode and any(key in flag_names(c)
                                                        for c in sections(m).values())]
        hint = f" (a setting of --mode {other[0]})" if other else ""
        raise BltlabError(f"{where}: {key}: no such setting for --mode {mode}{hint}")
    if len(found) > 1:
        raise BltlabError(f"{where}: {key} is in sections {[s for s, _ in found]}: write "
                          "section.name")
    return found[0]


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """The nested settings of a YAML or JSON run file (sections, or flat names)."""
    return read_settings(path, "run file")


def flatten(settings: dict[str, Any], mode: str, where: str = "settings") -> dict[str, Any]:
    """Nested sections ({train: {epochs: 3}}) as section.field keys; flat keys kept."""
    out = {}
    for key, value in settings.items():
        if key in sections(mode) and isinstance(value, dict):
            bad = [k for k in value if not isinstance(k, str)]
            if bad:
                raise BltlabError(f"{where}: {key}: {shown(bad[0])}: not a setting name")
            out.update({f"{key}.{k}": v for k, v in value.items()})
        elif not isinstance(key, str):
            raise BltlabError(f"{where}: {shown(key)}: not a setting name")
        elif key != "mode":
            out[key] = value
    return out


def build_spec(mode: str | None = None, config: str | Path | None = None,
               settings: dict[str, Any] | None = None) -> RunSpec:
    """The recipe of the mode and the profile named (or DEFAULT_PROFILE's), then the run
    file `config`, then `settings` (e.g. flags)."""
    from_file = read_spec_file(config) if config else {}
    if "mode" in from_file and from_file["mode"] not in MODES:  # even where --mode overrides it
        raise BltlabError(f"{config}: mode {shown(from_file['mode'])}: choose one of "
                          f"{', '.join(MODES)}")
    mode = mode or from_file.get("mode") or "char"
    from_file, settings = flatten(from_file, mode, str(config)), settings or {}
    profile = named_profile(settings) or named_profile(from_file) or DEFAULT_PROFILE
    one_of("profile", profile, tuple(RECIPES))
    spec = RunSpec.defaults(mode).with_settings(
        {**recipe(profile, mode), "train_csv": str(default_data_dir(profile) / "train.csv")},
        "recipe")
    if from_file:
        spec = spec.with_settings(from_file, str(config))
    return spec.with_settings(settings, "flags")


def named_profile(settings: dict[str, Any]) -> str | None:
    """The profile flat settings name (`profile` or `data.profile`), if any."""
    return settings.get("profile") or settings.get("data.profile")


def resolve(spec: RunSpec, train_inputs: Sequence[str]) -> tuple[RunSpec, Codec]:
    """Fit what the spec leaves to the data: the char vocabulary (the training inputs,
    and the profile's alphabet when rows are generated), the byte vocabulary (fixed), or
    the BLT's patcher (byte LM, θ calibrated when not given); then `vocab_size` and the
    pooling's `patch_slots`."""
    if spec.mode == "char":
        texts = list(train_inputs)
        if spec.data.fresh_pairs:
            texts.append("".join(sorted(profiles.alphabet(spec.data.profile))))
        codec = CharCodec(CharVocab.build(texts), spec.model.max_input, spec.model.start_token)
        model = spec.model.replace(vocab_size=len(codec.vocab))
        return dataclasses.replace(spec, model=model), codec
    if spec.mode == "byte":
        model = spec.model.replace(vocab_size=len(ByteVocab()))
        return dataclasses.replace(spec, model=model), ByteCodec(model.max_input,
                                                                 model.start_token)
    patcher = build_patcher(spec.patcher, train_inputs)
    slots = patch_slots(patcher.cfg) if spec.model.pooling == "project" else 0
    model = spec.model.replace(vocab_size=len(ByteVocab()), patch_slots=slots)
    codec = PatchCodec(patcher, model.ngram_sizes, model.ngram_buckets, model.max_input)
    return dataclasses.replace(spec, model=model, patcher=patcher.cfg), codec


def settings_for(mode: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that exist for `mode` (flags shared by a two-mode command)."""
    out = {}
    for key, value in settings.items():
        try:
            locate(mode, key, "")
        except BltlabError:
            continue
        out[key] = value
    return out
