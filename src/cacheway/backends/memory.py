"""MemoryBackend: a thread-safe LRU with per-entry TTL, in process memory.

It keeps the object itself (no copy), as cachetools does.

>>> b = MemoryBackend(max_entries=2)
>>> b.set("a", 1, None, None); b.set("b", 2, None, None); b.set("c", 3, None, None)
>>> b.get("a") is MISS, b.get("c")
(True, 3)
"""

from __future__ import annotations

import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import ConfigError
from .base import MISS, Item, MemoryView, raise_for_keys

__all__ = ["MemoryBackend"]

# Per-entry bookkeeping charged against max_bytes, on top of key and payload sizes.
_OVERHEAD = 64

def _reinit_after_fork(lock: Any) -> None:
    """Start ``lock`` afresh in a forked child. The one use of a CPython private
    (``_at_fork_reinit``, what ``threading`` itself calls after a fork): a new lock
    object would not do, since engines hold this one (``MemoryView.lock``)."""
    lock._at_fork_reinit()


class MemoryBackend:
    """An LRU dict of cached copies with optional ``max_entries``, ``max_bytes`` and TTLs.

    ``timer`` is injectable (``time.monotonic`` by default) so tests control expiry.
    Reads take no lock: dict operations on ``str`` keys are atomic under the GIL, and the
    only race (a key evicted between lookup and ``move_to_end``) is caught.

    A bounded backend keeps one LRU order over every key (an ``OrderedDict``). An
    unbounded one has no order to keep: it holds one plain dict per namespace, keyed by
    the key within it (``"ns:key"`` is split at its first ``":"``), so a cache's engine
    reads and writes its namespace's dict without building ``"ns:key"`` strings.

    :meth:`fast_view` declares those dicts to engines (see :class:`MemoryView`); a
    subclass that overrides ``get`` or ``set`` gets no view, so its overrides always run.
    """

    local = True

    def __init__(
        self,
        max_entries: int | None = None,
        max_bytes: int | None = None,
        *,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        for name, v in (("max_entries", max_entries), ("max_bytes", max_bytes)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name} must be a positive int or None, not {v!r}")
        if not callable(timer):
            raise ConfigError(f"timer must be callable, not {timer!r}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._timer = timer
        self._lru = max_entries is not None or max_bytes is not None
        # Bounded: every key, in LRU order. Unbounded: the keys of no cache's namespace.
        self._data: dict[str, Item] = OrderedDict() if self._lru else {}
        # Unbounded only: namespace -> {key within it: item}, one per cache namespace
        self._spaces: dict[str, dict[str, Item]] = {}
        self._grace = 0.0
        # Reentrant: a write-back engine guards its dirty table with this lock too, and
        # calls the backend while holding it.
        self._lock = threading.RLock()
        self._bytes = 0
        self._evictions = 0

    def __repr__(self) -> str:
        return f"MemoryBackend(max_entries={self.max_entries}, max_bytes={self.max_bytes})"

    def __len__(self) -> int:
        return len(self._data) + sum(len(space) for space in list(self._spaces.values()))

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not MISS  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def keys(self) -> list[str]:
        """Every key held (expired ones not yet dropped too), in no promised order."""
        out = list(self._data)
        for name, space in list(self._spaces.items()):
            out.extend(f"{name}:{key}" for key in list(space))
        return out

    @property
    def ordered(self) -> bool:
        """True when every key lives in one LRU ``OrderedDict`` (a bounded backend)."""
        return self._lru

    def fast_view(self, namespace: str) -> MemoryView | None:
        """The dict an engine for ``namespace`` may read and write inline, or None when
        this class overrides ``get`` or ``set`` (a view would bypass them).

        >>> b = MemoryBackend(max_entries=10); b.set("ns:k", 1, None, None)
        >>> view = b.fast_view("ns"); view.ordered, view.data["ns:k"][0]
        (True, 1)
        >>> u = MemoryBackend(); u.set("ns:k", 2, None, None); u.fast_view("ns").data
        {'k': (2, None, 0, 0.0)}
        """
        kind = type(self)
        if kind.get is not MemoryBackend.get or kind.set is not MemoryBackend.set:
            return None
        ordered = self._lru
        return MemoryView(
            data=self._data if ordered else self._space(namespace),
            namespaced=not ordered,
            ordered=ordered,
            timer=self._timer,
            lock=self._lock,
            max_entries=self.max_entries,
            evict=self._evict,
            counts_bytes=self.max_bytes is not None,
            gate=None,
        )

    def _space(self, namespace: str) -> dict[str, Item]:
        """The dict of one namespace's entries (unbounded backends only), made when a
        cache's engine for that namespace asks for it; it lives as long as the backend,
        so the engine may keep it. Entries already stored under ``"namespace:..."``
        move in."""
        assert not self._lru, "a bounded MemoryBackend keeps one LRU dict"
        space = self._spaces.get(namespace)
        if space is None:
            with self._lock:
                space = self._spaces.get(namespace)
                if space is None:
                    space = {}
                    head = namespace + ":"
                    for key in [k for k in self._data if k.startswith(head)]:
                        space[key[len(head):]] = self._data.pop(key)
                    self._spaces[namespace] = space
        return space

    def _where(self, key: str) -> tuple[dict[str, Item], str]:
        """The dict holding ``key`` and its key there: a namespace's own dict when an
        engine made one for it, else the dict of every other key."""
        if not self._lru:
            try:
                head, sep, rest = key.partition(":")
            except (AttributeError, TypeError) as exc:  # not a str
                raise_for_keys([key], exc)
                raise
            if sep:
                space = self._spaces.get(head)
                if space is not None:
                    return space, rest
        return self._data, key

    def peek(self, key: str) -> Any:
        """The live value of ``key`` or MISS, without touching LRU order or stats."""
        try:
            data, k = self._where(key)
            item = data.get(k)
        except TypeError as exc:  # an unhashable key
            raise_for_keys([key], exc)
            raise
        if item is None or (item[1] is not None and item[1] <= self._timer()):
            return MISS
        return item[0]

    @property
    def evictions(self) -> int:
        return self._evictions

    @property
    def currsize(self) -> int:
        """Bytes charged against ``max_bytes`` (payload + key + overhead per entry)."""
        return self._bytes

    def get(self, key: str) -> Any:
        try:
            data, k = self._where(key)
            item = data.get(k)
        except TypeError as exc:  # an unhashable key
            raise_for_keys([key], exc)
            raise
        if item is None:
            return MISS
        if item[1] is not None and item[1] <= self._timer():
            self._expire(data, k, item)
            return MISS
        if self._lru:
            try:  # noqa: SIM105 - contextlib.suppress costs a call on the hot path
                self._data.move_to_end(key)  # type: ignore[attr-defined]
            except KeyError:  # evicted by another thread since the lookup; still valid
                pass
        return item[0]

    # -- entry metadata: early refresh and stale-if-error ------------------------------
    def get_meta(self, key: str) -> Any:
        """``(value, seconds left or None, load time)`` of a live entry, or MISS."""
        try:
            data, k = self._where(key)
            item = data.get(k)
        except TypeError as exc:  # an unhashable key
            raise_for_keys([key], exc)
            raise
        if item is None:
            return MISS
        left = None
        if item[1] is not None:
            left = item[1] - self._timer()
            if left <= 0:
                self._expire(data, k, item)
                return MISS
        if self._lru:
            try:  # noqa: SIM105 - as in get()
                self._data.move_to_end(key)  # type: ignore[attr-defined]
            except KeyError:
                pass
        return item[0], left, item[3]

    def keep_stale(self, seconds: float) -> None:
        """Keep expired entries ``seconds`` longer for :meth:`get_stale` (stale-if-error)."""
        self._grace = max(self._grace, float(seconds))

    def get_stale(self, key: str, max_age: float) -> Any:
        """The entry's value even if it expired less than ``max_age`` seconds ago."""
        try:
            data, k = self._where(key)
            item = data.get(k)
        except TypeError as exc:  # an unhashable key
            raise_for_keys([key], exc)
            raise
        if item is None:
            return MISS
        if item[1] is not None and self._timer() - item[1] > max_age:
            return MISS
        return item[0]

    def _expire(self, data: dict[str, Item], key: str, item: Item) -> None:
        if self._grace and item[1] is not None and self._timer() < item[1] + self._grace:
            return  # expired for readers, kept a while for stale-if-error
        with self._lock:
            if data.get(key) is item:
                del data[key]
                self._bytes -= item[2]
                self._evictions += 1

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        out = {}
        for key in keys:
            v = self.get(key)
            if v is not MISS:
                out[key] = v
        return out

    def _size(self, key: str, value: Any, payload: bytes | None) -> int:
        if self.max_bytes is None:
            return 0
        body = len(payload) if payload is not None else sys.getsizeof(value)
        return body + len(key) + _OVERHEAD

    def set(
        self, key: str, value: Any, payload: bytes | None, ttl: float | None,
        version: int | None = None, *, delta: float = 0.0,
    ) -> None:
        expires = None if ttl is None else self._timer() + ttl
        if not self._lru:  # unbounded: no order, no sizes
            data, k = self._where(key)
            with self._lock:  # against _expire's check-then-delete
                data[k] = (value, expires, 0, delta)
            return
        data = self._data
        with self._lock:
            try:
                size = 0 if self.max_bytes is None else self._size(key, value, payload)
                old = data.get(key)
            except TypeError as exc:  # an unhashable key, or one without a length
                raise_for_keys([key], exc)
                raise
            data[key] = (value, expires, size, delta)
            if old is not None:
                # Replacing keeps the slot; only its LRU position and size change.
                data.move_to_end(key)  # type: ignore[attr-defined]
                self._bytes += size - old[2]
                if size > old[2] and self.max_bytes is not None:
                    self._evict()
                return
            self._bytes += size
            if (self.max_entries is not None and len(data) > self.max_entries) or (
                self.max_bytes is not None and self._bytes > self.max_bytes
            ):
                self._evict()

    def _evict(self) -> None:
        data = self._data
        max_entries, max_bytes = self.max_entries, self.max_bytes
        while data and (
            (max_entries is not None and len(data) > max_entries)
            or (max_bytes is not None and self._bytes > max_bytes)
        ):
            _, item = data.popitem(last=False)  # type: ignore[call-arg]
            self._bytes -= item[2]
            self._evictions += 1

    def set_many(
        self, items: Sequence[tuple[str, Any, bytes | None, int | None]], ttl: float | None
    ) -> None:
        for key, value, payload, version in items:
            self.set(key, value, payload, ttl, version)

    def delete(self, key: str, version: int | None = None) -> None:
        data, k = self._where(key)
        with self._lock:
            try:
                old = data.pop(k, None)
            except TypeError as exc:  # an unhashable key
                raise_for_keys([key], exc)
                raise
            if old is not None:
                self._bytes -= old[2]

    def delete_many(
        self, keys: Sequence[str], versions: Sequence[int | None] | None = None
    ) -> None:
        """Delete ``keys``. ``versions`` are taken and ignored, as :meth:`delete` ignores
        its version: copies only this process sees need no tombstones."""
        for key in keys:
            self.delete(key)

    def after_fork_in_child(self) -> None:
        """In a forked child, a lock some thread of the parent held at the fork would
        stay held for good: start it afresh (TwoLevelBackend calls this for its L1; an
        engine that shares this lock holds it across the fork itself)."""
        _reinit_after_fork(self._lock)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            for space in self._spaces.values():
                space.clear()  # emptied, not replaced: engines hold them
            self._bytes = 0

    def close(self) -> None:
        self.clear()
