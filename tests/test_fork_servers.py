"""Guarantee 8 on real servers across os.fork() (issue 10 item 6): a child never talks over
the parent's connections (PostgreSQL, MariaDB, SQLite) and keeps its L1 fresh."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

import cacheway as cw
from services import MARIADB_URL, POSTGRES_DSN, REDIS_URL, require, unique

pytestmark = [pytest.mark.services,
              pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")]


def _in_child(work: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            work()
            code = 0
        except BaseException as exc:
            print(f"child failed: {exc!r}", file=sys.stderr, flush=True)
        finally:
            os._exit(code)
    return pid


def _wait(pid: int) -> int:
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _pg() -> Any:
    require("postgresql")
    return cw.PostgresStore(POSTGRES_DSN, table=unique("cwfork"))


def _maria() -> Any:
    require("mariadb")
    return cw.SQLAlchemyStore(MARIADB_URL, table=unique("cwfork"))


@pytest.mark.parametrize("make_store", [_pg, _maria], ids=["postgres", "mariadb"])
def test_guarantee8_children_and_parent_write_at_once_over_their_own_connections(
        make_store: Callable[[], Any]) -> None:
    store = make_store()
    cache = cw.Cache(store=store, policy=cw.WriteBack(max_delay=0.01))
    try:
        cache.set("p0", 0)
        cache.flush(timeout=30)  # the parent's pool holds connections when it forks

        def work(i: int) -> None:
            for j in range(100):
                cache.incr("n")
                cache.set(f"c{i}-{j}", j)
            cache.flush(timeout=30)

        pids = [_in_child(lambda i=i: work(i)) for i in range(2)]  # type: ignore[misc]
        for j in range(100):  # the parent keeps writing meanwhile
            cache.set(f"p{j}", j)
            cache.incr("n")
        cache.flush(timeout=30)
        assert [_wait(pid) for pid in pids] == [0, 0]
        assert store.load("n") == 300
        keys = [f"c{i}-{j}" for i in range(2) for j in range(100)] + [
            f"p{j}" for j in range(100)]
        assert len(store.load_many(keys)) == 300
        cache.set("after", 1)  # the parent's connections survived the children
        cache.flush(timeout=30)
        assert store.load("after") == 1
    finally:
        cache.close()
        store.close()


def test_a_pool_passed_in_before_a_fork_is_refused_in_the_child() -> None:
    require("postgresql")
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(POSTGRES_DSN, min_size=1, max_size=2, open=True)
    store = cw.PostgresStore(pool, table=unique("cwfork"))
    try:
        store.save_many({"a": 1})

        def work() -> None:
            with pytest.raises(cw.StoreError, match=r"before os\.fork"):
                store.load("a")

        assert _wait(_in_child(work)) == 0
        assert store.load("a") == 1  # the parent's pool is untouched
    finally:
        store.close()
        pool.close()


def test_guarantee8_a_forked_childs_l1_is_kept_fresh(tmp_path: Any) -> None:
    require("redis")
    prefix = unique("cwfork") + ":"
    backend = cw.TwoLevelBackend(cw.MemoryBackend(), cw.RedisBackend(REDIS_URL, prefix=prefix))
    assert backend.wait_ready(10)
    cache = cw.Cache(store=cw.SQLiteStore(tmp_path / "a.db"), backend=backend)
    other = cw.Cache(store=cw.SQLiteStore(tmp_path / "a.db"),
                     backend=cw.RedisBackend(REDIS_URL, prefix=prefix))
    try:
        cache.set("k", "old")
        assert cache.get("k") == "old"  # in the parent's L1 when it forks
        r, w = os.pipe()

        def work() -> None:
            assert backend.wait_ready(10), "the child's invalidation listener never started"
            assert cache.get("k") == "old"
            os.write(w, b"1")
            deadline = time.monotonic() + 10
            while cache.get("k") != "new" and time.monotonic() < deadline:
                time.sleep(0.01)
            assert cache.get("k") == "new", "the child's L1 kept a stale copy"

        pid = _in_child(work)
        assert os.read(r, 1) == b"1"
        other.set("k", "new")  # another process writes
        assert _wait(pid) == 0
        os.close(r)
        os.close(w)
    finally:
        cache.close()
        other.close()
        backend.close()
        backend.l2.clear()


def test_a_forked_child_opens_its_postgres_pool_at_its_first_call_not_in_the_fork() -> None:
    """A fork hook runs while the child has only the forking thread and whatever locks
    the parent's threads held: it must do no I/O. The child's pool of a PostgresStore
    opened at once in the hook (a connection and the setup DDL, for every store the
    process ever built, used in the child or not); it now opens at the child's first
    call."""
    require("postgresql")
    name = unique("cwlazy")
    import psycopg

    sep = "&" if "?" in POSTGRES_DSN else "?"
    store = cw.PostgresStore(f"{POSTGRES_DSN}{sep}application_name={name}", table=name,
                             min_size=1, max_size=2)
    seen = psycopg.connect(POSTGRES_DSN, autocommit=True)  # the test's own view
    read_r, read_w = os.pipe()
    go_r, go_w = os.pipe()
    child: list[int] = []

    def connections() -> int:
        row = seen.execute("SELECT count(*) FROM pg_stat_activity "
                           "WHERE application_name = %s", (name,)).fetchone()
        assert row is not None
        return int(row[0])

    try:
        store.save_many({"k": 1})
        before = connections()

        def work() -> None:
            os.write(read_w, b"1")  # forked, no call made yet
            assert os.read(go_r, 1) == b"1"
            assert store.load("k") == 1
            os.write(read_w, b"2")
            assert os.read(go_r, 1) == b"2"

        child.append(_in_child(work))
        assert os.read(read_r, 1) == b"1"
        time.sleep(0.3)
        assert connections() == before, "the fork hook connected to PostgreSQL"
        os.write(go_w, b"1")
        assert os.read(read_r, 1) == b"2"
        assert connections() > before, "the child's first call opened no pool of its own"
        os.write(go_w, b"2")
        assert _wait(child.pop()) == 0
    finally:
        for pid in child:  # a failed check left the child waiting on its pipe
            os.kill(pid, signal.SIGKILL)
            _wait(pid)
        for fd in (read_r, read_w, go_r, go_w):
            os.close(fd)
        store.close()
        seen.close()
