"""Cross-process single flight on a shared backend that offers leases (Redis).

One lease holder (in any process) loads a missing key and fills it; the other readers
poll for its fill for at most the lease's lifetime, then load by themselves (a dead
holder's lease has expired by then).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from ..backends.base import LeaseBackend
from ..errors import BackendError

if TYPE_CHECKING:
    from .read import Engine

__all__ = ["LEASE_ACQUIRED", "LEASE_HELD", "LEASE_NOT_FOUND", "LEASE_VALUE", "Leases"]

# lease_get answers (see RedisBackend.lease_get)
LEASE_VALUE, LEASE_ACQUIRED, LEASE_HELD, LEASE_NOT_FOUND = 0, 1, 2, 3


class Leases:
    """The leased load of one engine's misses."""

    def __init__(self, engine: Engine, backend: LeaseBackend, wait: float) -> None:
        self._engine = engine
        self._backend = backend
        self._lease_get = backend.lease_get
        self._wait = wait

    def load(self, key: str, bkey: str, stripe: int, gen: int) -> tuple[bool, Any]:
        """(found, value) of ``key``: from the lease holder's fill, or loaded here."""
        engine = self._engine
        if engine.undropped and bkey in engine.undropped:
            # the copy there may be older than the store (engine.undropped): a lease would
            # answer it; load, and fill set-if-newer over it
            return engine.load(key, bkey, stripe, gen, fill=True)
        token = os.urandom(12)
        deadline = time.monotonic() + self._wait
        delay = 0.001
        while True:
            try:
                state, value = self._lease_get(bkey, token)
            except BackendError as exc:
                engine.backend_down(exc)
                return engine.load(key, bkey, stripe, gen, fill=False)
            if state == LEASE_VALUE:
                return True, value
            if state == LEASE_NOT_FOUND:
                return False, None
            if state == LEASE_ACQUIRED:
                return self._fill(key, bkey, stripe, gen, token)
            if time.monotonic() >= deadline:
                # The holder is slow or gone: load, but only a lease holder may fill.
                return engine.load(key, bkey, stripe, gen, fill=False)
            time.sleep(delay)
            delay = min(0.02, delay * 1.5)

    def _fill(self, key: str, bkey: str, stripe: int, gen: int, token: bytes
              ) -> tuple[bool, Any]:
        engine = self._engine
        try:
            row = engine.fetch(key)
        except BaseException:
            # The waiters would poll out the lease (lease_ttl, 10 s by default) for a
            # fill that never comes: give it up, so each loads (and sees the error) now.
            try:
                self._backend.lease_release(bkey, token)
            except BackendError as exc:
                engine.backend_down(exc)
            raise
        value = payload = version = ttl = None
        if row is not None:
            value, payload = engine.decode(row)
            version = row.version
            ttl = engine.fill_ttl_for(row.expires_at)  # (expire=: what is left of the row)
        try:
            if engine.can_fill(bkey, stripe, gen) and (ttl is None or ttl > 0):
                # Any write since the lease was taken replaced it, so this fill then fails.
                self._backend.lease_fill(
                    bkey, token, value, payload, ttl, version, found=row is not None)
            else:
                # A write here since the load began (or one to another key of its stripe,
                # or a pending write-back entry) voids the fill, as does a row that ended;
                # the lease may still be in Redis, and the other readers would poll it
                # out (lease_ttl): give it up.
                self._backend.lease_release(bkey, token)
        except BackendError as exc:
            engine.backend_down(exc)
        return row is not None, value
