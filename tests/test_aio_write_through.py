"""AsyncCache write-through on the event loop (issue 12): AsyncPostgresStore's async path
(psycopg's AsyncConnectionPool) and redis.asyncio, no worker thread per write."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from typing import Any

import psycopg
import pytest

import cacheway as cw
from cacheway.backends.base import MISS
from cacheway.stores.postgres.aio import AsyncPostgresStore
from services import POSTGRES_DSN, REDIS_URL
from test_aio_support import LagMeter, rows_of

pytestmark = pytest.mark.services


@pytest.fixture
def table(pg_table: str) -> str:
    return pg_table


@pytest.fixture
def backend(redis_backend: cw.RedisBackend) -> cw.RedisBackend:
    return redis_backend


def save(table: str, items: dict[str, Any]) -> None:
    store = cw.PostgresStore(POSTGRES_DSN, table=table)
    try:
        store.save_many(items)
    finally:
        store.close()


class NoThreads:
    """Makes the sync store's calls fail: a write that hops to a thread is caught."""

    def __init__(self, store: cw.PostgresStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0

        def refuse(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            raise AssertionError("the sync store was called (a thread hop)")

        monkeypatch.setattr(store, "apply", refuse)
        monkeypatch.setattr(store, "fetch", refuse)


def test_a_set_runs_on_the_loop_and_agrees_everywhere(
        table: str, backend: cw.RedisBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    store = AsyncPostgresStore(POSTGRES_DSN, table=table)
    guard = NoThreads(store, monkeypatch)

    async def main() -> None:
        async with cw.AsyncCache(store=store, backend=backend) as acache:
            await acache.set("a", {"x": 1})
            await acache.set_many({"b": 2, "c": [3]})
            await acache.set("a", {"x": 2})
            assert await acache.get("a") == {"x": 2}

    asyncio.run(main())
    assert guard.calls == 0
    assert rows_of(table, ["a", "b", "c"]) == {
        "a": {"x": 2}, "b": 2, "c": [3]}
    assert backend.get_many([":a", ":b", ":c"]) == {":a": {"x": 2}, ":b": 2, ":c": [3]}


def test_memory_backend_write_through_runs_on_the_loop(
        table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = AsyncPostgresStore(POSTGRES_DSN, table=table)
    guard = NoThreads(store, monkeypatch)

    async def main() -> None:
        async with cw.AsyncCache(store=store) as acache:
            await asyncio.gather(*(acache.set(f"k{i % 7}", i) for i in range(70)))
            assert [await acache.get(f"k{i}") for i in range(7)] == list(range(63, 70))

    asyncio.run(main())
    assert guard.calls == 0
    assert rows_of(table,
        [f"k{i}" for i in range(7)]) == {f"k{i}": 63 + i for i in range(7)}


@pytest.mark.parametrize("policy", ["write-through", "write-around"])
def test_deletes_and_write_around_over_a_memory_backend_run_on_the_loop(
        table: str, monkeypatch: pytest.MonkeyPatch, policy: str) -> None:
    store = AsyncPostgresStore(POSTGRES_DSN, table=table)
    guard = NoThreads(store, monkeypatch)
    pol = cw.WriteThrough() if policy == "write-through" else cw.WriteAround()

    async def main() -> None:
        async with cw.AsyncCache(store=store, policy=pol) as acache:
            await acache.set_many({"a": 1, "b": 2, "c": 3})
            assert await acache.get_many(["a", "b", "c"]) == {"a": 1, "b": 2, "c": 3}
            await acache.delete("a")
            await acache.delete_many(["b", "none"])
            assert await acache.get_many(["a", "b", "c"]) == {"c": 3}
            assert await acache.get("a", "gone") == "gone"
            with pytest.raises(cw.InvalidKeyError):
                await acache.delete_many(["c", 7])  # type: ignore[list-item]
            assert await acache.get("c") == 3

    asyncio.run(main())
    assert guard.calls == 0
    assert rows_of(table, ["a", "b", "c"]) == {"c": 3}


def test_per_key_order_with_many_tasks(table: str, backend: cw.RedisBackend) -> None:
    # Tasks started in order write one key: the last call made is what stays, in the
    # store and in Redis (a thread pool could land them in any order).
    store = AsyncPostgresStore(POSTGRES_DSN, table=table)
    rng = random.Random(12)
    calls = [(f"k{rng.randrange(5)}", i) for i in range(300)]

    async def main() -> None:
        async with cw.AsyncCache(store=store, backend=backend) as acache:
            await asyncio.gather(*(acache.set(k, v) for k, v in calls))

    asyncio.run(main())
    last = dict(calls)
    assert rows_of(table, list(last)) == last
    assert backend.get_many([":" + k for k in last]) == {":" + k: v for k, v in last.items()}


def test_racing_fills_and_writes_leave_the_cache_agreeing_with_the_store(
        table: str, backend: cw.RedisBackend) -> None:
    # Guarantee 4, across fronts: a sync Cache (another "process": its own RedisBackend
    # on the same prefix) reads, invalidates and writes the keys while tasks write them.
    keys = [f"k{i}" for i in range(4)]
    store = AsyncPostgresStore(POSTGRES_DSN, table=table)
    other_backend = cw.RedisBackend(REDIS_URL, prefix=backend.prefix)
    other = cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=table),
                     backend=other_backend)
    stop = threading.Event()
    errors: list[BaseException] = []

    def sync_side() -> None:
        rng = random.Random(4)
        try:
            while not stop.is_set():
                key = rng.choice(keys)
                roll = rng.random()
                if roll < 0.5:
                    other.get(key)
                elif roll < 0.8:
                    other.invalidate(key)
                else:
                    other.set(key, ["sync", rng.randrange(1000)])
        except BaseException as exc:
            errors.append(exc)

    async def main() -> None:
        rng = random.Random(5)
        async with cw.AsyncCache(store=store, backend=backend) as acache:

            async def writer(t: int) -> None:
                for i in range(40):
                    key = rng.choice(keys)
                    if rng.random() < 0.3:
                        await acache.get(key)
                    else:
                        await acache.set(key, ["async", t, i])

            await asyncio.gather(*(writer(t) for t in range(8)))

    thread = threading.Thread(target=sync_side)
    thread.start()
    try:
        asyncio.run(main())
    finally:
        stop.set()
        thread.join()
        other.close()
        other_backend.close()
    assert errors == []
    rows = rows_of(table, keys)
    for key in keys:
        copy = backend.get(":" + key)
        assert copy is MISS or copy == rows[key], (key, copy, rows[key])


def test_the_loop_never_waits_for_a_store_write(
        table: str, backend: cw.RedisBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    # Another connection holds the row's lock for 0.3 s: the write waits on the loop
    # (awaiting its socket), the ticker keeps ticking, no thread is used.
    store = AsyncPostgresStore(POSTGRES_DSN, table=table)
    guard = NoThreads(store, monkeypatch)

    async def main() -> tuple[float, float, int]:
        async with cw.AsyncCache(store=store, backend=backend) as acache:
            await acache.set("k", 1)
            with psycopg.connect(POSTGRES_DSN) as locker:
                locker.execute(f'SELECT 1 FROM "{table}" WHERE namespace = %s AND key = %s '
                               "FOR UPDATE", ("", "k"))
                async with LagMeter() as lag:
                    started = time.perf_counter()
                    write = asyncio.ensure_future(acache.set("k", 2))
                    await asyncio.sleep(0.3)
                    assert not write.done()  # it waits for the row lock
                    locker.rollback()
                    await write
                    took = time.perf_counter() - started
            return lag.max_gap, took, lag.ticks

    max_gap, took, ticks = asyncio.run(main())
    assert guard.calls == 0
    assert took >= 0.3
    assert ticks >= 10
    assert max_gap < 0.15, f"the loop stalled {max_gap * 1000:.0f} ms"
    assert backend.get(":k") == 2


def test_a_thread_holding_the_stripe_makes_the_write_take_the_thread_way(
        table: str, backend: cw.RedisBackend) -> None:
    # A worker thread inside the key's stripe lock (a thread-path call, a fill): the
    # loop never waits for it; the write queues behind it in a thread, in order.
    store = AsyncPostgresStore(POSTGRES_DSN, table=table)

    async def main() -> float:
        async with cw.AsyncCache(store=store, backend=backend) as acache:
            assert acache.cache is not None
            engine = next(iter(acache.cache.engines()))
            lock = engine.locks[engine.stripe(":k")]
            held = threading.Event()
            release = threading.Event()

            def hold() -> None:
                with lock:
                    held.set()
                    release.wait(5)

            thread = threading.Thread(target=hold)
            thread.start()
            held.wait(5)
            async with LagMeter() as lag:
                write = asyncio.ensure_future(acache.set("k", "after"))
                await asyncio.sleep(0.2)
                assert not write.done()
                release.set()
                await write
            thread.join()
            assert await acache.get("k") == "after"
            return lag.max_gap

    assert asyncio.run(main()) < 0.15
    assert backend.get(":k") == "after"


def test_bad_input_is_refused_at_the_call(table: str, backend: cw.RedisBackend) -> None:
    # Guarantee 7: nothing reaches the store or Redis.
    store = AsyncPostgresStore(POSTGRES_DSN, table=table)

    async def main() -> None:
        async with cw.AsyncCache(store=store, backend=backend) as acache:
            with pytest.raises(cw.InvalidKeyError):
                await acache.set(12, 1)  # type: ignore[arg-type]
            with pytest.raises(cw.SerializationError):
                await acache.set("k", object())
            with pytest.raises(cw.InvalidWriteError):
                await acache.set("x" * 3000, 1)
            with pytest.raises(cw.ConfigError):
                await acache.set("k", 1, ttl=-1)
            with pytest.raises(cw.InvalidKeyError):
                await acache.set_many({"ok": 1, 5: 2})  # type: ignore[dict-item]

    asyncio.run(main())
    assert rows_of(table, ["k", "ok"]) == {}
    assert backend.get_many([":k", ":ok"]) == {}


def test_a_store_failure_drops_the_copy(table: str, backend: cw.RedisBackend) -> None:
    # A CHECK constraint refuses the second value: the write fails in the store, and the
    # older copy must not stay.
    store = AsyncPostgresStore(POSTGRES_DSN, table=table)

    async def main() -> None:
        async with cw.AsyncCache(store=store, backend=backend) as acache:
            await acache.set("k", "v1")
            assert backend.get(":k") == "v1"
            with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
                conn.execute(f'ALTER TABLE "{table}" ADD CONSTRAINT no_boom CHECK '
                             "(value IS NULL OR value::text <> '\"boom\"')")
            with pytest.raises(cw.InvalidWriteError):
                await acache.set("k", "boom")
            assert backend.get(":k") is MISS
            assert await acache.get("k") == "v1"

    asyncio.run(main())


def test_a_write_older_than_the_row_is_skipped_everywhere(
        table: str, backend: cw.RedisBackend) -> None:
    # Another process's write carries a newer version than this one will draw: the
    # store keeps it (set-if-newer) and so does Redis (no copy of the skipped write).
    from cacheway.stores.base import SET, Op

    sync_store = cw.PostgresStore(POSTGRES_DSN, table=table)
    newer = 2**52
    assert sync_store.apply([Op("", "k", SET, b'"theirs"', 0, "theirs", newer)])[0].applied
    store = AsyncPostgresStore(POSTGRES_DSN, table=table)

    async def main() -> None:
        async with cw.AsyncCache(store=store, backend=backend) as acache:
            await acache.set_many({"k": "mine", "j": "mine"})
            assert backend.get(":k") is MISS
            assert backend.get(":j") == "mine"
            assert await acache.get("k") == "theirs"

    asyncio.run(main())
    assert sync_store.load_many(["k", "j"]) == {"k": "theirs", "j": "mine"}
    sync_store.close()


def test_a_cancelled_set_still_lands_in_both(table: str, backend: cw.RedisBackend) -> None:
    # Once started, a write runs to its end: never the store written and an older copy.
    store = AsyncPostgresStore(POSTGRES_DSN, table=table)

    async def main() -> None:
        async with cw.AsyncCache(store=store, backend=backend) as acache:
            await acache.set("k", 1)
            write = asyncio.ensure_future(acache.set("k", 2))
            await asyncio.sleep(0)
            write.cancel()
            with pytest.raises(asyncio.CancelledError):
                await write
            # close() waits for the write under way: its copy lands before Redis closes

    asyncio.run(main())
    assert rows_of(table, ["k"]) == {"k": 2}
    assert backend.get(":k") == 2


def test_the_pool_it_built_is_closed_with_the_cache(table: str,
                                                     backend: cw.RedisBackend) -> None:
    store = AsyncPostgresStore(POSTGRES_DSN, table=table)

    async def main() -> Any:
        acache = cw.AsyncCache(store=store, backend=backend)
        await acache.set("k", 1)
        pool = store.async_path().pool
        assert pool is not None
        assert not pool.closed
        assert store.async_path().owns_pool
        await acache.close()
        return pool

    assert asyncio.run(main()).closed


def test_async_caches_over_one_store_share_its_path_until_the_last_closes(
        table: str, backend: cw.RedisBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: the first AsyncCache to close closed the store's one path for good:
    a second AsyncCache over the same AsyncPostgresStore then failed every write."""
    store = AsyncPostgresStore(POSTGRES_DSN, table=table)
    NoThreads(store, monkeypatch)

    async def main() -> None:
        first = cw.AsyncCache(store=store, backend=backend)
        second = cw.AsyncCache(store=store, backend=backend)
        await first.set("a", 1)
        await second.set("b", 2)
        pool = store.async_path().pool
        await first.close()
        assert pool is not None
        assert not pool.closed  # the second still uses it
        await second.set("c", 3)
        await second.close()
        assert pool.closed  # the last one closed it
        async with cw.AsyncCache(store=store, backend=backend) as third:
            await third.set("d", 4)  # a new pool on the same path
            assert await third.get("a") == 1

    asyncio.run(main())
    assert rows_of(table, ["a", "b", "c", "d"]) == {"a": 1, "b": 2, "c": 3, "d": 4}


def test_a_pool_passed_in_stays_open(table: str, backend: cw.RedisBackend) -> None:
    from psycopg_pool import AsyncConnectionPool

    async def main() -> None:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            POSTGRES_DSN, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False)
        await pool.open()
        try:
            store = AsyncPostgresStore(POSTGRES_DSN, table=table, async_pool=pool)
            assert not store.async_path().owns_pool
            async with cw.AsyncCache(store=store, backend=backend) as acache:
                await acache.set("k", 1)
            assert not pool.closed
            async with pool.connection() as conn:
                cur = await conn.execute(f'SELECT count(*) FROM "{table}"')
                assert await cur.fetchone() == (1,)
        finally:
            await pool.close()

    asyncio.run(main())


class CountedLoads:
    """Counts (and can slow down) the async path's loads of a store."""

    def __init__(self, store: AsyncPostgresStore, monkeypatch: pytest.MonkeyPatch,
                 delay: float = 0.0) -> None:
        self.calls = 0
        path = store.async_path()
        afetch = path.afetch

        async def counted(namespace: str, keys: Any) -> Any:
            self.calls += 1
            got = await afetch(namespace, keys)
            await asyncio.sleep(delay)  # the row was read: a write may come meanwhile
            return got

        monkeypatch.setattr(path, "afetch", counted)


@pytest.mark.parametrize("shared", [False, True], ids=["memory", "redis-no-leases"])
def test_misses_load_on_the_loop_once_per_stampede(
        table: str, backend: cw.RedisBackend, monkeypatch: pytest.MonkeyPatch,
        shared: bool) -> None:
    # Guarantee 5: one load per stampede of tasks; the copy is filled for later reads.
    save(table, {"k": [1]})
    store = AsyncPostgresStore(POSTGRES_DSN, table=table)
    guard = NoThreads(store, monkeypatch)
    loads = CountedLoads(store, monkeypatch, delay=0.05)
    redis = cw.RedisBackend(REDIS_URL, prefix=backend.prefix, leases=False)

    async def main() -> None:
        async with cw.AsyncCache(store=store, backend=redis if shared else None) as acache:
            got = await asyncio.gather(*(acache.get("k") for _ in range(50)))
            assert got == [[1]] * 50
            assert await asyncio.gather(*(acache.get("none", 0) for _ in range(20))) == [0] * 20
            assert loads.calls == 2
            assert await acache.get("k") == [1]  # the filled copy
            assert loads.calls == 2
            assert acache.stats().loads == 2

    asyncio.run(main())
    assert guard.calls == 0
    assert (backend.get(":k") == [1]) is shared


@pytest.mark.parametrize("shared", [False, True], ids=["memory", "redis-no-leases"])
def test_a_fill_that_raced_a_write_stands_down(
        table: str, backend: cw.RedisBackend, monkeypatch: pytest.MonkeyPatch,
        shared: bool) -> None:
    # Guarantee 4: the load read "old"; a write lands before its fill: the cache keeps
    # the write's value, never the load's.
    save(table, {"k": "old"})
    store = AsyncPostgresStore(POSTGRES_DSN, table=table)
    CountedLoads(store, monkeypatch, delay=0.2)
    redis = cw.RedisBackend(REDIS_URL, prefix=backend.prefix, leases=False)

    async def main() -> None:
        async with cw.AsyncCache(store=store, backend=redis if shared else None) as acache:
            read = asyncio.ensure_future(acache.get("k"))
            await asyncio.sleep(0.1)  # the load has read the row
            await acache.set("k", "new")
            assert await read == "old"  # it began before the write
            assert await acache.get("k") == "new"

    asyncio.run(main())
    if shared:
        assert backend.get(":k") == "new"


@pytest.mark.parametrize("shared", [False, True], ids=["memory", "redis"])
def test_get_many_reads_the_backend_and_the_store_on_the_loop(
        table: str, backend: cw.RedisBackend, monkeypatch: pytest.MonkeyPatch,
        shared: bool) -> None:
    save(table, {"a": 1, "b": [2], "c": "3"})
    store = AsyncPostgresStore(POSTGRES_DSN, table=table)
    guard = NoThreads(store, monkeypatch)
    loads = CountedLoads(store, monkeypatch)

    async def main() -> None:
        async with cw.AsyncCache(store=store, backend=backend if shared else None) as acache:
            await acache.set("d", {"d": 4})
            assert await acache.get_many(["a", "b", "d", "none", "a"]) == {
                "a": 1, "b": [2], "d": {"d": 4}}
            assert loads.calls == 1
            assert await acache.get_many(["a", "b", "c"]) == {"a": 1, "b": [2], "c": "3"}
            assert loads.calls == 2  # "c" only
            assert await acache.get_many(["a", "b", "c", "d"]) == {
                "a": 1, "b": [2], "c": "3", "d": {"d": 4}}
            assert loads.calls == 2  # every one filled
            stats = acache.stats()
            assert (stats.loads, stats.misses) == (2, 4)

    asyncio.run(main())
    assert guard.calls == 0
    if shared:
        assert backend.get_many([":a", ":c"]) == {":a": 1, ":c": "3"}
