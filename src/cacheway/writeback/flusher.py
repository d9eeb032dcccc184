"""The flusher of a write-back engine: one thread that writes batches to the store.

One flusher per namespace writes batches of up to ``batch_size`` entries within
``max_delay`` seconds of a write. What goes next and what a failure means are decided by
the sans-I/O schedule (:mod:`cacheway.core.schedule`): a failing batch is probed and
bisected to isolate a poison entry; when every part fails the store is taken to be down
and the batch waits for a retry with exponential backoff. Only the flusher writes to the
store, one batch at a time, so a key never has two batches in flight. This module does
the I/O: the store call, the journal checkpoint, the copies of acknowledged writes.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from ..core.dirty import Entry
from ..core.fills import MASK
from ..core.schedule import PROBE_EVERY, BatchAttempt, next_step, permanent, verdict
from ..engine.shared_copies import Stamp
from ..errors import JournalError
from ..stores.base import ADD, DELETE, NOTSET, SET, JournalMark, make_op

if TYPE_CHECKING:
    from ..engine.write_back import WriteBackEngine

__all__ = ["Flusher"]

log = logging.getLogger("cacheway")


class Flusher:
    """The flusher thread of one :class:`~cacheway.engine.write_back.WriteBackEngine`.

    The engine's writers tell it what they wait for through ``flush_waiters`` and
    ``blocked``; ``idle`` says it waits for a first write (no ``max_delay`` clock runs)."""

    def __init__(self, engine: WriteBackEngine) -> None:
        self._engine = engine
        self._rand = random.Random()
        self.flush_waiters = 0
        self.blocked = 0
        self.idle = True
        self.stopping = False
        self.stop_now = False
        self._probe_at = 0.0  # when the next probe of a store that is down may go
        self._last_log = 0.0
        self.thread = threading.Thread(
            target=self._run, name=f"cacheway-flusher-{engine.namespace or 'default'}",
            daemon=True,
        )
        self.thread.start()

    def _run(self) -> None:
        engine = self._engine
        while True:
            with engine.cond:
                step = self._next()
            if step is None:
                return
            batch, probe = step
            try:
                if probe:
                    self._probe(batch[0])
                else:
                    self._write(batch)
            except BaseException:
                log.exception("cacheway: flusher of %r crashed", engine.namespace or "default")
                with engine.cond:
                    for entry in batch:
                        if engine.table.inflight.get(entry.key) is entry:
                            engine.table.park(entry, engine.timer() + 1.0)
                    engine.cond.notify_all()

    def _next(self) -> tuple[list[Entry], bool] | None:
        """The next batch (and whether it is a probe), waiting as the schedule says;
        None: stop. Called holding the table lock."""
        engine = self._engine
        while True:
            if self.stop_now:
                return None
            now = engine.timer()
            step = next_step(engine.table, engine.config, now,
                             hurry=self.flush_waiters > 0 or self.blocked > 0,
                             stopping=self.stopping, probe_at=self._probe_at)
            if step.stop:
                return None
            if step.batch is not None:
                if step.probe:
                    self._probe_at = now + PROBE_EVERY
                return step.batch, step.probe
            self.idle = step.wait is None
            try:
                engine.cond.wait(step.wait)
            finally:
                self.idle = False

    def _write(self, batch: list[Entry]) -> None:
        """Write ``batch``, walking a failure as :class:`BatchAttempt` says."""
        if any(e.attempts for e in batch):
            self._engine.counters.retries += 1
            self._rand.shuffle(batch)  # vary the probes and the halves
        exc = self._try(batch)
        if exc is None:
            return  # the usual case: no attempt to walk
        attempt = BatchAttempt(batch, self._rand)
        attempt.outcome(attempt.next() or batch, exc)  # the whole batch failed
        while (part := attempt.next()) is not None:
            attempt.outcome(part, self._try(part))
        if attempt.store_down:
            self._store_down()
        for entries, exc, alone in attempt.failures:
            self._failed(entries, exc, alone=alone)

    def _probe(self, entry: Entry) -> None:
        """A parked entry tried alone while the others back off: when it goes through,
        the store is back and every parked entry is retried now. A failed probe is not
        an attempt: it keeps its place and its retry time."""
        engine = self._engine
        exc = self._try([entry])
        if exc is None:
            with engine.cond:
                for parked in engine.table.parked.values():
                    parked.not_before = 0.0
                engine.cond.notify_all()
        elif permanent(exc):
            self._failed([entry], exc)
        else:
            with engine.cond:
                engine.table.park(entry, entry.not_before)
                engine.cond.notify_all()

    def _store_down(self) -> None:
        counters = self._engine.counters
        if counters.store_down_since is None:
            counters.store_down_since = time.time()

    def _try(self, part: list[Entry]) -> Exception | None:
        engine = self._engine
        counters = engine.counters
        part = sorted(part, key=_last_seq)
        ns = engine.namespace
        # A writer on a shared backend sets its entry's version after the backend took the
        # copy, holding the key's stripe lock all along: read versions under those locks.
        locks = engine.shared_locks([e.key for e in part])
        try:
            versions = [e.version for e in part]
        finally:
            for lock in locks:
                lock.release()
        ops = [make_op((ns, e.key, e.kind, e.payload, e.delta, e.value, v, e.expires_at))
               for e, v in zip(part, versions)]
        mark = None
        journal = engine.journal
        if journal is not None:
            with engine.cond:
                low = engine.table.low_water(engine.table.seq + 1, {e.key: e for e in part})
            mark = JournalMark(journal.id, low, [e.last_seq for e in part])
        started = time.perf_counter()
        try:
            if engine.store_caps.takes_late:
                # Once the batch is older than max_delay, the store may work harder to
                # get it through (see stores.base.LateAware).
                deadline = min(map(_born, part)) + engine.config.max_delay
                timer = engine.timer
                results = engine.store.apply(ops, journal=mark,  # type: ignore[call-arg]
                                             late=lambda: timer() > deadline)
            else:
                results = engine.store.apply(ops, journal=mark)
        except Exception as exc:  # noqa: BLE001 - any store failure is retried, never lost
            counters.flush_errors += 1
            counters.last_error = repr(exc)
            counters.last_error_at = time.time()
            now = time.monotonic()
            if now - self._last_log > 5.0:
                self._last_log = now
                log.warning(
                    "cacheway: flush of %d entries of namespace %r failed: %r (will retry)",
                    len(part), ns or "default", exc,
                )
            return exc
        counters.store_down_since = None
        counters.flush_seconds.observe(time.perf_counter() - started)
        self._acked(part, results, versions)
        return None

    def _acked(self, part: list[Entry], results: list[Any], versions: list[int | None]
               ) -> None:
        """The store has ``part``: on a shared backend, first stamp the copies (the keys'
        stripe locks keep their writers out meanwhile), then release the entries, so
        that ``flush()`` returns only once the backend agrees with the store."""
        engine = self._engine
        table, prefix, local = engine.table, engine.prefix, engine.local
        locks = engine.shared_locks([e.key for e in part])
        try:
            if not local:
                with engine.cond:
                    stamps = self._stamps(part, results, versions)
                if stamps:
                    engine.copies.stamp(stamps)
            with engine.cond:
                gens = engine.gens
                for entry, res in zip(part, results):
                    if not table.ack(entry) or not res.applied:
                        # A newer write of this key is pending (it set the backend), or the
                        # store kept a newer one of another process (so did the backend).
                        continue
                    bkey = prefix + entry.key
                    # The key is clean now: a fill that read the store before this write
                    # landed must stand down (set() leaves this bump to us).
                    gens[hash(bkey) & MASK] += 1
                    if local and entry.kind == ADD and res.value is not NOTSET and (
                            res.value is not None):
                        # The store summed deltas from every process: its total is the truth.
                        engine.backend_set(bkey, res.value, None, entry.ttl, res.version)
                engine.counters.flushes += 1
                engine.counters.store_writes += len(part)
                low = table.low_water(table.seq + 1) if engine.journal is not None else 0
                engine.cond.notify_all()
        finally:
            for lock in locks:
                lock.release()
        if engine.journal is not None:
            engine.journal.checkpoint(low)

    def _stamps(self, part: list[Entry], results: list[Any], versions: list[int | None]
                ) -> list[Stamp]:
        """What the shared backend's copies of ``part`` become (called holding the table
        lock and the keys' stripe locks, so no write of these keys comes in between)."""
        table, prefix = self._engine.table, self._engine.prefix
        stamps: list[Stamp] = []
        for entry, res, version in zip(part, results, versions):
            if entry.key in table.dirty or not res.applied:
                continue  # a newer write is pending, or the store kept a newer one
            bkey = prefix + entry.key
            if entry.kind == ADD and res.value is not NOTSET and res.value is not None:
                # The store summed deltas from every process: its total is the truth.
                if version is not None and res.version != version:
                    # Every ADD lands (deltas from all processes sum): this one changed the
                    # value of a row that keeps another process's newer version, which so
                    # no longer names one value. The copy is dropped with a fresh
                    # tombstone instead.
                    stamps.append((bkey, ADD, None, None, entry.ttl, None))
                else:
                    stamps.append((bkey, SET, res.value, None, entry.ttl, res.version))
            else:
                # The store's version on the shared copy (set-if-newer): a copy published
                # with a clock version has it already, but may have expired or been evicted
                # meanwhile, and a fill of an older row may have taken its place.
                stamps.append((bkey, entry.kind, entry.value, entry.payload, entry.ttl,
                               res.version))
        return stamps

    def _failed(self, entries: list[Entry], exc: Exception, *, alone: bool = True) -> None:
        """``entries`` failed: each waits for a retry, or goes to on_dead_letter when its
        retries are spent or it was refused for good on its own."""
        engine = self._engine
        with engine.cond:
            dead, not_before = verdict(entries, exc, alone, engine.config.retry,
                                       engine.timer(), self._rand.random)
            for entry in entries:
                if entry not in dead:
                    engine.table.park(entry, not_before)
            engine.cond.notify_all()
        for entry in dead:
            self._dead_letter(entry, exc)

    def _dead_letter(self, entry: Entry, exc: Exception) -> None:
        engine = self._engine
        journal = engine.journal
        if journal is not None:
            # Durable before anyone is told: a reopen must neither replay nor refuse it.
            try:
                journal.drop(engine.namespace, entry.key, entry.last_seq)
            except JournalError as drop_exc:
                log.error("cacheway: cannot void the dead-lettered write of %r in the "
                          "journal (a replay will try it again): %r", entry.key, drop_exc)
        callback = engine.config.on_dead_letter
        value = None if entry.kind == DELETE else entry.value
        if callback is not None:
            try:
                callback(entry.key, value, exc)
            except Exception:
                log.exception("cacheway: on_dead_letter raised for key %r", entry.key)
        else:
            log.error(
                "cacheway: dropping write of key %r in namespace %r after %d attempts: %r",
                entry.key, engine.namespace or "default", entry.attempts, exc,
            )
        with engine.cond:
            engine.counters.dead_letters += 1
            if engine.table.ack(entry):
                bkey = engine.prefix + entry.key
                engine.gens[hash(bkey) & MASK] += 1
                engine.backend_drop(bkey)
            engine.cond.notify_all()


_last_seq = attrgetter("last_seq")
_born = attrgetter("born")
