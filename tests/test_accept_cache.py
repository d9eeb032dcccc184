"""Acceptance tests of the thread front (``cw.Cache``, ``cw.open``), written as a new user
would, from DESIGN.md ("API v2", "Guarantees", URLs), the README and docs/ only."""

from __future__ import annotations

import datetime
import inspect
import math
import sqlite3
import threading
import time
from typing import Any

import pytest

import cacheway as cw
from accept_support import (
    BAD_CONFIG,
    Reader,
    User,
    drop_mariadb_tables,
    pg_execute,
    pg_rows,
    pg_url,
)
from conftest import DictStore, wait_until
from services import POSTGRES_DSN, REDIS_URL, unique


def sqlite_cache(path: Any, policy: Any = None, **kw: Any) -> cw.Cache:
    return cw.Cache(store=cw.SQLiteStore(str(path)), policy=policy or cw.WriteThrough(), **kw)


# -- the embedded default, cw.open URLs, namespaces ---------------------------------------

def test_open_default_urls_write_back_reaches_the_store_and_survives_reopen(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path}/app.db"
    with cw.open(store=url, backend="memory://?max_entries=100", policy="write-back",
                 max_delay=30) as cache:
        cache.set("user:1", {"name": "Ada"})
        cache.set_many({"a": 1, "b": [1, 2]})
        cache["c"] = "x"
        assert "c" in cache
        assert cache["c"] == "x"
        del cache["c"]
        assert "c" not in cache
        assert cache.get_many(["a", "b", "nope"]) == {"a": 1, "b": [1, 2]}
        assert cache.pending() >= 3
        cache.flush()
        assert cache.pending() == 0
    with cw.open(store=url) as again:
        assert again.get("user:1") == {"name": "Ada"}
        assert again.get("c", "gone") == "gone"


def test_namespaces_isolate_keys_inherit_policy_and_flush_with_the_parent(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db", cw.WriteBack(max_delay=60)) as cache:
        views = cache.namespace("views")
        users = cache.namespace("users", policy=cw.WriteThrough())
        cache.set("k", "root")
        views.set("k", "views")
        users.set("k", "users")
        assert (cache.get("k"), views.get("k"), users.get("k")) == ("root", "views", "users")
        assert views.pending() == 1           # inherited write-back: not yet in the store
        assert users.pending() == 0
    with sqlite_cache(tmp_path / "a.db") as again:   # close() flushed every namespace
        assert again.namespace("views").get("k") == "views"
        assert again.get("k") == "root"


def test_stats_count_coalesced_writes_and_one_store_write(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db", cw.WriteBack(max_delay=60)) as cache:
        for i in range(5):
            cache.set("hot", i)
        s = cache.stats()
        assert (s.writes, s.coalesced, s.dirty) == (5, 4, 1)
        cache.flush()
        s = cache.stats()
        assert (s.store_writes, s.dirty) == (1, 0)
        assert s.flushes >= 1
    with pytest.raises(cw.ClosedError):
        cache.get("hot")


# -- @cache.cached --------------------------------------------------------------------------

def test_cached_calls_once_per_bound_arguments_and_keeps_the_signature(tmp_path: Any) -> None:
    calls: list[tuple[str, str]] = []
    with sqlite_cache(tmp_path / "a.db") as cache:
        def price(sku: str, region: str = "eu") -> float:
            calls.append((sku, region))
            return 9.5 + len(calls)

        wrapped = cache.cached(ttl=60)(price)
        # Cached (the wrapper type) declares no __name__ for mypy: reported, not fixed here.
        assert wrapped.__name__ == "price"  # type: ignore[attr-defined]
        assert wrapped.__wrapped__ is price
        assert inspect.signature(wrapped) == inspect.signature(price)
        first = wrapped("a")
        assert wrapped("a") == first
        assert wrapped("a", region="eu") == first     # defaults applied
        assert wrapped(sku="a") == first
        assert wrapped("a", "us") != first
        assert calls == [("a", "eu"), ("a", "us")]
        wrapped.invalidate("a", region="eu")
        assert wrapped("a") != first
        assert calls[-1] == ("a", "eu")
        assert len(calls) == 3


def test_cached_results_outlive_a_restart(tmp_path: Any) -> None:
    calls: list[int] = []

    def make(cache: cw.Cache) -> Any:
        @cache.cached(ttl=600)
        def square(x: int) -> int:
            calls.append(x)
            return x * x
        return square

    with sqlite_cache(tmp_path / "a.db", cw.WriteBack()) as cache:
        assert make(cache)(7) == 49
    with sqlite_cache(tmp_path / "a.db") as cache:
        assert make(cache)(7) == 49
    assert calls == [7]


def test_cached_with_key_function_and_invalidate(tmp_path: Any) -> None:
    calls: list[str] = []
    with sqlite_cache(tmp_path / "a.db") as cache:
        @cache.cached(ttl=60, key=lambda sku, region="eu": f"price:{sku}")
        def price(sku: str, region: str = "eu") -> str:
            calls.append(region)
            return f"{sku}-{region}"

        assert price("a", "eu") == "a-eu"
        assert price("a", "us") == "a-eu"              # same key= -> same result
        price.invalidate("a", "us")
        assert price("a", "us") == "a-us"
        assert calls == ["eu", "us"]


def test_cached_ttl_ends_the_result(tmp_path: Any) -> None:
    calls: list[int] = []
    with sqlite_cache(tmp_path / "a.db") as cache:
        @cache.cached(ttl=1)
        def f(x: int) -> int:
            calls.append(x)
            return len(calls)

        assert f(1) == 1
        assert f(1) == 1
        time.sleep(1.3)
        assert f(1) == 2


# -- get_or_set, incr -----------------------------------------------------------------------

def test_get_or_set_calls_the_loader_once_per_stampede_and_writes_it(tmp_path: Any) -> None:
    calls = []

    def load() -> dict[str, int]:
        calls.append(1)
        time.sleep(0.2)
        return {"v": 1}

    with sqlite_cache(tmp_path / "a.db") as cache:
        results: list[Any] = []
        threads = [threading.Thread(target=lambda: results.append(cache.get_or_set("k", load)))
                   for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert results == [{"v": 1}] * 8
        assert len(calls) == 1
        assert cache.get_or_set("k", load) == {"v": 1}
        assert len(calls) == 1
        assert cache.get_or_set("plain", 5) == 5
        assert cache.get("plain") == 5
    with sqlite_cache(tmp_path / "a.db") as again:     # written through to the store
        assert again.get("k") == {"v": 1}


def test_incr_under_write_back_sums_across_two_caches_in_the_store(tmp_path: Any) -> None:
    a = sqlite_cache(tmp_path / "a.db", cw.WriteBack(max_delay=60))
    b = sqlite_cache(tmp_path / "a.db", cw.WriteBack(max_delay=60))
    try:
        assert [a.incr("n") for _ in range(3)] == [1, 2, 3]
        assert b.incr("n", 10) == 10
        assert a.incr("n", -1) == 2
        a.flush()
        b.flush()
    finally:
        a.close()
        b.close()
    with sqlite_cache(tmp_path / "a.db") as c:
        assert c.get("n") == 12
        assert c.incr("n") == 13                      # write-through returns the store's total
        c.set("s", "text")
        with pytest.raises((cw.CachewayError, TypeError)):
            c.incr("s")
        assert c.get("s") == "text"


def test_callback_store_gets_namespaced_keys_once_in_last_write_order() -> None:
    plain = DictStore()
    with cw.Cache(store=plain.store, policy=cw.WriteBack(max_delay=60)) as cache:
        ns = cache.namespace("v")
        ns.set("a", 1)
        ns.set("b", 2)
        ns.set("a", 3)
        ns.incr("n")
        ns.incr("n")
        cache.flush()
    items = [kv for call in plain.save_calls for kv in call]
    assert items == [("v:b", 2), ("v:a", 3), ("v:n", 2)]    # counters as absolute values
    adder = DictStore({"n": 5}, add_many=True)
    with cw.Cache(store=adder.store, policy=cw.WriteBack(max_delay=60)) as cache:
        cache.incr("n", 2)
        cache.incr("n", 3)
        cache.flush()
        with pytest.raises(cw.ConfigError):               # no expiry column
            cache.namespace("s", expire=60)
    assert [kv for call in adder.add_calls for kv in call] == [("n", 5)]


# -- expire= and typed namespaces -----------------------------------------------------------

@pytest.mark.parametrize("policy", [cw.WriteBack, cw.WriteThrough])
def test_expire_ends_the_data_in_cache_and_store(tmp_path: Any, policy: Any) -> None:
    with sqlite_cache(tmp_path / "a.db", policy()) as cache:
        sessions = cache.namespace("sessions", expire=1)
        sessions.set("s1", {"user": 1})
        keep = cache.namespace("keep")
        keep.set("s1", "forever")
        assert sessions.get("s1") == {"user": 1}
        time.sleep(1.3)
        assert sessions.get("s1", "ended") == "ended"
        assert sessions.incr("count") == 1
        cache.flush()
    with sqlite_cache(tmp_path / "a.db") as again:
        assert again.namespace("sessions", expire=1).get("s1") is None
        assert again.namespace("keep").get("s1") == "forever"


def test_typed_namespace_round_trips_through_the_store(tmp_path: Any) -> None:
    ada = User("Ada", datetime.date(1843, 7, 1), ("math",))
    with sqlite_cache(tmp_path / "a.db", cw.WriteBack()) as cache:
        users = cache.namespace("users", type=User)
        users.set("1", ada)
        assert users.get("1") == ada
        with pytest.raises(cw.SerializationError, match="User"):
            users.set("2", {"name": "Bob"})  # type: ignore[arg-type]
        assert users.get("2") is None
        with pytest.raises(cw.ConfigError):
            users.incr("1")
        with pytest.raises(cw.ConfigError):
            cache.namespace("users", type=dict)
    with sqlite_cache(tmp_path / "a.db") as again:
        got = again.namespace("users", type=User).get("1")
        assert got == ada
        assert isinstance(got.joined, datetime.date)


# -- bad input is refused at the call -------------------------------------------------------

@pytest.mark.parametrize("value", [(1, 2), math.nan, 2**70, {1: "a"}, datetime.date.today(),
                                   "\ud800", object()])
@pytest.mark.parametrize("policy", [cw.WriteThrough, cw.WriteBack, cw.WriteAround])
def test_values_json_cannot_keep_are_refused_at_set(tmp_path: Any, policy: Any, value: Any) -> None:
    with sqlite_cache(tmp_path / "a.db", policy()) as cache:
        cache.set("k", "before")
        with pytest.raises(cw.SerializationError):
            cache.set("k", value)
        assert cache.get("k") == "before"
        cache.flush()


def test_non_str_key_is_refused_naming_the_key(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db") as cache:
        with pytest.raises((TypeError, cw.CachewayError), match=r"(?i)key"):
            cache.set(1, "x")  # type: ignore[arg-type]
        with pytest.raises((TypeError, cw.CachewayError), match=r"(?i)key"):
            cache.get(None)  # type: ignore[call-overload]


def test_a_ttl_that_is_not_a_number_is_refused_and_stores_nothing(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db", cw.WriteBack()) as cache:
        with pytest.raises((TypeError, ValueError, cw.CachewayError), match=r"(?i)ttl"):
            cache.set("k", 1, ttl="soon")  # type: ignore[arg-type]
        assert cache.get("k") is None


@pytest.mark.parametrize(("make", "word"), BAD_CONFIG)
def test_bad_configuration_raises_config_error_naming_it(make: Any, word: str,
                                                         tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(cw.ConfigError) as info:
        make()
    assert word in str(info.value)


def test_url_errors_hide_the_password(tmp_path: Any) -> None:
    with pytest.raises(cw.ConfigError) as info:
        cw.open(store="nosuch://app:hunter2@db/app")
    assert "hunter2" not in str(info.value)
    assert "nosuch" in str(info.value)


# -- row mode -------------------------------------------------------------------------------

def test_sqlite_row_mode_maps_dicts_to_columns(tmp_path: Any) -> None:
    path = str(tmp_path / "rows.db")
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT, email TEXT, "
                   "version INTEGER)")
        db.execute("INSERT INTO users VALUES ('7', 'Old', 'o@x', 1)")
    store = cw.SQLiteStore(path, table="users", key_column="id", columns=["name", "email"],
                           version_column="version")
    with cw.Cache(store=store, policy=cw.WriteBack()) as cache:
        assert cache.get("7") == {"name": "Old", "email": "o@x"}
        cache.set("1", {"name": "Ada", "email": "a@x"})
        cache.set("7", {"name": "New"})                       # email becomes NULL
        with pytest.raises(cw.CachewayError):
            cache.set("2", {"name": "Bob", "phone": "1"})
        with pytest.raises(cw.CachewayError):
            cache.incr("n")
        cache.flush()
        seen = cache.get("7")
    with sqlite3.connect(path) as db:
        rows = {r[0]: r[1:] for r in db.execute("SELECT id, name, email FROM users")}
    assert rows == {"1": ("Ada", "a@x"), "7": ("New", None)}
    fresh = cw.SQLiteStore(path, table="users", key_column="id", columns=["name", "email"],
                           version_column="version")
    with cw.Cache(store=fresh) as again:
        assert again.get("7") == seen                          # cached copy == the row


def test_postgres_row_mode_round_trip(pg_table: str) -> None:
    pg_execute(POSTGRES_DSN, f'CREATE TABLE "{pg_table}" (id text PRIMARY KEY, name text, '
                             'n integer, version bigint)')

    def store() -> cw.PostgresStore:
        return cw.PostgresStore(POSTGRES_DSN, table=pg_table, key_column="id",
                                columns=["name", "n"], version_column="version")
    with cw.Cache(store=store(), policy=cw.WriteBack()) as cache:
        cache.set("a", {"name": "Ada", "n": 3})
    with cw.Cache(store=store()) as again:
        assert again.get("a") == {"name": "Ada", "n": 3}


# -- PostgreSQL + Redis, two levels, other processes ----------------------------------------

def test_postgres_redis_write_back_and_nul_refused_at_set(pg_table: str, prefix: str) -> None:
    with cw.open(store=pg_url(pg_table), backend=f"{REDIS_URL}?prefix={prefix}",
                 policy="write-back") as cache:
        cache.set("k", {"a": [1, 2]})
        cache.incr("n", 5)
        with pytest.raises(cw.InvalidWriteError):
            cache.set("bad", "a\x00b")
        cache.flush()
    rows = pg_rows(POSTGRES_DSN, pg_table)
    assert rows == {"k": {"a": [1, 2]}, "n": 5}


@pytest.mark.parametrize("scheme", ["redis", "redis+l1"])
def test_invalidate_reaches_another_process(pg_table: str, prefix: str, scheme: str) -> None:
    backend = f"{scheme}://127.0.0.1:6379/0?prefix={prefix}"
    writer = cw.open(store=pg_url(pg_table), backend=backend)
    reader = Reader(pg_url(pg_table), backend)
    try:
        writer.set("k", 1)
        assert reader.get("k") == 1
        behind = cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table))  # no shared copy
        behind.set("k", 2)
        behind.close()
        writer.invalidate("k")
        assert wait_until(lambda: reader.get("k") == 2, timeout=5)
        writer.set("k", 3)                              # writes reach the other L1 too
        assert wait_until(lambda: reader.get("k") == 3, timeout=5)
    finally:
        assert reader.close() == 0
        writer.close()


def test_mariadb_via_sqlalchemy_url(mariadb_url: str) -> None:
    table = unique("cwa")
    url = f"{mariadb_url}?table={table}"
    try:
        with cw.open(store=url, policy="write-back") as cache:
            cache.set("k", {"x": "é"})
            cache.incr("n", 2)
            cache.incr("n", 2)
        with cw.open(store=url) as again:
            assert again.get("k") == {"x": "é"}
            assert again.get("n") == 4
    finally:
        drop_mariadb_tables(mariadb_url, table, f"{table}_meta", f"{table}_applied")


def test_distributed_write_back_flush_and_stats(pg_table: str, qname: str,
                                                redis_backend: cw.RedisBackend) -> None:
    policy = cw.WriteBack(queue=REDIS_URL, queue_name=qname, partitions=4)
    with cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table), backend=redis_backend,
                  policy=policy) as cache:
        cache.set("user:1", {"name": "Ada"})
        for _ in range(3):
            cache.incr("views")
        assert cache.get("user:1") == {"name": "Ada"}
        cache.flush(timeout=30)
        s = cache.stats()
        assert s.dirty == 0
        assert {p.partition for p in s.queue} == {0, 1, 2, 3}
        assert wait_until(lambda: sum(p.depth for p in cache.stats().queue) == 0)
    rows = pg_rows(POSTGRES_DSN, pg_table)
    assert rows == {"user:1": {"name": "Ada"}, "views": 3}


# -- product bugs found (strict xfails: they pass once the bug is fixed) --------------------

def test_many_calls_refuse_a_single_str_instead_of_splitting_it(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db") as cache:
        cache.set("u", "kept")
        cache.set("user", "kept")
        with pytest.raises((TypeError, cw.CachewayError)):
            cache.delete_many("user")
        assert cache.get("u") == "kept"


@pytest.mark.xfail(strict=True, reason="PG row mode under write-back accepts a value its column "
                   "type refuses ('abc' for integer): set() returns, the flush drops the write")
def test_postgres_row_mode_refuses_a_value_the_column_cannot_take_at_set(pg_table: str) -> None:
    pg_execute(POSTGRES_DSN, f'CREATE TABLE "{pg_table}" (id text PRIMARY KEY, n integer, '
                             'version bigint)')
    store = cw.PostgresStore(POSTGRES_DSN, table=pg_table, key_column="id", columns=["n"],
                             version_column="version")
    cache = cw.Cache(store=store, policy=cw.WriteBack(retry=cw.Retry(attempts=1, base_delay=0.01)))
    try:
        with pytest.raises(cw.CachewayError):
            cache.set("a", {"n": "abc"})
    finally:
        cache.close(timeout=5)


def test_cached_result_the_serializer_refuses_names_the_function(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db") as cache:
        @cache.cached(ttl=60)
        def pair(x: int) -> Any:
            return (x, x)

        with pytest.raises(cw.SerializationError) as info:
            pair(1)
        assert "pair" in str(info.value)
        assert "dict" not in str(info.value)


def test_set_many_of_a_non_mapping_is_refused_clearly(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db") as cache, pytest.raises((TypeError, cw.CachewayError)):
        cache.set_many([("x", 1)])  # type: ignore[arg-type]


def test_sqlite_row_mode_refuses_a_row_its_table_cannot_take_at_set(tmp_path: Any) -> None:
    path = str(tmp_path / "rows.db")
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE u (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL)")
    store = cw.SQLiteStore(path, table="u", key_column="id", columns=["name", "email"])
    with cw.Cache(store=store, policy=cw.WriteBack()) as cache:
        with pytest.raises(cw.CachewayError):
            cache.set("1", {"name": "x"})          # email would be NULL
        cache.flush()
        assert cache.stats().dead_letters == 0


def test_unreachable_queue_redis_raises_a_cacheway_error(tmp_path: Any) -> None:
    def open_and_write() -> None:
        policy = cw.WriteBack(queue="redis://127.0.0.1:1/0", queue_name="nowhere")
        with sqlite_cache(tmp_path / "a.db", policy) as cache:
            cache.set("a", 1)

    with pytest.raises(cw.CachewayError, match=r"127\.0\.0\.1:1"):
        open_and_write()
