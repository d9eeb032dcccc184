"""``cacheway.open``: build a cache from URLs (what the CLI uses).

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "app.db")
>>> with open(store=f"sqlite:///{path}", policy="write-back", max_delay=0.1) as cache:
...     cache.set("a", 1)
"""

from __future__ import annotations

import builtins
import re
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit, urlunsplit

from .backends.base import Backend
from .backends.memory import MemoryBackend
from .cache import Cache
from .errors import ConfigError
from .policies import Policy, policy_from_name
from .stores.base import Store
from .stores.sqlite import SQLiteStore

__all__ = ["backend_from_url", "open", "store_from_url"]

_STORE_SCHEMES = "sqlite:///path, postgresql://..., or an SQLAlchemy URL (mysql+pymysql://...)"
_BACKEND_SCHEMES = ("memory://, redis://host:port/db, rediss://, or redis+l1://host:port/db "
                    "(process memory in front of Redis)")


_SQLALCHEMY_SCHEMES = ("mysql", "mariadb", "oracle", "mssql")


def _redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (URLs go into error messages)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # too malformed to split: hide whatever sits between ':' and '@'
        return re.sub(r"(//[^/@:]*:)[^@]*@", r"\1***@", url)
    if password is None:
        return url
    netloc = parts.netloc.replace(f":{password}@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _split(url: str, what: str) -> SplitResult:
    """``urlsplit(url)``, with the ``ValueError`` of a malformed URL (an unclosed IPv6
    bracket) or a NUL character as a :class:`ConfigError` naming it. The port is left to
    the driver: libpq takes ``host1:5432,host2:5433``."""
    if "\x00" in url:
        raise ConfigError(f"{what} URL {_redact(url)!r} holds a NUL character")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"malformed {what} URL {_redact(url)!r}: {exc}") from None
    return parts


def _int_param(params: dict[str, str], name: str, url: str) -> int | None:
    if name not in params:
        return None
    try:
        return int(params.pop(name))
    except ValueError:
        raise ConfigError(f"{name} in {_redact(url)!r} must be an integer") from None


def _float_param(params: dict[str, str], name: str, url: str) -> float | None:
    if name not in params:
        return None
    try:
        return float(params.pop(name))
    except ValueError:
        raise ConfigError(f"{name} in {_redact(url)!r} must be a number") from None


def _check_port(parts: SplitResult, url: str) -> None:
    try:
        parts.port  # noqa: B018 -- reading it checks it
    except ValueError as exc:
        raise ConfigError(f"malformed URL {_redact(url)!r}: {exc}") from None


def store_from_url(url: str, *, table: str | None = None) -> Store:
    """A store for ``url``: ``sqlite:///relative.db``, ``sqlite:////abs/path.db``,
    ``sqlite://:memory:``; ``?table=name&synchronous=NORMAL``."""
    if not isinstance(url, str):
        raise ConfigError(f"store URL must be a str, not {url!r}")
    parts = _split(url, "store")
    scheme = parts.scheme.lower()
    params = dict(parse_qsl(parts.query))
    if table is not None:
        params["table"] = table
    if scheme == "sqlite":
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if parts.netloc == ":memory:" or path == ":memory:":
            path = ":memory:"
        if not path:
            raise ConfigError(f"SQLite URL {url!r} has no path: use sqlite:///app.db")
        kwargs: dict[str, Any] = {}
        for name in ("table", "synchronous"):
            if name in params:
                kwargs[name] = params.pop(name)
        if params:
            raise ConfigError(f"unknown SQLite URL option(s) {sorted(params)} in {url!r}")
        return SQLiteStore(path, **kwargs)
    if scheme in ("postgresql", "postgres"):
        from .stores.postgres import PostgresStore

        tbl = params.pop("table", "cacheway")
        # cacheway's own options are not libpq's: pass the DSN on without them
        rest = "&".join(f"{k}={v}" for k, v in params.items())
        dsn = urlunsplit((parts.scheme, parts.netloc, parts.path, rest, ""))
        return PostgresStore(dsn, table=tbl)
    if "+" in scheme or scheme in _SQLALCHEMY_SCHEMES:
        from .stores.sqlalchemy import SQLAlchemyStore

        tbl = params.pop("table", "cacheway")
        rest = "&".join(f"{k}={v}" for k, v in params.items())
        return SQLAlchemyStore(urlunsplit((parts.scheme, parts.netloc, parts.path, rest, "")),
                               table=tbl)
    raise ConfigError(f"unknown store URL {_redact(url)!r}: use {_STORE_SCHEMES}")


def backend_from_url(url: str) -> Backend:
    """A backend for ``url``: ``memory://?max_entries=N&max_bytes=N``, or
    ``redis://[user:password@]host:port/db?prefix=cw:`` (``rediss://`` for TLS)."""
    if not isinstance(url, str):
        raise ConfigError(f"backend URL must be a str, not {url!r}")
    parts = _split(url, "backend")
    scheme = parts.scheme.lower()
    params = dict(parse_qsl(parts.query))
    if scheme == "memory":
        max_entries = _int_param(params, "max_entries", url)
        max_bytes = _int_param(params, "max_bytes", url)
        if params:
            raise ConfigError(f"unknown memory URL option(s) {sorted(params)} in {_redact(url)!r}")
        return MemoryBackend(max_entries=max_entries, max_bytes=max_bytes)
    if scheme in ("redis+l1", "rediss+l1"):
        from .backends.redis import RedisBackend
        from .backends.two_level import TwoLevelBackend

        _check_port(parts, url)
        prefix = params.pop("prefix", "cw:")
        max_entries = _int_param(params, "l1_max_entries", url)
        l1_ttl = _float_param(params, "l1_ttl", url)
        if params:
            raise ConfigError(f"unknown option(s) {sorted(params)} in {_redact(url)!r}")
        base = urlunsplit((scheme.split("+")[0], parts.netloc, parts.path, "", ""))
        l2 = RedisBackend(base, prefix=prefix)
        try:
            two = TwoLevelBackend(MemoryBackend(max_entries=max_entries), l2,
                                  l1_ttl=l1_ttl)
        except BaseException:
            l2.close()
            raise
        two._owned_l2 = l2  # type: ignore[attr-defined]
        return two
    if scheme in ("redis", "rediss", "unix"):
        from .backends.redis import RedisBackend

        _check_port(parts, url)
        prefix = params.pop("prefix", "cw:")
        base = url.split("?", 1)[0]
        if params:  # other options (e.g. ssl_cert_reqs) stay in the URL for redis-py
            base = url
        return RedisBackend(base, prefix=prefix)
    raise ConfigError(f"unknown backend URL {_redact(url)!r}: use {_BACKEND_SCHEMES}")


def open(
    store: str | Store = "sqlite:///cacheway.db",
    backend: str | Backend = "memory://",
    policy: str | Policy = "write-through",
    ttl: float | None = None,
    **options: Any,
) -> Cache:
    """A :class:`Cache` from URLs; ``options`` go to the policy (``max_delay=0.5``,
    ``journal="app.wal"``, ...). What it builds from URLs closes with the cache."""
    owned: builtins.list[Any] = []
    try:
        st = store_from_url(store) if isinstance(store, str) else store
        if isinstance(store, str):
            owned.append(st)
        be = backend_from_url(backend) if isinstance(backend, str) else backend
        if isinstance(backend, str):
            owned.append(be)
            l2 = getattr(be, "_owned_l2", None)
            if l2 is not None:  # a two-level backend leaves its levels to their owner
                owned.append(l2)
        if isinstance(policy, str):
            pol = policy_from_name(policy, **options)
        elif options:
            raise ConfigError(f"options {sorted(options)} need a policy name, not {policy!r}")
        else:
            pol = policy
        cache = Cache(store=st, backend=be, policy=pol, ttl=ttl)
    except BaseException:
        for resource in owned:
            resource.close()
        raise
    cache._owned.extend(owned)
    return cache
