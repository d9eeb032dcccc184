"""One ``stats()`` snapshot of a cache's (or a namespace's) engines and their backend."""

from __future__ import annotations

import logging
from typing import Any, Protocol, runtime_checkable

from .backends.base import Backend
from .engine.read import Engine
from .errors import BackendError
from .stats import Stats

__all__ = ["ReportsQueue", "snapshot"]

log = logging.getLogger("cacheway")


@runtime_checkable
class ReportsQueue(Protocol):
    """An engine that writes to a distributed write-behind queue (its depth and lag go
    into ``stats().queue``)."""

    def queue_stats(self, wait: float | None = None) -> list[Any]: ...

    def pending_known(self) -> int: ...


def snapshot(engines: list[Engine], backend: Backend, wait: float | None = None) -> Stats:
    """The counters of ``engines`` and their backend, as one snapshot. ``wait``: at most
    so many seconds for what only a queue's Redis knows (then its last reading)."""
    total = Stats()
    for engine in engines:
        # first: staged writes are counted as they drain
        if wait is not None and isinstance(engine, ReportsQueue):
            dirty = engine.pending_known()
        else:
            dirty = engine.pending()
        total = total + engine.counters.stats(dirty=dirty)
        journal = getattr(engine, "journal", None)
        if journal is not None:
            total = total + Stats(journal_bytes=journal.bytes, journal_syncs=journal.syncs)
        if isinstance(engine, ReportsQueue):
            try:
                total = total + Stats(queue=tuple(engine.queue_stats(wait)))
            except BackendError as exc:  # stats() answers without it (metrics scrape it)
                log.debug("cacheway: queue depth unavailable: %s", exc)
    return total + Stats(
        evictions=backend.evictions,
        decode_errors=int(getattr(backend, "decode_errors", 0)),  # DecodeErrorsBackend
    )
