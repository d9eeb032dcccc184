"""Row mode of SQLiteStore and SQLAlchemyStore (on SQLite and MariaDB): keys map to the
rows of an existing table, values are dicts of its columns (PostgresStore's row mode is
tested in test_postgres_store.py)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import cacheway as cw
from cacheway.stores.base import (
    ADD,
    DELETE,
    NOTSET,
    SET,
    Applied,
    JournalMark,
    Op,
    store_capabilities,
)
from services import unique


class Env:
    """One database to run row-mode tests on: makes stores, creates and reads tables."""

    def __init__(self, kind: str, tmp_path: Any, url: str | None = None) -> None:
        self.kind = kind
        self.path = str(tmp_path / "rows.db")
        self.text_key = "VARCHAR(64)" if kind == "mariadb" else "TEXT"
        self.tables: list[str] = []
        self.stores: list[Any] = []
        self.engine: Any = None
        if kind != "sqlite":
            import sqlalchemy as sa

            self.engine = sa.create_engine(url or "sqlite:///" + self.path)

    def store(self, table: str, **kw: Any) -> Any:
        if self.kind == "sqlite":
            store: Any = cw.SQLiteStore(self.path, table=table, **kw)
        else:
            store = cw.SQLAlchemyStore(self.engine, table=table, **kw)
        self.stores.append(store)
        return store

    def sql(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.engine is None:
            with sqlite3.connect(self.path) as conn:
                return [tuple(r) for r in conn.execute(query, params).fetchall()]
        with self.engine.begin() as conn:
            result = conn.exec_driver_sql(query.replace("?", "%s") if self.kind == "mariadb"
                                          else query, params)
            return [tuple(r) for r in result.fetchall()] if result.returns_rows else []

    def users(self, extra: str = "") -> str:
        name = unique("users")
        self.tables += [name, f"{name}_cw_meta", f"{name}_cw_applied"]
        self.sql(f"CREATE TABLE {name} (id {self.text_key} PRIMARY KEY, name TEXT, "
                 f"email TEXT, version BIGINT{extra})")
        return name

    def has_table(self, name: str) -> bool:
        if self.engine is None:
            return bool(self.sql("SELECT 1 FROM sqlite_master WHERE name = ?", (name,)))
        import sqlalchemy as sa

        return bool(sa.inspect(self.engine).has_table(name))

    def close(self) -> None:
        for store in self.stores:
            store.close()
        if self.kind == "mariadb":
            for name in self.tables:
                self.sql(f"DROP TABLE IF EXISTS {name}")
        if self.engine is not None:
            self.engine.dispose()


@pytest.fixture(params=["sqlite", "sqlalchemy-sqlite", "sqlalchemy-mariadb"])
def env(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Env]:
    url = None
    if request.param == "sqlalchemy-mariadb":
        url = request.getfixturevalue("mariadb_url")
    e = Env(request.param.replace("sqlalchemy-", "sa-") if request.param != "sqlalchemy-mariadb"
            else "mariadb", tmp_path, url)
    yield e
    e.close()


ROW = {"key_column": "id", "columns": ["name", "email"]}
VROW = {**ROW, "version_column": "version"}


def rows_of(env: Env, table: str) -> dict[str, tuple[Any, ...]]:
    return {str(r[0]): tuple(r[1:]) for r in env.sql(f"SELECT id, name, email FROM {table}")}


# -- the store ----------------------------------------------------------------------------
def test_round_trip_through_the_store(env: Env) -> None:
    users = env.users()
    s = env.store(users, **VROW)
    assert s.versioned
    assert not s.atomic_add
    res = s.apply([Op("", "u1", SET, None, 0, {"name": "Ann", "email": "ann@x"}),
                   Op("", "u2", SET, None, 0, {"name": "Bob"})])
    assert rows_of(env, users) == {"u1": ("Ann", "ann@x"), "u2": ("Bob", None)}
    loaded = s.fetch("", ["u1", "u2", "nobody"])
    assert set(loaded) == {"u1", "u2"}
    assert loaded["u1"].payload is None
    assert loaded["u1"].value == {"name": "Ann", "email": "ann@x"}
    assert (loaded["u1"].version, loaded["u2"].version) == (res[0].version, res[1].version)
    s.save_many({"u1": {"email": "ann@new"}})  # a partial dict: name keeps its value
    assert s.load("u1") == {"name": "Ann", "email": "ann@new"}
    s.save_many({"u1": {"id": "u1", "name": "A1"}})  # the key column may repeat the key
    assert s.load("u1") == {"name": "A1", "email": "ann@new"}
    s.save_many({"u1": {}})  # nothing to change: the row stays
    assert s.load("u1") == {"name": "A1", "email": "ann@new"}
    assert s.load("u1", namespace="elsewhere") == s.load("u1"), "namespaces are ignored"
    s.delete_many(["u2", "never-there"])
    assert rows_of(env, users) == {"u1": ("A1", "ann@new")}
    assert s.load_many(["u1", "u2"]) == {"u1": {"name": "A1", "email": "ann@new"}}


def test_capabilities_and_sampled_keys_of_row_mode(env: Env) -> None:
    # Declared once, read once: row mode validates writes and does not add counters;
    # the checker samples keys of the table (no namespace column: any namespace).
    users = env.users()
    s = env.store(users, **VROW)
    caps = store_capabilities(s)
    assert (caps.versioned, caps.atomic_add) == (True, False)
    assert caps.validate is not None
    assert caps.validate("", "u1", {"name": "A"}, SET) == {"name": "A", "email": None}
    assert caps.sample_keys is not None
    assert caps.sample_keys("", 5) == []
    s.save_many({f"u{i}": {"name": str(i)} for i in range(6)})
    got = caps.sample_keys("any", 4)
    assert len(got) == 4
    assert set(got) <= {f"u{i}" for i in range(6)}
    kv = env.store(unique("kv"))
    env.tables += [kv.table, f"{kv.table}_meta", f"{kv.table}_applied"]
    kv_caps = store_capabilities(kv)
    assert (kv_caps.versioned, kv_caps.atomic_add, kv_caps.validate) == (True, True, None)
    kv.save_many({"a": 1, "b": 2}, namespace="views")
    assert sorted(kv.sample_keys("views", 10)) == ["a", "b"]
    assert kv.sample_keys("", 10) == []


def test_bad_values_fail_the_whole_batch_before_any_sql(env: Env) -> None:
    users = env.users()
    s = env.store(users, **VROW)
    s.save_many({"u1": {"name": "Ann"}})
    with pytest.raises(cw.StoreError, match="fax, phone"):
        s.save_many({"u2": {"name": "B"}, "u3": {"name": "C", "phone": "1", "fax": "2"}})
    with pytest.raises(cw.StoreError, match="not supported"):
        s.apply([Op("", "u1", ADD, delta=1)])
    with pytest.raises(cw.StoreError, match="dict"):
        s.save_many({"u2": "not a dict"})
    with pytest.raises(cw.StoreError, match="cannot differ"):
        s.save_many({"u2": {"id": "u9", "name": "B"}})
    assert rows_of(env, users) == {"u1": ("Ann", None)}, "a refused batch wrote nothing"


def test_unversioned_without_a_version_column(env: Env) -> None:
    users = env.users()
    s = env.store(users, **ROW)
    assert not s.versioned
    assert s.apply([Op("", "u1", SET, None, 0, {"name": "A"})]) == [Applied(None)]
    assert s.fetch("", ["u1"])["u1"].version is None
    assert s.apply([Op("", "u1", DELETE)]) == [Applied(None)]
    assert s.load_many(["u1"]) == {}
    assert env.sql(f"SELECT version FROM {users}") == []
    assert not env.has_table(f"{users}_cw_meta"), "nothing created without a journal"


def test_version_column_is_stamped_and_increasing(env: Env) -> None:
    users = env.users()
    env.sql(f"INSERT INTO {users} (id, name, version) VALUES ('old', 'O', 100)")
    s = env.store(users, **VROW)
    assert s.load("old") == {"name": "O", "email": None}
    assert s.fetch("", ["old"])["old"].version == 100
    seen: list[int] = []
    for i in range(3):
        (a,) = s.apply([Op("", "u1", SET, None, 0, {"name": f"v{i}"})])
        stamped = env.sql(f"SELECT version FROM {users} WHERE id = 'u1'")[0][0]
        assert a.version == stamped
        seen.append(stamped)
    assert seen == sorted(seen)
    assert len(set(seen)) == 3
    assert seen[0] > 100, "versions start above the column's maximum"
    d = s.apply([Op("", "u1", DELETE), Op("", "ghost", DELETE)])
    assert d[0].version is not None
    assert d[1].version is not None
    assert seen[-1] < d[0].version < d[1].version, "deletes consume versions"
    (b,) = s.apply([Op("", "u1", SET, None, 0, {"name": "back"})])
    assert b.version is not None
    assert b.version > d[1].version, "versions survive deletes"
    # A second store on the same table continues the same counter.
    other = env.store(users, **VROW)
    (c,) = other.apply([Op("", "u2", SET, None, 0, {"name": "x"})])
    assert c.version is not None
    assert c.version > b.version
    # A batch naming one key twice applies in order, each op its own version.
    r = s.apply([Op("", "u3", SET, None, 0, {"name": "first", "email": "e"}),
                 Op("", "u3", SET, None, 0, {"name": "second"}),
                 Op("", "u4", SET, None, 0, {"name": "keep"}),
                 Op("", "u4", DELETE)])
    versions = [x.version for x in r]
    assert versions == sorted(versions)
    assert s.load_many(["u3", "u4"]) == {"u3": {"name": "second", "email": "e"}}
    assert s.fetch("", ["u3"])["u3"].version == r[1].version


def test_journal_marks_and_replayed_payloads(env: Env) -> None:
    users = env.users()
    s = env.store(users, **VROW)
    s.save_many({"u1": {"name": "A"}})
    assert not env.has_table(f"{users}_cw_applied"), "mark tables wait for the first mark"
    s.apply([Op("", "u1", SET, None, 0, {"name": "A2"})], journal=JournalMark("rj", 2, [3]))
    assert env.has_table(f"{users}_cw_applied")
    assert s.applied_state("rj") == (2, {("", "u1"): 3})
    assert s.applied_state("other") == (0, {})
    # A journal replay carries the serialized payload only (no Python value).
    payload = cw.JSONSerializer().dumps({"email": "from@journal"})
    s.apply([Op("", "u1", SET, payload, 0, NOTSET), Op("", "u9", DELETE)],
            journal=JournalMark("rj", 5, [6, 7]))
    assert s.load("u1") == {"name": "A2", "email": "from@journal"}
    assert s.applied_state("rj") == (5, {("", "u1"): 6, ("", "u9"): 7})


def test_journal_state_on_a_fresh_unversioned_store(env: Env) -> None:
    users = env.users()
    s = env.store(users, **ROW)
    assert s.applied_state("j") == (0, {})  # creates the mark tables, reports nothing
    s.apply([Op("", "u1", SET, None, 0, {"name": "A"})], journal=JournalMark("j", 0, [1]))
    assert s.applied_state("j") == (0, {("", "u1"): 1})


def test_mixed_case_table_and_column_names(env: Env) -> None:
    # issue 10 item 5 (these stores quoted right already; kept as a guard)
    q = "`" if env.kind == "mariadb" else '"'
    name = unique("Blog") + "Users"
    env.tables += [name, f"{name}_cw_meta", f"{name}_cw_applied"]
    env.sql(f"CREATE TABLE {q}{name}{q} ({q}userId{q} {env.text_key} PRIMARY KEY, "
            f"{q}userName{q} TEXT, {q}Email{q} TEXT, {q}Version{q} BIGINT)")
    kw = {"key_column": "userId", "columns": ["userName", "Email"], "version_column": "Version"}
    s = env.store(name, **kw)
    first = s.apply([Op("", "u1", SET, None, 0, {"userName": "Ann", "Email": "a@x"})])
    assert s.fetch("", ["u1"])["u1"] == (None, {"userName": "Ann", "Email": "a@x"},
                                         first[0].version, None)  # (row mode: no expiry)
    s.apply([Op("", "u2", SET, None, 0, {"userName": "Bob"}), Op("", "u1", DELETE)],
            journal=JournalMark("mj", 1, [2, 3]))
    assert s.applied_state("mj") == (1, {("", "u2"): 2, ("", "u1"): 3})
    again = env.store(name, **kw)
    assert again.load_many(["u1", "u2"]) == {"u2": {"userName": "Bob", "Email": None}}
    (later,) = again.apply([Op("", "u3", SET, None, 0, {"Email": "c@x"})])
    assert later.version is not None
    assert first[0].version is not None
    assert later.version > first[0].version


def test_refusals_of_the_database_are_invalid_writes(env: Env) -> None:
    # issue 10 item 3: a NOT NULL column left out of a new row is refused at every retry
    name = unique("strict")
    env.tables += [name, f"{name}_cw_meta", f"{name}_cw_applied"]
    env.sql(f"CREATE TABLE {name} (id {env.text_key} PRIMARY KEY, name TEXT NOT NULL, "
            "email TEXT)")
    s = env.store(name, **ROW)
    expected = {"sqlite": (None, None), "sa-sqlite": (255, None), "mariadb": (64, None)}
    assert (s.max_key_chars, s.max_key_bytes) == expected[env.kind]
    with pytest.raises(cw.InvalidWriteError):
        s.save_many({"u1": {"email": "no name"}})
    s.save_many({"u1": {"name": "A"}})
    assert s.load("u1") == {"name": "A", "email": None}


# -- construction checks -------------------------------------------------------------------
def test_missing_table_and_columns_are_config_errors(env: Env) -> None:
    users = env.users()
    with pytest.raises(cw.ConfigError, match="phone, fax"):
        env.store(users, key_column="id", columns=["name", "phone", "fax"])
    with pytest.raises(cw.ConfigError, match=r"no column.*nokey"):
        env.store(users, key_column="nokey", columns=["name"])
    with pytest.raises(cw.ConfigError, match=r"no column.*ver2"):
        env.store(users, key_column="id", columns=["name"], version_column="ver2")
    nope = unique("nope")
    with pytest.raises(cw.ConfigError, match=f"{nope}.*does not exist"):
        env.store(nope, key_column="id", columns=["name"])
    assert not env.has_table(nope), "row mode never creates the user's table"


def test_table_shape_checks(env: Env) -> None:
    users = env.users()
    with pytest.raises(cw.ConfigError, match="unique"):
        env.store(users, key_column="email", columns=["name"])
    with pytest.raises(cw.ConfigError, match="not an integer"):
        env.store(users, key_column="id", columns=["name"], version_column="email")
    with pytest.raises(cw.ConfigError, match="named twice"):
        env.store(users, key_column="id", columns=["name", "id"])
    with pytest.raises(cw.ConfigError, match="both key_column"):
        env.store(users, key_column="id")
    with pytest.raises(cw.ConfigError, match="both key_column"):
        env.store(users, columns=["name"])
    with pytest.raises(cw.ConfigError, match="not the string"):
        env.store(users, key_column="id", columns="name")
    assert not env.has_table(f"{users}_cw_meta")


def test_a_unique_index_makes_a_key_column(env: Env) -> None:
    if env.kind == "mariadb":
        pytest.skip("a TEXT column takes only a prefix index, not a unique key of the column")
    users = env.users()
    env.sql(f"CREATE UNIQUE INDEX {users}_email ON {users} (email)")
    s = env.store(users, key_column="email", columns=["name"])
    s.save_many({"a@x": {"name": "A"}})
    assert s.load("a@x") == {"name": "A"}


@pytest.mark.parametrize("bad", [
    {"table": "users; DROP TABLE x"},
    {"table": "1users"},
    {"key_column": "id--"},
    {"columns": ["name", "e mail"]},
    {"columns": ['na"me']},
    {"version_column": "v(1)"},
    {"table": "x" * 64},
    # issue 10 item 15: a trailing newline passed "^...$" with re.match
    {"table": "users\n"},
    {"key_column": "id\n"},
    {"columns": ["name", "email\n"]},
    {"version_column": "version\n"},
])
def test_bad_identifiers_are_config_errors(env: Env, bad: dict[str, Any]) -> None:
    kw: dict[str, Any] = {"table": "users", **VROW, **bad}
    table = kw.pop("table")
    with pytest.raises(cw.ConfigError, match="not a valid identifier"):
        env.store(table, **kw)


# -- integer keys -----------------------------------------------------------------------------
def test_integer_primary_key(env: Env) -> None:
    name = unique("items")
    env.tables.append(name)
    pk = "INTEGER PRIMARY KEY" if env.kind != "mariadb" else "BIGINT PRIMARY KEY"
    env.sql(f"CREATE TABLE {name} (id {pk}, title TEXT, price REAL)")
    s = env.store(name, key_column="id", columns=["title", "price"])
    s.save_many({"7": {"title": "seven", "price": 7.5}, "-8": {"title": "minus eight"}})
    assert s.load_many(["7", "-8", "9"]) == {
        "7": {"title": "seven", "price": 7.5}, "-8": {"title": "minus eight", "price": None}}
    assert sorted(r[0] for r in env.sql(f"SELECT id FROM {name}")) == [-8, 7]
    if env.engine is None:
        assert env.sql(f"SELECT typeof(id) FROM {name}") == [("integer",), ("integer",)]
    # Keys that are not the canonical spelling of an integer name no row.
    assert s.load_many(["07", "+7", "7.0", " 7", "abc"]) == {}
    for bad in ("07", "abc", "7.0"):
        with pytest.raises(cw.StoreError, match="canonical"):
            s.save_many({bad: {"title": "x"}})
    s.delete_many(["7", "abc"])  # a key no row can have is simply absent
    assert s.load_many(["7", "-8"]) == {"-8": {"title": "minus eight", "price": None}}


def test_sqlite_refuses_non_scalar_values_and_real_keys(tmp_path: Any) -> None:
    path = str(tmp_path / "x.db")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (id TEXT PRIMARY KEY, tags TEXT)")
        conn.execute("CREATE TABLE r (id REAL PRIMARY KEY, tags TEXT)")
    with cw.SQLiteStore(path, table="t", key_column="id", columns=["tags"]) as s:
        with pytest.raises(cw.StoreError, match="tags"):
            s.save_many({"a": {"tags": ["x", "y"]}})
        with pytest.raises(cw.SerializationError, match="range"):
            s.save_many({"a": {"tags": 2**70}})  # refused by the serializer first
        s.apply([Op("", "a", SET, None, 0, {"tags": b"\x00raw"})])  # no serializer here
        assert s.load("a") == {"tags": b"\x00raw"}
    with pytest.raises(cw.ConfigError, match="INTEGER or TEXT"):
        cw.SQLiteStore(path, table="r", key_column="id", columns=["tags"])


# -- caches over a row-mode store ------------------------------------------------------------
@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "unversioned"])
def test_cache_round_trip_every_policy(env: Env, make_policy: Any, autoclose: Any,
                                       versioned: bool) -> None:
    users = env.users()
    store = env.store(users, **(VROW if versioned else ROW))
    policy = make_policy()
    cache = autoclose(cw.Cache(store=store, policy=policy))
    cache.set("u1", {"name": "Ann", "email": "ann@x"})
    assert cache.get("u1") == {"name": "Ann", "email": "ann@x"}, "read your writes"
    cache.set_many({"u2": {"name": "Bob", "email": "bob@x"}, "u3": {"name": "Cy"}})
    cache.flush()
    assert rows_of(env, users) == {"u1": ("Ann", "ann@x"), "u2": ("Bob", "bob@x"),
                                   "u3": ("Cy", None)}
    # A cache set replaces the row's mapped columns (a column left out becomes None),
    # so the cached copy and the row agree under every policy.
    cache.set("u2", {"email": "bob@new"})
    assert cache.get("u2") == {"name": None, "email": "bob@new"}
    cache.flush()
    assert rows_of(env, users)["u2"] == (None, "bob@new")
    assert store.load("u2") == {"name": None, "email": "bob@new"}
    assert cache.get("u2") == store.load("u2")
    # The store's own save_many updates only the columns a dict names.
    store.save_many({"u2": {"name": "Bob"}})
    assert store.load("u2") == {"name": "Bob", "email": "bob@new"}
    cache.delete("u3")
    assert cache.get("u3") is None
    cache.flush()
    assert "u3" not in rows_of(env, users)
    # Read-through: a row written by someone else comes back as its dict.
    env.sql(f"INSERT INTO {users} (id, name, email) VALUES ('u4', 'Dee', 'dee@x')")
    assert cache.get("u4") == {"name": "Dee", "email": "dee@x"}
    assert cache.get_many(["u1", "u4", "zz"]) == {
        "u1": {"name": "Ann", "email": "ann@x"}, "u4": {"name": "Dee", "email": "dee@x"}}
    # Counters are not supported in row mode: refused at the call, under every policy.
    with pytest.raises(cw.StoreError, match="not supported"):
        cache.incr("u1")
    with pytest.raises(cw.StoreError, match="not supported"):
        cache.incr("n")
    assert cache.pending() == 0
    cache.close()


def test_sqlite_store_behind_a_cache_as_in_the_docs(tmp_path: Any, autoclose: Any,
                                                    make_policy: Any) -> None:
    path = str(tmp_path / "app.db")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT, email TEXT)")
    cache = autoclose(cw.Cache(
        store=cw.SQLiteStore(path, table="users", key_column="id", columns=["name", "email"]),
        policy=make_policy()))
    cache.set("u1", {"name": "Ann", "email": "a@x"})
    cache.flush()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT id, name, email FROM users").fetchall() == [
            ("u1", "Ann", "a@x")]
    assert cache.get("u1") == {"name": "Ann", "email": "a@x"}


def test_write_through_unknown_column_raises_from_set(env: Env, autoclose: Any) -> None:
    users = env.users()
    store = env.store(users, **VROW)
    cache = autoclose(cw.Cache(store=store, policy=cw.WriteThrough()))
    cache.set("u1", {"name": "Ann"})
    with pytest.raises(cw.StoreError, match="phone"):
        cache.set("u1", {"name": "Evil", "phone": "123"})
    # The refused write left the row alone (the cache dropped its copy and reloads it).
    assert cache.get("u1") == {"name": "Ann", "email": None}
    assert rows_of(env, users) == {"u1": ("Ann", None)}
    with pytest.raises(cw.StoreError, match="phone"):
        cache.set_many({"u2": {"name": "B"}, "u3": {"phone": "1"}})
    assert cache.get_many(["u2", "u3"]) == {}, "a set_many is one transaction"


def test_write_back_unknown_column_is_refused_at_the_call(env: Env, autoclose: Any
                                                          ) -> None:
    users = env.users()
    store = env.store(users, **VROW)
    cache = autoclose(cw.Cache(store=store, policy=cw.WriteBack(max_delay=0.02)))
    with pytest.raises(cw.StoreError, match="phone"):
        cache.set_many({"good1": {"name": "G1"}, "bad": {"name": "B", "phone": "1"},
                        "good2": {"name": "G2"}})
    with pytest.raises(cw.StoreError, match="phone"):
        cache.set("bad", {"name": "B", "phone": "1"})
    assert cache.pending() == 0, "nothing of a refused call is accepted"
    assert cache.get("bad") is None
    # The cache goes on: later writes reach the store.
    cache.set_many({"good1": {"name": "G1"}, "good2": {"name": "G2"}})
    cache.flush(timeout=10)
    assert rows_of(env, users) == {"good1": ("G1", None), "good2": ("G2", None)}
    assert cache.stats().dead_letters == 0


_CHILD = """
import os, sys
import cacheway as cw
kind, where, table, wal = sys.argv[1:5]
rows = dict(key_column="id", columns=["name", "email"], version_column="version")
store = (cw.SQLiteStore(where, table=table, **rows) if kind == "sqlite"
         else cw.SQLAlchemyStore(where, table=table, **rows))
cache = cw.Cache(store=store, policy=cw.WriteBack(max_delay=600, journal=wal, fsync="always"))
cache.set("u1", {"name": "Ann", "email": "a@x"})
cache.set("u2", {"name": "Bob"})
cache.set("u3", {"name": "Cy"})
cache.delete("u2")
cache.set("u3", {"email": "c@x"})
os._exit(0)  # a crash: nothing flushed, the journal has every write
"""


def test_write_back_journal_replays_into_rows(env: Env, tmp_path: Any, autoclose: Any) -> None:
    users = env.users()
    env.sql(f"INSERT INTO {users} (id, name, email) VALUES ('u3', 'Old', 'old@x')")
    wal = str(tmp_path / "rows.wal")
    where = env.path if env.kind == "sqlite" else str(env.engine.url.render_as_string(
        hide_password=False))
    subprocess.run([sys.executable, "-c", _CHILD, env.kind, where, users, wal], check=True,
                   timeout=60)
    assert rows_of(env, users) == {"u3": ("Old", "old@x")}, "the child flushed nothing"
    store = env.store(users, **VROW)
    cache = autoclose(cw.Cache(store=store, policy=cw.WriteBack(max_delay=60, journal=wal)))
    cache.flush()
    # The replay coalesced u3 to its last write; a cache set replaces the mapped
    # columns, so the name it left out is None, exactly as the cached copy said.
    assert rows_of(env, users) == {"u1": ("Ann", "a@x"), "u3": (None, "c@x")}
    marks = env.sql(f"SELECT count(*) FROM {users}_cw_meta WHERE name LIKE ?",
                   ("journal:%",))
    assert marks == [(1,)], "the replay recorded its journal mark with the batch"


@pytest.mark.parametrize("policy", [cw.WriteBack, cw.WriteThrough])
def test_a_row_leaving_a_not_null_column_empty_is_refused_at_set(env: Env, policy: Any) -> None:
    """Guarantee 7. Regression: under write-back, set() took a dict leaving out a NOT NULL
    column (it becomes NULL), the flush dead-lettered the row and flush() returned."""
    users = env.users(extra=", nick TEXT NOT NULL DEFAULT 'x'")
    s = env.store(users, key_column="id", columns=["name", "nick"])
    with cw.Cache(store=s, policy=policy()) as cache:
        cache.set("u1", {"name": "Ann", "nick": "a"})
        for bad in ({"name": "Bob"}, {"name": "Bob", "nick": None}):
            with pytest.raises(cw.InvalidWriteError, match="nick"):
                cache.set("u1", bad)
        cache.flush()
        assert cache.stats().dead_letters == 0
        assert cache.get("u1") == {"name": "Ann", "nick": "a"}
    s.save_many({"u1": {"name": "Ann2"}})  # the store's partial update keeps nick
    assert s.load("u1") == {"name": "Ann2", "nick": "a"}
    with pytest.raises(cw.InvalidWriteError, match="nick"):
        s.save_many({"u1": {"nick": None}})
