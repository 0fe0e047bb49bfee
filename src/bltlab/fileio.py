"""Files in and out: atomic writes (a reader never sees a half-written file, a crash never
loses the old one; several files are committed together), outputs that never replace what
is not a regular file, inputs read with a bound, and the run lock."""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import json
import os
import re
import socket
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import yaml

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


KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
         (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a pipe (FIFO)"),
         (stat.S_ISSOCK, "a socket"))


def output_target(path: str | os.PathLike, what: str = "") -> Path:
    """Where writing `path` lands: the path itself, or for a symbolic link the file it
    points at (written through, the link kept). What is there already must be a regular
    file: a folder, device, FIFO or socket is refused with a one-line error."""
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    try:
        mode = path.stat().st_mode  # what the link leads to (/proc/self/fd/1: a pipe, say)
    except OSError:
        return target  # nothing there yet (or an unreadable link: the write will say)
    for test, kind in KINDS:
        if test(mode):
            shown = f"{path} (a link to {target})" if target != path else str(path)
            raise BltlabError(f"{what + ' ' if what else ''}{shown}: is {kind}, not a regular "
                              "file; give a file name")
    return target


def check_output_file(path: str | os.PathLike, what: str, inputs: tuple = ()) -> Path:
    """Check before any work that `path` can be written (its folder made), is not a
    folder, device, FIFO or socket and is not one of `inputs`; a one-line error otherwise."""
    target = output_target(path, what)
    for other in inputs:
        if other is not None and Path(other).exists() and target.exists() \
                and target.samefile(other):
            raise BltlabError(f"{what} {path}: is also an input; it would be overwritten")
    ensure_dir(target.parent, what)
    return target


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike) -> Iterator[list[Path]]:
    """A temporary path beside each of `paths`; when the block succeeds each is renamed
    over its path, all of them only once all were written (with the permissions a new
    file gets), else none is and the temporary files are removed."""
    targets = [output_target(p) for p in paths]
    tmps: list[Path] = []
    try:
        for target in targets:
            ensure_dir(target.parent)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                       dir=target.parent)
            os.fchmod(fd, FILE_MODE)
            os.close(fd)
            tmps.append(Path(tmp))
        yield tmps
        for tmp, target in zip(tmps, targets):
            os.replace(tmp, target)
    finally:
        for tmp in tmps:
            if tmp.exists():
                tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside `path`, renamed over it when the block succeeds."""
    with atomic_paths(path) as (tmp,):
        yield tmp


def write_files(files: dict[str | os.PathLike, Callable[[IO[str]], Any]]) -> None:
    """Write text files through `write(file_object)` each, committed together."""
    try:
        with atomic_paths(*files) as tmps:
            for tmp, write in zip(tmps, files.values()):
                with open(tmp, "w", encoding="utf-8", newline="") as f:
                    write(f)
                    f.flush()
                    os.fsync(f.fileno())
    except OSError as e:
        names = ", ".join(map(str, files))
        raise BltlabError(f"could not write {names}: {e.strerror}") from None


def write_atomic(path: str | os.PathLike, write: Callable[[IO[str]], Any]) -> None:
    """Write a text file atomically through `write(file_object)`."""
    write_files({path: write})


def json_text(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    write_atomic(path, lambda f: f.write(json_text(obj)))


MIB = 1 << 20


def read_bounded(path: str | os.PathLike, limit: int, what: str = "file") -> bytes:
    """A file's bytes, at most `limit` of them: a larger input (or an endless one, such as
    a device) is a one-line error; pipes are read once, as they come."""
    path = Path(path)
    if path.is_dir():
        raise BltlabError(f"{path}: is a folder, not a {what}")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise BltlabError(f"{path}: no such file") from None
    except OSError as e:
        raise BltlabError(f"{path}: cannot read it ({e.strerror})") from None
    if len(data) > limit:
        raise BltlabError(f"{path}: larger than {limit // MIB} MiB; not a {what} bltlab reads")
    return data


def read_json(path: str | os.PathLike, what: str = "results file") -> Any:
    """A JSON file's value; an unreadable or damaged one is a one-line error naming it."""
    data = read_bounded(path, 256 * MIB, what)
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError as e:
        raise BltlabError(f"{path}: damaged {what} ({str(e).splitlines()[0]})") from None


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class SettingsLoader(yaml.SafeLoader):
    """YAML for settings files: numbers as YAML 1.2 reads them (`1e-3` is a float, not the
    string YAML 1.1 makes of it), and no aliases (`*name`), so no file expands into more
    than it holds."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(f"line {mark.line + 1}: aliases (*name) are not allowed "
                                 "in a settings file")
        return super().compose_node(parent, index)


SettingsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def read_settings(path: str | os.PathLike, what: str) -> dict:
    """A YAML or JSON file of settings (a run file, a search space): a mapping, read with
    a bound (1 MiB); anything else is a one-line error naming the file."""
    path = Path(path)
    data = read_bounded(path, MIB, what)
    kind = "JSON" if path.suffix == ".json" else "YAML"
    try:
        text = data.decode("utf-8")
        loaded = json.loads(text) if kind == "JSON" else yaml.load(text, SettingsLoader)
    except (ValueError, yaml.YAMLError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BltlabError(f"{path}: not valid {kind} ({first})") from None
    if not isinstance(loaded, dict):
        raise BltlabError(f"{path}: a {what} is a mapping of settings")
    return loaded


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
    """One run of a kind per folder: an exclusive `flock` on `folder/.<kind>.lock`, which
    names its holder.

    The kernel releases the lock when its process ends, however it ends, so a killed
    run never leaves a lock that blocks the next one, and two runs that start together
    cannot both take it. Taking a lock held by a live run fails with a one-line error
    that names it (host and pid).
    """

    def __init__(self, folder: str | os.PathLike, kind: str = "run"):
        self.path = Path(folder) / f".{kind}.lock"
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


def lock_holder(folder: str | os.PathLike, kind: str = "run") -> str | None:
    """The live run ('host pid') that holds `folder`'s RunLock of `kind`, if any. A lock
    file outlives a killed run (its owner is then gone); one of another host counts as
    held, since its owner cannot be checked from here."""
    try:
        owner = (Path(folder) / f".{kind}.lock").read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return owner if owner and not owner_gone(owner) else None


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
