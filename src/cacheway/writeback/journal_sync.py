"""Group commit: how far a journal's appends are on disk, and one ``fdatasync`` shared by
every writer waiting when it starts.

:class:`GroupCommit` owns the journal's lock (:attr:`GroupCommit.cond`) and the file
descriptors to sync: the segment being appended to (:attr:`GroupCommit.fd`) and earlier
ones written since their last sync (closed after it). The journal appends under ``cond``
and advances :attr:`GroupCommit.last_seq`; the methods whose docstring says "``cond``
held" expect the caller to hold it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path

from cacheway.errors import ConfigError, JournalError
from cacheway.writeback.journal_files import datasync as _datasync
from cacheway.writeback.journal_files import fsync_dir

__all__ = ["GroupCommit"]

logger = logging.getLogger("cacheway.writeback.journal")

_EVERYSEC_INTERVAL = 1.0  # seconds between background syncs; tests shorten it


class GroupCommit:
    """The durability of the appends to the journal directory ``path``.

    ``last_seq``: the highest seq appended (the journal advances it under ``cond``);
    everything up to it is on disk once :meth:`wait_synced` of it returns. ``fd``: the
    segment file appended to, None before the first record (or after a checkpoint past
    every record, see :meth:`skip_to`). ``syncs``: fsync/fdatasync calls made so far.
    """

    def __init__(self, path: Path, *, last_seq: int, fd: int | None, syncs: int) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.last_seq = last_seq  # written by the journal, under cond
        self.fd = fd  # written through start_segment / skip_to, under cond
        self._path = path
        self._retired: list[int] = []  # earlier segments' fds, closed after their next sync
        self._dir_dirty = False  # a segment was created since the last sync
        self._synced_seq = last_seq
        self._syncs = syncs
        self._syncing = False
        self._waiting = 0  # threads blocked in wait_synced() for a running sync
        self._failure: OSError | None = None
        self._released = False  # fds given back: nothing is synced any more
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def synced_seq(self) -> int:
        """Every record up to this seq is on disk."""
        return self._synced_seq

    @property
    def syncs(self) -> int:
        return self._syncs

    @property
    def released(self) -> bool:
        """True once :meth:`release` gave the file descriptors back."""
        return self._released

    def count_syncs(self, n: int) -> None:
        """Count ``n`` syncs the journal made itself (a checkpoint file); ``cond`` held."""
        self._syncs += n

    # -- segments (cond held) ------------------------------------------------------------

    def start_segment(self, fd: int) -> None:
        """Append to the new segment file ``fd`` from now on; ``cond`` held. The previous
        one is synced (and closed) by the next sync, as is the directory holding the new
        file's name."""
        if self.fd is not None:
            self._retired.append(self.fd)
        self.fd = fd
        self._dir_dirty = True  # the new file's name is durable only after a directory sync

    def skip_to(self, seq: int) -> None:
        """The store holds everything up to ``seq`` > ``last_seq`` (a checkpoint ahead of
        the journal): no later record may reuse such a seq, so the next one starts a new
        segment and counts from ``seq``; ``cond`` held."""
        self.last_seq = self._synced_seq = seq
        if self.fd is not None:
            self._retired.append(self.fd)  # the next record starts a segment
            self.fd = None

    # -- waiting for the disk ------------------------------------------------------------

    def check_appended(self, seq: int) -> None:
        """Refuse a seq never appended; ``cond`` held."""
        if seq > self.last_seq:
            raise ConfigError(f"seq {seq} was never appended (last_seq is {self.last_seq})")

    def wait_synced(self, seq: int) -> None:
        """Return once record ``seq`` is on disk, syncing if no running sync covers it."""
        yielded = False
        with self.cond:
            self.check_appended(seq)
            while True:
                self.raise_if_failed()
                if self._synced_seq >= seq:
                    return
                if self._released:
                    raise JournalError(f"journal '{self._path}' is closed")
                if self._syncing:
                    self._waiting += 1
                    self.cond.wait()
                    self._waiting -= 1
                elif self._waiting and not yielded:
                    # Others are queued behind us: let the writers the last sync just woke
                    # append first, so this sync covers them too (bigger groups).
                    yielded = True
                    self.cond.release()
                    time.sleep(0)
                    self.cond.acquire()
                else:
                    self.sync_locked()

    def sync_locked(self) -> None:
        """Sync everything written so far; called (and returns) with ``cond`` held.

        The lock is dropped during the disk I/O, so writers keep appending while a sync
        runs; whoever waits when it ends starts the next one, covering them all at once.
        """
        target = self.last_seq
        fds = [*self._retired, *([self.fd] if self.fd is not None else [])]
        retired, self._retired = self._retired, []
        dir_dirty, self._dir_dirty = self._dir_dirty, False
        self._syncing = True
        self.cond.release()
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
            self.cond.acquire()
            self._syncing = False
            self._syncs += done
            for fd in retired:
                with contextlib.suppress(OSError):
                    os.close(fd)
            if failure is not None:
                self.fail(failure)
            else:
                self._synced_seq = max(self._synced_seq, target)
            self.cond.notify_all()
        self.raise_if_failed()

    def fail(self, exc: OSError) -> None:
        """The journal takes no more writes after ``exc``; ``cond`` held."""
        # Never retry a failed fsync: the kernel may have dropped the dirty pages and marked
        # them clean, so a second fsync can "succeed" without the data (the fsyncgate lesson).
        if self._failure is None:
            self._failure = exc
            logger.error("journal '%s' failed and takes no more writes: %s", self._path, exc)

    @property
    def failed(self) -> bool:
        return self._failure is not None

    def raise_if_failed(self) -> None:
        if self._failure is not None:
            raise JournalError(
                f"journal '{self._path}' failed: {self._failure}; writes appended since its "
                "last successful sync may not be on disk. Close it and reopen the journal "
                "(after fixing the disk) to replay what is there"
            ) from self._failure

    # -- fsync="everysec" ----------------------------------------------------------------

    def start_every_second(self, name: str) -> None:
        """Sync in a background thread once a second (``fsync="everysec"``)."""
        self._thread = threading.Thread(target=self._sync_every_second, name=name, daemon=True)
        self._thread.start()

    def _sync_every_second(self) -> None:
        while not self._stop.wait(_EVERYSEC_INTERVAL):
            with self.cond:
                if self._stop.is_set() or self._failure is not None:
                    return
                pending = self.last_seq > self._synced_seq or self._dir_dirty or self._retired
                if self._syncing or not pending:
                    continue
                with contextlib.suppress(JournalError):  # fail() has logged it
                    self.sync_locked()

    # -- closing -------------------------------------------------------------------------

    def stop_every_second(self) -> None:
        """Stop the background thread (if any) and wait for it; ``cond`` not held."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def finish_locked(self) -> None:
        """Wait for a running sync, then sync what was appended unless the journal failed
        (a failed fsync is never retried); ``cond`` held."""
        while self._syncing:
            self.cond.wait()
        if self._failure is None and (self._synced_seq < self.last_seq or self._retired):
            with contextlib.suppress(JournalError):
                self.sync_locked()

    def release(self) -> None:
        """Close the segment files; nothing is synced afterwards."""
        self._released = True
        fds = [*self._retired, *([self.fd] if self.fd is not None else [])]
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._retired, self.fd = [], None

    def after_fork(self) -> None:
        """In a forked child: a lock another thread held at the fork would stay held and
        threads do not survive a fork, so nothing inherited is waited on; then
        :meth:`release` the copies of the parent's file descriptors."""
        self.cond = threading.Condition(threading.Lock())
        self._stop = threading.Event()
        self._thread = None
        self._syncing, self._waiting = False, 0
        self.release()
