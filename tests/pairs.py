"""The stores and backends of this project's suites, by kind, on the test servers.

``StoreMaker(kind, tmp_path)`` makes stores of one kind on one test's table (unique across
runs) and drops what they left at teardown; ``BackendMaker(kind)`` makes backends on one
test's Redis prefix. ``tests/test_store_suite.py``, ``tests/test_guarantees.py`` and
``tests/test_guarantees_processes.py`` subclass the suites of ``cacheway.testing`` with them.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any, ClassVar

import sqlalchemy as sa

import cacheway as cw
from services import MARIADB_URL, POSTGRES_DSN, REDIS_URL, require, unique

KV_STORES = ["sqlite", "postgres", "sqlalchemy-mariadb", "sqlalchemy-postgresql",
             "sqlalchemy-sqlite", "callback"]
ROW_STORES = ["sqlite-rows", "postgres-rows", "sqlalchemy-sqlite-rows", "sqlalchemy-mariadb-rows"]
BACKENDS = ["memory", "redis", "two-level"]
# the stores the guarantees run on (SQLAlchemy on PostgreSQL and SQLite: the store suite)
PAIR_STORES = ["sqlite", "postgres", "sqlalchemy-mariadb", "callback", "sqlite-rows",
               "postgres-rows", "sqlalchemy-mariadb-rows"]
PAIRS = [f"{b}+{s}" for b in BACKENDS for s in PAIR_STORES]
ROW = {"key_column": "id", "columns": ["name", "email"], "version_column": "version"}

_SERVICE = {"postgres": "postgresql", "sqlalchemy-postgresql": "postgresql",
            "sqlalchemy-mariadb": "mariadb"}


class PairHooks:
    """The hooks of ``cacheway.testing``'s guarantee suites for the pair :attr:`pair_name`
    ("backend+store")."""

    pair_name: ClassVar[str]
    tmp_path: Path
    table: str
    prefix: str

    def open_pair(self, pair: object) -> None:
        backend, store = self.pair_name.split("+", 1)
        self.stores = StoreMaker(store, self.tmp_path, self.table)
        self.backends = BackendMaker(backend, self.prefix)

    def close_pair(self) -> None:
        try:
            self.stores.cleanup()
        finally:
            self.backends.cleanup()

    def make_store(self) -> Any:
        return self.stores.make()

    def make_backend(self, max_entries: int | None = None) -> Any:
        return self.backends.make(max_entries)

    def value(self, i: int) -> Any:
        return self.stores.value(i)

    def refused_values(self) -> list[Any]:
        bad: list[Any] = [object(), {1, 2}, float("nan")]
        if self.stores.rows:
            bad.append({"no_such_column": 1})
        return bad

    def urls(self) -> tuple[str, str] | None:
        store = self.stores.url()
        return None if store is None else (store, self.backends.url())


def pair_class(base: type, pair: str, **attrs: Any) -> type:
    """A test class of ``base`` (a suite) for ``pair``: its flags follow the kinds."""
    backend, store = pair.split("+", 1)
    name = "Test_" + pair.replace("+", "__").replace("-", "_")
    flags = {"pair_name": pair, "pair_id": pair, "counters": not store.endswith("-rows"),
             "namespaces": not store.endswith("-rows"), "evicts": backend == "memory",
             "store_outlives_process": store != "callback"}
    return type(name, (PairHooks, base), {**flags, **attrs})


def pg_sa_url(dsn: str) -> str:
    return "postgresql+psycopg://" + dsn.split("://", 1)[1]


def drop_tables(sa_url: str, prefix: str) -> None:
    """Drop every table and sequence whose name starts with ``prefix``."""
    engine = sa.create_engine(sa_url)
    try:
        inspector = sa.inspect(engine)
        tables = [t for t in inspector.get_table_names() if t.startswith(prefix)]
        sequences = []
        if engine.dialect.name == "postgresql":
            sequences = [s for s in inspector.get_sequence_names() if s.startswith(prefix)]
        quote = engine.dialect.identifier_preparer.quote
        with engine.begin() as conn:
            if tables:
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {', '.join(map(quote, tables))}"))
            if sequences:
                conn.execute(sa.text(
                    f"DROP SEQUENCE IF EXISTS {', '.join(map(quote, sequences))}"))
    finally:
        engine.dispose()


class StoreMaker:
    """Stores of one ``kind`` for one test: on ``table`` unless told, closed and dropped by
    :meth:`cleanup`. The callback kind keeps its data in :attr:`data`, shared by the
    stores it makes (one process)."""

    def __init__(self, kind: str, tmp_path: Path, table: str | None = None) -> None:
        self.kind = kind
        self.base = kind.removesuffix("-rows")
        self.rows = kind.endswith("-rows")
        self.tmp_path = tmp_path
        self.table = table or unique("cw")
        self.data: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.made: list[Any] = []
        self._created: set[str] = set()
        self.sa_url: str | None = None
        if self.base in _SERVICE:
            require(_SERVICE[self.base])
        if self.base == "sqlalchemy-mariadb":
            self.sa_url = MARIADB_URL
        elif self.base in ("postgres", "sqlalchemy-postgresql"):
            self.sa_url = pg_sa_url(POSTGRES_DSN)

    # -- URLs (for a child process) --------------------------------------------------------
    def url(self) -> str | None:
        """The store's URL for ``cw.open`` (None where a URL cannot say it)."""
        if self.rows or self.base == "callback":
            return None
        if self.base == "sqlite":
            return f"sqlite:///{self.tmp_path / 'store.db'}?table={self.table}"
        if self.base == "postgres":
            return f"{POSTGRES_DSN}?table={self.table}"
        if self.base == "sqlalchemy-mariadb":
            return f"{MARIADB_URL}?table={self.table}"
        return None

    # -- stores ----------------------------------------------------------------------------
    def make(self, table: str | None = None) -> Any:
        table = self.table if table is None else table
        store = self._row_store(table) if self.rows else self._kv_store(table)
        self.made.append(store)
        return store

    def _kv_store(self, table: str) -> Any:
        if self.base == "sqlite":
            return cw.SQLiteStore(str(self.tmp_path / "store.db"), table=table)
        if self.base == "postgres":
            return cw.PostgresStore(POSTGRES_DSN, table=table)
        if self.base == "sqlalchemy-sqlite":
            return cw.SQLAlchemyStore("sqlite:///" + str(self.tmp_path / "sa.db"), table=table)
        if self.base in ("sqlalchemy-mariadb", "sqlalchemy-postgresql"):
            assert self.sa_url is not None
            return cw.SQLAlchemyStore(self.sa_url, table=table)
        assert self.base == "callback", self.kind
        return self._callback_store()

    def _callback_store(self) -> Any:
        data, lock = self.data, self.lock

        def load_many(keys: list[str]) -> dict[str, Any]:
            with lock:
                return {k: data[k] for k in keys if k in data}

        def save_many(items: list[tuple[str, Any]]) -> None:
            with lock:
                data.update(items)

        def delete_many(keys: list[str]) -> None:
            with lock:
                for k in keys:
                    data.pop(k, None)

        def add_many(items: list[tuple[str, int]]) -> dict[str, Any]:
            with lock:
                for k, d in items:
                    data[k] = data.get(k, 0) + d  # a str + int raises, as a store must
                return {k: data[k] for k, _ in items}

        return cw.CallbackStore(load_many, save_many, delete_many, add_many)

    def _row_store(self, table: str) -> Any:
        if table not in self._created:
            self._create_rows_table(table)
            self._created.add(table)
        if self.base == "sqlite":
            return cw.SQLiteStore(str(self.tmp_path / "rows.db"), table=table, **ROW)
        if self.base == "postgres":
            return cw.PostgresStore(POSTGRES_DSN, table=table, **ROW)
        return cw.SQLAlchemyStore(self._rows_sa_url(), table=table, **ROW)

    def _rows_sa_url(self) -> str:
        if self.base == "sqlalchemy-sqlite":
            return "sqlite:///" + str(self.tmp_path / "rows.db")
        assert self.sa_url is not None
        return self.sa_url

    def _create_rows_table(self, table: str) -> None:
        if self.base == "sqlite":
            with sqlite3.connect(self.tmp_path / "rows.db") as conn:
                conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, "
                             "name TEXT, email TEXT, version BIGINT)")
            return
        text = "TEXT"
        key = "TEXT"
        if self.base == "sqlalchemy-mariadb":
            key = "VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
            text = "TEXT CHARACTER SET utf8mb4"
        engine = sa.create_engine(self._rows_sa_url() if self.base != "postgres"
                                  else pg_sa_url(POSTGRES_DSN))
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(f"CREATE TABLE IF NOT EXISTS {table} (id {key} PRIMARY "
                                     f"KEY, name {text}, email {text}, version BIGINT)"))
        finally:
            engine.dispose()

    def value(self, i: int) -> Any:
        """A value this kind of store keeps, distinct for each ``i``."""
        if self.rows:
            return {"name": f"n{i}", "email": f"e{i}@example.com"}
        return {"i": i, "text": f"v{i}"}

    def cleanup(self) -> None:
        try:
            for store in reversed(self.made):
                store.close()
        finally:
            if self.sa_url is not None:
                drop_tables(self.sa_url, self.table)


class BackendMaker:
    """Backends of one ``kind`` on one test's Redis prefix; :meth:`cleanup` closes them and
    removes the prefix's keys."""

    def __init__(self, kind: str, prefix: str | None = None) -> None:
        self.kind = kind
        self.prefix = prefix or f"{unique('gp')}:"
        self.made: list[Any] = []
        if kind != "memory":
            require("redis")

    def url(self) -> str:
        if self.kind == "memory":
            return "memory://"
        scheme = "redis+l1" if self.kind == "two-level" else "redis"
        return f"{scheme}{REDIS_URL.split('redis', 1)[1]}?prefix={self.prefix}"

    def make(self, max_entries: int | None = None) -> Any:
        if self.kind == "memory":
            return cw.MemoryBackend(max_entries=max_entries)
        l2 = cw.RedisBackend(REDIS_URL, prefix=self.prefix)
        self.made.append(l2)
        if self.kind == "redis":
            return l2
        two = cw.TwoLevelBackend(cw.MemoryBackend(max_entries=max_entries), l2)
        self.made.append(two)
        return two

    def cleanup(self) -> None:
        try:
            for backend in reversed(self.made):
                backend.close()
        finally:
            if self.kind != "memory":
                import redis

                client = redis.Redis.from_url(REDIS_URL)
                try:
                    names = list(client.scan_iter(match=self.prefix + "*", count=1000))
                    if names:
                        client.unlink(*names)
                finally:
                    client.close()
