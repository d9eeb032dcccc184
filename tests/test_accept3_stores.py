"""Acceptance tests of the stores, the write-back journal and fork, written as a new user
would, from DESIGN.md ("Stores", "Semantics", "Guarantees" 2, 3, 6, 8, "Fork") and docs/
(reference/stores, operations/tables, operations/journal, guides/workers, guides/counters).
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw
from accept3c_support import (
    JOURNAL_WRITER,
    SQL_KINDS,
    build_store,
    count_up,
    create_and_save,
    drop_tables,
    expected_after,
    mp_child,
    store_url,
)
from accept_support import child_env
from services import MARIADB_URL, POSTGRES_DSN, REDIS_URL, require, unique

pytestmark = pytest.mark.services


def _require(kind: str) -> None:
    if kind == "postgres":
        require("postgresql")
    elif kind == "mariadb":
        require("mariadb")


@pytest.fixture
def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """(kind, table, sqlite path) of a fresh table; dropped afterwards."""
    kind = request.param
    _require(kind)
    table = unique("cw3c")
    yield kind, table, str(tmp_path / "store.db")
    drop_tables(kind, table)


def wait_until(predicate: Any, timeout: float = 20.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class ListStore:
    """A dict behind a cw.CallbackStore that records every callback call; it can fail."""

    def __init__(self, data: dict[str, Any] | None = None, *, add_many: bool = False) -> None:
        self.data: dict[str, Any] = dict(data or {})
        self.saves: list[Any] = []
        self.adds: list[Any] = []
        self.deletes: list[Any] = []
        self.attempts: list[float] = []
        self.failing = False
        self.store = cw.CallbackStore(
            load_many=self._load_many, save_many=self._save_many,
            delete_many=self._delete_many,
            add_many=self._add_many if add_many else None)

    def _check(self) -> None:
        self.attempts.append(time.monotonic())
        if self.failing:
            raise ConnectionError("database is down")

    def _load_many(self, keys: list[str]) -> dict[str, Any]:
        return {k: self.data[k] for k in keys if k in self.data}

    def _save_many(self, items: list[tuple[str, Any]]) -> None:
        self._check()
        self.saves.append(items)
        for k, v in items:
            self.data[k] = v

    def _delete_many(self, keys: list[str]) -> None:
        self._check()
        self.deletes.append(list(keys))
        for k in keys:
            self.data.pop(k, None)

    def _add_many(self, items: list[tuple[str, int]]) -> dict[str, Any]:
        self._check()
        self.adds.append(items)
        for k, d in items:
            self.data[k] = self.data.get(k, 0) + d
        return {k: self.data[k] for k, _ in items}


def sa_engine(kind: str, path: str) -> Any:
    import sqlalchemy as sa

    if kind == "postgres":
        return sa.create_engine(POSTGRES_DSN.replace("postgresql://", "postgresql+psycopg://"))
    if kind == "mariadb":
        return sa.create_engine(MARIADB_URL)
    return sa.create_engine(f"sqlite:///{path}")


def raw_versions(kind: str, table: str, path: str) -> dict[str, Any]:
    """{key: version} of the default namespace, read behind the store with SQL."""
    import sqlalchemy as sa

    engine = sa_engine(kind, path)
    try:
        with engine.connect() as conn:
            q = '"' if kind != "mariadb" else "`"
            rows = conn.execute(sa.text(
                f"SELECT {q}key{q}, version FROM {q}{table}{q} WHERE namespace = ''")).all()
        return {(k.decode() if isinstance(k, bytes) else k): v for k, v in rows}
    finally:
        engine.dispose()


def column_names(kind: str, table: str, path: str) -> set[str]:
    import sqlalchemy as sa

    engine = sa_engine(kind, path)
    try:
        return {c["name"] for c in sa.inspect(engine).get_columns(table)}
    finally:
        engine.dispose()


# -- the Store API on every built-in store -------------------------------------------------

@pytest.mark.parametrize("sql_store", SQL_KINDS, indirect=True)
def test_every_sql_store_offers_the_store_api_and_creates_its_table(
        sql_store: tuple[str, str, str]) -> None:
    kind, table, path = sql_store
    store = build_store(kind, table, path)
    try:
        assert {"namespace", "key", "value", "version", "updated_at"} <= column_names(
            kind, table, path)
        store.save_many({"a": 1, "b": [1, "two", None], "c": {"x": 1.5}})
        store.save_many([("d", "dee"), ("a", 2)])
        assert store.load("a") == 2
        assert store.load("b") == [1, "two", None]
        assert store.load("nope") is None
        assert store.load("nope", "dflt") == "dflt"
        assert store.load_many(["a", "c", "nope", "d"]) == {"a": 2, "c": {"x": 1.5}, "d": "dee"}
        assert store.load_many([]) == {}
        store.delete_many(["a", "nope"])
        assert store.load_many(["a", "b"]) == {"b": [1, "two", None]}
        # namespaces are a column: the same key in two namespaces are two rows
        store.save_many({"b": "in views"}, namespace="views")
        assert store.load("b", namespace="views") == "in views"
        assert store.load("b") == [1, "two", None]
        store.delete_many(["b"], namespace="views")
        assert store.load_many(["b"], namespace="views") == {}
        assert store.load("b") == [1, "two", None]
        # a cache reads what the store saved
        with cw.Cache(store=store) as cache:
            assert cache.get("d") == "dee"
            assert cache.get_many(["a", "c"]) == {"c": {"x": 1.5}}
    finally:
        store.close()


@pytest.mark.parametrize("sql_store", SQL_KINDS, indirect=True)
def test_versions_grow_per_table_and_survive_deletes(sql_store: tuple[str, str, str]) -> None:
    kind, table, path = sql_store
    store = build_store(kind, table, path)
    try:
        store.save_many({"a": 1})
        v1 = raw_versions(kind, table, path)["a"]
        store.save_many({"b": 1})
        vb = raw_versions(kind, table, path)["b"]
        store.delete_many(["a"])
        assert store.load("a") is None
        store.save_many({"a": 2})
        v2 = raw_versions(kind, table, path)["a"]
        assert v1 is not None
        assert vb is not None
        assert v2 is not None
        assert v1 < vb < v2, (v1, vb, v2)
        # a second store object on the same table continues the same source
        other = build_store(kind, table, path)
        try:
            other.save_many({"c": 1})
            assert raw_versions(kind, table, path)["c"] > v2
        finally:
            other.close()
    finally:
        store.close()


def test_callback_store_offers_the_store_api() -> None:
    ls = ListStore({"a": 1, "views:a": "v"})
    store = ls.store
    assert store.load("a") == 1
    assert store.load("missing", 7) == 7
    assert store.load_many(["a", "missing"]) == {"a": 1}
    store.save_many({"b": 2})
    store.save_many([("c", 3)])
    assert store.load_many(["b", "c"]) == {"b": 2, "c": 3}
    assert store.load("a", namespace="views") == "v"
    store.delete_many(["a"])
    assert store.load_many(["a", "b"]) == {"b": 2}
    assert all(isinstance(call, list) for call in ls.saves)
    assert all(isinstance(item, tuple) and len(item) == 2 for call in ls.saves for item in call)


# -- validated names -------------------------------------------------------------------------

BAD_NAMES = ['x; DROP TABLE y', 'bad"name', "has space", "a`b"]


@pytest.mark.parametrize("bad", BAD_NAMES)
@pytest.mark.parametrize("kind", SQL_KINDS)
def test_bad_table_names_are_refused_naming_them(kind: str, bad: str, tmp_path: Path) -> None:
    _require(kind)
    with pytest.raises(cw.ConfigError) as info:
        build_store(kind, bad, str(tmp_path / "x.db"))
    assert bad in str(info.value), str(info.value)


@pytest.mark.parametrize("kind", SQL_KINDS)
def test_bad_column_names_in_row_mode_are_refused_naming_them(kind: str, tmp_path: Path) -> None:
    _require(kind)
    path = str(tmp_path / "x.db")
    cls: Any
    args: tuple[Any, ...]
    if kind == "sqlite":
        cls, args = cw.SQLiteStore, (path,)
    elif kind == "postgres":
        cls, args = cw.PostgresStore, (POSTGRES_DSN,)
    elif kind == "mariadb":
        cls, args = cw.SQLAlchemyStore, (MARIADB_URL,)
    else:
        cls, args = cw.SQLAlchemyStore, (f"sqlite:///{path}",)
    table = unique("rows")
    for kw, bad in [({"key_column": "id; --", "columns": ["name"]}, "id; --"),
                    ({"key_column": "id", "columns": ["name", "bad col"]}, "bad col"),
                    ({"key_column": "id", "columns": ["name"], "version_column": 'v"x'}, 'v"x')]:
        with pytest.raises(cw.ConfigError) as info:
            cls(*args, table=table, **kw)
        assert bad in str(info.value), (kw, str(info.value))


# -- many processes -----------------------------------------------------------------------

@pytest.mark.parametrize("sql_store", SQL_KINDS, indirect=True)
def test_many_processes_create_the_same_table_at_once(sql_store: tuple[str, str, str]) -> None:
    kind, table, path = sql_store
    ctx = multiprocessing.get_context("spawn")
    n = 4
    barrier = ctx.Barrier(n)
    procs = [ctx.Process(target=create_and_save, args=(kind, table, path, i, barrier))
             for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * n
    store = build_store(kind, table, path)
    try:
        assert store.load_many([f"w{i}" for i in range(n)]) == {
            f"w{i}": {"worker": i} for i in range(n)}
    finally:
        store.close()


@pytest.mark.parametrize("sql_store", ["sqlite", "postgres"], indirect=True)
def test_many_processes_open_a_table_made_before_expires_at_existed(
        sql_store: tuple[str, str, str]) -> None:
    from accept3c_support import create_old_table

    kind, table, path = sql_store
    create_old_table(kind, table, path)
    ctx = multiprocessing.get_context("spawn")
    n = 4
    barrier = ctx.Barrier(n)
    procs = [ctx.Process(target=create_and_save, args=(kind, table, path, i, barrier))
             for i in range(n)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * n
    assert "expires_at" in column_names(kind, table, path)
    store = build_store(kind, table, path)
    try:
        assert store.load("old") == "kept"
        assert len(store.load_many([f"w{i}" for i in range(n)])) == n
        with cw.Cache(store=store) as cache:
            sessions = cache.namespace("sessions", expire=600)
            sessions.set("s", {"u": 1})
            assert cache.get("old") == "kept"
        assert store.load("s", namespace="sessions") == {"u": 1}
    finally:
        store.close()


# (PostgreSQL and MariaDB: see the shared-Redis variant below; SQLAlchemy on SQLite from a
# URL: see test_sqlalchemy_sqlite_urls_open_a_sqlalchemy_store)
@pytest.mark.parametrize("sql_store", ["sqlite"], indirect=True)
def test_counters_from_three_write_back_processes_sum_in_the_store(
        sql_store: tuple[str, str, str]) -> None:
    kind, table, path = sql_store
    url = store_url(kind, table, path)
    seed = build_store(kind, table, path)
    seed.save_many({"hits": 1000})
    seed.close()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(3)
    procs = [ctx.Process(target=count_up, args=(url, 150, barrier)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    store = build_store(kind, table, path)
    try:
        assert store.load("hits") == 1000 + 3 * 150
    finally:
        store.close()


# -- CallbackStore semantics through a write-back cache -------------------------------------

def test_callback_counters_reach_save_many_as_absolute_values_in_accepted_order() -> None:
    ls = ListStore({"n": 100, "views:n": 7})
    with cw.Cache(store=ls.store, policy=cw.WriteBack(max_delay=3600)) as cache:
        views = cache.namespace("views")
        cache.incr("n")
        cache.incr("n", 2)
        cache.set("a", 1)
        views.incr("n", 5)
        cache.set("b", 2)
        cache.set("a", 3)
        cache.incr("n", 4)
        assert ls.saves == []
        cache.flush()
        items = [item for call in ls.saves for item in call]
        # each key once per call, in the order of its last accepted write
        for call in ls.saves:
            keys = [k for k, _ in call]
            assert len(keys) == len(set(keys)), call
        # (namespaces may flush in batches of their own: order is checked within one)
        assert [k for k, _ in items if ":" not in k] == ["b", "a", "n"], items
        assert dict(items) == {"views:n": 12, "b": 2, "a": 3, "n": 107}
        assert ls.adds == []
        assert cache.get("n") == 107
        assert views.get("n") == 12


def test_callback_counters_reach_add_many_as_deltas() -> None:
    ls = ListStore({"n": 100}, add_many=True)
    with cw.Cache(store=ls.store, policy=cw.WriteBack(max_delay=3600)) as cache:
        views = cache.namespace("views")
        for _ in range(3):
            cache.incr("n", 2)
        views.incr("n", -4)
        cache.set("x", "plain")
        cache.flush()
        adds = dict(item for call in ls.adds for item in call)
        assert adds == {"n": 6, "views:n": -4}, ls.adds
        saved = [k for call in ls.saves for k, _ in call]
        assert saved == ["x"], ls.saves
        assert ls.data["n"] == 106
        assert ls.data["views:n"] == -4


# -- a failing store (guarantee 6) ----------------------------------------------------------

def test_a_failing_store_retries_with_backoff_keeps_entries_and_reports_errors(
        caplog: pytest.LogCaptureFixture) -> None:
    ls = ListStore({"old": "x"})
    ls.failing = True
    retry = cw.Retry(attempts=None, base_delay=0.05, max_delay=0.4, jitter=False)
    caplog.set_level(logging.WARNING)
    cache = cw.Cache(store=ls.store, policy=cw.WriteBack(max_delay=0.01, retry=retry))
    try:
        cache.set("a", 1)
        cache.set("b", [2])
        cache.delete("old")
        assert wait_until(lambda: bool(ls.attempts))
        # let the retries run for a while (2.5 s: attempts 1..6 of the backoff at least)
        assert not wait_until(lambda: not ls.failing, timeout=2.5)
        # entries stay readable while the store is down
        assert cache.get("a") == 1
        assert cache.get("b") == [2]
        assert cache.get("old") is None
        assert cache.pending() == 3
        st = cache.stats()
        assert st.flush_errors >= 1, st
        assert st.retries >= 1, st
        assert st.dirty == 3, st
        # backoff: an attempt (a burst of callback calls: a batch may be split) waits the
        # policy's delay after the one before, growing to max_delay (0.4 s, no jitter)
        starts = [ls.attempts[0]] + [b for a, b in itertools.pairwise(ls.attempts)
                                     if b - a > 0.03]
        pauses = [b - a for a, b in itertools.pairwise(starts)]
        assert len(pauses) >= 3, pauses
        assert all(p >= 0.9 * retry.max_delay for p in pauses[-2:]), pauses
        assert len(pauses) <= 2.5 / retry.base_delay, pauses
        with pytest.raises(cw.StoreError) as info:
            cache.flush(timeout=0.3)
        assert "3" in str(info.value), str(info.value)
        assert any(r.levelno >= logging.WARNING and r.name.startswith("cacheway")
                   for r in caplog.records), [r.getMessage() for r in caplog.records]
        ls.failing = False
        cache.flush(timeout=30)
        assert ls.data == {"a": 1, "b": [2]}
        assert cache.pending() == 0
        assert cache.stats().dirty == 0
    finally:
        ls.failing = False
        cache.close()


def test_dead_lettered_entries_stay_readable_until_the_callback_returns() -> None:
    ls = ListStore()
    ls.failing = True
    entered = threading.Event()
    release = threading.Event()
    seen: list[tuple[str, Any, BaseException]] = []

    def on_dead_letter(key: str, value: Any, exc: BaseException) -> None:
        seen.append((key, value, exc))
        entered.set()
        release.wait(20)

    policy = cw.WriteBack(max_delay=0.01, on_dead_letter=on_dead_letter,
                          retry=cw.Retry(attempts=2, base_delay=0.01, jitter=False))
    cache = cw.Cache(store=ls.store, policy=policy)
    try:
        cache.set("doomed", {"v": 1})
        assert entered.wait(20)
        assert cache.get("doomed") == {"v": 1}
        release.set()
        assert wait_until(lambda: cache.stats().dead_letters >= 1)
        assert seen[0][0] == "doomed"
        assert seen[0][1] == {"v": 1}
        assert isinstance(seen[0][2], BaseException)
        assert len(ls.attempts) >= 2
    finally:
        release.set()
        ls.failing = False
        cache.close()


# -- the journal: kill -9 and replay (guarantees 2 and 3) -----------------------------------

def run_writer_and_kill(store: str, backend: str, journal: str, *, max_delay: float,
                        acks: int) -> int:
    """Start JOURNAL_WRITER, kill -9 it once it acknowledged ``acks`` iterations; the
    highest iteration it acknowledged."""
    proc = subprocess.Popen([sys.executable, "-c", JOURNAL_WRITER, store, backend, journal,
                             str(max_delay)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env())
    assert proc.stdout is not None
    last = 0
    try:
        first = proc.stdout.readline().strip()
        assert first == "ready", (first, proc.stderr.read() if proc.poll() is not None else "")
        deadline = time.monotonic() + 60
        while last < acks and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            last = int(line.split()[1])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for line in proc.stdout:
            if line.startswith("ack "):
                last = int(line.split()[1])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert last >= acks, f"the writer acknowledged only {last} iterations"
    return last


def check_store_after(kind: str, table: str, path: str, last: int) -> None:
    """The store holds every write of iterations 1..last (and maybe part of last+1)."""
    exp = expected_after(last)
    nxt = expected_after(last + 1)
    store = build_store(kind, table, path)
    try:
        keys = [f"k{j}" for j in range(1, last + 2)]
        got = store.load_many(keys)
        for j in range(1, last + 1):
            k = f"k{j}"
            if k in got:
                assert k in exp["keys"], f"{k} was deleted and is back"
                assert got[k] == exp["keys"][k], (k, got[k])
            elif k in nxt["keys"]:
                # only the unacknowledged iteration last+1 may have deleted k_last
                raise AssertionError(f"acknowledged {k} is not in the store")
        assert store.load("hits") in (exp["hits"], exp["hits"] + 1), store.load("hits")
        assert store.load("page", namespace="views") in (exp["page"], exp["page"] + 2)
        carts = store.load_many([f"c{j}" for j in range(5)], namespace="carts")
        assert carts in (exp["carts"], nxt["carts"]), carts
    finally:
        store.close()


def reopen(url: str, backend: str, journal: str) -> None:
    """Open (which replays) and close a journalled cache, with its namespaces."""
    cache = cw.open(store=url, backend=backend, policy="write-back", journal=journal,
                    fsync="always")
    cache.namespace("views")
    cache.namespace("carts")
    cache.close()


@pytest.mark.parametrize("sql_store", ["sqlite", "mariadb"], indirect=True)
def test_kill_9_then_reopen_replays_every_acknowledged_write_once(
        sql_store: tuple[str, str, str], tmp_path: Path) -> None:
    kind, table, path = sql_store
    url = store_url(kind, table, path)
    journal = str(tmp_path / "app.wal")
    # nothing is flushed before the kill: only the journal has the writes
    last = run_writer_and_kill(url, "memory://", journal, max_delay=3600, acks=40)
    store = build_store(kind, table, path)
    try:
        assert store.load("hits") is None
        assert store.load("k1") is None
    finally:
        store.close()
    reopen(url, "memory://", journal)
    check_store_after(kind, table, path, last)
    hits = build_store(kind, table, path)
    first = (hits.load("hits"), hits.load("page", namespace="views"))
    hits.close()
    # a replay is idempotent: reopening again adds nothing
    reopen(url, "memory://", journal)
    reopen(url, "memory://", journal)
    again = build_store(kind, table, path)
    try:
        assert (again.load("hits"), again.load("page", namespace="views")) == first
    finally:
        again.close()


@pytest.mark.parametrize("sql_store", ["postgres", "sqlite"], indirect=True)
def test_kill_9_while_flushing_replays_only_what_the_store_lacks(
        sql_store: tuple[str, str, str], tmp_path: Path, prefix: str) -> None:
    kind, table, path = sql_store
    url = store_url(kind, table, path)
    backend = f"{REDIS_URL}?prefix={prefix}"
    journal = str(tmp_path / "app.wal")
    # the flusher runs all the time: the kill lands between, or inside, batches
    last = run_writer_and_kill(url, backend, journal, max_delay=0.005, acks=150)
    reopen(url, backend, journal)
    check_store_after(kind, table, path, last)
    reopen(url, backend, journal)
    check_store_after(kind, table, path, last)


def test_replay_refreshes_the_shared_redis_copy_another_process_reads(
        tmp_path: Path, prefix: str) -> None:
    from accept_support import Reader

    path = str(tmp_path / "store.db")
    table = "kv"
    url = store_url("sqlite", table, path)
    backend = f"{REDIS_URL}?prefix={prefix}"
    journal = str(tmp_path / "app.wal")
    seed = build_store("sqlite", table, path)
    seed.save_many({"k1": "stale", "k2": "stale"})
    seed.close()
    last = run_writer_and_kill(url, backend, journal, max_delay=3600, acks=5)
    # another process whose fills bring the store's (stale) rows into Redis
    reader = Reader(url, backend)
    try:
        for key in ("k1", "k2"):
            reader.invalidate(key)
        assert reader.get("k1") == "stale"
        assert reader.get("k2") in ("stale", "<none>")  # k2 was deleted at iteration 3
        reopen(url, backend, journal)
        exp = expected_after(last)["keys"]
        assert wait_until(lambda: reader.get("k1") == exp["k1"], timeout=10), reader.get("k1")
        assert wait_until(lambda: reader.get("k2") == "<none>", timeout=10), reader.get("k2")
        assert reader.get("hits") in (last, last + 1)
    finally:
        reader.close()


# -- fork (guarantee 8) ---------------------------------------------------------------------

def journal_files(journal: str) -> dict[str, int]:
    """Files and sizes of the journal PATH and its namespaces' PATH.<name> (not PATH@...)."""
    root = Path(journal)
    return {str(p.relative_to(root.parent)): p.stat().st_size
            for d in root.parent.glob(root.name + "*") if "@" not in d.name
            for p in d.rglob("*") if p.is_file()}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_os_fork_child_has_its_own_flusher_and_journal(tmp_path: Path) -> None:
    path = str(tmp_path / "store.db")
    journal = str(tmp_path / "app.wal")
    store = cw.SQLiteStore(path, table="kv")
    cache = cw.Cache(store=store, policy=cw.WriteBack(max_delay=3600, journal=journal,
                                                      fsync="always"))
    try:
        cache.incr("hits", 5)
        cache.set("p", "parent")
        cache.namespace("views").set("pv", 1)
        before = journal_files(journal)
        assert any(name.startswith("app.wal.views") for name in before), before
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                cache.incr("hits", 10)
                cache.set("c", "child")
                cache.namespace("views").set("cv", 2)
                assert cache.get("p") == "parent"
                cache.flush(timeout=30)
                check = cw.SQLiteStore(path, table="kv")
                ok = check.load("c") == "child" and check.load("hits") == 10
                check.close()
                cache.close()
                code = 0 if ok else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert journal_files(journal) == before, "the child wrote the parent's journal"
        check = cw.SQLiteStore(path, table="kv")
        try:
            # the child flushed its own writes only, not the parent's dirty ones
            assert check.load("hits") == 10
            assert check.load("p") is None
            assert check.load("cv", namespace="views") == 2
            assert check.load("pv", namespace="views") is None
            assert cache.pending() == 3
            cache.flush(timeout=30)
            assert check.load("hits") == 15
            assert check.load("p") == "parent"
            assert check.load("c") == "child"
        finally:
            check.close()
    finally:
        cache.close()
    # reopening the journal (and any child journal left) applies nothing twice
    cw.Cache(store=cw.SQLiteStore(path, table="kv"),
             policy=cw.WriteBack(journal=journal)).close()
    final = cw.SQLiteStore(path, table="kv")
    try:
        assert final.load("hits") == 15
    finally:
        final.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_multiprocessing_fork_children_flush_their_own_writes_once(tmp_path: Path) -> None:
    path = str(tmp_path / "store.db")
    journal = str(tmp_path / "app.wal")
    cache = cw.Cache(store=cw.SQLiteStore(path, table="kv"),
                     policy=cw.WriteBack(max_delay=3600, journal=journal, fsync="always"))
    try:
        cache.incr("hits", 5)
        cache.set("p", "parent")
        before = journal_files(journal)
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=mp_child, args=(cache, n)) for n in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
        assert [p.exitcode for p in procs] == [0, 0, 0]
        assert journal_files(journal) == before, "a child wrote the parent's journal"
        check = cw.SQLiteStore(path, table="kv")
        try:
            assert check.load("hits") == 30, "the children's writes (flushed when they end)"
            assert sorted(check.load_many([f"child{n}" for n in range(3)])) == [
                "child0", "child1", "child2"]
            assert check.load("p") is None
            cache.flush(timeout=30)
            assert check.load("hits") == 35
            assert check.load("p") == "parent"
        finally:
            check.close()
    finally:
        cache.close()
    cw.Cache(store=cw.SQLiteStore(path, table="kv"),
             policy=cw.WriteBack(journal=journal)).close()
    final = cw.SQLiteStore(path, table="kv")
    try:
        assert final.load("hits") == 35
    finally:
        final.close()


# -- SQLiteStore defaults ---------------------------------------------------------------------

def test_sqlite_store_uses_wal_and_takes_normal_synchronous(tmp_path: Path) -> None:
    path = str(tmp_path / "a.db")
    with cw.Cache(store=cw.SQLiteStore(path)) as cache:
        cache.set("a", 1)
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
    finally:
        conn.close()
    other = str(tmp_path / "b.db")
    with cw.Cache(store=cw.SQLiteStore(other, synchronous="NORMAL")) as cache:
        cache.set("a", 1)
    assert cw.SQLiteStore(other).load("a") == 1
    with cw.open(store=f"sqlite:///{tmp_path / 'c.db'}?synchronous=NORMAL") as cache:
        cache.set("a", 2)
        assert cache.get("a") == 2
    with pytest.raises(cw.ConfigError) as info:
        cw.SQLiteStore(str(tmp_path / "d.db"), synchronous="SOMETIMES")
    assert "SOMETIMES" in str(info.value) or "synchronous" in str(info.value)


# -- what close() closes --------------------------------------------------------------------

def pg_connections(name: str) -> int:
    import psycopg

    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                           (name,)).fetchone()
    assert row is not None
    return int(row[0])


def redis_connections(raw: Any, name: str) -> int:
    return sum(1 for c in raw.client_list() if c.get("name") == name)


def test_close_leaves_a_pool_a_redis_client_and_an_engine_passed_in_open(
        pg_table: str, prefix: str, mariadb_url: str) -> None:
    import psycopg_pool
    import redis
    import sqlalchemy as sa

    pool = psycopg_pool.ConnectionPool(POSTGRES_DSN, min_size=1, max_size=2, open=True)
    client = redis.Redis.from_url(REDIS_URL)
    engine = sa.create_engine(mariadb_url)
    engine_pool = engine.pool
    ma_table = unique("cw3c")
    try:
        with cw.Cache(store=cw.PostgresStore(pool, table=pg_table),
                      backend=cw.RedisBackend(client, prefix=prefix)) as cache:
            cache.set("a", 1)
            assert cache.get("a") == 1
        assert not pool.closed
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert client.ping()
        with cw.Cache(store=cw.SQLAlchemyStore(engine, table=ma_table)) as cache:
            cache.set("a", 1)
        assert engine.pool is engine_pool, "close() disposed of the caller's engine"
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        pool.close()
        client.close()
        engine.dispose()
        drop_tables("mariadb", ma_table)


def test_close_closes_the_connections_it_opened_from_urls(pg_table: str, raw: Any) -> None:
    name = unique("cw3c")
    key = unique("k")  # the default prefix "cw:" (see the xfail below for prefix= + options)
    cache = cw.open(store=f"{POSTGRES_DSN}?table={pg_table}&application_name={name}",
                    backend=f"{REDIS_URL}?client_name={name}", policy="write-back")
    try:
        cache.set(key, 1)
        cache.flush(timeout=30)
        cache.invalidate(key)
        assert cache.get(key) == 1
        assert pg_connections(name) >= 1
        assert redis_connections(raw, name) >= 1
    finally:
        cache.close()
    assert wait_until(lambda: pg_connections(name) == 0, timeout=10), pg_connections(name)
    assert wait_until(lambda: redis_connections(raw, name) == 0, timeout=10)


def test_redis_url_with_prefix_and_a_redis_py_option(tmp_path: Path, prefix: str,
                                                     raw: Any) -> None:
    name = unique("cw3c")
    with cw.open(store=f"sqlite:///{tmp_path / 'a.db'}",
                 backend=f"{REDIS_URL}?prefix={prefix}&client_name={name}") as cache:
        cache.set("a", 1)
        assert redis_connections(raw, name) >= 1
        assert list(raw.scan_iter(match=prefix + "*"))


# -- more: child journals, L1 readers, dead letters, waiting flushes ------------------------

@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_forked_child_killed_with_9_is_replayed_by_whoever_reopens_the_path(
        tmp_path: Path) -> None:
    path = str(tmp_path / "store.db")
    journal = str(tmp_path / "app.wal")
    cache = cw.Cache(store=cw.SQLiteStore(path, table="kv"),
                     policy=cw.WriteBack(max_delay=3600, journal=journal, fsync="always"))
    try:
        cache.set("p", "parent")
        views = cache.namespace("views")
        pid = os.fork()
        if pid == 0:  # the child: acknowledged writes, then a crash
            try:
                cache.incr("hits", 10)
                cache.set("c", "child")
                views.set("v", "child view")
                cache.delete("p")
            finally:
                os.kill(os.getpid(), signal.SIGKILL)
                os._exit(3)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL
        assert cache.get("p") == "parent"  # the child's delete is not the parent's
        cache.incr("hits", 5)
    finally:
        cache.close()
    check = cw.SQLiteStore(path, table="kv")
    try:
        assert check.load("p") == "parent"
        assert check.load("hits") == 5  # the crashed child flushed nothing
    finally:
        check.close()
    again = cw.Cache(store=cw.SQLiteStore(path, table="kv"),
                     policy=cw.WriteBack(journal=journal))
    again.namespace("views")
    again.close()
    again = cw.Cache(store=cw.SQLiteStore(path, table="kv"),
                     policy=cw.WriteBack(journal=journal))
    again.namespace("views")
    again.close()
    check = cw.SQLiteStore(path, table="kv")
    try:
        assert check.load("c") == "child"
        assert check.load("v", namespace="views") == "child view"
        assert check.load("hits") == 15
        # the child's delete of p was accepted after the parent's set (made before the
        # fork): the last accepted write wins
        assert check.load("p") is None
    finally:
        check.close()
    assert not list(tmp_path.glob("app.wal@*")), "child journals of dead processes stay"


def test_replay_reaches_the_l1_copy_of_another_process(tmp_path: Path, prefix: str) -> None:
    from accept_support import Reader

    path = str(tmp_path / "store.db")
    url = store_url("sqlite", "kv", path)
    journal = str(tmp_path / "app.wal")
    seed = build_store("sqlite", "kv", path)
    seed.save_many({"k1": "stale"})
    seed.close()
    last = run_writer_and_kill(url, f"{REDIS_URL}?prefix={prefix}", journal, max_delay=3600,
                               acks=3)
    reader = Reader(url, f"redis+l1://127.0.0.1:6379/0?prefix={prefix}")
    try:
        reader.invalidate("k1")
        assert reader.get("k1") == "stale"  # now in the reader's L1 and in Redis
        reopen(url, f"{REDIS_URL}?prefix={prefix}", journal)
        exp = expected_after(last)["keys"]["k1"]
        assert wait_until(lambda: reader.get("k1") == exp, timeout=10), reader.get("k1")
    finally:
        reader.close()


def test_a_store_object_passed_to_a_cache_stays_usable_after_close(tmp_path: Path) -> None:
    store = cw.SQLiteStore(str(tmp_path / "a.db"))
    with cw.Cache(store=store, policy=cw.WriteBack()) as cache:
        cache.set("a", 1)
    assert store.load("a") == 1
    store.save_many({"b": 2})
    assert store.load("b") == 2
    store.close()


def test_dead_lettered_entries_leave_the_dirty_table_and_flush_returns() -> None:
    ls = ListStore()
    ls.failing = True
    dead: list[str] = []
    policy = cw.WriteBack(max_delay=0.01, on_dead_letter=lambda k, v, e: dead.append(k),
                          retry=cw.Retry(attempts=3, base_delay=0.01, jitter=False))
    with cw.Cache(store=ls.store, policy=policy) as cache:
        cache.set("a", 1)
        cache.set("b", 2)
        cache.flush(timeout=20)
        assert sorted(dead) == ["a", "b"]
        assert cache.pending() == 0
        assert cache.stats().dead_letters == 2
        ls.failing = False
        cache.set("c", 3)
        cache.flush(timeout=20)
        assert ls.data == {"c": 3}


def test_flush_without_timeout_waits_for_the_store_to_come_back() -> None:
    ls = ListStore()
    ls.failing = True
    retry = cw.Retry(attempts=None, base_delay=0.02, max_delay=0.1)
    with cw.Cache(store=ls.store, policy=cw.WriteBack(max_delay=0.01, retry=retry)) as cache:
        cache.set("a", 1)
        cache.incr("n", 3)
        outcome: list[Any] = []

        def flush() -> None:
            try:
                cache.flush()
                outcome.append("ok")
            except BaseException as exc:
                outcome.append(exc)

        t = threading.Thread(target=flush)
        t.start()
        assert wait_until(lambda: len(ls.attempts) >= 3)
        assert outcome == []  # still waiting, not raising, while the store is down
        ls.failing = False
        t.join(timeout=30)
        assert outcome == ["ok"]
        assert ls.data == {"a": 1, "n": 3}


def _ns_setup(path: str, journal: str) -> tuple[cw.Cache, Any, Any]:
    cache = cw.Cache(store=cw.SQLiteStore(path, table="kv"),
                     policy=cw.WriteBack(max_delay=3600, journal=journal, fsync="always"))
    inherits = cache.namespace("inherits")
    own = cache.namespace("own", policy=cw.WriteBack(max_delay=3600))
    return cache, inherits, own


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_namespace_with_its_own_write_back_policy_journals_too(tmp_path: Path) -> None:
    path = str(tmp_path / "store.db")
    journal = str(tmp_path / "app.wal")
    pid = os.fork()
    if pid == 0:  # a fresh process: opens its cache, writes, dies with kill -9
        try:
            _, inherits, own = _ns_setup(path, journal)
            inherits.set("a", "inherited policy")
            own.set("a", "own policy")
            own.incr("n", 3)
        finally:
            os.kill(os.getpid(), signal.SIGKILL)
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL
    _ns_setup(path, journal)[0].close()
    check = cw.SQLiteStore(path, table="kv")
    try:
        assert check.load("a", namespace="inherits") == "inherited policy"
        assert check.load("a", namespace="own") == "own policy"
        assert check.load("n", namespace="own") == 3
    finally:
        check.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_fork_pool_on_postgres_and_redis_flushes_each_workers_writes_once(
        pg_table: str, prefix: str) -> None:
    from accept3c_support import SHARED, pool_task

    cache = cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table),
                     backend=cw.RedisBackend(REDIS_URL, prefix=prefix),
                     policy=cw.WriteBack(max_delay=3600))
    SHARED["cache"] = cache
    try:
        cache.incr("hits", 1000)
        cache.flush(timeout=30)
        cache.incr("hits", 5)  # dirty in the parent at the fork
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(3) as pool:
            pids = pool.map(pool_task, range(30), chunksize=1)
            pool.close()
            pool.join()
        assert len(set(pids)) >= 1
        check = cw.PostgresStore(POSTGRES_DSN, table=pg_table)
        try:
            assert check.load("hits") == 1030
            got = check.load_many([f"task{i}" for i in range(30)], namespace="views")
            assert got == {f"task{i}": i for i in range(30)}
            assert cache.pending() == 1
            cache.flush(timeout=30)
            assert check.load("hits") == 1035
        finally:
            check.close()
        # the parent reads the children's writes (shared Redis or the store)
        assert cache.namespace("views").get("task7") == 7
    finally:
        SHARED.clear()
        cache.close()


@pytest.mark.parametrize(("kind", "backend_scheme"), [("postgres", "redis"),
                                                      ("mariadb", "redis+l1")])
def test_counters_from_three_processes_sharing_redis_sum_and_redis_agrees(
        kind: str, backend_scheme: str, prefix: str, tmp_path: Path) -> None:
    _require(kind)
    table, path = unique("cw3c"), str(tmp_path / "store.db")
    try:
        url = store_url(kind, table, path)
        backend = f"{backend_scheme}://127.0.0.1:6379/0?prefix={prefix}"
        seed = build_store(kind, table, path)
        seed.save_many({"hits": 1000})
        seed.close()
        ctx = multiprocessing.get_context("spawn")
        barrier = ctx.Barrier(3)
        procs = [ctx.Process(target=count_up, args=(url, 150, barrier, backend))
                 for _ in range(3)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=120)
        assert [p.exitcode for p in procs] == [0, 0, 0]
        store = build_store(kind, table, path)
        try:
            assert store.load("hits") == 1450
        finally:
            store.close()
        # the shared backend agrees with the store once the writes are flushed (guarantee 4)
        with cw.open(store=url, backend=f"{REDIS_URL}?prefix={prefix}") as cache:
            assert cache.get("hits") == 1450
            assert cache.incr("hits") == 1451
    finally:
        drop_tables(kind, table)


def test_kill_9_under_concurrent_writers_sharing_fsyncs_loses_no_acknowledged_write(
        tmp_path: Path) -> None:
    from accept3c_support import THREADED_WRITER

    path = str(tmp_path / "store.db")
    url = store_url("sqlite", "kv", path)
    journal = str(tmp_path / "app.wal")
    proc = subprocess.Popen([sys.executable, "-c", THREADED_WRITER, url, journal],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env())
    assert proc.stdout is not None
    acked = dict.fromkeys(range(4), 0)
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while min(acked.values()) < 50 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            _, t, i = line.split()
            acked[int(t)] = max(acked[int(t)], int(i))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        for line in proc.stdout:
            if line.startswith("ack "):
                _, t, i = line.split()
                acked[int(t)] = max(acked[int(t)], int(i))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
    assert min(acked.values()) >= 50, acked
    cw.open(store=url, policy="write-back", journal=journal).close()
    store = build_store("sqlite", "kv", path)
    try:
        for t, last in acked.items():
            got = store.load_many([f"t{t}:{i}" for i in range(1, last + 1)])
            missing = sorted(set(range(1, last + 1)) - {int(k.split(":")[1]) for k in got})
            assert not missing, (t, last, missing[:10])
            assert store.load(f"n{t}") in (last, last + 1), (t, last, store.load(f"n{t}"))
    finally:
        store.close()


def test_a_poison_entry_is_isolated_and_dead_lettered_while_the_batch_lands() -> None:
    ls = ListStore()
    good_save = ls._save_many

    def save_many(items: list[tuple[str, Any]]) -> None:
        if any(k == "bad" for k, _ in items):
            raise ValueError("this row violates a constraint")
        good_save(items)

    store = cw.CallbackStore(load_many=ls._load_many, save_many=save_many,
                             delete_many=ls._delete_many)
    dead: list[tuple[str, Any]] = []
    policy = cw.WriteBack(max_delay=3600, batch_size=10,
                          on_dead_letter=lambda k, v, e: dead.append((k, v)),
                          retry=cw.Retry(attempts=3, base_delay=0.01, jitter=False))
    with cw.Cache(store=store, policy=policy) as cache:
        for i in range(35):
            cache.set(f"k{i}", i)
            if i == 17:
                cache.set("bad", "x")
        cache.flush(timeout=30)
        assert dead == [("bad", "x")]
        assert ls.data == {f"k{i}": i for i in range(35)}
        assert all(len(call) <= 10 for call in ls.saves), [len(c) for c in ls.saves]
        st = cache.stats()
        assert st.dead_letters == 1
        assert st.dirty == 0
        assert st.flush_errors >= 1
        assert st.store_writes == 35


def test_a_torn_last_record_is_dropped_and_damage_in_the_middle_refuses_to_open(
        tmp_path: Path) -> None:
    import shutil

    path = str(tmp_path / "store.db")
    journal = str(tmp_path / "app.wal")
    cache = cw.Cache(store=cw.SQLiteStore(path),
                     policy=cw.WriteBack(max_delay=3600, journal=journal, fsync="always"))
    try:
        for i in range(20):
            cache.set(f"k{i}", i)
        assert cache.stats().journal_syncs >= 20  # one writer: a sync per write
        assert cache.stats().journal_bytes > 0
        shutil.copytree(journal, tmp_path / "torn.wal", ignore=shutil.ignore_patterns("lock"))
        shutil.copytree(journal, tmp_path / "mid.wal", ignore=shutil.ignore_patterns("lock"))
    finally:
        cache.close()
    seg = sorted((tmp_path / "torn.wal").glob("*.seg"))[-1]
    os.truncate(seg, seg.stat().st_size - 3)
    with pytest.warns(Warning, match="torn"):
        torn = cw.Cache(store=cw.SQLiteStore(str(tmp_path / "torn.db")),
                        policy=cw.WriteBack(journal=str(tmp_path / "torn.wal")))
    torn.close()
    check = cw.SQLiteStore(str(tmp_path / "torn.db"))
    got = check.load_many([f"k{i}" for i in range(20)])
    check.close()
    assert got == {f"k{i}": i for i in range(19)}
    seg = sorted((tmp_path / "mid.wal").glob("*.seg"))[0]
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(cw.JournalError) as info:
        cw.Cache(store=cw.SQLiteStore(str(tmp_path / "mid.db")),
                 policy=cw.WriteBack(journal=str(tmp_path / "mid.wal")))
    assert seg.name in str(info.value)
    assert "offset" in str(info.value)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_reopening_the_path_leaves_a_live_childs_journal_alone(tmp_path: Path) -> None:
    path = str(tmp_path / "store.db")
    journal = str(tmp_path / "app.wal")
    cache = cw.Cache(store=cw.SQLiteStore(path),
                     policy=cw.WriteBack(max_delay=3600, journal=journal, fsync="always"))
    cache.set("p", 1)
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: writes, waits while the parent reopens, writes on, closes
        code = 1
        try:
            cache.set("c1", 1)
            cache.incr("n", 2)
            os.write(ready_w, b"x")
            os.read(go_r, 1)
            cache.set("c2", 2)
            cache.incr("n", 3)
            cache.close()
            code = 0
        finally:
            os._exit(code)
    reopened = None
    try:
        assert os.read(ready_r, 1) == b"x"
        cache.close()
        reopened = cw.Cache(store=cw.SQLiteStore(path),
                            policy=cw.WriteBack(max_delay=3600, journal=journal))
        check = cw.SQLiteStore(path)
        try:
            # the live child's journal is not replayed (nor removed) under its feet
            assert check.load_many(["p", "c1", "n"]) == {"p": 1}
            assert list(tmp_path.glob("app.wal@*"))
            os.write(go_w, b"x")
            _, status = os.waitpid(pid, 0)
            pid = 0
            assert os.waitstatus_to_exitcode(status) == 0
            assert check.load_many(["p", "c1", "c2", "n"]) == {"p": 1, "c1": 1, "c2": 2,
                                                                "n": 5}
            reopened.close()
            reopened = cw.Cache(store=cw.SQLiteStore(path),
                                policy=cw.WriteBack(journal=journal))
            reopened.close()
            assert check.load("n") == 5  # nothing applied twice
            assert not list(tmp_path.glob("app.wal@*"))
        finally:
            check.close()
    finally:
        if pid:
            os.write(go_w, b"x")
            os.waitpid(pid, 0)
        if reopened is not None:
            reopened.close()
        for fd in (ready_r, ready_w, go_r, go_w):
            os.close(fd)


def test_sqlalchemy_sqlite_urls_open_a_sqlalchemy_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for url in (f"sqlite+pysqlite:///{tmp_path / 'abs.db'}?table=kv",
                f"sqlite+pysqlite:///{tmp_path / 'abs2.db'}",
                "sqlite+pysqlite:///rel.db?table=kv"):
        with cw.open(store=url, policy="write-back") as cache:
            cache.set("a", 1)
            cache.incr("n", 2)
    assert cw.SQLAlchemyStore(f"sqlite:///{tmp_path / 'abs.db'}", table="kv").load("n") == 2
    assert cw.SQLAlchemyStore(f"sqlite:///{tmp_path / 'rel.db'}", table="kv").load("a") == 1


@pytest.mark.xfail(strict=True, reason="with more dirty keys than batch_size, batches are cut "
                   "in first-dirty order: a key rewritten last reaches save_many in an earlier "
                   "call than keys last written before it (DESIGN: order of last write). Kept on "
                   "purpose: last-write order across batches would let a key rewritten "
                   "again and again wait behind every other (see CallbackStore's docstring)")
def test_callback_save_many_follows_last_write_order_across_batches() -> None:
    ls = ListStore()
    with cw.Cache(store=ls.store, policy=cw.WriteBack(max_delay=3600, batch_size=2)) as cache:
        cache.set("a", 1)
        cache.set("b", 2)
        cache.set("c", 3)
        cache.set("a", 4)  # a's last write is now the latest
        cache.flush()
        assert all(len(call) <= 2 for call in ls.saves), ls.saves
        assert [k for call in ls.saves for k, _ in call] == ["b", "c", "a"], ls.saves
        assert ls.data == {"a": 4, "b": 2, "c": 3}
