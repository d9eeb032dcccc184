"""``cacheway.open``: build a cache from URLs (what the CLI uses).

A URL's scheme picks a factory from a registry: :data:`STORE_SCHEMES` and
:data:`BACKEND_SCHEMES`. A new store or backend is one line,
``register_store_scheme("mydb", factory)``, where ``factory(url, parts, params)`` gets the
URL, its ``urlsplit`` parts and its query options (a dict it pops what it knows from;
what is left is an error for it to raise).

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "app.db")
>>> with open(store=f"sqlite:///{path}", policy="write-back", max_delay=0.1) as cache:
...     cache.set("a", 1)
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit, urlunsplit

from .backends.base import Backend
from .backends.memory import MemoryBackend
from .cache import Cache
from .errors import ConfigError
from .policies import Policy, policy_from_name
from .stores.base import Store
from .stores.sqlite import SQLiteStore

__all__ = [
    "BACKEND_SCHEMES",
    "STORE_SCHEMES",
    "BackendFactory",
    "StoreFactory",
    "backend_from_url",
    "open",
    "register_backend_scheme",
    "register_store_scheme",
    "store_from_url",
]

#: ``factory(url, parts, params)``: the URL, its ``urlsplit`` parts, its query options.
StoreFactory = Callable[[str, SplitResult, "dict[str, str]"], Store]
BackendFactory = Callable[[str, SplitResult, "dict[str, str]"], Backend]

log = logging.getLogger("cacheway")

#: scheme -> factory. ``"+"`` stands for any ``dialect+driver`` scheme not listed.
STORE_SCHEMES: dict[str, StoreFactory] = {}
BACKEND_SCHEMES: dict[str, BackendFactory] = {}

_STORE_HINT = "sqlite:///path, postgresql://..., or an SQLAlchemy URL (mysql+pymysql://...)"
_BACKEND_HINT = ("memory://, redis://host:port/db, rediss://, or redis+l1://host:port/db "
                 "(process memory in front of Redis)")
_BUILT_IN: set[str] = set()  # schemes the hints above already name


def register_store_scheme(scheme: str, factory: StoreFactory, *, replace: bool = False
                          ) -> None:
    """Let :func:`store_from_url` (and ``cacheway.open``, the CLI) build stores for
    ``scheme://`` URLs with ``factory(url, parts, params)``.

    >>> register_store_scheme("sqlite", lambda url, parts, params: None)
    Traceback (most recent call last):
    ...
    cacheway.errors.ConfigError: store URL scheme 'sqlite' is taken: pass replace=True
    """
    _register(STORE_SCHEMES, "store", scheme, factory, replace)


def register_backend_scheme(scheme: str, factory: BackendFactory, *, replace: bool = False
                            ) -> None:
    """Let :func:`backend_from_url` build backends for ``scheme://`` URLs with
    ``factory(url, parts, params)``."""
    _register(BACKEND_SCHEMES, "backend", scheme, factory, replace)


def _register(registry: dict[str, Any], what: str, scheme: str, factory: Callable[..., Any],
              replace: bool) -> None:
    if not isinstance(scheme, str) or not re.fullmatch(r"[a-z][a-z0-9+.-]*|\+", scheme):
        raise ConfigError(f"{what} URL scheme must be lower-case letters, digits, '+', '-' "
                          f"or '.', starting with a letter, not {scheme!r}")
    if not callable(factory):
        raise ConfigError(f"the factory for {scheme!r} must be callable, not {factory!r}")
    if scheme in registry and not replace:
        raise ConfigError(f"{what} URL scheme {scheme!r} is taken: pass replace=True")
    registry[scheme] = factory


def _lookup(registry: dict[str, Any], scheme: str) -> Any:
    found = registry.get(scheme)
    if found is None and "+" in scheme:
        found = registry.get("+")
    return found


def _hint(registry: dict[str, Any], base: str) -> str:
    extra = sorted(s for s in registry if s not in _BUILT_IN)
    return base + "".join(f", {s}://" for s in extra)


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
    ``sqlite://:memory:``; ``?table=name&synchronous=NORMAL``; or any scheme in
    :data:`STORE_SCHEMES`."""
    if not isinstance(url, str):
        raise ConfigError(f"store URL must be a str, not {url!r}")
    parts = _split(url, "store")
    params = dict(parse_qsl(parts.query))
    if table is not None:
        params["table"] = table
    factory = _lookup(STORE_SCHEMES, parts.scheme.lower())
    if factory is None:
        raise ConfigError(f"unknown store URL {_redact(url)!r}: use "
                          f"{_hint(STORE_SCHEMES, _STORE_HINT)}")
    store: Store = factory(url, parts, params)
    return store


def sqlite_path(url: str) -> str | None:
    """The database file of a ``sqlite:`` store URL (``":memory:"`` for an in-memory
    one); None for another scheme."""
    parts = _split(url, "store")
    if parts.scheme.lower() != "sqlite":
        return None
    return _sqlite_path(parts)


def _sqlite_path(parts: SplitResult) -> str:
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    return ":memory:" if parts.netloc == ":memory:" or path == ":memory:" else path


def _sqlite(url: str, parts: SplitResult, params: dict[str, str]) -> Store:
    path = _sqlite_path(parts)
    if not path:
        raise ConfigError(f"SQLite URL {url!r} has no path: use sqlite:///app.db")
    kwargs: dict[str, Any] = {}
    for name in ("table", "synchronous"):
        if name in params:
            kwargs[name] = params.pop(name)
    if params:
        raise ConfigError(f"unknown SQLite URL option(s) {sorted(params)} in {url!r}")
    return SQLiteStore(path, **kwargs)


def _postgres(url: str, parts: SplitResult, params: dict[str, str]) -> Store:
    from .stores.postgres import PostgresStore

    tbl = params.pop("table", "cacheway")
    return PostgresStore(_libpq_dsn(parts, params), table=tbl)


def _libpq_dsn(parts: SplitResult, params: dict[str, str]) -> str:
    # cacheway's own options are not libpq's: pass the DSN on without them
    rest = "&".join(f"{k}={v}" for k, v in params.items())
    return urlunsplit((parts.scheme, parts.netloc, parts.path, rest, ""))


def missing_table(url: str) -> str | None:
    """The table a built-in store ``url`` names (``?table=``, else ``cacheway``) when its
    database does not have it, else None (also for other schemes): what a command that
    only reads (``cacheway check``) refuses, where opening the store would create it."""
    parts = _split(url, "store")
    params = dict(parse_qsl(parts.query))
    table = params.pop("table", "cacheway")
    factory = _lookup(STORE_SCHEMES, parts.scheme.lower())
    try:
        found = _table_found(factory, url, parts, params, table)
    except Exception as exc:  # noqa: BLE001 - cannot tell: opening the store reports it
        log.debug("cacheway: looking for table %r failed: %s", table, type(exc).__name__)
        return None
    return None if found else table


def _table_found(factory: Any, url: str, parts: SplitResult, params: dict[str, str],
                 table: str) -> bool:
    if factory is _sqlite:
        import sqlite3

        path = _sqlite_path(parts)
        if path == ":memory:":
            return True
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                                "name = ?", (table,)).fetchone() is not None
    if factory is _postgres:
        import psycopg

        with psycopg.connect(_libpq_dsn(parts, params), connect_timeout=10) as conn:
            quoted = '"' + table.replace('"', '""') + '"'
            row = conn.execute("SELECT to_regclass(%s)", (quoted,)).fetchone()
            return row is not None and row[0] is not None
    if factory is _sqlalchemy:
        import sqlalchemy

        engine = sqlalchemy.create_engine(_without(url, "table"))
        try:
            with engine.connect() as conn:
                return bool(sqlalchemy.inspect(conn).has_table(table))
        finally:
            engine.dispose()
    return True


def _sqlalchemy(url: str, parts: SplitResult, params: dict[str, str]) -> Store:
    from .stores.sqlalchemy import SQLAlchemyStore

    tbl = params.pop("table", "cacheway")
    # The URL as given, less cacheway's option (urlunsplit would drop the empty host of
    # sqlite+pysqlite:///rel.db and two slashes of sqlite+pysqlite:////abs.db).
    return SQLAlchemyStore(_without(url, "table"), table=tbl)


def backend_from_url(url: str) -> Backend:
    """A backend for ``url``: ``memory://?max_entries=N&max_bytes=N``,
    ``redis://[user:password@]host:port/db?prefix=cw:`` (``rediss://`` for TLS),
    ``redis+l1://...?l1_max_entries=N&l1_ttl=S``, or any scheme in :data:`BACKEND_SCHEMES`.
    A two-level backend built here owns its Redis level (closing it closes both)."""
    if not isinstance(url, str):
        raise ConfigError(f"backend URL must be a str, not {url!r}")
    parts = _split(url, "backend")
    factory = _lookup(BACKEND_SCHEMES, parts.scheme.lower())
    if factory is None:
        raise ConfigError(f"unknown backend URL {_redact(url)!r}: use "
                          f"{_hint(BACKEND_SCHEMES, _BACKEND_HINT)}")
    backend: Backend = factory(url, parts, dict(parse_qsl(parts.query)))
    return backend


def _memory(url: str, parts: SplitResult, params: dict[str, str]) -> Backend:
    max_entries = _int_param(params, "max_entries", url)
    max_bytes = _int_param(params, "max_bytes", url)
    if params:
        raise ConfigError(f"unknown memory URL option(s) {sorted(params)} in {_redact(url)!r}")
    return MemoryBackend(max_entries=max_entries, max_bytes=max_bytes)


def _two_level(url: str, parts: SplitResult, params: dict[str, str]) -> Backend:
    from .backends.redis import RedisBackend
    from .backends.two_level import TwoLevelBackend

    _check_port(parts, url)
    prefix = params.pop("prefix", "cw:")
    max_entries = _int_param(params, "l1_max_entries", url)
    l1_ttl = _float_param(params, "l1_ttl", url)
    if params:
        raise ConfigError(f"unknown option(s) {sorted(params)} in {_redact(url)!r}")
    base = urlunsplit((parts.scheme.lower().split("+")[0], parts.netloc, parts.path, "", ""))
    l2 = RedisBackend(base, prefix=prefix)
    try:
        return TwoLevelBackend(MemoryBackend(max_entries=max_entries), l2,
                               l1_ttl=l1_ttl, owns_l2=True)
    except BaseException:
        l2.close()
        raise


def _redis(url: str, parts: SplitResult, params: dict[str, str]) -> Backend:
    from .backends.redis import RedisBackend

    _check_port(parts, url)
    prefix = params.pop("prefix", "cw:")
    # other options (e.g. ssl_cert_reqs) stay in the URL for redis-py
    return RedisBackend(_without(url, "prefix"), prefix=prefix)


def _without(url: str, option: str) -> str:
    """``url`` without the query option ``option`` (cacheway's), the others as given."""
    base, _, query = url.partition("?")
    query = query.split("#", 1)[0]
    kept = [p for p in query.split("&") if p and p.split("=", 1)[0] != option]
    return base + ("?" + "&".join(kept) if kept else "")


STORE_SCHEMES.update({"sqlite": _sqlite, "postgresql": _postgres, "postgres": _postgres})
STORE_SCHEMES.update(dict.fromkeys(("mysql", "mariadb", "oracle", "mssql", "+"), _sqlalchemy))
BACKEND_SCHEMES.update({"memory": _memory, "redis+l1": _two_level, "rediss+l1": _two_level})
BACKEND_SCHEMES.update(dict.fromkeys(("redis", "rediss", "unix"), _redis))
_BUILT_IN.update(STORE_SCHEMES, BACKEND_SCHEMES)


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
            owned.append(be)  # a two-level backend built from a URL closes its L2 too
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
    cache.close_with(*owned)
    return cache
