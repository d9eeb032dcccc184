"""Redis hits on the event loop: an AsyncCache over a RedisBackend (or a two-level backend's
Redis L2) reads a copy with ``redis.asyncio`` instead of a worker thread.

The client is built from the RedisBackend's connection settings (its ``redis.Redis``'s
pool: host, port, db, credentials, TLS, timeouts), one per event loop. A hit is decoded
as :meth:`RedisBackend.get` decodes its hot path (a value entry: the serializer's loads
of the bytes after the 9-byte header) and counted in the engine's counters as the thread
path counts it. Anything else goes to the thread path, which answers exactly as
``Cache.get`` does: a miss (the store load, leases, single flight), a marker (a lease, a
tombstone, "not found"), bytes that do not decode (it counts them), a Redis error (it
reads the store), a closed namespace, and, under write-back, a key with a pending write
(its pending value comes before any copy, as ``Engine.get`` answers it).

Values decode with the backend's own decoder (``RedisBackend.loads``: the cache's
serializer, which the backend binds, or one given to the backend), as the thread front's.

``python bench/async.py --only redis --only redis_aa`` on this project's 2-core machine
(loaded by other test runs), 2026-12-06: ``await acache.get`` of a Redis hit 79 us
against 90 us for a raw ``redis.asyncio`` GET + ``orjson.loads``, median ratio 0.93x over
7 alternating rounds (the A/A row: 1.08x); through a worker thread a hit cost a hop on
top (61 us on its own).

:class:`RedisWrites` is the write side over the same per-loop client, for write-through on
the loop (:mod:`cacheway._aio_write`): the clock (``VERSIONS``) and set-if-newer copies
(``SET_IF_NEWER``), the sync RedisBackend's scripts and entry layout.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from .backends import redis_format
from .backends.base import MISS
from .backends.redis import RedisBackend
from .backends.redis_client import px as to_px
from .backends.redis_format import CLOCK, SET_IF_NEWER, VALUE0, VERSIONS
from .backends.two_level import TwoLevelBackend
from .errors import BackendError

if TYPE_CHECKING:
    import redis.asyncio

    from .engine.read import Engine
    from .serializers import Serializer

__all__ = ["LoopReader", "RedisWrites", "redis_of"]

log = logging.getLogger("cacheway")

HLEN, VALUE = redis_format.HLEN, redis_format.VALUE

#: Connection settings of a redis-py pool that mean the same to redis.asyncio's.
_PORTABLE = frozenset({
    "host", "port", "db", "username", "password", "path", "socket_timeout",
    "socket_connect_timeout", "socket_keepalive", "socket_keepalive_options",
    "client_name", "health_check_interval", "credential_provider", "protocol",
    "ssl_keyfile", "ssl_certfile", "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_data",
    "ssl_ca_path", "ssl_check_hostname", "ssl_min_version", "ssl_ciphers", "ssl_password",
    "ssl_include_verify_flags", "ssl_exclude_verify_flags",
})
#: redis-py's own bookkeeping, and its sync retry policy (a failed loop read falls back
#: to the thread path, whose client retries): not carried over.
_SYNC_ONLY = frozenset({
    "retry", "himport_registry", "maint_notifications_config",
    "maint_notifications_pool_handler", "orig_host_address", "orig_socket_timeout",
    "orig_socket_connect_timeout",
})

AsyncGet = Callable[[str], Awaitable[Any]]


def redis_of(backend: object) -> RedisBackend | None:
    """The RedisBackend a read of ``backend`` ends at: itself, or a two-level's L2."""
    if isinstance(backend, RedisBackend):
        return backend
    if isinstance(backend, TwoLevelBackend):
        return backend.l2
    return None


def _async_settings(backend: RedisBackend) -> tuple[type[Any], dict[str, Any]] | None:
    """``(redis.asyncio connection class, its keyword arguments)`` for ``backend``'s
    client, or None when its connections are of a kind, or have a setting, this does not
    know how to carry over: no setting is ever dropped (the thread path reads then)."""
    import redis.asyncio as aredis

    pool = backend.client.connection_pool
    kinds: dict[str, type[Any]] = {
        "Connection": aredis.Connection,
        "SSLConnection": aredis.SSLConnection,
        "UnixDomainSocketConnection": aredis.UnixDomainSocketConnection,
    }
    kind = kinds.get(pool.connection_class.__name__)
    if kind is None or pool.connection_class.__module__ != "redis.connection":
        return None
    settings = {k: v for k, v in pool.connection_kwargs.items() if k not in _SYNC_ONLY}
    if not settings.keys() <= _PORTABLE:
        return None  # a setting we cannot carry over (OCSP checks, a custom parser...)
    try:
        kind(**settings)  # no socket yet: refuses what this redis.asyncio does not take
    except (TypeError, ValueError):
        return None
    return kind, settings


class LoopReader:
    """Reads one RedisBackend's copies on the loop; a ``redis.asyncio`` client per loop."""

    def __init__(self, backend: RedisBackend, kind: type[Any], settings: dict[str, Any],
                 serializer: Serializer) -> None:
        self.backend = backend
        self._kind = kind
        self._settings = settings
        self._loads = backend.loads  # the decoder RedisBackend.get uses, bound or its own
        self._prefix = backend.prefix
        self._client: redis.asyncio.Redis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: redis.asyncio.ConnectionPool | None = None

    @classmethod
    def build(cls, backend: object, serializer: Serializer) -> LoopReader | None:
        """A reader for ``backend`` (a RedisBackend or a two-level over one), or None."""
        rb = redis_of(backend)
        if rb is None:
            return None
        found = _async_settings(rb)
        if found is None:
            return None
        return cls(rb, found[0], found[1], serializer)

    def client(self, loop: asyncio.AbstractEventLoop) -> redis.asyncio.Redis:
        """The client of ``loop`` (redis.asyncio connections belong to one loop)."""
        client = self._client
        if client is None or self._loop is not loop:
            import redis.asyncio as aredis

            # A previous loop's client is dropped: its connections belong to that loop.
            pool = aredis.ConnectionPool(connection_class=self._kind, **self._settings)
            client = self._client = aredis.Redis(connection_pool=pool)
            self._pool = pool
            self._loop = loop
        return client

    def after_fork_in_child(self) -> object:
        """In a forked child: the client is the parent's (its connections share the
        parent's sockets): forgotten, so the child's loop builds its own. Returns the
        inherited pool for the caller to keep referenced, never closed (see
        ``AsyncCache.after_fork_in_child``)."""
        pool, self._pool, self._client, self._loop = self._pool, None, None, None
        return pool

    def get_for(self, engine: Engine) -> AsyncGet | None:
        """The loop's hit of ``engine``'s namespace: the value, counted, or MISS (the
        caller then takes the thread path). None when the namespace cannot take it."""
        if engine.read_options.early_refresh is not None or engine.backend.local:
            return None  # early refresh decides per hit; a local backend has memory_peek
        full = self._prefix + engine.prefix
        counters, pending, loads = engine.counters, engine.pending_entry, self._loads
        undropped, prefix = engine.undropped, engine.prefix
        errors = _errors()
        codec = engine.codec  # a typed namespace: Redis keeps the plain form

        async def get(key: str) -> Any:
            if key.__class__ is not str or engine.closed or not key.isascii():
                return MISS  # the thread path raises the right error (or checks the key)
            # Under write-back a pending write answers first. On a shared backend nothing
            # is staged, so this lookup takes no lock (WriteBackEngine.pending_entry).
            if pending is not None and pending(key) is not None:
                return MISS
            if undropped and prefix + key in undropped:
                return MISS  # a copy a failed drop left (engine.undropped): the store
            loop = asyncio.get_running_loop()
            try:
                # bytes: decode_responses is not carried over (RedisBackend refuses it)
                raw = cast("bytes | None", await self.client(loop).get(full + key))
            except errors:
                return MISS  # the thread path reports it and reads the store
            if raw is None or len(raw) <= HLEN or raw[8] != VALUE:
                return MISS
            try:
                value = loads(raw[HLEN:])
                if codec is not None:
                    value = codec.from_plain(value)
            except Exception:  # noqa: BLE001 - the thread path counts and logs bad bytes
                return MISS
            counters.hits += 1
            return value

        return get

    async def aclose(self) -> None:
        """Close the running loop's connections; those of loops that are gone were
        dropped with their loop."""
        pool, self._pool, self._client = self._pool, None, None
        if pool is not None and self._loop is asyncio.get_running_loop():
            await pool.disconnect()  # what Redis.aclose() does (redis>=5.0.1)


def _errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.RedisError, OSError, TypeError, ValueError)


class RedisWrites:
    """The write side of a :class:`LoopReader`'s Redis (its per-loop client): the clock
    and set-if-newer copies, with the sync RedisBackend's scripts and entry layout."""

    def __init__(self, reader: LoopReader) -> None:
        self._reader = reader
        #: the decoder of a value entry's payload (``RedisBackend.loads``)
        self.loads = reader.backend.loads
        self._prefix = reader.backend.prefix
        self._clock = self._prefix + CLOCK
        self._client: redis.asyncio.Redis | None = None
        self._versions: Any = None
        self._set: Any = None

    def _scripts(self) -> tuple[redis.asyncio.Redis, Any, Any]:
        client = self._reader.client(asyncio.get_running_loop())
        if client is not self._client:
            self._client = client
            self._versions = client.register_script(VERSIONS)
            self._set = client.register_script(SET_IF_NEWER)
        return client, self._versions, self._set

    async def versions(self, n: int) -> list[int]:
        """``RedisBackend.versions(n)``; BackendError when Redis fails."""
        _, script, _ = self._scripts()
        try:
            return [int(v) for v in await script(keys=[self._clock], args=[n])]
        except _errors() as exc:
            raise BackendError(f"Redis versions from {self._clock!r} failed: {exc!r}"
                               ) from exc

    async def set_many(self, items: list[tuple[str, bytes, bytes, float | None]]) -> None:
        """``RedisBackend.set`` of each ``(key, header, payload, ttl)``: set-if-newer
        (plain SET when unversioned), pipelined; BackendError when Redis fails."""
        from redis.exceptions import NoScriptError

        client, _, script = self._scripts()
        try:
            if len(items) == 1 and items[0][1] != VALUE0:
                key, head, payload, ttl = items[0]
                await script(keys=[self._prefix + key],
                             args=[head + payload, "" if ttl is None else to_px(ttl)])
                return
            commands = [
                ("SET", self._prefix + key, head + payload)
                + (() if ttl is None else ("PX", to_px(ttl))) if head == VALUE0 else
                ("EVALSHA", script.sha, 1, self._prefix + key, head + payload,
                 "" if ttl is None else to_px(ttl))
                for key, head, payload, ttl in items]
            # Raw EVALSHA: redis.asyncio's Script in a pipeline asks SCRIPT EXISTS first.
            replies = await _pipeline(client, commands)
            again = [c for c, r in zip(commands, replies) if isinstance(r, NoScriptError)]
            if again:  # Redis restarted (empty script cache): load, repeat (set-if-newer)
                script.sha = await client.script_load(SET_IF_NEWER)
                replies = await _pipeline(client, [(c[0], script.sha, *c[2:]) for c in again])
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        except _errors() as exc:
            raise BackendError(f"Redis SET of {len(items)} keys failed: {exc!r}") from exc

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        """The raw entries of ``keys`` (one MGET); BackendError when Redis fails."""
        client, _, _ = self._scripts()
        try:
            return cast("list[bytes | None]",
                        await client.mget([self._prefix + k for k in keys]))
        except _errors() as exc:
            raise BackendError(f"Redis MGET of {len(keys)} keys failed: {exc!r}") from exc

    async def drop(self, keys: list[str]) -> bool:
        """Remove copies (``RedisBackend.delete_many`` without versions); False when
        Redis failed (the caller records them: ``Engine.undropped``)."""
        client, _, _ = self._scripts()
        try:
            await client.delete(*[self._prefix + k for k in keys])
        except _errors() as exc:
            log.error("cacheway: backend delete of %r failed (%r); retrying it until the "
                      "backend takes it", keys, exc)
            return False
        return True


async def _pipeline(client: redis.asyncio.Redis, commands: list[tuple[Any, ...]]
                    ) -> list[Any]:
    async with client.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute(raise_on_error=False))
