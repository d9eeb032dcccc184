"""Copies a failed drop left behind: the backend was down when a write needed its copy
dropped (or replaced), so the copy there may be older than the store.

A write-through ``set`` whose store write succeeded while Redis was unreachable could not
drop the old copy; once Redis answers again, every process would read that old copy until
its ttl. The engine records such keys here. This process reads them from the store (a
miss) for as long as they are recorded, and a thread retries the drops every
:data:`RETRY_EVERY` seconds until the backend takes them, so other processes sharing the
backend read the store's value again soon after the backend is back (they cannot know
before: the copy is all they see).

>>> deleted = []
>>> copies = UndroppedCopies(lambda bkey, version: deleted.append((bkey, version)))
>>> copies.add("k", 7)
>>> "k" in copies, bool(copies)
(True, True)
>>> copies.retry(), deleted, "k" in copies
(True, [('k', 7)], False)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["LIMIT", "RETRY_EVERY", "UndroppedCopies"]

log = logging.getLogger("cacheway")

RETRY_EVERY = 0.2  # seconds between retries while the backend refuses the drops
LIMIT = 100_000  # keys remembered; beyond, the copies may stay stale until their ttl


class UndroppedCopies:
    """Backend keys whose drop failed, with the version the drop carried (None: drop
    whatever copy is there), and the thread retrying them."""

    def __init__(self, delete: Callable[[str, int | None], object],
                 stopped: Callable[[], bool] = lambda: False) -> None:
        self._delete = delete
        self._stopped = stopped
        self._lock = threading.Lock()
        self._keys: dict[str, int | None] = {}
        self._retrying = False
        self._overflow_logged = False

    def __bool__(self) -> bool:
        return bool(self._keys)

    def __contains__(self, bkey: object) -> bool:
        return bkey in self._keys

    def add(self, bkey: str, version: int | None) -> None:
        """Remember ``bkey`` (a later failed drop of it replaces the version) and start
        the retrying thread if it is not running."""
        with self._lock:
            if len(self._keys) >= LIMIT and bkey not in self._keys:
                if not self._overflow_logged:
                    self._overflow_logged = True
                    log.error("cacheway: more than %d cached copies could not be dropped "
                              "while the backend was down: the others may be served stale "
                              "until their ttl", LIMIT)
                return
            self._keys[bkey] = version
            if self._retrying:
                return
            self._retrying = True
        threading.Thread(target=self._retry_until_done, daemon=True,
                         name="cacheway-drop-retry").start()

    def retry(self) -> bool:
        """Drop the recorded copies now, in order, up to the first failure; True when none
        is left."""
        with self._lock:
            items = list(self._keys.items())
        for bkey, version in items:
            try:
                self._delete(bkey, version)
            except Exception as exc:  # noqa: BLE001 - still down: the thread tries again
                log.debug("cacheway: retried drop of %r failed: %r", bkey, exc)
                return False
            with self._lock:
                if bkey in self._keys and self._keys[bkey] == version:
                    del self._keys[bkey]
        with self._lock:
            return not self._keys

    def forget(self) -> None:
        """Stop remembering (a forked child: the parent retries its own)."""
        with self._lock:
            self._keys.clear()
            self._retrying = False

    def _retry_until_done(self) -> None:
        while True:
            time.sleep(RETRY_EVERY)
            stopped = self._stopped()
            done = stopped or self.retry()
            with self._lock:
                if stopped or (done and not self._keys):
                    self._retrying = False
                    return
