"""Guarantee 8 across os.fork() (issue 10 item 6): a cache opened before a fork (gunicorn
--preload, multiprocessing, Celery prefork) works in the child: its own flusher, never the
parent's dirty entries twice."""

from __future__ import annotations

import faulthandler
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

import cacheway as cw

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


# A child stuck in a fork hook (before its own faulthandler is armed) prints its stacks
# on SIGUSR1: the handler is the parent's, inherited.
if hasattr(signal, "SIGUSR1"):
    faulthandler.register(signal.SIGUSR1, all_threads=True)


def _wait(pid: int, timeout: float = 120.0) -> int:
    """The child's exit code; a child still running after ``timeout`` seconds prints
    its stacks and is killed (-SIGKILL)."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGUSR1)
            time.sleep(1.0)
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.005)


def _in_child(work: object) -> int:
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        code = 1
        # A child stuck for good prints where it is stuck (its stderr is the test's) and
        # ends: the test fails with the child's stacks instead of waiting for its timeout.
        faulthandler.dump_traceback_later(120, exit=True)
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


def test_guarantee8_a_journal_that_cannot_follow_the_fork_leaves_the_rest_working(
        tmp_path: Path) -> None:
    """The child's journal of a write-back namespace cannot be made (its directory is
    gone): that namespace's writes may fail in the child, but every other namespace and
    every other cache must go on. The hook that raised used to stop there, leaving the
    next engines' table locks held from the parent's before-fork hook: the child hung."""
    (tmp_path / "j").mkdir()
    (tmp_path / "k").mkdir()
    broken = cw.Cache(store=cw.SQLiteStore(tmp_path / "a.db"),
                      policy=cw.WriteBack(journal=tmp_path / "j" / "app.wal"))
    # A write-back engine after the broken one (its journal elsewhere follows the fork).
    after = broken.namespace("after", policy=cw.WriteBack(
        max_delay=0.05, journal=tmp_path / "k" / "other.wal"))
    other = cw.Cache(store=cw.SQLiteStore(tmp_path / "b.db"),
                     policy=cw.WriteBack(max_delay=0.05))
    try:
        shutil.rmtree(tmp_path / "j")

        def work() -> None:
            after.set("x", 1)
            after.flush(timeout=10)
            other.incr("n")
            other.flush(timeout=10)

        assert _wait(_in_child(work)) == 0
        assert cw.SQLiteStore(tmp_path / "b.db").load("n") == 1
        with cw.Cache(store=cw.SQLiteStore(tmp_path / "a.db")) as check:
            assert check.namespace("after").get("x") == 1
    finally:
        other.close()
        broken.close(timeout=0)


@pytest.mark.slow  # 60 forks, ~10 s
def test_guarantee8_a_fork_while_threads_use_sqlite_never_hangs_the_child(
        tmp_path: Path) -> None:
    """A fork copies the memory of every thread and runs only the forking one: a mutex
    the flusher or a reader held inside SQLite at that moment (its allocator's, its
    file locks') stayed held in the child, whose first SQLite call (the store's
    reconnect in the fork hook, or its flusher's BEGIN) waited forever: 2 children of
    100 hung in the hook and 33 more could never flush (a CI run timed out on the first
    test of this file). The stores' fork gate lets a fork wait for the calls under way."""
    store = cw.SQLiteStore(tmp_path / "a.db")
    cache = cw.Cache(store=store, policy=cw.WriteBack(max_delay=0.0005))
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            cache.set(f"k{i % 50}", "x" * 100)
            i += 1

    def read() -> None:
        while not stop.is_set():
            store.load_many([f"k{i}" for i in range(10)])

    threads = [threading.Thread(target=t, daemon=True) for t in (write, write, read)]
    for thread in threads:
        thread.start()
    try:
        codes = []
        for n in range(60):
            def work(n: int = n) -> None:
                cache.set("c", n)
                cache.flush(timeout=20)
            codes.append(_wait(_in_child(work), timeout=60))
        assert codes == [0] * 60, "children that hung (-9) or failed (1) after the fork"
        stop.set()
        for thread in threads:
            thread.join()
        assert store.load("c") == 59
    finally:
        stop.set()
        cache.close()
