"""RedisBackend: cached copies in Redis, shared by every process that uses the same prefix.

Each value is stored as a 9-byte header and the serializer's bytes::

    version (8 bytes, big-endian unsigned) | flag (1 byte: 0 value, 1 tombstone) | payload

Versions come from the store. A versioned ``set`` is set-if-newer and a versioned
``delete`` leaves a tombstone, both in one Lua script, so a fill that loaded an old row
cannot land after a newer write or delete from any process. Unversioned writes (version
0) are plain ``SET``/``DEL``. Batches are one round trip (``MGET``, pipelines).

>>> b = RedisBackend("redis://127.0.0.1:6379/0", prefix="doctest:")  # doctest: +SKIP
>>> b.set("k", [1, 2], None, 60, version=5); b.get("k")  # doctest: +SKIP
True
[1, 2]
>>> b.set("k", "old", None, 60, version=3), b.get("k")  # doctest: +SKIP
(False, [1, 2])
"""

from __future__ import annotations

import logging
import struct
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from ..errors import BackendError, ConfigError
from ..serializers import JSONSerializer, Serializer
from .base import MISS

if TYPE_CHECKING:
    import redis

__all__ = ["RedisBackend"]

log = logging.getLogger("cacheway")

_HEADER = struct.Struct(">QB")
_HLEN = _HEADER.size  # 9
_VALUE, _TOMBSTONE, _LEASE, _NOT_FOUND = 0, 1, 2, 3
_VALUE0 = _HEADER.pack(0, _VALUE)  # the header of every unversioned value
_SCAN_BATCH = 1000

# Headers are compared byte by byte, not with Lua's `<`: Redis sets LC_COLLATE from the
# environment and Lua compares strings with strcoll, which is neither bytewise nor safe
# with the NUL bytes a fixed-width version is full of. Anything at the key that is not
# one of our well-formed entries (another type, foreign bytes) counts as missing.
_LUA_COMMON = """
local function cmp(cur, new)
  for i = 1, 8 do
    local a, b = string.byte(cur, i), string.byte(new, i)
    if a ~= b then if a < b then return -1 else return 1 end end
  end
  return 0
end
local function current(key)
  local cur = redis.pcall('GET', key)
  if type(cur) ~= 'string' or string.len(cur) < 9 then return nil, nil end
  local flag = string.byte(cur, 9)
  if flag == 1 and string.len(cur) == 9 then return cur, 1 end
  if flag == 0 or flag == 2 or flag == 3 then return cur, flag end
  return nil, nil
end
local function put(key, value, px)
  if px ~= '' then redis.call('SET', key, value, 'PX', px) else redis.call('SET', key, value) end
end
"""

# KEYS[1] key; ARGV[1] new entry (header + payload); ARGV[2] PX milliseconds or ''.
# A stored value of the same version is the same value: left alone. A tombstone of the
# same version is an invalidation published with the version of the row that replaced
# it (write-around), so the fill of exactly that row may land; older ones may not.
_SET_IF_NEWER = _LUA_COMMON + """
local cur, flag = current(KEYS[1])
if cur then
  local c = cmp(cur, ARGV[1])
  if c > 0 or (c == 0 and flag == 0) then return 0 end
end
put(KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS[1] key; ARGV[1] tombstone (header only); ARGV[2] PX milliseconds.
_DELETE_IF_NEWER = _LUA_COMMON + """
local cur, flag = current(KEYS[1])
if cur and cmp(cur, ARGV[1]) >= 0 then return 0 end
put(KEYS[1], ARGV[1], ARGV[2])
return 1
"""


# Leases (the memcache idea): a reader that misses puts its own placeholder (flag 2 + a
# random token) in the key; only the holder loads from the store, and its fill lands only
# if the placeholder is still there, so any write meanwhile (which overwrites it) wins.
# The placeholder keeps the version of a tombstone it replaces as a floor, so a late
# write-through set older than that delete stays refused. "Not found" (flag 3) is shared
# with the waiters for a short while.
# KEYS[1] key; ARGV[1] token; ARGV[2] lease PX. Returns {1} acquired, {2} held by another,
# {3} not found, {0, entry} a value.
_LEASE_GET = _LUA_COMMON + """
local cur, flag = current(KEYS[1])
if flag == 0 then return {0, cur} end
if flag == 2 then return {2} end
if flag == 3 then return {3} end
local floor = string.rep('\\0', 8)
if flag == 1 then floor = string.sub(cur, 1, 8) end
redis.call('SET', KEYS[1], floor .. '\\2' .. ARGV[1], 'PX', ARGV[2])
return {1}
"""

# KEYS[1] key; ARGV[1] token; ARGV[2] entry, or '' for "not found"; ARGV[3] PX or ''.
_LEASE_FILL = _LUA_COMMON + """
local cur, flag = current(KEYS[1])
if flag ~= 2 or string.sub(cur, 10) ~= ARGV[1] then return 0 end
local entry = ARGV[2]
if entry == '' then
  entry = string.sub(cur, 1, 8) .. '\\3'
elseif cmp(cur, entry) > 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
put(KEYS[1], entry, ARGV[3])
return 1
"""

# KEYS[1] key; ARGV[1] the exact bytes to remove (an entry that failed to decode).
_DELETE_IF_SAME = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

LEASE_ACQUIRED, LEASE_HELD, LEASE_NOT_FOUND, LEASE_VALUE = 1, 2, 3, 0


def _loads_of(serializer: Serializer) -> Callable[[bytes], Any]:
    # Every decoder failure is caught here anyway, so the stock JSON serializer's
    # wrapper (which only converts orjson's errors) can be skipped: a Python call per
    # value is a visible share of an MGET of small values.
    if type(serializer) is JSONSerializer and getattr(serializer, "_orjson", False):
        import orjson  # present: the serializer uses it

        return orjson.loads
    return serializer.loads


def _px(ttl: float) -> int:
    return max(1, int(ttl * 1000))


def _redact(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.netloc.rpartition("@")[2]
        user = parts.username or ""
        return parts._replace(netloc=f"{user}:***@{host}").geturl()
    except ValueError:
        head, at, tail = url.rpartition("@")
        return f"{head.partition('://')[0]}://***@{tail}" if at else url


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
    next call once Redis is back.

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
        socket_timeout: float | None = 5.0,
        **client_options: Any,
    ) -> None:
        try:
            import redis
            from redis.backoff import ExponentialBackoff
            from redis.retry import Retry
        except ImportError as exc:
            raise ConfigError(
                "RedisBackend needs redis-py: pip install 'cacheway[redis]'"
            ) from exc
        if not isinstance(prefix, str):
            raise ConfigError(f"prefix must be a str, not {prefix!r}")
        if (
            isinstance(tombstone_ttl, bool)
            or not isinstance(tombstone_ttl, (int, float))
            or not tombstone_ttl > 0
        ):
            raise ConfigError(
                f"tombstone_ttl must be a number of seconds > 0, not {tombstone_ttl!r}"
            )
        for name, v in (("lease_ttl", lease_ttl), ("not_found_ttl", not_found_ttl)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ConfigError(f"{name} must be a number of seconds > 0, not {v!r}")
        if serializer is not None and not isinstance(serializer, Serializer):
            raise ConfigError(f"serializer must have dumps/loads/name, not {serializer!r}")
        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)
        self._noscript: type[Exception] = redis.exceptions.NoScriptError
        self._password: str | None = None
        if isinstance(url_or_client, str):
            url = url_or_client
            self._where = _redact(url)
            self._password = urlsplit(url).password if "@" in url else None
            options: dict[str, Any] = {
                "socket_timeout": socket_timeout,
                "socket_connect_timeout": socket_timeout,
                # One quick reconnect covers a pooled socket that died with a Redis
                # restart or CLIENT KILL; redis-py's default (10 tries, up to 1 s apart)
                # would stall a cache read for seconds while Redis is really down.
                "retry": Retry(ExponentialBackoff(cap=0.05, base=0.005), 2),
            }
            options.update(client_options)
            if options.get("decode_responses"):
                raise ConfigError("RedisBackend keeps bytes: decode_responses must be False")
            try:
                client = redis.Redis.from_url(url, **options)
                pool = client.connection_pool
                # redis-py hands options to each connection lazily; build one (no socket
                # is opened) so a misspelt option fails here, not at the first read.
                pool.connection_class(**pool.connection_kwargs)
            except (ValueError, TypeError) as exc:
                msg = self._scrub(str(exc))
                if isinstance(exc, TypeError) and not url.lower().startswith("rediss:"):
                    msg += " (TLS options such as ssl_ca_certs need a rediss:// URL)"
                raise ConfigError(f"bad Redis URL or option for {self._where!r}: {msg}") from exc
            self._owned = True
        elif isinstance(url_or_client, redis.Redis):
            if client_options:
                raise ConfigError(
                    f"client options {sorted(client_options)} need a URL; "
                    "configure the redis.Redis you pass in instead"
                )
            client = url_or_client
            kw = client.connection_pool.connection_kwargs
            if kw.get("decode_responses"):
                raise ConfigError(
                    "RedisBackend keeps bytes: pass a client with decode_responses=False"
                )
            where = kw.get("path") or f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"
            self._where = f"{where}/{kw.get('db', 0)}"
            self._owned = False
        else:
            raise ConfigError(
                f"RedisBackend needs a redis:// URL or a redis.Redis client, not {url_or_client!r}"
            )
        self._client: redis.Redis = client
        # decode_responses is refused above, so replies are bytes, never str.
        self._get = cast(Callable[[str], "bytes | None"], client.get)
        self._prefix = prefix
        self._serializer: Serializer = serializer if serializer is not None else JSONSerializer()
        self._fixed_serializer = serializer is not None
        self._loads = _loads_of(self._serializer)
        self._tombstone_px = _px(float(tombstone_ttl))
        self._set_script = client.register_script(_SET_IF_NEWER)
        self._del_script = client.register_script(_DELETE_IF_NEWER)
        self._lease_script = client.register_script(_LEASE_GET)
        self._fill_script = client.register_script(_LEASE_FILL)
        self.lease_ttl = float(lease_ttl)
        self.leases = bool(leases)
        self._lease_px = _px(float(lease_ttl))
        self._not_found_px = _px(float(not_found_ttl))
        self._decode_errors = 0
        self._lock = threading.Lock()
        self._closed = False

    def __repr__(self) -> str:
        return f"RedisBackend({self._where!r}, prefix={self._prefix!r})"

    # -- configuration and counters ------------------------------------------------------
    def bind_serializer(self, serializer: Serializer) -> None:
        """Use the cache's serializer, unless one was given to the constructor."""
        if not self._fixed_serializer:
            self._serializer = serializer
            self._loads = _loads_of(serializer)

    @property
    def client(self) -> redis.Redis:
        """The ``redis.Redis`` in use (for tools and tests)."""
        return self._client

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def evictions(self) -> int:
        """Always 0: Redis evicts and expires by itself and does not tell us."""
        return 0

    @property
    def decode_errors(self) -> int:
        """Entries found in Redis that were not ours or failed to decode (served as misses)."""
        return self._decode_errors

    # -- errors ------------------------------------------------------------------------
    def _scrub(self, text: str) -> str:
        if self._password:
            text = text.replace(self._password, "***")
        return text

    def _fail(self, what: str, exc: Exception) -> BackendError:
        return BackendError(
            f"Redis {what} failed on {self._where}: {self._scrub(f'{type(exc).__name__}: {exc}')}"
        )

    def _bad_entry(self, key: str, why: str) -> Any:
        with self._lock:
            self._decode_errors += 1
            first = self._decode_errors == 1
        if first:  # once per backend: garbage tends to come in floods
            log.warning(
                "cacheway: Redis key %r holds an entry that cannot be decoded (%s); "
                "treating it as a miss (further decode errors are only counted)",
                self._prefix + key, why,
            )
        return MISS

    # -- encoding ----------------------------------------------------------------------
    def _decode(self, key: str, raw: bytes) -> Any:
        if len(raw) < _HLEN:
            return self._bad_entry(key, "shorter than the header")
        flag = raw[8]
        if flag == _VALUE:
            try:
                return self._loads(raw[_HLEN:])
            except Exception as exc:  # noqa: BLE001 - any decoder failure is a miss, never a crash
                return self._bad_entry(key, f"{type(exc).__name__}: {exc}"[:200])
        if (flag == _TOMBSTONE and len(raw) == _HLEN) or flag in (_LEASE, _NOT_FOUND):
            return MISS
        return self._bad_entry(key, f"unknown header flag {flag}")

    def _entry(self, value: Any, payload: bytes | None, version: int | None) -> bytes:
        if payload is None:
            payload = self._serializer.dumps(value)
        if not version:
            return _VALUE0 + payload
        return _HEADER.pack(version, _VALUE) + payload

    # -- reads -------------------------------------------------------------------------
    def get(self, key: str) -> Any:
        try:
            raw = self._get(self._prefix + key)
        except self._errors as exc:
            raise self._fail(f"GET of {key!r}", exc) from exc
        if raw is None:
            return MISS
        # The hot path: a well-formed value, decoded inline.
        if len(raw) > _HLEN and raw[8] == _VALUE:
            try:
                return self._loads(raw[_HLEN:])
            except Exception as exc:  # noqa: BLE001 - any decoder failure is a miss
                return self._bad_entry(key, f"{type(exc).__name__}: {exc}"[:200])
        return self._decode(key, raw)

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        if not keys:
            return {}
        prefix = self._prefix
        try:
            raws = cast("list[bytes | None]", self._client.mget([prefix + k for k in keys]))
        except self._errors as exc:
            raise self._fail(f"MGET of {len(keys)} keys", exc) from exc
        out: dict[str, Any] = {}
        loads = self._loads
        for key, raw in zip(keys, raws):
            if raw is None:
                continue
            if len(raw) > _HLEN and raw[8] == _VALUE:  # the hot path, as in get()
                try:
                    out[key] = loads(raw[_HLEN:])
                except Exception as exc:  # noqa: BLE001 - any decoder failure is a miss
                    self._bad_entry(key, f"{type(exc).__name__}: {exc}"[:200])
                continue
            value = self._decode(key, raw)
            if value is not MISS:
                out[key] = value
        return out

    # -- leases (cross-process single flight) -------------------------------------------
    def lease_get(self, key: str, token: bytes) -> tuple[int, Any]:
        """One round trip: the value (``LEASE_VALUE``), or the lease for ``token``
        (``LEASE_ACQUIRED``: load and :meth:`lease_fill`), or ``LEASE_HELD`` (another
        reader is loading: poll again), or ``LEASE_NOT_FOUND`` (the store has no row)."""
        name = self._prefix + key
        try:
            for _ in range(2):
                reply = self._lease_script(keys=[name], args=[token, self._lease_px])
                state = int(reply[0])
                if state != LEASE_VALUE:
                    return state, None
                raw = reply[1]
                try:
                    value = self._loads(raw[_HLEN:])
                except Exception:  # noqa: BLE001 - undecodable: the get() before counted it
                    value = MISS
                if value is not MISS:
                    return LEASE_VALUE, value
                # Bytes that do not decode (the read before this counted and logged
                # them) are worth nothing to anyone: remove exactly them, take the lease.
                self._client.eval(_DELETE_IF_SAME, 1, name, reply[1])
        except self._errors as exc:
            raise self._fail(f"lease of {key!r}", exc) from exc
        return LEASE_HELD, None

    def lease_fill(self, key: str, token: bytes, value: Any, payload: bytes | None,
                   ttl: float | None, version: int | None, *, found: bool = True) -> bool:
        """Fill ``key`` only if ``token``'s lease is still there (no write came since)."""
        entry = self._entry(value, payload, version) if found else b""
        if found:
            px: int | str = "" if ttl is None else _px(ttl)
        else:
            px = self._not_found_px if ttl is None else min(self._not_found_px, _px(ttl))
        try:
            return bool(self._fill_script(keys=[self._prefix + key], args=[token, entry, px]))
        except self._errors as exc:
            raise self._fail(f"fill of {key!r}", exc) from exc

    # -- writes ------------------------------------------------------------------------
    def set(
        self, key: str, value: Any, payload: bytes | None, ttl: float | None,
        version: int | None = None,
    ) -> bool:
        """Store a copy; with ``version``, only if newer than what Redis holds.

        Returns whether it was stored (always True without a version)."""
        entry = self._entry(value, payload, version)
        name = self._prefix + key
        try:
            if not version:
                self._client.set(name, entry, px=None if ttl is None else _px(ttl))
                return True
            px: int | str = "" if ttl is None else _px(ttl)
            return bool(self._set_script(keys=[name], args=[entry, px]))
        except self._errors as exc:
            raise self._fail(f"SET of {key!r}", exc) from exc

    def set_many(
        self, items: Sequence[tuple[str, Any, bytes | None, int | None]], ttl: float | None
    ) -> None:
        """Store many copies in one pipelined round trip (versioned items set-if-newer)."""
        if not items:
            return
        px = None if ttl is None else _px(ttl)
        prefix = self._prefix
        commands: list[tuple[Any, ...]] = []
        for key, value, payload, version in items:
            entry = self._entry(value, payload, version)
            if not version:
                commands.append(("SET", prefix + key, entry) + (("PX", px) if px else ()))
            else:
                commands.append(
                    ("EVALSHA", self._set_script.sha, 1, prefix + key, entry, px or "")
                )
        self._pipeline(commands, f"SET of {len(items)} keys")

    def delete(self, key: str, version: int | None = None) -> bool:
        """Remove a copy; with ``version``, leave a tombstone that blocks older fills
        for ``tombstone_ttl`` (unless Redis already holds something as new)."""
        name = self._prefix + key
        try:
            if not version:
                self._client.delete(name)
                return True
            args: list[bytes | int] = [_HEADER.pack(version, _TOMBSTONE), self._tombstone_px]
            return bool(self._del_script(keys=[name], args=args))
        except self._errors as exc:
            raise self._fail(f"DEL of {key!r}", exc) from exc

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
            except self._errors as exc:
                raise self._fail(f"DEL of {len(keys)} keys", exc) from exc
            return
        if len(versions) != len(keys):
            raise ConfigError(f"{len(keys)} keys but {len(versions)} versions")
        sha, px = self._del_script.sha, self._tombstone_px
        commands: list[tuple[Any, ...]] = [
            ("EVALSHA", sha, 1, prefix + k, _HEADER.pack(v, _TOMBSTONE), px)
            if v else ("DEL", prefix + k)
            for k, v in zip(keys, versions)
        ]
        self._pipeline(commands, f"DEL of {len(keys)} keys")

    def _pipeline(self, commands: list[tuple[Any, ...]], what: str) -> None:
        # Scripts go in as raw EVALSHA: redis-py's Script in a pipeline would first ask
        # SCRIPT EXISTS, a second round trip on every batch. After a Redis restart
        # (empty script cache) the failed EVALSHAs are loaded and repeated once; they
        # are set-if-newer, so repeating them is safe.
        try:
            results = self._run(commands)
            retry = [c for c, r in zip(commands, results) if isinstance(r, self._noscript)]
            if retry:
                shas = {}
                for script in (self._set_script, self._del_script):
                    old = script.sha
                    script.sha = self._client.script_load(script.script)
                    shas[old] = script.sha
                again = self._run([(c[0], shas.get(c[1], c[1]), *c[2:]) for c in retry])
                results = [r for r in results if not isinstance(r, self._noscript)] + again
        except self._errors as exc:
            raise self._fail(what, exc) from exc
        for r in results:
            if isinstance(r, Exception):
                raise self._fail(what, r)

    def _run(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        with self._client.pipeline(transaction=False) as pipe:
            for command in commands:
                pipe.execute_command(*command)  # type: ignore[no-untyped-call]
            return list(pipe.execute(raise_on_error=False))

    # -- whole backend -----------------------------------------------------------------
    def clear(self) -> None:
        """Remove every key under this backend's prefix (and nothing else): SCAN + UNLINK."""
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in self._prefix) + "*"
        try:
            batch: list[bytes] = []
            for name in self._client.scan_iter(match=pattern, count=_SCAN_BATCH):
                batch.append(name)
                if len(batch) >= _SCAN_BATCH:
                    self._client.unlink(*batch)
                    batch.clear()
            if batch:
                self._client.unlink(*batch)
        except self._errors as exc:
            raise self._fail(f"clear of prefix {self._prefix!r}", exc) from exc

    def close(self) -> None:
        """Close the connection pool if this backend built it from a URL."""
        if self._owned and not self._closed:
            self._closed = True
            self._client.close()
