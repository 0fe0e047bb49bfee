"""Checkpoints: plain tensors and primitive values only, written atomically.

They load with `torch.load(..., weights_only=True)`, so a file carrying a pickled
object is refused without running it.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from bltlab.errors import BltlabError
from bltlab.fileio import atomic_path

FORMAT = "bltlab-checkpoint-v1"


def save_checkpoint(path: str | os.PathLike, state: dict) -> None:
    """Write `state` (tensors, numbers, strings, lists, dicts) to `path` atomically."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load_checkpoint(path: str | os.PathLike, mode: str | None = None) -> dict:
    """Load a checkpoint safely; a missing, corrupt or foreign file is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise BltlabError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BltlabError(f"{path}: refused: not a weights-only checkpoint ({first})") from None
    except Exception as e:  # truncated zip, random bytes, ...
        raise BltlabError(f"{path}: unreadable checkpoint ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise BltlabError(f"{path}: not a bltlab checkpoint")
    if "codec" not in state:
        raise BltlabError(f"{path}: written by an earlier bltlab (no codec inside): train again")
    if mode is not None and state.get("mode") != mode:
        raise BltlabError(f"{path}: is a '{state.get('mode')}' checkpoint, not '{mode}' "
                          f"(use --mode {state.get('mode')})")
    return state
