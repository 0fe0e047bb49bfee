"""The study's named experiments, in one table.

- `RECIPES`: what `bltlab train --mode M [--profile P]` trains, and what the README
  reports. The dataclass defaults (bltlab.config, bltlab.patching.PatcherConfig) are the
  default profile's recipe; a recipe names only what differs from them.
- `PRESETS`: `bltlab run --quick | --full | --tune` train each model for the recipe's
  epochs times this factor (so `bltlab train` and `bltlab run --quick` train alike).
- `ABLATIONS`: `bltlab run --ablation NAME`, settings per variant (the BLT's).
- `GRIDS`: `bltlab run --frontier`, the compute frontier's points at one FLOP budget.
- `SEARCH_SPACE`: what `bltlab tune` samples (a YAML or JSON file of the same shape
  replaces it: `--search_space FILE`; `bltlab tune --print_config` prints it).

Every entry names settings as flags do (`d_model`, `entropy_threshold`, `epochs`).
"""

from __future__ import annotations

from typing import Any

DEFAULT_PROFILE = "broad"
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    # What a person types. Batches of about 4,096 positions (char, byte) and 2,048 (BLT):
    # more, smaller steps learned in fewer epochs than 64-row batches at the same samples/s
    # (docs/log/15-speed-memory.md). The BLT: space patches of at most 3 bytes (with 4,
    # long rows of random characters now and then exchange a bit between neighbouring
    # bytes), byte vectors from UTF-8 role and bits (docs/results.md). The BLT validates
    # and keeps a moving average of its weights: at 99% validation from epoch 5, not 9
    # (docs/log/23-ema.md); the char model's ~1,000 steps are too few for it. Width 48
    # (global 96): 1.1-1.4x the char model's training FLOPs to stay at 99% and every bar
    # on 2 seeds of 3, against 1.8-3.3x and 1 of 3 at width 64 (docs/log/26-speed.md).
    # Label smoothing 0.1: without it, growing the margin rewards learning which bytes
    # training writes (never a lead byte 0xD0-0xD3), and a script never seen in training
    # is miscopied on some seeds (docs/log/31-label-smoothing.md).
    "broad": {"char": {"max_tokens": 4096}, "byte": {"max_tokens": 4096},
              "blt": {"epochs": 12, "max_tokens": 2048, "ema_decay": 0.998, "d_model": 48,
                      "dim_feedforward": 192, "label_smoothing": 0.1}},
    # The seed's distribution, 5% of rows with a non-ASCII word, batches of 64 rows (as
    # measured there); the BLT is the best on validation rows at the frontier's budget.
    "seed": {
        "char": {"start_token": False, "fresh_non_ascii": 0.05},
        "byte": {"start_token": False, "fresh_non_ascii": 0.05},
        "blt": {"epochs": 12, "byte_embedding": "table", "max_patch_len": 8,
                "fresh_non_ascii": 0.05},
    },
}

PRESETS = {"quick": 1, "full": 2, "tune": 2}  # epochs: times the recipe's

ABLATIONS: dict[str, dict[str, dict[str, Any]]] = {
    # one BLT per patcher; no θ given: calibrated to target_bpp bytes/patch
    "patchers": {
        "window-entropy-seed": {"patcher": "window-entropy", "entropy_threshold": 2.0,
                                "max_patch_len": 15},
        "window-entropy-4": {"patcher": "window-entropy", "max_patch_len": 8},
        "entropy-model-global": {"patcher": "entropy-model", "max_patch_len": 8},
        "entropy-model-monotonic": {"patcher": "entropy-model", "entropy_mode": "monotonic",
                                    "max_patch_len": 8},
        "space": {"patcher": "space"},
        "static-4": {"patcher": "static", "static_size": 4, "max_patch_len": 8},
    },
}

# The compute frontier (`bltlab run --frontier [--profile P] [--full]`): per profile, a
# grid of points of the three families in its profile's data regime, batches of about
# 2,048 positions, 1,000 validation rows (what every choice reads). Every run trains until
# its validation exact match has held at PASS_AT for 3 epochs or it has spent the grid's
# budget of training FLOPs (hit exactly: it stops mid-epoch); the learning-rate schedule
# spans the budget. `quick` is sized for a 2-core CPU, `full` for a GPU. Before the grid,
# a small learning-rate sweep per family on its reference point (validation only) picks
# each family's learning rate.
FRONTIER_SHARED = {"tensorboard": False, "progress_bars": False, "save_every_steps": 200,
                   "val_fraction": 0.1, "max_tokens": 2048, "stop_at": 0.995, "stop_for": 3,
                   # the grids were trained without weight averaging or label smoothing
                   "ema_decay": 0.0, "label_smoothing": 0.0}
SWEEP_LRS = (1e-3, 2e-3, 4e-3)
NONINFERIORITY_MARGIN = 0.005  # stated before any grid ran: 0.5 points of exact match
PASS_AT = 0.995  # a point passes when its seeds' mean validation exact match reaches this
MATCHED = (0.99, 0.995, 0.999)  # final-set exact match at which families are compared


def size(d: int, enc: int = 2, dec: int = 2) -> dict[str, Any]:
    """A baseline's width and depth (feed-forward 4x, heads of 8 or more)."""
    return {"d_model": d, "dim_feedforward": 4 * d, "nhead": max(2, min(4, d // 8)),
            "num_encoder_layers": enc, "num_decoder_layers": dec}


def blt_size(d: int) -> dict[str, Any]:
    return {"d_model": d, "dim_feedforward": 4 * d, "nhead": max(2, min(4, d // 8))}


def baseline_points(family: str, shapes: list[tuple[int, int, int]]) -> dict:
    return {f"{family}-d{d}-{e}+{k}": (family, size(d, e, k)) for d, e, k in shapes}


ENTROPY = {"patcher": "entropy-model", "max_patch_len": 8}  # θ calibrated to target_bpp
# width 8 added after every char and byte point of width 16 and up passed (round 16)
SMALL_SHAPES = [(8, 1, 1), (16, 1, 1), (16, 2, 2), (24, 2, 2), (32, 1, 1), (32, 2, 1),
                (32, 2, 2)]
GRIDS: dict[str, dict[str, dict[str, Any]]] = {
    "seed": {
        "quick": {"budget": 1e13, "reference": {"char": "char-d32-2+2",
                                                "byte": "byte-d32-2+2",
                                                "blt": "blt-d32-space"}, "points": {
            **baseline_points("char", SMALL_SHAPES),
            **baseline_points("byte", [(8, 1, 1), (16, 1, 1), (16, 2, 2), (24, 2, 2),
                                       (32, 2, 2)]),
            **{f"blt-d{d}-space": ("blt", {**blt_size(d), "patcher": "space"})
               for d in (16, 24, 32, 64)},
            "blt-d32-e4": ("blt", {**blt_size(32), **ENTROPY, "target_bpp": 4.0}),
        }},
        "full": {"budget": 4e13, "reference": {"char": "char-d64-2+2",
                                               "byte": "byte-d64-2+2",
                                               "blt": "blt-d64-space"}, "points": {
            **baseline_points("char", [(d, 2, 2) for d in (16, 32, 64, 128, 256)]),
            **baseline_points("byte", [(d, 2, 2) for d in (16, 32, 64, 128, 256)]),
            **{f"blt-d{d}-{name}": ("blt", {**blt_size(d), **patching})
               for d in (16, 32, 64, 128, 256) for name, patching in (
                   ("space", {"patcher": "space"}),
                   ("e4", {**ENTROPY, "target_bpp": 4.0}),
                   ("e6", {**ENTROPY, "target_bpp": 6.0, "max_patch_len": 12}))},
        }},
    },
    "broad": {
        # width 8 added after char-d16-1+1, the smallest char point, passed (log 20); BLT
        # width 8 after blt-d16-space passed on two seeds (log 21)
        "quick": {"budget": 2e13, "reference": {"char": "char-d32-2+2",
                                                  "byte": "byte-d32-2+2",
                                                  "blt": "blt-d32-space"}, "points": {
            **baseline_points("char", [(8, 1, 1), (16, 1, 1), (16, 2, 2), (24, 2, 2),
                                       (32, 2, 1), (32, 2, 2), (64, 2, 2)]),
            **baseline_points("byte", [(8, 1, 1), (16, 1, 1), (16, 2, 2), (24, 2, 2),
                                       (32, 2, 2), (64, 2, 2)]),
            **{f"blt-d{d}-space": ("blt", {**blt_size(d), "patcher": "space"})
               for d in (8, 16, 24, 32, 48, 64)},
            # towards the paper's regime: space patches of up to 8 bytes
            "blt-d32-space8": ("blt", {**blt_size(32), "patcher": "space",
                                       "max_patch_len": 8}),
        }},
        "full": {"budget": 1.5e14, "reference": {"char": "char-d64-2+2",
                                                 "byte": "byte-d64-2+2",
                                                 "blt": "blt-d64-space3"}, "points": {
            **baseline_points("char", [(d, 2, 2) for d in (16, 32, 64, 128, 256)]),
            **baseline_points("byte", [(d, 2, 2) for d in (16, 32, 64, 128, 256)]),
            **{f"blt-d{d}-space{m}": ("blt", {**blt_size(d), "patcher": "space",
                                              "max_patch_len": m})
               for d in (16, 32, 64, 128, 256) for m in (3, 4, 8)},
        }},
    },
}

# Each entry: {type: float, low, high, log} | {type: int, low, high, step} |
# {type: categorical, choices}; `grid` lists what `--sampler grid` tries (TPE ignores it).
BASELINE_SPACE = {
    "lr": {"type": "float", "low": 5e-4, "high": 5e-3, "log": True, "grid": [1e-3, 2e-3]},
    "d_model": {"type": "categorical", "choices": [64, 96, 128], "grid": [64, 128]},
    "nhead": {"type": "categorical", "choices": [2, 4], "grid": [4]},
    "num_encoder_layers": {"type": "int", "low": 1, "high": 3, "grid": [2]},
    "num_decoder_layers": {"type": "int", "low": 1, "high": 3, "grid": [2]},
    "dim_feedforward": {"type": "categorical", "choices": [128, 256, 512], "grid": [256]},
    "dropout": {"type": "float", "low": 0.0, "high": 0.2, "grid": [0.0, 0.1]},
    "max_tokens": {"type": "categorical", "choices": [2048, 4096, 8192], "grid": [2048, 4096]},
}
SEARCH_SPACE: dict[str, dict[str, dict[str, Any]]] = {
    "char": BASELINE_SPACE,
    "byte": BASELINE_SPACE,
    "blt": {
        "lr": {"type": "float", "low": 5e-4, "high": 5e-3, "log": True, "grid": [1e-3, 2e-3]},
        "d_model": {"type": "categorical", "choices": [64, 96, 128], "grid": [64, 128]},
        "nhead": {"type": "categorical", "choices": [2, 4], "grid": [4]},
        "num_global_layers": {"type": "int", "low": 1, "high": 3, "grid": [2]},
        "dim_feedforward": {"type": "categorical", "choices": [128, 256, 512], "grid": [256]},
        "dropout": {"type": "float", "low": 0.0, "high": 0.2, "grid": [0.0]},
        "max_tokens": {"type": "categorical", "choices": [2048, 4096, 8192], "grid": [2048, 4096]},
        "max_patch_len": {"type": "categorical", "choices": [2, 3, 4, 6], "grid": [3]},
        "global_factor": {"type": "categorical", "choices": [1, 2, 3], "grid": [2]},
        "pooling": {"type": "categorical", "choices": ["project", "cross"],
                    "grid": ["project"]},
        "slots": {"type": "categorical", "choices": [1, 2, 4], "grid": [2]},
    },
}


def recipe(profile: str, mode: str) -> dict[str, Any]:
    """The recipe's settings (its profile named) on top of the dataclass defaults."""
    return {"profile": profile, **RECIPES[profile][mode]}
