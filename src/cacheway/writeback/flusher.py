"""The flusher thread of a write-back engine: batches, retries, poison isolation.

One flusher thread per namespace writes batches of up to ``batch_size`` entries within
``max_delay`` seconds of a write. A failing batch is split to isolate a poison entry;
when every part fails the store is taken to be down and the batch waits for a retry with
exponential backoff. Only the flusher writes to the store, one batch at a time, so a key
never has two batches in flight.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from .._engine import _STRIPES, Engine
from ..errors import CachewayError, InvalidWriteError, JournalError
from ..policies import WriteBack
from ..stores.base import ADD, DELETE, LATENESS, NOTSET, SET, JournalMark, make_op
from .dirty import DirtyTable, Entry

if TYPE_CHECKING:
    from .journal import Journal

__all__ = ["Flusher"]

log = logging.getLogger("cacheway")

_MASK = _STRIPES - 1
#: seconds between probes of a store that is down (see Flusher._probe)
PROBE_EVERY = 1.0


class Flusher(Engine):
    """The flusher half of :class:`~cacheway.writeback.engine.WriteBackEngine`."""

    config: WriteBack
    journal: Journal | None
    _table: DirtyTable
    _cond: threading.Condition
    _timer: Callable[[], float]
    _rand: random.Random
    _flush_waiters: int
    _idle: bool
    _blocked: int
    _stopping: bool
    _stop_now: bool
    _last_log: float
    _local: bool
    _probe_at: float  # when the next probe of a store that is down may go
    _probing: bool  # the batch handed to _write is a probe
    _clock_publish: Any  # RedisBackend.publish of a shared backend with a clock, or None

    def _shared_locks(self, keys: list[str]) -> list[Any]:
        if self._local:
            return []
        locks = self._locks_for([self.prefix + k for k in keys])
        for lock in locks:
            lock.acquire()
        return locks

    def _run(self) -> None:
        while True:
            with self._cond:
                batch = self._next_batch()
            if batch is None:
                return
            try:
                self._write(batch)
            except BaseException:
                log.exception("cacheway: flusher of %r crashed", self.namespace or "default")
                with self._cond:
                    for entry in batch:
                        if self._table.inflight.get(entry.key) is entry:
                            self._table.park(entry, self._timer() + 1.0)
                    self._cond.notify_all()

    def _next_batch(self) -> list[Entry] | None:
        cfg, table = self.config, self._table
        while True:
            table.fill(cfg.batch_size)
            if self._stop_now:
                return None
            now = self._timer()
            timeout: float | None = None
            if table.dirty or table.parked:
                oldest = table.oldest_born()
                due = oldest is not None and (
                    now - oldest >= cfg.max_delay
                    or len(table.dirty) >= cfg.batch_size
                    or self._flush_waiters > 0
                    or self._blocked > 0
                    or self._stopping
                )
                if due or table.ready_parked(now):
                    batch = table.take(cfg.batch_size, now)
                    if batch:
                        return batch
                wakes = []
                if oldest is not None:
                    wakes.append(oldest + cfg.max_delay)
                nxt = table.next_parked()
                if nxt is not None:
                    wakes.append(nxt)
                    if nxt - now > PROBE_EVERY:
                        # Backing off for longer than a probe interval: one parked entry
                        # alone tells, once a second, whether the store is back.
                        if now >= self._probe_at:
                            self._probe_at = now + PROBE_EVERY
                            self._probing = True
                            return [table.take_one_parked()]
                        wakes.append(self._probe_at)
                if wakes:
                    timeout = max(0.0005, min(wakes) - now)
            elif self._stopping:
                return None
            self._idle = timeout is None
            try:
                self._cond.wait(timeout)
            finally:
                self._idle = False

    def _write(self, batch: list[Entry]) -> None:
        """Write ``batch``; when it fails, find out whether the store is down or refuses
        some entries, and isolate those by bisection.

        A failing batch of several entries is probed with up to three of its entries alone:
        one that goes through proves the store up, and the rest is then bisected down to
        the entries that fail on their own, however many there are (two refused entries
        in different halves used to make both halves fail, which read as "store down" and
        spent every entry's retry budget). When every probe fails, the store is taken to be
        down and the whole batch waits for a retry."""
        if self._probing:
            self._probing = False
            self._probe(batch[0])
            return
        if any(e.attempts for e in batch):
            self.counters.retries += 1
            self._rand.shuffle(batch)  # vary the probes and the halves
        exc = self._try(batch)
        if exc is None:
            return
        if len(batch) == 1:
            if not _permanent(exc):
                self._store_down()
            self._failed(batch, exc)
            return
        rest = list(batch)
        up = False
        for entry in self._rand.sample(batch, min(3, len(batch))):
            probe_exc = self._try([entry])
            rest.remove(entry)
            if probe_exc is None:
                up = True
                break
            if _permanent(probe_exc):
                self._failed([entry], probe_exc)  # refused for good: dead-lettered now
            else:
                rest.append(entry)  # may be the store: tried again with the rest
                exc = probe_exc
        if not up:
            if rest:
                # Not one of these was refused alone: they wait for a retry, whatever
                # error the batch or another entry's probe saw.
                self._store_down()
                self._failed(rest, exc, alone=False)
            return
        failing: list[list[Entry]] = [rest] if rest else []
        while failing:
            part = failing.pop()
            exc = self._try(part)
            if exc is None:
                continue
            if len(part) == 1:
                self._failed(part, exc)
                continue
            mid = len(part) // 2
            failing.append(part[mid:])
            failing.append(part[:mid])

    def _probe(self, entry: Entry) -> None:
        """A parked entry tried alone while the others back off: when it goes through,
        the store is back and every parked entry is retried now (an outage of seconds
        ends in about a second, not after a backoff grown to ``Retry.max_delay``). A
        failed probe is not an attempt: it keeps its place and its retry time."""
        exc = self._try([entry])
        if exc is None:
            with self._cond:
                for parked in self._table.parked.values():
                    parked.not_before = 0.0
                self._cond.notify_all()
        elif _permanent(exc):
            self._failed([entry], exc)
        else:
            with self._cond:
                self._table.park(entry, entry.not_before)
                self._cond.notify_all()

    def _store_down(self) -> None:
        if self.counters.store_down_since is None:
            self.counters.store_down_since = time.time()

    def _try(self, part: list[Entry]) -> Exception | None:
        part = sorted(part, key=_last_seq)
        ns = self.namespace
        # A writer on a shared backend sets its entry's version after the backend took the
        # copy, holding the key's stripe lock all along: read versions under those locks.
        locks = self._shared_locks([e.key for e in part])
        try:
            versions = [e.version for e in part]
        finally:
            for lock in locks:
                lock.release()
        ops = [make_op((ns, e.key, e.kind, e.payload, e.delta, e.value, v))
               for e, v in zip(part, versions)]
        mark = None
        journal = self.journal
        if journal is not None:
            with self._cond:
                low = self._table.low_water(self._table.seq + 1, {e.key: e for e in part})
            mark = JournalMark(journal.id, low, [e.last_seq for e in part])
        # Once the batch is older than max_delay, the store may work harder to get it
        # through (see LATENESS).
        deadline, timer = min(map(_born, part)) + self.config.max_delay, self._timer
        LATENESS.late = lambda: timer() > deadline
        started = time.perf_counter()
        try:
            results = self.store.apply(ops, journal=mark)
        except Exception as exc:  # noqa: BLE001 - any store failure is retried, never lost
            self.counters.flush_errors += 1
            self.counters.last_error = repr(exc)
            self.counters.last_error_at = time.time()
            now = time.monotonic()
            if now - self._last_log > 5.0:
                self._last_log = now
                log.warning(
                    "cacheway: flush of %d entries of namespace %r failed: %r (will retry)",
                    len(part), ns or "default", exc,
                )
            return exc
        finally:
            LATENESS.clear()
        self.counters.store_down_since = None
        self.counters.flush_seconds.observe(time.perf_counter() - started)
        self._acked(part, results, versions)
        return None

    def _acked(self, part: list[Entry], results: list[Any], versions: list[int | None]
               ) -> None:
        table, prefix, local = self._table, self.prefix, self._local
        locks = self._shared_locks([e.key for e in part])
        stamps: list[tuple[str, int, Any, bytes | None, float | None, int | None]] = []
        try:
            with self._cond:
                gens = self._gens
                for entry, res, version in zip(part, results, versions):
                    if not table.ack(entry) or not res.applied:
                        # A newer write of this key is pending (it set the backend), or the
                        # store kept a newer one of another process (so did the backend).
                        continue
                    bkey = prefix + entry.key
                    if local:
                        # The key is clean now: a fill that read the store before this
                        # write landed must stand down (set() leaves this bump to us).
                        gens[hash(bkey) & _MASK] += 1
                    if entry.kind == ADD and res.value is not NOTSET and res.value is not None:
                        # The store summed deltas from every process: its total is the truth.
                        if local:
                            self._backend_set(bkey, res.value, None, entry.ttl, res.version)
                        else:
                            gens[hash(bkey) & _MASK] += 1
                            if version is not None and res.version != version:
                                # Every ADD lands (deltas from all processes sum): this one
                                # changed the value of a row that keeps another process's
                                # newer version, which so no longer names one value. The
                                # copy is dropped with a fresh tombstone instead.
                                stamps.append((bkey, ADD, None, None, entry.ttl, None))
                            else:
                                stamps.append((bkey, SET, res.value, None, entry.ttl,
                                               res.version))
                    elif not local and entry.version is None:
                        # Stamp the store's version on the shared copy (set-if-newer); a
                        # copy published with a clock version has it already.
                        gens[hash(bkey) & _MASK] += 1
                        stamps.append((bkey, entry.kind, entry.value, entry.payload, entry.ttl,
                                       res.version))
                self.counters.flushes += 1
                self.counters.store_writes += len(part)
                low = table.low_water(table.seq + 1) if self.journal is not None else 0
                self._cond.notify_all()
            if stamps:
                self._stamp(stamps)
        finally:
            for lock in locks:
                lock.release()
        if self.journal is not None:
            self.journal.checkpoint(low)

    def _stamp(self, stamps: list[tuple[str, int, Any, bytes | None, float | None, int | None]]
               ) -> None:
        """Versioned copies of acknowledged writes on a shared backend, batched by ttl."""
        by_ttl: dict[float | None, list[tuple[str, Any, bytes | None, int | None]]] = {}
        drops: list[tuple[str, int | None]] = []
        fresh: list[tuple[str, int, Any, bytes | None]] = []
        for bkey, kind, value, payload, ttl, version in stamps:
            if kind == ADD:  # a tombstone newer than every write so far (_acked says why)
                fresh.append((bkey, DELETE, None, None))
            elif kind == DELETE:
                drops.append((bkey, version))
            else:
                by_ttl.setdefault(ttl, []).append((bkey, value, payload, version))
        try:
            if fresh:
                self._clock_publish(fresh, None)
            for ttl, items in by_ttl.items():
                self.backend.set_many(items, ttl)
            if drops:
                delete_many: Any = self.backend.delete_many
                try:
                    delete_many([k for k, _ in drops], versions=[v for _, v in drops])
                except TypeError as exc:  # a backend without versioned batch deletes
                    if isinstance(exc, CachewayError):
                        raise
                    for bkey, version in drops:
                        self.backend.delete(bkey, version)
        except Exception as exc:  # noqa: BLE001 - the store has the writes; drop the copies
            log.warning("cacheway: backend update after a flush failed (%r)", exc)
            for bkey, *_ in stamps:
                self._backend_drop(bkey)

    def _failed(self, entries: list[Entry], exc: Exception, *, alone: bool = True) -> None:
        """``entries`` failed: each waits for a retry, or goes to on_dead_letter when its
        retries are spent or it was refused for good on its own (``alone``: the one entry
        of the failing call)."""
        retry = self.config.retry
        now = self._timer()
        attempts = max(e.attempts for e in entries) + 1
        not_before = now + retry.delay(attempts, self._rand.random)
        dead: list[Entry] = []
        with self._cond:
            hopeless = alone and len(entries) == 1 and _permanent(exc)
            for entry in entries:
                entry.attempts += 1
                if hopeless or retry.exhausted(entry.attempts):
                    dead.append(entry)
                else:
                    self._table.park(entry, not_before)
            self._cond.notify_all()
        for entry in dead:
            self._dead_letter(entry, exc)

    def _dead_letter(self, entry: Entry, exc: Exception) -> None:
        journal = self.journal
        if journal is not None:
            # Durable before anyone is told: a reopen must neither replay nor refuse it.
            try:
                journal.drop(self.namespace, entry.key, entry.last_seq)
            except JournalError as drop_exc:
                log.error("cacheway: cannot void the dead-lettered write of %r in the "
                          "journal (a replay will try it again): %r", entry.key, drop_exc)
        callback = self.config.on_dead_letter
        value = None if entry.kind == DELETE else entry.value
        if callback is not None:
            try:
                callback(entry.key, value, exc)
            except Exception:
                log.exception("cacheway: on_dead_letter raised for key %r", entry.key)
        else:
            log.error(
                "cacheway: dropping write of key %r in namespace %r after %d attempts: %r",
                entry.key, self.namespace or "default", entry.attempts, exc,
            )
        with self._cond:
            self.counters.dead_letters += 1
            if self._table.ack(entry):
                bkey = self.prefix + entry.key
                self._gens[self._stripe(bkey)] += 1
                self._backend_drop(bkey)
            self._cond.notify_all()


def _permanent(exc: BaseException) -> bool:
    """The store refuses this write for good (:class:`InvalidWriteError`, maybe wrapped
    by a store that reports its own errors): retrying cannot help."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, InvalidWriteError):
            return True
        seen = seen.__cause__
    return False


_last_seq = attrgetter("last_seq")
_born = attrgetter("born")
