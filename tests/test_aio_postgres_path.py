"""A plain PostgresStore under an AsyncCache takes the loop path (issue 12): psycopg's
AsyncConnectionPool from the store's DSN, one per AsyncCache, opened on the cache's loop
and closed with it; the thread front, forks, closed stores and several loops."""

from __future__ import annotations

import asyncio
import gc
import os
import random
import sys
import threading
import time
from typing import Any

import psycopg
import pytest

import cacheway as cw
from cacheway.stores.postgres.aio import PgAsyncPath
from services import POSTGRES_DSN, REDIS_URL
from test_aio_support import rows_of

pytestmark = pytest.mark.services


@pytest.fixture
def table(pg_table: str) -> str:
    return pg_table


@pytest.fixture
def backend(redis_backend: cw.RedisBackend) -> cw.RedisBackend:
    return redis_backend


class SqlThreads:
    """Where the SQL runs: the thread of each async path call, and the sync store's
    calls (a hop to a worker thread), which it counts."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: cw.PostgresStore | None = None
                 ) -> None:
        self.path_threads: set[str] = set()
        self.sync_calls = 0
        run = PgAsyncPath._run

        async def recorded(path: PgAsyncPath, *args: Any, **kwargs: Any) -> Any:
            self.path_threads.add(threading.current_thread().name)
            return await run(path, *args, **kwargs)

        monkeypatch.setattr(PgAsyncPath, "_run", recorded)
        if store is not None:
            for name in ("apply", "fetch"):
                sync = getattr(store, name)

                def counted(*args: Any, _sync: Any = sync, **kwargs: Any) -> Any:
                    self.sync_calls += 1
                    return _sync(*args, **kwargs)

                monkeypatch.setattr(store, name, counted)


class Paths:
    """Records the async paths a store hands out (one per AsyncCache)."""

    def __init__(self, store: cw.PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.made: list[PgAsyncPath] = []
        make = store.async_path

        def recorded() -> PgAsyncPath | None:
            path = make()
            if path is not None:
                self.made.append(path)
            return path

        monkeypatch.setattr(store, "async_path", recorded)


@pytest.mark.parametrize("shared", [False, True], ids=["memory", "redis"])
def test_a_plain_store_writes_and_loads_on_the_loop(
        table: str, backend: cw.RedisBackend, monkeypatch: pytest.MonkeyPatch,
        shared: bool) -> None:
    store = cw.PostgresStore(POSTGRES_DSN, table=table)
    store.save_many({"old": [0]})
    sql = SqlThreads(monkeypatch, store)
    redis = cw.RedisBackend(REDIS_URL, prefix=backend.prefix, leases=False)

    async def main() -> None:
        async with cw.AsyncCache(store=store, backend=redis if shared else None) as acache:
            await acache.set("a", {"x": 1})
            await acache.set_many({"b": 2, "c": [3]})
            await acache.set("a", {"x": 2})
            assert await acache.get("a") == {"x": 2}
            assert await acache.get("old") == [0]  # a miss, loaded on the loop
            assert await acache.get_many(["b", "c", "none"]) == {"b": 2, "c": [3]}

    try:
        asyncio.run(main())
        assert sql.sync_calls == 0
        assert sql.path_threads == {threading.main_thread().name}  # the loop's thread
        assert rows_of(table, ["a", "b", "c"]) == {"a": {"x": 2}, "b": 2, "c": [3]}
        if shared:
            assert backend.get_many([":a", ":old"]) == {":a": {"x": 2}, ":old": [0]}
    finally:
        redis.close()
        store.close()


def test_without_an_async_path_the_same_calls_hop_to_threads(
        table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The observable above, checked to tell: with the capability hidden, every store
    # call runs in the AsyncCache's worker threads.
    store = cw.PostgresStore(POSTGRES_DSN, table=table)
    monkeypatch.setattr(store, "async_path", lambda: None)
    sql = SqlThreads(monkeypatch, store)

    async def main() -> None:
        async with cw.AsyncCache(store=store) as acache:
            await acache.set("a", 1)
            assert await acache.get("a") == 1

    try:
        asyncio.run(main())
    finally:
        store.close()
    assert sql.sync_calls == 1
    assert sql.path_threads == set()


def test_open_async_over_a_postgresql_url_takes_the_loop_path(
        table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    sql = SqlThreads(monkeypatch)
    sync_calls: list[str] = []
    apply = cw.PostgresStore.apply

    def counted(self: cw.PostgresStore, *args: Any, **kwargs: Any) -> Any:
        sync_calls.append(threading.current_thread().name)
        return apply(self, *args, **kwargs)

    monkeypatch.setattr(cw.PostgresStore, "apply", counted)

    async def main() -> None:
        acache = await cw.open_async(store=f"{POSTGRES_DSN}?table={table}")
        try:
            await asyncio.gather(*(acache.set(f"k{i}", i) for i in range(20)))
            assert await acache.get("k3") == 3
        finally:
            await acache.close()
        assert acache.cache is not None
        assert acache.cache.store.closed  # built from the URL: closed with the cache

    asyncio.run(main())
    assert sync_calls == []
    assert sql.path_threads == {threading.main_thread().name}
    assert rows_of(table, ["k0", "k19"]) == {"k0": 0, "k19": 19}


def test_per_key_order_with_many_tasks(table: str, backend: cw.RedisBackend) -> None:
    store = cw.PostgresStore(POSTGRES_DSN, table=table)
    rng = random.Random(7)
    calls = [(f"k{rng.randrange(5)}", i) for i in range(300)]

    async def main() -> None:
        async with cw.AsyncCache(store=store, backend=backend) as acache:
            await asyncio.gather(*(acache.set(k, v) for k, v in calls))

    try:
        asyncio.run(main())
    finally:
        store.close()
    last = dict(calls)
    assert rows_of(table, list(last)) == last
    assert backend.get_many([":" + k for k in last]) == {":" + k: v for k, v in last.items()}


def test_a_cancelled_set_still_lands_and_close_waits_for_it(
        table: str, backend: cw.RedisBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    store = cw.PostgresStore(POSTGRES_DSN, table=table)
    paths = Paths(store, monkeypatch)

    async def main() -> None:
        async with cw.AsyncCache(store=store, backend=backend) as acache:
            await acache.set("k", 1)
            write = asyncio.ensure_future(acache.set("k", 2))
            await asyncio.sleep(0)
            write.cancel()
            with pytest.raises(asyncio.CancelledError):
                await write
            # close() waits for the write under way, then closes its pool
        pool = paths.made[0].pool
        assert pool is None  # dropped by aclose, after the write ended

    try:
        asyncio.run(main())
    finally:
        store.close()
    assert len(paths.made) == 1
    assert rows_of(table, ["k"]) == {"k": 2}
    assert backend.get(":k") == 2


def test_each_async_cache_has_its_own_pool_closed_with_it(
        table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = cw.PostgresStore(POSTGRES_DSN, table=table)
    paths = Paths(store, monkeypatch)

    async def main() -> None:
        first = cw.AsyncCache(store=store)
        second = cw.AsyncCache(store=store)
        one = first.namespace("one")  # namespaces of one cache share its path
        await first.set("a", 1)
        await one.set("a", 2)
        await second.set("b", 3)
        assert len(paths.made) == 2
        pools = [p.pool for p in paths.made]
        assert pools[0] is not None
        assert pools[1] is not None
        assert pools[0] is not pools[1]
        await first.close()
        assert pools[0].closed
        assert not pools[1].closed
        assert await second.get("a") == 1  # loaded by the other cache's pool
        await second.set("a", 4)  # its pool goes on
        await second.close()
        assert pools[1].closed

    try:
        asyncio.run(main())
        assert not store.closed  # the caller's store stays open, and works
        assert store.load_many(["a", "b"]) == {"a": 4, "b": 3}
    finally:
        store.close()


def test_a_store_shared_with_a_thread_front_cache(
        table: str, backend: cw.RedisBackend) -> None:
    # The thread front keeps the sync pool; the AsyncCache writes on the loop; both
    # agree, and closing the AsyncCache leaves the store and the Cache working.
    store = cw.PostgresStore(POSTGRES_DSN, table=table)
    cache = cw.Cache(store=store, backend=backend)
    other = cw.RedisBackend(REDIS_URL, prefix=backend.prefix)
    stop = threading.Event()
    errors: list[BaseException] = []

    def sync_side() -> None:
        i = 0
        try:
            while not stop.is_set():
                i += 1
                cache.set("sync", i)
                assert cache.get("sync") == i
        except BaseException as exc:
            errors.append(exc)

    async def main() -> None:
        async with cw.AsyncCache(store=store, backend=other) as acache:
            for i in range(30):
                await acache.set("loop", i)
                assert await acache.get("loop") == i

    thread = threading.Thread(target=sync_side)
    thread.start()
    try:
        asyncio.run(main())
    finally:
        stop.set()
        thread.join()
    try:
        assert errors == []
        cache.set("after", 1)
        assert cache.get("loop") == 29
        assert store.load_many(["loop", "after"]) == {"loop": 29, "after": 1}
    finally:
        cache.close()
        other.close()
        store.close()


def test_a_closed_store_is_refused_on_the_loop_as_in_threads(table: str) -> None:
    store = cw.PostgresStore(POSTGRES_DSN, table=table)

    async def main() -> None:
        async with cw.AsyncCache(store=store) as acache:
            await acache.set("k", 1)
            store.close()
            with pytest.raises(cw.StoreError, match="is closed"):
                await acache.set("k", 2)
            with pytest.raises(cw.StoreError, match="is closed"):
                await acache.get("other")

    asyncio.run(main())


def _alive(pid: int) -> bool:
    with psycopg.connect(POSTGRES_DSN) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                           (pid,)).fetchone()
    return row is not None and row[0] == 1


def test_used_from_several_loops_it_opens_a_pool_per_loop(
        table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # One AsyncCache, one asyncio.run per step (a test per loop): each loop writes on
    # the loop with a pool of its own; the previous loop's is dropped and its
    # connections end; the last is closed with the cache.
    store = cw.PostgresStore(POSTGRES_DSN, table=table)
    sql = SqlThreads(monkeypatch, store)
    paths = Paths(store, monkeypatch)
    acache = cw.AsyncCache(store=store)
    seen: list[Any] = []

    async def step(i: int) -> int:
        await acache.set("k", i)
        pool = paths.made[0].pool
        assert pool is not None
        assert all(pool is not p for p in seen)
        seen.append(pool)
        async with pool.connection() as conn:
            row = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
        assert row is not None
        return int(row[0])

    try:
        first = asyncio.run(step(1))
        second = asyncio.run(step(2))
        assert len(paths.made) == 1
        seen.clear()  # the dropped pool goes, and with it its connections
        gc.collect()
        deadline = time.monotonic() + 10
        while _alive(first) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(first)
        assert _alive(second)

        async def last() -> None:
            await acache.set("k", 3)
            pool = paths.made[0].pool
            assert pool is not None
            await acache.close()
            assert pool.closed

        asyncio.run(last())
        assert sql.sync_calls == 0
        assert store.load_many(["k"]) == {"k": 3}
    finally:
        store.close()


def test_closed_from_another_loop_it_drops_the_pool(table: str) -> None:
    store = cw.PostgresStore(POSTGRES_DSN, table=table)
    acache = cw.AsyncCache(store=store)

    async def write() -> None:
        await acache.set("k", 1)

    try:
        asyncio.run(write())
        asyncio.run(acache.close())  # does not touch the first loop's pool
        assert acache.closed
        assert store.load_many(["k"]) == {"k": 1}
    finally:
        store.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_opens_a_pool_of_its_own(table: str) -> None:
    # The child runs the parent's loop object again: only the fork tells it that the
    # pool it holds is the parent's.
    store = cw.PostgresStore(POSTGRES_DSN, table=table)
    store.save_many({"k": "v"})
    path = store.async_path()
    assert path is not None
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(path.afetch("", ["k"]))["k"].version
        parent_pool = path.pool
        assert parent_pool is not None
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                got = loop.run_until_complete(path.afetch("", ["k"]))
                assert set(got) == {"k"}
                assert path.pool is not None
                assert path.pool is not parent_pool
                loop.run_until_complete(path.aclose())
                code = 0
            except BaseException as exc:
                print(f"child failed: {exc!r}", file=sys.stderr, flush=True)
            finally:
                os._exit(code)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        assert path.pool is parent_pool
        assert set(loop.run_until_complete(path.afetch("", ["k"]))) == {"k"}
        loop.run_until_complete(path.aclose())
        assert parent_pool.closed
    finally:
        loop.close()
        store.close()


def test_row_mode_and_a_pool_passed_in_have_no_async_path(table: str) -> None:
    from psycopg_pool import ConnectionPool

    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE TABLE "{table}" (id text PRIMARY KEY, name text)')
    rows = cw.PostgresStore(POSTGRES_DSN, table=table, key_column="id", columns=["name"])
    pool: ConnectionPool[Any] = ConnectionPool(POSTGRES_DSN, min_size=1, max_size=2,
                                               kwargs={"autocommit": True}, open=True)
    given = cw.PostgresStore(pool, table=table + "_kv")
    try:
        assert rows.async_path() is None
        assert given.async_path() is None

        async def main() -> None:
            async with cw.AsyncCache(store=rows) as acache:
                await acache.set("1", {"name": "a"})  # the thread path, as before
                assert await acache.get("1") == {"name": "a"}

        asyncio.run(main())
    finally:
        rows.close()
        given.close()
        pool.close()
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{table}_kv", "{table}_kv_meta", '
                         f'"{table}_kv_applied" CASCADE')
            conn.execute(f'DROP SEQUENCE IF EXISTS "{table}_kv_version_seq"')


_LOOPS = """
import asyncio, sys
import cacheway as cw

acache = cw.AsyncCache(store=cw.PostgresStore(sys.argv[1], table=sys.argv[2]))

async def step(i: int) -> None:
    await acache.set("k", i)

for i in range(100):
    asyncio.run(step(i))  # one loop per step, ended right after its first call
asyncio.run(acache.close())
print("done")
"""


def test_a_loop_that_ends_while_its_pool_connects_is_not_waited_for_forever(
        table: str) -> None:
    """``asyncio.run`` ends by cancelling the loop's tasks and waiting for them. The pool
    built for the loop was still connecting (it grew a second connection for the first
    call); psycopg_pool's worker caught that cancellation as a failed attempt and waited
    for its next job: the run never ended (within 100 loops every time; the 300 s hang
    of the several-loops tests). The pool now opens with its connection ready, and is
    closed when its loop shuts down."""
    import subprocess

    proc = subprocess.run([sys.executable, "-c", _LOOPS, POSTGRES_DSN, table],
                          capture_output=True, text=True, timeout=90,
                          env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "done"
    assert "error connecting" not in proc.stderr, proc.stderr[-3000:]
