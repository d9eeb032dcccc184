"""RedisBackend: cached copies in Redis, shared by every process that uses the same prefix.

Each value is stored as a 9-byte header and the serializer's bytes::

    check (1 byte) | version (7 bytes, big-endian) | flag (1 byte: 0 value) | payload

(the layout, the markers and the scripts are in ``redis_format``). Versions come from
the store. A versioned ``set`` is set-if-newer and a versioned ``delete`` leaves a
tombstone, both in one Lua script, so a fill that loaded an old row cannot land after a
newer write or delete from any process. Unversioned writes (version 0) are plain
``SET``/``DEL``. Batches are one round trip (``MGET``, pipelines).

``publish`` draws versions from Redis instead, when a write is accepted (write-back
processes sharing Redis then agree on the order of their writes before any reaches the
store), from a per-prefix hybrid clock kept at ``<prefix>~clock`` (``redis_format``
says how it rises). Damage cannot stick: an entry whose header fails its check byte, or
a marker that lost its expiry, counts as absent for every script (``redis_format``).

>>> b = RedisBackend("redis://127.0.0.1:6379/0", prefix="doctest:")  # doctest: +SKIP
>>> b.set("k", [1, 2], None, 60, version=5); b.get("k")  # doctest: +SKIP
True
[1, 2]
>>> b.set("k", "old", None, 60, version=3), b.get("k")  # doctest: +SKIP
(False, [1, 2])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

from ..errors import CachewayError, ConfigError
from ..serializers import Serializer
from ._redis_codec import Codec
from .base import MISS
from .redis_client import check_options, connect, refusal, run_pipeline, unlink_prefix
from .redis_client import px as _px
from .redis_format import (
    CLOCK,
    DELETE_IF_NEWER,
    DELETE_IF_SAME,
    HLEN,
    LEASE_ACQUIRED,
    LEASE_FILL,
    LEASE_GET,
    LEASE_HELD,
    LEASE_NOT_FOUND,
    LEASE_RELEASE,
    LEASE_VALUE,
    PUBLISH,
    SET_IF_NEWER,
    TOMBSTONE,
    VALUE,
    VERSIONS,
    header,
)

if TYPE_CHECKING:
    import redis

__all__ = ["LEASE_ACQUIRED", "LEASE_HELD", "LEASE_NOT_FOUND", "LEASE_VALUE", "RedisBackend"]

class RedisBackend:
    """Cached copies in Redis under ``prefix`` (``"cw:"``), as the serializer's bytes.

    ``url_or_client`` is a ``redis://``, ``rediss://`` or ``unix://`` URL (user and
    password in the URL, TLS options such as ``ssl_ca_certs=`` in ``client_options``),
    or a ``redis.Redis`` the caller owns (``close()`` leaves it open). ``tombstone_ttl``
    is how long a versioned delete blocks older fills; keep it above the longest load.
    ``leases`` (on by default) make a miss take a lease of ``lease_ttl`` seconds: across
    processes one reader loads and fills, the others poll for its fill, and a fill that
    raced with a write fails instead of caching the old value. A "not found" answer is
    shared for ``not_found_ttl`` seconds.
    Connection errors raise :class:`~cacheway.BackendError`; the pool reconnects on the
    next call once Redis is back. Built from a URL, every call is bounded: ``timeout``
    (5 s; None waits for ever) is redis-py's ``socket_timeout`` and
    ``socket_connect_timeout``, which ``client_options`` or the URL's query
    (``?socket_timeout=2``) override; a call that times out raises ``BackendError`` and
    is not repeated. A client passed in keeps the timeouts its owner gave it.

    >>> cache = cw.Cache(store=cw.SQLiteStore("app.db"),
    ...                  backend=RedisBackend("redis://127.0.0.1:6379/0"))  # doctest: +SKIP
    """

    local = False

    def __init__(
        self,
        url_or_client: str | redis.Redis,
        prefix: str = "cw:",
        *,
        serializer: Serializer | None = None,
        tombstone_ttl: float = 30.0,
        lease_ttl: float = 10.0,
        not_found_ttl: float = 1.0,
        leases: bool = True,
        timeout: float | None = 5.0,
        **client_options: Any,
    ) -> None:
        try:
            import redis
        except ImportError as exc:
            raise ConfigError(
                "RedisBackend needs redis-py: pip install 'cacheway[redis]'"
            ) from exc
        check_options(prefix, serializer, tombstone_ttl=tombstone_ttl, lease_ttl=lease_ttl,
                      not_found_ttl=not_found_ttl, timeout=timeout)
        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)
        # What a call may raise: Redis's errors, or a key redis-py cannot send.
        self._caught: tuple[type[Exception], ...] = (redis.RedisError, TypeError, ValueError)
        self._noscript: type[Exception] = redis.exceptions.NoScriptError
        client, self._where, self._password, self._owned = connect(
            url_or_client, timeout, client_options)
        self._client: redis.Redis = client
        # decode_responses is refused above, so replies are bytes, never str.
        self._get = cast(Callable[[str], "bytes | None"], client.get)
        self._prefix = prefix
        self._codec = Codec(prefix, serializer)
        self._loads = self._codec.loads
        self._bad_entry = self._codec.bad_entry
        self._decode = self._codec.decode
        self._entry = self._codec.entry
        self._tombstone_px = _px(float(tombstone_ttl))
        self._set_script = client.register_script(SET_IF_NEWER)
        self._del_script = client.register_script(DELETE_IF_NEWER)
        self._lease_script = client.register_script(LEASE_GET)
        self._fill_script = client.register_script(LEASE_FILL)
        self._release_script = client.register_script(LEASE_RELEASE)
        self._publish_script = client.register_script(PUBLISH)
        self._versions_script = client.register_script(VERSIONS)
        self._clock = prefix + CLOCK
        self.lease_ttl = float(lease_ttl)
        self.leases = bool(leases)
        self._lease_px = _px(float(lease_ttl))
        self._not_found_px = _px(float(not_found_ttl))
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisBackend({self._where!r}, prefix={self._prefix!r})"

    # -- configuration and counters ------------------------------------------------------
    def bind_serializer(self, serializer: Serializer) -> None:
        """Use the cache's serializer, unless one was given to the constructor."""
        self._codec.bind(serializer)
        self._loads = self._codec.loads

    @property
    def client(self) -> redis.Redis:
        """The ``redis.Redis`` in use (for tools and tests)."""
        return self._client

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def loads(self) -> Callable[[bytes], Any]:
        """The decoder of a value entry's payload (what :meth:`get` uses)."""
        return self._loads

    @property
    def evictions(self) -> int:  # Redis evicts and expires by itself, and does not tell us
        return 0

    @property
    def decode_errors(self) -> int:
        """Entries found in Redis that were not ours or failed to decode (served as misses)."""
        return self._codec.decode_errors

    # -- errors ------------------------------------------------------------------------
    def _refuse(self, keys: Sequence[object], what: str, exc: Exception) -> CachewayError:
        return refusal(keys, what, exc, self._errors, self._where, self._password)

    # -- reads -------------------------------------------------------------------------
    def get(self, key: str) -> Any:
        try:
            raw = self._get(self._prefix + key)
        except self._caught as exc:
            raise self._refuse([key], f"GET of {key!r}", exc) from exc
        if raw is None:
            return MISS
        # The hot path: a well-formed value, decoded inline.
        if len(raw) > HLEN and raw[8] == VALUE:
            try:
                return self._loads(raw[HLEN:])
            except Exception as exc:  # noqa: BLE001 - any decoder failure is a miss
                return self._bad_entry(key, f"{type(exc).__name__}: {exc}"[:200])
        return self._decode(key, raw)

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        if not keys:
            return {}
        prefix = self._prefix
        try:
            raws = cast("list[bytes | None]", self._client.mget([prefix + k for k in keys]))
        except self._caught as exc:
            raise self._refuse(keys, f"MGET of {len(keys)} keys", exc) from exc
        out: dict[str, Any] = {}
        loads = self._loads
        for key, raw in zip(keys, raws):
            if raw is None:
                continue
            if len(raw) > HLEN and raw[8] == VALUE:  # the hot path, as in get()
                try:
                    out[key] = loads(raw[HLEN:])
                except Exception as exc:  # noqa: BLE001 - any decoder failure is a miss
                    self._bad_entry(key, f"{type(exc).__name__}: {exc}"[:200])
                continue
            value = self._decode(key, raw)
            if value is not MISS:
                out[key] = value
        return out

    def get_many_ttl(self, keys: Sequence[str], *, payloads: bool = False
                     ) -> dict[str, tuple[Any, bytes | None, float | None]]:
        """``{key: (value, payload if payloads else None, seconds left or None)}`` for
        the keys holding a value, in one round trip (``MGET`` and a ``PTTL`` per key).

        >>> b.get_many_ttl(["k"])  # doctest: +SKIP
        {'k': ([1, 2], None, 59.998)}
        """
        if not keys:
            return {}
        what = f"GET of {len(keys)} keys"
        try:
            names = [self._prefix + k for k in keys]
            with self._client.pipeline(transaction=False) as pipe:
                pipe.mget(names)
                for name in names:
                    pipe.pttl(name)
                replies = pipe.execute()
        except self._caught as exc:
            raise self._refuse(keys, what, exc) from exc
        out: dict[str, tuple[Any, bytes | None, float | None]] = {}
        for key, raw, pttl in zip(keys, replies[0], replies[1:]):
            if raw is None:
                continue
            value = self._decode(key, raw)
            if value is not MISS:
                out[key] = (value, raw[HLEN:] if payloads else None,
                            pttl / 1000 if pttl > 0 else None)
        return out

    # -- leases (cross-process single flight) -------------------------------------------
    def lease_get(self, key: str, token: bytes) -> tuple[int, Any]:
        """One round trip: the value (``LEASE_VALUE``), or the lease for ``token``
        (``LEASE_ACQUIRED``: load and :meth:`lease_fill`), or ``LEASE_HELD`` (another
        reader is loading: poll again), or ``LEASE_NOT_FOUND`` (the store has no row)."""
        try:
            name = self._prefix + key
            for _ in range(2):
                reply = self._lease_script(keys=[name], args=[token, self._lease_px])
                state = int(reply[0])
                if state != LEASE_VALUE:
                    return state, None
                raw = reply[1]
                try:
                    value = self._loads(raw[HLEN:])
                except Exception:  # noqa: BLE001 - undecodable: the get() before counted it
                    value = MISS
                if value is not MISS:
                    return LEASE_VALUE, value
                # Bytes that do not decode (the read before this counted and logged
                # them) are worth nothing to anyone: remove exactly them, take the lease.
                self._client.eval(DELETE_IF_SAME, 1, name, reply[1])
        except self._caught as exc:
            raise self._refuse([key], f"lease of {key!r}", exc) from exc
        return LEASE_HELD, None

    def lease_fill(self, key: str, token: bytes, value: Any, payload: bytes | None,
                   ttl: float | None, version: int | None, *, found: bool = True) -> bool:
        """Fill ``key`` only if ``token``'s lease is still there (no write came since) and
        ``version`` is not older than the tombstone the lease replaced (which then stays)."""
        entry = self._entry(value, payload, version) if found else b""
        if found:
            px: int | str = "" if ttl is None else _px(ttl)
        else:
            px = self._not_found_px if ttl is None else min(self._not_found_px, _px(ttl))
        try:
            return bool(self._fill_script(keys=[self._prefix + key],
                                          args=[token, entry, px, self._tombstone_px]))
        except self._caught as exc:
            raise self._refuse([key], f"fill of {key!r}", exc) from exc

    def lease_release(self, key: str, token: bytes) -> bool:
        """Give ``token``'s lease of ``key`` up (its load failed): waiters load at once."""
        try:
            return bool(self._release_script(keys=[self._prefix + key],
                                             args=[token, self._tombstone_px]))
        except self._caught as exc:
            raise self._refuse([key], f"lease release of {key!r}", exc) from exc

    # -- writes ------------------------------------------------------------------------
    def set(
        self, key: str, value: Any, payload: bytes | None, ttl: float | None,
        version: int | None = None,
    ) -> bool:
        """Store a copy; with ``version``, only if newer than what Redis holds.

        Returns whether it was stored (always True without a version)."""
        entry = self._entry(value, payload, version)
        try:
            name = self._prefix + key
            if not version:
                self._client.set(name, entry, px=None if ttl is None else _px(ttl))
                return True
            px: int | str = "" if ttl is None else _px(ttl)
            return bool(self._set_script(keys=[name], args=[entry, px]))
        except self._caught as exc:
            raise self._refuse([key], f"SET of {key!r}", exc) from exc

    def set_many(
        self, items: Sequence[tuple[str, Any, bytes | None, int | None]], ttl: float | None
    ) -> None:
        """Store many copies in one pipelined round trip (versioned items set-if-newer)."""
        if not items:
            return
        px = None if ttl is None else _px(ttl)
        prefix = self._prefix
        commands: list[tuple[Any, ...]] = []
        keys = [it[0] for it in items]
        what = f"SET of {len(items)} keys"
        for key, value, payload, version in items:
            entry = self._entry(value, payload, version)
            try:
                name = prefix + key
            except TypeError as exc:
                raise self._refuse([key], what, exc) from exc
            if not version:
                commands.append(("SET", name, entry) + (("PX", px) if px else ()))
            else:
                commands.append(("EVALSHA", self._set_script.sha, 1, name, entry, px or ""))
        self._pipeline(commands, what, keys)

    def publish(self, items: Sequence[tuple[str, int, Any, bytes | None]], ttl: float | None
                ) -> list[int]:
        """Write ``items`` with versions drawn from Redis, atomically (one Lua script):
        the version of every write accepted under this prefix, from any process, is
        above the last one (the hybrid clock in ``redis_format``: about Redis's TIME in
        microseconds). Returns the versions, one per item.

        Each item is ``(key, kind, value, payload)``; kind 0 (SET) and 2 (ADD: a
        counter's value) store the value (``payload``, or the serializer's bytes of
        ``value``) with ``ttl``; kind 1 (DELETE) leaves a tombstone of that version for
        ``tombstone_ttl``. A later set-if-newer ``set(..., version)`` with an older
        version (a store stamp of an earlier write) is refused.

        >>> b.publish([("k", 0, "v1", None)], None)  # doctest: +SKIP
        [1751900000123456]
        """
        if not items:
            return []
        what = f"publish of {len(items)} keys"
        keys = [it[0] for it in items]
        args: list[Any] = ["" if ttl is None else _px(ttl), self._tombstone_px]
        names = [self._clock]
        dumps = self._codec.serializer.dumps
        for key, kind, value, payload in items:
            if kind.__class__ is not int or kind not in (0, 1, 2):
                raise ConfigError(f"publish kind of {key!r} must be 0 (SET), 1 (DELETE) "
                                  f"or 2 (ADD), not {kind!r}")
            if kind == 1:
                args += [b"1", b""]
            else:
                args += [b"0", payload if payload is not None else dumps(value)]
        try:
            names += [self._prefix + k for k in keys]
            return [int(v) for v in self._publish_script(keys=names, args=args)]
        except self._caught as exc:
            raise self._refuse(keys, what, exc) from exc

    def versions(self, n: int) -> list[int]:
        """``n`` new versions of this prefix's clock (see :meth:`publish`) for writes
        that reach the store before the backend (write-through, write-around): the
        store applies them set-if-newer, so the last write accepted wins across
        processes whichever reaches the store first."""
        if n <= 0:
            return []
        try:
            return [int(v) for v in self._versions_script(keys=[self._clock], args=[n])]
        except self._errors as exc:
            raise self._refuse([], f"versions from the clock at {self._clock!r}", exc) from exc

    def delete(self, key: str, version: int | None = None) -> bool:
        """Remove a copy; with ``version``, leave a tombstone that blocks older fills
        for ``tombstone_ttl`` (unless Redis already holds something as new)."""
        try:
            name = self._prefix + key
            if not version:
                self._client.delete(name)
                return True
            args: list[bytes | int] = [header(version, TOMBSTONE), self._tombstone_px]
            return bool(self._del_script(keys=[name], args=args))
        except self._caught as exc:
            raise self._refuse([key], f"DEL of {key!r}", exc) from exc

    def delete_many(
        self, keys: Sequence[str], versions: Sequence[int | None] | None = None
    ) -> None:
        """Remove many copies in one round trip; ``versions`` (one per key) leave
        tombstones as :meth:`delete` does."""
        if not keys:
            return
        prefix = self._prefix
        if versions is None or not any(versions):
            try:
                self._client.delete(*[prefix + k for k in keys])
            except self._caught as exc:
                raise self._refuse(keys, f"DEL of {len(keys)} keys", exc) from exc
            return
        if len(versions) != len(keys):
            raise ConfigError(f"{len(keys)} keys but {len(versions)} versions")
        sha, px = self._del_script.sha, self._tombstone_px
        what = f"DEL of {len(keys)} keys"
        try:
            commands: list[tuple[Any, ...]] = [
                ("EVALSHA", sha, 1, prefix + k, header(v, TOMBSTONE), px)
                if v else ("DEL", prefix + k)
                for k, v in zip(keys, versions)
            ]
        except TypeError as exc:
            raise self._refuse(keys, what, exc) from exc
        self._pipeline(commands, what, keys)

    def _pipeline(self, commands: list[tuple[Any, ...]], what: str, keys: Sequence[str]
                  ) -> None:
        try:
            results = run_pipeline(self._client, commands, (self._set_script, self._del_script),
                                   self._noscript)
        except self._caught as exc:
            raise self._refuse(keys, what, exc) from exc
        for r in results:
            if isinstance(r, Exception):
                raise self._refuse([], what, r)

    # -- whole backend -----------------------------------------------------------------
    def clear(self) -> None:
        """Remove every key under this backend's prefix (and nothing else): SCAN + UNLINK.
        The version clock of :meth:`publish` stays: versions keep rising."""
        try:
            unlink_prefix(self._client, self._prefix, keep=self._clock.encode())
        except self._errors as exc:
            raise self._refuse([], f"clear of prefix {self._prefix!r}", exc) from exc

    def close(self) -> None:
        """Close the connection pool if this backend built it from a URL."""
        if self._owned and not self._closed:
            self._closed = True
            self._client.close()
