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
    # What a person types: each model at its CPU budget (char 10 epochs; BLT 50, the most
    # that fit 60 min on one thread). The BLT: space patches of at most 3 bytes (with 4,
    # long rows of random characters now and then exchange a bit between neighbouring
    # bytes), byte vectors from UTF-8 role and bits (docs/results.md).
    "broad": {"char": {}, "blt": {"epochs": 50}},
    # The seed's distribution, 5% of rows with a non-ASCII word; the BLT is the best on
    # validation rows at the compute frontier's budget.
    "seed": {
        "char": {"epochs": 4, "start_token": False, "fresh_non_ascii": 0.05},
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

FRONTIER_SHARED = {"profile": "seed", "tensorboard": False, "progress_bars": False,
                   "save_every_steps": 200}
SMALL = {"d_model": 32, "dim_feedforward": 128}
ENTROPY = {"patcher": "entropy-model", "max_patch_len": 8}  # θ calibrated to target_bpp
GRIDS: dict[str, dict[str, Any]] = {
    # about an hour on a 2-core CPU with --workers 2 (one thread each), per seed
    "quick": {"budget": 1.2e13, "points": {
        "char-d64": ("char", {}),
        "char-d64-3+1": ("char", {"num_encoder_layers": 3, "num_decoder_layers": 1}),
        "char-d32": ("char", SMALL),
        "char-d32-3+1": ("char", {**SMALL, "num_encoder_layers": 3, "num_decoder_layers": 1}),
        "blt-d64-e2": ("blt", {**ENTROPY, "target_bpp": 2.0}),
        "blt-d64-e4": ("blt", {**ENTROPY, "target_bpp": 4.0}),
        "blt-d64-e6": ("blt", {**ENTROPY, "target_bpp": 6.0, "max_patch_len": 12}),
        "blt-d64-space": ("blt", {"patcher": "space"}),
        "blt-d32-e4": ("blt", {**ENTROPY, "target_bpp": 4.0, **SMALL}),
        "blt-d32-space": ("blt", {"patcher": "space", **SMALL}),
    }},
    # for a GPU: three widths, more compressions, ten times the budget
    "full": {"budget": 1.2e14, "points": {
        **{f"char-d{d}": ("char", {"d_model": d, "dim_feedforward": 4 * d})
           for d in (64, 128, 256)},
        **{f"char-d{d}-3+1": ("char", {"d_model": d, "dim_feedforward": 4 * d,
                                       "num_encoder_layers": 3, "num_decoder_layers": 1})
           for d in (64, 128)},
        **{f"blt-d{d}-e{b}": ("blt", {"d_model": d, "dim_feedforward": 4 * d, **ENTROPY,
                                      "target_bpp": float(b),
                                      "max_patch_len": 8 if b < 6 else 12})
           for d in (64, 128, 256) for b in (2, 4, 6)},
        **{f"blt-d{d}-space": ("blt", {"d_model": d, "dim_feedforward": 4 * d,
                                       "patcher": "space"}) for d in (64, 128, 256)},
    }},
}

# Each entry: {type: float, low, high, log} | {type: int, low, high, step} |
# {type: categorical, choices}; `grid` lists what `--sampler grid` tries (TPE ignores it).
SEARCH_SPACE: dict[str, dict[str, dict[str, Any]]] = {
    "char": {
        "lr": {"type": "float", "low": 5e-4, "high": 5e-3, "log": True, "grid": [1e-3, 2e-3]},
        "d_model": {"type": "categorical", "choices": [64, 96, 128], "grid": [64, 128]},
        "nhead": {"type": "categorical", "choices": [2, 4], "grid": [4]},
        "num_encoder_layers": {"type": "int", "low": 1, "high": 3, "grid": [2]},
        "num_decoder_layers": {"type": "int", "low": 1, "high": 3, "grid": [2]},
        "dim_feedforward": {"type": "categorical", "choices": [128, 256, 512], "grid": [256]},
        "dropout": {"type": "float", "low": 0.0, "high": 0.2, "grid": [0.0, 0.1]},
        "batch_size": {"type": "categorical", "choices": [32, 64, 128], "grid": [32, 64]},
    },
    "blt": {
        "lr": {"type": "float", "low": 5e-4, "high": 5e-3, "log": True, "grid": [1e-3, 2e-3]},
        "d_model": {"type": "categorical", "choices": [64, 96, 128], "grid": [64, 128]},
        "nhead": {"type": "categorical", "choices": [2, 4], "grid": [4]},
        "num_global_layers": {"type": "int", "low": 1, "high": 3, "grid": [2]},
        "dim_feedforward": {"type": "categorical", "choices": [128, 256, 512], "grid": [256]},
        "dropout": {"type": "float", "low": 0.0, "high": 0.2, "grid": [0.0]},
        "batch_size": {"type": "categorical", "choices": [32, 64, 128], "grid": [32, 64]},
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
