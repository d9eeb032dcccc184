"""PostgresStore against a real PostgreSQL: the store contract, versions, atomic adds
across processes, journal marks, concurrent creation, row mode, caches over it, and the
statement count of a batch (one statement per kind of op, counted at the cursor)."""

from __future__ import annotations

import datetime
import multiprocessing
import secrets
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import psycopg_pool
import pytest

import cacheway as cw
from cacheway.stores.base import ADD, DELETE, SET, Applied, JournalMark, Op
from cacheway.stores.postgres import PostgresStore
from services import unique

pytestmark = pytest.mark.services


def drop(dsn: str, table: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f'DROP TABLE IF EXISTS "{table}", "{table}_meta", "{table}_applied", '
            f'"{table}_cw_meta", "{table}_cw_applied" CASCADE'
        )
        conn.execute(f'DROP SEQUENCE IF EXISTS "{table}_version_seq"')


@pytest.fixture
def table(postgres_dsn: str) -> Iterator[str]:
    name = unique("cwpg")
    yield name
    drop(postgres_dsn, name)


@pytest.fixture
def sql(postgres_dsn: str) -> Iterator[Callable[..., list[tuple[Any, ...]]]]:
    """``sql(query, params)`` -> rows, on an autocommit connection of the test's own."""
    conn = psycopg.connect(postgres_dsn, autocommit=True)

    def run(query: str, params: Any = None) -> list[tuple[Any, ...]]:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []

    yield run
    conn.close()


@pytest.fixture
def store(postgres_dsn: str, table: str) -> Iterator[PostgresStore]:
    s = PostgresStore(postgres_dsn, table=table)
    yield s
    s.close()


def dumps(value: Any) -> bytes:
    return cw.JSONSerializer().dumps(value)


def version_of(sql: Callable[..., Any], table: str, key: str, ns: str = "") -> int | None:
    rows = sql(f'SELECT version FROM "{table}" WHERE namespace = %s AND key = %s', (ns, key))
    return rows[0][0] if rows else None


# -- the table ------------------------------------------------------------------------------
def test_creates_its_table_sequence_and_mark_tables(store: PostgresStore, table: str,
                                                    sql: Callable[..., Any]) -> None:
    cols = dict(sql("SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = %s", (table,)))
    assert cols == {"namespace": "text", "key": "text", "value": "jsonb", "version": "bigint",
                    "updated_at": "timestamp with time zone",
                    "expires_at": "double precision"}  # expire= on a namespace
    pk = sql("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
             "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary "
             "ORDER BY array_position(i.indkey, a.attnum)", (table,))
    assert [r[0] for r in pk] == ["namespace", "key"]
    assert sql("SELECT to_regclass(%s), to_regclass(%s), to_regclass(%s)",
               (f"{table}_version_seq", f"{table}_meta", f"{table}_applied"))[0] == (
        f"{table}_version_seq", f"{table}_meta", f"{table}_applied")


def test_non_json_serializer_gets_a_bytea_column(postgres_dsn: str, table: str,
                                                 sql: Callable[..., Any]) -> None:
    with PostgresStore(postgres_dsn, table=table, serializer=cw.MsgpackSerializer()) as s:
        s.save_many({"a": {"x": b"raw"}, "n": 5})
        assert s.load_many(["a", "n"]) == {"a": {"x": b"raw"}, "n": 5}
        assert s.apply([Op("", "n", ADD, delta=3), Op("", "new", ADD, delta=2)])[0].value == 8
        assert s.load_many(["n", "new"]) == {"n": 8, "new": 2}
    assert sql("SELECT data_type FROM information_schema.columns WHERE table_name = %s "
               "AND column_name = 'value'", (table,)) == [("bytea",)]
    with PostgresStore(postgres_dsn, table=table) as s:  # JSON bytes fit a bytea table
        s.save_many({"j": [1]})
        assert s.load("j") == [1]


def test_a_jsonb_table_refuses_a_non_json_serializer(store: PostgresStore,
                                                      postgres_dsn: str, table: str) -> None:
    with pytest.raises(cw.ConfigError, match="jsonb"):
        PostgresStore(postgres_dsn, table=table, serializer=cw.MsgpackSerializer())


@pytest.mark.parametrize("name", ["x;y", "1abc", "a b", "", "t" * 64, 'q"uote'])
def test_bad_table_names_are_config_errors(postgres_dsn: str, name: str) -> None:
    with pytest.raises(cw.ConfigError, match="table name"):
        PostgresStore(postgres_dsn, table=name)


def test_table_names_too_long_for_the_sequence_are_refused(postgres_dsn: str) -> None:
    with pytest.raises(cw.ConfigError, match="63"):
        PostgresStore(postgres_dsn, table="t" * 55)


@pytest.mark.parametrize("dsn", [
    "postgresql://cwuser:hunter2secret@127.0.0.1:1/test",             # nothing listens
    "postgresql://nobody_cw:hunter2secret@127.0.0.1:5432/test",       # no such role
    "host=127.0.0.1 port=5432 user=nobody_cw password=hunter2secret dbname=test",
    "postgresql//cwuser:hunter2secret@127.0.0.1/test",                # malformed
    "host=127.0.0.1 password=hunter2secret dbname",                   # malformed
])
def test_bad_dsn_is_a_clear_error_without_the_password(postgres_dsn: str, dsn: str) -> None:
    with pytest.raises((cw.StoreError, cw.ConfigError)) as info:
        PostgresStore(dsn, table=unique("cwpg"), timeout=5)
    assert "hunter2secret" not in str(info.value)
    assert "hunter2secret" not in repr(info.value.__cause__)
    assert info.value.__cause__ is None or "hunter2secret" not in str(info.value.__cause__)
    assert "PostgreSQL" in str(info.value)


def test_capabilities_are_declared_and_read_once(store: PostgresStore) -> None:
    from cacheway.stores.base import store_capabilities

    caps = store_capabilities(store)
    assert (caps.versioned, caps.atomic_add, caps.validate) == (True, True, None)
    assert (caps.max_key_bytes, caps.max_key, caps.keys_take_nul) == (2000, 2000, False)
    assert (caps.takes_late, caps.fork_aware, caps.async_callbacks) == (False, True, False)
    assert caps.sample_keys is not None
    store.save_many({"a": 1, "b": 2}, namespace="ns")
    store.delete_many(["b"], namespace="ns")
    assert caps.sample_keys("ns", 10) == ["a"]
    assert caps.sample_keys("other", 10) == []


def test_bad_options_are_config_errors(postgres_dsn: str) -> None:
    for kwargs in ({"min_size": -1}, {"max_size": 0}, {"timeout": 0}, {"key_column": "id"}):
        with pytest.raises(cw.ConfigError):
            PostgresStore(postgres_dsn, **kwargs)
    with pytest.raises(cw.ConfigError, match="DSN string or a psycopg_pool"):
        PostgresStore(42)  # type: ignore[arg-type]


# -- the store contract ---------------------------------------------------------------------
def test_round_trip_unicode_nested_json_none_and_missing(store: PostgresStore) -> None:
    nested = {"list": [1, 2.5, None, True, {"deep": ["x"]}], "é": "ünïcødé ✓ 🚀", "n": -7}
    store.save_many({"a": nested, "b": "日本語", "none": None, "zero": 0, "big": 2**62})
    assert store.load("a") == nested
    assert store.load("b") == "日本語"
    assert store.load("none", default="dflt") is None, "a stored None is not a missing key"
    assert store.load("missing", default="dflt") == "dflt"
    assert store.load_many(["a", "none", "missing", "big", "zero"]) == {
        "a": nested, "none": None, "big": 2**62, "zero": 0}
    assert store.load_many([]) == {}
    store.delete_many(["a", "missing"])
    assert store.load_many(["a", "b"]) == {"b": "日本語"}


def test_namespaces_are_a_column(store: PostgresStore, table: str,
                                 sql: Callable[..., Any]) -> None:
    store.save_many({"k": 1})
    store.save_many({"k": 2}, namespace="views")
    assert store.load("k") == 1
    assert store.load("k", namespace="views") == 2
    assert sorted(sql(f'SELECT namespace, key FROM "{table}"')) == [("", "k"), ("views", "k")]


def test_versions_strictly_increase_and_survive_deletes(
        postgres_dsn: str, store: PostgresStore, table: str, sql: Callable[..., Any]) -> None:
    store.save_many({"a": 1})
    v1 = version_of(sql, table, "a")
    store.save_many({"a": 2})
    v2 = version_of(sql, table, "a")
    store.save_many({"b": 1})
    vb = version_of(sql, table, "b")
    assert v1 is not None
    assert v2 is not None
    assert vb is not None
    assert v1 < v2 < vb, "versions come from one per-table source"
    results = store.apply([Op("", "a", DELETE), Op("", "b", DELETE), Op("", "gone", DELETE)])
    assert sql(f'SELECT count(*) FROM "{table}"') == [(0,)]
    assert all(r.version is not None and r.version > vb for r in results), (
        "deletes (also of missing keys) are stamped")
    store.save_many({"a": 3})
    v3 = version_of(sql, table, "a")
    assert v3 is not None
    assert v3 > max(r.version or 0 for r in results)
    store.close()
    with PostgresStore(postgres_dsn, table=table) as again:
        again.delete_many(["a"])
        again.save_many({"a": 4})
    v4 = version_of(sql, table, "a")
    assert v4 is not None
    assert v4 > v3, "versions restarted after reopening"


def test_apply_returns_the_stored_versions(store: PostgresStore, table: str,
                                           sql: Callable[..., Any]) -> None:
    results = store.apply([Op("", f"k{i}", SET, b"%d" % i) for i in range(50)])
    stored = dict(sql(f'SELECT key, version FROM "{table}"'))
    assert [r.version for r in results] == [stored[f"k{i}"] for i in range(50)]
    assert len(set(stored.values())) == 50


def test_a_batch_naming_a_key_twice_keeps_op_order(store: PostgresStore) -> None:
    res = store.apply([
        Op("", "a", SET, b"10"), Op("", "a", ADD, delta=5), Op("", "b", SET, b'"x"'),
        Op("", "a", ADD, delta=1), Op("", "b", DELETE), Op("", "c", SET, b"1"),
    ])
    assert [r.value for r in res if r.value is not None] == [15, 16]
    versions = [r.version for r in res]
    assert all(v is not None for v in versions)
    assert res[0].version < res[1].version < res[3].version  # type: ignore[operator]
    assert store.load_many(["a", "b", "c"]) == {"a": 16, "c": 1}


def test_add_creates_sums_and_refuses_non_integers(store: PostgresStore) -> None:
    res = store.apply([Op("", "n", ADD, delta=5)])
    assert res[0].value == 5
    assert res[0].version == store.fetch("", ["n"])["n"].version
    store.apply([Op("", "n", ADD, delta=-2)])
    assert store.load("n") == 3
    store.save_many({"s": "text", "f": 1.5, "o": {"a": 1}, "nul": None})
    for key in ("s", "f", "o", "nul"):
        with pytest.raises(cw.StoreError, match="not an integer"):
            store.apply([Op("", key, ADD, delta=1)])
    assert store.load_many(["s", "f", "o", "nul", "n"]) == {
        "s": "text", "f": 1.5, "o": {"a": 1}, "nul": None, "n": 3}, "failed adds changed data"


def test_nul_characters_are_refused_by_jsonb(store: PostgresStore) -> None:
    # issue 10 item 3: a permanent refusal is an InvalidWriteError (never retried)
    with pytest.raises(cw.InvalidWriteError):
        store.save_many({"nul": "a\u0000b"})
    with pytest.raises(cw.InvalidWriteError, match="NUL"):
        store.save_many({"a\x00b": 1})
    assert store.load("a\x00b") is None
    store.save_many({"ok": "still works"})
    assert store.load("ok") == "still works"


def test_a_20kb_key_is_an_invalid_write(store: PostgresStore) -> None:
    # issue 10 item 3: write-back retried it forever ("index row size exceeds maximum")
    assert store.max_key_bytes == 2000
    key = secrets.token_hex(10_000)  # random: PostgreSQL cannot compress it into the index
    with pytest.raises(cw.InvalidWriteError, match="2000"):
        store.apply([Op("", key, SET, dumps(1), 0, 1)])
    # Without the declared limit the server's own refusal is classified the same way.
    store.max_key_bytes = None
    with pytest.raises(cw.InvalidWriteError, match="index row"):
        store.apply([Op("", key, SET, dumps(1), 0, 1)])
    store.save_many({"after": 1})
    assert store.load("after") == 1


def test_errors_that_a_retry_can_fix_stay_plain_store_errors(store: PostgresStore,
                                                              table: str,
                                                              sql: Callable[..., Any]) -> None:
    # issue 10 item 3: only what the write holds is an InvalidWriteError
    sql(f'DROP TABLE "{table}"')
    with pytest.raises(cw.StoreError) as info:
        store.save_many({"a": 1})
    assert type(info.value) is cw.StoreError, info.value


def _add_worker(dsn: str, table: str, serializer: str, n: int, barrier: Any,
                errors: Any) -> None:
    try:
        ser = cw.MsgpackSerializer() if serializer == "msgpack" else None
        with PostgresStore(dsn, table=table, serializer=ser) as s:
            barrier.wait(30)
            for _ in range(n):
                s.apply([Op("", "counter", ADD, delta=1), Op("", "other", ADD, delta=2)])
    except BaseException:
        errors.put(traceback.format_exc())


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_adds_are_atomic_across_processes(postgres_dsn: str, table: str,
                                          serializer: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    errors, barrier = ctx.Queue(), ctx.Barrier(4)
    ser = cw.MsgpackSerializer() if serializer == "msgpack" else None
    PostgresStore(postgres_dsn, table=table, serializer=ser).close()
    procs = [ctx.Process(target=_add_worker,
                         args=(postgres_dsn, table, serializer, 250, barrier, errors))
             for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert not problems, "\n".join(problems)
    assert [p.exitcode for p in procs] == [0] * 4
    with PostgresStore(postgres_dsn, table=table, serializer=ser) as s:
        assert s.load_many(["counter", "other"]) == {"counter": 1000, "other": 2000}


def _create_worker(dsn: str, table: str, n: int, barrier: Any, errors: Any) -> None:
    try:
        barrier.wait(30)
        with PostgresStore(dsn, table=table) as s:
            s.save_many({f"p{n}": n})
    except BaseException:
        errors.put(traceback.format_exc())


def test_many_processes_create_the_same_table_at_once(postgres_dsn: str, table: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    errors, n = ctx.Queue(), 6
    barrier = ctx.Barrier(n)
    procs = [ctx.Process(target=_create_worker, args=(postgres_dsn, table, i, barrier, errors))
             for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert not problems, "\n".join(problems)
    assert [p.exitcode for p in procs] == [0] * n
    with PostgresStore(postgres_dsn, table=table) as s:
        assert s.load_many([f"p{i}" for i in range(n)]) == {f"p{i}": i for i in range(n)}


# -- journal marks ----------------------------------------------------------------------------
def test_journal_marks_are_recorded_with_the_batch(store: PostgresStore) -> None:
    assert store.applied_state("j1") == (0, {})
    store.apply([Op("", "a", SET, b"1"), Op("v", "b", ADD, delta=2), Op("", "c", DELETE)],
                journal=JournalMark("j1", 3, [4, 7, 5]))
    assert store.applied_state("j1") == (3, {("", "a"): 4, ("v", "b"): 7, ("", "c"): 5})
    store.apply([Op("", "a", SET, b"2")], journal=JournalMark("j1", 1, [2]))
    low, applied = store.applied_state("j1")
    assert low == 3, "the low water never goes back"
    assert applied[("", "a")] == 4, "a key's applied seq never goes back"
    store.apply([Op("", "a", SET, b"3")], journal=JournalMark("j1", 6, [9]))
    assert store.applied_state("j1") == (6, {("", "a"): 9, ("v", "b"): 7})
    assert store.applied_state("other") == (0, {})


def test_a_failed_batch_records_no_mark(store: PostgresStore) -> None:
    store.save_many({"s": "text"})
    with pytest.raises(cw.StoreError):
        store.apply([Op("", "ok", SET, b"1"), Op("", "s", ADD, delta=1)],
                    journal=JournalMark("j2", 10, [11, 12]))
    assert store.applied_state("j2") == (0, {})
    assert store.load("ok") is None, "the batch is one transaction"


def test_write_back_journal_marks_and_reopen(
        postgres_dsn: str, table: str, tmp_path: Any, autoclose: Any) -> None:
    wal = str(tmp_path / "cache.wal")
    store = PostgresStore(postgres_dsn, table=table)
    cache = autoclose(cw.Cache(store=store, policy=cw.WriteBack(
        max_delay=60, journal=wal, fsync="always")))
    cache.set("a", 1)
    for _ in range(5):
        cache.incr("hits")
    cache.flush()
    cache.close()
    low, _ = store.applied_state(cache._engines[""].journal.id)
    assert low >= 6
    store.close()
    with PostgresStore(postgres_dsn, table=table) as again:
        cache2 = autoclose(cw.Cache(store=again, policy=cw.WriteBack(journal=wal)))
        assert cache2.get("hits") == 5, "a replay added the counter deltas twice"
        cache2.close()


# -- statement counting --------------------------------------------------------------------
@pytest.fixture
def counting_pool(postgres_dsn: str) -> Iterator[tuple[psycopg_pool.ConnectionPool, list[str]]]:
    """A caller's pool whose cursors log every statement they execute (BEGIN/COMMIT
    are not statements of ours and do not go through a cursor)."""
    log: list[str] = []

    class Counting(psycopg.Cursor):  # type: ignore[type-arg]
        def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:
            log.append(str(query if isinstance(query, str) else query.as_string(None))[:60])
            return super().execute(query, params, **kw)

    def configure(conn: psycopg.Connection[Any]) -> None:
        conn.cursor_factory = Counting

    pool = psycopg_pool.ConnectionPool(postgres_dsn, min_size=1, max_size=2, open=True,
                                       kwargs={"autocommit": True}, configure=configure)
    yield pool, log
    pool.close()


def test_one_statement_per_kind_of_op(counting_pool: Any, table: str) -> None:
    pool, log = counting_pool
    s = PostgresStore(pool, table=table)
    log.clear()
    s.save_many({f"k{i}": {"i": i} for i in range(1000)})
    assert len(log) == 1, log
    log.clear()
    ops = ([Op("", f"k{i}", SET, b"1") for i in range(100)]
           + [Op("", f"k{i}", DELETE) for i in range(100, 150)]
           + [Op("", f"c{i}", ADD, delta=i) for i in range(20)])
    res = s.apply(ops, journal=JournalMark("jc", 0, list(range(1, 171))))
    assert len(res) == 170
    assert len(log) == 4, log  # sets, deletes, adds, journal mark
    log.clear()
    assert len(s.load_many([f"k{i}" for i in range(200)])) == 150
    assert len(log) == 1, log
    s.close()
    assert not pool.closed, "a pool passed in belongs to the caller"
    with pool.connection() as conn:
        conn.execute("SELECT 1")


def test_write_back_flush_is_one_statement_per_batch(counting_pool: Any, table: str,
                                                     autoclose: Any) -> None:
    pool, log = counting_pool
    store = PostgresStore(pool, table=table)
    cache = autoclose(cw.Cache(store=store, policy=cw.WriteBack(max_delay=60,
                                                                batch_size=1000)))
    log.clear()
    cache.set_many({f"k{i}": i for i in range(5000)})
    cache.flush()
    assert len(log) == 5, log
    assert store.load_many(["k0", "k4999"]) == {"k0": 0, "k4999": 4999}
    cache.close()
    store.close()


def test_a_pool_without_autocommit_works_too(postgres_dsn: str, table: str) -> None:
    pool = psycopg_pool.ConnectionPool(postgres_dsn, min_size=1, max_size=2, open=True)
    with pool, PostgresStore(pool, table=table) as s:
        s.save_many({"a": 1})
        assert s.apply([Op("", "a", ADD, delta=1)])[0].value == 2
        assert s.load_many(["a"]) == {"a": 2}
        assert s.applied_state("none") == (0, {})


def test_own_pool_is_closed_by_close(store: PostgresStore) -> None:
    store.close()
    with pytest.raises(cw.ClosedError):
        store.load("a")
    store.close()  # idempotent


def test_a_killed_connection_does_not_poison_the_pool(postgres_dsn: str,
                                                      sql: Callable[..., Any]) -> None:
    # Only this test's own connections are killed (other tests and processes share the
    # server): they carry an application_name nobody else uses.
    app = unique("cwkill")
    sep = "&" if "?" in postgres_dsn else "?"
    table = unique("cw")
    kill = ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            f"AND application_name = '{app}' AND state = 'idle'")
    with PostgresStore(f"{postgres_dsn}{sep}application_name={app}", table=table) as store:
        store.save_many({"a": 1})
        assert sql(kill), "no idle pooled connection to kill"
        store.save_many({"b": 2})  # retried on a fresh connection: COMMIT was never sent
        assert store.load_many(["a", "b"]) == {"a": 1, "b": 2}
        sql(kill)
        assert store.load("a") == 1
    drop(postgres_dsn, table)


# -- row mode ----------------------------------------------------------------------------------
@pytest.fixture
def users(postgres_dsn: str, sql: Callable[..., Any]) -> Iterator[str]:
    name = unique("users")
    sql(f'CREATE TABLE "{name}" (id text PRIMARY KEY, name text, email text, version bigint)')
    yield name
    drop(postgres_dsn, name)
    sql(f'DROP SEQUENCE IF EXISTS "{name}_version_seq"')


def test_row_mode_maps_dicts_to_columns(postgres_dsn: str, users: str,
                                        sql: Callable[..., Any]) -> None:
    with PostgresStore(postgres_dsn, table=users, key_column="id", columns=["name", "email"],
                       version_column="version") as s:
        assert s.versioned
        res = s.apply([Op("", "u1", SET, None, 0, {"name": "Ann", "email": "ann@x"}),
                       Op("", "u2", SET, None, 0, {"name": "Bob"})])
        rows = {r[0]: r[1:] for r in sql(f'SELECT id, name, email, version FROM "{users}"')}
        assert rows == {"u1": ("Ann", "ann@x", res[0].version), "u2": ("Bob", None, res[1].version)}
        s.save_many({"u1": {"email": "ann@new"}})  # name keeps its value
        loaded = s.fetch("", ["u1", "u2", "nobody"])
        assert loaded["u1"].value == {"name": "Ann", "email": "ann@new"}
        assert loaded["u1"].payload is None
        assert loaded["u1"].version is not None
        assert loaded["u1"].version > res[1].version
        assert set(loaded) == {"u1", "u2"}
        d = s.apply([Op("", "u2", DELETE), Op("", "nobody", DELETE)])
        assert all(r.version is not None for r in d)
        assert s.load_many(["u1", "u2"]) == {"u1": {"name": "Ann", "email": "ann@new"}}
        with pytest.raises(cw.StoreError, match="phone"):
            s.save_many({"u3": {"name": "C", "phone": "123"}})
        with pytest.raises(cw.StoreError, match="not supported"):
            s.apply([Op("", "u1", ADD, delta=1)])
        with pytest.raises(cw.StoreError, match="dict"):
            s.save_many({"u3": "not a dict"})
        assert s.load("u3") is None, "a refused batch wrote nothing"
        assert s.sample_keys("any namespace", 10) == ["u1"]  # row mode: the table's keys
        s.apply([Op("", "u1", SET, None, 0, {"name": "A2"})], journal=JournalMark("rj", 2, [3]))
        assert s.applied_state("rj") == (2, {("", "u1"): 3})


def test_row_mode_with_mixed_case_table_and_column_names(postgres_dsn: str,
                                                         sql: Callable[..., Any]) -> None:
    # issue 10 item 5: the version sequence's name was passed to nextval() unquoted
    name = unique("Blog") + "Users"
    sql(f'CREATE TABLE "{name}" ("userId" text PRIMARY KEY, "userName" text, "Version" bigint)')
    try:
        kw: dict[str, Any] = {"key_column": "userId", "columns": ["userName"],
                              "version_column": "Version"}
        with PostgresStore(postgres_dsn, table=name, **kw) as s:
            (a,) = s.apply([Op("", "u1", SET, None, 0, {"userName": "Ann"})])
            s.apply([Op("", "u2", SET, None, 0, {"userName": "Bob"}), Op("", "u1", DELETE)],
                    journal=JournalMark("mj", 1, [2, 3]))
            assert s.applied_state("mj") == (1, {("", "u2"): 2, ("", "u1"): 3})
            assert s.load_many(["u1", "u2"]) == {"u2": {"userName": "Bob"}}
            assert sql(f'SELECT "Version" > %s FROM "{name}"', (a.version,)) == [(True,)]
    finally:
        drop(postgres_dsn, name)
        sql(f'DROP SEQUENCE IF EXISTS "{name}_Version_seq"')


def test_row_mode_refusals_of_the_server_are_invalid_writes(postgres_dsn: str,
                                                            sql: Callable[..., Any]) -> None:
    # issue 10 item 3: value too long, numeric overflow, text a column cannot parse
    name = unique("items")
    sql(f'CREATE TABLE "{name}" (id varchar(8) PRIMARY KEY, code varchar(3), n smallint, '
        "born date)")
    try:
        with PostgresStore(postgres_dsn, table=name, key_column="id",
                           columns=["code", "n", "born"]) as s:
            assert (s.max_key_chars, s.max_key_bytes) == (8, 2000)
            for bad in ({"code": "toolong"}, {"n": 100_000}, {"born": "someday"}):
                with pytest.raises(cw.InvalidWriteError):
                    s.save_many({"k": bad})
            with pytest.raises(cw.InvalidWriteError, match="9 characters"):
                s.save_many({"k" * 9: {"code": "ok"}})
            s.save_many({"k" * 8: {"code": "ok", "n": 7, "born": "2020-01-02"}})
            assert s.load_many(["k" * 8, "k"]) == {
                "k" * 8: {"code": "ok", "n": 7, "born": datetime.date(2020, 1, 2)}}
    finally:
        drop(postgres_dsn, name)


def test_row_mode_without_version_column_is_unversioned(postgres_dsn: str, users: str) -> None:
    with PostgresStore(postgres_dsn, table=users, key_column="id", columns=["name"]) as s:
        assert not s.versioned
        assert s.apply([Op("", "u1", SET, None, 0, {"name": "A"})]) == [Applied(None)]
        assert s.fetch("", ["u1"])["u1"].version is None
        s.delete_many(["u1"])
        assert s.load_many(["u1"]) == {}


def test_row_mode_checks_the_table(postgres_dsn: str, users: str,
                                   sql: Callable[..., Any]) -> None:
    with pytest.raises(cw.ConfigError, match="phone, fax"):
        PostgresStore(postgres_dsn, table=users, key_column="id",
                      columns=["name", "phone", "fax"])
    with pytest.raises(cw.ConfigError, match="does not exist"):
        PostgresStore(postgres_dsn, table=unique("nope"), key_column="id", columns=["name"])
    with pytest.raises(cw.ConfigError, match="unique"):
        PostgresStore(postgres_dsn, table=users, key_column="email", columns=["name"])
    with pytest.raises(cw.ConfigError, match="not an integer"):
        PostgresStore(postgres_dsn, table=users, key_column="id", columns=["name"],
                      version_column="email")
    with pytest.raises(cw.ConfigError, match="column name"):
        PostgresStore(postgres_dsn, table=users, key_column="id", columns=["name; drop"])
    assert sql("SELECT to_regclass(%s)", (f"{users}_cw_meta",)) == [(None,)], (
        "row mode created tables next to the user's without a journal")


def test_row_mode_with_an_integer_key(postgres_dsn: str, sql: Callable[..., Any]) -> None:
    name = unique("items")
    sql(f'CREATE TABLE "{name}" (id bigint PRIMARY KEY, title text, price numeric)')
    try:
        with PostgresStore(postgres_dsn, table=name, key_column="id",
                           columns=["title", "price"]) as s:
            s.save_many({"7": {"title": "seven", "price": 7}, "8": {"title": "eight"}})
            assert s.load_many(["7", "8", "9"]) == {
                "7": {"title": "seven", "price": 7}, "8": {"title": "eight", "price": None}}
            s.delete_many(["7"])
            assert s.load_many(["7"]) == {}
    finally:
        drop(postgres_dsn, name)


def test_row_mode_store_behind_a_cache_namespace(postgres_dsn: str, users: str, table: str,
                                                 autoclose: Any, make_policy: Any,
                                                 sql: Callable[..., Any]) -> None:
    kv = PostgresStore(postgres_dsn, table=table)
    rows = PostgresStore(postgres_dsn, table=users, key_column="id", columns=["name", "email"],
                         version_column="version")
    cache = autoclose(cw.Cache(store=kv, policy=make_policy()))
    people = cache.namespace("people", store=rows)
    people.set("u1", {"name": "Ann", "email": "a@x"})
    assert people.get("u1") == {"name": "Ann", "email": "a@x"}
    cache.flush()
    assert sql(f'SELECT id, name, email FROM "{users}"') == [("u1", "Ann", "a@x")]
    cache.close()
    kv.close()
    rows.close()


# -- caches over PostgresStore ---------------------------------------------------------------
def test_cache_over_postgres_every_policy(postgres_dsn: str, table: str, autoclose: Any,
                                          make_policy: Any, sql: Callable[..., Any]) -> None:
    store = PostgresStore(postgres_dsn, table=table)
    cache = autoclose(cw.Cache(store=store, policy=make_policy()))
    cache.set("a", {"x": [1, "é"]})
    assert cache.get("a") == {"x": [1, "é"]}, "read your writes"
    cache.set_many({f"k{i}": i for i in range(300)})
    assert cache.get_many(["k0", "k299", "missing"]) == {"k0": 0, "k299": 299}
    for _ in range(10):
        cache.incr("hits")
    assert cache.incr("hits", 5) == 15
    cache.delete("k0")
    assert cache.get("k0") is None
    cache.flush()
    assert store.load_many(["a", "hits", "k0", "k299"]) == {
        "a": {"x": [1, "é"]}, "hits": 15, "k299": 299}
    assert sql(f'SELECT count(*) FROM "{table}"') == [(301,)]
    store.save_many({"outside": 1})
    assert cache.get("outside") == 1, "read-through"
    cache.close()
    store.close()


def test_write_back_flush_lands_rows_and_sums_counters(postgres_dsn: str, table: str,
                                                       autoclose: Any,
                                                       sql: Callable[..., Any]) -> None:
    store = PostgresStore(postgres_dsn, table=table)
    cache = autoclose(cw.Cache(store=store, policy=cw.WriteBack(max_delay=60)))
    store.save_many({"n": 100})
    for _ in range(50):
        cache.incr("n")
    cache.set("x", 1)
    assert sql(f'SELECT count(*) FROM "{table}" WHERE key = %s', ("x",)) == [(0,)]
    store.apply([Op("", "n", ADD, delta=1000)])  # another process adds meanwhile
    cache.flush()
    assert store.load_many(["n", "x"]) == {"n": 1150, "x": 1}
    assert cache.get("n") == 1150, "the store's sum is the truth after the flush"
    cache.close()
    store.close()


def test_row_mode_takes_a_journal_replay_of_bytes_only(postgres_dsn: str, users: str,
                                                      sql: Callable[..., Any]) -> None:
    # A replayed record carries the serialized dict, not the dict itself.
    from cacheway.stores.base import NOTSET, SET, Op

    with PostgresStore(postgres_dsn, table=users, key_column="id",
                       columns=["name", "email"]) as s:
        s.apply([Op("", "u9", SET, b'{"name": "Rae", "email": "r@x"}', 0, NOTSET)])
        assert s.load("u9") == {"name": "Rae", "email": "r@x"}


@pytest.mark.parametrize("policy", [cw.WriteBack, cw.WriteThrough, cw.WriteAround])
def test_what_a_jsonb_table_cannot_keep_is_refused_at_set_under_every_policy(
        postgres_dsn: str, table: str, policy: Any) -> None:
    """Guarantee 7. Regression: under write-back, set() took a value with a NUL character
    (or msgpack bytes from a cache serializer the jsonb table cannot hold), the flush
    failed and the acknowledged write was dropped."""
    store = PostgresStore(postgres_dsn, table=table)
    with cw.Cache(store=store, policy=policy()) as cache, \
            cw.Cache(store=store, policy=policy(),
                     serializer=cw.MsgpackSerializer()) as packed:
        cache.set("k", "kept")
        with pytest.raises(cw.InvalidWriteError, match="NUL"):
            cache.set("k", "a\x00b")
        with pytest.raises(cw.InvalidWriteError, match="NUL"):
            cache.set_many({"j": 1, "k": {"x\x00": 1}})
        with pytest.raises(cw.InvalidWriteError, match="msgpack"):
            packed.set("m", 1)
        cache.set("t", "a\\u0000b")  # the text "\u0000" is no NUL: kept
        cache.flush()
        assert cache.get("k") == "kept"
        assert cache.get("j") is None
    assert store.load_many(["k", "j", "t", "m"]) == {"k": "kept", "t": "a\\u0000b"}


def test_row_mode_refuses_a_row_leaving_a_not_null_column_empty_at_set(
        postgres_dsn: str, users: str, sql: Callable[..., Any]) -> None:
    # Guarantee 7 under write-back: the flush would have dead-lettered it.
    sql(f'ALTER TABLE "{users}" ALTER COLUMN email SET NOT NULL')
    store = PostgresStore(postgres_dsn, table=users, key_column="id", columns=["name", "email"],
                          version_column="version")
    with cw.Cache(store=store, policy=cw.WriteBack()) as cache:
        with pytest.raises(cw.InvalidWriteError, match="email"):
            cache.set("u1", {"name": "Ann"})
        cache.set("u2", {"name": "Bob", "email": "b@x"})
        cache.flush()
        assert cache.stats().dead_letters == 0
    assert sql(f'SELECT id, email FROM "{users}"') == [("u2", "b@x")]
    store.close()
