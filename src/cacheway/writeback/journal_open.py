"""Opening a journal directory: create it, check it, drop a crash's torn last record,
delete the segments the checkpoint covers and sync what a crashed predecessor wrote.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import uuid
import warnings
from pathlib import Path

from cacheway.core.journal_records import CHECKPOINT_FILE, ID_FILE, encode_id
from cacheway.errors import JournalError
from cacheway.writeback.journal_files import datasync, fsync_dir, write_atomic
from cacheway.writeback.journal_layout import Layout, SegmentInfo, analyze, damaged_error

__all__ = ["Opened", "make_directory", "recover"]

logger = logging.getLogger("cacheway.writeback.journal")

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


@dataclasses.dataclass
class Opened:
    """What :func:`recover` left: the journal's state on open."""

    id: str
    checkpoint_seq: int
    last_seq: int  # highest seq in a segment or the checkpoint
    segments: list[SegmentInfo]  # the live segments, oldest first
    fd: int | None  # the last segment, opened O_APPEND; None when there is none
    syncs: int  # fsync/fdatasync calls made


def make_directory(path: Path) -> None:
    """Create the journal directory ``path`` (durably) unless it exists."""
    if path.exists() and not path.is_dir():
        raise JournalError(f"journal path '{path}' is a file; a journal is a directory")
    if not path.exists():
        try:
            path.mkdir(parents=True, exist_ok=True)
            fsync_dir(path.resolve().parent)
        except OSError as exc:
            raise JournalError(f"cannot create journal directory '{path}': {exc}") from exc


def recover(path: Path) -> Opened:
    """Open the (locked) journal directory ``path`` after whatever ended its last use:
    refuse damage, drop a torn last record, delete segments the checkpoint covers and
    sync what a crashed predecessor may have left in the page cache."""
    found = analyze(path)
    if found.damage:
        raise damaged_error(path, found.damage)
    try:
        return _recover_files(path, found)
    except OSError as exc:
        raise JournalError(f"cannot open journal '{path}': {exc}") from exc


def _recover_files(path: Path, found: Layout) -> Opened:
    for name in (f"{ID_FILE}.tmp", f"{CHECKPOINT_FILE}.tmp"):
        with contextlib.suppress(FileNotFoundError):
            (path / name).unlink()  # a crash before os.replace: the old file stands
    journal_id = uuid.uuid4().hex if found.id is None else found.id
    if found.id is None or found.old_id:
        write_atomic(path, ID_FILE, encode_id(journal_id))
    if found.torn is not None:
        name, offset, why = found.torn
        message = (
            f"journal '{path}': {name}: offset {offset}: {why}; dropping this torn "
            "last record (left by a crash mid-append, it was never acknowledged as durable)"
        )
        warnings.warn(message, RuntimeWarning, stacklevel=4)
        logger.warning("%s", message)
        fd = os.open(path / name, os.O_WRONLY | _O_CLOEXEC)
        try:
            os.ftruncate(fd, offset)
            os.fsync(fd)
        finally:
            os.close(fd)
    checkpoint_seq = found.checkpoint_seq
    last_seq = max([found.checkpoint_seq] + [s.last_seq for s in found.segments])
    syncs = 0
    segments: list[SegmentInfo] = []
    for seg in found.segments:
        if seg.stale or seg.last_seq < checkpoint_seq:
            (path / seg.name).unlink()
            continue
        # What a crashed predecessor wrote may still sit in the page cache only.
        fd = os.open(path / seg.name, os.O_RDONLY | _O_CLOEXEC)
        try:
            datasync(fd)
            syncs += 1
        finally:
            os.close(fd)
        seg.size = seg.end
        segments.append(seg)
    fsync_dir(path)
    syncs += 1
    last_fd = None  # the last segment, opened O_APPEND
    if segments:
        last = path / segments[-1].name
        last_fd = os.open(last, os.O_WRONLY | os.O_APPEND | _O_CLOEXEC)
    return Opened(journal_id, checkpoint_seq, last_seq, segments, last_fd, syncs)
