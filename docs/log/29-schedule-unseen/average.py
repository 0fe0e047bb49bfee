"""The uniform average of BLT checkpoints' weights (stochastic weight averaging over
epochs), saved as OUT/best_blt_model.pt for `bltlab eval` (log 29):

    python docs/log/29-schedule-unseen/average.py OUT CHECKPOINT...
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from bltlab.checkpoint import load_checkpoint, save_checkpoint


def average(paths: list[str]) -> dict:
    """The last checkpoint, its floating-point weights replaced by all checkpoints' mean."""
    states = [load_checkpoint(p, "blt") for p in paths]
    last = states[-1]["model"]
    mean = {k: torch.stack([s["model"][k].float() for s in states]).mean(0).to(v.dtype)
            if v.is_floating_point() else v for k, v in last.items()}
    return {**states[-1], "model": mean}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "best_blt_model.pt", average(sys.argv[2:]))
