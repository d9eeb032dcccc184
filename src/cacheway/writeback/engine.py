"""The write-back engine: accept writes into the dirty table; its flusher stores them.

Writes return as soon as they are in the dirty table (and, with a journal, appended and
synced per its fsync policy). One flusher thread per namespace writes batches of up to
``batch_size`` entries within ``max_delay`` seconds of a write. A failing batch is split
to isolate a poison entry; when every part fails the store is taken to be down and the
batch waits for a retry with exponential backoff. Only the flusher writes to the store,
one batch at a time, so a key never has two batches in flight.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .._engine import _DELETED, check_key, check_ttl
from .._refresh import ReadOptions
from ..backends.base import MISS, Backend
from ..errors import BackendError, Backpressure, ConfigError, StoreError
from ..policies import WriteBack
from ..serializers import Serializer
from ..stats import Counters
from ..stores.base import ADD, DELETE, NOTSET, SET, Op, Store
from .dirty import DirtyTable, Entry
from .flusher import Flusher

if TYPE_CHECKING:
    from .journal import Journal

__all__ = ["WriteBackEngine"]

# (key, kind, value, payload, delta) of one accepted write
_Item = tuple[str, int, Any, "bytes | None", int]
class _NeedRoom(Exception):
    """The dirty table is full and the caller holds stripe locks: wait without them."""


# (backend key, kind, value, payload) of a copy to write to a shared backend
_Publish = tuple[str, int, Any, "bytes | None"]

log = logging.getLogger("cacheway")


class WriteBackEngine(Flusher):
    """Write-back for one namespace."""

    answers_pending = True

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
    ) -> None:
        super().__init__(namespace, store, backend, serializer, ttl, counters, read=read)
        self.config = config
        self.journal = journal
        self._timer = timer
        self._table = table = DirtyTable(counters)
        self._staged = table.staged
        inline_copy = False  # set() writes a MemoryBackend copy itself (see _staged_set)
        if self._fast_memory():
            self.get = self._get_memory_wb  # type: ignore[method-assign]
            memory: Any = backend
            # One lock, the backend's own, guards the dirty table and the copies; with no
            # byte accounting to keep, set() can write its copy inline.
            inline_copy = memory.max_bytes is None
            self._mem_max = memory.max_entries
            self._mem_backend = memory
            self._lock = memory._lock
        else:
            self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._backend_set_raw = backend.set
        self._max_dirty = config.max_dirty
        self._batch_size = config.batch_size
        table.seq = journal.last_seq if journal is not None else 0
        if journal is None and inline_copy and self._validate is None:
            # set() stages writes: the journal (when there is one) needs its record
            # appended in order at the call, a shared or byte-counted backend is
            # written through its own set(), and row mode checks each value first.
            table.stage_limit = config.max_dirty
            table.drain()  # works out stage_cap
            self.set = self._staged_set()  # type: ignore[method-assign,assignment]
        self._local = backend.local
        # A shared backend with a clock (RedisBackend.publish) versions accepted writes.
        self._clock_publish: Callable[[list[_Publish], float | None], list[int]] | None = (
            getattr(backend, "publish", None) if not backend.local else None)
        self._rand = random.Random()
        self._last_log = 0.0
        self._start_flusher()

    def _start_flusher(self) -> None:
        self._through: set[str] = set()  # keys on_full="write_through" is writing
        self._flush_waiters = 0
        self._idle = True  # the flusher waits for a first write (no max_delay clock runs)
        self._blocked = 0
        self._stopping = False
        self._stop_now = False
        self._probe_at = 0.0
        self._probing = False
        self._thread = threading.Thread(
            target=self._run, name=f"cacheway-flusher-{self.namespace or 'default'}",
            daemon=True,
        )
        self._thread.start()

    # -- fork -------------------------------------------------------------------------
    def before_fork(self) -> None:
        # The child must not inherit the table lock held by a thread it will not have.
        self._lock.acquire()

    def after_fork_in_parent(self) -> None:
        self._lock.release()

    def after_fork_in_child(self) -> None:
        """The child of a fork gets its own empty dirty table (the parent flushes the
        entries it accepted, once), its own flusher thread and its own journal."""
        super().after_fork_in_child()
        try:
            if self.closed:
                return
            staging = self._table.stage_limit > 0
            self._table = table = DirtyTable(self.counters)
            self._staged = table.staged
            self._cond = threading.Condition(self._lock)  # no waiter of the parent's
            if self.journal is not None:
                self.journal = self.journal.for_child()
                table.seq = self.journal.last_seq
            if staging:
                table.stage_limit = self.config.max_dirty
                table.drain()
                self.set = self._staged_set()  # type: ignore[method-assign,assignment]
            self._start_flusher()
        finally:
            self._lock.release()

    # -- reads ------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        if key.__class__ is not str:
            check_key(key)
        if self.closed:
            raise self._closed()
        entry = self._table.peek(key)  # nothing is staged: the backend is not local
        if entry is not None:
            self.counters.hits += 1
            return default if entry.kind == DELETE else entry.value
        bkey = self.prefix + key
        return self._read_backend(key, bkey, default)

    def _get_memory_wb(self, key: str, default: Any = None) -> Any:
        # get() with MemoryBackend.get inlined (see Engine._get_memory). The copy comes
        # first: every accepted write sets or drops it under the table lock, and no fill
        # lands while its key is pending, so a live copy is the newest value. A pending
        # key without one (evicted, expired, deleted) is answered from the dirty table.
        if key.__class__ is not str:
            check_key(key)
        if self.closed:
            raise self._closed()
        if self._mem_space:
            item = self._mem_data.get(key)
            if item is not None and (item[1] is None or item[1] > self._mem_timer()):
                self.counters.hits += 1
                return item[0]
        else:
            item = self._mem_data.get(self.prefix + key)
            if item is not None and (item[1] is None or item[1] > self._mem_timer()):
                try:  # noqa: SIM105 - as in MemoryBackend.get
                    self._mem_data.move_to_end(self.prefix + key)
                except KeyError:
                    pass
                self.counters.hits += 1
                return item[0]
        entry = self._pending_entry(key)
        if entry is not None:
            self.counters.hits += 1
            return default if entry.kind == DELETE else entry.value
        return self._read_backend(key, self.prefix + key, default)

    def _pending_entry(self, key: str) -> Entry | None:
        """``key``'s newest pending entry, for a reader that does not hold the lock."""
        if self._staged:
            with self._lock:
                return self._table.pending(key)
        # Nothing staged: a write staged from now on is newer than this read.
        return self._table.peek(key)

    def _lookup_pending(self, key: str) -> Any:
        entry = self._pending_entry(key)
        if entry is None:
            return MISS
        return _DELETED if entry.kind == DELETE else entry.value

    def _fill_lock(self, stripe: int) -> Any:
        # A process-local backend's copies are written under the table lock.
        return self._cond if self._local else self._locks[stripe]

    def _can_fill(self, bkey: str, stripe: int, gen: int) -> bool:
        return self._gens[stripe] == gen and self._table.pending(bkey[len(self.prefix):]) is None

    # -- writes -----------------------------------------------------------------------
    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        # Engines that stage replace this with _staged_set() (see __init__).
        if self._key_needs_look(key):
            self._key(key)
        if self._validate is not None:
            value = self._validate(self.namespace, key, value, SET)
        payload, value = self._encode(value)  # the copy reads answer with
        self._set_unstaged(key, value, payload, self.ttl if ttl is None else check_ttl(ttl))

    def _staged_set(self) -> Callable[[str, Any, float | None], None]:
        """The hot path of set(): stage the write and set the memory copy, under one
        lock; the staged write reaches the dirty table at its next operation
        (DirtyTable.drain). A closure, because it reads its variables faster than a
        method reads attributes (and acquire/release cost less than ``with``)."""
        acquire, release = self._lock.acquire, self._lock.release
        cond, table = self._cond, self._table
        staged = table.staged
        extend = staged.extend
        encode = self._encode
        prefix, default_ttl = self.prefix, self.ttl
        mem, space, mem_timer = self._mem_data, self._mem_space, self._mem_timer
        mem_max, evict = self._mem_max, self._mem_backend._evict
        timer, last, unstaged = self._timer, (self._batch_size - 1) * 4, self._set_unstaged
        max_key, nul_ok, check = self._max_key, self._nul_ok, self._key
        engine = self

        def set(key: str, value: Any, ttl: float | None = None) -> None:
            if key.__class__ is not str or not key.isascii() or (
                    max_key is not None and len(key) > max_key) or (
                    not nul_ok and "\x00" in key):
                check(key)
            # The copy, not the caller's object: what the store would give back, and
            # immune to the caller changing the object later (value fidelity).
            payload, value = encode(value)
            ttl = default_ttl if ttl is None else check_ttl(ttl)
            acquire()
            try:
                n = len(staged)  # four slots per write
                if n < table.stage_cap:
                    extend((key, value, payload, ttl))
                    # MemoryBackend.set inlined (no max_bytes: sizes are not kept).
                    item = (value, None if ttl is None else mem_timer() + ttl, 0, 0.0)
                    if space:
                        mem[key] = item
                    else:
                        bkey = prefix + key
                        old = mem.get(bkey)
                        mem[bkey] = item
                        if old is not None:
                            mem.move_to_end(bkey)
                        elif mem_max is not None and len(mem) > mem_max:
                            evict()
                    if n == 0:
                        table.staged_born = timer()
                        if engine._idle:
                            cond.notify_all()  # start the max_delay clock
                    elif n == last:
                        cond.notify_all()  # a batch is ready
                    return
            finally:
                release()
            unstaged(key, value, payload, ttl)

        return set

    def _set_unstaged(self, key: str, value: Any, payload: bytes, ttl: float | None) -> None:
        # set() with a journal, a shared or byte-counted backend, or a full table.
        table = self._table
        dirty = table.dirty
        journal = self.journal
        with self._lock:
            if table.staged:
                table.drain()
            slow = (
                self.closed
                or not self._local
                or table.parked
                or self._through
                or len(dirty) + len(table.inflight) >= self._max_dirty
            )
            if not slow:
                if journal is None:
                    seq = table.seq + 1
                else:
                    seq = journal.append(self.namespace, key, SET, payload, 0)
                table.seq = seq
                entry = dirty.get(key)
                counters = self.counters
                if entry is None:
                    dirty[key] = Entry(key, SET, value, payload, 0, ttl, seq, self._timer())
                    table.took_room()
                    n = len(dirty)
                    if n == 1 or n == self._batch_size:
                        self._cond.notify_all()
                else:
                    entry.absorb(SET, value, payload, 0, ttl, seq)
                    counters.coalesced += 1
                counters.writes += 1
                # No generation bump: no fill lands while the key is pending, and the
                # flusher bumps it when the store acknowledges the write.
                bkey = self.prefix + key
                try:
                    self._backend_set_raw(bkey, value, payload, ttl, None)
                except Exception:  # noqa: BLE001 - the general path logs, drops the copy
                    self._backend_set(bkey, value, payload, ttl, None)
        if slow:
            self._accept([(key, SET, value, payload, 0)], ttl)
        elif journal is not None:
            journal.wait(seq)

    def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        ttl = None if ttl is None else check_ttl(ttl)
        items: list[_Item] = []
        for k, v in mapping.items():
            self._key(k)
            if self._validate is not None:
                v = self._validate(self.namespace, k, v, SET)
            payload, v = self._encode(v)
            items.append((k, SET, v, payload, 0))
        if items:
            self._accept(items, ttl if ttl is not None else self.ttl)

    def delete(self, key: str) -> None:
        self._accept([(self._key(key), DELETE, None, None, 0)], self.ttl)

    def delete_many(self, keys: Iterable[str]) -> None:
        items: list[_Item] = [
            (self._key(k), DELETE, None, None, 0) for k in dict.fromkeys(keys)
        ]
        if items:
            self._accept(items, self.ttl)

    def incr(self, key: str, delta: int = 1) -> int:
        key = self._key(key)
        delta = self._check_delta(key, delta)
        loaded = MISS
        stripe = self._stripe(self.prefix + key)
        seen = -1  # the stripe's generation when `loaded` was read
        deadline: float | None = None
        while True:
            locks = self._shared_locks([key])
            publish: list[_Publish] | None = None if self._local else []
            through: list[_Item] = []
            need_room = done = False
            try:
                with self._cond:
                    entry = self._table.pending(key)
                    # A value read before another write of the key was accepted (and
                    # maybe already flushed) is stale: read again.
                    fresh = loaded is not MISS and self._gens[stripe] == seen
                    if entry is not None or fresh:
                        current = (0 if entry.kind == DELETE else entry.value
                                   ) if entry is not None else loaded
                        new = self._as_counter(key, current) + delta
                        try:
                            seq = self._accept_locked(
                                [(key, ADD, new, self._dumps(new), delta)], self.ttl, publish,
                                through)
                            done = True
                        except _NeedRoom:
                            need_room = True
                if publish:
                    self._publish(publish, self.ttl)
                if through:
                    self._write_through(through, self.ttl)
            finally:
                for lock in locks:
                    lock.release()
            if done:
                break
            if need_room:
                deadline = self._room_outside(1, deadline)
                continue
            # Not pending: read it (may load from the store) outside the lock, then retry.
            seen = self._gens[stripe]
            loaded = self.get(key)
            self._as_counter(key, loaded)
        self._durable(seq)
        return int(new)

    def _accept(self, items: list[_Item], ttl: float | None) -> None:
        through: list[_Item] = []  # new keys on_full="write_through" sends to the store
        if self._local:
            with self._cond:
                seq = self._accept_locked(items, ttl, None, through)
            if through:
                self._write_through(through, ttl)
        else:
            # A shared backend is written outside the table lock (a network round trip
            # must not stall every writer), under the keys' stripe locks so that writers
            # of one key still reach it in the order the dirty table took them. Waiting
            # for room happens without the stripe locks: the flusher needs them to ack.
            deadline: float | None = None
            while True:
                locks = self._shared_locks([it[0] for it in items])
                publish: list[_Publish] = []
                need_room = False
                try:
                    with self._cond:
                        try:
                            seq = self._accept_locked(items, ttl, publish, through)
                        except _NeedRoom:
                            need_room = True
                    if not need_room:
                        self._publish(publish, ttl)
                        if through:
                            self._write_through(through, ttl)
                finally:
                    for lock in locks:
                        lock.release()
                if not need_room:
                    break
                deadline = self._room_outside(len(items), deadline)
        self._durable(seq)

    def _room_outside(self, n: int, deadline: float | None) -> float:
        """Wait (holding no stripe lock) until ``n`` more entries fit; the deadline."""
        if deadline is None:
            deadline = time.monotonic() + self.config.block_timeout
        with self._cond:
            self._wait_room(n, deadline)
        return deadline

    def _publish(self, publish: list[_Publish], ttl: float | None) -> None:
        """Copies of accepted writes on a shared backend, in one round trip where possible.
        A backend with a clock (Redis) stamps each with a version as it takes it, and the
        entries carry those versions to the store, which applies them set-if-newer: the
        last write accepted wins across processes, whichever flushes first. The caller
        holds the keys' stripe locks, which the flusher needs to read an entry's version."""
        if self._clock_publish is not None:
            # A counter's copy would be this process's sum only: a tombstone instead, and
            # the next read loads the store's total.
            items = [(bkey, SET if kind == SET else DELETE, value, payload)
                     for bkey, kind, value, payload in publish]
            try:
                versions = self._clock_publish(items, ttl)
            except BackendError as exc:
                log.warning("cacheway: backend write failed (%r); dropping the copies (these "
                            "writes reach the store without versions)", exc)
                for bkey, _, _, _ in publish:
                    self._backend_drop(bkey)
                return
            cut = len(self.prefix)
            with self._cond:
                for (bkey, _, _, _), version in zip(publish, versions):
                    entry = self._table.peek(bkey[cut:])
                    if entry is not None:
                        entry.version = version
            return
        sets = [(bkey, value, payload, None) for bkey, kind, value, payload in publish
                if kind != DELETE]
        drops = [bkey for bkey, kind, _, _ in publish if kind == DELETE]
        try:
            if sets:
                self.backend.set_many(sets, ttl)
            if drops:
                self.backend.delete_many(drops)
        except Exception as exc:  # noqa: BLE001 - drop what may be stale, keep the writes
            log.warning("cacheway: backend write failed (%r); dropping the copies", exc)
            for bkey, _, _, _ in publish:
                self._backend_drop(bkey)

    def _durable(self, seq: int) -> None:
        if self.journal is not None:
            self.journal.wait(seq)

    def _accept_locked(
        self, items: list[_Item], ttl: float | None, publish: list[_Publish] | None = None,
        through: list[_Item] | None = None,
    ) -> int:
        if self.closed:
            raise self._closed()
        table = self._table
        deadline: float | None = None
        while True:
            table.drain()  # staged writes precede these
            if self._through and any(it[0] in self._through for it in items):
                # A key being written through waits: its write must reach the store first.
                self._cond.wait()
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
            rest = self._make_room(need, items, through, publish is not None, deadline)
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
                self._release_through(through)
                through.clear()
            raise

    def _put_locked(self, items: list[_Item], ttl: float | None,
                    publish: list[_Publish] | None) -> int:
        table = self._table
        was_empty = not table.dirty
        now = self._timer()
        journal = self.journal
        ns = self.namespace
        gens, counters, prefix = self._gens, self.counters, self.prefix
        seq = table.seq
        for key, kind, value, payload, delta in items:
            if journal is not None:
                body = payload if kind == SET and payload is not None else b""
                seq = journal.append(ns, key, kind, body, delta)
            else:
                seq += 1
            table.seq = seq  # a later item failing must not hide this one from flush()
            if table.put(key, kind, value, payload, delta, ttl, seq, now):
                counters.coalesced += 1
            counters.writes += 1
            bkey = prefix + key
            gens[self._stripe(bkey)] += 1
            # The backend sees the write at once (other processes sharing it too);
            # only the store lags. Reads here answer from the dirty table first.
            if publish is not None:
                publish.append((bkey, kind, value, payload))
            elif kind == DELETE:
                self._backend_drop(bkey)
            else:
                self._backend_set(bkey, value, payload, ttl, None)
        table.seq = seq
        if was_empty or len(table.dirty) == self.config.batch_size:
            self._cond.notify_all()  # start the max_delay clock / a full batch is ready
        return seq

    def _make_room(self, need: list[_Item], items: list[_Item], through: list[_Item] | None,
                   no_wait: bool, deadline: float) -> list[_Item] | None:
        """Back-pressure at max_dirty for the ``need`` items that take room: raise; wait
        (then None: the caller looks again); or reserve the keys with nothing pending for
        the caller to write straight to the store once it has let go of the table lock
        (``through``) and return the items still to accept into the dirty table."""
        cfg = self.config
        table = self._table
        if cfg.on_full == "raise":
            raise Backpressure(
                f"{len(table)} dirty entries reached max_dirty={cfg.max_dirty}; "
                "the store is not keeping up (flush or raise max_dirty)"
            )
        if cfg.on_full == "write_through" and through is not None:
            # A key with a write in flight keeps its place in the queue (written around
            # it, the newer write could land first): it waits for room like "block".
            held = table.held
            fresh = {it[0] for it in need if it[0] not in held}
            need = [it for it in need if it[0] not in fresh]
            if fresh and (not need or len(table) + len(need) <= cfg.max_dirty):
                through.extend(it for it in items if it[0] in fresh)
                self._through.update(fresh)
                table.paused += 1  # no staged write may slip past the reservation
                table.drain()
                return [it for it in items if it[0] not in fresh]
        if no_wait:
            raise _NeedRoom
        self._wait_room(len(need), deadline)
        return None

    def _wait_room(self, new_keys: int, deadline: float) -> None:
        cfg, table = self.config, self._table
        if new_keys > cfg.max_dirty:
            raise Backpressure(
                f"a write of {new_keys} new keys can never fit max_dirty={cfg.max_dirty}: "
                "split it or raise max_dirty")
        self._blocked += 1
        self._cond.notify_all()
        try:
            while len(table) + new_keys > cfg.max_dirty:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed:
                    raise Backpressure(
                        f"blocked {cfg.block_timeout:g}s with {len(table)} dirty entries "
                        f"(max_dirty={cfg.max_dirty}); the store is not keeping up"
                    )
                self._cond.wait(remaining)
        finally:
            self._blocked -= 1

    def _write_through(self, items: list[_Item], ttl: float | None) -> None:
        """on_full="write_through": write keys reserved by _make_room to the store, holding
        no lock (a slow store must not stall the writers of other keys); writers of these
        keys wait for the reservation, so order holds."""
        ops = self._versioned([Op(self.namespace, k, kind, p, d, v)
                               for k, kind, v, p, d in items])
        results: list[Any] | None = None
        try:
            results = self.store.apply(ops)
        finally:
            with self._cond:
                for i, (key, kind, value, payload, _) in enumerate(items):
                    bkey = self.prefix + key
                    # A fill that read the store before this write must not land after it.
                    self._gens[self._stripe(bkey)] += 1
                    if results is None or kind == DELETE:
                        # On failure the outcome is unknown: no copy may stay.
                        self._backend_drop(bkey, None if results is None else results[i].version)
                        continue
                    res = results[i]
                    if not res.applied:
                        continue  # the store kept a newer write, and a newer copy went out
                    v = value if kind != ADD or res.value in (None, NOTSET) else res.value
                    self._backend_set(bkey, v, payload if kind == SET else None, ttl,
                                      res.version)
                self._release_through(items)
                if results is not None:
                    self.counters.writes += len(ops)
                    self.counters.store_writes += len(ops)
                self._cond.notify_all()

    def _release_through(self, items: list[_Item]) -> None:
        self._through.difference_update(it[0] for it in items)
        self._table.paused -= 1
        self._cond.notify_all()

    # -- flush, pending, close ----------------------------------------------------------
    def pending(self) -> int:
        with self._lock:
            return len(self._table)

    def flush(self, timeout: float | None = None) -> None:
        if threading.current_thread() is self._thread:
            raise ConfigError(
                "flush() called from the flusher thread (an on_dead_letter callback?) "
                "would wait for itself"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._table.drain()
            target = self._table.seq
            self._flush_waiters += 1
            self._cond.notify_all()
            try:
                while self._table.low_water(target + 1) < target:
                    if self._stop_now:
                        break
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    self._cond.wait(remaining)
                left = len(self._table)
                done = self._table.low_water(target + 1) >= target
            finally:
                self._flush_waiters -= 1
        if not done:
            err = self.counters.last_error
            raise StoreError(
                f"flush of namespace {self.namespace or 'default'!r} did not finish: "
                f"{left} entries are still dirty" + (f"; last store error: {err}" if err else "")
            )

    def close(self, timeout: float | None = None) -> None:
        with self._cond:
            if self.closed and not self._thread.is_alive():
                return
            # Refuse new writes first: a write accepted while close() flushes would
            # otherwise be left behind when the flusher stops.
            self.closed = True
            self._table.stage_limit = self._table.stage_cap = 0
        try:
            self.flush(timeout)
        finally:
            with self._cond:
                self.closed = True
                self._stopping = True
                if self._table:
                    self._stop_now = True  # flush gave up: the journal keeps the rest
                self._cond.notify_all()
            if self._thread is not threading.current_thread():
                self._thread.join(5.0)
            self._stop_refresher()
