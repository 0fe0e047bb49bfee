"""Checkpoints: plain tensors and primitive values only, written atomically.

They load with `torch.load(..., weights_only=True)`, so a file carrying a pickled
object is refused without running it. Each holds the resolved run spec it was trained
with and the codec, so a model is rebuilt from the file alone. A training run keeps
`best_<mode>_model.pt`, `latest_<mode>_model.pt` (everything a resume needs) and the
latest before it (`.prev.pt`); a new latest replaces them only once it is complete.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from torch import nn

from bltlab.errors import BltlabError
from bltlab.fileio import atomic_path
from bltlab.inputs import Codec, codec_from_state
from bltlab.models import EncoderDecoder, build_model
from bltlab.spec import RunSpec

FORMAT = "bltlab-checkpoint-v3"
# v2 (before the models were split into named parts): first name of a weight -> now
V2_NAMES = {
    "char": {"embed": "embeddings.tokens", "pos": "embeddings.pos",
             "encoder": "encoder.blocks", "ln_enc": "encoder.ln"},
    "blt": {"embed": "embeddings.tokens", "ngram_embeds": "embeddings.ngrams",
            "pos": "embeddings.pos", "local": "local_encoder.blocks",
            "ln_local": "local_encoder.ln", "pool": "pooling.proj",
            "slot_embed": "pooling.slot_embed", "ln_pool": "pooling.ln",
            "pool_attn": "pooling.attn", "global_blocks": "global_transformer.blocks",
            "ln_global": "global_transformer.ln", "decoder": "local_decoder"},
}


def from_v2(state: dict) -> dict:
    """A v2 checkpoint with its weights under today's names."""
    names = V2_NAMES.get(state.get("mode"), {})
    if isinstance(state.get("model"), dict):
        state["model"] = {".".join([names.get(k.split(".")[0], k.split(".")[0]),
                                    *k.split(".")[1:]]): v for k, v in state["model"].items()}
    return {**state, "format": FORMAT}


def checkpoint_paths(save_dir: str | Path, mode: str) -> tuple[Path, Path, Path]:
    """best_<mode>_model.pt, latest_<mode>_model.pt, history_<mode>.json."""
    d = Path(save_dir)
    return d / f"best_{mode}_model.pt", d / f"latest_{mode}_model.pt", d / f"history_{mode}.json"


def trained_rows_path(save_dir: str | Path, mode: str) -> Path:
    """Where a run records the rows it trained on (data.TrainedRows)."""
    return Path(save_dir) / f"trained_rows_{mode}.npy"


def previous_path(latest: Path) -> Path:
    """Where the latest checkpoint before the newest one is kept."""
    return latest.with_name(latest.stem + ".prev.pt")


def _write(tmp: Path, path: Path, state: dict) -> None:
    try:
        torch.save({"format": FORMAT, **state}, tmp)
    except (OSError, RuntimeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else \
            "the write failed (disk full or file too large?)"
        raise BltlabError(f"could not write {path}: {reason}") from None


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write `state` (tensors, numbers, strings, lists, dicts) to `path` atomically."""
    with atomic_path(path) as tmp:
        _write(tmp, Path(path), state)


def save_latest(path: Path, state: dict) -> None:
    """Write the latest checkpoint; only once it is complete does the one it replaces
    become the fallback (`.prev.pt`)."""
    with atomic_path(path) as tmp:
        _write(tmp, path, state)
        if path.exists():
            os.replace(path, previous_path(path))


def load_checkpoint(path: str | os.PathLike, mode: str | None = None) -> dict:
    """Load a checkpoint safely; a missing, corrupt or foreign file is a one-line error."""
    path = Path(path)
    if path.is_dir():
        raise BltlabError(f"{path}: is a folder, not a checkpoint file")
    if not path.is_file():
        raise BltlabError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise BltlabError(f"{path}: refused: it holds pickled Python objects, not only tensors "
                          "and plain values (no bltlab checkpoint does); nothing in it was run"
                          ) from None
    except Exception as e:  # truncated zip, random bytes, ...
        raise BltlabError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(state, dict) or not str(state.get("format", "")).startswith("bltlab-"):
        raise BltlabError(f"{path}: not a bltlab checkpoint")
    if state["format"] == "bltlab-checkpoint-v2":
        state = from_v2(state)
    if state["format"] != FORMAT:
        raise BltlabError(f"{path}: written by an earlier bltlab ({state['format']}): train again")
    if mode is not None and state.get("mode") != mode:
        raise BltlabError(f"{path}: is a '{state.get('mode')}' checkpoint, not '{mode}' "
                          f"(use --mode {state.get('mode')})")
    return state


# Buffers added after checkpoints were first written, with the value that keeps an older
# checkpoint's behaviour: a BLT without `seen_bytes` counts every byte as seen.
ADDED_BUFFERS = {"seen_bytes": lambda: torch.ones(256, dtype=torch.bool)}


def complete_weights(model: nn.Module, weights: dict) -> dict:
    """`weights` with the buffers this model has and an older checkpoint lacks."""
    own = model.state_dict()
    return {**{k: make() for k, make in ADDED_BUFFERS.items() if k in own}, **weights}


def weights_problem(model: nn.Module, weights: dict) -> str | None:
    """What stops `weights` from being this model's, or None."""
    own = model.state_dict()
    missing, extra = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    if missing or extra:
        return f"{'missing' if missing else 'unexpected'} weights {(missing or extra)[:3]}"
    for name, tensor in weights.items():
        if not isinstance(tensor, torch.Tensor) or tensor.shape != own[name].shape:
            return f"weight {name} has shape {tuple(getattr(tensor, 'shape', ()))}, the " \
                   f"configuration needs {tuple(own[name].shape)}"
        if tensor.dtype != own[name].dtype:
            return f"weight {name} is {tensor.dtype}, not {own[name].dtype}"
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            return f"weight {name} holds NaN or infinite values"
    return None


def load_model(path: str | Path, mode: str | None = None, device: str | torch.device = "cpu"
               ) -> tuple[EncoderDecoder, Codec, dict]:
    """Model (in eval mode), codec and checkpoint dict from a checkpoint file."""
    state = load_checkpoint(path, mode)
    try:
        spec = RunSpec.from_dict(state["spec"], where=str(path))
        model = build_model(spec.model)
        codec = codec_from_state(state["codec"], spec.model.max_len - 1)
    except BltlabError as e:
        raise BltlabError(f"{path}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise BltlabError(f"{path}: damaged checkpoint ({type(e).__name__}: {e})") from None
    weights = complete_weights(model, state.get("model", {}))
    problem = weights_problem(model, weights)
    if problem:
        raise BltlabError(f"{path}: does not fit its configuration: {problem}")
    model.load_state_dict(weights)
    return model.to(device).eval(), codec, state


def load_latest(path: Path, mode: str) -> tuple[dict, Path] | None:
    """The newest readable resumable checkpoint: `path`, else (with a warning) the one
    before it; None when there is none."""
    for candidate in (path, previous_path(path)):
        if not candidate.exists():
            continue
        try:
            state = load_checkpoint(candidate, mode)
        except BltlabError as e:
            print(f"warning: {e}; trying the checkpoint before it")
            continue
        if "optimizer" not in state or "run_state" not in state:
            raise BltlabError(f"{candidate}: cannot resume from it (not a latest checkpoint)")
        return state, candidate
    return None


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """What differs between two run identities, as `section.setting old -> new`."""
    out = []
    for k in sorted(set(old) | set(new), key=str):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k} {str(a)[:12]} -> {str(b)[:12]}")
    return out


def find_resume(resume: str, save_dir: str, mode: str, key: dict) -> dict | None:
    """The checkpoint to continue from: PATH; latest (the save dir's, which must exist);
    auto: the save dir's latest when it is of the same run, none when the save dir holds
    no run of this mode, and a one-line error when it holds another run (its files would
    be replaced: --fresh says to); never."""
    best, latest, _ = checkpoint_paths(save_dir, mode)
    if resume not in ("auto", "latest", "never"):
        state = load_checkpoint(resume, mode)  # a wrong mode says so in its own words
        if "optimizer" not in state or "run_state" not in state:
            raise BltlabError(f"--resume {resume}: cannot resume from it (not a latest "
                              "checkpoint)")
        return state
    found = None if resume == "never" else load_latest(latest, mode)
    if found is None:
        if resume == "latest":
            raise BltlabError(f"--resume: no latest checkpoint in {save_dir}")
        if resume == "auto" and best.exists():
            raise BltlabError(f"--save_dir {save_dir}: holds a {mode} run that cannot be "
                              "continued (no latest checkpoint); --fresh replaces it, or "
                              "give another --save_dir")
        return None
    state, path = found
    if resume == "auto" and state.get("run_key") != key:
        changed = differences(state.get("run_key") or {}, key)
        raise BltlabError(f"--save_dir {save_dir}: holds another {mode} run ("
                          f"{'; '.join(changed[:4]) or 'other settings'}"
                          f"{' ...' if len(changed) > 4 else ''}); --fresh replaces it, or "
                          "give another --save_dir")
    return state
