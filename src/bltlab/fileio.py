"""Atomic file writes: a reader never sees a half-written file, a crash never loses the old one."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from bltlab.errors import BltlabError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file


def ensure_dir(folder: str | os.PathLike, what: str = "") -> Path:
    """Create `folder` (and its parents); a path that cannot be one is a one-line error."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise BltlabError(f"{what + ' ' if what else ''}{folder}: is a file, not a folder"
                          ) from None
    except NotADirectoryError:
        raise BltlabError(f"{what + ' ' if what else ''}{folder}: a part of it is a file"
                          ) from None
    except OSError as e:
        raise BltlabError(f"{what + ' ' if what else ''}{folder}: cannot create it "
                          f"({e.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BltlabError(f"{what + ' ' if what else ''}{folder}: not writable")
    return folder


def check_output_file(path: str | os.PathLike, what: str, inputs: tuple = ()) -> Path:
    """Check before any work that `path` can be written (its folder made), is not a
    folder and is not one of `inputs`; a one-line error otherwise."""
    path = Path(path)
    if path.is_dir():
        raise BltlabError(f"{what} {path}: is a folder; give a file name")
    for other in inputs:
        if Path(other).exists() and path.exists() and path.samefile(other):
            raise BltlabError(f"{what} {path}: is also an input; it would be overwritten")
    ensure_dir(path.parent, what)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it over `path` (with the
    permissions a new file gets)."""
    path = Path(path)
    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_atomic(path: str | os.PathLike, write: Callable[[IO[str]], Any]) -> None:
    """Write a text file atomically through `write(file_object)`."""
    try:
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise BltlabError(f"could not write {path}: {e.strerror}") from None


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
    """One run per folder: an exclusive `flock` on `folder/.lock`, which names its holder.

    The kernel releases the lock when its process ends, however it ends, so a killed
    run never leaves a lock that blocks the next one, and two runs that start together
    cannot both take it. Taking a lock held by a live run fails with a one-line error
    that names it (host and pid).
    """

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / ".lock"
        self.owner = process_owner()
        self.fd: int | None = None

    def acquire(self) -> str | None:
        """Take the lock; returns a note when the file named a run that is gone."""
        ensure_dir(self.path.parent, "--save_dir")
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise BltlabError(f"{self.path.parent}: in use by another run (host, pid: "
                                  f"{holder}); wait for it, or use another --save_dir"
                                  ) from None
            if same_file(fd, self.path):  # else a releasing run removed it meanwhile
                break
            os.close(fd)
        previous = os.pread(fd, 256, 0).decode(errors="replace").strip()
        os.ftruncate(fd, 0)
        os.pwrite(fd, (self.owner + "\n").encode(), 0)
        self.fd = fd
        if previous and previous != self.owner:
            return f"{self.path}: took over the lock of a run that is gone ({previous})"
        return None

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)  # closing releases the flock
            self.fd = None

    def __enter__(self) -> RunLock:
        note = self.acquire()
        if note:
            print(f"warning: {note}")
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def write_csv_rows(f: IO[str], rows: Iterable[Iterable[Any]]) -> None:
    """Write CSV rows with "\n" line ends; a row with a carriage return in a field is
    written fully quoted, since the csv module would leave it bare and a reader would
    split the row there."""
    plain = csv.writer(f, lineterminator="\n")
    quoted = csv.writer(f, lineterminator="\n", quoting=csv.QUOTE_ALL)
    for row in rows:
        row = list(row)
        (quoted if any("\r" in str(x) for x in row) else plain).writerow(row)
