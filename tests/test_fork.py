"""Guarantee 8 across os.fork() (issue 10 item 6): a cache opened before a fork (gunicorn
--preload, multiprocessing, Celery prefork) works in the child: its own flusher, never the
parent's dirty entries twice."""

from __future__ import annotations

import multiprocessing
import os
import sys
from pathlib import Path

import pytest

import cacheway as cw

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def _wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _in_child(work: object) -> int:
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        code = 1
        try:
            work()  # type: ignore[operator]
            code = 0
        except BaseException as exc:
            print(f"child failed: {exc!r}", file=sys.stderr, flush=True)
        finally:
            os._exit(code)
    return pid


def test_guarantee8_writes_made_in_forked_children_reach_the_store(tmp_path: Path) -> None:
    store = cw.SQLiteStore(tmp_path / "a.db")
    cache = cw.Cache(store=store, policy=cw.WriteBack(max_delay=0.05))
    try:
        cache.set("p", "parent")
        cache.incr("n")

        def work(i: int) -> None:
            for _ in range(300):
                cache.incr("n")
            cache.set(f"c{i}", i)
            assert cache.get(f"c{i}") == i
            cache.flush(timeout=10)

        pids = [_in_child(lambda i=i: work(i)) for i in range(3)]  # type: ignore[misc]
        assert [_wait(pid) for pid in pids] == [0, 0, 0]
        cache.flush(timeout=30)
        assert store.load_many(["p", "n", "c0", "c1", "c2"]) == {
            "p": "parent", "n": 901, "c0": 0, "c1": 1, "c2": 2}
    finally:
        cache.close()


def test_guarantee8_a_child_never_flushes_the_parents_dirty_entries(tmp_path: Path) -> None:
    store = cw.SQLiteStore(tmp_path / "a.db")
    cache = cw.Cache(store=store, policy=cw.WriteBack(max_delay=3600))
    try:
        cache.incr("c", 5)  # dirty in the parent when it forks

        def work() -> None:
            assert cache.pending() == 0  # the parent's entry is the parent's
            cache.set("child", 1)
            cache.flush(timeout=30)

        assert _wait(_in_child(work)) == 0
        assert store.load("child") == 1
        assert store.load("c") is None, "the child flushed the parent's entry"
        cache.flush(timeout=30)
        assert store.load("c") == 5, "a delta was applied twice"
    finally:
        cache.close()


_OPEN_CACHES: list[cw.Cache] = []  # the cache a multiprocessing child inherits


def _increment() -> None:
    # A multiprocessing child that neither flushes nor closes: its exit must flush.
    for _ in range(100):
        _OPEN_CACHES[0].incr("m")


def test_guarantee8_a_multiprocessing_child_flushes_at_exit(tmp_path: Path) -> None:
    store = cw.SQLiteStore(tmp_path / "a.db")
    cache = cw.Cache(store=store, policy=cw.WriteBack(max_delay=3600))
    _OPEN_CACHES.append(cache)
    try:
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=_increment) for _ in range(2)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(60)
        assert [proc.exitcode for proc in procs] == [0, 0]
        assert store.load("m") == 200, "a multiprocessing child's writes were lost at exit"
    finally:
        _OPEN_CACHES.clear()
        cache.close()


def test_guarantee8_a_forked_child_journals_its_own_writes_and_they_survive_kill_9(
        tmp_path: Path) -> None:
    import signal

    store = cw.SQLiteStore(tmp_path / "a.db")
    wal = tmp_path / "app.wal"
    cache = cw.Cache(store=store, policy=cw.WriteBack(
        max_delay=3600, journal=str(wal), fsync="always"))
    cache.set("p", "parent")
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            for _ in range(50):
                cache.incr("n")
            cache.set("c", "child")  # acknowledged: fsync'ed in the child's own journal
            os.write(ready_w, b"1")
            signal.pause()  # killed here, before any flush
        finally:
            os._exit(1)
    try:
        assert os.read(ready_r, 1) == b"1"
        os.kill(pid, signal.SIGKILL)
        assert _wait(pid) == -signal.SIGKILL
        assert store.load("c") is None
        cache.close()  # the parent flushes its own write only
        assert store.load_many(["p", "n", "c"]) == {"p": "parent"}
        # Whoever reopens the journal path replays the dead child's journal too.
        with cw.Cache(store=store, policy=cw.WriteBack(journal=str(wal))) as again:
            assert again.get("n") == 50
        assert store.load_many(["p", "n", "c"]) == {"p": "parent", "n": 50, "c": "child"}
        assert not [p for p in tmp_path.iterdir() if "@" in p.name], "child journal left"
    finally:
        os.close(ready_r)
        os.close(ready_w)
