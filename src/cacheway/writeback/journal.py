"""The journal: the write-ahead log that lets a write-back cache survive a crash.

Every accepted ``set``/``delete``/``incr`` is appended as a :class:`Record` before the call
returns; with ``fsync="always"`` the call also waits until the record is on disk, and
concurrent writers share one ``fdatasync`` (group commit). After ``kill -9`` or a power
loss, reopening the journal gives back every acknowledged write with ``records()``.

A journal is a directory::

    app.wal/
      id                          random id, stable for the journal's life
      lock                        flock'ed by the one process that has it open
      checkpoint                  highest seq known to be in the store
      00000000000000000001.seg    records, named by the seq of their first record
    app.wal@4242-1f2e3d4c/        the journal of a process forked from the one that has
                                  app.wal open (see :meth:`Journal.for_child`)

Where the parts live: the bytes of a record and of the small files,
:mod:`cacheway.core.journal_records` (pure); what a directory holds and ``inspect``,
:mod:`.journal_layout`; opening after a crash, :mod:`.journal_open`; group commit and the
``everysec`` thread, :mod:`.journal_sync`; durable file writes, the lock and the
directories of forked processes, :mod:`.journal_files`.

>>> import tempfile, os
>>> with tempfile.TemporaryDirectory() as tmp, Journal(os.path.join(tmp, "app.wal")) as j:
...     seq = j.append("", "user:1", SET, b'{"name": "Ada"}')
...     j.wait(seq)
...     [r.key for r in j.records()]
['user:1']
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import threading
from pathlib import Path
from types import TracebackType

from cacheway.core.journal_records import (
    ADD,
    CHECKPOINT_FILE,
    DELETE,
    DROP,
    SET,
    Record,
    encode,
    encode_checkpoint,
    scan,
    segment_name,
    void_dropped,
)
from cacheway.errors import ConfigError, JournalError
from cacheway.writeback.journal_files import (
    JournalInUse,
    abandoned_children,
    lock_directory,
    make_child_directory,
    remove_directory,
    write_all,
    write_atomic,
)
from cacheway.writeback.journal_layout import JournalReport, SegmentInfo, damaged_error, inspect
from cacheway.writeback.journal_open import make_directory, recover
from cacheway.writeback.journal_sync import GroupCommit

__all__ = [
    "ADD", "DELETE", "DROP", "FSYNC_MODES", "SET", "Journal", "JournalInUse", "JournalReport",
    "Record", "abandoned_children", "inspect",
]

logger = logging.getLogger(__name__)

FSYNC_MODES = ("always", "everysec", "never")
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class Journal:
    """An append-only, crash-safe log of writes in the directory ``path``.

    ``fsync``: ``"always"`` (``wait(seq)`` returns once the record is on disk; concurrent
    waiters share one sync), ``"everysec"`` (a background thread syncs once a second) or
    ``"never"`` (the OS decides). ``segment_bytes``: size at which a new segment starts.
    ``remove_when_empty``: delete the directory at close when the store holds every record
    (the journal of a forked process, see :meth:`for_child`).

    Appends, their durability and the journal's lock are a :class:`GroupCommit`'s
    (:mod:`.journal_sync`); the journal owns the segments, the checkpoint and the files.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: str = "everysec",
        segment_bytes: int = 64 * 1024 * 1024,
        remove_when_empty: bool = False,
    ) -> None:
        if fsync not in FSYNC_MODES:
            raise ConfigError(f"fsync={fsync!r} is not one of {', '.join(map(repr, FSYNC_MODES))}")
        if (
            isinstance(segment_bytes, bool)
            or not isinstance(segment_bytes, int)
            or segment_bytes < 1
        ):
            raise ConfigError(f"segment_bytes={segment_bytes!r} must be a positive int")
        self._path = Path(os.fspath(path))
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._checkpoint_lock = threading.Lock()
        self._closed = False  # no more appends
        self._pid = os.getpid()
        self._remove_when_empty = remove_when_empty  # a forked process's journal
        self._remove = False  # remove() was called: the directory goes at close
        make_directory(self._path)
        self._lock_fd = lock_directory(self._path)
        try:
            opened = recover(self._path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # closing the lock file's last fd releases the flock
            raise
        self._id = opened.id
        self._checkpoint_seq = opened.checkpoint_seq
        self._segments: list[SegmentInfo] = opened.segments
        self._commit = GroupCommit(self._path, last_seq=opened.last_seq, fd=opened.fd,
                                   syncs=opened.syncs)
        if fsync == "everysec":
            self._commit.start_every_second(f"cacheway-journal-{self._id[:8]}")

    # -- reading -------------------------------------------------------------------------

    @property
    def id(self) -> str:
        """Random id (uuid4 hex) made with the journal; stores key applied seqs by it."""
        return self._id

    @property
    def path(self) -> Path:
        return self._path

    @property
    def last_seq(self) -> int:
        """Highest seq appended (or checkpointed) so far; 0 for a new journal."""
        return self._commit.last_seq

    @property
    def checkpoint_seq(self) -> int:
        """Every record up to this seq is in the store."""
        return self._checkpoint_seq

    @property
    def synced_seq(self) -> int:
        """Every record up to this seq is on disk."""
        return self._commit.synced_seq

    @property
    def syncs(self) -> int:
        """fsync/fdatasync calls made since open (journal_syncs in stats)."""
        return self._commit.syncs

    @property
    def bytes(self) -> int:
        """Total size of the live segment files (journal_bytes in stats)."""
        with self._commit.cond:
            return sum(seg.size for seg in self._segments)

    def records(self) -> list[Record]:
        """Every intact write with seq > checkpoint_seq that no DROP record voids, in seq
        order (what a replay applies)."""
        with self._commit.cond:
            if self._commit.released:
                raise JournalError(f"journal '{self._path}' is closed")
            segments = [(seg.name, seg.size) for seg in self._segments]
            checkpoint_seq = self._checkpoint_seq
        out: list[Record] = []
        for name, size in segments:
            try:
                with open(self._path / name, "rb") as file:
                    data = file.read(size)
            except FileNotFoundError:
                continue  # a concurrent checkpoint deleted it: all covered
            except OSError as exc:
                raise JournalError(
                    f"cannot read journal segment '{self._path / name}': {exc}"
                ) from exc
            result = scan(data)
            if result.error is not None:
                raise damaged_error(self._path, [f"{name}: offset {result.end}: {result.error}"])
            out.extend(record for _, record in result.records if record.seq > checkpoint_seq)
        return void_dropped(out)

    # -- writing -------------------------------------------------------------------------

    def append(
        self,
        namespace: str,
        key: str,
        kind: int,
        payload: builtins.bytes | bytearray | memoryview = b"",
        delta: int = 0,
        expires_at: float | None = None,
    ) -> int:
        """Hand one record to the OS (not yet durable: see :meth:`wait`) and return its seq
        (``expires_at``: when the write's data ends, for a namespace with ``expire=``)."""
        encoded = encode(namespace, key, kind, payload, delta, expires_at)
        commit = self._commit
        with commit.cond:
            if self._closed:
                raise JournalError(f"journal '{self._path}' is closed")
            commit.raise_if_failed()
            seq = commit.last_seq + 1
            if commit.fd is None or self._segments[-1].size >= self._segment_bytes:
                self._rotate(seq)
            fd = commit.fd
            assert fd is not None
            segment = self._segments[-1]
            try:
                write_all(fd, encoded.frame(seq))
            except OSError as exc:
                try:  # take back a partial record so later appends stay readable
                    os.ftruncate(fd, segment.size)
                except OSError:
                    commit.fail(exc)
                    commit.raise_if_failed()
                raise JournalError(f"cannot append to journal '{self._path}': {exc}") from exc
            segment.size += encoded.size
            commit.last_seq = seq
            return seq

    def drop(self, namespace: str, key: str, upto_seq: int) -> None:
        """Void the records of ``key`` with seq <= ``upto_seq``: the writes were given up
        (``on_dead_letter``), so no replay may apply them. Durable when it returns, in every
        fsync mode: a write the application was told is dropped never comes back."""
        if isinstance(upto_seq, bool) or not isinstance(upto_seq, int) or upto_seq < 1:
            raise ConfigError(f"upto_seq {upto_seq!r} must be an int >= 1")
        if upto_seq > self._commit.last_seq:
            raise ConfigError(
                f"seq {upto_seq} was never appended (last_seq is {self._commit.last_seq})")
        self._commit.wait_synced(self.append(namespace, key, DROP, b"", upto_seq))

    def _rotate(self, seq: int) -> None:
        name = segment_name(seq)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | _O_CLOEXEC
        try:
            fd = os.open(self._path / name, flags, 0o644)
        except OSError as exc:
            raise JournalError(
                f"cannot create journal segment '{self._path / name}': {exc}"
            ) from exc
        self._commit.start_segment(fd)
        self._segments.append(SegmentInfo(seq, name, 0))

    def wait(self, seq: int) -> None:
        """Return once record ``seq`` is as durable as the fsync mode promises."""
        commit = self._commit
        if self._fsync == "always":
            commit.wait_synced(seq)
            return
        with commit.cond:
            commit.check_appended(seq)
            commit.raise_if_failed()

    def sync(self) -> None:
        """Make everything appended so far durable now, whatever the fsync mode."""
        self._commit.wait_synced(self._commit.last_seq)

    def checkpoint(self, seq: int) -> None:
        """Record that every record with seq <= ``seq`` is in the store; drop covered segments.

        A ``seq`` above ``last_seq`` (the store is ahead of the journal, e.g. the unsynced
        tail was lost in a power cut) moves ``last_seq`` up, so no later record reuses a seq
        the store has already applied.
        """
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ConfigError(f"checkpoint seq {seq!r} must be an int >= 0")
        commit = self._commit
        with self._checkpoint_lock:
            persisted = False
            with commit.cond:
                if self._closed:
                    raise JournalError(f"journal '{self._path}' is closed")
                if seq <= self._checkpoint_seq:
                    return
                if seq > commit.last_seq:
                    # Persist under the lock: an append between the two would get a seq
                    # the checkpoint claims is already in the store.
                    self._persist_checkpoint(seq)
                    commit.count_syncs(2)
                    persisted = True
                    commit.skip_to(seq)  # the next record starts a segment
            if not persisted:
                self._persist_checkpoint(seq)
            with commit.cond:
                if not persisted:
                    commit.count_syncs(2)
                self._checkpoint_seq = max(self._checkpoint_seq, seq)
                segments = self._segments
                # The segment being appended to stays; an earlier one goes once the
                # checkpoint reaches the seq just before its successor's first record.
                last = len(segments) if commit.fd is None else len(segments) - 1
                doomed = [
                    s
                    for i, s in enumerate(segments[:last])
                    if i + 1 == len(segments) or segments[i + 1].first_seq - 1 <= seq
                ]
                self._segments = [s for s in segments if s not in doomed]
        for seg in doomed:
            try:
                (self._path / seg.name).unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:  # harmless: the next open deletes it as stale
                logger.warning("journal '%s': cannot delete %s: %s", self._path, seg.name, exc)

    def _persist_checkpoint(self, seq: int) -> None:
        try:
            write_atomic(self._path, CHECKPOINT_FILE, encode_checkpoint(seq))
        except OSError as exc:
            raise JournalError(
                f"cannot write the checkpoint of journal '{self._path}': {exc}"
            ) from exc

    # -- closing -------------------------------------------------------------------------

    def close(self) -> None:
        """Sync what was appended (unless the journal failed), stop, release the lock."""
        commit = self._commit
        with commit.cond:
            if self._closed:
                return
            self._closed = True
        commit.stop_every_second()
        with commit.cond:
            commit.finish_locked()
            empty = not commit.failed and self._checkpoint_seq >= commit.last_seq
            if (self._remove_when_empty or self._remove) and empty:
                self._remove_files()  # a forked process's journal, all in the store
            self._release()

    def remove(self) -> None:
        """Close the journal and delete its directory (a replayed child journal's end).

        Refused while records wait for replay: only a journal checkpointed up to its
        ``last_seq`` holds nothing the store lacks."""
        with self._commit.cond:
            if self._commit.released:
                raise JournalError(f"journal '{self._path}' is closed")
            if self._checkpoint_seq < self._commit.last_seq:
                raise JournalError(
                    f"journal '{self._path}' still holds records {self._checkpoint_seq + 1}.."
                    f"{self._commit.last_seq}; replay them before removing it"
                )
            self._remove = True
        self.close()

    def _remove_files(self) -> None:
        # Under the lock, the lock file last: whoever opens the directory meanwhile finds
        # it in use, or (once it is gone) an empty journal.
        try:
            remove_directory(self._path)
        except OSError as exc:  # harmless: an empty journal is removed by the next replay
            logger.warning("journal '%s': cannot remove it: %s", self._path, exc)

    def _release(self) -> None:
        self._closed = True
        self._commit.release()
        if self._lock_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)  # closing the lock file's last fd releases the flock
        self._lock_fd = -1

    # -- fork ------------------------------------------------------------------------------

    def for_child(self) -> Journal:
        """The journal of a process forked from the one that opened this one: call it in
        the child right after ``os.fork()`` and write to the journal it returns.

        The child's copy of this journal becomes closed (appends raise): nothing the
        parent still uses is touched. Its file descriptors are copies of the parent's, so
        closing them leaves the parent's appends and its lock (held by the open file
        description, which the parent keeps) as they are, and a child that outlives its
        parent does not keep the parent's journal locked. Threads do not survive a fork
        and a lock another thread held at the fork would stay held: nothing inherited is
        waited on. The child's journal is the sibling directory ``PATH@PID-RANDOM`` (no
        namespace's journal, ``PATH.NAME``, can have that name); whoever replays ``PATH``
        replays it once its process is gone (see :func:`abandoned_children`), and the
        child removes it when it closes with everything in the store.
        """
        if os.getpid() == self._pid:
            raise ConfigError(
                f"Journal.for_child() of '{self._path}' is for a process forked from the one "
                "that opened it; this is that process"
            )
        self._checkpoint_lock = threading.Lock()
        self._commit.after_fork()
        self._release()
        self._pid = os.getpid()  # a second call in this process is refused
        path = make_child_directory(self._path)
        return Journal(path, fsync=self._fsync, segment_bytes=self._segment_bytes,
                       remove_when_empty=True)

    def __enter__(self) -> Journal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fsync={self._fsync!r}"
        return f"<Journal {str(self._path)!r} last_seq={self._commit.last_seq} {state}>"

