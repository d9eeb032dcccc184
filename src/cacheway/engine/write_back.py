"""The write-back engine: accept writes into the dirty table; its flusher stores them.

Writes return as soon as they are in the dirty table (and, with a journal, appended and
synced per its fsync policy). The path of a ``set``: :func:`fastpaths.staged_set` on a
plain memory backend without a journal (stage the write, set the copy); else
:meth:`WriteBackEngine.set_unstaged` (the dirty table, the journal record, the copy);
else, when the table is full, parked or the backend shared, its accept path
(back-pressure in :mod:`.room`, shared copies in :mod:`.shared_copies`). The flusher
(:mod:`cacheway.writeback.flusher`, a component this engine owns) writes batches.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .._refresh import ReadOptions
from ..backends.base import MISS, Backend
from ..core.dirty import DirtyTable, Entry
from ..core.keys import check_keys, check_mapping, check_ttl
from ..errors import ConfigError, StoreError
from ..policies import WriteBack
from ..serializers import Serializer
from ..stats import Counters
from ..stores.base import ADD, DELETE, SET, Store
from ..typed import Codec
from ..writeback.flusher import Flusher
from . import fastpaths
from .read import Engine
from .room import Item, NeedRoom, Room
from .shared_copies import Publish, SharedCopies

if TYPE_CHECKING:
    from ..writeback.journal import Journal

__all__ = ["WriteBackEngine"]


class WriteBackEngine(Engine):
    """Write-back for one namespace."""

    def __init__(
        self,
        namespace: str,
        store: Store,
        backend: Backend,
        serializer: Serializer,
        ttl: float | None,
        counters: Counters,
        config: WriteBack,
        journal: Journal | None = None,
        timer: Callable[[], float] = time.monotonic,
        read: ReadOptions | None = None,
        codec: Codec[Any] | None = None,
        expire: float | None = None,
    ) -> None:
        super().__init__(namespace, store, backend, serializer, ttl, counters, read=read,
                         codec=codec, expire=expire)
        self.config = config
        self.journal = journal
        self.timer = timer
        self.local = backend.local
        view = fastpaths.local_view(self)
        # A memory backend's own lock guards the dirty table and the copies together.
        self.lock: threading.RLock = view.lock if view is not None else threading.RLock()
        self._backend_set_raw = backend.set
        self._max_dirty = config.max_dirty
        self._batch_size = config.batch_size
        # set() stages writes (fastpaths.staged_set) only where nothing else must happen
        # at the call: the journal (when there is one) needs its record appended in order,
        # a shared or byte-counted backend is written through its own set(), row mode
        # checks each value first, and expire= stamps each write.
        self._view = view if (journal is None and view is not None and not view.counts_bytes
                              and self.validate is None and self.expiry is None) else None
        self.copies = SharedCopies(self)
        self.room = Room(self)
        self.pending_entry = self._pending_entry
        self._start()
        self.bind_get()

    def _start(self) -> None:
        """A fresh dirty table, its condition and flusher (at open, and in a forked child)."""
        self.table = table = DirtyTable(self.counters)
        self._staged = table.staged
        self.cond = threading.Condition(self.lock)
        table.seq = self.journal.last_seq if self.journal is not None else 0
        self.flusher = Flusher(self)
        if self._view is not None:
            table.stage_limit = self.config.max_dirty
            table.drain()  # works out stage_cap
            self.set = fastpaths.staged_set(self, self._view)  # type: ignore[method-assign]

    def shared_locks(self, keys: list[str]) -> list[Any]:
        """The stripe locks of ``keys``, acquired, on a shared backend (else none): writers
        hold them from the table to the backend's copy, the flusher to read versions."""
        if self.local:
            return []
        locks = self.locks_for([self.prefix + k for k in keys])
        for lock in locks:
            lock.acquire()
        return locks

    # -- fork -------------------------------------------------------------------------
    def before_fork(self) -> None:
        # The child must not inherit the table lock held by a thread it will not have.
        self.lock.acquire()

    def after_fork_in_parent(self) -> None:
        self.lock.release()

    def after_fork_in_child(self) -> None:
        """The child of a fork gets its own empty dirty table (the parent flushes the
        entries it accepted, once), its own flusher thread and its own journal."""
        super().after_fork_in_child()
        failed: BaseException | None = None
        try:
            if self.closed:
                return
            if self.journal is not None:
                try:
                    self.journal = self.journal.for_child()
                except Exception as exc:  # noqa: BLE001 - raised below, after the restart
                    failed = exc  # (the inherited journal is closed: writes raise)
            self._start()  # a flusher all the same: nothing may wait for a missing one
        finally:
            self.lock.release()
        if failed is not None:
            raise failed

    # -- reads ------------------------------------------------------------------------
    def _pending_entry(self, key: str) -> Entry | None:
        """``key``'s newest pending entry, for a reader that does not hold the lock."""
        if self._staged:
            with self.lock:
                return self.table.pending(key)
        # Nothing staged: a write staged from now on is newer than this read.
        return self.table.peek(key)

    def fill_lock(self, stripe: int) -> Any:
        # A process-local backend's copies are written under the table lock.
        return self.cond if self.local else self.locks[stripe]

    def can_fill(self, bkey: str, stripe: int, gen: int) -> bool:
        return self.gens[stripe] == gen and self.table.pending(bkey[len(self.prefix):]) is None

    # -- writes -----------------------------------------------------------------------
    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        # Engines that stage replace this with fastpaths.staged_set() (see _start).
        key, value, payload, ttl_ = self.prepare(key, value, ttl)
        self.set_unstaged(key, value, payload, ttl_)

    def set_unstaged(self, key: str, value: Any, payload: bytes, ttl: float | None) -> None:
        # set() with a journal, a shared or byte-counted backend, or a full table.
        table = self.table
        dirty = table.dirty
        journal = self.journal
        with self.lock:
            if table.staged:
                table.drain()
            slow = (
                self.closed
                or not self.local
                or table.parked
                or self.room.through
                or len(dirty) + len(table.inflight) >= self._max_dirty
            )
            if not slow:
                expires_at = None if self.expiry is None else self.expiry.stamp()
                if journal is None:
                    seq = table.seq + 1
                else:
                    seq = journal.append(self.namespace, key, SET, payload, 0, expires_at)
                table.seq = seq
                entry = dirty.get(key)
                counters = self.counters
                if entry is None:
                    dirty[key] = entry = Entry(key, SET, value, payload, 0, ttl, seq,
                                               self.timer())
                    table.took_room()
                    n = len(dirty)
                    if n == 1 or n == self._batch_size:
                        self.cond.notify_all()
                else:
                    entry.absorb(SET, value, payload, 0, ttl, seq)
                    counters.coalesced += 1
                entry.expires_at = expires_at
                counters.writes += 1
                # No generation bump: no fill lands while the key is pending, and the
                # flusher bumps it when the store acknowledges the write.
                bkey = self.prefix + key
                try:
                    self._backend_set_raw(bkey, value, payload, ttl, None)
                except Exception:  # noqa: BLE001 - the general path logs, drops the copy
                    self.backend_set(bkey, value, payload, ttl, None)
        if slow:
            self._accept([(key, SET, value, payload, 0)], ttl)
        elif journal is not None:
            journal.wait(seq)

    def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        ttl = None if ttl is None else check_ttl(ttl)
        items: list[Item] = []
        for k, v in check_mapping(mapping).items():
            self.check_write_key(k)
            if self.validate is not None:
                v = self.validate(self.namespace, k, v, SET)
            payload, v = self.encode(v)
            items.append((k, SET, v, payload, 0))
        if items:
            self._accept(items, ttl if ttl is not None else self.ttl)

    def delete(self, key: str) -> None:
        self._accept([(self.check_write_key(key), DELETE, None, None, 0)], self.ttl)

    def delete_many(self, keys: Iterable[str]) -> None:
        items: list[Item] = [
            (k, DELETE, None, None, 0)
            for k in dict.fromkeys([self.check_write_key(k) for k in check_keys(keys)])
        ]
        if items:
            self._accept(items, self.ttl)

    def incr(self, key: str, delta: int = 1) -> int:
        key = self.check_write_key(key)
        delta = self.check_delta(key, delta)
        loaded = MISS
        stripe = self.stripe(self.prefix + key)
        seen = -1  # the stripe's generation when `loaded` was read
        deadline: float | None = None
        while True:
            locks = self.shared_locks([key])
            publish: list[Publish] | None = None if self.local else []
            through: list[Item] = []
            need_room = done = False
            try:
                with self.cond:
                    entry = self.table.pending(key)
                    # A value read before another write of the key was accepted (and
                    # maybe already flushed) is stale: read again.
                    fresh = loaded is not MISS and self.gens[stripe] == seen
                    if entry is not None or fresh:
                        ended = entry is not None and self.ended(entry)
                        current = (0 if entry.kind == DELETE or ended else entry.value
                                   ) if entry is not None else loaded
                        new = self.as_counter(key, current) + delta
                        # A pending counter whose data ended is replaced, not added to
                        # (coalesced, its delta would count the ended data again).
                        write = (key, SET, new, self.dumps(new), 0) if ended else (
                            key, ADD, new, self.dumps(new), delta)
                        try:
                            seq = self._accept_locked([write], self.ttl, publish, through)
                            done = True
                        except NeedRoom:
                            need_room = True
                if publish:
                    seq = self.copies.publish(publish, self.ttl, seq)
                if through:
                    self.room.write_through(through, self.ttl)
            finally:
                for lock in locks:
                    lock.release()
            if done:
                break
            if need_room:
                deadline = self.room.wait_outside(1, deadline)
                continue
            # Not pending: read it (may load from the store) outside the lock, then retry.
            seen = self.gens[stripe]
            loaded = self.get(key)
            self.as_counter(key, loaded)
        self._durable(seq)
        return int(new)

    def _accept(self, items: list[Item], ttl: float | None) -> None:
        through: list[Item] = []  # new keys on_full="write_through" sends to the store
        if self.local:
            with self.cond:
                seq = self._accept_locked(items, ttl, None, through)
            if through:
                self.room.write_through(through, ttl)
        else:
            # A shared backend is written outside the table lock (a network round trip
            # must not stall every writer), under the keys' stripe locks so that writers
            # of one key still reach it in the order the dirty table took them. Waiting
            # for room happens without the stripe locks: the flusher needs them to ack.
            deadline: float | None = None
            while True:
                locks = self.shared_locks([it[0] for it in items])
                publish: list[Publish] = []
                need_room = False
                try:
                    with self.cond:
                        try:
                            seq = self._accept_locked(items, ttl, publish, through)
                        except NeedRoom:
                            need_room = True
                    if not need_room:
                        seq = self.copies.publish(publish, ttl, seq)
                        if through:
                            self.room.write_through(through, ttl)
                finally:
                    for lock in locks:
                        lock.release()
                if not need_room:
                    break
                deadline = self.room.wait_outside(len(items), deadline)
        self._durable(seq)

    def _durable(self, seq: int) -> None:
        if self.journal is not None:
            self.journal.wait(seq)

    def _accept_locked(
        self, items: list[Item], ttl: float | None, publish: list[Publish] | None = None,
        through: list[Item] | None = None,
    ) -> int:
        if self.closed:
            raise self.closed_error()
        table = self.table
        deadline: float | None = None
        while True:
            table.drain()  # staged writes precede these
            if self.room.through and any(it[0] in self.room.through for it in items):
                # A key being written through waits: its write must reach the store first.
                self.cond.wait()
                continue
            if len(table) + len(items) <= self.config.max_dirty:
                break
            # A write takes room unless it coalesces into a dirty or parked entry (a key
            # whose entry is in flight gets a second entry).
            dirty, parked = table.dirty, table.parked
            need = [it for it in items if it[0] not in dirty and it[0] not in parked]
            if not need or len(table) + len(need) <= self.config.max_dirty:
                break
            if deadline is None:
                deadline = time.monotonic() + self.config.block_timeout
            rest = self.room.make(need, items, through, publish is not None, deadline)
            if rest is not None:
                items = rest
                if not items:
                    return table.seq
                break
            # It waited (without the lock): look at the table again.
        try:
            return self._put_locked(items, ttl, publish)
        except BaseException:
            if through:  # nothing of this call was accepted: no write goes around it
                self.room.release(through)
                through.clear()
            raise

    def _put_locked(self, items: list[Item], ttl: float | None,
                    publish: list[Publish] | None) -> int:
        table = self.table
        was_empty = not table.dirty
        now = self.timer()
        journal = self.journal
        ns = self.namespace
        gens, counters, prefix = self.gens, self.counters, self.prefix
        seq = table.seq
        expires_at = self.expires_at()
        if self.expiry is not None:
            ttl = self.expiry.cap(ttl)  # a copy never outlives the data
        for key, kind, value, payload, delta in items:
            if journal is not None:
                body = payload if kind == SET and payload is not None else b""
                seq = journal.append(ns, key, kind, body, delta, expires_at)
            else:
                seq += 1
            table.seq = seq  # a later item failing must not hide this one from flush()
            if table.put(key, kind, value, payload, delta, ttl, seq, now,
                         expires_at=expires_at):
                counters.coalesced += 1
            counters.writes += 1
            bkey = prefix + key
            gens[self.stripe(bkey)] += 1
            # The backend sees the write at once (other processes sharing it too);
            # only the store lags. Reads here answer from the dirty table first.
            if publish is not None:
                publish.append((bkey, kind, value, payload))
            elif kind == DELETE:
                self.backend_drop(bkey)
            else:
                self.backend_set(bkey, value, payload, ttl, None)
        table.seq = seq
        if was_empty or len(table.dirty) == self.config.batch_size:
            self.cond.notify_all()  # start the max_delay clock / a full batch is ready
        return seq

    # -- flush, pending, close ----------------------------------------------------------
    def pending(self) -> int:
        with self.lock:
            return len(self.table)

    def flush(self, timeout: float | None = None) -> None:
        if threading.current_thread() is self.flusher.thread:
            raise ConfigError(
                "flush() called from the flusher thread (an on_dead_letter callback?) "
                "would wait for itself"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.cond:
            self.table.drain()
            target = self.table.seq
            self.flusher.flush_waiters += 1
            self.cond.notify_all()
            try:
                while self.table.low_water(target + 1) < target:
                    if self.flusher.stop_now:
                        break
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    self.cond.wait(remaining)
                left = len(self.table)
                done = self.table.low_water(target + 1) >= target
            finally:
                self.flusher.flush_waiters -= 1
        if not done:
            err = self.counters.last_error
            raise StoreError(
                f"flush of namespace {self.namespace or 'default'!r} did not finish: "
                f"{left} entries are still dirty" + (f"; last store error: {err}" if err else "")
            )

    def close(self, timeout: float | None = None) -> None:
        with self.cond:
            if self.closed and not self.flusher.thread.is_alive():
                return
            # Refuse new writes first: a write accepted while close() flushes would
            # otherwise be left behind when the flusher stops.
            self.closed = True
            self.table.stage_limit = self.table.stage_cap = 0
        try:
            self.flush(timeout)
        finally:
            with self.cond:
                self.closed = True
                self.flusher.stopping = True
                if self.table:
                    self.flusher.stop_now = True  # flush gave up: the journal keeps the rest
                self.cond.notify_all()
            if self.flusher.thread is not threading.current_thread():
                self.flusher.thread.join(5.0)
            self.refresher.stop()
