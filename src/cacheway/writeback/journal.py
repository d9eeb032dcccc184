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
import time
import uuid
import warnings
from pathlib import Path
from types import TracebackType

from cacheway.errors import ConfigError, JournalError
from cacheway.writeback.journal_files import (
    JournalInUse,
    abandoned_children,
    fsync_dir,
    lock_directory,
    make_child_directory,
    remove_directory,
    write_all,
    write_atomic,
)
from cacheway.writeback.journal_format import (
    ADD,
    CHECKPOINT_FILE,
    DELETE,
    DROP,
    ID_FILE,
    SET,
    JournalReport,
    Layout,
    Record,
    SegmentInfo,
    analyze,
    damaged_error,
    encode,
    encode_checkpoint,
    encode_id,
    inspect,
    scan,
    segment_name,
    void_dropped,
)

__all__ = [
    "ADD", "DELETE", "DROP", "FSYNC_MODES", "SET", "Journal", "JournalInUse", "JournalReport",
    "Record", "abandoned_children", "inspect",
]

logger = logging.getLogger(__name__)

FSYNC_MODES = ("always", "everysec", "never")
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_EVERYSEC_INTERVAL = 1.0  # seconds between background syncs; tests shorten it


def _datasync(fd: int) -> None:
    # fdatasync skips the mtime update that fsync also forces: one disk write, not two.
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # pragma: no cover - macOS
        os.fsync(fd)


class Journal:
    """An append-only, crash-safe log of writes in the directory ``path``.

    ``fsync``: ``"always"`` (``wait(seq)`` returns once the record is on disk; concurrent
    waiters share one sync), ``"everysec"`` (a background thread syncs once a second) or
    ``"never"`` (the OS decides). ``segment_bytes``: size at which a new segment starts.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fsync: str = "everysec",
        segment_bytes: int = 64 * 1024 * 1024,
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
        self._cond = threading.Condition(threading.Lock())
        self._checkpoint_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._segments: list[SegmentInfo] = []
        self._fd: int | None = None  # the last segment, opened O_APPEND
        self._retired: list[int] = []  # earlier segments' fds, closed after their next sync
        self._dir_dirty = False  # a segment was created since the last sync
        self._last_seq = 0
        self._synced_seq = 0
        self._checkpoint_seq = 0
        self._syncs = 0
        self._syncing = False
        self._waiting = 0  # threads blocked in wait() for a running sync
        self._failure: OSError | None = None
        self._closed = False  # no more appends
        self._released = False  # fds and lock given back
        self._id = ""
        self._pid = os.getpid()
        self._child = False  # made by for_child: its directory goes when it closes empty
        self._remove = False  # remove() was called: the directory goes at close
        self._make_directory()
        self._lock_fd = lock_directory(self._path)
        try:
            self._recover()
        except BaseException:
            self._release()
            raise
        if fsync == "everysec":
            self._thread = threading.Thread(
                target=self._sync_every_second, name=f"cacheway-journal-{self._id[:8]}", daemon=True
            )
            self._thread.start()

    def _make_directory(self) -> None:
        if self._path.exists() and not self._path.is_dir():
            raise JournalError(f"journal path '{self._path}' is a file; a journal is a directory")
        if not self._path.exists():
            try:
                self._path.mkdir(parents=True, exist_ok=True)
                fsync_dir(self._path.resolve().parent)
            except OSError as exc:
                raise JournalError(
                    f"cannot create journal directory '{self._path}': {exc}"
                ) from exc

    def _recover(self) -> None:
        found = analyze(self._path)
        if found.damage:
            raise damaged_error(self._path, found.damage)
        try:
            self._recover_files(found)
        except OSError as exc:
            raise JournalError(f"cannot open journal '{self._path}': {exc}") from exc

    def _recover_files(self, found: Layout) -> None:
        for name in (f"{ID_FILE}.tmp", f"{CHECKPOINT_FILE}.tmp"):
            with contextlib.suppress(FileNotFoundError):
                (self._path / name).unlink()  # a crash before os.replace: the old file stands
        self._id = uuid.uuid4().hex if found.id is None else found.id
        if found.id is None or found.old_id:
            write_atomic(self._path, ID_FILE, encode_id(self._id))
        if found.torn is not None:
            name, offset, why = found.torn
            message = (
                f"journal '{self._path}': {name}: offset {offset}: {why}; dropping this torn "
                "last record (left by a crash mid-append, it was never acknowledged as durable)"
            )
            warnings.warn(message, RuntimeWarning, stacklevel=4)
            logger.warning("%s", message)
            fd = os.open(self._path / name, os.O_WRONLY | _O_CLOEXEC)
            try:
                os.ftruncate(fd, offset)
                os.fsync(fd)
            finally:
                os.close(fd)
        self._checkpoint_seq = found.checkpoint_seq
        self._last_seq = max([found.checkpoint_seq] + [s.last_seq for s in found.segments])
        for seg in found.segments:
            if seg.stale or seg.last_seq < self._checkpoint_seq:
                (self._path / seg.name).unlink()
                continue
            # What a crashed predecessor wrote may still sit in the page cache only.
            fd = os.open(self._path / seg.name, os.O_RDONLY | _O_CLOEXEC)
            try:
                _datasync(fd)
                self._syncs += 1
            finally:
                os.close(fd)
            seg.size = seg.end
            self._segments.append(seg)
        fsync_dir(self._path)
        self._syncs += 1
        self._synced_seq = self._last_seq
        if self._segments:
            last = self._path / self._segments[-1].name
            self._fd = os.open(last, os.O_WRONLY | os.O_APPEND | _O_CLOEXEC)

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
        return self._last_seq

    @property
    def checkpoint_seq(self) -> int:
        """Every record up to this seq is in the store."""
        return self._checkpoint_seq

    @property
    def synced_seq(self) -> int:
        """Every record up to this seq is on disk."""
        return self._synced_seq

    @property
    def syncs(self) -> int:
        """fsync/fdatasync calls made since open (journal_syncs in stats)."""
        return self._syncs

    @property
    def bytes(self) -> int:
        """Total size of the live segment files (journal_bytes in stats)."""
        with self._cond:
            return sum(seg.size for seg in self._segments)

    def records(self) -> list[Record]:
        """Every intact write with seq > checkpoint_seq that no DROP record voids, in seq
        order (what a replay applies)."""
        with self._cond:
            if self._released:
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
    ) -> int:
        """Hand one record to the OS (not yet durable: see :meth:`wait`) and return its seq."""
        encoded = encode(namespace, key, kind, payload, delta)
        with self._cond:
            if self._closed:
                raise JournalError(f"journal '{self._path}' is closed")
            self._raise_if_failed()
            seq = self._last_seq + 1
            if self._fd is None or self._segments[-1].size >= self._segment_bytes:
                self._rotate(seq)
            assert self._fd is not None
            segment = self._segments[-1]
            try:
                write_all(self._fd, encoded.frame(seq))
            except OSError as exc:
                try:  # take back a partial record so later appends stay readable
                    os.ftruncate(self._fd, segment.size)
                except OSError:
                    self._fail(exc)
                    self._raise_if_failed()
                raise JournalError(f"cannot append to journal '{self._path}': {exc}") from exc
            segment.size += encoded.size
            self._last_seq = seq
            return seq

    def drop(self, namespace: str, key: str, upto_seq: int) -> None:
        """Void the records of ``key`` with seq <= ``upto_seq``: the writes were given up
        (``on_dead_letter``), so no replay may apply them. Durable when it returns, in every
        fsync mode: a write the application was told is dropped never comes back."""
        if isinstance(upto_seq, bool) or not isinstance(upto_seq, int) or upto_seq < 1:
            raise ConfigError(f"upto_seq {upto_seq!r} must be an int >= 1")
        if upto_seq > self._last_seq:
            raise ConfigError(f"seq {upto_seq} was never appended (last_seq is {self._last_seq})")
        self._wait_synced(self.append(namespace, key, DROP, b"", upto_seq))

    def _rotate(self, seq: int) -> None:
        name = segment_name(seq)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | _O_CLOEXEC
        try:
            fd = os.open(self._path / name, flags, 0o644)
        except OSError as exc:
            raise JournalError(
                f"cannot create journal segment '{self._path / name}': {exc}"
            ) from exc
        if self._fd is not None:
            self._retired.append(self._fd)
        self._fd = fd
        self._segments.append(SegmentInfo(seq, name, 0))
        self._dir_dirty = True  # the new file's name is durable only after a directory sync

    def wait(self, seq: int) -> None:
        """Return once record ``seq`` is as durable as the fsync mode promises."""
        if self._fsync == "always":
            self._wait_synced(seq)
            return
        with self._cond:
            self._check_appended(seq)
            self._raise_if_failed()

    def sync(self) -> None:
        """Make everything appended so far durable now, whatever the fsync mode."""
        self._wait_synced(self._last_seq)

    def _wait_synced(self, seq: int) -> None:
        yielded = False
        with self._cond:
            self._check_appended(seq)
            while True:
                self._raise_if_failed()
                if self._synced_seq >= seq:
                    return
                if self._released:
                    raise JournalError(f"journal '{self._path}' is closed")
                if self._syncing:
                    self._waiting += 1
                    self._cond.wait()
                    self._waiting -= 1
                elif self._waiting and not yielded:
                    # Others are queued behind us: let the writers the last sync just woke
                    # append first, so this sync covers them too (bigger groups).
                    yielded = True
                    self._cond.release()
                    time.sleep(0)
                    self._cond.acquire()
                else:
                    self._sync_locked()

    def _check_appended(self, seq: int) -> None:
        if seq > self._last_seq:
            raise ConfigError(f"seq {seq} was never appended (last_seq is {self._last_seq})")

    def _sync_locked(self) -> None:
        """Sync everything written so far; called (and returns) with ``_cond`` held.

        The lock is dropped during the disk I/O, so writers keep appending while a sync
        runs; whoever waits when it ends starts the next one, covering them all at once.
        """
        target = self._last_seq
        fds = [*self._retired, *([self._fd] if self._fd is not None else [])]
        retired, self._retired = self._retired, []
        dir_dirty, self._dir_dirty = self._dir_dirty, False
        self._syncing = True
        self._cond.release()
        done = 0
        failure: OSError | None = None
        try:
            for fd in fds:
                _datasync(fd)
                done += 1
            if dir_dirty:
                fsync_dir(self._path)
                done += 1
        except OSError as exc:
            failure = exc
        finally:
            self._cond.acquire()
            self._syncing = False
            self._syncs += done
            for fd in retired:
                with contextlib.suppress(OSError):
                    os.close(fd)
            if failure is not None:
                self._fail(failure)
            else:
                self._synced_seq = max(self._synced_seq, target)
            self._cond.notify_all()
        self._raise_if_failed()

    def _fail(self, exc: OSError) -> None:
        # Never retry a failed fsync: the kernel may have dropped the dirty pages and marked
        # them clean, so a second fsync can "succeed" without the data (the fsyncgate lesson).
        if self._failure is None:
            self._failure = exc
            logger.error("journal '%s' failed and takes no more writes: %s", self._path, exc)

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise JournalError(
                f"journal '{self._path}' failed: {self._failure}; writes appended since its "
                "last successful sync may not be on disk. Close it and reopen the journal "
                "(after fixing the disk) to replay what is there"
            ) from self._failure

    def _sync_every_second(self) -> None:
        while not self._stop.wait(_EVERYSEC_INTERVAL):
            with self._cond:
                if self._closed or self._failure is not None:
                    return
                pending = self._last_seq > self._synced_seq or self._dir_dirty or self._retired
                if self._syncing or not pending:
                    continue
                with contextlib.suppress(JournalError):  # _fail has logged it
                    self._sync_locked()

    def checkpoint(self, seq: int) -> None:
        """Record that every record with seq <= ``seq`` is in the store; drop covered segments.

        A ``seq`` above ``last_seq`` (the store is ahead of the journal, e.g. the unsynced
        tail was lost in a power cut) moves ``last_seq`` up, so no later record reuses a seq
        the store has already applied.
        """
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            raise ConfigError(f"checkpoint seq {seq!r} must be an int >= 0")
        with self._checkpoint_lock:
            persisted = False
            with self._cond:
                if self._closed:
                    raise JournalError(f"journal '{self._path}' is closed")
                if seq <= self._checkpoint_seq:
                    return
                if seq > self._last_seq:
                    # Persist under the lock: an append between the two would get a seq
                    # the checkpoint claims is already in the store.
                    self._persist_checkpoint(seq)
                    self._syncs += 2
                    persisted = True
                    self._last_seq = self._synced_seq = seq
                    if self._fd is not None:
                        self._retired.append(self._fd)  # the next record starts a segment
                        self._fd = None
            if not persisted:
                self._persist_checkpoint(seq)
            with self._cond:
                if not persisted:
                    self._syncs += 2
                self._checkpoint_seq = max(self._checkpoint_seq, seq)
                segments = self._segments
                # The segment being appended to stays; an earlier one goes once the
                # checkpoint reaches the seq just before its successor's first record.
                last = len(segments) if self._fd is None else len(segments) - 1
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
        with self._cond:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._cond:
            while self._syncing:
                self._cond.wait()
            if self._failure is None and (self._synced_seq < self._last_seq or self._retired):
                with contextlib.suppress(JournalError):
                    self._sync_locked()
            empty = self._failure is None and self._checkpoint_seq >= self._last_seq
            if (self._child or self._remove) and empty:
                self._remove_files()  # a forked process's journal, all in the store
            self._release()

    def remove(self) -> None:
        """Close the journal and delete its directory (a replayed child journal's end).

        Refused while records wait for replay: only a journal checkpointed up to its
        ``last_seq`` holds nothing the store lacks."""
        with self._cond:
            if self._released:
                raise JournalError(f"journal '{self._path}' is closed")
            if self._checkpoint_seq < self._last_seq:
                raise JournalError(
                    f"journal '{self._path}' still holds records {self._checkpoint_seq + 1}.."
                    f"{self._last_seq}; replay them before removing it"
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
        self._released = self._closed = True
        fds = [*self._retired, *([self._fd] if self._fd is not None else [])]
        if self._lock_fd >= 0:
            fds.append(self._lock_fd)
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the lock file's last fd releases the flock
        self._retired, self._fd, self._lock_fd = [], None, -1

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
        self._cond = threading.Condition(threading.Lock())
        self._checkpoint_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._syncing, self._waiting = False, 0
        self._release()
        self._pid = os.getpid()  # a second call in this process is refused
        path = make_child_directory(self._path)
        child = Journal(path, fsync=self._fsync, segment_bytes=self._segment_bytes)
        child._child = True
        return child

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
        return f"<Journal {str(self._path)!r} last_seq={self._last_seq} {state}>"

