"""Write-through and write-around engines: the store first, then the backend.

Each write holds its key's stripe lock from the store write until the backend is
updated, and bumps the stripe's generation, so in one process concurrent writers and
read-fills can never leave the backend disagreeing with the store.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from typing import Any

from ..backends.base import MISS
from ..core.fills import MASK
from ..core.keys import check_keys, check_mapping
from ..errors import StoreError
from ..stores.base import ADD, DELETE, NOTSET, SET, Applied, Op
from .read import Engine

__all__ = ["WriteAroundEngine", "WriteThroughEngine"]


class WriteThroughEngine(Engine):
    """Store, then set the backend (or invalidate it when the store has no versions
    and the backend is shared, since then only an invalidation is safe across processes)."""

    drops_copies = False  # a write drops the cached copy instead of setting it

    def _apply(self, ops: list[Op], bkeys: list[str], *, versioned: bool = False
               ) -> list[Applied]:
        if self._clock is not None and not versioned:
            ops = self.versioned(ops)
        try:
            results = self.store.apply(ops)
        except Exception as exc:
            # The outcome is unknown: whatever the store did, no stale copy may stay.
            for bkey in bkeys:
                self.gens[self.stripe(bkey)] += 1
                self.backend_drop(bkey)
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"store write failed: {exc!r}") from exc
        self.counters.store_writes += len(ops)
        return results

    def _publish(
        self, bkey: str, value: Any, payload: bytes | None, ttl: float | None, res: Applied
    ) -> None:
        if not res.applied:
            return  # the store kept a newer write (another process's): so does the backend
        version = res.version
        self.gens[hash(bkey) & MASK] += 1
        if self.drops_copies or not (self.store_caps.versioned or self.backend_caps.local):
            self.backend_drop(bkey, version)
        else:
            self.backend_set(bkey, value, payload, ttl, version)

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        key, value, payload, ttl_ = self.prepare(key, value, ttl)
        bkey = self.prefix + key
        with self.locks[hash(bkey) & MASK]:
            res = self._apply([Op(self.namespace, key, SET, payload, 0, value, None,
                                  self.expires_at())], [bkey])
            self.counters.writes += 1
            self._publish(bkey, value, payload, ttl_, res[0])

    def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        prepared = [self.prepare(k, v, ttl) for k, v in check_mapping(mapping).items()]
        if not prepared:
            return
        expires_at = self.expires_at()
        ops = [Op(self.namespace, k, SET, p, 0, v, None, expires_at) for k, v, p, _ in prepared]
        bkeys = [self.prefix + k for k, _, _, _ in prepared]
        with contextlib.ExitStack() as stack:
            for lock in self.locks_for(bkeys):
                stack.enter_context(lock)
            results = self._apply(ops, bkeys)
            self.counters.writes += len(ops)
            for (_, v, p, t), bkey, res in zip(prepared, bkeys, results):
                self._publish(bkey, v, p, t, res)

    def delete(self, key: str) -> None:
        self.delete_many([key])

    def delete_many(self, keys: Iterable[str]) -> None:
        ks = list(dict.fromkeys(self.check_write_key(k) for k in check_keys(keys)))
        if self.closed:
            raise self.closed_error()
        if not ks:
            return
        bkeys = [self.prefix + k for k in ks]
        with contextlib.ExitStack() as stack:
            for lock in self.locks_for(bkeys):
                stack.enter_context(lock)
            results = self._apply([Op(self.namespace, k, DELETE) for k in ks], bkeys)
            self.counters.writes += len(ks)
            for bkey, res in zip(bkeys, results):
                if res.applied:
                    self.gens[self.stripe(bkey)] += 1
                    self.backend_drop(bkey, res.version)

    def incr(self, key: str, delta: int = 1) -> int:
        key = self.check_write_key(key)
        delta = self.check_delta(key, delta)
        if self.closed:
            raise self.closed_error()
        bkey = self.prefix + key
        with self.locks[self.stripe(bkey)]:
            # Read under the lock: a store without atomic adds gets the absolute value,
            # which is only right if no other in-process incr slips in between. Not
            # through get(): a single-flight load of this key would need this lock to
            # fill, and we would wait for it forever.
            current = self.as_counter(key, self._read_locked(key, bkey))
            new = current + delta
            op = Op(self.namespace, key, ADD, self.dumps(new), delta, new, None,
                    self.expires_at())
            if self._clock is not None:
                op = self.versioned([op])[0]
            res = self._apply([op], [bkey], versioned=True)[0]
            self.counters.writes += 1
            value = new if res.value is NOTSET or res.value is None else res.value
            if op.version is not None and res.applied and res.version != op.version:
                # Every ADD lands (deltas from all processes sum): this one changed a row
                # that keeps another process's newer version, which so no longer names
                # one value (that process's copy of it may be out already). A tombstone
                # newer than both instead; the next read loads the store's total.
                self.gens[hash(bkey) & MASK] += 1
                self.backend_drop(bkey, self.versioned([op])[0].version)
            else:
                self._publish(bkey, value, None, self.ttl, res)
        return int(value)

    def _read_locked(self, key: str, bkey: str) -> Any:
        value = self.cached(bkey)
        if value is not MISS:
            return value
        self.counters.misses += 1
        row = self.fetch(key)
        return None if row is None else self.decode(row)[0]


class WriteAroundEngine(WriteThroughEngine):
    """Store, then invalidate the cached copy; reads fill it with ``fill_ttl``."""

    drops_copies = True


