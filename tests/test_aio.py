"""AsyncCache (issue 12): the thread front's guarantees, awaited, without blocking the loop."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import cacheway as cw
from cacheway.memoize import namespace_for
from services import POSTGRES_DSN, REDIS_URL, require, unique


def run(coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())


class LagMeter:
    """A ticker task: the longest gap between wakeups of ``asyncio.sleep(period)``,
    beyond the period itself (how long something held the loop)."""

    def __init__(self, period: float = 0.005) -> None:
        self.period = period
        self.max_gap = 0.0
        self.ticks = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.perf_counter()
        while not self._stop.is_set():
            await asyncio.sleep(self.period)
            now = time.perf_counter()
            self.max_gap = max(self.max_gap, now - last - self.period)
            self.ticks += 1
            last = now

    async def __aenter__(self) -> LagMeter:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task


# -- the API ---------------------------------------------------------------------------
def test_every_cache_method_is_awaitable_on_async_cache(make_store: Any) -> None:
    # issue 12 item 1
    async def main() -> None:
        async with cw.AsyncCache(store=make_store().store) as acache:
            for name in ["get", "get_many", "set", "set_many", "delete", "delete_many",
                         "incr", "invalidate", "invalidate_many", "flush", "pending",
                         "close"]:
                assert inspect.iscoroutinefunction(getattr(acache, name)), name
            assert isinstance(acache.stats(), cw.Stats)
            assert isinstance(acache.namespace("v"), cw.AsyncNamespace)

    run(main())


def test_read_your_writes_under_every_policy(make_policy: Callable[[], Any],
                                             make_store: Any) -> None:
    # issue 12 item 2
    store = make_store(add_many=True)

    async def main() -> None:
        async with cw.AsyncCache(store=store.store, policy=make_policy()) as acache:
            await acache.set("a", {"x": 1})
            assert await acache.get("a") == {"x": 1}
            await acache.set_many({"b": [1, 2], "c": "three"})
            assert await acache.get_many(["a", "b", "c", "zz"]) == {
                "a": {"x": 1}, "b": [1, 2], "c": "three"}
            await acache.delete("b")
            assert await acache.get("b", "gone") == "gone"
            await acache.delete_many(["c"])
            assert await acache.get_many(["b", "c"]) == {}
            assert await acache.incr("n", 5) == 5
            assert await acache.get("n") == 5
            await acache.invalidate("a")
            assert await acache.get("a") == {"x": 1}  # the store (or dirty table) has it
            await acache.invalidate_many(["a", "n"])
            await acache.flush()
            assert await acache.pending() == 0
        assert store.data == {"a": {"x": 1}, "n": 5}

    run(main())


def test_write_back_reads_its_writes_after_the_memory_copy_was_evicted(
        make_store: Any) -> None:
    # issue 12 item 2: the inline hit path misses; the dirty table answers in a thread
    store = make_store()

    async def main() -> None:
        async with cw.AsyncCache(store=store.store, backend=cw.MemoryBackend(max_entries=2),
                                 policy=cw.WriteBack(max_delay=60)) as acache:
            for i in range(10):
                await acache.set(f"k{i}", i)
            assert [await acache.get(f"k{i}") for i in range(10)] == list(range(10))
            assert store.save_calls == []  # all still dirty
            assert await acache.pending() == 10

    run(main())


def test_write_back_flush_puts_every_accepted_write_in_the_store(make_store: Any) -> None:
    # issue 12 item 3
    store = make_store()

    async def main() -> None:
        acache = cw.AsyncCache(store=store.store, policy=cw.WriteBack(max_delay=60))
        await asyncio.gather(*(acache.set(f"k{i}", i) for i in range(200)))
        assert await acache.pending() == 200
        assert store.data == {}
        await acache.flush()
        assert store.data == {f"k{i}": i for i in range(200)}
        assert acache.stats().dirty == 0
        await acache.set("late", 1)
        await acache.close()  # close flushes too
        assert store.data["late"] == 1

    run(main())


def test_incr_from_100_tasks_sums_exactly(make_policy: Callable[[], Any],
                                          tmp_path: Path) -> None:
    # issue 12 item 4
    path = str(tmp_path / "n.db")

    async def main() -> None:
        async with cw.AsyncCache(store=cw.SQLiteStore(path), policy=make_policy()) as acache:
            async def worker() -> None:
                for _ in range(5):
                    await acache.incr("n")

            await asyncio.gather(*(worker() for _ in range(100)))
            assert await acache.get("n") == 500
        assert cw.SQLiteStore(path).load("n") == 500

    run(main())


def test_a_stampede_of_50_tasks_makes_one_store_load(make_policy: Callable[[], Any],
                                                     make_store: Any) -> None:
    # issue 12 item 5
    store = make_store({"hot": "v"})
    store.load_delay = 0.2

    async def main() -> None:
        async with cw.AsyncCache(store=store.store, policy=make_policy()) as acache:
            values = await asyncio.gather(*(acache.get("hot") for _ in range(50)))
            assert values == ["v"] * 50
            assert store.load_calls == [["hot"]]
            none = await asyncio.gather(*(acache.get("nothing", 0) for _ in range(50)))
            assert none == [0] * 50
            assert len(store.load_calls) == 2  # waiters share "not found" too

    run(main())


def test_a_read_after_a_write_does_not_join_a_read_that_began_before_it(
        make_policy: Callable[[], Any], make_store: Any) -> None:
    # issue 12 item 5: tasks share a thread's get, but never across a write of the key
    store = make_store({"k": "old"})
    store.load_delay = 0.3

    async def main() -> None:
        async with cw.AsyncCache(store=store.store, policy=make_policy()) as acache:
            early = asyncio.create_task(acache.get("k"))
            while not store.load_calls:
                await asyncio.sleep(0.001)
            await acache.set("k", "new")
            assert await acache.get("k") == "new"
            assert await early in ("old", "new")
            await acache.delete("k")
            assert await acache.get("k") is None

    run(main())


def test_queued_write_back_writes_fail_one_by_one_and_keep_their_order(
        make_store: Any) -> None:
    # issue 12 item 13: write-back sets without a journal run back to back in one thread
    store = make_store()

    async def main() -> None:
        async with cw.AsyncCache(store=store.store,
                                 policy=cw.WriteBack(max_delay=60)) as acache:
            out = await asyncio.gather(
                acache.set("a", 1), acache.set("b", object()), acache.set("c", 3),
                acache.delete("a"), acache.set("d", 4), return_exceptions=True)
            assert out[0] is None
            assert isinstance(out[1], cw.SerializationError)
            assert out[2:] == [None, None, None]
            await asyncio.gather(*(acache.set("k", i) for i in range(300)))
            assert await acache.get("k") == 299
            cancelled = asyncio.create_task(acache.set("e", 5))
            await asyncio.sleep(0)
            cancelled.cancel()
            await asyncio.gather(*(acache.set(f"x{i}", i) for i in range(50)))
            await acache.flush()
        assert store.data["k"] == 299
        assert "a" not in store.data
        assert store.data["c"] == 3
        assert store.data["x49"] == 49

    run(main())


# -- no call blocks the loop -----------------------------------------------------------
class SlowStore:
    """A CallbackStore whose calls sleep ``delay`` seconds (a slow database)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.data: dict[str, Any] = {}
        self.store = cw.CallbackStore(load_many=self._load, save_many=self._save,
                                      delete_many=self._delete)

    def _load(self, keys: list[str]) -> dict[str, Any]:
        time.sleep(self.delay)
        return {k: self.data[k] for k in keys if k in self.data}

    def _save(self, items: list[tuple[str, Any]]) -> None:
        time.sleep(self.delay)
        self.data.update(items)

    def _delete(self, keys: list[str]) -> None:
        time.sleep(self.delay)
        for k in keys:
            self.data.pop(k, None)


@pytest.mark.parametrize("policy", ["write-through", "write-back", "write-around"])
def test_a_300ms_store_does_not_hold_the_event_loop(policy: str) -> None:
    # issue 12 item 6: the loop-lag test (a correctness bound, not a benchmark)
    slow = SlowStore(0.3)
    slow.data = {f"r{i}": i for i in range(4)}
    pol = {"write-through": cw.WriteThrough(), "write-around": cw.WriteAround(),
           "write-back": cw.WriteBack(max_delay=0.01)}[policy]

    async def main() -> None:
        async with LagMeter() as lag:
            acache = cw.AsyncCache(store=slow.store, policy=pol)
            reads = [acache.get(f"r{i}") for i in range(4)]
            writes = [acache.set(f"w{i}", i) for i in range(4)]
            results = await asyncio.gather(*reads, *writes)
            assert results[:4] == [0, 1, 2, 3]
            await acache.get("r0")
            await acache.set("w0", 10)
            await acache.delete("w1")
            await acache.flush()
            await acache.close()
        assert lag.max_gap < 0.150, f"the loop was held {lag.max_gap * 1000:.0f} ms"
        assert lag.ticks > 20
        assert slow.data["w0"] == 10
        assert "w1" not in slow.data

    asyncio.run(main())


def test_journal_fsync_always_from_16_tasks_is_durable(tmp_path: Path,
                                                       make_store: Any) -> None:
    # issue 12 item 7: every acknowledged write is in the journal (the store is down, so
    # nothing is flushed); a new cache replays them all into a working store
    journal = str(tmp_path / "app.wal")
    down = make_store()
    down.failing = True

    async def main() -> None:
        acache = cw.AsyncCache(store=down.store, policy=cw.WriteBack(
            journal=journal, fsync="always", max_delay=0.01, retry=cw.Retry(base_delay=0.01)))

        async def worker(w: int) -> None:
            for i in range(10):
                await acache.set(f"w{w}:{i}", i)
            await acache.incr("total", 10)

        async with LagMeter() as lag:
            await asyncio.gather(*(worker(w) for w in range(16)))
        assert acache.stats().journal_syncs >= 1
        assert lag.max_gap < 0.150
        with pytest.raises(cw.StoreError):
            await acache.close(timeout=0.2)  # the journal keeps what is left

    asyncio.run(main())
    up = make_store()
    with cw.Cache(store=up.store, policy=cw.WriteBack(journal=journal, fsync="always")):
        pass
    expected: dict[str, Any] = {f"w{w}:{i}": i for w in range(16) for i in range(10)}
    expected["total"] = 160
    assert up.data == expected


# -- the inline hit path ----------------------------------------------------------------
def test_inline_hits_keep_lru_order_and_count_as_hits(make_store: Any) -> None:
    # issue 12 item 8: a hit answered on the loop moves the key up as the thread front's does
    store = make_store()

    async def main() -> None:
        async with cw.AsyncCache(store=store.store,
                                 backend=cw.MemoryBackend(max_entries=2)) as acache:
            await acache.set("a", 1)
            await acache.set("b", 2)
            before = acache.stats().hits
            assert await acache.get("a") == 1  # a is now the most recent
            assert acache.stats().hits == before + 1
            await acache.set("c", 3)  # evicts b, not a
            loads = len(store.load_calls)
            assert await acache.get("a") == 1
            assert len(store.load_calls) == loads
            assert await acache.get("b") == 2
            assert len(store.load_calls) == loads + 1

    run(main())


def test_inline_hits_see_writes_made_through_the_thread_front(
        make_policy: Callable[[], Any], make_store: Any) -> None:
    # issue 12 item 8: the live memory copy is the newest value under every policy
    store = make_store()

    async def main() -> None:
        async with cw.AsyncCache(store=store.store, policy=make_policy()) as acache:
            ns = acache.namespace("ns")
            await ns.set("k", 1)
            assert await ns.get("k") == 1
            cache = acache.cache
            assert cache is not None
            for i in range(50):
                await asyncio.to_thread(cache.namespace("ns").set, "k", i)
                assert await ns.get("k") == i
            await asyncio.to_thread(cache.namespace("ns").delete, "k")
            assert await ns.get("k") is None

    run(main())


def test_expired_copies_are_not_answered_inline(make_store: Any) -> None:
    # issue 12 item 8
    now = [1000.0]
    backend = cw.MemoryBackend(timer=lambda: now[0])
    store = make_store({"k": "store"})

    async def main() -> None:
        async with cw.AsyncCache(store=store.store, backend=backend, ttl=10) as acache:
            assert await acache.get("k") == "store"
            store.data["k"] = "new"
            assert await acache.get("k") == "store"
            now[0] += 11
            assert await acache.get("k") == "new"

    run(main())


# -- namespaces, lifecycle, open_async --------------------------------------------------
def test_namespaces_take_cache_options(make_store: Any, tmp_path: Path) -> None:
    # issue 12 item 9
    store = make_store()
    other = make_store()

    async def main() -> None:
        async with cw.AsyncCache(store=store.store) as acache:
            views = acache.namespace("views", policy=cw.WriteBack(max_delay=60), ttl=5)
            assert acache.namespace("views") is views
            with pytest.raises(cw.ConfigError):
                acache.namespace("views", policy=cw.WriteAround())
            with pytest.raises(cw.ConfigError):
                acache.namespace("bad name!")
            await views.set("a", 1)
            assert store.data == {}
            assert await views.pending() == 1
            await acache.flush()  # every namespace
            assert store.data == {"views:a": 1}
            own = acache.namespace("own", store=other.store)
            await own.set("b", 2)
            assert other.data == {"own:b": 2}
            # a journalled namespace replays its journal when it opens: in a thread
            wal = acache.namespace("wal", policy=cw.WriteBack(journal=str(tmp_path / "j")))
            await wal.set("c", 3)
            await wal.close()
            assert store.data["wal:c"] == 3

    run(main())


def test_closed_async_cache_refuses_calls(make_store: Any) -> None:
    # issue 12 item 9
    async def main() -> None:
        acache = cw.AsyncCache(store=make_store().store)
        await acache.set("k", 1)
        await acache.close()
        await acache.close()  # twice is fine
        assert acache.closed
        with pytest.raises(cw.ClosedError):
            await acache.get("k")
        with pytest.raises(cw.ClosedError):
            await acache.set("k", 2)
        with pytest.raises(cw.ClosedError):
            acache.namespace("x")

    run(main())


def test_bad_input_is_refused_at_the_call(make_store: Any) -> None:
    # issue 12 item 9 (guarantee 7)
    async def main() -> None:
        async with cw.AsyncCache(store=make_store().store) as acache:
            with pytest.raises(cw.InvalidKeyError):
                await acache.get(1)  # type: ignore[arg-type]
            with pytest.raises(cw.SerializationError):
                await acache.set("k", object())
            with pytest.raises(cw.ConfigError):
                await acache.set("k", 1, ttl=-1)
        with pytest.raises(cw.ConfigError):
            cw.AsyncCache(store=make_store().store, max_workers=0)
        with pytest.raises(cw.ConfigError):
            cw.AsyncCache(store="sqlite:///x.db")  # type: ignore[arg-type]

    run(main())


def test_open_async_takes_the_urls_of_open(tmp_path: Path) -> None:
    # issue 12 item 9
    path = tmp_path / "app.db"
    journal = tmp_path / "app.wal"

    async def main() -> None:
        acache = await cw.open_async(store=f"sqlite:///{path}", backend="memory://",
                                     policy="write-back", max_delay=60, journal=str(journal))
        async with acache:
            await acache.set("k", [1])
            assert await acache.get("k") == [1]
        assert acache.cache is not None
        assert acache.cache.closed
        with pytest.raises(cw.ConfigError):
            await cw.open_async(store="nope://x")

    run(main())
    assert cw.SQLiteStore(str(path)).load("k") == [1]


# -- async callbacks --------------------------------------------------------------------
class AsyncDict:
    """async def callbacks over a dict; each awaits the loop (as a real driver would)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.data: dict[str, Any] = {}
        self.loads: list[list[str]] = []
        self.delay = delay
        self.loop_threads: set[int] = set()

    async def load_many(self, keys: list[str]) -> dict[str, Any]:
        self.loop_threads.add(threading.get_ident())
        self.loads.append(list(keys))
        await asyncio.sleep(self.delay)
        return {k: self.data[k] for k in keys if k in self.data}

    async def save_many(self, items: list[tuple[str, Any]]) -> None:
        self.loop_threads.add(threading.get_ident())
        await asyncio.sleep(self.delay)
        self.data.update(items)

    async def delete_many(self, keys: list[str]) -> None:
        await asyncio.sleep(self.delay)
        for k in keys:
            self.data.pop(k, None)

    def store(self) -> cw.AsyncCallbackStore:
        return cw.AsyncCallbackStore(self.load_many, self.save_many, self.delete_many)


def test_async_def_callbacks_run_on_the_loop(make_policy: Callable[[], Any]) -> None:
    # issue 12 item 10
    backing = AsyncDict(delay=0.05)
    backing.data["hot"] = "v"

    async def main() -> None:
        async with cw.AsyncCache(store=backing.store(), policy=make_policy()) as acache:
            assert await asyncio.gather(*(acache.get("hot") for _ in range(20))) == ["v"] * 20
            assert backing.loads == [["hot"]]
            await acache.set("a", 1)
            await acache.delete("hot")
            await acache.flush()
            assert backing.data == {"a": 1}
        assert backing.loop_threads == {threading.get_ident()}

    run(main())


def test_async_callbacks_fail_cleanly_when_their_loop_is_gone() -> None:
    # issue 12 item 10: no thread waits forever on a loop that stopped
    backing = AsyncDict()
    store = backing.store()
    with cw.Cache(store=store) as cache, pytest.raises(cw.StoreError, match="event loop"):
        cache.get("k")

    async def main() -> cw.AsyncCache:
        acache = cw.AsyncCache(store=store)
        await acache.set("k", 1)
        return acache  # never closed: its loop ends under it

    acache = asyncio.run(main())
    assert acache.cache is not None
    with pytest.raises(cw.StoreError, match="event loop"):
        acache.cache.set("k", 2)
    acache.cache.close()


# -- @acache.cached ------------------------------------------------------------------------
def test_cached_computes_once_per_stampede_and_keys_by_bound_arguments(
        make_store: Any) -> None:
    # issue 12 item 11
    store = make_store()
    calls: list[tuple[int, str]] = []

    async def main() -> None:
        async with cw.AsyncCache(store=store.store) as acache:
            @acache.cached(ttl=60)
            async def price(sku: int, region: str = "eu") -> dict[str, Any]:
                """The price."""
                calls.append((sku, region))
                await asyncio.sleep(0.05)
                return {"sku": sku, "region": region}

            results = await asyncio.gather(*(price(1) for _ in range(30)))
            assert results == [{"sku": 1, "region": "eu"}] * 30
            assert calls == [(1, "eu")]
            assert await price(sku=1, region="eu") == results[0]  # same bound arguments
            assert calls == [(1, "eu")]
            await price(1, "us")
            assert calls == [(1, "eu"), (1, "us")]
            await price.invalidate(1)
            await price(1)
            assert calls == [(1, "eu"), (1, "us"), (1, "eu")]
            assert price.__name__ == "price"
            assert price.__doc__ == "The price."
            assert inspect.signature(price) == inspect.signature(price.__wrapped__)
            assert inspect.iscoroutinefunction(price)
        # the sync front's namespace and key for the same function: they share results
        namespace = namespace_for(price.__wrapped__)
        assert len(namespace) <= 64
        keys = list(store.data)
        assert sorted(keys) == sorted(f"{namespace}:{k}" for k in ('[1,"eu"]', '[1,"us"]'))

    run(main())


def test_cached_results_live_ttl_seconds_also_in_the_store(make_store: Any) -> None:
    # issue 12 item 11: a stored result outlives a restart, not its ttl
    store = make_store()
    now = [1000.0]
    calls: list[int] = []

    async def compute(x: int) -> int | None:
        calls.append(x)
        return None if x == 0 else x * 2

    async def main() -> None:
        for _ in range(2):  # the second cache is a restart
            async with cw.AsyncCache(store=store.store) as acache:
                f = acache.cached(ttl=10, clock=lambda: now[0])(compute)
                assert await f(0) is None  # a None result is a result
                assert await f(0) is None
                assert await f(3) == 6
        assert calls == [0, 3]
        now[0] += 11
        async with cw.AsyncCache(store=store.store) as acache:
            f = acache.cached(ttl=10, clock=lambda: now[0])(compute)
            assert await f(3) == 6
        assert calls == [0, 3, 3]

    run(main())


def test_cached_refuses_what_it_cannot_key(make_store: Any) -> None:
    # issue 12 item 11
    async def main() -> None:
        async with cw.AsyncCache(store=make_store().store) as acache:
            @acache.cached()
            async def f(x: Any) -> int:
                return 1

            with pytest.raises(cw.SerializationError, match="key="):
                await f(object())

            @acache.cached(key=lambda x: f"id-{x.id}")
            async def g(x: Any) -> int:
                return int(x.id)

            class Obj:
                id = 7

            assert await g(Obj()) == 7
            with pytest.raises(cw.ConfigError, match="async def"):
                acache.cached()(lambda: 1)  # type: ignore[arg-type,return-value]
            with pytest.raises(TypeError):
                await f(1, 2)  # type: ignore[call-arg]

    run(main())


def test_a_cancelled_computation_hands_over_to_a_waiter(make_store: Any) -> None:
    # issue 12 item 11
    started = 0

    async def main() -> None:
        async with cw.AsyncCache(store=make_store().store) as acache:
            gate = asyncio.Event()

            @acache.cached()
            async def slow(x: int) -> int:
                nonlocal started
                started += 1
                await gate.wait()
                return x

            first = asyncio.create_task(slow(1))
            while started == 0:
                await asyncio.sleep(0.001)
            second = asyncio.create_task(slow(1))
            await asyncio.sleep(0.01)
            first.cancel()
            while started < 2:
                await asyncio.sleep(0.001)
            gate.set()
            assert await second == 1

    run(main())


# -- real servers ---------------------------------------------------------------------------
@pytest.fixture
def pg_table() -> Iterator[str]:
    require("postgresql")
    require("redis")
    name = unique("cwaio")
    yield name
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{name}", "{name}_meta", "{name}_applied", '
                     f'"{name}_cw_meta", "{name}_cw_applied" CASCADE')
        conn.execute(f'DROP SEQUENCE IF EXISTS "{name}_version_seq"')


@pytest.mark.services
@pytest.mark.parametrize("policy", ["write-through", "write-back", "write-around"])
def test_postgres_store_and_redis_backend(pg_table: str, policy: str) -> None:
    # issue 12 item 12
    pol = {"write-through": cw.WriteThrough(), "write-around": cw.WriteAround(),
           "write-back": cw.WriteBack(max_delay=0.05)}[policy]
    prefix = unique("aio") + ":"

    async def main() -> None:
        store = cw.PostgresStore(POSTGRES_DSN, table=pg_table)
        backend = cw.RedisBackend(REDIS_URL, prefix=prefix)
        try:
            async with cw.AsyncCache(store=store, backend=backend, policy=pol) as acache:
                await asyncio.gather(*(acache.set(f"k{i}", {"i": i}) for i in range(50)))
                got = await asyncio.gather(*(acache.get(f"k{i}") for i in range(50)))
                assert got == [{"i": i} for i in range(50)]
                await asyncio.gather(*(acache.incr("n") for _ in range(100)))
                assert await acache.get("n") == 100
                await acache.flush()
                assert store.load_many([f"k{i}" for i in range(3)] + ["n"]) == {
                    "k0": {"i": 0}, "k1": {"i": 1}, "k2": {"i": 2}, "n": 100}
        finally:
            backend.client.delete(*backend.client.keys(prefix + "*") or [prefix])
            backend.close()
            store.close()

    asyncio.run(main())


def test_a_callback_store_with_async_def_callbacks_works_on_async_cache() -> None:
    # DESIGN: "CallbackStore accepts async def callbacks" (on AsyncCache)
    data: dict[str, Any] = {}

    async def load_many(keys: list[str]) -> dict[str, Any]:
        await asyncio.sleep(0)
        return {k: data[k] for k in keys if k in data}

    async def save_many(items: list[tuple[str, Any]]) -> None:
        await asyncio.sleep(0)
        data.update(items)

    async def delete_many(keys: list[str]) -> None:
        for k in keys:
            data.pop(k, None)

    store = cw.CallbackStore(load_many, save_many, delete_many)
    with pytest.raises(cw.ConfigError, match="AsyncCache"):
        cw.Cache(store=store)

    async def main() -> None:
        async with cw.AsyncCache(store=store, policy=cw.WriteBack(max_delay=0.01)) as acache:
            await acache.set("a", 1)
            await acache.flush()
            assert data == {"a": 1}
            data["b"] = 2
            assert await acache.get("b") == 2
            await acache.delete("a")
            await acache.flush()
            assert data == {"b": 2}

    asyncio.run(main())
