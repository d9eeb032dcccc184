"""How far behind a queue's consumers are, per partition: depth and lag.

``depth`` counts the entries accepted and not yet applied to the store (applied entries
are trimmed from the stream, so this is the stream's length); ``pending`` counts those
a consumer has read and not finished; ``lag`` is the age, in seconds, of the oldest entry
not yet applied (0.0 when the partition is empty), measured on Redis's own clock (an
entry's id is Redis's time when it was accepted), so the machines' clocks do not enter.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, NamedTuple

from .connect import Scripts
from .layout import GROUP, Names

__all__ = ["PartitionStatus", "StatusReader", "queue_status", "summary"]


class PartitionStatus(NamedTuple):
    """One partition of a queue, as Redis holds it now."""

    queue: str  #: the queue's name (``queue_name``)
    partition: int
    depth: int  #: entries accepted, not yet applied
    pending: int  #: of those, read by a consumer that has not finished them
    lag: float  #: seconds since the oldest entry not yet applied was accepted
    dead: int  #: entries the store refused for good (the ``:dead`` stream)
    consumer: str | None  #: the consumer holding the partition, if any


def _text(raw: object) -> str | None:
    if raw is None:
        return None
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def queue_status(client: Any, names: Names) -> list[PartitionStatus]:
    """Every partition of queue ``names`` on ``client`` (a redis.Redis: one round trip;
    or a RedisCluster). A partition whose stream or consumer group does not exist yet
    is empty. On a cluster, ``lag`` is measured on one node's clock."""
    import redis

    parts = range(names.partitions)
    cluster = Scripts(client).cluster
    with client.pipeline(transaction=False) as pipe:
        if not cluster:
            pipe.time()  # a cluster pipeline takes no keyless command: asked below
        for n in parts:
            stream = names.stream(n)
            pipe.xlen(stream)
            pipe.xrange(stream, "-", "+", count=1)
            pipe.xpending(stream, GROUP)
            pipe.xlen(names.dead(n))
            pipe.get(names.lock(n))
        replies = pipe.execute(raise_on_error=False)
    if cluster:
        replies.insert(0, client.time())
    seconds, micros = replies[0]
    now_ms = int(seconds) * 1000 + int(micros) // 1000
    out = []
    for n in parts:
        depth, first, pending, dead, holder = replies[1 + 5 * n: 6 + 5 * n]
        for reply in (depth, first, dead, holder):
            if isinstance(reply, Exception):
                raise reply
        if isinstance(pending, redis.ResponseError) and "NOGROUP" in str(pending):
            pending = {"pending": 0}
        elif isinstance(pending, Exception):
            raise pending
        lag = 0.0
        if first:
            oldest_ms = int(_text(first[0][0]).partition("-")[0])  # type: ignore[union-attr]
            lag = max(0, now_ms - oldest_ms) / 1000
        out.append(PartitionStatus(names.name, n, int(depth), int(pending["pending"]), lag,
                                   int(dead), _text(holder)))
    return out


def summary(status: list[PartitionStatus]) -> str:
    """One line: total depth, the largest lag and where, dead letters.

    >>> summary([PartitionStatus("q", 0, 3, 1, 0.25, 0, "w1"),
    ...          PartitionStatus("q", 1, 0, 0, 0.0, 2, None)])
    'depth 3 (1 in hand), max lag 0.25 s (partition 0), 2 dead'
    """
    depth = sum(s.depth for s in status)
    pending = sum(s.pending for s in status)
    dead = sum(s.dead for s in status)
    worst = max(status, key=lambda s: s.lag, default=None)
    lag = "max lag 0 s" if worst is None or not worst.lag else (
        f"max lag {worst.lag:.2f} s (partition {worst.partition})")
    return f"depth {depth} ({pending} in hand), {lag}, {dead} dead"


class StatusReader:
    """Reads a queue's status in a thread of its own for a caller that must not wait
    long (``AsyncCache.stats()`` on its event loop): :meth:`get` waits at most ``wait``
    seconds, then answers the last reading. One read at a time: while Redis does not
    answer, callers share the read under way instead of queueing more."""

    def __init__(self, read: Callable[[], list[PartitionStatus]]) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._running: Future[list[PartitionStatus]] | None = None
        self.last: list[PartitionStatus] = []

    def get(self, wait: float) -> list[PartitionStatus]:
        """A fresh reading within ``wait`` seconds, else the last one (BackendError when
        the read failed)."""
        with self._lock:
            running = self._running
            if running is None or running.done():
                running = self._running = Future()
                # A daemon thread per read: one stuck on a silent Redis (up to the
                # client's socket timeout) must not hold up the interpreter's exit.
                threading.Thread(target=self._fresh, args=(running,), daemon=True,
                                 name="cacheway-queue-status").start()
        try:
            return running.result(timeout=wait)
        except FutureTimeout:
            return list(self.last)

    def _fresh(self, answer: Future[list[PartitionStatus]]) -> None:
        try:
            status = self._read()
        except Exception as exc:  # noqa: BLE001 - handed to the caller by get()
            answer.set_exception(exc)
            return
        self.last = status
        answer.set_result(status)

    def close(self) -> None:
        """Forget the read under way (it ends on its own)."""
        with self._lock:
            self._running = None

    def after_fork_in_child(self) -> None:
        """The parent's thread is not in the child."""
        self._lock = threading.Lock()
        self._running = None
