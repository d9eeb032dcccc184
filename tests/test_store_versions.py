"""Versioned ops (``Op.version``): every built-in store applies them set-if-newer.

Write-back from several processes sharing Redis stamps each write with a version from
Redis when it is accepted; a flush that reaches the store late must not overwrite a
newer write (issue 10 item 7). Each test runs on every built-in versioned store, in
key/value mode and in row mode with a ``version_column``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import cacheway as cw
from cacheway.stores.base import ADD, DELETE, SET, Applied, JournalMark, Op
from services import unique
from test_store_suite import STORES, Harness, drop_tables, pg_sa_url

# What a Redis hybrid clock gives: microseconds since the epoch, below 2**53.
V = 1_800_000_000_000_000

KV_KINDS = [k for k in STORES if k != "callback"]


@pytest.fixture(scope="module", autouse=True)
def _dispose_engines() -> Iterator[None]:
    from test_store_suite import _ENGINES

    yield
    while _ENGINES:
        _ENGINES.popitem()[1].dispose()


@pytest.fixture(params=KV_KINDS)
def harness(request: pytest.FixtureRequest) -> Iterator[Harness]:
    h = Harness(request.param, request)
    try:
        yield h
    finally:
        h.cleanup()


@pytest.fixture
def store(harness: Harness) -> Any:
    return harness.store()


def dumps(value: Any) -> bytes:
    return cw.JSONSerializer().dumps(value)


def vset(key: str, value: Any, version: int | None, ns: str = "") -> Op:
    return Op(ns, key, SET, dumps(value), 0, value, version)


def vdel(key: str, version: int | None, ns: str = "") -> Op:
    return Op(ns, key, DELETE, None, 0, None, version)


def vadd(key: str, delta: int, version: int | None, ns: str = "") -> Op:
    return Op(ns, key, ADD, dumps(delta), delta, delta, version)


def version_of(store: Any, key: str, ns: str = "") -> int | None:
    row = store.fetch(ns, [key]).get(key)
    return None if row is None else row.version


# -- key/value mode ----------------------------------------------------------------------
def test_an_older_versioned_set_is_skipped_and_a_newer_one_lands(store: Any) -> None:
    # issue 10 item 7: process A's older write landed after B's newer one and stayed
    assert store.apply([vset("v", 2, V + 20)]) == [Applied(V + 20)]
    assert store.apply([vset("v", 1, V + 10)]) == [Applied(V + 20, None, False)]
    assert store.load("v") == 2
    assert version_of(store, "v") == V + 20
    # the same version again is not newer either
    assert store.apply([vset("v", 9, V + 20)]) == [Applied(V + 20, None, False)]
    assert store.apply([vset("v", 3, V + 30)]) == [Applied(V + 30)]
    assert store.load("v") == 3
    assert version_of(store, "v") == V + 30


def test_a_versioned_set_is_compared_with_a_store_stamped_row(store: Any) -> None:
    # issue 10 item 7: an unversioned write is newer than every version applied before
    store.apply([vset("a", 1, V + 10)])
    stamped = store.apply([vset("a", 2, None)])[0].version
    assert stamped > V + 10
    assert store.apply([vset("a", 3, V + 11)]) == [Applied(stamped, None, False)]
    assert store.load("a") == 2
    assert store.apply([vset("a", 4, stamped + 1)]) == [Applied(stamped + 1)]
    assert store.load("a") == 4


def test_later_unversioned_writes_are_newer_than_every_applied_version(
        harness: Harness, store: Any) -> None:
    # issue 10 item 7: the store's counter is raised to every version it applied
    store.apply([vset("a", 1, V + 500), vdel("b", V + 900), vadd("c", 1, V + 700)])
    for ops in ([vset("x", 1, None)], [vdel("y", None)], [vadd("z", 1, None)],
                [vset("x", 2, None), vset("w", 2, None)]):
        assert all(a.version > V + 900 for a in store.apply(ops))
    # another store on the same table (another process) counts from there too
    assert harness.store().apply([vset("q", 1, None)])[0].version > V + 900


def test_versioned_adds_sum_in_any_order_and_keep_the_greatest_version(store: Any) -> None:
    # issue 10 item 7
    assert store.apply([vadd("n", 5, V + 20)]) == [Applied(V + 20, 5)]
    assert store.apply([vadd("n", 3, V + 10)]) == [Applied(V + 20, 8)]
    assert store.apply([vadd("n", -1, V + 30)]) == [Applied(V + 30, 7)]
    assert store.load("n") == 7
    assert version_of(store, "n") == V + 30


def test_a_batch_mixing_versioned_and_unversioned_ops(store: Any) -> None:
    # issue 10 item 7
    store.apply([vset("old", "kept", V + 100), vset("gone", 1, V + 100)])
    results = store.apply([
        vset("old", "stale", V + 50),    # older: skipped
        vset("new", "n", V + 60),
        vset("plain", "p", None),        # stamped by the store, above every version
        vdel("gone", V + 200),
        vadd("count", 2, None),
        vadd("count", 3, V + 70),
        vset("tail", "t", None),
    ])
    assert results[0] == Applied(V + 100, None, False)
    assert results[1] == Applied(V + 60)
    assert results[2].version > V + 200
    assert results[2].applied
    assert results[3] == Applied(V + 200)
    assert results[4].version > results[2].version
    assert results[4].value == 2
    assert results[5] == Applied(results[4].version, 5)  # greatest(row, op)
    assert results[6].version > results[4].version
    assert store.load_many(["old", "new", "plain", "gone", "count", "tail"]) == {
        "old": "kept", "new": "n", "plain": "p", "count": 5, "tail": "t"}


def test_one_key_twice_in_a_batch(store: Any) -> None:
    # issue 10 item 7: versions increasing end with the last; an older one is skipped
    results = store.apply([vset("k", 1, V + 1), vset("k", 2, V + 2), vset("k", 3, V + 3)])
    assert results == [Applied(V + 1), Applied(V + 2), Applied(V + 3)]
    assert store.load("k") == 3
    results = store.apply([vset("k", 5, V + 5), vset("k", 4, V + 4), vdel("k", V + 4)])
    assert results == [Applied(V + 5), Applied(V + 5, None, False),
                       Applied(V + 5, None, False)]
    assert store.load("k") == 5
    results = store.apply([vdel("k", V + 6), vset("k", 7, V + 7), vset("j", 1, None),
                           vset("k", 8, None)])
    assert results[:2] == [Applied(V + 6), Applied(V + 7)]
    assert results[3].version > results[2].version > V + 7
    assert store.load("k") == 8


def test_a_versioned_delete_keeps_the_keys_version(store: Any) -> None:
    # issue 10 item 7: an older SET arriving after a newer DELETE stays deleted
    store.apply([vset("d", 1, V + 10)])
    assert store.apply([vdel("d", V + 5)]) == [Applied(V + 10, None, False)]
    assert store.load("d") == 1
    assert store.apply([vdel("d", V + 20)]) == [Applied(V + 20)]
    assert store.load("d", "absent") == "absent"
    assert store.load_many(["d"]) == {}
    assert store.fetch("", ["d"]) == {}
    assert store.apply([vset("d", 2, V + 15)]) == [Applied(V + 20, None, False)]
    assert store.load("d", "absent") == "absent"
    assert store.apply([vset("d", 3, V + 25)]) == [Applied(V + 25)]
    assert store.load("d") == 3


def test_a_versioned_delete_of_an_absent_key(store: Any) -> None:
    # issue 10 item 7
    assert store.apply([vdel("never", V + 10)]) == [Applied(V + 10)]
    assert store.load("never", "absent") == "absent"
    assert store.apply([vset("never", 1, V + 9)]) == [Applied(V + 10, None, False)]
    assert store.load("never", "absent") == "absent"


def test_writes_after_a_versioned_delete(store: Any) -> None:
    # issue 10 item 7: a deleted key reads as absent to counters and unversioned writes
    store.apply([vset("c", 40, V + 1), vset("e", 1, V + 1), vset("u", 1, V + 1)])
    store.apply([vdel("c", V + 2), vdel("e", V + 2), vdel("u", V + 2)])
    assert store.apply([vadd("c", 2, None)])[0].value == 2
    assert store.apply([vadd("e", 3, V + 1)]) == [Applied(V + 2, 3)]
    assert store.apply([vset("u", "x", None)])[0].version > V + 2
    assert store.load_many(["c", "e", "u"]) == {"c": 2, "e": 3, "u": "x"}
    store.apply([vdel("u", None)])  # an unversioned delete deletes the row
    assert store.load("u", "absent") == "absent"


def test_namespaces_keep_their_own_versions(store: Any) -> None:
    # issue 10 item 7
    store.apply([vset("k", "a", V + 10, ns="a"), vset("k", "b", V + 5, ns="b")])
    assert store.apply([vset("k", "b2", V + 6, ns="b")]) == [Applied(V + 6)]
    assert store.load("k", namespace="a") == "a"
    assert store.load("k", namespace="b") == "b2"


def test_journal_marks_with_versioned_ops(store: Any) -> None:
    # issue 10 item 7: skipped ops are applied as far as a replay is concerned
    store.apply([vset("m", 1, V + 10)])
    mark = JournalMark("j" * 32, 2, [3, 4])
    results = store.apply([vset("m", 0, V + 5), vset("o", 1, V + 6)], journal=mark)
    assert results == [Applied(V + 10, None, False), Applied(V + 6)]
    assert store.applied_state("j" * 32) == (2, {("", "m"): 3, ("", "o"): 4})


def test_a_failing_versioned_batch_changes_nothing(store: Any) -> None:
    # issue 10 item 7: the batch is one transaction, the counter included
    store.apply([vset("s", "text", V + 1)])
    with pytest.raises(cw.StoreError):
        store.apply([vset("x", 1, V + 50), vadd("s", 1, V + 60)])
    assert store.load("x") is None
    assert store.load("s") == "text"


# -- stores without versions --------------------------------------------------------------
def test_callback_store_ignores_versions() -> None:
    # issue 10 item 7: in-process guarantees only; every op is applied
    data: dict[str, Any] = {}
    store = cw.CallbackStore(
        lambda keys: {k: data[k] for k in keys if k in data},
        lambda items: data.update(items),
        lambda keys: [data.pop(k, None) for k in keys])
    assert store.apply([vset("a", 2, V + 20)]) == [Applied(None)]
    assert store.apply([vset("a", 1, V + 10)]) == [Applied(None)]
    assert store.apply([vdel("b", V + 1), vadd("c", 1, V)]) == [Applied(None),
                                                                 Applied(None, 1)]
    assert data == {"a": 1, "c": 1}


# -- row mode with a version_column --------------------------------------------------------
ROW_KINDS = ["sqlite", "sqlalchemy-sqlite", "sqlalchemy-mariadb", "sqlalchemy-postgresql",
             "postgres"]


class Rows:
    """A users table of one database and row-mode stores over it."""

    def __init__(self, kind: str, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.table = unique("vrows")
        tmp = request.getfixturevalue("tmp_path")
        self.path = str(tmp / "rows.db")
        self.dsn = ""
        if kind in ("sqlite", "sqlalchemy-sqlite"):
            self.url = "sqlite:///" + self.path
        elif kind == "sqlalchemy-mariadb":
            self.url = request.getfixturevalue("mariadb_url")
        else:
            self.dsn = request.getfixturevalue("postgres_dsn")
            self.url = pg_sa_url(self.dsn)
        self.engine = sa.create_engine(self.url)
        key = "VARCHAR(64)" if kind == "sqlalchemy-mariadb" else "TEXT"
        with self.engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE TABLE {self.table} (id {key} PRIMARY KEY, "
                                 "name TEXT, email TEXT, version BIGINT)")
        self.stores: list[Any] = []

    def store(self) -> Any:
        kw: dict[str, Any] = {"table": self.table, "key_column": "id",
                              "columns": ["name", "email"], "version_column": "version"}
        if self.kind == "sqlite":
            store: Any = cw.SQLiteStore(self.path, **kw)
        elif self.kind == "postgres":
            from cacheway.stores.postgres import PostgresStore

            store = PostgresStore(self.dsn, **kw)
        else:
            store = cw.SQLAlchemyStore(self.engine, **kw)
        self.stores.append(store)
        return store

    def versions(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(f"SELECT id, version FROM {self.table}").fetchall()
        return {str(k): int(v) for k, v in rows}

    def close(self) -> None:
        for store in self.stores:
            store.close()
        self.engine.dispose()
        if self.kind not in ("sqlite", "sqlalchemy-sqlite"):
            drop_tables(self.url, self.table)


@pytest.fixture(params=ROW_KINDS)
def rows(request: pytest.FixtureRequest) -> Iterator[Rows]:
    r = Rows(request.param, request)
    try:
        yield r
    finally:
        r.close()


def rset(key: str, name: str, version: int | None) -> Op:
    value = {"name": name}
    return Op("", key, SET, dumps(value), 0, value, version)


def test_row_mode_applies_versioned_sets_if_newer(rows: Rows) -> None:
    # issue 10 item 7
    store = rows.store()
    assert store.apply([rset("u1", "new", V + 20)]) == [Applied(V + 20)]
    assert store.apply([rset("u1", "old", V + 10)]) == [Applied(V + 20, None, False)]
    assert store.load("u1") == {"name": "new", "email": None}
    assert rows.versions() == {"u1": V + 20}
    assert store.apply([rset("u1", "newer", V + 30)]) == [Applied(V + 30)]
    assert store.load("u1") == {"name": "newer", "email": None}
    assert rows.versions() == {"u1": V + 30}


def test_row_mode_a_versioned_delete_keeps_the_keys_version(rows: Rows) -> None:
    # issue 10 item 7: an older SET arriving after a newer DELETE stays deleted
    store = rows.store()
    store.apply([rset("u1", "a", V + 10)])
    assert store.apply([vdel("u1", V + 5)]) == [Applied(V + 10, None, False)]
    assert store.apply([vdel("u1", V + 20)]) == [Applied(V + 20)]
    assert rows.versions() == {}
    assert store.apply([rset("u1", "stale", V + 15)]) == [Applied(V + 20, None, False)]
    assert rows.versions() == {}
    assert store.apply([vdel("u2", V + 30), rset("u2", "older", V + 29)]) == [
        Applied(V + 30), Applied(V + 30, None, False)]
    # another store on the table (another process) sees the tombstones too
    other = rows.store()
    assert other.apply([rset("u2", "older", V + 25)]) == [Applied(V + 30, None, False)]
    assert other.apply([rset("u1", "back", V + 40)]) == [Applied(V + 40)]
    assert rows.versions() == {"u1": V + 40}


def test_row_mode_unversioned_writes_are_newer_and_batches_mix(rows: Rows) -> None:
    # issue 10 item 7
    store = rows.store()
    results = store.apply([rset("a", "1", V + 1), rset("a", "2", V + 2), rset("b", "x", None),
                           rset("a", "0", V), vdel("c", V + 3), rset("d", "d", None)])
    assert results[:2] == [Applied(V + 1), Applied(V + 2)]
    assert results[3] == Applied(V + 2, None, False)
    assert results[4] == Applied(V + 3)
    assert results[5].version > results[2].version > V + 3
    assert store.apply([rset("e", "e", None)])[0].version > results[5].version
    assert rows.versions() == {"a": V + 2, "b": results[2].version,
                               "d": results[5].version,
                               "e": rows.versions()["e"]}
    assert store.load_many(["a", "b", "c"]) == {"a": {"name": "2", "email": None},
                                                 "b": {"name": "x", "email": None}}
