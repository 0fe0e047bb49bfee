"""Where a command runs: its device, its CPU threads, seeds, and file fingerprints."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import numpy as np
import torch

from bltlab.errors import BltlabError


def pick_device(name: str) -> torch.device:
    """auto (CUDA when present), cpu, cuda or cuda:N; a device this machine lacks is a
    one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BltlabError(f"--device {name}: CUDA is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError:
        raise BltlabError(f"--device {name}: not a device (auto, cpu, cuda, cuda:N)") from None


def default_threads() -> int:
    """Cores this process may use (respects affinity masks and cgroup-limited CPUs)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
