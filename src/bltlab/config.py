"""Every setting of a run, in one frozen dataclass per concern, checked when it is built.

The sections (model, patcher, data, training) make up a `RunSpec` (spec.py); the
patcher's section, `PatcherConfig`, lives with the patchers (bltlab.patching). A field's
`help` metadata is its command-line help, its `choices` the values it allows; the flag
is `--<field name>` unless `flag` says otherwise. A value that makes no sense raises a
one-line `BltlabError` naming the setting, whichever way the config was made (flags, a
YAML file, Python, the tuner).
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import Field, asdict, dataclass, field, fields
from typing import Any, TypeVar

from bltlab.errors import BltlabError

T = TypeVar("T", bound="Config")

MODES = ("char", "byte", "blt")  # the families: char and byte baselines, the BLT
MODE_NAMES = {"char": "char baseline", "byte": "byte baseline", "blt": "BLT"}
POS_ENCODINGS = ("learned", "sinusoidal", "rope")
PROFILES = ("seed", "broad")
MAX_LOOK = 16  # the farthest look-back or look-ahead of patchers and n-grams (bytes)
MAX_ENTROPY_BITS = 8.0  # a byte's entropy is at most 8 bits


def setting(default: Any, help: str, **extras: Any) -> Any:
    """A dataclass field with its command-line help and extras: `choices` (the values it
    allows, checked by every Config), `flag` (its flag's name), `derived` (set by
    resolve(), no flag)."""
    if isinstance(default, (list, dict)):
        raise TypeError("mutable defaults: use a tuple")
    return field(default=default, metadata={"help": help, **extras})


SHOWN = reprlib.Repr()
SHOWN.maxstring, SHOWN.maxother, SHOWN.maxlist, SHOWN.maxdict = 40, 40, 6, 4


def shown(value: Any) -> str:
    """A value as an error message shows it: short, whatever its size."""
    return value if isinstance(value, str) and len(value) <= 40 else SHOWN.repr(value)


def need(ok: bool, name: str, value: Any, rule: str) -> None:
    """Raise the one-line error for setting `name` when `ok` is false."""
    if not ok:
        raise BltlabError(f"--{name} {shown(value)}: {rule}")


def whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return (whole(value) or isinstance(value, float)) and math.isfinite(value)


TYPE_RULES = {  # a field's annotation -> (test, what the error says it must be)
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "int": (whole, "a whole number"),
    "float": (number, "a finite number"),
    "float | None": (lambda v: v is None or number(v), "a finite number or null"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "tuple[int, ...]": (lambda v: isinstance(v, (list, tuple)) and all(map(whole, v)),
                        "a list of whole numbers"),
}


def check_type(f: Field, value: Any) -> None:
    """A one-line error when `value` is not of the field's type; a string that only looks
    like another type (YAML's "false", "16") is named as a string."""
    test, rule = TYPE_RULES[f.type]
    if not test(value):
        got = f" (it is {type(value).__name__ if value is not None else 'null'}"
        got += ": write it without quotes)" if isinstance(value, str) else ")"
        need(False, flag(f), repr(value) if isinstance(value, str) else value,
             f"must be {rule}{got}")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a path given in bytes that are not UTF-8
            need(False, flag(f), ascii(value), "must be valid UTF-8 text")


def one_of(name: str, value: Any, choices: tuple) -> None:
    need(value in choices, name, value, f"choose one of {', '.join(map(str, choices))}")


def at_least(cfg: Any, low: float, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        need(isinstance(value, (int, float)) and value >= low, name, value,
             f"must be at least {low:g}")


def flag(f: Field) -> str:
    """The command-line name of a setting (without --)."""
    return f.metadata.get("flag", f.name)


class Config:
    """Mixin for the frozen dataclass configs: `to_dict()`, `from_dict()` (which refuses
    keys it does not know), `replace()`, and the check of every field's `choices`."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            check_type(f, getattr(self, f.name))
            if "choices" in f.metadata:
                one_of(flag(f), getattr(self, f.name), f.metadata["choices"])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def names(cls) -> set[str]:
        return {f.name for f in fields(cls)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[T], d: dict[str, Any], where: str = "") -> T:
        """A config from plain values; an unknown key or a bad value is a one-line error
        that names `where` (a file, a section)."""
        if not isinstance(d, dict):
            raise BltlabError(f"{where or cls.__name__}: must be a mapping of settings, not "
                              f"{shown(d)}")
        unknown = sorted(map(shown, set(d) - cls.names()))
        if unknown:
            raise BltlabError(f"{where or cls.__name__}: unknown setting(s) {', '.join(unknown)}")
        try:
            return cls(**d)
        except BltlabError as e:
            raise BltlabError(f"{where}: {e}" if where else str(e)) from None

    def replace(self: T, **changes: Any) -> T:
        return type(self).from_dict({**self.to_dict(), **changes})


@dataclass(frozen=True)
class ModelConfig(Config):
    """Size and position scheme of the encoder-decoder (the char and byte baselines')."""

    vocab_size: int = setting(0, "set by resolve(): the codec's vocabulary size", derived=True)
    d_model: int = setting(64, "width")
    nhead: int = setting(4, "attention heads")
    num_encoder_layers: int = setting(2, "char, byte: encoder blocks")
    num_decoder_layers: int = setting(2, "decoder blocks")
    dim_feedforward: int = setting(256, "feed-forward width")
    dropout: float = setting(0.0, "dropout")
    max_len: int = setting(512, "longest sequence in tokens, EOS included")
    pos_encoding: str = setting("rope", "position signal", choices=POS_ENCODINGS)
    from_end: bool = setting(True, "add a distance-to-end position signal")
    start_token: bool = setting(
        True, "char, byte: put a start token before the input; with from_end, the output step "
               "that must end the string finds it by the same position match as any character")

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least(self, 1, "d_model", "nhead", "num_decoder_layers", "dim_feedforward")
        at_least(self, 0, "vocab_size", "num_encoder_layers")
        at_least(self, 2, "max_len")
        need(self.d_model % self.nhead == 0, "nhead", self.nhead,
             f"must divide --d_model {self.d_model}")
        need(self.pos_encoding != "rope" or (self.d_model // self.nhead) % 2 == 0, "nhead",
             self.nhead, f"rope needs an even head width (d_model / nhead = "
                         f"{self.d_model // self.nhead})")
        need(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "must be in [0, 1)")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.nhead

    @property
    def max_input(self) -> int:
        """The longest input in tokens (the output needs one more for EOS)."""
        return self.max_len - 1


@dataclass(frozen=True)
class BLTConfig(ModelConfig):
    """The BLT's size and parts: local encoder, pooling, global transformer, local decoder."""

    vocab_size: int = setting(260, "set by resolve(): 256 bytes and the specials", derived=True)
    num_decoder_layers: int = setting(1, "decoder blocks")
    num_local_layers: int = setting(1, "blt: local encoder blocks")
    num_global_layers: int = setting(2, "blt: global transformer blocks")
    global_factor: int = setting(
        2, "blt: the global transformer is k times as wide as d_model; each patch reaches "
           "the decoder as k vectors")
    pooling: str = setting("project", "blt: bytes to patches by in-patch position slots and a "
                           "linear map (project) or k cross-attention queries (cross, the "
                           "paper's)", choices=("project", "cross"))
    slots: int = setting(2, "blt, cross pooling: queries per patch")
    patch_slots: int = setting(0, "set by resolve(): project pooling's in-patch positions "
                                  "(the patcher's max_patch_len + 3, a split character's tail)",
                               derived=True)
    byte_embedding: str = setting(
        "utf8", "blt: byte vectors built from each byte's UTF-8 role and bits (utf8: a byte "
                "never seen in training still has a trained vector), or from a table",
        choices=("utf8", "table"))
    ngram_sizes: tuple[int, ...] = setting((1, 2, 3), "blt: hashed n-gram sizes")
    ngram_buckets: int = setting(4096, "blt: hash buckets per n")
    ngram_init_std: float | None = setting(
        0.0, "blt: initial std of the n-gram tables (0: zeros, so an unseen n-gram adds "
             "nothing)")
    decoder_memory: str = setting(
        "patches", "blt: the decoder attends to k vectors per patch keyed by the patch's end "
                   "(patches), or (an ablation, not a BLT) to byte states", choices=(
                       "patches", "bytes"))
    relative_values: bool = setting(True, "blt with rope: decoder cross-attention also "
                                          "returns how far the step is past each patch's end")

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "ngram_sizes", tuple(self.ngram_sizes))
        at_least(self, 0, "num_local_layers", "num_global_layers", "patch_slots")
        at_least(self, 1, "global_factor", "slots", "ngram_buckets")
        need(len(self.ngram_sizes) > 0 and all(1 <= n <= MAX_LOOK for n in self.ngram_sizes),
             "ngram_sizes", list(self.ngram_sizes), f"each between 1 and {MAX_LOOK}")
        need(self.ngram_init_std is None or self.ngram_init_std >= 0, "ngram_init_std",
             self.ngram_init_std, "must be at least 0")


@dataclass(frozen=True)
class DataConfig(Config):
    """The training data regime: which rows each epoch sees, and the validation split."""

    train_csv: str = setting("data/broad/train.csv", "training rows (input,target CSV); "
                             "with --fresh_pairs, the validation rows and the epoch's size")
    profile: str = setting("broad", "the generator's distribution for --fresh_pairs (and "
                                    "the char vocabulary it needs)", choices=PROFILES)
    fresh_pairs: bool = setting(True, "each epoch, train on as many newly generated rows "
                                      "(of --profile) instead of the training rows")
    fresh_non_ascii: float = setting(0.0, "seed profile, fresh rows: share given one word "
                                          "with non-ASCII characters (the data's own: ~0.01)")
    val_fraction: float = setting(0.05, "share of the training CSV held out for validation")
    skip_bad_rows: bool = setting(False, "skip and count bad CSV rows instead of stopping")

    def __post_init__(self) -> None:
        super().__post_init__()
        need(0.0 <= self.fresh_non_ascii <= 1.0, "fresh_non_ascii", self.fresh_non_ascii,
             "must be in [0, 1]")
        need(0.0 < self.val_fraction < 1.0, "val_fraction", self.val_fraction,
             "must be in (0, 1): validation picks the best checkpoint")
        need(bool(self.train_csv), "train_csv", repr(self.train_csv), "must name a file")


@dataclass(frozen=True)
class TrainConfig(Config):
    """Optimisation, schedule, checkpoints and where the run lives."""

    save_dir: str = setting("checkpoints", "where checkpoints and the history go")
    epochs: int = setting(4, "epochs (set from --flops_budget when that is given)")
    flops_budget: float = setting(0.0, "train for this many training FLOPs (forward + "
                                       "backward, real positions) instead of --epochs: the "
                                       "epochs are the budget over one epoch's FLOPs, "
                                       "rounded up (0: off)")
    batch_size: int = setting(64, "rows per step (per process), when --max_tokens is 0")
    max_tokens: int = setting(0, "positions per step (per process): rows of similar length "
                                 "until rows x the longest (input or output, padding "
                                 "included) would pass it (0: --batch_size rows)")
    lr: float = setting(2e-3, "peak learning rate")
    weight_decay: float = setting(0.01, "weight decay of linear layers' matrices")
    optimizer: str = setting("adamw", "optimizer", choices=("adamw", "adam", "sgd"))
    beta1: float = setting(0.9, "adam(w): first-moment decay (sgd: momentum)")
    beta2: float = setting(0.98, "adam(w): second-moment decay")
    lr_scheduler: str = setting(
        "cosine", "after warmup: cosine to 0, step (cut by --step_factor at --step_cuts "
                  "even points), constant, or plateau (cut when validation stalls)",
        choices=("cosine", "step", "constant", "plateau"))
    warmup_steps: int = setting(100, "linear warmup steps")
    step_cuts: int = setting(4, "step schedule: how many cuts over the run")
    step_factor: float = setting(0.5, "step schedule: factor of each cut")
    plateau_patience: int = setting(2, "plateau: epochs without improvement before each cut")
    plateau_factor: float = setting(0.5, "plateau: factor of each cut")
    grad_clip: float = setting(1.0, "gradient norm clip (0: none)")
    label_smoothing: float = setting(0.0, "loss (training and validation): this much of "
                                          "each target's probability spread over the "
                                          "vocabulary")
    ema_decay: float = setting(0.0, "validate and keep an exponential moving average of the "
                                    "weights, updated every step with this decay (0: off)")
    grad_accum_steps: int = setting(1, "micro-batches per optimiser step")
    early_stopping_patience: int = setting(0, "stop after N epochs without a better "
                                              "validation score (0: off)")
    stop_at: float = setting(0.0, "stop once validation exact match has been at least this "
                                  "for --stop_for epochs in a row (0: off)")
    stop_for: int = setting(3, "epochs in a row at --stop_at that end a run")
    early_stopping_metric: str = setting(
        "exact_match", "validation score for early stopping, plateau and the best checkpoint",
        choices=("exact_match", "loss"))
    amp: str = setting("auto", "mixed precision: bf16 autocast (fp16 + loss scaling without "
                               "bf16); auto: on for CUDA", choices=("auto", "on", "off"))
    compile: bool = setting(False, "torch.compile the model for training")
    save_every_steps: int = setting(100, "also write the latest checkpoint every N steps "
                                         "(0: epoch ends only)")
    tensorboard: bool = setting(True, "write TensorBoard event files")
    num_workers: int = setting(0, "data loader worker processes")
    val_batch_size: int = setting(64, "rows per validation batch (rows of similar length; "
                                          "smaller batches pad less)")
    seed: int = setting(0, "random seed")
    device: str = setting("auto", "auto, cpu, cuda, cuda:N")
    resume: str = setting("auto", "auto (continue the same run), latest, never, or a "
                                  "checkpoint PATH")
    progress_bars: bool = setting(True, "show progress bars")

    def __post_init__(self) -> None:
        super().__post_init__()
        at_least(self, 1, "epochs", "batch_size", "grad_accum_steps", "plateau_patience",
                 "step_cuts", "val_batch_size", "stop_for")
        need(0.0 <= self.stop_at <= 1.0, "stop_at", self.stop_at, "must be in [0, 1]")
        at_least(self, 0, "weight_decay", "warmup_steps", "grad_clip", "save_every_steps",
                 "early_stopping_patience", "num_workers", "flops_budget", "max_tokens")
        need(math.isfinite(self.lr) and self.lr > 0, "lr", self.lr, "must be above 0")
        need(0 <= self.seed < 2**32, "seed", self.seed, "must be 0 to 2**32 - 1")
        need(0.0 <= self.label_smoothing < 1.0, "label_smoothing", self.label_smoothing,
             "must be in [0, 1)")
        need(0.0 <= self.ema_decay < 1.0, "ema_decay", self.ema_decay, "must be in [0, 1)")
        for name in ("beta1", "beta2"):
            need(0.0 <= getattr(self, name) < 1.0, name, getattr(self, name), "must be in [0, 1)")
        for name in ("plateau_factor", "step_factor"):
            need(0.0 < getattr(self, name) < 1.0, name, getattr(self, name), "must be in (0, 1)")
        need(bool(self.resume), "resume", repr(self.resume), "auto, latest, never or a PATH")
