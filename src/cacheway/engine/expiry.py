"""Data expiry (``expire=`` on a namespace): the data ends ``expire`` seconds after its
last write, in the cache and in the store alike.

Each write is stamped when it is accepted: ``Op.expires_at = time.time() + expire``
(write-back entries and journal records carry the stamp to the store). Cached copies
never outlive it (a write's copy lives at most ``expire``; a fill's at most what is left
of the row's), a pending write-back entry past its stamp reads as absent, and the store
never returns an expired row. Expired rows are deleted in the background by a
:class:`Purger` (one per cache), or by ``store.purge_expired()``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import ClosedError, ConfigError, StoreError

__all__ = ["Expiry", "Purger", "check_expire"]

log = logging.getLogger("cacheway")


def check_expire(expire: object) -> float:
    """``expire`` as seconds > 0, else ConfigError naming it."""
    if isinstance(expire, bool) or not isinstance(expire, (int, float)) or not (
            0 < expire < float("inf")):
        raise ConfigError(f"expire must be a number of seconds > 0, not {expire!r}")
    return float(expire)


class Expiry:
    """One namespace's ``expire``: the stamp of a write and the lifetime of copies."""

    __slots__ = ("clock", "seconds")

    def __init__(self, seconds: float, clock: Callable[[], float] = time.time) -> None:
        self.seconds = seconds
        self.clock = clock

    def stamp(self) -> float:
        """When the data of a write accepted now ends."""
        return self.clock() + self.seconds

    def cap(self, ttl: float | None) -> float:
        """A copy's ttl: never longer than the data lives."""
        return self.seconds if ttl is None else min(ttl, self.seconds)

    def left(self, ttl: float | None, expires_at: float | None) -> float | None:
        """The ttl of a copy filled from a row that ends at ``expires_at`` (None: the row
        never ends): at most what is left of it; <= 0 when it has ended."""
        if expires_at is None:
            return ttl
        left = expires_at - self.clock()
        return left if ttl is None else min(ttl, left)

    def ended(self, expires_at: float | None) -> bool:
        return expires_at is not None and expires_at <= self.clock()


class Purger:
    """Deletes expired rows of the stores of a cache's expiring namespaces, in a daemon
    thread: every ``interval`` seconds, batches of ``limit`` until one comes back short.
    A failing store is logged (at most once a minute) and tried again next round."""

    def __init__(self, interval: float, limit: int = 1000) -> None:
        self.interval = interval
        self.limit = limit
        self.purged = 0
        self._stores: list[Any] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._logged = 0.0
        self._thread: threading.Thread | None = None

    def add(self, store: Any, expire: float) -> None:
        """Purge ``store`` too (a namespace of ``expire`` seconds writes to it)."""
        with self._lock:
            self.interval = min(self.interval, max(0.5, expire / 4))
            if all(s is not store for s in self._stores):
                self._stores.append(store)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="cacheway-expiry", daemon=True)
                self._thread.start()

    def purge(self) -> int:
        """One round over every store now; how many rows were deleted."""
        with self._lock:
            stores = list(self._stores)
        total = 0
        for store in stores:
            while True:
                n = int(store.purge_expired(self.limit))
                total += n
                if n < self.limit or self._stop.is_set():
                    break
        self.purged += total
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.purge()
            except ClosedError:
                return  # the cache is closing: its stores are closed or about to be
            except StoreError as exc:
                now = time.monotonic()
                if now - self._logged > 60.0:
                    self._logged = now
                    log.warning("cacheway: purging expired rows failed (next try in "
                                "%.0f s): %s", self.interval, exc)

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
