"""TwoLevelBackend: process memory (L1) in front of Redis (L2), kept coherent across processes.

Reads hit the L1 first; an L1 miss reads Redis and fills the L1 with at most the TTL Redis
has left. Writes go to Redis first, then to this process's L1. Other processes learn of a
write through Redis's own client-side caching protocol (``CLIENT TRACKING ... BCAST``):
the connection and its thread are in ``_invalidations``, with why tracking and why RESP2.
The price: a process also receives the invalidations of its own writes and drops those
L1 copies (the next read refills from Redis); that is tolerated, never wrong.

When the connection drops (Redis restart, ``CLIENT KILL``, no answer to a health PING),
the subscriber thread clears the L1 and bypasses it (reads go to Redis) until the
subscription is back. Only that thread (and ``close``, once it stopped) flips the
"L1 is trustworthy" gate.

>>> l2 = cw.RedisBackend("redis://127.0.0.1:6379/0", prefix="app:")  # doctest: +SKIP
>>> backend = TwoLevelBackend(cw.MemoryBackend(max_entries=10_000), l2)  # doctest: +SKIP
>>> cache = cw.Cache(store=cw.SQLiteStore("app.db"), backend=backend)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..errors import ConfigError, InvalidKeyError
from ..serializers import Serializer
from ..stores import track
from ._invalidations import Subscriber
from ._l1_guard import L1Guard
from .base import MISS, MemoryView, invalid_key, raise_for_keys
from .memory import MemoryBackend
from .redis import RedisBackend

__all__ = ["TwoLevelBackend"]

log = logging.getLogger("cacheway")


def _require_str(keys: Iterable[object]) -> None:
    """Writes refuse a key that is not a str before touching either level (Redis would
    refuse it, but the L1's bookkeeping would fail on an unhashable one first)."""
    for key in keys:
        if not isinstance(key, str):
            raise invalid_key(key) or InvalidKeyError(f"bad key {key!r:.60}")


class TwoLevelBackend:
    """A :class:`MemoryBackend` (L1) in front of a :class:`RedisBackend` (L2).

    Give each ``TwoLevelBackend`` its own L1. ``l1_ttl`` caps the life of every L1 copy
    (seconds; None: only the L2 TTL bounds it). ``on_invalidate(keys)`` runs on the
    subscriber thread after each invalidation from Redis (keys without the prefix; None
    means "everything", after a flush); keep it short. ``health_interval`` is how long
    the connection may stay silent before a PING, and ``health_timeout`` how long the
    PING may go unanswered before the connection counts as dropped. ``sleep(seconds)``
    waits between reconnection attempts (injectable for tests).

    ``close()`` stops the subscriber thread, closes its connection and clears the L1; it
    closes neither level (the caller passed them in and owns them), except the L2 when
    ``owns_l2`` says this backend owns it (``cacheway.open`` builds both from a URL).

    :meth:`fast_view` declares the L1 to engines, with a :class:`~.base.Gate` that is
    open exactly while invalidations flow. Only a bounded L1 (``max_entries=`` or
    ``max_bytes=``) has it: an unbounded one keeps namespaces apart in its own dicts, and
    its hits take the general path (about 2.5x the time of an inlined hit: 585-640 ns vs
    236 ns, ``bench/consistency_l1.py``).

    >>> l1 = cw.MemoryBackend(max_entries=100_000)  # doctest: +SKIP
    >>> backend = TwoLevelBackend(l1, cw.RedisBackend(url))  # doctest: +SKIP
    >>> backend.wait_ready(5.0)  # doctest: +SKIP
    True
    """

    local = False

    def __init__(
        self,
        l1: MemoryBackend,
        l2: RedisBackend,
        *,
        l1_ttl: float | None = None,
        on_invalidate: Callable[[list[str] | None], object] | None = None,
        health_interval: float = 1.0,
        health_timeout: float = 2.0,
        reconnect_delay: tuple[float, float] = (0.05, 2.0),
        sleep: Callable[[float], object] | None = None,
        ready_timeout: float = 1.0,
        owns_l2: bool = False,
    ) -> None:
        if not isinstance(l1, MemoryBackend):
            raise ConfigError(f"l1 must be a cw.MemoryBackend, not {l1!r}")
        if not isinstance(l2, RedisBackend):
            raise ConfigError(f"l2 must be a cw.RedisBackend, not {l2!r}")
        for name, v in (("l1_ttl", 0 if l1_ttl is None else l1_ttl),
                        ("ready_timeout", ready_timeout)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ConfigError(f"{name} must be a number of seconds >= 0, not {v!r}")
        if on_invalidate is not None and not callable(on_invalidate):
            raise ConfigError(f"on_invalidate must be callable, not {on_invalidate!r}")
        self._l1 = l1
        self._l2 = l2
        self._owns_l2 = bool(owns_l2)
        self._l1_get = l1.get
        # A bounded L1 (the usual kind) is one LRU dict that get() reads inline; an
        # unbounded one (or one whose get/set are overridden) is read through its get().
        view = l1.fast_view("") if l1.ordered else None
        self._l1_view = view
        self._l1_data: Any = view.data if view is not None else None
        self._l1_timer: Any = view.timer if view is not None else None
        self._guard = guard = L1Guard(l1, None if l1_ttl is None else float(l1_ttl))
        # Open while invalidations flow; flipped only by the subscriber thread (and by
        # close and a fork).
        self._gate = guard.gate
        self._size_payload = l1.max_bytes is not None
        self._prefix = l2.prefix
        self._prefix_b = l2.prefix.encode()
        self._id = uuid.uuid4().hex[:12]
        self.on_invalidate = on_invalidate
        self.invalidations = 0
        self.disconnects = 0
        self._subscriber = Subscriber(
            l2.client, name=self._id, prefix=self._prefix, describe=l2,
            health_interval=health_interval, health_timeout=health_timeout,
            reconnect_delay=reconnect_delay, sleep=sleep,
            subscribed=self._subscribed, invalidated=self._invalidate, dropped=self._dropped,
        )
        self._subscriber.start()
        track(self)
        # Use the L1 from the first read when Redis is there; when it is not, start
        # bypassed rather than fail: the thread keeps trying.
        self._subscriber.ready.wait(ready_timeout)

    def after_fork_in_child(self) -> None:
        """A forked child has no subscriber thread: nothing would keep its L1 fresh. It
        clears and bypasses the L1 and starts a listener of its own (the inherited
        connection is the parent's socket: left untouched)."""
        if self._subscriber.stopping.is_set():
            return
        self._guard.after_fork_in_child()
        self._subscriber.restart_in_child()

    def __repr__(self) -> str:
        state = "L1 in use" if self._gate.open else "L1 bypassed"
        return f"TwoLevelBackend({self._l1!r}, {self._l2!r}, {state})"

    # -- configuration and counters ------------------------------------------------------
    def bind_serializer(self, serializer: Serializer) -> None:
        """The L2 keeps the cache's bytes; the L1 keeps objects."""
        self._l2.bind_serializer(serializer)

    @property
    def l1(self) -> MemoryBackend:
        return self._l1

    @property
    def l2(self) -> RedisBackend:
        return self._l2

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def evictions(self) -> int:
        """Entries the L1 dropped for room or TTL (Redis does not tell us its own)."""
        return self._l1.evictions

    @property
    def decode_errors(self) -> int:
        return self._l2.decode_errors

    @property
    def trusted(self) -> bool:
        """True while invalidations flow and the L1 answers reads."""
        return self._gate.open

    @property
    def subscriber_id(self) -> int | None:
        """The Redis ``CLIENT ID`` of the invalidation connection (None while down)."""
        return self._subscriber.client_id

    @property
    def listening(self) -> bool:
        """True while the subscriber thread runs (until :meth:`close`)."""
        return self._subscriber.alive

    @property
    def owns_l2(self) -> bool:
        """True when :meth:`close` closes the L2 too (``owns_l2=True``)."""
        return self._owns_l2

    def fast_view(self, namespace: str) -> MemoryView | None:
        """The L1's dict for engines to read hits from while ``view.gate.open`` (see
        :class:`~.base.MemoryView`; writes go through :meth:`set`), or None when the L1
        is unbounded (its own get() splits namespaces) or this class overrides ``get``
        or ``set``."""
        kind = type(self)
        view = self._l1_view
        if view is None or kind.get is not TwoLevelBackend.get or (
                kind.set is not TwoLevelBackend.set):
            return None
        return MemoryView(
            data=view.data, namespaced=False, ordered=True, timer=view.timer,
            lock=view.lock, max_entries=view.max_entries, evict=view.evict,
            counts_bytes=view.counts_bytes, gate=self._gate,
        )

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the invalidation connection is subscribed; True if it is."""
        return self._subscriber.ready.wait(timeout)

    @property
    def _trusted(self) -> bool:
        # What engines read before fast_view's gate (kept until they use the gate).
        return self._gate.open

    # -- reads -----------------------------------------------------------------------------
    def get(self, key: str) -> Any:
        if self._gate.open:
            # MemoryBackend.get inlined: its call frame would be a third of an L1 hit.
            data = self._l1_data
            if data is not None:
                try:
                    item = data.get(key)
                except TypeError as exc:  # an unhashable key
                    raise_for_keys([key], exc)
                    raise
                if item is not None and (item[1] is None or item[1] > self._l1_timer()):
                    try:  # noqa: SIM105 - contextlib.suppress costs a call on the hot path
                        data.move_to_end(key)
                    except KeyError:  # evicted meanwhile; still a valid read
                        pass
                    return item[0]
            value = self._l1_get(key)  # expires the entry with the L1's own bookkeeping
            if value is not MISS:
                return value
            return self._fill([key]).get(key, MISS)
        return self._l2.get(key)

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        if not self._gate.open:
            return self._l2.get_many(keys)
        out: dict[str, Any] = {}
        missing: list[str] = []
        l1_get = self._l1_get
        for key in keys:
            value = l1_get(key)
            if value is MISS:
                missing.append(key)
            else:
                out[key] = value
        if missing:
            out.update(self._fill(missing))
        return out

    def _fill(self, keys: list[str]) -> dict[str, Any]:
        """Read ``keys`` from Redis with their TTLs and copy them into the L1, unless an
        invalidation (or a write of ours) touched a key after its token was taken."""
        tokens = [self._guard.token(k) for k in keys]
        found = self._l2.get_many_ttl(keys, payloads=self._size_payload)
        if found:
            self._guard.fill(keys, tokens, found)
        return {k: v[0] for k, v in found.items()}

    # -- leases: the L2's, so cross-process single flight works through an L1 too ----------
    @property
    def leases(self) -> bool:
        return self._l2.leases

    @property
    def lease_ttl(self) -> float:
        return self._l2.lease_ttl

    def lease_get(self, key: str, token: bytes) -> tuple[int, Any]:
        return self._l2.lease_get(key, token)

    def lease_release(self, key: str, token: bytes) -> bool:
        return self._l2.lease_release(key, token)

    def lease_fill(self, key: str, token: bytes, value: Any, payload: bytes | None,
                   ttl: float | None, version: int | None, *, found: bool = True) -> bool:
        """Fill the L2 under ``token``'s lease; the next read copies it into the L1."""
        _require_str((key,))
        try:
            return self._l2.lease_fill(key, token, value, payload, ttl, version, found=found)
        finally:
            self._guard.drop([key])

    # -- writes ----------------------------------------------------------------------------
    def set(
        self, key: str, value: Any, payload: bytes | None, ttl: float | None,
        version: int | None = None,
    ) -> bool:
        """Set in Redis (set-if-newer with ``version``), then in the L1 if it was stored;
        returns whether Redis stored it."""
        _require_str((key,))
        token = self._guard.token(key)
        stored = False
        try:
            stored = self._l2.set(key, value, payload, ttl, version)
        finally:
            self._guard.settle([(key, token, stored, value, payload)], ttl)
        return stored

    def set_many(
        self, items: Sequence[tuple[str, Any, bytes | None, int | None]], ttl: float | None
    ) -> None:
        """Set many in Redis, then copy the unversioned ones into the L1. Versioned
        items may have been refused and Redis does not say which: their L1 copies are
        dropped and the next read fills them from Redis."""
        if not items:
            return
        _require_str([it[0] for it in items])
        tokens = [self._guard.token(it[0]) for it in items]
        done = False
        try:
            self._l2.set_many(items, ttl)
            done = True
        finally:
            self._guard.settle([(key, token, done and not version, value, payload)
                          for (key, value, payload, version), token in zip(items, tokens)], ttl)

    def versions(self, n: int) -> list[int]:
        """:meth:`RedisBackend.versions`."""
        return self._l2.versions(n)

    def publish(self, items: Sequence[tuple[str, int, Any, bytes | None]], ttl: float | None
                ) -> list[int]:
        """:meth:`RedisBackend.publish` (versions drawn from Redis), then this process's
        L1: a copy of each key's last SET or ADD, none after a DELETE. Other processes'
        L1 copies are invalidated by Redis, as for :meth:`set`."""
        if not items:
            return []
        _require_str([it[0] for it in items])
        tokens = [self._guard.token(it[0]) for it in items]
        last = {it[0]: i for i, it in enumerate(items)}
        versions: list[int] = []
        try:
            versions = self._l2.publish(items, ttl)
        finally:
            self._guard.settle([(key, token, bool(versions) and kind != 1, value, payload)
                          for i, ((key, kind, value, payload), token)
                          in enumerate(zip(items, tokens)) if last[key] == i], ttl)
        return versions

    def delete(self, key: str, version: int | None = None) -> bool:
        _require_str((key,))
        try:
            return self._l2.delete(key, version)
        finally:
            self._guard.drop([key])

    def delete_many(
        self, keys: Sequence[str], versions: Sequence[int | None] | None = None
    ) -> None:
        """Delete in Redis (``versions`` leave tombstones, as ``RedisBackend``), then here."""
        if not keys:
            return
        _require_str(keys)
        try:
            self._l2.delete_many(keys, versions)
        finally:
            self._guard.drop(keys)

    def clear(self) -> None:
        """Remove every key under the prefix from Redis, and the whole L1."""
        try:
            self._l2.clear()
        finally:
            self._guard.clear()

    def close(self) -> None:
        """Stop the subscriber thread and close its connection; clear the L1 (nothing
        keeps it fresh any more). Neither level is closed (they belong to the caller)
        unless ``owns_l2``: then the L2 is. Afterwards reads and writes go to the L2."""
        self._subscriber.stop()
        self._guard.shut()
        if self._owns_l2:
            self._l2.close()

    # -- the subscriber's callbacks (on its thread) ---------------------------------------
    def _subscribed(self, client_id: int) -> None:
        self._guard.open(self._subscriber.stopping)

    def _dropped(self) -> None:
        if self._gate.open:
            self.disconnects += 1
        self._guard.shut()

    def _invalidate(self, names: list[bytes] | None) -> None:
        keys: list[str] | None = None
        if names is None:  # FLUSHDB / FLUSHALL
            self._guard.clear()
        else:
            prefix, n = self._prefix_b, len(self._prefix_b)
            keys = [name[n:].decode("utf-8", "replace")
                    for name in names if name.startswith(prefix)]
            self._guard.drop(keys)
        self.invalidations += 1
        hook = self.on_invalidate
        if hook is not None:
            try:
                hook(keys)
            except Exception:
                log.exception("cacheway: on_invalidate hook raised")
