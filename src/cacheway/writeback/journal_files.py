"""The files of a journal directory: durable writes, the one-writer lock, and the
directories of the journals of forked processes (``PATH@PID-RANDOM``, see
:meth:`~cacheway.writeback.journal.Journal.for_child`).
"""

from __future__ import annotations

import fcntl
import os
import re
import secrets
from pathlib import Path

from cacheway.core.journal_records import LOCK_FILE
from cacheway.errors import JournalError

__all__ = [
    "JournalInUse", "abandoned_children", "datasync", "fsync_dir", "lock_directory",
    "make_child_directory", "remove_directory", "write_all", "write_atomic",
]

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def datasync(fd: int) -> None:
    # fdatasync skips the mtime update that fsync also forces: one disk write, not two.
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # pragma: no cover - macOS
        os.fsync(fd)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(directory: Path, name: str, data: bytes) -> None:
    """Replace ``directory/name`` so that a crash leaves the old or the new content."""
    tmp = directory / f"{name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, directory / name)
    fsync_dir(directory)


def write_all(fd: int, parts: list[bytes | bytearray | memoryview]) -> None:
    # One joined buffer and one write(2): cheaper than writev's per-call iovec setup
    # for the small records a cache writes.
    data = b"".join(parts)
    done = os.write(fd, data)
    if done < len(data):  # rare (a signal, a nearly full disk): finish the rest
        rest = memoryview(data)[done:]
        while rest:
            rest = rest[os.write(fd, rest) :]


class JournalInUse(JournalError):
    """Another open journal (in this or another process) holds the journal's lock."""


def lock_directory(directory: Path) -> int:
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | _O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        who = "Journal in this process" if holder == str(os.getpid()) else "process"
        raise JournalInUse(
            f"journal '{directory}' is in use by another {who} (pid {holder}); one journal "
            "has one writer: close the other one, or give this cache its own journal path"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise JournalError(f"cannot lock journal '{directory}': {exc}") from exc
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def remove_directory(path: Path) -> None:
    """Delete a journal directory, its lock file last: whoever opens it meanwhile finds
    it in use, or (once it is gone) an empty journal. The caller holds the lock."""
    for name in sorted(os.listdir(path), key=lambda n: n == LOCK_FILE):
        (path / name).unlink()
    path.rmdir()
    fsync_dir(path.resolve().parent)


def make_child_directory(path: Path) -> Path:
    """A new, empty directory for the journal of this (forked) process, next to ``path``.
    Always a fresh name: an older process's leftover with this pid is not ours to write."""
    while True:
        child = path.with_name(f"{path.name}@{os.getpid()}-{secrets.token_hex(4)}")
        try:
            child.mkdir()
        except FileExistsError:
            continue
        except OSError as exc:
            raise JournalError(f"cannot create child journal '{child}': {exc}") from exc
        fsync_dir(child.resolve().parent)
        return child


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    try:  # a zombie (killed, not reaped yet: its parent died too) is gone
        with open(f"/proc/{pid}/stat", "rb") as file:
            return file.read().rpartition(b")")[2].split()[:1] != [b"Z"]
    except FileNotFoundError:
        return not os.path.exists("/proc/self")  # no /proc (macOS): alive until reaped
    except OSError:
        return True


def abandoned_children(path: str | os.PathLike[str]) -> list[Path]:
    """The journals made by :meth:`Journal.for_child` for the journal at ``path`` (and for
    those, at any depth) whose process is gone, each before the journals of its children.

    A journal whose process is alive is left out even if unlocked: it may be between
    creating its directory and locking it. The caller opens each one (skipping those that
    raise :class:`JournalInUse`), replays and removes it.
    """
    path = Path(os.fspath(path))
    pattern = re.compile(re.escape(path.name) + r"((?:@\d+-[0-9a-f]{8})+)")
    try:
        names = os.listdir(path.parent)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise JournalError(f"cannot list '{path.parent}' for child journals: {exc}") from exc
    found = []
    for name in names:
        match = pattern.fullmatch(name)
        if match is None:
            continue
        pid = int(name.rsplit("@", 1)[1].split("-")[0])
        if pid > 0 and not _alive(pid) and (path.parent / name).is_dir():
            found.append((match.group(1).count("@"), name))
    return [path.parent / name for _, name in sorted(found)]
