"""TwoLevelBackend: process memory (L1) in front of Redis (L2), kept coherent across processes.

Reads hit the L1 first; an L1 miss reads Redis and fills the L1 with at most the TTL Redis
has left. Writes go to Redis first, then to this process's L1. Other processes learn of a
write through Redis's own client-side caching protocol: a dedicated connection per backend
runs ``CLIENT TRACKING ON REDIRECT <itself> BCAST PREFIX <prefix>`` and is subscribed to
``__redis__:invalidate`` (RESP2), so Redis tells it every key under the prefix that changes.

Why tracking rather than a PUBLISH from each writer: Redis sends the invalidation itself,
so it cannot be lost to a writer that dies between its SET and its PUBLISH, it covers
writers that are not cacheway (a plain ``RedisBackend``, ``redis-cli``), expiries,
evictions and ``FLUSHDB``, and a write costs no extra round trip. Why RESP2 with a
redirect to the connection itself: it is one connection (the tracking state dies with it,
so "the connection is up" is exactly "invalidations flow"), the messages are ordinary
pub/sub replies that every redis-py parser returns as they are, whereas RESP3 push
messages go through redis-py hooks that changed between releases. The price: a process
also receives the invalidations of its own writes and drops those L1 copies (the next
read refills from Redis); that is tolerated, never wrong.

When the connection drops (Redis restart, ``CLIENT KILL``, no answer to a health PING),
the subscriber thread clears the L1 and bypasses it (reads go to Redis) until the
subscription is back. Only that thread (and ``close``, once it stopped) flips the
"L1 is trustworthy" flag.

>>> l2 = cw.RedisBackend("redis://127.0.0.1:6379/0", prefix="app:")  # doctest: +SKIP
>>> backend = TwoLevelBackend(cw.MemoryBackend(max_entries=10_000), l2)  # doctest: +SKIP
>>> cache = cw.Cache(store=cw.SQLiteStore("app.db"), backend=backend)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..errors import ConfigError, InvalidKeyError
from ..serializers import Serializer
from ..stores._fork import track
from .base import MISS, invalid_key, raise_for_keys
from .memory import MemoryBackend
from .redis import RedisBackend

__all__ = ["TwoLevelBackend"]

log = logging.getLogger("cacheway")

_STRIPES = 1024  # power of two
_MASK = _STRIPES - 1
_CHANNEL = b"__redis__:invalidate"

# (epoch, stripe generation) when a read or write started; an L1 update made with a
# token that no longer matches would be based on what Redis held before a change.
_Token = tuple[int, int]


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
    closes neither level: the caller passed them in and owns them.

    >>> backend = TwoLevelBackend(cw.MemoryBackend(), cw.RedisBackend(url))  # doctest: +SKIP
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
    ) -> None:
        if not isinstance(l1, MemoryBackend):
            raise ConfigError(f"l1 must be a cw.MemoryBackend, not {l1!r}")
        if not isinstance(l2, RedisBackend):
            raise ConfigError(f"l2 must be a cw.RedisBackend, not {l2!r}")
        for name, v in (("l1_ttl", 0 if l1_ttl is None else l1_ttl),
                        ("health_interval", health_interval), ("health_timeout", health_timeout),
                        ("ready_timeout", ready_timeout)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ConfigError(f"{name} must be a number of seconds >= 0, not {v!r}")
        lo, hi = reconnect_delay
        if not 0 < lo <= hi:
            raise ConfigError(f"reconnect_delay must be (min, max) with 0 < min <= max, "
                              f"not {reconnect_delay!r}")
        if on_invalidate is not None and not callable(on_invalidate):
            raise ConfigError(f"on_invalidate must be callable, not {on_invalidate!r}")
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._redis_errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._refused: type[BaseException] = redis.ResponseError
        self._l1 = l1
        self._l2 = l2
        self._l1_get = l1.get
        # A bounded L1 (the usual kind) is one LRU dict that get() reads inline.
        self._l1_data: Any = l1._data if l1._lru else None
        self._l1_timer = l1._timer
        self._l1_ttl = None if l1_ttl is None else float(l1_ttl)
        self._size_payload = l1.max_bytes is not None
        self._prefix = l2.prefix
        self._prefix_b = l2.prefix.encode()
        self._id = uuid.uuid4().hex[:12]
        self.on_invalidate = on_invalidate
        self._health_interval = float(health_interval)
        self._health_timeout = float(health_timeout)
        self._delays = (float(lo), float(hi))
        self._stop = threading.Event()
        self._sleep: Callable[[float], object] = sleep if sleep is not None else self._stop.wait
        # One lock orders every L1 mutation with the token checks: an invalidation can
        # never slip between "the token still matches" and the L1 write it allows.
        self._lock = threading.Lock()
        self._gens = [0] * _STRIPES
        self._epoch = 0
        self._trusted = False  # written only by the subscriber thread
        self._ready = threading.Event()
        # a redis.connection.AbstractConnection (untyped in redis-py, so Any here)
        self._conn: Any = None
        self._subscriber_id: int | None = None
        self.invalidations = 0
        self.disconnects = 0
        pool = l2.client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        # Our loop does the reconnecting (and must see every drop); RESP2 keeps the
        # invalidations ordinary pub/sub replies.
        kwargs.update(retry=Retry(NoBackoff(), 0), protocol=2, health_check_interval=0,
                      client_name=f"cacheway-l1-{self._id}")
        # The connection is ours, so it is bounded even when the caller's client waits
        # for ever: a handshake on a stalled or half-open socket (a server that vanished)
        # times out and the loop reconnects, instead of leaving the L1 bypassed for good.
        bound = max(self._health_interval + self._health_timeout, 0.5)
        for option in ("socket_timeout", "socket_connect_timeout"):
            kwargs[option] = kwargs.get(option) or bound
        self._conn_class: Any = pool.connection_class
        self._conn_kwargs = kwargs
        self._thread = threading.Thread(
            target=self._run, name=f"cacheway-l1-{self._id}", daemon=True
        )
        self._thread.start()
        track(self)
        # Use the L1 from the first read when Redis is there; when it is not, start
        # bypassed rather than fail: the thread keeps trying.
        self._ready.wait(ready_timeout)

    def after_fork_in_child(self) -> None:
        """A forked child has no subscriber thread: nothing would keep its L1 fresh. It
        clears and bypasses the L1 and starts a listener of its own (the inherited
        connection is the parent's socket: left untouched)."""
        if self._stop.is_set():
            return
        self._lock = threading.Lock()
        self._l1.after_fork_in_child()
        self._ready = threading.Event()
        self._conn = None
        self._subscriber_id = None
        self._trusted = False
        self._epoch += 1
        self._l1.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"cacheway-l1-{self._id}", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        state = "L1 in use" if self._trusted else "L1 bypassed"
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
        return self._trusted

    @property
    def subscriber_id(self) -> int | None:
        """The Redis ``CLIENT ID`` of the invalidation connection (None while down)."""
        return self._subscriber_id

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the invalidation connection is subscribed; True if it is."""
        return self._ready.wait(timeout)

    # -- tokens ----------------------------------------------------------------------------
    def _token(self, key: str) -> _Token:
        return self._epoch, self._gens[hash(key) & _MASK]

    def _valid(self, key: str, token: _Token) -> bool:
        """Under ``_lock``: the L1 is in use and nothing changed ``key`` since ``token``."""
        return self._trusted and token == (self._epoch, self._gens[hash(key) & _MASK])

    def _ttl(self, ttl: float | None) -> float | None:
        cap = self._l1_ttl
        if cap is None:
            return ttl
        return cap if ttl is None else min(ttl, cap)

    # -- reads -----------------------------------------------------------------------------
    def get(self, key: str) -> Any:
        if self._trusted:
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
        if not self._trusted:
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
        tokens = [self._token(k) for k in keys]
        found = self._l2.get_many_ttl(keys, payloads=self._size_payload)
        if found:
            with self._lock:
                set1 = self._l1.set
                for key, token in zip(keys, tokens):
                    hit = found.get(key)
                    if hit is not None and self._valid(key, token):
                        set1(key, hit[0], hit[1], self._ttl(hit[2]))
        return {k: v[0] for k, v in found.items()}

    # -- leases: the L2's, so cross-process single flight works through an L1 too ----------
    @property
    def leases(self) -> bool:
        return bool(getattr(self._l2, "leases", False))

    @property
    def lease_ttl(self) -> float:
        return float(getattr(self._l2, "lease_ttl", 10.0))

    def lease_get(self, key: str, token: bytes) -> tuple[int, Any]:
        return self._l2.lease_get(key, token)

    def lease_fill(self, key: str, token: bytes, value: Any, payload: bytes | None,
                   ttl: float | None, version: int | None, *, found: bool = True) -> bool:
        """Fill the L2 under ``token``'s lease; the next read copies it into the L1."""
        _require_str((key,))
        try:
            return self._l2.lease_fill(key, token, value, payload, ttl, version, found=found)
        finally:
            self._drop([key])

    # -- writes ----------------------------------------------------------------------------
    def set(
        self, key: str, value: Any, payload: bytes | None, ttl: float | None,
        version: int | None = None,
    ) -> bool:
        """Set in Redis (set-if-newer with ``version``), then in the L1 if it was stored;
        returns whether Redis stored it."""
        _require_str((key,))
        token = self._token(key)
        stored = False
        try:
            stored = self._l2.set(key, value, payload, ttl, version)
        finally:
            with self._lock:
                if stored and self._valid(key, token):
                    self._l1.set(key, value, payload, self._ttl(ttl))
                else:  # refused (Redis holds newer), failed, or raced: no copy here
                    self._l1.delete(key)
                self._gens[hash(key) & _MASK] += 1
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
        tokens = [self._token(it[0]) for it in items]
        done = False
        try:
            self._l2.set_many(items, ttl)
            done = True
        finally:
            l1_ttl = self._ttl(ttl)
            with self._lock:
                for (key, value, payload, version), token in zip(items, tokens):
                    if done and not version and self._valid(key, token):
                        self._l1.set(key, value, payload, l1_ttl)
                    else:
                        self._l1.delete(key)
                    self._gens[hash(key) & _MASK] += 1

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
        tokens = [self._token(it[0]) for it in items]
        last = {it[0]: i for i, it in enumerate(items)}
        versions: list[int] = []
        try:
            versions = self._l2.publish(items, ttl)
        finally:
            l1_ttl = self._ttl(ttl)
            with self._lock:
                for i, ((key, kind, value, payload), token) in enumerate(zip(items, tokens)):
                    if last[key] != i:
                        continue
                    if versions and kind != 1 and self._valid(key, token):
                        self._l1.set(key, value, payload, l1_ttl)
                    else:
                        self._l1.delete(key)
                    self._gens[hash(key) & _MASK] += 1
        return versions

    def delete(self, key: str, version: int | None = None) -> bool:
        _require_str((key,))
        try:
            return self._l2.delete(key, version)
        finally:
            self._drop([key])

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
            self._drop(keys)

    def _drop(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                self._l1.delete(key)
                self._gens[hash(key) & _MASK] += 1

    def clear(self) -> None:
        """Remove every key under the prefix from Redis, and the whole L1."""
        try:
            self._l2.clear()
        finally:
            with self._lock:
                self._epoch += 1
                self._l1.clear()

    def close(self) -> None:
        """Stop the subscriber thread and close its connection; clear the L1 (nothing
        keeps it fresh any more). Neither level is closed: they belong to the caller.
        Afterwards reads and writes go to the L2 only."""
        self._stop.set()
        conn = self._conn
        sock = getattr(conn, "_sock", None)
        if sock is not None:  # wake the thread from its poll at once
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not threading.current_thread():
            self._thread.join(5.0)
        self._distrust()

    # -- the subscriber thread ---------------------------------------------------------------
    def _distrust(self) -> None:
        with self._lock:
            self._trusted = False
            self._epoch += 1
            self._l1.clear()
        self._ready.clear()

    def _run(self) -> None:
        delay = self._delays[0]
        logged = False  # one warning per outage, not one per reconnection attempt
        while not self._stop.is_set():
            try:
                conn = self._connect()
                delay, logged = self._delays[0], False
                self._listen(conn)
            except self._redis_errors as exc:
                if not self._stop.is_set() and not logged:
                    logged = True
                    log.warning("cacheway: L1 invalidation connection to %s is down (%s: %s); "
                                "the L1 is bypassed until it is back",
                                self._l2, type(exc).__name__, exc)
            except Exception:  # a bug must not leave a stale L1 in use
                log.exception("cacheway: L1 invalidation thread failed; bypassing the L1")
            finally:
                if self._trusted:
                    self.disconnects += 1
                self._distrust()
                conn, self._conn, self._subscriber_id = self._conn, None, None
                if conn is not None:  # also one that failed half way through _connect
                    conn.disconnect()
            if not self._stop.is_set():
                self._sleep(delay)
                delay = min(delay * 2, self._delays[1])

    def _connect(self) -> Any:
        conn = self._conn_class(**self._conn_kwargs)
        self._conn = conn
        conn.connect()
        conn.send_command("CLIENT", "ID")
        cid = int(conn.read_response())
        args: list[Any] = ["CLIENT", "TRACKING", "ON", "REDIRECT", cid, "BCAST"]
        if self._prefix:
            args += ["PREFIX", self._prefix]
        conn.send_command(*args)
        try:
            conn.read_response()
        except self._refused as exc:  # a server (or proxy) without tracking
            log.error("cacheway: Redis refused CLIENT TRACKING (%s); TwoLevelBackend "
                      "needs Redis >= 6 and keeps bypassing its L1", exc)
            raise
        conn.send_command("SUBSCRIBE", _CHANNEL)
        conn.read_response()  # the subscribe confirmation: from here nothing is missed
        self._subscriber_id = cid
        with self._lock:
            if self._stop.is_set():  # close() gave up waiting for us
                raise ConnectionError("closed")
            # Tokens taken before this point may predate a write whose invalidation
            # was lost while we were away: the epoch bump voids them.
            self._epoch += 1
            self._l1.clear()
            self._trusted = True
        self._ready.set()
        log.debug("cacheway: L1 invalidations flowing (client id %d)", cid)
        return conn

    def _listen(self, conn: Any) -> None:
        poll = min(0.5, max(self._health_interval, 0.01))
        last = time.monotonic()
        pinged: float | None = None
        while not self._stop.is_set():
            if conn.can_read(timeout=poll):
                reply = conn.read_response()
                last, pinged = time.monotonic(), None
                if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                    self._invalidate(reply[2])
                continue
            now = time.monotonic()
            if pinged is None and now - last >= self._health_interval:
                conn.send_command("PING")
                pinged = now
            elif pinged is not None and now - pinged > self._health_timeout:
                raise TimeoutError(f"no answer to PING in {self._health_timeout:g}s")

    def _invalidate(self, names: list[bytes] | None) -> None:
        keys: list[str] | None = None
        prefix, n = self._prefix_b, len(self._prefix_b)
        with self._lock:
            if names is None:  # FLUSHDB / FLUSHALL
                self._epoch += 1
                self._l1.clear()
            else:
                keys = [name[n:].decode("utf-8", "replace")
                        for name in names if name.startswith(prefix)]
                gens, delete = self._gens, self._l1.delete
                for key in keys:
                    gens[hash(key) & _MASK] += 1
                    delete(key)
            self.invalidations += 1
        hook = self.on_invalidate
        if hook is not None:
            try:
                hook(keys)
            except Exception:
                log.exception("cacheway: on_invalidate hook raised")
