"""expire= on a namespace (issue 14): the data ends ``expire`` seconds after its last
write, in the cache and in the store alike; expired rows are purged in the background;
tables from before expiry gain the column without losing rows.

Expiry is wall-clock time, so these tests sleep past short expiries (1 s). Every bound
is one-sided with a wide margin: a read well before the end must see the data, a read
after it must not (no read is timed near the boundary).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import cacheway as cw
from cacheway.stores.base import SET, Op
from cacheway.testing import FaultyStore
from services import unique

EXPIRE = 1.0

POLICY: dict[str, Callable[[], cw.Policy]] = {
    "write-through": cw.WriteThrough,
    "write-back": lambda: cw.WriteBack(max_delay=0.02, retry=cw.Retry(base_delay=0.01)),
    "write-around": cw.WriteAround,
}


@pytest.fixture
def sqlite_store(tmp_path: Any) -> Iterator[cw.SQLiteStore]:
    store = cw.SQLiteStore(str(tmp_path / "app.db"))
    yield store
    store.close()


def _store(kind: str, tmp_path: Any, postgres_dsn: str, mariadb_url: str) -> Any:
    if kind == "sqlite":
        return cw.SQLiteStore(str(tmp_path / "app.db"))
    if kind == "postgres":
        return cw.PostgresStore(postgres_dsn, table=unique("exp"))
    return cw.SQLAlchemyStore(mariadb_url, table=unique("exp"))


def _stored(store: Any, key: str, ns: str = "s") -> Any:
    return store.load(key, namespace=ns)


# -- the data ends, in the cache and in the store ----------------------------------------
@pytest.mark.parametrize("policy", list(POLICY))
def test_expire_ends_the_data_in_the_cache_and_the_store(policy: str, sqlite_store: Any,
                                                          autoclose: Any) -> None:
    cache = autoclose(cw.Cache(store=sqlite_store, policy=POLICY[policy]()))
    s = cache.namespace("s", expire=EXPIRE)
    s.set("a", {"u": 1})
    s.set_many({"b": 2, "c": 3})
    s.incr("n", 5)
    cache.flush()
    assert s.get("a") == {"u": 1}
    assert s.get_many(["b", "c"]) == {"b": 2, "c": 3}
    assert _stored(sqlite_store, "a") == {"u": 1}
    assert _stored(sqlite_store, "n") == 5
    time.sleep(EXPIRE + 0.2)
    # every level: the cached copy, the store's row (read-through would load it), the
    # store itself
    assert s.get("a") is None
    assert s.get("a", "gone") == "gone"
    assert s.get_many(["a", "b", "c", "n"]) == {}
    assert _stored(sqlite_store, "a") is None
    assert _stored(sqlite_store, "n") is None
    # a counter whose data ended starts again (in the cache and in the store)
    assert s.incr("n") == 1
    cache.flush()
    assert _stored(sqlite_store, "n") == 1


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mariadb"])
@pytest.mark.parametrize("policy", ["write-through", "write-back"])
def test_expire_on_every_store_with_a_shared_backend(
        kind: str, policy: str, tmp_path: Any, postgres_dsn: str, mariadb_url: str,
        redis_url: str, prefix: str, autoclose: Any) -> None:
    store = _store(kind, tmp_path, postgres_dsn, mariadb_url)
    backend = cw.RedisBackend(redis_url, prefix=prefix)
    cache = autoclose(cw.Cache(store=store, backend=backend, policy=POLICY[policy]()))
    cache.close_with(store, backend)
    s = cache.namespace("s", expire=EXPIRE)
    s.set("a", "x")
    s.incr("n", 2)
    long = cache.namespace("long", expire=3600)
    long.set("kept", "y")
    cache.flush()
    other = autoclose(cw.Cache(store=store, backend=backend, policy=POLICY[policy]()))
    o = other.namespace("s", expire=EXPIRE)
    assert o.get("a") == "x"
    assert o.get("n") == 2
    time.sleep(EXPIRE + 0.2)
    assert o.get("a") is None
    assert s.get("a") is None
    assert o.get("n") is None
    assert _stored(store, "a") is None
    assert other.namespace("long", expire=3600).get("kept") == "y"
    assert _stored(store, "kept", "long") == "y"


def test_expire_each_write_starts_the_datas_life_again(sqlite_store: Any,
                                                       autoclose: Any) -> None:
    cache = autoclose(cw.Cache(store=sqlite_store, policy=POLICY["write-back"]()))
    s = cache.namespace("s", expire=1.0)
    started = time.time()
    s.set("a", 1)
    s.set("b", 1)
    cache.flush()
    time.sleep(0.6)
    rewritten = time.time()
    s.set("b", 2)  # b now ends 1 s from here; a 1 s from the start
    cache.flush()
    assert sqlite_store.fetch("s", ["b"])["b"].expires_at >= rewritten + 1.0
    time.sleep(max(0.0, started + 1.2 - time.time()))
    assert s.get("a") is None
    assert _stored(sqlite_store, "a") is None
    assert sqlite_store.fetch("s", ["b"])["b"].expires_at >= rewritten + 1.0


def test_expire_a_fill_lives_only_what_is_left_of_the_row(sqlite_store: Any,
                                                           autoclose: Any) -> None:
    writer = autoclose(cw.Cache(store=sqlite_store))
    writer.namespace("s", expire=EXPIRE).set("a", 1)
    time.sleep(EXPIRE / 2)
    # another cache (its own memory) reads the row with half its life left: its copy
    # must not outlive the row, though its ttl (60 s) is far longer
    reader = autoclose(cw.Cache(store=sqlite_store, ttl=60))
    r = reader.namespace("s", expire=EXPIRE)
    assert r.get("a") == 1
    time.sleep(EXPIRE / 2 + 0.2)
    assert r.get("a") is None
    assert reader.stats().loads == 2  # the second read went to the store, which said no


def test_expire_a_pending_write_back_entry_ends_while_the_store_is_down(
        tmp_path: Any, autoclose: Any) -> None:
    faulty = FaultyStore(cw.SQLiteStore(str(tmp_path / "app.db")))
    faulty.failing = True
    cache = autoclose(cw.Cache(store=faulty, policy=POLICY["write-back"]()))
    s = cache.namespace("s", expire=EXPIRE)
    s.set("a", 1)
    s.incr("n", 3)
    assert s.get("a") == 1
    assert s.pending() == 2
    time.sleep(EXPIRE + 0.2)
    assert s.pending() == 2  # still not in the store: kept, but its data has ended
    assert s.get("a") is None
    assert s.get_many(["a", "n"]) == {}
    assert s.incr("n", 4) == 4
    faulty.failing = False
    cache.flush()
    assert _stored(faulty, "a") is None
    # the counter's row holds 4, not 3 + 4 (read raw: the retry backoff may have held
    # the flush past this write's own end too)
    conn = sqlite3.connect(str(tmp_path / "app.db"))
    try:
        rows = dict(conn.execute("SELECT key, value FROM cacheway WHERE namespace = 's'"))
    finally:
        conn.close()
    assert rows["n"] == b"4"


def test_expire_ttl_never_outlives_the_data(sqlite_store: Any, autoclose: Any) -> None:
    cache = autoclose(cw.Cache(store=sqlite_store, ttl=3600))
    s = cache.namespace("s", expire=EXPIRE, ttl=3600)
    s.set("a", 1, ttl=3600)
    s.set_many({"b": 2}, ttl=3600)
    time.sleep(EXPIRE + 0.2)
    assert s.get("a") is None
    assert s.get("b") is None
    assert cache.stats().loads == 2  # the copies had ended: each read asked the store


# -- durability: the journal keeps each write's stamp ------------------------------------
def test_expire_a_journal_replay_keeps_each_writes_own_end(tmp_path: Any) -> None:
    journal = str(tmp_path / "app.wal")
    path = str(tmp_path / "app.db")
    down = FaultyStore(cw.SQLiteStore(path))
    down.failing = True
    policy = cw.WriteBack(journal=journal, fsync="always", max_delay=0.02)
    cache = cw.Cache(store=down, policy=policy)
    s = cache.namespace("s", expire=EXPIRE)
    s.set("old", 1)
    s.namespace("long").set("forever", 2)  # a namespace without expire=
    long_lived = cache.namespace("s2", expire=3600)
    long_lived.set("young", 3)
    with pytest.raises(cw.StoreError):
        cache.close(timeout=0.1)  # the journal keeps all three
    time.sleep(EXPIRE + 0.2)
    up = cw.SQLiteStore(path)
    with cw.Cache(store=up, policy=cw.WriteBack(journal=journal, fsync="always")) as again:
        again.namespace("s", expire=EXPIRE)  # each namespace replays its own journal
        again.namespace("s2", expire=3600)
        again.namespace("long")
        # the replay wrote "old" with its own stamp (ended), not a new one
        assert _stored(up, "old") is None
        assert _stored(up, "young", "s2") == 3
        assert _stored(up, "forever", "long") == 2
    raw = sqlite3.connect(path)
    ends = dict(raw.execute("SELECT key, expires_at FROM cacheway"))
    raw.close()
    assert ends["forever"] is None
    assert ends["young"] > time.time() + 3000
    assert "old" in ends
    assert ends["old"] < time.time()
    up.close()
    down.close()


# -- purge -------------------------------------------------------------------------------
def _rows(path: str) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return sorted(k for (k,) in conn.execute("SELECT key FROM cacheway"))
    finally:
        conn.close()


def test_expire_purges_expired_rows_in_the_background(tmp_path: Any, autoclose: Any) -> None:
    path = str(tmp_path / "app.db")
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(path)))
    cache.close_with(cache.store)
    s = cache.namespace("s", expire=0.2)
    s.set_many({f"k{i}": i for i in range(5)})
    cache.set("plain", 1)
    assert _rows(path) == ["k0", "k1", "k2", "k3", "k4", "plain"]
    # the purger runs every expire/4 seconds, at least 0.5 s apart
    deadline = time.monotonic() + 10
    while _rows(path) != ["plain"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _rows(path) == ["plain"]


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "mariadb"])
def test_expire_purge_expired_deletes_only_ended_rows(kind: str, tmp_path: Any,
                                                      postgres_dsn: str,
                                                      mariadb_url: str) -> None:
    store = _store(kind, tmp_path, postgres_dsn, mariadb_url)
    try:
        now = time.time()
        store.apply([Op("s", f"e{i}", SET, b"1", expires_at=now - 1) for i in range(5)]
                    + [Op("s", "live", SET, b"2", expires_at=now + 60),
                       Op("s", "plain", SET, b"3")])
        assert store.purge_expired(limit=3) == 3
        assert store.purge_expired(limit=3) == 2
        assert store.purge_expired() == 0
        assert store.load_many(["live", "plain", "e0"], namespace="s") == {"live": 2,
                                                                           "plain": 3}
        assert store.sample_keys("s", 10)
        assert set(store.sample_keys("s", 10)) == {
            "live", "plain"}
    finally:
        store.close()


# -- tables from before expiry -------------------------------------------------------------
def _old_rows_kept_new_ones_end(store: Any, autoclose: Any) -> cw.Cache:
    """A cache on ``store`` (over a table made before expiry, holding ('s', 'old') =
    "kept"): the old row reads, a new write under expire= ends, the old row never does."""
    cache = autoclose(cw.Cache(store=store))
    cache.close_with(store)
    s = cache.namespace("s", expire=EXPIRE)
    assert s.get("old") == "kept"
    s.set("new", 1)
    time.sleep(EXPIRE + 0.2)
    assert s.get("new") is None
    assert s.get("old") == "kept"  # old rows never expire
    return cache


def test_expire_an_old_sqlite_table_gains_the_column_without_losing_rows(
        tmp_path: Any, autoclose: Any) -> None:
    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE cacheway (namespace TEXT NOT NULL, key TEXT NOT NULL, value BLOB, "
        "version INTEGER NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (namespace, key)) "
        "WITHOUT ROWID;"
        "INSERT INTO cacheway VALUES ('s', 'old', '\"kept\"', 1, 0), ('', 'x', '7', 2, 0);")
    conn.close()
    cache = _old_rows_kept_new_ones_end(cw.SQLiteStore(path), autoclose)
    assert cache.get("x") == 7  # the default namespace's old row too


def test_expire_an_old_postgres_table_gains_the_column_without_losing_rows(
        postgres_dsn: str, autoclose: Any) -> None:
    import psycopg

    table = unique("oldexp")
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE TABLE "{table}" (namespace text NOT NULL, key text NOT NULL, '
                     "value jsonb, version bigint NOT NULL, updated_at timestamptz NOT NULL "
                     "DEFAULT now(), PRIMARY KEY (namespace, key))")
        conn.execute(f'INSERT INTO "{table}" (namespace, key, value, version) VALUES '
                     "('s', 'old', '\"kept\"', 1)")
    _old_rows_kept_new_ones_end(cw.PostgresStore(postgres_dsn, table=table), autoclose)
    cw.PostgresStore(postgres_dsn, table=table).close()  # a second open finds it there


def test_expire_an_old_sqlalchemy_table_gains_the_column_without_losing_rows(
        mariadb_url: str, autoclose: Any) -> None:
    import sqlalchemy as sa

    table = unique("oldexp")
    engine = sa.create_engine(mariadb_url)
    with engine.begin() as conn:
        conn.execute(sa.text(
            f"CREATE TABLE `{table}` (namespace VARCHAR(255) NOT NULL, `key` VARCHAR(255) "
            "NOT NULL, value LONGBLOB, version BIGINT NOT NULL, updated_at DOUBLE NOT NULL, "
            "PRIMARY KEY (namespace, `key`))"))
        conn.execute(sa.text(f"INSERT INTO `{table}` VALUES ('s', 'old', '\"kept\"', 1, 0)"))
    engine.dispose()
    _old_rows_kept_new_ones_end(cw.SQLAlchemyStore(mariadb_url, table=table), autoclose)


# -- what cannot expire is refused at the call ------------------------------------------------
@pytest.mark.parametrize("bad", [0, -1, "60", True, float("inf"), float("nan")])
def test_expire_bad_values_are_refused(bad: Any, sqlite_store: Any, autoclose: Any) -> None:
    cache = autoclose(cw.Cache(store=sqlite_store))
    with pytest.raises(cw.ConfigError, match="expire"):
        cache.namespace("s", expire=bad)
    assert "s" not in cache.namespaces()


def test_expire_is_refused_where_the_store_keeps_no_expiry(tmp_path: Any,
                                                          autoclose: Any) -> None:
    callbacks = cw.CallbackStore(lambda k: None, lambda k, v: None, lambda k: None)
    cache = autoclose(cw.Cache(store=callbacks))
    with pytest.raises(cw.ConfigError, match="expiry column"):
        cache.namespace("s", expire=60)
    conn = sqlite3.connect(str(tmp_path / "rows.db"))
    conn.execute("CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT)")
    conn.close()
    rows = cw.SQLiteStore(str(tmp_path / "rows.db"), table="users", key_column="id",
                          columns=["name"])
    rcache = autoclose(cw.Cache(store=rows))
    rcache.close_with(rows)
    with pytest.raises(cw.ConfigError, match="expiry column"):
        rcache.namespace("s", expire=60)
    with pytest.raises(cw.ConfigError, match="row-mode"):
        rows.purge_expired()


def test_expire_a_namespace_opened_again_with_another_expire_is_refused(
        sqlite_store: Any, autoclose: Any) -> None:
    cache = autoclose(cw.Cache(store=sqlite_store))
    s = cache.namespace("s", expire=60)
    assert cache.namespace("s") is s
    assert s.expire == 60.0
    with pytest.raises(cw.ConfigError, match="expire=60"):
        cache.namespace("s", expire=30)


# -- the other fronts: typed, AsyncCache ----------------------------------------------------
def test_expire_on_a_typed_namespace_and_on_asyncio(sqlite_store: Any) -> None:
    import asyncio
    from dataclasses import dataclass

    @dataclass
    class Session:
        user: str

    async def main() -> None:
        async with cw.AsyncCache(store=sqlite_store, policy=cw.WriteBack(max_delay=0.02)) as a:
            s = a.namespace("sessions", type=Session, expire=EXPIRE)
            await s.set("t1", Session("ada"))
            assert await s.get("t1") == Session("ada")
            await a.flush()
            await asyncio.sleep(EXPIRE + 0.2)
            assert await s.get("t1") is None
            assert _stored(sqlite_store, "t1", "sessions") is None

    asyncio.run(main())


def test_expire_uses_the_wall_clock_of_the_writer(sqlite_store: Any, autoclose: Any) -> None:
    # The stamp is the writer's time.time() + expire, kept in the row: what a reader
    # compares with its own clock (documented: keep clocks in sync, as for any TTL).
    cache = autoclose(cw.Cache(store=sqlite_store, policy=cw.WriteThrough()))
    before = time.time()
    cache.namespace("s", expire=100).set("a", 1)
    after = time.time()
    row = sqlite_store.fetch("s", ["a"])["a"]
    assert row.expires_at is not None
    assert before + 100 <= row.expires_at <= after + 100

