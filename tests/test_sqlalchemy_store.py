"""SQLAlchemyStore specifics: MariaDB layout and concurrency, URLs, errors, engine ownership.

The behaviour every store shares is in test_store_suite.py.
"""

from __future__ import annotations

import multiprocessing
import queue
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import cacheway as cw
from cacheway.stores.base import ADD, DELETE, SET, JournalMark, Op
from cacheway.stores.sqlalchemy import SQLAlchemyStore
from services import unique
from test_store_suite import drop_tables

SECRET = "s3cret-Pa55"


@pytest.fixture
def mariadb_table(mariadb_url: str) -> Iterator[str]:
    table = unique("cw")
    yield table
    drop_tables(mariadb_url, table)


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    return "sqlite:///" + str(tmp_path / "sa.db")


def dumps(value: Any) -> bytes:
    return cw.JSONSerializer().dumps(value)


# -- many processes ----------------------------------------------------------------------
def _create_and_count(url: str, table: str, barrier: Any, out: Any) -> None:
    try:
        barrier.wait(60)  # every process creates the table at the same moment
        store = SQLAlchemyStore(url, table=table)
        with cw.Cache(store=store, policy=cw.WriteThrough()) as cache:
            got = [cache.incr("shared") for _ in range(100)]
        store.close()
        out.put(("ok", got))
    except BaseException:
        out.put(("error", traceback.format_exc()))


def test_four_processes_create_the_table_and_count(mariadb_url: str, mariadb_table: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    procs = [
        ctx.Process(target=_create_and_count, args=(mariadb_url, mariadb_table, barrier, out))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    results = []
    try:
        for _ in procs:
            results.append(out.get(timeout=60))
    except queue.Empty:
        pytest.fail(f"a child did not answer; got {results}")
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    errors = [r for kind, r in results if kind == "error"]
    assert not errors, errors[0]
    returned = sorted(v for _, got in results for v in got)
    # Every incr saw a distinct total: the adds were atomic across processes.
    assert returned == list(range(1, 401))
    with SQLAlchemyStore(mariadb_url, table=mariadb_table) as store:
        assert store.load("shared") == 400
    names = sa.inspect(sa.create_engine(mariadb_url)).get_table_names()
    assert {mariadb_table, f"{mariadb_table}_meta", f"{mariadb_table}_applied"} <= set(names)


# -- layout on MariaDB -------------------------------------------------------------------
def test_mariadb_table_layout(mariadb_url: str, mariadb_table: str) -> None:
    with SQLAlchemyStore(mariadb_url, table=mariadb_table) as store:
        with store.engine.connect() as conn:
            ddl = conn.execute(sa.text(f"SHOW CREATE TABLE `{mariadb_table}`")).one()[1]
        inspector = sa.inspect(store.engine)
        pk = inspector.get_pk_constraint(mariadb_table)["constrained_columns"]
        applied_pk = inspector.get_pk_constraint(f"{mariadb_table}_applied")
    assert pk == ["namespace", "key"]
    assert applied_pk["constrained_columns"] == ["journal", "namespace", "key"]
    assert "longblob" in ddl
    assert "bigint" in ddl.lower()
    assert "double" in ddl
    assert "utf8mb4_nopad_bin" in ddl, ddl  # keys compare exactly
    assert "InnoDB" in ddl


def test_key_length(mariadb_url: str, mariadb_table: str) -> None:
    with pytest.raises(cw.ConfigError, match="key_length"):
        SQLAlchemyStore(mariadb_url, table=mariadb_table, key_length=2000)
    with pytest.raises(cw.ConfigError, match="key_length"):
        SQLAlchemyStore(mariadb_url, table=mariadb_table, key_length=0)
    with SQLAlchemyStore(mariadb_url, table=mariadb_table, key_length=16) as store:
        store.save_many({"k" * 16: 1})
        with pytest.raises(cw.InvalidWriteError, match="at most 16"):
            store.save_many({"ok": 1, "k" * 17: 2})
        assert store.load_many(["k" * 16, "ok"]) == {"k" * 16: 1}


def test_a_300_character_key_is_an_invalid_write_on_mariadb(mariadb_url: str,
                                                            mariadb_table: str) -> None:
    # issue 10 item 3: write-back retried it forever
    with SQLAlchemyStore(mariadb_url, table=mariadb_table) as store:
        assert (store.max_key_chars, store.max_key_bytes) == (255, None)
        with pytest.raises(cw.InvalidWriteError, match="at most 255"):
            store.apply([Op("", "k" * 300, SET, dumps(1), 0, 1)])
        # Without the declared limit MariaDB's own refusal (1406, data too long) is
        # classified the same way.
        store.max_key_chars = None
        with pytest.raises(cw.InvalidWriteError, match="1406"):
            store.apply([Op("", "k" * 300, SET, dumps(1), 0, 1)])
        store.save_many({"é" * 255: 1})
        assert store.load("é" * 255) == 1


def test_max_key_chars_is_the_width_of_the_existing_table(mariadb_url: str,
                                                          mariadb_table: str) -> None:
    # issue 10 item 3: a table made with key_length=100 keeps 100-character keys
    SQLAlchemyStore(mariadb_url, table=mariadb_table, key_length=100).close()
    with SQLAlchemyStore(mariadb_url, table=mariadb_table) as store:
        assert store.max_key_chars == 100
        with pytest.raises(cw.InvalidWriteError, match="at most 100"):
            store.save_many({"k" * 101: 1})


def test_one_batch_holding_a_key_twice(mariadb_url: str, mariadb_table: str) -> None:
    with SQLAlchemyStore(mariadb_url, table=mariadb_table) as store:
        res = store.apply([
            Op("", "a", SET, dumps(1)), Op("", "a", DELETE), Op("", "a", SET, dumps(2)),
            Op("", "b", SET, dumps(1)), Op("", "b", DELETE),
            Op("", "c", ADD, dumps(0), 2), Op("", "c", ADD, dumps(0), 3),
            Op("", "d", SET, dumps(10)), Op("", "d", ADD, dumps(0), 1),
        ])
        assert [r.value for r in res if r.value is not None] == [2, 5, 11]
        assert store.load_many(["a", "b", "c", "d"]) == {"a": 2, "c": 5, "d": 11}
        assert store.fetch("", ["a"])["a"].version == res[2].version


def test_versions_continue_above_rows_when_the_meta_table_is_lost(
    mariadb_url: str, mariadb_table: str
) -> None:
    with SQLAlchemyStore(mariadb_url, table=mariadb_table) as store:
        top = store.apply([Op("", "a", SET, dumps(1))] * 1 + [Op("", "b", SET, dumps(1))])[-1]
        with store.engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE `{mariadb_table}_meta`"))
    with SQLAlchemyStore(mariadb_url, table=mariadb_table) as store:
        assert store.apply([Op("", "c", SET, dumps(1))])[0].version > top.version


# -- URLs, errors, engine ownership ------------------------------------------------------
@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        f"nosuchdb://root:{SECRET}@127.0.0.1/test",
        f"mysql+nosuchdriver://root:{SECRET}@127.0.0.1/test",
        f"mysql+mysqldb://root:{SECRET}@127.0.0.1/test",  # driver not installed
    ],
)
def test_a_bad_url_is_a_config_error(url: str) -> None:
    with pytest.raises(cw.ConfigError) as info:
        SQLAlchemyStore(url)
    assert SECRET not in str(info.value)


def test_a_bad_argument_is_a_config_error(sqlite_url: str) -> None:
    with pytest.raises(cw.ConfigError, match="Engine or a URL"):
        SQLAlchemyStore(42)  # type: ignore[arg-type]
    with pytest.raises(cw.ConfigError, match="too long"):
        SQLAlchemyStore(sqlite_url, table="t" * 60)
    with pytest.raises(cw.ConfigError, match="key_length"):
        SQLAlchemyStore(sqlite_url, key_length="255")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        f"mysql+pymysql://root:{SECRET}@127.0.0.1:1/test",
        f"postgresql+psycopg://postgres:{SECRET}@127.0.0.1:1/test",
    ],
)
def test_an_unreachable_server_is_a_store_error(url: str) -> None:
    with pytest.raises(cw.StoreError) as info:
        SQLAlchemyStore(url)
    message = str(info.value)
    assert SECRET not in message
    assert "127.0.0.1:1" in message  # says where it looked


def test_an_engine_passed_in_is_left_open(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    disposed: list[object] = []
    sa.event.listen(engine, "engine_disposed", disposed.append)
    store = SQLAlchemyStore(engine, table="items")
    store.save_many({"a": 1})
    store.close()
    store.close()  # twice is fine
    assert disposed == []
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM items")).scalar() == 1
    with pytest.raises(cw.ClosedError):
        store.load("a")
    with pytest.raises(cw.ClosedError):
        store.save_many({"a": 2})
    engine.dispose()


def test_an_engine_built_from_a_url_is_disposed(mariadb_url: str, mariadb_table: str) -> None:
    store = SQLAlchemyStore(mariadb_url, table=mariadb_table)
    disposed: list[object] = []
    sa.event.listen(store.engine, "engine_disposed", disposed.append)
    store.save_many({"a": 1})
    assert store.engine.pool.checkedin() >= 1
    store.close()
    assert len(disposed) == 1
    assert store.engine.pool.checkedin() == 0


def test_a_cache_leaves_the_store_open(sqlite_url: str) -> None:
    store = SQLAlchemyStore(sqlite_url)
    with cw.Cache(store=store) as cache:
        cache.set("a", 1)
    assert store.load("a") == 1
    store.close()


def test_missing_sqlalchemy_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)  # import sqlalchemy -> ImportError
    with pytest.raises(cw.ConfigError, match=r"pip install 'cacheway\[sqlalchemy\]'"):
        SQLAlchemyStore(sqlite_url)


def test_the_password_never_shows(sqlite_url: str) -> None:
    url = sa.make_url(f"mysql+pymysql://root:{SECRET}@127.0.0.1:1/test")
    with pytest.raises(cw.StoreError) as info:
        SQLAlchemyStore(url)  # type: ignore[arg-type]
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value)


# -- the portable path for dialects without an upsert -------------------------------------
def test_dialects_without_an_upsert_use_the_portable_path(
    monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    from cacheway.stores.sqlalchemy import kv

    monkeypatch.setattr(kv, "upsert", lambda *args: None)
    engine = sa.create_engine(sqlite_url)
    engine.dialect.update_returning = False
    make: Callable[[], SQLAlchemyStore] = lambda: SQLAlchemyStore(engine, table="plain")  # noqa: E731
    store, again = make(), make()  # the second finds the counter row already there
    store.save_many({"a": 1, "b": 2})
    store.save_many({"a": 10})
    store.delete_many(["b"])
    res = store.apply([Op("", "n", ADD, dumps(0), 4), Op("", "n", ADD, dumps(0), 1)])
    assert [r.value for r in res] == [4, 5]
    assert again.load_many(["a", "b", "n"]) == {"a": 10, "n": 5}
    versions = [r.version for r in res]
    assert versions == sorted(versions)
    assert versions[0] is not None
    assert versions[0] > 4
    store.apply([Op("", "a", SET, dumps(1))], journal=JournalMark("j", 3, [5]))
    store.apply([Op("", "a", SET, dumps(2))], journal=JournalMark("j", 2, [9]))
    assert store.applied_state("j") == (3, {("", "a"): 9})
    store.close()
    again.close()
    engine.dispose()
