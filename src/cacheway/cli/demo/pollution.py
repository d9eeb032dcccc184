"""The "cache pollution" column: cached entries that were never read while cached.

An *entry* is one stay of a key in the cache: it starts when a write or a read-fill puts
the key in, and ends when the LRU evicts it, a TTL expires it, an invalidation drops it,
or the run ends. Overwriting a cached key does not start a new entry. An entry is *read*
when the application's ``get`` finds it in the cache; the ``get`` whose miss filled it
does not count (that value came from the store). Pollution is the share of entries
that ended, or were still there at the end, without a single read: room the cache spent
on copies nobody used.

The runner marks reads itself, outside the timed call (:meth:`Residency.touch` before
each ``get``), so reads that a policy answers from its dirty table count the same as
backend hits, and internal reads (a textbook ``incr`` is a ``get`` then a ``set``) do
not count at all.

>>> r = Residency()
>>> r.admit("a"); r.admit("b"); r.touch("a"); r.leave("b", evicted=True)
>>> r.summary()["cache_pollution"]
0.5
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from cacheway.backends.memory import MemoryBackend

__all__ = ["ENGINE_KEY_PREFIX", "Residency", "TrackingMemoryBackend"]

# A cache's default namespace keeps key "k" as backend key ":k" (Engine.prefix); a test
# in tests/test_cli.py fails if this drifts (no entry would ever be seen as read).
ENGINE_KEY_PREFIX = ":"


class Residency:
    """Which keys are cached now and whether each was read during its current stay."""

    def __init__(self, key_prefix: str = "") -> None:
        self.key_prefix = key_prefix
        self.resident: dict[str, bool] = {}  # cache key -> read during this stay
        self.inserts = 0
        self.read = 0  # entries read at least once while cached
        self.evicted_unread = 0  # by the LRU or a TTL
        self.dropped_unread = 0  # by an invalidation or a delete

    def admit(self, key: str) -> None:
        if key not in self.resident:
            self.resident[key] = False
            self.inserts += 1

    def leave(self, key: str, *, evicted: bool) -> None:
        was_read = self.resident.pop(key, None)
        if was_read is False:
            if evicted:
                self.evicted_unread += 1
            else:
                self.dropped_unread += 1

    def touch(self, app_key: str) -> None:
        """The application is about to ``get`` ``app_key``: a read if it is cached."""
        key = self.key_prefix + app_key
        if self.resident.get(key) is False:
            self.resident[key] = True
            self.read += 1

    def summary(self) -> dict[str, Any]:
        """The pollution numbers, counting entries still cached and unread as unread."""
        at_end = sum(1 for was_read in self.resident.values() if not was_read)
        unread = self.evicted_unread + self.dropped_unread + at_end
        return {
            "cache_inserts": self.inserts,
            "cache_entries_read": self.read,
            "cache_evicted_unread": self.evicted_unread,
            "cache_dropped_unread": self.dropped_unread,
            "cache_unread_at_end": at_end,
            "cache_pollution": unread / self.inserts if self.inserts else None,
        }


class _EvictionHook(OrderedDict[str, Any]):
    """MemoryBackend's LRU dict, reporting the entries that come and go: every write into
    it (a cache's inlined hot path writes the dict itself) and every drop, for room or
    TTL (``popitem``, ``del``) or by a delete (``pop``)."""

    def __init__(self, residency: Residency) -> None:
        super().__init__()
        self.residency = residency

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self.residency.admit(key)

    def popitem(self, last: bool = True) -> tuple[str, Any]:
        key, item = super().popitem(last)
        self.residency.leave(key, evicted=True)
        return key, item

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self.residency.leave(key, evicted=True)

    def pop(self, key: str, *default: Any) -> Any:
        found = key in self
        item = super().pop(key, *default)
        if found:
            self.residency.leave(key, evicted=False)
        return item


class TrackingMemoryBackend(MemoryBackend):
    """A :class:`MemoryBackend` that records each entry's stay in a :class:`Residency`.

    Only bookkeeping is added: what it keeps, evicts and returns is MemoryBackend's, in
    one LRU dict whatever the bounds (the hooked one), which caches may still read and
    write inline (it overrides neither ``get`` nor ``set``, so it declares
    MemoryBackend's view of that dict), as they do a plain MemoryBackend.
    """

    def __init__(self, max_entries: int | None = None, max_bytes: int | None = None) -> None:
        super().__init__(max_entries=max_entries, max_bytes=max_bytes)
        self.residency = Residency(ENGINE_KEY_PREFIX)
        self._lru = True  # every key in the hooked dict, also without bounds
        self._data = _EvictionHook(self.residency)
