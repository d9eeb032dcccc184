"""Counters kept by each namespace and the :class:`Stats` snapshot ``cache.stats()`` returns."""

from __future__ import annotations

import dataclasses
import itertools
import math
from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

__all__ = ["FLUSH_SECONDS_BUCKETS", "Counters", "Histogram", "Stats"]

#: Upper bounds (seconds) of the flush latency histogram: prometheus_client's default
#: steps, starting at 1 ms because a local store (SQLite) acknowledges a batch that fast.
FLUSH_SECONDS_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class Stats:
    """A snapshot of a cache's counters (since open unless said).

    ``hits``/``misses``: reads answered from the dirty table or backend / reads that
    went to the store. ``loads``: store load calls. ``writes``: accepted
    ``set``/``delete``/``incr`` (each key of a ``*_many``). ``store_writes``: rows written
    or deleted in the store. ``coalesced``: writes absorbed into an already-dirty entry.
    ``flushes``/``flush_errors``/``retries``: batches acknowledged / failed batch
    attempts / attempts repeated. ``dead_letters``: entries given to ``on_dead_letter``.
    ``dirty``: entries not yet acknowledged by the store, now. ``evictions``: entries the
    backend dropped for room or TTL. ``journal_bytes``/``journal_syncs``: journal size now /
    durable syncs made. ``decode_errors``: cached payloads that failed to decode (served
    as misses). ``last_error``: the most recent store error seen by a flusher, if any;
    ``last_error_at``: when (``time.time()``) it was seen. ``store_down_since``: when the
    store's current outage began, as a flusher sees it (None while its last call went
    through). ``flush_seconds_buckets``/``flush_seconds_sum``/``flush_seconds_count``:
    how long the store took to acknowledge each flushed batch, as a histogram —
    ``(upper bound, batches that took at most that long)`` pairs (cumulative, as
    Prometheus's ``le`` buckets), the seconds summed, and the batches counted (``count``
    also covers the batches slower than the last bound). ``queue``: one
    :class:`cacheway.queue.PartitionStatus` (``queue``, ``partition``, ``depth``,
    ``pending``, ``lag`` seconds, ``dead``, ``consumer``) per partition of each distributed
    write-behind queue the namespaces write to, read from Redis now (every process's
    writes); empty without a queue, or while its Redis cannot be read.
    """

    hits: int = 0
    misses: int = 0
    loads: int = 0
    writes: int = 0
    store_writes: int = 0
    coalesced: int = 0
    flushes: int = 0
    flush_errors: int = 0
    retries: int = 0
    dead_letters: int = 0
    dirty: int = 0
    evictions: int = 0
    journal_bytes: int = 0
    journal_syncs: int = 0
    decode_errors: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    store_down_since: float | None = None
    flush_seconds_buckets: tuple[tuple[float, int], ...] = ()
    flush_seconds_sum: float = 0.0
    flush_seconds_count: int = 0
    queue: tuple[Any, ...] = ()

    @property
    def hit_ratio(self) -> float:
        """hits / (hits + misses), 0.0 before any read."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def __add__(self, other: Stats) -> Stats:
        values: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name == "flush_seconds_buckets":
                values[f.name] = _add_buckets(a, b)
            elif f.name == "last_error":
                values[f.name] = b or a
            elif f.name == "queue":  # namespaces sharing a queue report it once
                seen = {(p.queue, p.partition) for p in a}
                values[f.name] = a + tuple(p for p in b if (p.queue, p.partition) not in seen)
            elif f.name in _TIMES:
                # the latest error, the earliest outage still going on
                values[f.name] = a if b is None else b if a is None else (
                    max(a, b) if f.name == "last_error_at" else min(a, b))
            else:
                values[f.name] = a + b
        return Stats(**values)


_TIMES = ("last_error_at", "store_down_since")


def _add_buckets(a: tuple[tuple[float, int], ...], b: tuple[tuple[float, int], ...]
                 ) -> tuple[tuple[float, int], ...]:
    if not a or not b:
        return a or b
    if [le for le, _ in a] != [le for le, _ in b]:
        raise ConfigError(
            f"cannot add flush histograms with different buckets: "
            f"{[le for le, _ in a]} and {[le for le, _ in b]}"
        )
    return tuple((le, n + m) for (le, n), (_, m) in zip(a, b))


class Histogram:
    """Observations counted in fixed buckets, with their sum (seconds, for flush latency).

    One thread observes (the flusher) while others take snapshots: each step is a plain
    list or attribute update, so a snapshot may miss the observation in progress but
    never sees a bucket count fall.

    >>> h = Histogram((0.1, 1.0))
    >>> h.observe(0.05); h.observe(0.5); h.observe(3.0)
    >>> h.snapshot()
    (((0.1, 1), (1.0, 2)), 3.55, 3)
    """

    __slots__ = ("_counts", "bounds", "sum")

    def __init__(self, bounds: tuple[float, ...] = FLUSH_SECONDS_BUCKETS) -> None:
        bounds = tuple(float(b) for b in bounds)
        if not bounds or any(not math.isfinite(b) for b in bounds) or any(
                x >= y for x, y in itertools.pairwise(bounds)):
            raise ConfigError(
                f"histogram bounds must be finite and strictly increasing, not {bounds!r}")
        self.bounds = bounds
        self._counts = [0] * (len(bounds) + 1)  # the last one: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count ``value`` in the first bucket whose bound is at least ``value``."""
        self._counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        """Observations made so far."""
        return sum(self._counts)

    def snapshot(self) -> tuple[tuple[tuple[float, int], ...], float, int]:
        """``(cumulative buckets, sum, count)``: the buckets as ``(bound, observations
        <= bound)`` pairs; ``count`` includes the observations above the last bound."""
        counts = list(self._counts)
        total = 0
        buckets = []
        for bound, n in zip(self.bounds, counts):
            total += n
            buckets.append((bound, total))
        return tuple(buckets), self.sum, total + counts[-1]


class Counters:
    """Mutable counters; plain attribute increments (exact under the GIL for ``+= 1``)."""

    __slots__ = (
        "coalesced",
        "dead_letters",
        "decode_errors",
        "flush_errors",
        "flush_seconds",
        "flushes",
        "hits",
        "last_error",
        "last_error_at",
        "loads",
        "misses",
        "retries",
        "store_down_since",
        "store_writes",
        "writes",
    )

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.loads = 0
        self.writes = 0
        self.store_writes = 0
        self.coalesced = 0
        self.flushes = 0
        self.flush_errors = 0
        self.retries = 0
        self.dead_letters = 0
        self.decode_errors = 0
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.store_down_since: float | None = None
        # Seconds the store took to acknowledge each batch; the flusher observes them.
        self.flush_seconds = Histogram()

    def stats(self, dirty: int = 0) -> Stats:
        """A :class:`Stats` snapshot of these counters (``dirty``: the engine's, now)."""
        buckets, seconds, batches = self.flush_seconds.snapshot()
        return Stats(
            hits=self.hits, misses=self.misses, loads=self.loads, writes=self.writes,
            store_writes=self.store_writes, coalesced=self.coalesced, flushes=self.flushes,
            flush_errors=self.flush_errors, retries=self.retries,
            dead_letters=self.dead_letters, decode_errors=self.decode_errors,
            last_error=self.last_error, last_error_at=self.last_error_at,
            store_down_since=self.store_down_since, dirty=dirty,
            flush_seconds_buckets=buckets, flush_seconds_sum=seconds,
            flush_seconds_count=batches,
        )
