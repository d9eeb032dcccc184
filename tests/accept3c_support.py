"""Helpers of tests/test_accept3_stores.py: stores built by kind, their clean-up, worker
functions for multiprocessing, and the journal writer child killed with ``kill -9``.

Written from DESIGN.md and docs/ only (the public API: stores, ``cw.Cache``, ``cw.open``).
"""

from __future__ import annotations

import os
import textwrap
from typing import Any

import cacheway as cw
from services import MARIADB_URL, POSTGRES_DSN

SQL_KINDS = ["sqlite", "postgres", "mariadb", "sa_sqlite"]


def store_url(kind: str, table: str, path: str) -> str:
    """The ``cw.open`` store URL of a store kind (``path``: a SQLite file)."""
    if kind == "sqlite":
        return f"sqlite:///{path}?table={table}"
    if kind == "postgres":
        return f"{POSTGRES_DSN}?table={table}"
    if kind == "mariadb":
        return f"{MARIADB_URL}?table={table}"
    if kind == "sa_sqlite":
        return f"sqlite+pysqlite:///{path}?table={table}"
    raise ValueError(kind)


def build_store(kind: str, table: str, path: str) -> Any:
    """A store object of a kind, built with its class (not from a URL)."""
    if kind == "sqlite":
        return cw.SQLiteStore(path, table=table)
    if kind == "postgres":
        return cw.PostgresStore(POSTGRES_DSN, table=table)
    if kind == "mariadb":
        return cw.SQLAlchemyStore(MARIADB_URL, table=table)
    if kind == "sa_sqlite":
        return cw.SQLAlchemyStore(f"sqlite+pysqlite:///{path}", table=table)
    raise ValueError(kind)


def drop_tables(kind: str, table: str) -> None:
    """Drop what a key/value store made on a server (SQLite files go with tmp_path)."""
    names = [table, f"{table}_meta", f"{table}_applied", f"{table}_cw_meta",
             f"{table}_cw_applied"]
    if kind == "postgres":
        import psycopg

        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(("DROP TABLE IF EXISTS "
                          + ", ".join(f'"{n}"' for n in names) + " CASCADE").encode())
            conn.execute(f'DROP SEQUENCE IF EXISTS "{table}_version_seq"'.encode())
    elif kind == "mariadb":
        import sqlalchemy as sa

        engine = sa.create_engine(MARIADB_URL)
        with engine.begin() as conn:
            for n in names:
                conn.execute(sa.text(f"DROP TABLE IF EXISTS `{n}`"))
        engine.dispose()


# -- multiprocessing workers (importable, so the spawn context can run them) -------------

def create_and_save(kind: str, table: str, path: str, n: int, barrier: Any) -> None:
    """Open a store on a table that may not exist yet, at the same moment as the others."""
    barrier.wait(timeout=60)
    store = build_store(kind, table, path)
    try:
        store.save_many([(f"w{n}", {"worker": n})])
        assert store.load(f"w{n}") == {"worker": n}
    finally:
        store.close()


def count_up(url: str, n: int, barrier: Any, backend: str = "memory://") -> None:
    """``n`` increments of one counter under write-back, from this process's own cache."""
    cache = cw.open(store=url, backend=backend, policy="write-back", max_delay=0.05)
    try:
        barrier.wait(timeout=60)
        for i in range(n):
            cache.incr("hits")
            if i % 7 == 0:
                cache.incr("hits", 3)
                cache.incr("hits", -3)
        cache.flush(timeout=60)
    finally:
        cache.close()


# -- the journal writer killed with kill -9 ----------------------------------------------

# argv: store URL, backend URL, journal path, max_delay. Each iteration i writes, then
# prints "ack i" once every write of the iteration returned (so was acknowledged).
JOURNAL_WRITER = textwrap.dedent(
    """
    import sys
    import cacheway as cw

    store, backend, journal, max_delay = sys.argv[1:5]
    cache = cw.open(store=store, backend=backend, policy="write-back",
                    max_delay=float(max_delay), journal=journal, fsync="always")
    views = cache.namespace("views")
    carts = cache.namespace("carts")
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        cache.set(f"k{i}", {"i": i, "s": "x" * (i % 7)})
        cache.incr("hits")
        views.incr("page", 2)
        carts.set(f"c{i % 5}", [i, "cart"])
        if i % 3 == 0:
            cache.delete(f"k{i - 1}")
        print(f"ack {i}", flush=True)
    """
)


def expected_after(i: int) -> dict[str, Any]:
    """What the store holds for iterations 1..i of JOURNAL_WRITER (the default namespace's
    k keys, the counters, and the carts)."""
    keys: dict[str, Any] = {}
    for j in range(1, i + 1):
        keys[f"k{j}"] = {"i": j, "s": "x" * (j % 7)}
        if j % 3 == 0:
            keys.pop(f"k{j - 1}", None)
    carts = {f"c{j % 5}": [j, "cart"] for j in range(1, i + 1)}
    return {"keys": keys, "hits": i, "page": 2 * i, "carts": carts}


# -- fork children ------------------------------------------------------------------------

def mp_child(cache: Any, n: int) -> None:
    """Run in a multiprocessing 'fork' child with the parent's cache: writes, no flush
    (the docs: a forked child flushes its caches when it ends)."""
    cache.incr("hits", 10)
    cache.set(f"child{n}", {"pid": os.getpid()})


SHARED: dict[str, Any] = {}


def pool_task(i: int) -> int:
    """A multiprocessing Pool task on the cache the parent opened before the fork."""
    cache = SHARED["cache"]
    cache.incr("hits")
    cache.namespace("views").set(f"task{i}", i)
    return os.getpid()


# argv: store URL, journal path. Four threads write their own keys and counters; each
# prints "ack T I" after its write I returned.
THREADED_WRITER = textwrap.dedent(
    """
    import sys, threading
    import cacheway as cw

    store, journal = sys.argv[1:3]
    cache = cw.open(store=store, policy="write-back", max_delay=0.01, journal=journal,
                    fsync="always")
    lock = threading.Lock()

    def run(t):
        i = 0
        while True:
            i += 1
            cache.set(f"t{t}:{i}", i)
            cache.incr(f"n{t}")
            with lock:
                print(f"ack {t} {i}", flush=True)

    print("ready", flush=True)
    for t in range(4):
        threading.Thread(target=run, args=(t,), daemon=True).start()
    threading.Event().wait()
    """
)


def create_old_table(kind: str, table: str, path: str) -> None:
    """A key/value table as made before ``expires_at`` existed (docs/operations/tables.md),
    with one row ``old`` = "kept"."""
    if kind == "sqlite":
        import sqlite3

        con = sqlite3.connect(path)
        con.execute(f'CREATE TABLE "{table}" (namespace TEXT NOT NULL, key TEXT NOT NULL, '
                    'value BLOB, version INTEGER, updated_at REAL, '
                    'PRIMARY KEY (namespace, key))')
        con.execute(f"""INSERT INTO "{table}" VALUES ('', 'old', CAST('"kept"' AS BLOB), 1, 0)""")
        con.commit()
        con.close()
    elif kind == "postgres":
        import psycopg

        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f'CREATE TABLE "{table}" (namespace text NOT NULL, key text NOT NULL, '
                         'value jsonb, version bigint, updated_at timestamptz, '
                         'PRIMARY KEY (namespace, key))'.encode())
            conn.execute(f"""INSERT INTO "{table}" VALUES ('', 'old', '"kept"', 1, now())"""
                         .encode())
    else:
        import sqlalchemy as sa

        engine = sa.create_engine(MARIADB_URL)
        with engine.begin() as conn:
            conn.execute(sa.text(
                f"CREATE TABLE `{table}` (namespace VARCHAR(255) NOT NULL, "
                "`key` VARCHAR(255) NOT NULL, value LONGBLOB, version BIGINT, "
                "updated_at DOUBLE, PRIMARY KEY (namespace, `key`))"))
            conn.execute(sa.text(f"""INSERT INTO `{table}` VALUES ('', 'old', '"kept"', 1, 0)"""))
        engine.dispose()
