"""The generic store suite: every store passes the same tests.

Each entry of ``STORES`` makes one kind of store; a new store joins the suite by adding
one entry (a function ``(harness, table) -> store``). Stores on a server ask for its
fixture (``mariadb_url``, ``postgres_dsn``) through the harness, so a server that is down
skips (or, with CACHEWAY_REQUIRE_SERVICES set, fails) only its own entries. Every test
gets its own table, dropped at teardown.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa

import cacheway as cw
from cacheway.stores.base import ADD, DELETE, SET, JournalMark, Op, StoreBase
from cacheway.stores.sqlalchemy import SQLAlchemyStore
from conftest import POLICIES
from services import unique


class Harness:
    """Makes stores of one kind for one test and cleans up after it."""

    def __init__(self, kind: str, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.request = request
        self.table = unique("cw")
        self.data: dict[str, Any] = {}  # the CallbackStore's dict
        self._stores: list[Any] = []
        self._drops: list[tuple[str, str]] = []  # (SQLAlchemy URL, table-name prefix)

    def fixture(self, name: str) -> Any:
        return self.request.getfixturevalue(name)

    def drop_afterwards(self, sa_url: str, prefix: str) -> None:
        if (sa_url, prefix) not in self._drops:
            self._drops.append((sa_url, prefix))

    def store(self, table: str | None = None) -> Any:
        """A store on this test's table (or ``table``); closed at teardown."""
        store = STORES[self.kind](self, self.table if table is None else table)
        self._stores.append(store)
        return store

    @property
    def has_tables(self) -> bool:
        return self.kind != "callback"

    def cleanup(self) -> None:
        try:
            for store in self._stores:
                store.close()
        finally:
            for url, prefix in self._drops:
                drop_tables(url, prefix)


_ENGINES: dict[str, sa.Engine] = {}  # for dropping tables; one per server and test module


@pytest.fixture(scope="module", autouse=True)
def _dispose_engines() -> Iterator[None]:
    yield
    while _ENGINES:
        _ENGINES.popitem()[1].dispose()


def drop_tables(sa_url: str, prefix: str) -> None:
    """Drop every table and sequence whose name starts with ``prefix``."""
    engine = _ENGINES.get(sa_url)
    if engine is None:
        engine = _ENGINES[sa_url] = sa.create_engine(sa_url)
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
            conn.execute(sa.text(f"DROP SEQUENCE IF EXISTS {', '.join(map(quote, sequences))}"))


def pg_sa_url(dsn: str) -> str:
    return "postgresql+psycopg://" + dsn.split("://", 1)[1]


# -- the stores --------------------------------------------------------------------------
def _sqlite(h: Harness, table: str) -> Any:
    return cw.SQLiteStore(str(h.fixture("tmp_path") / "suite.db"), table=table)


def _sqlalchemy_mariadb(h: Harness, table: str) -> Any:
    url = h.fixture("mariadb_url")
    h.drop_afterwards(url, h.table)
    return SQLAlchemyStore(url, table=table)


def _sqlalchemy_postgresql(h: Harness, table: str) -> Any:
    url = pg_sa_url(h.fixture("postgres_dsn"))
    h.drop_afterwards(url, h.table)
    return SQLAlchemyStore(url, table=table)


def _sqlalchemy_sqlite(h: Harness, table: str) -> Any:
    return SQLAlchemyStore("sqlite:///" + str(h.fixture("tmp_path") / "sa.db"), table=table)


def _postgres(h: Harness, table: str) -> Any:
    from cacheway.stores.postgres import PostgresStore

    dsn = h.fixture("postgres_dsn")
    h.drop_afterwards(pg_sa_url(dsn), h.table)
    return PostgresStore(dsn, table=table)


def _callback(h: Harness, table: str) -> Any:
    data, lock = h.data, threading.Lock()

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


STORES: dict[str, Callable[[Harness, str], Any]] = {
    "sqlite": _sqlite,
    "sqlalchemy-mariadb": _sqlalchemy_mariadb,
    "sqlalchemy-postgresql": _sqlalchemy_postgresql,
    "sqlalchemy-sqlite": _sqlalchemy_sqlite,
    "postgres": _postgres,
    "callback": _callback,
}


@pytest.fixture(params=list(STORES))
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


def versioned(store: Any) -> bool:
    return bool(store.versioned)


def records_marks(store: Any) -> bool:
    return type(store).applied_state is not StoreBase.applied_state


# -- the Python-value methods ------------------------------------------------------------
NESTED = {"list": [1, 2.5, "three", None, True], "obj": {"deep": {"deeper": ["é", "🙂"]}}}


def test_round_trip(store: Any) -> None:
    items = {"a": 1, "b": "text", "ключ": NESTED, "🙂 key": [NESTED], "f": 1.25, "t": True}
    store.save_many(items)
    for key, value in items.items():
        assert store.load(key) == value
    assert store.load_many(list(items)) == items


def test_save_many_takes_pairs_and_overwrites(store: Any) -> None:
    store.save_many([("a", 1), ("b", 2)])
    store.save_many([("a", 10)])
    assert store.load_many(["a", "b"]) == {"a": 10, "b": 2}


def test_keys_are_exact(store: Any) -> None:
    # Case and trailing spaces make different keys (MySQL's default collations merge them).
    store.save_many({"a": 1, "A": 2, "a ": 3, "é": 4, "e": 5})
    assert store.load_many(["a", "A", "a ", "é", "e"]) == {
        "a": 1, "A": 2, "a ": 3, "é": 4, "e": 5
    }


def test_none_value_is_not_a_missing_key(store: Any) -> None:
    store.save_many({"n": None})
    assert store.load("n", default="absent") is None
    assert store.load("missing", default="absent") == "absent"
    assert store.load("missing") is None


def test_load_many_returns_found_keys_only(store: Any) -> None:
    store.save_many({"a": 1, "n": None})
    assert store.load_many(["a", "n", "x", "y"]) == {"a": 1, "n": None}
    assert store.load_many([]) == {}
    assert store.load_many(["x"]) == {}


def test_load_many_of_many_keys(store: Any) -> None:
    items = {f"k{i}": i for i in range(1200)}  # past any chunk size of IN lists
    store.save_many(items)
    wanted = [*items, "missing"]
    assert store.load_many(wanted) == items


def test_delete_many(store: Any) -> None:
    store.save_many({"a": 1, "b": 2, "c": 3})
    store.delete_many(["a", "c", "never-there"])
    assert store.load_many(["a", "b", "c"]) == {"b": 2}
    store.delete_many([])
    assert store.load("b") == 2


def test_namespaces_are_isolated(harness: Harness, store: Any) -> None:
    store.save_many({"k": "default"})
    store.save_many({"k": "views", "only": 1}, namespace="views")
    assert store.load("k") == "default"
    assert store.load("k", namespace="views") == "views"
    assert store.load("only") is None
    assert store.load_many(["k", "only"], namespace="views") == {"k": "views", "only": 1}
    store.delete_many(["k"], namespace="views")
    assert store.load("k") == "default"
    assert store.load("k", namespace="views") is None
    if harness.kind == "callback":
        assert harness.data == {"k": "default", "views:only": 1}


# -- versions, counters, journal marks (the store protocol) ------------------------------
def test_versions_increase_and_survive_deletes(harness: Harness, store: Any) -> None:
    if not versioned(store):
        assert [a.version for a in store.apply([Op("", "a", SET, dumps(1), 0, 1)])] == [None]
        return
    seen: list[int] = []
    for ops in (
        [Op("", "a", SET, dumps(1), 0, 1), Op("", "b", SET, dumps(2), 0, 2)],
        [Op("", "a", DELETE)],
        [Op("", "a", SET, dumps(3), 0, 3)],
        [Op("views", "a", SET, dumps(4), 0, 4), Op("", "b", DELETE)],
        [Op("", "c", ADD, dumps(5), 5, 5)],
    ):
        seen += [r.version for r in store.apply(ops)]
    assert all(isinstance(v, int) for v in seen)
    assert seen == sorted(set(seen)), seen  # strictly increasing
    assert store.fetch("", ["a"])["a"].version == seen[3]
    assert store.fetch("", ["b"]) == {}  # deleted by the fourth batch
    # A second store on the same table (another process) keeps counting upward.
    other = harness.store()
    later = other.apply([Op("", "a", SET, dumps(6), 0, 6)])[0].version
    assert later > seen[-1]


def test_a_batch_stamps_each_row_with_its_own_version(store: Any) -> None:
    # distinct keys (a flusher's batch), then a key twice in one batch: order holds
    for ops in (
        [Op("", k, SET, dumps(i), 0, i) for i, k in enumerate("pqrs")],
        [Op("", "p", SET, dumps(10), 0, 10), Op("", "q", DELETE),
         Op("", "p", SET, dumps(11), 0, 11)],
    ):
        results = store.apply(ops)
        assert len(results) == len(ops)
    assert store.load_many(["p", "q", "r", "s"]) == {"p": 11, "r": 2, "s": 3}
    if versioned(store):
        rows = store.fetch("", ["p", "r", "s"])
        assert rows["r"].version < rows["s"].version < rows["p"].version
        assert rows["p"].version == results[2].version


def test_add_ops_sum(store: Any) -> None:
    first = store.apply([Op("", "n", ADD, dumps(5), 5, 5)])
    assert first[0].value == 5
    second = store.apply([Op("", "n", ADD, dumps(8), 3, 8), Op("", "m", ADD, dumps(-2), -2, -2)])
    assert [r.value for r in second] == [8, -2]
    assert store.load_many(["n", "m"]) == {"n": 8, "m": -2}
    store.save_many({"n": 100})
    assert store.apply([Op("", "n", ADD, dumps(101), 1, 101)])[0].value == 101


def test_add_to_a_non_integer_is_a_store_error(store: Any) -> None:
    store.save_many({"s": "text", "f": 1.5, "b": True, "x": 1})
    for key in ("s", "f", "b") if versioned(store) else ("s",):
        with pytest.raises(cw.StoreError):
            store.apply([Op("", key, ADD, dumps(1), 1, 1)])
    if versioned(store):
        # The batch is one transaction: nothing of it lands.
        with pytest.raises(cw.StoreError):
            store.apply([Op("", "x", SET, dumps(2), 0, 2), Op("", "s", ADD, dumps(1), 1, 1)])
        assert store.load("x") == 1
    assert store.load("s") == "text"


def test_concurrent_adds_from_two_stores_sum(harness: Harness, store: Any) -> None:
    if not versioned(store):
        pytest.skip("a CallbackStore's add_many is as atomic as the user's callback")
    stores = [store, harness.store()]
    errors: list[BaseException] = []

    def work(s: Any) -> None:
        try:
            for _ in range(15):
                s.apply([Op("", "hits", ADD, dumps(0), 1, 0)])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in stores for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.load("hits") == 60


def test_journal_marks_round_trip(store: Any) -> None:
    jid = unique("journal")
    ops = [Op("", "a", SET, dumps(1), 0, 1), Op("views", "b", SET, dumps(2), 0, 2)]
    store.apply(ops, journal=JournalMark(jid, 3, [4, 5]))
    if not records_marks(store):
        assert store.applied_state(jid) == (0, {})
        return
    assert store.applied_state(jid) == (3, {("", "a"): 4, ("views", "b"): 5})
    store.apply([Op("", "a", SET, dumps(3), 0, 3)], journal=JournalMark(jid, 4, [7]))
    assert store.applied_state(jid) == (4, {("", "a"): 7, ("views", "b"): 5})
    # A lower watermark (an older flusher) never moves it back.
    store.apply([Op("", "c", DELETE)], journal=JournalMark(jid, 2, [6]))
    low, seqs = store.applied_state(jid)
    assert low == 4
    assert seqs[("", "c")] == 6
    # A mark alone (no ops) is recorded too; seqs at or under it are no longer reported.
    store.apply([], journal=JournalMark(jid, 6, []))
    assert store.applied_state(jid) == (6, {("", "a"): 7})
    assert store.applied_state(unique("journal")) == (0, {})
    assert store.load_many(["a", "c"]) == {"a": 3}


def test_a_bad_table_name_is_a_config_error(harness: Harness) -> None:
    if not harness.has_tables:
        pytest.skip("a CallbackStore has no table")
    for bad in ("x;y", "1abc", "a b", 'a"b', ""):
        with pytest.raises(cw.ConfigError):
            harness.store(table=bad)


def test_a_table_name_with_a_trailing_newline_is_refused(harness: Harness) -> None:
    # issue 10 item 15: "$" of re.match also matches before a final "\n"
    if not harness.has_tables:
        pytest.skip("a CallbackStore has no table")
    for bad in (harness.table + "\n", "\n", harness.table + "\r\n"):
        with pytest.raises(cw.ConfigError, match="not a valid identifier"):
            harness.store(table=bad)


def test_validate_identifier_takes_the_whole_string() -> None:
    # issue 10 item 15
    from cacheway.stores.base import validate_identifier

    assert validate_identifier("Blog_Users") == "Blog_Users"
    for bad in ("users\n", "users\n\n", "\nusers", "us\ners", "x" * 64):
        with pytest.raises(cw.ConfigError, match="not a valid identifier"):
            validate_identifier(bad)


def test_a_mixed_case_table_name_works_end_to_end(harness: Harness) -> None:
    # issue 10 item 5
    if not harness.has_tables:
        pytest.skip("a CallbackStore has no table")
    table = harness.table + "_BlogUsers"  # starts with the prefix the teardown drops
    store = harness.store(table=table)
    first = store.apply([Op("", "a", SET, dumps(1), 0, 1), Op("", "n", ADD, dumps(2), 2, 2)])
    assert [r.value for r in first] == [None, 2]
    assert store.load_many(["a", "n"]) == {"a": 1, "n": 2}
    jid = unique("journal")
    later = store.apply([Op("", "a", SET, dumps(3), 0, 3), Op("", "n", DELETE)],
                        journal=JournalMark(jid, 1, [2, 3]))
    assert store.applied_state(jid) == (1, {("", "a"): 2, ("", "n"): 3})
    assert store.fetch("", ["a"])["a"].version == later[0].version > first[1].version
    # Reopening finds the same table (and its version counter) instead of a new one.
    again = harness.store(table=table)
    assert again.load_many(["a", "n"]) == {"a": 3}
    assert again.apply([Op("", "b", SET, dumps(4), 0, 4)])[0].version > later[1].version


# The longest keys each store declares (max_key_chars, max_key_bytes).
KEY_LIMITS: dict[str, tuple[int | None, int | None]] = {
    "sqlite": (None, None),
    "sqlalchemy-mariadb": (255, None),       # VARCHAR(255) utf8mb4
    "sqlalchemy-postgresql": (255, 2000),    # VARCHAR(255), and the btree entry limit
    "sqlalchemy-sqlite": (255, None),        # SQLite does not enforce it; the store does
    "postgres": (None, 2000),                # text: the btree entry limit only
    "callback": (None, None),
}


def test_keys_the_store_cannot_keep_are_invalid_writes(harness: Harness, store: Any) -> None:
    # issue 10 item 3: such keys failed at every retry of a write-back flusher
    chars, size = KEY_LIMITS[harness.kind]
    assert (store.max_key_chars, store.max_key_bytes) == (chars, size)
    too_long = []
    if chars is not None:
        too_long.append("k" * (chars + 1))
        store.save_many({"é" * chars: "longest"})
        assert store.load("é" * chars) == "longest"
    if size is not None and (chars is None or chars * 4 > size):
        too_long.append("é" * (size // 2) + "k")
        store.save_many({"é" * (size // 2): "longest"})
        assert store.load("é" * (size // 2)) == "longest"
    if harness.kind != "callback":  # a callback store's dict takes any str
        too_long.append("lone \ud800 surrogate")
        assert store.fetch("", ["lone \ud800 surrogate", "ok"]) == {}, "names no row"
    for key in too_long:
        with pytest.raises(cw.InvalidWriteError):
            store.apply([Op("", "ok", SET, dumps(1), 0, 1), Op("", key, SET, dumps(2), 0, 2)])
    assert store.load("ok") is None, "a refused batch wrote nothing"


# -- a whole cache on the store ----------------------------------------------------------
@pytest.mark.parametrize("policy", list(POLICIES))
def test_cache_on_the_store(
    store: Any, policy: str, autoclose: Callable[[Any], Any]
) -> None:
    cache = autoclose(cw.Cache(store=store, policy=POLICIES[policy]()))
    cache.set("a", {"x": [1, 2]})
    cache.set_many({"b": "two", "c": None})
    assert cache.get("a") == {"x": [1, 2]}  # read your writes
    assert cache.get_many(["a", "b", "c", "missing"]) == {"a": {"x": [1, 2]}, "b": "two", "c": None}
    for _ in range(3):
        cache.incr("n")
    assert cache.incr("n", 5) == 8
    cache.set("gone", 1)
    cache.delete("gone")
    assert cache.get("gone") is None
    views = cache.namespace("views")
    views.set("a", "in views")
    assert views.get("a") == "in views"
    assert cache.get("a") == {"x": [1, 2]}
    cache.flush(timeout=10)
    assert cache.pending() == 0
    assert store.load_many(["a", "b", "c", "n", "gone"]) == {
        "a": {"x": [1, 2]}, "b": "two", "c": None, "n": 8
    }
    assert store.load("a", namespace="views") == "in views"
    assert cache.incr("n", -10) == -2
    cache.flush(timeout=10)
    assert store.load("n") == -2


# -- stores and backends from URLs (cw.open) ----------------------------------------------
@pytest.mark.parametrize("url", [
    "postgresql://[::1/test",                      # an unclosed IPv6 bracket
    "postgresql://postgres:s3cret@[::1/test",
    "postgresql://postgres@127.0.0.1/test\x00",    # libpq would cut the DSN at the NUL
    "mysql+pymysql://root:s3cret@127.0.0.1:xx/test",  # a port that is not a number
    "mysql+pymysql://root@[::1/test",
])
def test_a_malformed_store_url_is_a_config_error(url: str) -> None:
    # issue 10 item 15: these raised a bare ValueError (or opened a default database)
    with pytest.raises(cw.ConfigError) as info:
        cw.open(store=url)
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:xx/0",
    "redis://[::1/0",
    "redis+l1://127.0.0.1:6379/0?l1_ttl=soon",
])
def test_a_malformed_backend_url_is_a_config_error(url: str, tmp_path: Any) -> None:
    # issue 10 item 15
    with pytest.raises(cw.ConfigError):
        cw.open(store=f"sqlite:///{tmp_path / 'x.db'}", backend=url)
