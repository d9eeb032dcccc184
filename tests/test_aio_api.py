"""AsyncCache (issue 12): the API, the thread front's guarantees awaited, namespaces, lifecycle."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw
from test_aio_support import run


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


def test_from_cache_wraps_an_open_cache_and_closes_it(tmp_path: Any) -> None:
    cache = cw.open(f"sqlite:///{tmp_path / 'a.db'}", policy="write-back", max_delay=0.01)
    cache.set("k", 1)

    async def main() -> None:
        acache = cw.AsyncCache.from_cache(cache, max_workers=2)
        assert acache.cache is cache
        assert await acache.get("k") == 1
        await acache.set("j", 2)
        await acache.close()

    run(main())
    assert cache.closed
    with cw.SQLiteStore(str(tmp_path / "a.db")) as store:
        assert store.load_many(["k", "j"]) == {"k": 1, "j": 2}
    with (cw.Cache(store=cw.SQLiteStore(":memory:")) as other,
          pytest.raises(cw.ConfigError, match="max_workers")):
        cw.AsyncCache.from_cache(other, max_workers=0)
