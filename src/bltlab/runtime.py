"""Where a command runs: its device, its CPU threads, seeds, and file fingerprints."""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import random
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from bltlab.errors import BltlabError


def pick_device(name: str) -> torch.device:
    """auto (CUDA when present), cpu, cuda or cuda:N; another kind of device, or one this
    machine lacks, is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise BltlabError(f"--device {name}: not a device bltlab runs on (auto, cpu, cuda, "
                          "cuda:N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BltlabError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise BltlabError(f"--device {name}: this machine has {torch.cuda.device_count()} "
                          "CUDA device(s)")
    return device


def default_threads() -> int:
    """Cores this process may use (respects affinity masks and cgroup-limited CPUs)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to `n` for the block, then back."""
    was = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(was)


def die_with_parent(parent: int) -> None:
    """Make this process end (SIGTERM) when its parent process does, however the parent
    ends (Linux; elsewhere a no-op); if the parent is gone already, end now."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:
        raise SystemExit(143)


def release_memory() -> None:
    """Give memory freed by the allocator back to the system (glibc's malloc_trim; a
    no-op elsewhere). Batches of varying shape leave freed blocks that glibc keeps; left
    there, a run's resident memory grows epoch after epoch."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a regular file, read in chunks (a device or pipe is refused)."""
    path = Path(path)
    if not path.is_file():
        why = "not a regular file" if path.exists() else "no such file"
        raise BltlabError(f"{path}: {why}")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
