"""SQLiteStore: its table, versions, identifier validation, concurrent creation, options."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
import traceback
from typing import Any

import pytest

import cacheway as cw


def columns(db_path: str, table: str) -> dict[str, int]:
    """Column name -> position in the primary key (0 when not part of it)."""
    conn = sqlite3.connect(db_path)
    try:
        rows = conn.execute(f'PRAGMA table_info("{table}")').fetchall()
    finally:
        conn.close()
    return {row[1]: row[5] for row in rows}


def row(db_path: str, key: str, namespace: str = "", table: str = "cacheway"):
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute(
            f'SELECT version, updated_at FROM "{table}" WHERE namespace = ? AND key = ?',
            (namespace, key),
        ).fetchone()
    finally:
        conn.close()


def test_creates_its_table_with_the_contract_columns(db_path: str) -> None:
    store = cw.SQLiteStore(db_path)
    store.close()
    cols = columns(db_path, "cacheway")
    assert {"namespace", "key", "value", "version", "updated_at"} <= set(cols)
    assert (cols["namespace"], cols["key"]) == (1, 2), "primary key is not (namespace, key)"


def test_custom_table_name(db_path: str) -> None:
    store = cw.SQLiteStore(db_path, table="my_items_1")
    store.save_many({"a": 1})
    assert store.load("a") == 1
    store.close()
    assert "version" in columns(db_path, "my_items_1")
    assert columns(db_path, "cacheway") == {}


def test_store_methods(db_path: str) -> None:
    store = cw.SQLiteStore(db_path)
    store.save_many([("a", 1), ("b", {"x": [1]})])
    store.save_many({"c": None})
    assert store.load("a") == 1
    assert store.load("b") == {"x": [1]}
    assert store.load("missing") is None
    assert store.load_many(["a", "b", "c", "missing"]) == {"a": 1, "b": {"x": [1]}, "c": None}
    store.delete_many(["a", "missing"])
    assert store.load_many(["a", "b"]) == {"b": {"x": [1]}}
    store.save_many({"a": "ns"}, namespace="views")
    assert store.load("a", namespace="views") == "ns"
    assert store.load_many(["a"]) == {}
    store.close()


def test_namespace_is_a_column(db_path: str, autoclose) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path), policy=cw.WriteThrough()))
    cache.namespace("views").set("k", 1)
    cache.set("k", 2)
    conn = sqlite3.connect(db_path)
    try:
        rows = sorted(conn.execute('SELECT namespace, key FROM "cacheway"').fetchall())
    finally:
        conn.close()
    assert len(rows) == 2
    assert rows[1] == ("views", "k")
    assert rows[0][1] == "k"
    assert rows[0][0] != "views"


def test_versions_increase_across_writes_and_survive_deletes(db_path: str) -> None:
    store = cw.SQLiteStore(db_path)
    store.save_many({"a": 1})
    v1 = row(db_path, "a")[0]
    store.save_many({"a": 2})
    v2 = row(db_path, "a")[0]
    assert v2 > v1
    store.save_many({"b": 1})
    vb = row(db_path, "b")[0]
    assert vb > v2, "versions come from one per-table source"
    store.delete_many(["a", "b"])  # the table is empty now
    assert row(db_path, "a") is None
    store.save_many({"a": 3})
    v3 = row(db_path, "a")[0]
    assert v3 > vb, "versions restarted after the rows were deleted"
    store.close()
    reopened = cw.SQLiteStore(db_path)
    reopened.delete_many(["a"])
    reopened.save_many({"a": 4})
    assert row(db_path, "a")[0] > v3, "versions restarted after reopening"
    reopened.close()


def test_versions_through_the_cache(db_path: str, autoclose) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path), policy=cw.WriteThrough()))
    seen = []
    for i in range(5):
        cache.set("k", i)
        seen.append(row(db_path, "k")[0])
        cache.delete("k")
    assert seen == sorted(seen)
    assert len(set(seen)) == 5


def test_updated_at_is_stamped(db_path: str) -> None:
    store = cw.SQLiteStore(db_path)
    store.save_many({"a": 1})
    updated_at = row(db_path, "a")[1]
    assert updated_at is not None
    assert abs(float(updated_at) - time.time()) < 86_400, "updated_at is not a unix time"
    store.close()


@pytest.mark.parametrize(
    "table", ["x;y", "a b", "1abc", 'q"uote', "", "t-1", "drop table cacheway;--"]
)
def test_table_names_are_validated(db_path: str, table: str) -> None:
    with pytest.raises(cw.ConfigError):
        cw.SQLiteStore(db_path, table=table)
    conn = sqlite3.connect(db_path)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master")]
    finally:
        conn.close()
    assert names == [] or table not in names


def test_bad_table_error_names_the_table(db_path: str) -> None:
    with pytest.raises(cw.ConfigError, match="x;y"):
        cw.SQLiteStore(db_path, table="x;y")


def _create_and_write(path: str, table: str, n: int, barrier, errors) -> None:
    try:
        barrier.wait(30)
        for _ in range(3):  # opening while another process closes (checkpoints) races too
            store = cw.SQLiteStore(path, table=table)
            store.save_many({f"p{n}": n})
            store.close()
    except BaseException:
        errors.put(traceback.format_exc())


def test_many_processes_create_the_same_table_at_once(tmp_path) -> None:
    ctx = multiprocessing.get_context("spawn")
    errors = ctx.Queue()
    n = 4
    # three fresh files (the race on creating the file and switching it to WAL) and a new
    # table in a file that already exists; all rounds run at the same time
    rounds = [(str(tmp_path / f"fresh{r}.db"), "shared") for r in range(3)]
    existing = str(tmp_path / "existing.db")
    cw.SQLiteStore(existing).close()
    rounds.append((existing, "shared_b"))
    procs = []
    barriers = [ctx.Barrier(n) for _ in rounds]  # kept alive until every child has started
    for (path, table), barrier in zip(rounds, barriers):
        procs += [ctx.Process(target=_create_and_write, args=(path, table, i, barrier, errors))
                  for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert not problems, f"{len(problems)} of {len(procs)} processes failed:\n" + problems[0]
    for path, table in rounds:
        store = cw.SQLiteStore(path, table=table)
        assert store.load_many([f"p{i}" for i in range(n)]) == {f"p{i}": i for i in range(n)}
        store.close()


def test_two_stores_in_one_process_create_the_same_table(db_path: str) -> None:
    one = cw.SQLiteStore(db_path)
    two = cw.SQLiteStore(db_path)
    one.save_many({"a": 1})
    assert two.load("a") == 1
    one.close()
    two.close()


@pytest.mark.parametrize("synchronous", ["FULL", "NORMAL", "normal"])
def test_synchronous_option_is_accepted(db_path: str, synchronous: str) -> None:
    store = cw.SQLiteStore(db_path, synchronous=synchronous)
    store.save_many({"a": 1})
    assert store.load("a") == 1
    store.close()


def test_synchronous_rejects_unknown_values(db_path: str) -> None:
    with pytest.raises(cw.ConfigError):
        cw.SQLiteStore(db_path, synchronous="SOMETIMES")


def test_default_journal_mode_is_wal(db_path: str) -> None:
    store = cw.SQLiteStore(db_path)
    store.save_many({"a": 1})
    conn = sqlite3.connect(db_path)
    try:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    store.close()
    assert mode.lower() == "wal"


def test_store_used_by_a_cache_and_directly(db_path: str, autoclose) -> None:
    store = cw.SQLiteStore(db_path)
    cache = autoclose(cw.Cache(store=store, policy=cw.WriteBack(max_delay=60)))
    cache.set("a", [1])
    cache.flush()
    assert store.load("a") == [1]
    store.save_many({"b": 2})
    assert cache.get("b") == 2


def test_a_key_twice_in_one_batch_keeps_its_order(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cacheway.stores.base import DELETE, SET, Op

    store = cw.SQLiteStore(str(tmp_path / "app.db"))
    store.apply([Op("", "a", SET, b"1"), Op("", "a", DELETE), Op("", "a", SET, b"2")])
    assert store.load("a") == 2
    store.apply([Op("", "a", SET, b"3"), Op("", "a", DELETE)])
    assert store.load("a") is None
    store.close()


def test_reader_connections_stay_bounded_with_a_thread_per_request(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import threading

    store = cw.SQLiteStore(str(tmp_path / "app.db"))
    store.save_many({"a": 1})
    errors: list[BaseException] = []

    def request() -> None:
        try:
            for _ in range(5):
                assert store.load("a") == 1
        except BaseException as exc:  # collected and re-raised by the test thread
            errors.append(exc)

    threads = [threading.Thread(target=request) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    open_files = len(store._readers)  # one SQLite connection each
    assert open_files <= 8, f"{open_files} reader connections for 100 short-lived threads"
    store.close()


@pytest.mark.parametrize("contended", [False, True])
def test_batch_writes_agree_with_and_without_multirow_statements(
    tmp_path, monkeypatch, contended: bool
) -> None:  # type: ignore[no-untyped-def]
    # While another thread keeps the interpreter busy, a late batch is written with
    # multi-row statements instead of executemany: rows, versions and results must not
    # differ. A flusher says the batch is late with apply(late=...).
    from cacheway.stores.base import DELETE, SET, Op
    from cacheway.stores.sqlite import kv as sqlite_mod

    multirow: list[int] = []
    monkeypatch.setattr(sqlite_mod, "_gil_contended",
                        lambda: multirow.append(1) is None and contended)
    kw: dict[str, Any] = {"late": lambda: True}  # as a flusher says of a late batch
    monkeypatch.setattr(sqlite_mod, "_CHUNK", 3)  # several statements per batch
    monkeypatch.setattr(sqlite_mod, "_STEP", 4)
    store = cw.SQLiteStore(str(tmp_path / "m.db"))
    try:
        ops = [Op("", f"k{i}", SET, b"%d" % i, 0, i) for i in range(10)]
        first = store.apply(ops, **kw)
        mixed = [Op("", "k1", DELETE), Op("", "k2", SET, b"20", 0, 20),
                 Op("", "k2", SET, b"21", 0, 21), Op("views", "k1", SET, b"1", 0, 1)]
        second = store.apply(mixed, **kw)
        assert multirow, "the store never asked whether the late batch could go faster"
        rows = store.fetch("", [f"k{i}" for i in range(10)])
        assert {k: r.payload for k, r in rows.items()} == {
            **{f"k{i}": b"%d" % i for i in range(10) if i not in (1, 2)}, "k2": b"21"}
        versions = [a.version for a in first + second]
        assert versions == sorted(set(versions))
        assert rows["k9"].version == first[9].version
        assert rows["k2"].version == second[2].version
    finally:
        store.close()


def test_the_flusher_writes_multirow_statements_while_a_thread_keeps_the_interpreter_busy(
    db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A writer that never blocks (max_dirty is never reached) gives the flusher the GIL
    # once per switch interval; with a statement per row the flusher wrote 2-5 batches in
    # three seconds, with multi-row statements some 30. What this checks is the mechanism,
    # not a rate (a rate depends on the machine's load): the flusher says its batch is
    # late, the store sees the interpreter contended and writes multi-row statements, and
    # every row arrives.
    from cacheway.stores.sqlite import kv as sqlite_mod

    contended: list[bool] = []
    real = sqlite_mod._gil_contended

    def spy() -> bool:
        seen = real()
        contended.append(seen)
        return seen

    monkeypatch.setattr(sqlite_mod, "_gil_contended", spy)
    cache = cw.Cache(store=cw.SQLiteStore(db_path),
                     policy=cw.WriteBack(max_delay=0.05, batch_size=500, max_dirty=10**8))
    try:
        deadline = time.monotonic() + 60.0
        i = 0
        while True not in contended and time.monotonic() < deadline:
            for _ in range(1000):
                cache.set(f"k{i}", {"n": i})
                i += 1
        assert True in contended, (
            f"no late batch saw the interpreter contended in 60 s ({i} writes, "
            f"{cache.stats().flushes} batches)")
        cache.flush(timeout=60)
    finally:
        cache.close()
    store = cw.SQLiteStore(db_path)
    try:
        assert store.load(f"k{i - 1}") == {"n": i - 1}
        assert len(store.load_many([f"k{n}" for n in range(i)])) == i
    finally:
        store.close()


def test_late_is_asked_only_of_late_batches(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # late= given and False: the store does not look at the interpreter at all.
    from cacheway.stores.base import SET, Op, store_capabilities
    from cacheway.stores.sqlite import kv as sqlite_mod

    asked: list[int] = []
    monkeypatch.setattr(sqlite_mod, "_gil_contended", lambda: bool(asked.append(1)))
    store = cw.SQLiteStore(str(tmp_path / "l.db"))
    try:
        assert store_capabilities(store).takes_late
        store.apply([Op("", f"k{i}", SET, b"1", 0, 1) for i in range(10)], late=lambda: False)
        assert asked == []
        assert store.load_many(["k0", "k9"]) == {"k0": 1, "k9": 1}
    finally:
        store.close()


def test_a_subclass_whose_apply_drops_late_is_called_without_it(tmp_path: Any) -> None:
    # A subclass written before late= existed inherits takes_late=True but not the
    # parameter: the flusher must not pass it (every flush failed with a TypeError).
    from cacheway.stores.base import store_capabilities

    class Old(cw.SQLiteStore):
        def apply(self, ops: Any, *, journal: Any = None) -> Any:
            return super().apply(ops, journal=journal)

    assert store_capabilities(cw.SQLiteStore(str(tmp_path / "a.db"))).takes_late
    store = Old(str(tmp_path / "b.db"))
    assert not store_capabilities(store).takes_late
    with cw.Cache(store=store, policy=cw.WriteBack(max_delay=0.01)) as cache:
        cache.set("k", 1)
        cache.flush(timeout=10)
        assert cache.stats().flush_errors == 0
    assert cw.SQLiteStore(str(tmp_path / "b.db")).load("k") == 1
