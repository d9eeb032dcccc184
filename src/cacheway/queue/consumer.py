"""Consumers of a queue's partition streams: they apply accepted writes to the store.

One consumer at a time applies a partition (per-key order), holding its lock (``SET NX
PX claim_after``, renewed by a heartbeat thread); the next holder claims a dead one's
unacknowledged entries (``XAUTOCLAIM``) before reading anything new. A batch is coalesced
per key (:func:`~cacheway.queue.entries.coalesce`) and applied with a low-water journal
mark of the partition, fenced (``JournalMark.after``), in the batch's transaction, so a
redelivered batch is skipped and a paused consumer's batch refused: exactly once,
counters included. Then the entries are acknowledged and trimmed and ``{q:pN}:done``
rises to the batch's last id (what ``flush()`` waits for). A failing store: the batch
stays pending and is retried with the policy's :class:`~cacheway.Retry` backoff; an
entry refused for good (:class:`~cacheway.InvalidWriteError`, found one entry at a
time) goes to the ``{q:pN}:dead`` stream and ``on_dead_letter``. The whole story:
``docs/architecture.md`` and ``docs/guides/queue.md``.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ..core.schedule import permanent
from ..errors import StaleMarkError
from ..policies import Retry
from ..stats import Counters
from ..stores.base import DELETE, JournalMark, Store, store_capabilities
from . import scripts
from .connect import Scripts, is_noscript
from .entries import QueueEntry, coalesce, parse_entry, settle_args
from .held import HeldPartition, due_in, id_of
from .layout import GROUP, Names

__all__ = ["Consumer"]

log = logging.getLogger("cacheway")


# Copies settled by one script call (Redis runs nothing else meanwhile: a few ms).
_SETTLE_CHUNK = 500


class Consumer:
    """Applies the partitions of queue ``names`` it manages to hold to ``store``.

    ``run(stop)`` loops until ``stop`` is set, then finishes the batch in hand,
    acknowledges it and releases its partitions. It takes at most its fair share of the
    partitions (``ceil(partitions / live consumers)``), so a second worker gets work."""

    def __init__(
        self, client: Any, names: Names, store: Store, *, batch_size: int = 500,
        retry: Retry | None = None, claim_after: float = 30.0,
        counters: Counters | None = None,
        on_dead_letter: Callable[[str, Any, BaseException], object] | None = None,
        on_applied: Callable[[int, list[bytes]], object] | None = None,
        name: str | None = None, block: float = 0.05,
    ) -> None:
        self.names = names
        self.store = store
        # per-key mark rows cost about half of a store's time per batch; the low water
        # is all a consumer reads back (applied_state()[0])
        caps = store_capabilities(store)
        self._low_only = caps.low_water_marks
        if not caps.fenced_marks:  # a consumer paused past claim_after: a batch twice
            log.warning("cacheway: store %s checks no fences (fenced_marks)", caps.name)
        self.batch_size = batch_size
        self.retry = retry if retry is not None else Retry()
        self.claim_px = max(1, int(claim_after * 1000))
        self.counters = counters if counters is not None else Counters()
        self.on_dead_letter = on_dead_letter
        #: called with (partition, stream ids) once a batch is in the store and
        #: acknowledged; an id's milliseconds are Redis's time when the write was
        #: accepted (``bench/distributed.py`` measures acknowledged-to-applied with it)
        self.on_applied = on_applied
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._token = self.name.encode()
        self._block_ms = max(1, int(block * 1000))
        self._r: Any = client
        self.scripts = Scripts(client)
        #: on Redis Cluster a read names one partition's stream (one slot) at a time
        self.cluster = self.scripts.cluster
        self._renew = self.scripts.register(scripts.LOCK_RENEW)
        self._lock_check = self.scripts.register(scripts.LOCK_CHECK)
        self._release = self.scripts.register(scripts.LOCK_RELEASE)
        self._set_max = self.scripts.register(scripts.SET_MAX)
        self._settle = self.scripts.register(scripts.SETTLE)
        self._held: dict[int, HeldPartition] = {}
        self._held_lock = threading.Lock()
        self._rand = random.Random()
        self._members = f"{{{names.name}}}:consumers"
        self._claimed_at = 0.0
        self._idle = False  # the last step found nothing due (see held.due_in)
        self.applied = 0  #: entries this consumer applied (skipped redeliveries excluded)

    # -- partitions --------------------------------------------------------------------
    def held(self) -> list[int]:
        """The partitions this consumer holds now."""
        with self._held_lock:
            return sorted(self._held)

    def ensure_groups(self) -> None:
        """Create every partition's stream and consumer group (idempotent)."""
        import redis

        for n in range(self.names.partitions):
            try:
                self._r.xgroup_create(self.names.stream(n), GROUP, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def _heartbeat(self) -> None:
        """Renew the locks held and this consumer's liveness; drop lost partitions."""
        now_ms = int(time.time() * 1000)
        with self._held_lock:
            held = list(self._held)
        with self._r.pipeline(transaction=False) as pipe:
            pipe.zadd(self._members, {self.name: now_ms})
            for n in held:
                self._renew(keys=[self.names.lock(n)], args=[self._token, self.claim_px],
                            client=pipe)
            replies = pipe.execute()
        lost = [n for n, ok in zip(held, replies[1:]) if not ok]
        if lost:
            log.warning("cacheway: queue consumer %s lost partitions %s (silent longer than "
                        "claim_after?)", self.name, lost)
            with self._held_lock:
                for n in lost:
                    self._held.pop(n, None)

    def _fair_share(self) -> int:
        now_ms = int(time.time() * 1000)
        with self._r.pipeline(transaction=False) as pipe:
            pipe.zadd(self._members, {self.name: now_ms})
            pipe.zremrangebyscore(self._members, "-inf", now_ms - self.claim_px)
            pipe.zcard(self._members)
            live = int(pipe.execute()[2])
        return math.ceil(self.names.partitions / max(1, live))

    def claim(self) -> None:
        """Take free partitions up to the fair share; give extra ones back (between
        batches, with nothing of theirs pending here)."""
        self._claimed_at = time.monotonic()
        share = self._fair_share()
        with self._held_lock:
            held = dict(self._held)
        extra = len(held) - share
        for n, p in sorted(held.items(), reverse=True):
            if extra <= 0:
                break
            if not p.backlog and not p.recovering:
                self._give_back(n)
                extra -= 1
        for p in held.values():  # a read whose reply was lost may have left entries in
            p.backlog = True     # our pending list unseen: it is read again each round
        free = [n for n in range(self.names.partitions) if n not in held]
        self._rand.shuffle(free)
        for n in free:
            if len(self.held()) >= share:
                break
            if not self._r.set(self.names.lock(n), self._token, nx=True, px=self.claim_px):
                continue
            try:
                low, _ = self.store.applied_state(self.names.journal_id(n))
            except Exception as exc:  # noqa: BLE001 - store down: leave the partition
                log.warning("cacheway: queue partition %d: reading the applied mark failed "
                            "(%r); not taking it", n, exc)
                self._release(keys=[self.names.lock(n)], args=[self._token])
                continue
            if low:
                self._set_max(keys=[self.names.done(n)], args=[id_of(low)])
            with self._held_lock:
                self._held[n] = HeldPartition(n, low)

    def _give_back(self, n: int) -> None:
        with self._held_lock:
            self._held.pop(n, None)
        self._release(keys=[self.names.lock(n)], args=[self._token])

    def release_all(self) -> None:
        """Give every partition back and leave the live set (after the last batch)."""
        for n in self.held():
            self._give_back(n)
        self._r.zrem(self._members, self.name)

    # -- the loop ----------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Apply batches until ``stop`` is set; then release the partitions."""
        self.ensure_groups()
        beat = threading.Thread(target=self._beat, args=(stop,), name="cacheway-queue-beat",
                                daemon=True)
        beat.start()
        try:
            while not stop.is_set():
                try:
                    if not self.held() or time.monotonic() - self._claimed_at > 1.0:
                        self.claim()
                    if not self.step() and (self._idle or not self.held()):
                        with self._held_lock:  # nothing due: no empty passes at full speed
                            pause = due_in(self._held.values())
                        stop.wait(pause)
                except Exception as exc:  # noqa: BLE001 - Redis or store: logged, retried
                    self.counters.flush_errors += 1
                    self.counters.last_error = repr(exc)
                    log.warning("cacheway: queue consumer %s: %r", self.name, exc)
                    self._reread_pending()
                    if is_noscript(exc):
                        self.scripts.reload()
                    stop.wait(0.2)
        finally:
            beat.join(timeout=5.0)
            try:
                self.release_all()
            except Exception as exc:  # noqa: BLE001 - the locks expire after claim_after
                log.warning("cacheway: queue consumer %s could not release: %r", self.name, exc)

    def _reread_pending(self) -> None:
        """After a failed step: entries may have been delivered to this consumer and not
        acknowledged (a lost XREADGROUP reply, an XACK that failed after the store's
        commit), and ``>`` never delivers them again: read the pending list first. Those
        the store has (at or under the mark) are only acknowledged."""
        with self._held_lock:
            for p in self._held.values():
                p.backlog = True
                p.recheck = True

    def _beat(self, stop: threading.Event) -> None:
        every = max(0.01, self.claim_px / 3000)
        while not stop.wait(every):
            try:
                self._heartbeat()
            except Exception as exc:  # noqa: BLE001 - Redis down: retried next beat
                log.warning("cacheway: queue heartbeat failed: %r", exc)
                if is_noscript(exc):
                    self.scripts.reload()

    def step(self) -> int:
        """One pass over the held partitions: pending entries first, then new ones.
        Returns the entries handled."""
        now = time.monotonic()
        with self._held_lock:
            parts = list(self._held.values())
        handled = 0
        self._idle = False
        for p in parts:
            if p.recovering and now >= p.retry_at:
                self._recover(p)
            if p.recovering or not p.backlog or now < p.retry_at:
                continue
            reply = self._r.xreadgroup(GROUP, self.name, {self.names.stream(p.n): "0"},
                                       count=self.batch_size)
            got = reply[0][1] if reply else []
            if not got:
                p.backlog = False
                continue
            handled += self._process(p, got, from_pending=True)
        ready = [p for p in parts if not p.recovering and not p.backlog]
        if not ready:
            self._idle = not handled  # all wait for a retry or a recovery recheck
            return handled
        block = self._block_ms if not handled else None
        if any(p.backlog for p in parts):
            block = None
        if self.cluster:
            # Streams of several slots cannot be read in one command: one read each,
            # without blocking (a blocked read would hold up the other partitions).
            reply = []
            for p in ready:
                reply += self._r.xreadgroup(GROUP, self.name, {self.names.stream(p.n): ">"},
                                            count=self.batch_size) or []
            if block and not any(got for _, got in reply):
                time.sleep(block / 1000)
        else:
            streams = {self.names.stream(p.n): ">" for p in ready}
            reply = self._r.xreadgroup(GROUP, self.name, streams, count=self.batch_size,
                                       block=block)
        by_stream = {p.n: p for p in ready}
        for stream, got in reply or []:
            name = stream.decode() if isinstance(stream, bytes) else stream
            n = int(name.rsplit(":p", 1)[1].rstrip("}"))
            if got and n in by_stream:
                handled += self._process(by_stream[n], got, from_pending=False)
        return handled

    def _recover(self, p: HeldPartition) -> None:
        """Claim a dead consumer's entries idle longer than claim_after; done when no
        other consumer holds pending entries of this partition."""
        stream = self.names.stream(p.n)
        start = "0-0"
        for _ in range(100):
            reply = self._r.xautoclaim(stream, GROUP, self.name, self.claim_px,
                                       start_id=start, count=1000)
            start = reply[0].decode() if isinstance(reply[0], bytes) else reply[0]
            if start == "0-0":
                break
        summary = self._r.xpending(stream, GROUP)
        others = [c for c in summary.get("consumers") or []
                  if c["name"] not in (self.name, self._token) and int(c["pending"])]
        if others:
            p.retry_at = time.monotonic() + 0.1
            return
        p.recovering = False
        p.backlog = True

    def _may_apply(self, p: HeldPartition, first: bytes | str = "") -> bool:
        """The lock is still ours, and no entry before ``first`` waits unseen in ours
        or another consumer's pending list (:data:`scripts.LOCK_CHECK`)."""
        state = self._lock_check(keys=[self.names.lock(p.n), self.names.stream(p.n)],
                                 args=[self._token, self.claim_px, GROUP, self.name, first])
        if state == 0:  # taken over: the new holder applies them
            with self._held_lock:
                self._held.pop(p.n, None)
        elif state == 2:
            p.recovering = p.backlog = True
        elif state == 3:
            p.backlog = True
        return bool(state == 1)

    def _process(self, p: HeldPartition, got: list[tuple[bytes, dict[bytes, bytes]]], *,
                 from_pending: bool) -> int:
        if p.recheck:
            # A failed apply (a connection lost during COMMIT) may have committed: the
            # store's mark says, so a retry cannot apply the batch twice.
            p.low = max(p.low, self.store.applied_state(self.names.journal_id(p.n))[0])
            p.recheck = False
        entries = [parse_entry(i, f) for i, f in got if f]
        gone = [i for i, f in got if not f]  # deleted while pending: nothing to apply
        old = [e for e in entries if e.seq <= p.low]  # in the store already
        todo = [e for e in entries if e.seq > p.low]
        if todo and todo[0].seq <= p.single_until:
            todo = todo[:1]
        ops, seqs, lasts, taken = coalesce(todo)
        if not self._may_apply(p, got[0][0] if got else ""):
            return 0
        if ops:
            started = time.monotonic()
            # after=p.low: the fence (a batch of a consumer paused past claim_after,
            # whose successor applied it, is refused)
            mark = JournalMark(self.names.journal_id(p.n), todo[taken - 1].seq,
                               () if self._low_only else seqs, after=p.low)
            try:
                self.store.apply(ops, journal=mark)
            except StaleMarkError as exc:
                log.warning("cacheway: queue partition %d was applied past this consumer's "
                            "batch by another (%s): this consumer was paused longer than "
                            "claim_after", p.n, exc)
                p.recheck = p.backlog = True
                self._ack(p, [e.id for e in old] + gone, None)
                self._may_apply(p)  # lets the partition go: its lock is another's
                return len(old)
            except Exception as exc:  # noqa: BLE001 - any store failure: retried or dead
                self._failed(p, todo[:taken], exc)
                self._ack(p, [e.id for e in old] + gone, None)
                return len(old)
            self.counters.flush_seconds.observe(time.monotonic() - started)
            self.counters.flushes += 1
            self.counters.store_writes += len(ops)
            self.counters.store_down_since = None
            self.applied += taken
            p.attempts = 0
            p.low = todo[taken - 1].seq
        ids = [e.id for e in old] + gone + [e.id for e in todo[:taken]]
        last = max([e.seq for e in entries], default=0)
        if taken < len(todo):
            p.backlog = True
            last = todo[taken - 1].seq if taken else p.low
        elif from_pending:
            p.backlog = len(got) >= self.batch_size
        self._ack(p, ids, id_of(last) if last else None, lasts)
        if self.on_applied is not None and taken:
            self.on_applied(p.n, [e.id for e in todo[:taken]])
        return len(ids)

    def _ack(self, p: HeldPartition, ids: list[bytes], done: str | None,
             lasts: list[QueueEntry] | None = None) -> None:
        stream = self.names.stream(p.n)
        with self._r.pipeline(transaction=False) as pipe:
            if done is not None:
                self._set_max(keys=[self.names.done(p.n)], args=[done], client=pipe)
            if ids:
                pipe.xack(stream, GROUP, *ids)
                if done is None:
                    pipe.xdel(stream, *ids)
            if done is not None:
                # Every entry up to ``done`` is acknowledged now (one consumer reads the
                # partition in stream order): one trim instead of an XDEL of every id.
                ms, _, n = done.partition("-")
                pipe.xtrim(stream, minid=f"{ms}-{int(n) + 1}", approximate=False)
            # The copies of the batch's keys (a tombstone expires by itself), a chunk
            # per script call (on a cluster every copy is in the partition's slot).
            settle = [e for e in lasts or [] if e.copy and e.kind != DELETE]
            for lo in range(0, len(settle), _SETTLE_CHUNK):
                part = settle[lo:lo + _SETTLE_CHUNK]
                self._settle(keys=[e.copy for e in part], args=settle_args(part),
                             client=pipe)
            pipe.execute()

    def _failed(self, p: HeldPartition, batch: list[QueueEntry], exc: Exception) -> None:
        c = self.counters
        c.flush_errors += 1
        c.last_error = f"{type(exc).__name__}: {exc}"
        c.last_error_at = time.time()
        if c.store_down_since is None:
            c.store_down_since = c.last_error_at
        p.backlog = True
        p.recheck = True
        p.attempts += 1
        if permanent(exc) and len(batch) > 1:
            p.single_until = batch[-1].seq  # find the refused entry, one at a time
            p.attempts = 0
            return
        if (permanent(exc) and len(batch) == 1) or self.retry.exhausted(p.attempts):
            self._dead(p, batch, exc)
            p.attempts = 0
            return
        c.retries += 1
        p.retry_at = time.monotonic() + self.retry.delay(p.attempts, self._rand.random)
        log.warning("cacheway: queue partition %d: store write of %d entries failed (%r); "
                    "retrying in %.2f s", p.n, len(batch), exc,
                    p.retry_at - time.monotonic())

    def _dead(self, p: HeldPartition, batch: list[QueueEntry], exc: Exception) -> None:
        why = f"{type(exc).__name__}: {exc}"[:500]
        with self._r.pipeline(transaction=False) as pipe:
            for e in batch:
                pipe.xadd(self.names.dead(p.n), {
                    "n": e.namespace, "k": e.key, "o": e.kind, "p": e.payload or b"",
                    "d": e.delta, "v": e.version, "x": e.expires_at or "", "id": e.id,
                    "error": why})
            pipe.execute()
        self.counters.dead_letters += len(batch)
        log.error("cacheway: queue partition %d: %d entries refused for good (%s): moved "
                  "to %s", p.n, len(batch), why, self.names.dead(p.n))
        if self.on_dead_letter is not None:
            for e in batch:
                try:
                    self.on_dead_letter(e.key, e.payload, exc)
                except Exception as cb_exc:  # noqa: BLE001 - a callback must not stop us
                    log.error("cacheway: on_dead_letter raised %r", cb_exc)
        self._ack(p, [e.id for e in batch], id_of(batch[-1].seq))
