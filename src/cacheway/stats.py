"""Counters kept by each namespace and the :class:`Stats` snapshot ``cache.stats()`` returns."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["Counters", "Stats"]


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
    through).
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

    @property
    def hit_ratio(self) -> float:
        """hits / (hits + misses), 0.0 before any read."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def __add__(self, other: Stats) -> Stats:
        values = {}
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if f.name == "last_error":
                values[f.name] = b or a
            elif f.name in _TIMES:
                # the latest error, the earliest outage still going on
                values[f.name] = a if b is None else b if a is None else (
                    max(a, b) if f.name == "last_error_at" else min(a, b))
            else:
                values[f.name] = a + b
        return Stats(**values)


_TIMES = ("last_error_at", "store_down_since")


class Counters:
    """Mutable counters; plain attribute increments (exact under the GIL for ``+= 1``)."""

    __slots__ = (
        "coalesced",
        "dead_letters",
        "decode_errors",
        "flush_errors",
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
