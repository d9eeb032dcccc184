"""The app-process side of distributed write-behind: accept writes into Redis Streams.

A ``set``/``set_many``/``delete``/``delete_many``/``incr`` returns once one Lua script
per partition (:data:`~cacheway.queue.scripts.ACCEPT`) has drawn the write's version
from the partition's clock, written the cached copy (when the cache's backend is a
RedisBackend on the queue's Redis: the copy and the entry are then one atomic step) and
XADDed the entry. With any other backend the copy is set after the script returns.
Consumers (:mod:`.consumer`: in this process when ``flush_in_process``, else ``cacheway
worker``) apply the entries to the store.

Reads: the copy first. This process remembers its own writes the store has not been
seen to apply (``pending``): with a local backend reads answer from them first, with
the shared Redis copy a read that misses does (a copy that was evicted, a delete's
tombstone), and a fill never lands on a key with a pending write (its loaded row is
older than the write). Other processes see a write through the shared copy.

``expire=``: each write carries its stamp (``Engine.expires_at()``) into its stream
entry, and so into the store's ``expires_at`` column; its copy lives until the stamp at
the latest, and a pending write past its stamp reads as absent (:mod:`.accept`,
:mod:`.entries`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .._refresh import ReadOptions
from ..backends.base import MISS, Backend
from ..core.dirty import Entry
from ..core.keys import check_keys, check_mapping
from ..engine.read import Engine
from ..errors import BackendError, ConfigError, StoreError
from ..policies import WriteBack
from ..serializers import JSONSerializer, Serializer
from ..stats import Counters
from ..stores.base import ADD, DELETE, SET, Loaded, Store
from ..typed import Codec
from .accept import Acceptor, Item
from .connect import Scripts, connect, redis_errors
from .consumer import Consumer
from .copies import deleted_at, read_copies
from .layout import Names, seq_of
from .status import PartitionStatus, StatusReader, queue_status

__all__ = ["QueueWriteBackEngine"]

log = logging.getLogger("cacheway")


class QueueWriteBackEngine(Engine):
    """Write-behind through Redis Streams (``WriteBack(queue="redis://...")``)."""

    def __init__(
        self, namespace: str, store: Store, backend: Backend, serializer: Serializer,
        ttl: float | None, counters: Counters, policy: WriteBack, *,
        timer: Any = None, read: ReadOptions | None = None, codec: Codec[Any] | None = None,
        expire: float | None = None,
    ) -> None:
        super().__init__(namespace, store, backend, serializer, ttl, counters, read=read,
                         codec=codec, expire=expire)
        if policy.queue is None:
            raise ConfigError("QueueWriteBackEngine needs WriteBack(queue=...)")
        if not getattr(store, "atomic_add", True):
            raise ConfigError(f"{store!r} does not add counter deltas itself: a queue= "
                              "write-back applies counters as deltas and needs a store "
                              "that does (SQLiteStore, PostgresStore, SQLAlchemyStore)")
        self.policy = policy
        self.names = Names(policy.queue_name, policy.partitions)
        # No transport-level retry: redis-py resends a command whose reply was lost,
        # and an ACCEPT that ran twice queues its writes twice (a counter counted twice).
        conn = connect(policy.queue, resend=False)
        self.client: Any = conn.client
        self._where, self._owned = conn.where, conn.owned
        #: the queue is on a Redis Cluster: the copies ACCEPT writes are its own, in
        #: each partition's slot (``Names.copy``), and reads look there before the store
        self.cluster = conn.cluster
        self.scripts = Scripts(conn.client)
        self._redis_errors = redis_errors()
        self._json = type(serializer) is JSONSerializer and codec is None
        #: the RedisBackend key prefix when the copies live on the queue's Redis
        self.copy_prefix = None if self.cluster else self._shared_prefix(backend)
        self._script_copies = self.copy_prefix is not None or self.cluster
        self.acceptor = Acceptor(
            conn.client, self.scripts, self.names, namespace, self.prefix,
            copy_prefix=self.copy_prefix, cluster=self.cluster, json=self._json,
            dumps=self.dumps, where=self._where, errors=self._redis_errors)
        self._plock = threading.Lock()  # the pending dict, last and done seqs
        self._pending: dict[str, Entry] = {}
        self._last: dict[int, int] = {}  # partition -> last seq XADDed by this process
        self._done: dict[int, int] = {}  # partition -> applied seq, as last read
        self._prune_at = 1024
        if self.copy_prefix is None:
            self.pending_entry = self._pending.get
        self.bind_get()
        self.status = StatusReader(self._read_status)
        self.consumer: Consumer | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if policy.flush_in_process:
            self._start_consumer()

    def _shared_prefix(self, backend: Backend) -> str | None:
        caps = self.backend_caps
        prefix = getattr(backend, "prefix", None)
        other = getattr(backend, "client", None)
        if caps.local or caps.publish is None or other is None or not isinstance(prefix, str):
            return None
        try:
            a = other.connection_pool.connection_kwargs
            b = self.client.connection_pool.connection_kwargs
        except AttributeError:
            return None
        same = all(a.get(k) == b.get(k) for k in ("host", "port", "db", "path"))
        return prefix if same else None

    def _start_consumer(self) -> None:
        policy = self.policy
        self._stop = threading.Event()
        self.consumer = Consumer(
            self.client, self.names, self.store, batch_size=policy.batch_size,
            retry=policy.retry, claim_after=policy.claim_after, counters=self.counters,
            on_dead_letter=policy.on_dead_letter)
        self._thread = threading.Thread(target=self.consumer.run, args=(self._stop,),
                                        name="cacheway-queue-consumer", daemon=True)
        self._thread.start()

    # -- reads ----------------------------------------------------------------------------
    def can_fill(self, bkey: str, stripe: int, gen: int) -> bool:
        """No fill lands on a key with a pending write of this process (the row it
        loaded is older than the write)."""
        return self.gens[stripe] == gen and bkey[len(self.prefix):] not in self._pending

    def miss(self, key: str, bkey: str, default: Any) -> Any:
        entry = self._pending.get(key)
        if entry is not None:
            self.counters.hits += 1
            if entry.kind == DELETE or self.ended(entry) or self._deleted_since({key: entry}):
                return default
            return entry.value
        return super().miss(key, bkey, default)

    def _deleted_since(self, entries: dict[str, Entry]) -> set[str]:
        """The keys of ``entries`` (this process's pending writes) that another process
        deleted after them: their shared copy is a tombstone of a later version. Only
        the shared copy knows (this process never saw the delete); without one, or when
        it cannot be read, the pending write stands."""
        if self.copy_prefix is None:
            return set()
        ask = {k: e.version for k, e in entries.items() if e.kind != DELETE}
        return self._deleted_after(ask)

    def _deleted_after(self, versions: dict[str, int | None]) -> set[str]:
        """The keys whose shared copy records a delete of a later version than theirs
        (see :func:`.copies.deleted_at`); none when the copies cannot be read."""
        if self.copy_prefix is None or not versions:
            return set()
        ask = list(versions)
        try:
            raws = self.client.mget([self.copy_prefix + self.prefix + k for k in ask])
        except self._redis_errors as exc:
            self.backend_down(BackendError(f"copy read on {self._where} failed: "
                                           f"{type(exc).__name__}: {exc}"))
            return set()
        return {k for k, raw in zip(ask, raws) if deleted_at(raw) > (versions[k] or 0)}

    def fetch_rows(self, keys: list[str]) -> dict[str, Loaded]:
        """The store's rows, less those an acknowledged delete replaced that the store
        has not applied yet (another process's: its tombstone is in the shared copy)."""
        rows = super().fetch_rows(keys)
        for key in self._deleted_after({k: row.version for k, row in rows.items()}):
            del rows[key]
        return rows

    def _load_many(self, missing: list[str], out: dict[str, Any]) -> None:
        pending = self._pending
        rest = []
        mine: dict[str, Entry] = {}
        for key in missing:
            entry = pending.get(key)
            if entry is None:
                rest.append(key)
            elif entry.kind != DELETE and not self.ended(entry):
                mine[key] = entry
        if mine:
            deleted = self._deleted_since(mine)
            for key, entry in mine.items():
                if key not in deleted:
                    out[key] = entry.value
        if rest and self.cluster:
            copies = self._cluster_copies(rest)
            rest = [k for k in rest if k not in copies]
            for key, row in copies.items():
                if row is not None:
                    out[key] = self.decode(row)[0]
        if rest:
            super()._load_many(rest, out)

    def fetch(self, key: str) -> Loaded | None:
        """On Redis Cluster, the queue's copy of ``key`` (the last accepted write, applied
        or not) before the store's row (with ``expire=``, ending when the copy does)."""
        if self.cluster:
            copies = self._cluster_copies([key])
            if key in copies:
                return copies[key]
        return super().fetch(key)

    def _cluster_copies(self, keys: list[str]) -> dict[str, Loaded | None]:
        try:
            return read_copies(self.client, self.names, self.namespace, keys,
                               expiry=self.expiry is not None)
        except self._redis_errors as exc:
            raise BackendError(f"queue copy read on {self._where} failed: "
                               f"{type(exc).__name__}: {exc}") from exc

    # -- writes ---------------------------------------------------------------------------
    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        key, copy, payload, ttl_ = self.prepare(key, value, ttl)
        self._write([(key, SET, copy, payload, 0, ttl_)])

    def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        items: dict[str, Item] = {}
        for key, value in check_mapping(mapping).items():
            k, copy, payload, ttl_ = self.prepare(key, value, ttl)
            items[k] = (k, SET, copy, payload, 0, ttl_)
        if items:
            self._write(list(items.values()))

    def delete(self, key: str) -> None:
        self.delete_many([key])

    def delete_many(self, keys: Iterable[str]) -> None:
        checked = list(dict.fromkeys([self.check_write_key(k) for k in check_keys(keys)]))
        if self.closed:
            raise self.closed_error()
        if checked:
            self._write([(k, DELETE, None, None, 0, None) for k in checked])

    def incr(self, key: str, delta: int = 1) -> int:
        key = self.check_write_key(key)
        delta = self.check_delta(key, delta)
        if self.closed:
            raise self.closed_error()
        return int(self._write([(key, ADD, None, None, delta, self.ttl)])[0])

    def _base(self, key: str, *, copy: bool) -> int:
        """A counter's value before an add: this process's pending write (0 once its data
        ended), else (with ``copy``) the cached copy, else the store's row."""
        entry = self._pending.get(key)
        if entry is not None:
            if entry.kind == DELETE or self.ended(entry):
                return 0
            return self.as_counter(key, entry.value)
        if copy:
            value = self.cached(self.prefix + key)
            if value is not MISS:
                return self.as_counter(key, value)
        row = self.fetch(key)
        return 0 if row is None else self.as_counter(key, self.decode(row)[0])

    def _write(self, items: list[Item]) -> list[str]:
        """Accept ``items``; returns each one's counter value ('' unless ADD)."""
        prefix = self.prefix
        bkeys = [prefix + it[0] for it in items]
        locks = self.locks_for(bkeys)
        for lock in locks:
            lock.acquire()
        try:
            for bkey in bkeys:
                self.gens[self.stripe(bkey)] += 1
            bases: dict[int, int] = {}
            if not self._script_copies or not self._json:
                # The script cannot read the copy: the counter's value comes from here.
                for i, it in enumerate(items):
                    if it[1] == ADD:
                        bases[i] = self._base(it[0], copy=self.copy_prefix is None)
            stamp = self.expires_at()
            replies = self.acceptor.accept(items, bases, stamp,
                                           lambda k: self._base(k, copy=False))
            now = time.monotonic()
            with self._plock:
                for it, (version, seq, counter) in zip(items, replies):
                    key, kind, value, payload, delta, ttl = it
                    if kind == ADD:
                        value = int(counter)
                    entry = Entry(key, kind, value, payload, delta, ttl, seq, now)
                    entry.version = version
                    entry.expires_at = stamp
                    self._pending[key] = entry
                    p = self.names.partition(self.namespace, key)
                    if seq > self._last.get(p, 0):
                        self._last[p] = seq
            if self.copy_prefix is None:
                # Set after the script, with the write's version: a write accepted
                # earlier and copied later (another process's) does not overwrite it.
                for bkey, it, (version, _, counter) in zip(bkeys, items, replies):
                    kind = it[1]
                    if kind == DELETE:
                        self.backend_drop(bkey, version)
                    elif kind == ADD:
                        n = int(counter)
                        self.backend_set(bkey, n, self.dumps(n), it[5], version)
                    else:
                        self.backend_set(bkey, it[2], it[3], it[5], version)
            self.counters.writes += len(items)
        finally:
            for lock in reversed(locks):
                lock.release()
        if len(self._pending) > self._prune_at:
            self._prune()
            self._prune_at = 2 * len(self._pending) + 1024
        return [r[2] for r in replies]

    # -- flush, pending, close ------------------------------------------------------------
    def _read_done(self, parts: Iterable[int]) -> dict[int, int]:
        parts = list(parts)
        with self.client.pipeline(transaction=False) as pipe:
            for p in parts:
                pipe.get(self.names.done(p))
            raw = pipe.execute()
        done = {p: seq_of(r) if r else 0 for p, r in zip(parts, raw)}
        with self._plock:
            for p, s in done.items():
                if s > self._done.get(p, 0):
                    self._done[p] = s
            return dict(self._done)

    def _prune(self) -> None:
        """Forget pending writes the store has applied."""
        try:
            done = self._read_done(range(self.names.partitions))
        except self._redis_errors as exc:
            log.warning("cacheway: reading the queue's applied marks failed: %r", exc)
            return
        with self._plock:
            for key, entry in list(self._pending.items()):
                if entry.last_seq <= done.get(self.names.partition(self.namespace, key), 0):
                    del self._pending[key]

    def flush(self, timeout: float | None = None) -> None:
        """Wait until the consumers applied every write this process accepted before
        the call (``{q:pN}:done`` at or past the last entry XADDed here)."""
        if self._thread is not None and threading.current_thread() is self._thread:
            raise ConfigError("flush() called from the queue consumer thread would wait "
                              "for itself")
        with self._plock:
            target = dict(self._last)
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                done = self._read_done(target)
            except self._redis_errors as exc:
                raise BackendError(f"flush: reading the queue's applied marks on "
                                   f"{self._where} failed: {exc}") from exc
            behind = [p for p, s in target.items() if done.get(p, 0) < s]
            if not behind:
                self._prune()
                return
            if deadline is not None and time.monotonic() >= deadline:
                err = self.counters.last_error
                raise StoreError(
                    f"flush of namespace {self.namespace or 'default'!r} did not finish: "
                    f"{self.pending()} entries are still dirty ({len(behind)} queue "
                    "partitions not applied yet)" + (f"; last store error: {err}" if err else "")
                    + ("" if self._thread is not None else
                       "; they stay queued in Redis for a consumer (flush_in_process=False: "
                       "is a `cacheway worker` running?)"))
            time.sleep(delay)
            delay = min(0.02, delay * 2)

    def queue_stats(self, wait: float | None = None) -> list[PartitionStatus]:
        """Depth and lag of every partition of the queue (every process's writes, not
        only this one's): see :func:`cacheway.queue.queue_status`. ``wait``: at most so
        many seconds (read in a thread), else the last reading."""
        if wait is not None:
            return self.status.get(wait)
        return self._read_status()

    def pending_known(self) -> int:
        """:meth:`pending` without asking Redis which writes were applied since."""
        return len(self._pending)

    def _read_status(self) -> list[PartitionStatus]:
        try:
            return queue_status(self.client, self.names)
        except self._redis_errors as exc:
            raise BackendError(f"reading the queue's depth on {self._where} failed: "
                               f"{type(exc).__name__}: {exc}") from exc

    def pending(self) -> int:
        """Keys this process wrote whose newest write the consumers have not applied
        (not the streams' length: other processes' writes are not counted)."""
        if self._pending:
            self._prune()
        return len(self._pending)

    def close(self, timeout: float | None = None) -> None:
        """Flush (up to ``timeout``), then stop the in-process consumer. Without one
        (``flush_in_process=False``), ``close()`` does not wait: accepted writes are
        durable in Redis and wait there for a worker; ``close(timeout)`` waits up to
        ``timeout`` for the workers to apply this process's writes and raises
        :class:`StoreError` when they did not (the writes stay queued)."""
        if self.closed:
            return
        try:
            if self._thread is not None or timeout is not None:
                self.flush(timeout)
        finally:
            self.closed = True
            self.status.close()
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=10.0)
            super().close(timeout)
            if self._owned:
                self.client.close()

    def after_fork_in_child(self) -> None:
        """The child runs its own consumer (the parent's thread is not in it)."""
        super().after_fork_in_child()
        self._plock = threading.Lock()
        self.status.after_fork_in_child()
        if self._thread is not None:
            self._start_consumer()
