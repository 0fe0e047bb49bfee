"""Atomic file writes: a reader never sees a half-written file, a crash never loses the old one."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from bltlab.errors import BltlabError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_atomic(path: str | os.PathLike, write: Callable[[IO[str]], Any]) -> None:
    """Write a text file atomically through `write(file_object)`."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    write_atomic(path, lambda f: f.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n"))


def process_owner() -> str:
    """'host pid' of this process, as locks and tuning trials record their owner."""
    return f"{socket.gethostname()} {os.getpid()}"


def owner_gone(owner: str) -> bool:
    """Whether the process recorded as 'host pid' has certainly ended: only a process of
    this host can be checked; an empty record means its writer died while writing it."""
    host, _, pid = owner.partition(" ")
    if host != socket.gethostname() or not pid.isdigit():
        return not owner
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by someone else
        return False
    return False


class RunLock:
    """One run per folder: `folder/.lock` holds the owner's host and pid.

    Taking a lock held by a live process on this host fails with a one-line error that
    names it; a lock whose process is gone (a killed run) is stale and taken over. A
    lock from another host cannot be checked and is respected.
    """

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / ".lock"
        self.owner = process_owner()

    def acquire(self) -> str | None:
        """Take the lock; returns a note when a stale lock was taken over."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        note = None
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self.path.read_text(encoding="utf-8").strip()
                if not owner_gone(holder):
                    raise BltlabError(f"{self.path.parent}: in use by another run (host, pid: "
                                      f"{holder}); wait for it, or use another --save_dir"
                                      ) from None
                note = f"{self.path}: took over a stale lock of a run that is gone ({holder})"
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(self.owner + "\n")
            return note
        raise BltlabError(f"{self.path}: could not take the lock")

    def release(self) -> None:
        if self.path.is_file() and self.path.read_text(encoding="utf-8").strip() == self.owner:
            self.path.unlink()

    def __enter__(self) -> RunLock:
        note = self.acquire()
        if note:
            print(f"warning: {note}")
        return self

    def __exit__(self, *exc) -> None:
        self.release()
