"""Back-pressure of a write-back engine at ``max_dirty``: raise, block, or write the new
keys straight through to the store (``WriteBack(on_full=...)``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..errors import Backpressure
from ..stores.base import ADD, DELETE, NOTSET, SET, Op

if TYPE_CHECKING:
    from .write_back import WriteBackEngine

__all__ = ["Item", "NeedRoom", "Room"]

#: (key, kind, value, payload, delta) of one accepted write
Item = tuple[str, int, Any, "bytes | None", int]


class NeedRoom(Exception):
    """The dirty table is full and the caller holds stripe locks: wait without them."""


class Room:
    """Room in one engine's dirty table. Called holding the table lock unless said."""

    def __init__(self, engine: WriteBackEngine) -> None:
        self._engine = engine
        #: keys on_full="write_through" is writing: their writers wait
        self.through: set[str] = set()

    def make(self, need: list[Item], items: list[Item], through: list[Item] | None,
             no_wait: bool, deadline: float) -> list[Item] | None:
        """Back-pressure for the ``need`` items that take room: raise; wait (then None:
        the caller looks again); or reserve the keys with nothing pending for the caller
        to write straight to the store once it has let go of the table lock
        (``through``) and return the items still to accept into the dirty table."""
        engine = self._engine
        cfg, table = engine.config, engine.table
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
                self.through.update(fresh)
                table.paused += 1  # no staged write may slip past the reservation
                table.drain()
                return [it for it in items if it[0] not in fresh]
        if no_wait:
            raise NeedRoom
        self.wait(len(need), deadline)
        return None

    def wait(self, new_keys: int, deadline: float) -> None:
        engine = self._engine
        cfg, table, flusher = engine.config, engine.table, engine.flusher
        if new_keys > cfg.max_dirty:
            raise Backpressure(
                f"a write of {new_keys} new keys can never fit max_dirty={cfg.max_dirty}: "
                "split it or raise max_dirty")
        flusher.blocked += 1
        engine.cond.notify_all()
        try:
            while len(table) + new_keys > cfg.max_dirty:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or engine.closed:
                    raise Backpressure(
                        f"blocked {cfg.block_timeout:g}s with {len(table)} dirty entries "
                        f"(max_dirty={cfg.max_dirty}); the store is not keeping up"
                    )
                engine.cond.wait(remaining)
        finally:
            flusher.blocked -= 1

    def wait_outside(self, n: int, deadline: float | None) -> float:
        """Wait (holding no stripe lock, nor the table lock) until ``n`` more entries
        fit; the deadline."""
        if deadline is None:
            deadline = time.monotonic() + self._engine.config.block_timeout
        with self._engine.cond:
            self.wait(n, deadline)
        return deadline

    def write_through(self, items: list[Item], ttl: float | None) -> None:
        """on_full="write_through": write keys reserved by :meth:`make` to the store,
        holding no lock (a slow store must not stall the writers of other keys); writers
        of these keys wait for the reservation, so order holds."""
        engine = self._engine
        expires_at = engine.expires_at()
        if engine.expiry is not None:
            ttl = engine.expiry.cap(ttl)
        ops = engine.versioned([Op(engine.namespace, k, kind, p, d, v, None, expires_at)
                                for k, kind, v, p, d in items])
        results: list[Any] | None = None
        try:
            results = engine.store.apply(ops)
        finally:
            with engine.cond:
                for i, (key, kind, value, payload, _) in enumerate(items):
                    bkey = engine.prefix + key
                    # A fill that read the store before this write must not land after it.
                    engine.gens[engine.stripe(bkey)] += 1
                    if results is None or kind == DELETE:
                        # On failure the outcome is unknown: no copy may stay.
                        engine.backend_drop(bkey, None if results is None
                                            else results[i].version)
                        continue
                    res = results[i]
                    if not res.applied:
                        continue  # the store kept a newer write, and a newer copy went out
                    v = value if kind != ADD or res.value in (None, NOTSET) else res.value
                    engine.backend_set(bkey, v, payload if kind == SET else None, ttl,
                                       res.version)
                self.release(items)
                if results is not None:
                    engine.counters.writes += len(ops)
                    engine.counters.store_writes += len(ops)
                engine.cond.notify_all()

    def release(self, items: list[Item]) -> None:
        self.through.difference_update(it[0] for it in items)
        self._engine.table.paused -= 1
        self._engine.cond.notify_all()
