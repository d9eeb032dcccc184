"""The copies a write-back engine keeps on a shared backend (Redis, two-level): published
when a write is accepted, stamped with the store's version when it is acknowledged."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..core.journal_records import VERSION
from ..errors import BackendError
from ..stores.base import ADD, DELETE, SET

if TYPE_CHECKING:
    from .write_back import WriteBackEngine

__all__ = ["Publish", "SharedCopies", "Stamp"]

log = logging.getLogger("cacheway")

#: (backend key, kind, value, payload) of an accepted write
Publish = tuple[str, int, Any, "bytes | None"]
#: (backend key, kind, value, payload, ttl, version) of an acknowledged write
Stamp = tuple[str, int, Any, "bytes | None", "float | None", "int | None"]


class SharedCopies:
    """Copies of one write-back engine's writes on a backend other processes read."""

    def __init__(self, engine: WriteBackEngine) -> None:
        self._engine = engine
        self._backend = engine.backend
        caps = engine.backend_caps
        # A shared backend with a clock (RedisBackend.publish) versions accepted writes.
        self._clock_publish: Callable[[list[Publish], float | None], list[int]] | None = (
            caps.publish.publish if caps.publish is not None and not caps.local else None)
        self._versioned_deletes = caps.versioned_deletes

    def publish(self, publish: list[Publish], ttl: float | None, seq: int = 0) -> int:
        """Copies of accepted writes, in one round trip where possible. A backend with a
        clock (Redis) stamps each with a version as it takes it, and the entries carry
        those versions to the store, which applies them set-if-newer: the last write
        accepted wins across processes, whichever flushes first. The caller holds the
        keys' stripe locks, which the flusher needs to read an entry's version.

        With a journal, each version goes there too (a VERSION record after its write's
        record: the stripe locks keep the order), so a replay of the journal never lands
        over a later write another process acknowledged. Returns the journal seq to wait
        for: the last record appended, else ``seq`` (the writes' own)."""
        engine = self._engine
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
                    engine.backend_drop(bkey)
                return seq
            cut = len(engine.prefix)
            with engine.cond:
                for (bkey, _, _, _), version in zip(publish, versions):
                    entry = engine.table.peek(bkey[cut:])
                    if entry is not None:
                        entry.version = version
            journal = engine.journal
            if journal is not None:
                for (bkey, kind, _, _), version in zip(publish, versions):
                    if kind != ADD:  # (a counter's add is relative: replayed unversioned)
                        seq = journal.append(engine.namespace, bkey[cut:], VERSION, b"",
                                             version)
            return seq
        sets = [(bkey, value, payload, None) for bkey, kind, value, payload in publish
                if kind != DELETE]
        drops = [bkey for bkey, kind, _, _ in publish if kind == DELETE]
        try:
            if sets:
                self._backend.set_many(sets, ttl)
            if drops:
                self._backend.delete_many(drops)
        except Exception as exc:  # noqa: BLE001 - drop what may be stale, keep the writes
            log.warning("cacheway: backend write failed (%r); dropping the copies", exc)
            for bkey, _, _, _ in publish:
                engine.backend_drop(bkey)
        return seq

    def stamp(self, stamps: list[Stamp]) -> None:
        """Versioned copies of acknowledged writes, batched by ttl."""
        by_ttl: dict[float | None, list[tuple[str, Any, bytes | None, int | None]]] = {}
        drops: list[tuple[str, int | None]] = []
        fresh: list[Publish] = []
        for bkey, kind, value, payload, ttl, version in stamps:
            if kind == ADD:  # a tombstone newer than every write so far (see Flusher)
                fresh.append((bkey, DELETE, None, None))
            elif kind == DELETE:
                drops.append((bkey, version))
            else:
                by_ttl.setdefault(ttl, []).append((bkey, value, payload, version))
        backend = self._backend
        try:
            if fresh and self._clock_publish is not None:
                self._clock_publish(fresh, None)
            for ttl, items in by_ttl.items():
                backend.set_many(items, ttl)
            if drops and self._versioned_deletes is not None:
                self._versioned_deletes.delete_many([k for k, _ in drops],
                                                    versions=[v for _, v in drops])
            else:
                for bkey, version in drops:  # a backend without versioned batch deletes
                    backend.delete(bkey, version)
        except Exception as exc:  # noqa: BLE001 - the store has the writes; drop the copies
            log.warning("cacheway: backend update after a flush failed (%r)", exc)
            for bkey, *_ in stamps:
                self._engine.backend_drop(bkey)
