"""AsyncCache acceptance, round 4: the parts earlier rounds left out, written from
DESIGN.md ("API v2", guarantees 2, 3, 5, 7, 8), the queue, typed and FastAPI guides and the
journal page only:

1. ``AsyncCache`` on the distributed write-behind queue (in-process consumers and a real
   ``cacheway worker``), on SQLite and PostgreSQL;
2. journals across fronts: a writer killed with kill -9 on one front, replayed by the other;
3. namespaces (``expire=``, ``type=``), ``@acache.cached`` on ``async def``, ``get_or_set``,
   the ``*_many`` calls and ``ttl``;
4. no cache call blocks the loop while a sync callback store sleeps 300 ms;
5. bad input raises at the call on ``AsyncCache`` as on ``Cache`` and damages nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pydantic
import pytest

import cacheway as cw
from accept3b_support import Worker, poll
from accept4a_support import Where, write_then_kill9
from aio_acceptance import UNFAITHFUL, Ticker, run
from services import REDIS_URL, require, unique

# the one loop bound allowed: well below the 300 ms a blocking callback takes
LOOP_BOUND = 0.15
SLOW = 0.3


@pytest.fixture(params=["sqlite", "postgres"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Where]:
    """Where the data lives: a SQLite file or a PostgreSQL table (dropped afterwards)."""
    table = None
    if request.param == "postgres":
        table = request.getfixturevalue("pg_table")
    w = Where(request.param, tmp_path, table)
    yield w
    w.close()


@pytest.fixture
def sqlite_where(tmp_path: Path) -> Iterator[Where]:
    w = Where("sqlite", tmp_path, None)
    yield w
    w.close()


@pytest.fixture
def pg_where(tmp_path: Path, pg_table: str) -> Iterator[Where]:
    w = Where("postgres", tmp_path, pg_table)
    yield w
    w.close()


@pytest.fixture
def procs() -> Iterator[list[Any]]:
    """Worker processes to kill at teardown whatever happened."""
    started: list[Any] = []
    yield started
    for p in reversed(started):
        p.cleanup()


@pytest.fixture
def backends() -> Iterator[Callable[[], cw.RedisBackend]]:
    """``make()`` -> a RedisBackend under one prefix of this test; keys removed after."""
    require("redis")
    prefix = unique("a4") + ":"
    made: list[cw.RedisBackend] = []

    def make() -> cw.RedisBackend:
        b = cw.RedisBackend(REDIS_URL, prefix=prefix)
        made.append(b)
        return b

    yield make
    if made:
        made[0].clear()
        made[0].client.delete(prefix + "~clock")
    for b in made:
        b.close()


def queue_policy(qname: str, *, partitions: int = 4, in_process: bool = True,
                 **kw: Any) -> cw.WriteBack:
    require("redis")
    return cw.WriteBack(queue=REDIS_URL, queue_name=qname, partitions=partitions,
                        flush_in_process=in_process, **kw)


def backend_for(where: Where, backends: Callable[[], cw.RedisBackend]) -> Any:
    # SQLite with the default memory backend; PostgreSQL with a shared Redis copy
    return cw.MemoryBackend() if where.kind == "sqlite" else backends()


def depth(ac: cw.AsyncCache) -> int:
    return sum(p.depth for p in ac.stats().queue)


# == 1. the distributed write-behind queue =====================================================

def test_queue_in_process_consumer_applies_every_acknowledged_write(
        where: Where, qname: str, backends: Callable[[], cw.RedisBackend]) -> None:
    # flush() on the asyncio front waits until the consumer applied every write accepted
    # before it: sets, a set_many, overwrites, deletes and counters all end in the store.
    where.store().save_many({"old": "row", "n": 10})

    async def main() -> None:
        async with cw.AsyncCache(store=where.store(), backend=backend_for(where, backends),
                                 policy=queue_policy(qname)) as ac:
            await ac.set_many({f"k{i}": {"i": i} for i in range(30)})
            await ac.set("k3", "changed")
            await ac.delete("k4")
            await ac.delete("old")
            assert await ac.incr("n", 5) == 15       # counts from the store's value
            await asyncio.gather(*(ac.incr("hits") for _ in range(20)))
            assert await ac.get("k3") == "changed"   # read your writes before the store
            assert await ac.get("old") is None
            await ac.flush(timeout=30)
            assert await ac.pending() == 0
            assert ac.stats().dirty == 0
            # on return of flush the store has them all
            for i in range(30):
                want = None if i == 4 else "changed" if i == 3 else {"i": i}
                assert where.peek(f"k{i}") == want, i
            assert where.peek("old") is None
            assert where.peek("n") == 15
            assert where.peek("hits") == 20

    run(main(), timeout=60)


def test_queue_counters_from_many_tasks_are_exact_and_each_incr_answers_once(
        pg_where: Where, qname: str, backends: Callable[[], cw.RedisBackend]) -> None:
    # 150 concurrent incr tasks: each answers a distinct running total and the store ends
    # with the exact sum (the queue's counters are exact, DESIGN "Distributed write-behind").
    async def main() -> None:
        async with cw.AsyncCache(store=pg_where.store(), backend=backends(),
                                 policy=queue_policy(qname, partitions=2)) as ac:
            answers = await asyncio.gather(*(ac.incr("views") for _ in range(100)))
            assert sorted(answers) == list(range(1, 101))
            bigger = await asyncio.gather(*(ac.incr("bytes", 3) for _ in range(50)))
            assert sorted(bigger) == list(range(3, 151, 3))
            await ac.flush(timeout=30)
            assert pg_where.peek("views") == 100
            assert pg_where.peek("bytes") == 150
            assert await ac.get("views") == 100

    run(main(), timeout=60)


def test_queue_keeps_per_key_order_from_many_tasks(
        where: Where, qname: str, backends: Callable[[], cw.RedisBackend]) -> None:
    # Each key is written 0..29 by its own task, with deletes in between; the store ends
    # with the last accepted write of every key, and a hot key written by many tasks ends
    # agreeing with what the cache answers (guarantee 3 over the queue).
    async def writer(ac: cw.AsyncCache, key: str) -> None:
        for i in range(30):
            if i % 7 == 6:
                await ac.delete(key)
            else:
                await ac.set(key, i)

    async def hot(ac: cw.AsyncCache, n: int) -> None:
        for i in range(10):
            await ac.set("hot", [n, i])

    async def main() -> None:
        async with cw.AsyncCache(store=where.store(), backend=backend_for(where, backends),
                                 policy=queue_policy(qname)) as ac:
            await asyncio.gather(*(writer(ac, f"k{j}") for j in range(8)),
                                 *(hot(ac, n) for n in range(8)))
            await ac.flush(timeout=30)
            for j in range(8):
                assert where.peek(f"k{j}") == 29, j
            final = await ac.get("hot")
            assert final[1] == 9
            assert where.peek("hot") == final

    run(main(), timeout=60)


def test_queue_stats_then_a_separate_worker_drains_and_exits_0_on_sigterm(
        pg_where: Where, qname: str, tmp_path: Path, procs: list[Any],
        backends: Callable[[], cw.RedisBackend]) -> None:
    # flush_in_process=False: writes wait in Redis (stats().queue shows them per partition,
    # the store has nothing) until a `cacheway worker` applies them; flush() waits for it.
    url = pg_where.url()
    pg_where.store().close()                    # the table exists before the worker starts

    async def main() -> None:
        async with cw.AsyncCache(store=pg_where.store(), backend=backends(),
                                 policy=queue_policy(qname, in_process=False)) as ac:
            for i in range(20):
                await ac.set(f"k{i}", i)
            await ac.incr("c", 7)
            assert poll(lambda: depth(ac) == 21, timeout=10), ac.stats().queue
            parts = ac.stats().queue
            assert sorted(p.partition for p in parts) == [0, 1, 2, 3]
            assert {p.queue for p in parts} == {qname}
            assert all(p.dead == 0 for p in parts)
            assert await ac.pending() == 21
            assert pg_where.peek("k0") is None       # no consumer: nothing applied yet
            with pytest.raises(cw.StoreError):
                await ac.flush(timeout=0.5)          # no worker runs: the timeout says so
            assert await ac.get("k5") == 5           # still readable, nothing lost
            worker = Worker(REDIS_URL, qname, url, tmp_path / "w.log", partitions=4,
                            claim_after=5)
            procs.append(worker)
            await ac.flush(timeout=30)
            assert [pg_where.peek(f"k{i}") for i in range(20)] == list(range(20))
            assert pg_where.peek("c") == 7
            assert await ac.pending() == 0
            assert poll(lambda: depth(ac) == 0, timeout=15), ac.stats().queue
            assert all(p.lag == 0.0 for p in ac.stats().queue)
            rc = worker.terminate()
            assert rc == 0, worker.stderr()
            assert "Traceback" not in worker.stderr()

    run(main(), timeout=90)


def test_queue_with_sqlite_and_a_worker_flush_from_the_async_front(
        sqlite_where: Where, qname: str, tmp_path: Path, procs: list[Any]) -> None:
    # The same with a SQLite file as the store and two worker processes.
    url = sqlite_where.url()
    sqlite_where.store().close()
    worker = Worker(REDIS_URL, qname, url, tmp_path / "w.log", partitions=4, claim_after=5,
                    processes=2)
    procs.append(worker)

    async def main() -> None:
        async with cw.AsyncCache(store=sqlite_where.store(),
                                 policy=queue_policy(qname, in_process=False)) as ac:
            await ac.set_many({f"s{i}": [i] for i in range(25)})
            await ac.delete_many(["s0", "s1"])
            await asyncio.gather(*(ac.incr("n", 2) for _ in range(25)))
            await ac.flush(timeout=30)
            assert sqlite_where.peek("s0") is None
            assert sqlite_where.peek("s24") == [24]
            assert sqlite_where.peek("n") == 50
    run(main(), timeout=60)
    assert worker.terminate() == 0, worker.stderr()


def test_queue_thread_and_async_fronts_share_order_and_counters(
        pg_where: Where, qname: str, backends: Callable[[], cw.RedisBackend]) -> None:
    # A Cache and an AsyncCache in one process on the same queue and Redis copy: the last
    # acknowledged write wins whichever front made it, counters from both sum exactly, and
    # each front sees the other's write at once (the copy is in Redis when acknowledged).
    cache = cw.Cache(store=pg_where.store(), backend=backends(), policy=queue_policy(qname))

    def thread_incr() -> None:
        for _ in range(50):
            cache.incr("c")

    async def main() -> None:
        async with cw.AsyncCache(store=pg_where.store(), backend=backends(),
                                 policy=queue_policy(qname)) as ac:
            await ac.set("k", "async-1")
            cache.set("k", "sync-2")
            assert await ac.get("k") == "sync-2"
            await ac.set("k", "async-3")
            assert cache.get("k") == "async-3"
            t = threading.Thread(target=thread_incr)
            t.start()
            await asyncio.gather(*(ac.incr("c") for _ in range(50)))
            await asyncio.to_thread(t.join, 30)
            await ac.flush(timeout=30)
            await asyncio.to_thread(cache.flush, 30)
            assert pg_where.peek("k") == "async-3"
            assert pg_where.peek("c") == 100
            assert await ac.get("c") == 100

    try:
        run(main(), timeout=60)
    finally:
        cache.close(timeout=10)


def test_queue_namespace_expire_ends_the_data_from_the_async_front(
        sqlite_where: Where, qname: str) -> None:
    # A queue namespace with expire=: the data ends in the cache and in the store after its
    # last write (queue guide, "Data expiry").
    async def main() -> None:
        async with cw.AsyncCache(store=sqlite_where.store(), policy=queue_policy(qname)) as ac:
            sessions = ac.namespace("sessions", expire=0.5)
            await sessions.set("s1", {"user": 1})
            await ac.set("keep", "forever")
            await ac.flush(timeout=30)
            assert sqlite_where.peek("s1", namespace="sessions") == {"user": 1}
            deadline = time.monotonic() + 10
            while await sessions.get("s1", "ended") != "ended":
                assert time.monotonic() < deadline, "the session never ended"
                await asyncio.sleep(0.05)
            assert sqlite_where.peek("s1", namespace="sessions") is None
            assert await sessions.get_many(["s1"]) == {}
            assert await ac.get("keep") == "forever"
            assert sqlite_where.peek("keep") == "forever"

    run(main(), timeout=60)


# == 2. journals across the fronts, kill -9 ====================================================

@pytest.mark.parametrize("writer", ["sync", "async"])
def test_writer_killed_9_is_replayed_by_the_other_front(
        where: Where, writer: str, tmp_path: Path) -> None:
    # The writer (Cache or AsyncCache, WriteBack(journal, fsync="always")) is killed with
    # kill -9 while writing, before any flush; opening the other front on the same journal
    # and store replays it: every acknowledged write is in the store, the namespace's
    # journal (PATH.views) included, counter deltas once, and nothing never written.
    journal = str(tmp_path / "app.wal")
    where.store().save_many({f"d{i}": "old" for i in range(300)})
    acked = write_then_kill9(writer, where.url(), journal, at_least=30)
    assert 30 <= acked < 299, acked
    assert where.peek("k0") is None                 # nothing was flushed before the kill

    policy = cw.WriteBack(max_delay=0.05, journal=journal, fsync="always")

    async def reopen_async() -> None:
        async with cw.AsyncCache(store=where.store(), policy=policy) as ac:
            await ac.flush(timeout=30)
            assert await ac.get(f"k{acked - 1}") == {"i": acked - 1, "s": "x" * ((acked - 1) % 7)}

    def reopen_sync() -> None:
        with cw.Cache(store=where.store(), policy=policy) as cache:
            cache.flush(timeout=30)

    reopen = (lambda: run(reopen_async())) if writer == "sync" else reopen_sync
    reopen()
    for i in range(acked):
        assert where.peek(f"k{i}") == {"i": i, "s": "x" * (i % 7)}, i
        assert where.peek(f"d{i}") is None, i
        assert where.peek(f"v{i}", namespace="views") == [i], i
    # the iteration cut by the kill may have landed in part; later ones were never written
    assert acked <= where.peek("n") <= acked + 1
    for i in range(acked + 1, 300):
        assert where.peek(f"d{i}") == "old", i
    n = where.peek("n")
    # a second open, by either front, applies nothing twice
    run(reopen_async())
    reopen_sync()
    assert where.peek("n") == n
    assert where.peek(f"k{acked - 1}") == {"i": acked - 1, "s": "x" * ((acked - 1) % 7)}


# == 3. namespaces, typed, cached, get_or_set, *_many, ttl =====================================

def test_namespaces_keep_their_keys_apart_in_the_many_calls(
        sqlite_where: Where, make_policy: Callable[[], Any]) -> None:
    # Two namespaces and the root write the same keys; set_many/get_many/delete_many of one
    # never touch the others, in the cache and in the store's namespace column.
    async def main() -> None:
        async with cw.AsyncCache(store=sqlite_where.store(), policy=make_policy()) as ac:
            a, b = ac.namespace("a"), ac.namespace("b")
            await ac.set_many({"x": "root", "y": "root"})
            await a.set_many({"x": "a", "y": "a", "z": "a"})
            await b.set_many({"x": "b"})
            assert await a.get_many(["x", "y", "z", "missing"]) == {"x": "a", "y": "a", "z": "a"}
            assert await b.get_many(["x", "y", "z"]) == {"x": "b"}
            await a.delete_many(["x", "missing"])
            assert await a.get_many(["x", "y"]) == {"y": "a"}
            assert await b.get("x") == "b"
            assert await ac.get_many(["x", "y", "z"]) == {"x": "root", "y": "root"}
            await ac.flush()
        assert sqlite_where.peek("x", namespace="a") is None
        assert sqlite_where.peek("y", namespace="a") == "a"
        assert sqlite_where.peek("x", namespace="b") == "b"
        assert sqlite_where.peek("x") == "root"
        assert sqlite_where.peek("z") is None

    run(main())


def test_expired_data_is_gone_from_get_many_and_get_or_set_computes_again(
        sqlite_where: Where) -> None:
    # After a namespace's expire= has passed, get_many leaves the key out and get_or_set
    # calls its default again (the data ended, not just the cached copy).
    calls: list[str] = []

    async def fresh() -> str:
        calls.append("x")
        return f"v{len(calls)}"

    async def main() -> None:
        async with cw.AsyncCache(store=sqlite_where.store(),
                                 policy=cw.WriteBack(max_delay=0.05)) as ac:
            sessions = ac.namespace("sessions", expire=0.4)
            assert await sessions.get_or_set("s", fresh) == "v1"
            assert await sessions.get_or_set("s", fresh) == "v1"
            await sessions.set_many({"t": 1, "u": 2})
            await ac.flush()
            assert sqlite_where.peek("s", namespace="sessions") == "v1"
            deadline = time.monotonic() + 10
            while await sessions.get_many(["s", "t", "u"]) != {}:
                assert time.monotonic() < deadline, "the data never ended"
                await asyncio.sleep(0.05)
            assert await sessions.get_or_set("s", fresh) == "v2"
            assert calls == ["x", "x"]
            assert await sessions.get("s") == "v2"

    run(main())


def test_namespace_ttl_ends_the_cached_copy_and_the_next_get_loads(make_store: Any) -> None:
    # ttl= is the cached copy's lifetime: once it passes, a get loads the store again
    # (one more load in stats) and the row is unchanged.
    ds = make_store({"k": "stored"})

    async def main() -> None:
        async with cw.AsyncCache(store=ds.store) as ac:
            ns = ac.namespace("short", ttl=0.3)
            await ns.set("a", 1)
            assert await ns.get("a") == 1
            loads = ac.stats().loads
            deadline = time.monotonic() + 10
            while ac.stats().loads == loads:
                assert time.monotonic() < deadline, "the copy never ended"
                assert await ns.get("a") == 1
                await asyncio.sleep(0.05)
            assert ds.data["short:a"] == 1
            # a per-call ttl longer than the namespace's is kept for that key
            await ns.set("b", 2, ttl=60)
            await asyncio.sleep(0.5)
            before = ac.stats().loads
            assert await ns.get("b") == 2
            assert ac.stats().loads == before

    run(main())


@dataclasses.dataclass
class Point:
    x: int
    when: datetime.date
    tags: tuple[str, ...] = ()


class Item(msgspec.Struct):
    sku: str
    qty: int
    seen: datetime.datetime | None = None


class Order(pydantic.BaseModel):
    id: int
    lines: list[str]
    placed: datetime.date


TYPED: dict[str, tuple[Any, Any, Any]] = {
    "dataclass": (Point, Point(1, datetime.date(2024, 1, 2), ("a",)),
                  Point(2, datetime.date(2025, 3, 4))),
    "msgspec": (Item, Item("a", 1, datetime.datetime(2024, 1, 2, 3, 4, 5)), Item("b", 2)),
    "pydantic": (Order, Order(id=1, lines=["x"], placed=datetime.date(2024, 1, 2)),
                 Order(id=2, lines=[], placed=datetime.date(2025, 5, 6))),
}


@pytest.mark.parametrize("tp", list(TYPED))
def test_typed_namespace_many_calls_and_get_or_set_through_redis_and_postgres(
        pg_where: Where, backends: Callable[[], cw.RedisBackend], tp: str) -> None:
    # set_many/get_many/get_or_set on a typed namespace answer the type from memory, from
    # another cache's Redis copy and from the store (typed guide).
    cls, one, two = TYPED[tp]

    async def make_two() -> Any:
        return two

    async def main() -> None:
        async with cw.AsyncCache(store=pg_where.store(), backend=backends(),
                                 policy=cw.WriteBack(max_delay=0.05)) as ac:
            ns = ac.namespace("things", type=cls)
            await ns.set_many({"1": one})
            assert await ns.get_or_set("2", make_two) == two
            got = await ns.get_many(["1", "2", "3"])
            assert got == {"1": one, "2": two}
            assert all(type(v) is cls for v in got.values())
            await ac.flush()
        async with cw.AsyncCache(store=pg_where.store(), backend=backends()) as other:
            ns = other.namespace("things", type=cls)
            got = await ns.get_many(["1", "2"])       # the shared Redis copies
            assert got == {"1": one, "2": two}
            assert all(type(v) is cls for v in got.values())
            await ns.invalidate_many(["1", "2"])
            got = await ns.get_many(["1", "2"])       # the store rows
            assert got == {"1": one, "2": two}
            assert all(type(v) is cls for v in got.values())
            assert await ns.get_or_set("1", make_two) == one   # found: default not used

    run(main())


@pytest.mark.parametrize("tp", list(TYPED))
def test_typed_mismatches_raise_as_on_cache_and_store_nothing(sqlite_where: Where,
                                                               tp: str) -> None:
    # A value of another type, in set, set_many or from a get_or_set default, raises
    # SerializationError on AsyncCache as on Cache; nothing of the call is kept.
    cls, one, _ = TYPED[tp]
    wrong: list[Any] = [{"a": 1}, "text", 3, [1]]

    with cw.Cache(store=sqlite_where.store()) as cache:
        sync_ns = cache.namespace("t", type=cls)
        sync_errors = []
        for bad in wrong:
            with pytest.raises(cw.CachewayError) as info:
                sync_ns.set("x", bad)
            sync_errors.append(type(info.value))
        with pytest.raises(cw.ConfigError):
            sync_ns.incr("n")

    async def bad_default() -> Any:
        return {"not": "it"}

    async def main() -> None:
        async with cw.AsyncCache(store=sqlite_where.store(),
                                 policy=cw.WriteBack(max_delay=0.05)) as ac:
            ns = ac.namespace("t", type=cls)
            await ns.set("kept", one)
            for bad, err in zip(wrong, sync_errors, strict=True):
                with pytest.raises(cw.SerializationError) as info:
                    await ns.set("x", bad)
                assert type(info.value) is err
                assert cls.__name__ in str(info.value)     # the message names the type
            with pytest.raises(cw.SerializationError):
                await ns.set_many({"y": one, "z": {"a": 1}})
            with pytest.raises(cw.SerializationError):
                await ns.get_or_set("w", bad_default)
            with pytest.raises(cw.ConfigError):
                await ns.incr("n")
            with pytest.raises(cw.ConfigError):
                ac.namespace("t", type=dict)
            assert await ns.get_many(["x", "y", "z", "w"]) == {}
            assert await ns.get("kept") == one
            await ac.flush()
            assert ac.stats().flush_errors == 0
        for key in ("x", "y", "z", "w"):
            assert sqlite_where.peek(key, namespace="t") is None, key
        assert sqlite_where.peek("kept", namespace="t") is not None

    assert sync_errors == [cw.SerializationError] * len(wrong)
    run(main())


def test_cached_stampede_of_50_tasks_calls_once_over_redis(
        pg_where: Where, backends: Callable[[], cw.RedisBackend],
        make_policy: Callable[[], Any]) -> None:
    # 50 tasks call one cached async function while its first call is held: one call,
    # 50 equal answers (guarantee 5 for @acache.cached), under every policy.
    calls: list[int] = []

    async def main() -> None:
        gate = asyncio.Event()
        async with cw.AsyncCache(store=pg_where.store(), backend=backends(),
                                 policy=make_policy()) as ac:
            @ac.cached(ttl=60)
            async def report(day: int) -> dict[str, int]:
                calls.append(day)
                await gate.wait()
                return {"day": day, "total": day * 10}

            tasks = [asyncio.create_task(report(3)) for _ in range(50)]
            deadline = time.monotonic() + 10
            while not calls:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)           # let every task reach the cache
            gate.set()
            got = await asyncio.gather(*tasks)
            assert got == [{"day": 3, "total": 30}] * 50
            assert calls == [3]
            assert await report(3) == {"day": 3, "total": 30}
            assert calls == [3]

    run(main())


def make_named(ac: cw.AsyncCache, tag: str, calls: list[str]) -> Any:
    """A cached ``async def lookup`` whose qualified name includes the factory's name."""
    if tag == "a":
        def factory_a() -> Any:
            @ac.cached(ttl=60)
            async def lookup(x: Any, scale: int = 1) -> str:
                calls.append(f"a{x!r}")
                return f"a:{x!r}:{scale}"
            return lookup
        return factory_a()

    def factory_b() -> Any:
        @ac.cached(ttl=60)
        async def lookup(x: Any, scale: int = 1) -> str:
            calls.append(f"b{x!r}")
            return f"b:{x!r}:{scale}"
        return lookup
    return factory_b()


def test_cached_keys_by_qualified_name_and_bound_arguments(sqlite_where: Where) -> None:
    # Two functions named `lookup` with other qualified names keep their own results; the
    # key is the bound arguments with defaults applied (1 and "1" differ, scale=1 is the
    # default); invalidate drops one call only; a new cache on the same store reuses them.
    calls: list[str] = []

    async def main() -> None:
        async with cw.AsyncCache(store=sqlite_where.store()) as ac:
            la, lb = make_named(ac, "a", calls), make_named(ac, "b", calls)
            assert la.__qualname__ != lb.__qualname__
            assert await la(1) == "a:1:1"
            assert await lb(1) == "b:1:1"
            assert await la(1, scale=1) == "a:1:1"
            assert await la(x=1) == "a:1:1"
            assert await la("1") == "a:'1':1"
            assert await la(1, 2) == "a:1:2"
            assert calls == ["a1", "b1", "a'1'", "a1"]
            await la.invalidate(1)
            await la.invalidate(99)               # never called: no error
            assert await la(1) == "a:1:1"
            assert await lb(1) == "b:1:1"
            assert await la(1, 2) == "a:1:2"
            assert calls == ["a1", "b1", "a'1'", "a1", "a1"]
        async with cw.AsyncCache(store=sqlite_where.store()) as again:
            la2 = make_named(again, "a", calls)
            assert await la2("1") == "a:'1':1"
            assert len(calls) == 5                # the stored result outlived the restart

    run(main())


def test_get_or_set_errors_reach_every_waiter_and_store_nothing(pg_where: Where,
                                                                backends: Any) -> None:
    # A stampede of get_or_set on a missing key with a failing async default: one call,
    # every task gets the exception, nothing is stored; the next call computes again.
    calls = 0

    async def failing() -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        raise LookupError("upstream down")

    async def main() -> None:
        async with cw.AsyncCache(store=pg_where.store(), backend=backends()) as ac:
            got = await asyncio.gather(*(ac.get_or_set("k", failing) for _ in range(20)),
                                       return_exceptions=True)
            assert all(isinstance(r, LookupError) for r in got), got
            assert calls == 1
            assert await ac.get("k", "absent") == "absent"
            assert pg_where.peek("k") is None
            assert await ac.get_or_set("k", lambda: 5) == 5
            assert pg_where.peek("k") == 5

    run(main())


# == 4. no cache call blocks the loop ==========================================================

class SlowStore:
    """A sync ``CallbackStore`` whose every callback blocks its thread for 300 ms."""

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        self.data = dict(data or {})
        self.calls = 0
        self.lock = threading.Lock()
        self.threads: set[int] = set()  # the thread of each call

    def load_many(self, keys: list[str]) -> dict[str, Any]:
        time.sleep(SLOW)
        with self.lock:
            self.threads.add(threading.get_ident())
            self.calls += 1
            return {k: self.data[k] for k in keys if k in self.data}

    def save_many(self, items: list[tuple[str, Any]]) -> None:
        time.sleep(SLOW)
        with self.lock:
            self.threads.add(threading.get_ident())
            self.calls += 1
            self.data.update(items)

    def delete_many(self, keys: list[str]) -> None:
        time.sleep(SLOW)
        with self.lock:
            self.threads.add(threading.get_ident())
            self.calls += 1
            for k in keys:
                self.data.pop(k, None)

    def store(self) -> cw.CallbackStore:
        return cw.CallbackStore(load_many=self.load_many, save_many=self.save_many,
                                delete_many=self.delete_many)


async def op_set(ac: cw.AsyncCache) -> None:
    await ac.set("w", 1)


async def op_set_many(ac: cw.AsyncCache) -> None:
    await ac.set_many({"w1": 1, "w2": 2})


async def op_delete_many(ac: cw.AsyncCache) -> None:
    await ac.delete_many(["a", "b"])


async def op_incr(ac: cw.AsyncCache) -> None:
    assert await ac.incr("n", 2) == 7


async def op_get_miss(ac: cw.AsyncCache) -> None:
    assert await ac.get("a") == 1


async def op_get_many_miss(ac: cw.AsyncCache) -> None:
    assert await ac.get_many(["a", "b", "zz"]) == {"a": 1, "b": 2}


async def op_get_or_set_miss(ac: cw.AsyncCache) -> None:
    assert await ac.get_or_set("new", lambda: "made") == "made"


async def op_cached_miss(ac: cw.AsyncCache) -> None:
    @ac.cached(ttl=60)
    async def f(x: int) -> int:
        return x + 1

    assert await f(1) == 2


async def op_namespace_set(ac: cw.AsyncCache) -> None:
    await ac.namespace("views").set("p", {"n": 1})


async def op_concurrent(ac: cw.AsyncCache) -> None:
    await asyncio.gather(op_get_miss(ac), op_set(ac), ac.get("b"), ac.set("c", 3),
                         ac.delete("zz"))


WRITE_THROUGH_OPS: dict[str, Callable[[cw.AsyncCache], Awaitable[None]]] = {
    "set": op_set, "set_many": op_set_many, "delete_many": op_delete_many, "incr": op_incr,
    "get-miss": op_get_miss, "get_many-miss": op_get_many_miss,
    "get_or_set-miss": op_get_or_set_miss, "cached-miss": op_cached_miss,
    "namespace-set": op_namespace_set, "concurrent": op_concurrent,
}


@pytest.mark.parametrize("op", list(WRITE_THROUGH_OPS))
def test_a_300ms_sync_callback_never_blocks_the_loop_under_write_through(op: str) -> None:
    # The call waits for the slow store (its own time is >= 300 ms), the loop does not:
    # a ticker's worst lateness stays well below 300 ms.
    slow = SlowStore({"a": 1, "b": 2, "n": 5})

    async def main() -> None:
        async with cw.AsyncCache(store=slow.store(), policy=cw.WriteThrough()) as ac:
            async with Ticker() as ticker:
                t0 = time.monotonic()
                await WRITE_THROUGH_OPS[op](ac)
                took = time.monotonic() - t0
            assert took >= SLOW * 0.9, f"the store was not used ({took:.3f} s)"
            assert slow.calls >= 1
            assert threading.get_ident() not in slow.threads, "a callback ran on the loop"
            assert ticker.worst < LOOP_BOUND, f"the loop was held {ticker.worst:.3f} s"

    run(main())


def test_a_300ms_sync_callback_never_blocks_the_loop_in_write_back_flush_and_close(
        tmp_path: Path) -> None:
    # Write-back with a journal: set/incr return at once, flush and close wait for two slow
    # store calls, and the loop is never held meanwhile.
    slow = SlowStore({"n": 1})

    async def main() -> None:
        policy = cw.WriteBack(max_delay=30, journal=str(tmp_path / "j.wal"), fsync="always")
        ac = cw.AsyncCache(store=slow.store(), policy=policy)
        async with Ticker() as ticker:
            await asyncio.gather(*(ac.set(f"k{i}", i) for i in range(20)))
            await ac.delete("gone")
            assert await ac.get("k3") == 3                 # the dirty table answers
            t0 = time.monotonic()
            await ac.flush()
            assert time.monotonic() - t0 >= SLOW * 0.9
            assert slow.data["k19"] == 19
            await ac.set("late", "x")
            await ac.close()                               # close flushes too
        assert slow.data["late"] == "x"
        assert ticker.worst < LOOP_BOUND, f"the loop was held {ticker.worst:.3f} s"

    run(main())


# == 5. bad input ==============================================================================

BAD_KEYS: list[Any] = [1, None, b"k", ("t",), 2.5]


def sync_error(call: Callable[[], Any]) -> type[BaseException]:
    try:
        call()
    except Exception as exc:  # we compare the exception's class
        return type(exc)
    raise AssertionError("the thread front accepted it")


async def async_error(call: Callable[[], Awaitable[Any]]) -> type[BaseException]:
    try:
        await call()
    except Exception as exc:
        return type(exc)
    raise AssertionError("the asyncio front accepted it")


KEY_CALLS: dict[str, Callable[[Any, Any], Any]] = {
    "get": lambda c, k: c.get(k),
    "set": lambda c, k: c.set(k, 1),
    "delete": lambda c, k: c.delete(k),
    "incr": lambda c, k: c.incr(k),
    "get_or_set": lambda c, k: c.get_or_set(k, 1),
    "invalidate": lambda c, k: c.invalidate(k),
    "get_many": lambda c, k: c.get_many(["ok", k]),
    "set_many": lambda c, k: c.set_many({"ok": 2, k: 1}),
    "delete_many": lambda c, k: c.delete_many(["ok", k]),
    "invalidate_many": lambda c, k: c.invalidate_many(["ok", k]),
}


@pytest.mark.parametrize("policy", ["write-through", "write-back"])
def test_wrong_key_types_raise_the_same_error_as_on_cache_and_damage_nothing(
        sqlite_where: Where, policy: str, tmp_path: Path) -> None:
    make = (lambda: cw.WriteThrough()) if policy == "write-through" else (
        lambda: cw.WriteBack(max_delay=0.05))
    with cw.Cache(store=cw.SQLiteStore(str(tmp_path / "sync.db")), policy=make()) as cache:
        cache.set("ok", "kept")
        expected = {(name, repr(bad)): sync_error(lambda n=name, b=bad: KEY_CALLS[n](cache, b))
                    for name in KEY_CALLS for bad in BAD_KEYS}
        assert cache.get("ok") == "kept"
    for err in expected.values():
        assert issubclass(err, (TypeError, ValueError, cw.CachewayError)), err

    async def main() -> None:
        async with cw.AsyncCache(store=sqlite_where.store(), policy=make()) as ac:
            await ac.set("ok", "kept")
            ns = ac.namespace("ns")
            for (name, bad_repr), err in expected.items():
                bad = next(b for b in BAD_KEYS if repr(b) == bad_repr)
                got = await async_error(lambda n=name, b=bad: KEY_CALLS[n](ac, b))
                assert got is err, (name, bad_repr, got, err)
                got = await async_error(lambda n=name, b=bad: KEY_CALLS[n](ns, b))
                assert got is err, ("namespace", name, bad_repr, got, err)
            assert await ac.get("ok") == "kept"
            assert await ns.get_many(["ok"]) == {}
            await ac.flush()
            assert ac.stats().flush_errors == 0
        assert sqlite_where.peek("ok") == "kept"

    run(main())


@pytest.mark.parametrize("name", list(UNFAITHFUL))
def test_unserializable_values_are_refused_on_the_queue_and_nothing_is_queued(
        sqlite_where: Where, qname: str, name: str) -> None:
    # On the write-behind queue too, a value JSON cannot give back raises
    # SerializationError at set/set_many (as on Cache): no entry reaches Redis, so no
    # consumer can ever fail on it.
    value = UNFAITHFUL[name]

    async def main() -> None:
        policy = queue_policy(qname, partitions=2, in_process=False)
        async with cw.AsyncCache(store=sqlite_where.store(), policy=policy) as ac:
            with pytest.raises(cw.SerializationError):
                await ac.set("bad", value)
            with pytest.raises(cw.SerializationError):
                await ac.set_many({"good": 1, "bad": value})
            with pytest.raises(cw.SerializationError):
                await ac.namespace("ns").set("bad", value)
            assert await ac.get_many(["good", "bad"]) == {}
            assert await ac.pending() == 0
            assert depth(ac) == 0

    with (cw.Cache(store=cw.SQLiteStore(sqlite_where.path, table="other")) as cache,
          pytest.raises(cw.SerializationError)):
        cache.set("bad", value)
    run(main())


def test_a_cached_function_with_an_unkeyable_argument_raises_as_on_cache(
        sqlite_where: Where) -> None:
    # An argument the default key cannot serialize raises at the call on both fronts with
    # the same exception class; the cache keeps working.
    with cw.Cache(store=cw.SQLiteStore(sqlite_where.path, table="sync")) as cache:
        @cache.cached(ttl=60)
        def sync_f(x: Any) -> int:
            return 1

        err = sync_error(lambda: sync_f(object()))
    assert issubclass(err, (TypeError, ValueError, cw.CachewayError)), err

    async def main() -> None:
        async with cw.AsyncCache(store=sqlite_where.store()) as ac:
            @ac.cached(ttl=60)
            async def f(x: Any) -> int:
                return 1

            for bad in (object(), {1, 2}, b"raw"):
                got = await async_error(lambda b=bad: f(b))
                assert got is err, (bad, got, err)
            assert await f(3) == 1

    run(main())


def test_refused_calls_leave_no_journal_record(tmp_path: Path) -> None:
    # Refused calls on a journalled write-back AsyncCache write no record: with the store
    # down, close(timeout) raises and the journal keeps exactly the accepted writes, as
    # `cacheway journal inspect` shows (journal page).
    from accept_support import cli

    journal = str(tmp_path / "bad.wal")

    async def save_many(items: list[tuple[str, Any]]) -> None:
        raise ConnectionError("store is down")

    async def load_many(keys: list[str]) -> dict[str, Any]:
        return {}

    async def main() -> None:
        store = cw.CallbackStore(load_many=load_many, save_many=save_many,
                                 delete_many=save_many)
        policy = cw.WriteBack(max_delay=0.05, journal=journal, fsync="always")
        ac = cw.AsyncCache(store=store, policy=policy)
        await ac.set("a", 1)
        for bad_call in (lambda: ac.set("b", (1, 2)), lambda: ac.set(3, 1),
                         lambda: ac.incr("a", 1.5), lambda: ac.set_many({"c": {1, 2}}),
                         lambda: ac.set("d", float("nan")), lambda: ac.delete(None)):
            await async_error(bad_call)
        assert await ac.incr("e", 2) == 2
        assert await ac.get_many(["a", "b", "c", "d", "e"]) == {"a": 1, "e": 2}
        with pytest.raises(cw.StoreError):
            await ac.close(timeout=0.5)

    run(main())
    proc = cli("journal", "inspect", journal)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if "records to replay" in ln)
    assert re.search(r"\b2\b", line), proc.stdout


def test_postgres_async_path_refuses_bad_input_like_cache(
        pg_where: Where, backends: Callable[[], cw.RedisBackend]) -> None:
    # Over PostgreSQL + Redis the asyncio front writes on the loop (FastAPI guide); bad
    # input there raises the same errors as the thread front's and leaves the row alone.
    bad_values: list[Any] = [(1, 2), float("inf"), "nul\x00", {"k": object()}]

    with cw.Cache(store=pg_where.store(), backend=backends()) as cache:
        expected = [sync_error(lambda v=v: cache.set("k", v)) for v in bad_values]
    assert all(issubclass(e, cw.CachewayError) for e in expected), expected

    async def main() -> None:
        async with cw.AsyncCache(store=pg_where.store(), backend=backends()) as ac:
            await ac.set("k", "good")
            for v, err in zip(bad_values, expected, strict=True):
                got = await async_error(lambda v=v: ac.set("k", v))
                assert got is err, (v, got, err)
                got = await async_error(lambda v=v: ac.set_many({"k": "new", "j": v}))
                assert got is err, (v, got, err)
            assert await ac.get_many(["k", "j"]) == {"k": "good"}
        assert pg_where.peek("k") == "good"
        assert pg_where.peek("j") is None

    run(main())



# == more: the queue with the rest of the API, the loop with waits of other kinds =============

@pytest.mark.parametrize("case", ["nul-in-key", "nul-in-value", "long-key"])
def test_queue_refuses_what_the_store_can_never_take_at_set(
        pg_where: Where, qname: str, backends: Callable[[], cw.RedisBackend], case: str) -> None:
    # Guarantee 7 over the queue: a key or value PostgreSQL can never take is refused at
    # set (or taken and given back), never acknowledged and then dead-lettered by a consumer.
    key, value = {"nul-in-key": ("a\x00b", 1), "nul-in-value": ("k", "a\x00b"),
                  "long-key": ("x" * 10_000, 1)}[case]
    dead: list[str] = []

    async def main() -> None:
        policy = queue_policy(qname, partitions=2, on_dead_letter=lambda k, v, e: dead.append(k))
        async with cw.AsyncCache(store=pg_where.store(), backend=backends(),
                                 policy=policy) as ac:
            try:
                await ac.set(key, value)
            except (TypeError, ValueError, cw.CachewayError):
                refused = True
            else:
                refused = False
            await ac.set("other", "fine")
            await ac.flush(timeout=30)
            assert ac.stats().flush_errors == 0
            assert ac.stats().dead_letters == 0
            assert all(p.dead == 0 for p in ac.stats().queue)
        assert dead == []
        assert pg_where.peek("other") == "fine"
        if not refused:
            assert pg_where.peek(key) == value

    run(main(), timeout=60)


def test_queue_typed_namespace_cached_function_and_get_or_set(
        pg_where: Where, qname: str, backends: Callable[[], cw.RedisBackend]) -> None:
    # Typed values, a cached async function's results and get_or_set results travel
    # through the queue's stream and come back with their types from every level.
    cls, one, two = TYPED["dataclass"]
    calls: list[int] = []

    async def main() -> None:
        async with cw.AsyncCache(store=pg_where.store(), backend=backends(),
                                 policy=queue_policy(qname)) as ac:
            points = ac.namespace("points", type=cls)
            await points.set("1", one)
            assert await points.get_or_set("2", lambda: two) == two

            @ac.cached(ttl=60)
            async def area(w: int, h: int = 2) -> dict[str, int]:
                calls.append(w)
                await asyncio.sleep(0.02)
                return {"area": w * h}

            got = await asyncio.gather(*(area(5) for _ in range(20)))
            assert got == [{"area": 10}] * 20
            assert calls == [5]
            await ac.flush(timeout=30)
        async with cw.AsyncCache(store=pg_where.store(), backend=backends(),
                                 policy=queue_policy(qname)) as other:
            points = other.namespace("points", type=cls)
            await points.invalidate_many(["1", "2"])          # read from the store rows
            got = await points.get_many(["1", "2"])
            assert got == {"1": one, "2": two}
            assert all(type(v) is cls for v in got.values())

            @other.cached(ttl=60)
            async def area(w: int, h: int = 2) -> dict[str, int]:
                calls.append(w)
                return {"area": -1}

            assert await area(5, h=2) == {"area": 10}        # the stored result
            assert calls == [5]

    run(main(), timeout=60)


def test_queue_expired_counter_starts_again_from_zero(sqlite_where: Where, qname: str) -> None:
    # Queue guide: "A counter whose data ended starts again from 0: incr after the end
    # counts from 0", in the cache and in the store.
    async def main() -> None:
        async with cw.AsyncCache(store=sqlite_where.store(), policy=queue_policy(qname)) as ac:
            hits = ac.namespace("hits", expire=0.5)
            assert await hits.incr("c", 5) == 5
            assert await hits.incr("c", 2) == 7
            await ac.flush(timeout=30)
            assert sqlite_where.peek("c", namespace="hits") == 7
            deadline = time.monotonic() + 10
            while await hits.get("c", "ended") != "ended":
                assert time.monotonic() < deadline, "the counter never ended"
                await asyncio.sleep(0.05)
            assert await hits.incr("c", 3) == 3
            await ac.flush(timeout=30)
            assert sqlite_where.peek("c", namespace="hits") == 3

    run(main(), timeout=60)


def test_queue_close_with_a_timeout_and_no_worker_raises_and_keeps_the_writes(
        sqlite_where: Where, qname: str) -> None:
    # flush_in_process=False: close(timeout) is flush(timeout) then stop; with no worker it
    # raises StoreError, the cache is closed, and the writes stay queued for a consumer.
    async def main() -> None:
        ac = cw.AsyncCache(store=sqlite_where.store(),
                           policy=queue_policy(qname, in_process=False))
        await ac.set("a", 1)
        await ac.incr("n", 4)
        with pytest.raises(cw.StoreError):
            await ac.close(timeout=0.5)
        with pytest.raises(cw.ClosedError):
            await ac.get("a")
        assert sqlite_where.peek("a") is None
        async with cw.AsyncCache(store=sqlite_where.store(),
                                 policy=queue_policy(qname)) as consumer:
            deadline = time.monotonic() + 30
            while sqlite_where.peek("n") != 4:
                assert time.monotonic() < deadline, "the queued writes were lost"
                await asyncio.sleep(0.05)
            assert await consumer.get("a") == 1
        assert sqlite_where.peek("a") == 1

    run(main(), timeout=60)


def test_a_blocked_write_back_set_on_a_full_dirty_table_never_blocks_the_loop() -> None:
    # on_full="block": a set into a full dirty table waits for the (300 ms) flush, then
    # goes through; with a short block_timeout it raises Backpressure. The loop runs on.
    slow = SlowStore()

    async def main() -> None:
        policy = cw.WriteBack(max_delay=0.01, max_dirty=2, on_full="block", block_timeout=10)
        async with cw.AsyncCache(store=slow.store(), policy=policy) as ac, Ticker() as ticker:
            t0 = time.monotonic()
            for i in range(6):
                await ac.set(f"k{i}", i)
            assert time.monotonic() - t0 >= SLOW * 0.9       # some sets had to wait
            await ac.flush()
            assert ticker.worst < LOOP_BOUND, f"the loop was held {ticker.worst:.3f} s"
        assert slow.data == {f"k{i}": i for i in range(6)}

        gate = threading.Event()

        def stuck_save(items: list[tuple[str, Any]]) -> None:
            gate.wait(10)
            slow.data.update(items)

        store = cw.CallbackStore(load_many=slow.load_many, save_many=stuck_save,
                                 delete_many=slow.delete_many)
        policy = cw.WriteBack(max_delay=0.01, max_dirty=1, on_full="block", block_timeout=0.3)
        async with cw.AsyncCache(store=store, policy=policy) as ac, Ticker() as ticker:
            await ac.set("a", 1)
            deadline = time.monotonic() + 10
            raised = False
            while not raised:                                # the flush holds "a"
                assert time.monotonic() < deadline
                try:
                    await ac.set(f"x{time.monotonic()}", 2)
                except cw.Backpressure:
                    raised = True
            assert ticker.worst < LOOP_BOUND, f"the loop was held {ticker.worst:.3f} s"
            gate.set()
            await ac.flush()
        assert slow.data["a"] == 1

    run(main(), timeout=60)


def test_open_async_replaying_a_journal_into_a_300ms_store_never_blocks_the_loop(
        tmp_path: Path) -> None:
    # open_async builds the cache and replays its journal off the loop (its docstring):
    # a journal left by a thread-front cache whose store was down is replayed into a slow
    # sync callback store while a ticker runs.
    journal = str(tmp_path / "left.wal")

    def down(items: Any) -> None:
        raise ConnectionError("store is down")

    left = cw.Cache(store=cw.CallbackStore(load_many=lambda keys: {}, save_many=down,
                                           delete_many=down),
                    policy=cw.WriteBack(max_delay=0.05, journal=journal, fsync="always"))
    left.set("a", 1)
    left.set("b", [2])
    with pytest.raises(cw.StoreError):
        left.close(timeout=0.3)                 # the journal keeps a and b
    slow = SlowStore()

    async def main() -> None:
        async with Ticker() as ticker:
            ac = await cw.open_async(store=slow.store(), policy=cw.WriteBack(
                max_delay=0.05, journal=journal, fsync="always"))
            try:
                await ac.flush()
                assert slow.data == {"a": 1, "b": [2]}
                assert await ac.get("b") == [2]
            finally:
                await ac.close()
        assert slow.calls >= 1
        assert ticker.worst < LOOP_BOUND, f"the loop was held {ticker.worst:.3f} s"

    run(main())


def test_a_stalled_redis_under_the_queue_never_blocks_the_loop(
        sqlite_where: Where, qname: str) -> None:
    # The queue's Redis stops answering for a while (a stalled connection): queue writes
    # wait for it, the loop does not; once Redis answers, the writes are acknowledged and
    # reach the store.
    require("redis")
    from faultproxy import FaultProxy

    with FaultProxy(6379) as proxy:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        policy = cw.WriteBack(queue=url, queue_name=qname, partitions=2)

        async def main() -> None:
            async with cw.AsyncCache(store=sqlite_where.store(), policy=policy) as ac:
                await ac.set("warm", 0)
                async with Ticker() as ticker:
                    proxy.stall()
                    threading.Timer(SLOW, proxy.forward).start()
                    t0 = time.monotonic()
                    await ac.set("a", 1)
                    await ac.incr("n", 2)
                    assert time.monotonic() - t0 >= SLOW * 0.5  # the write waited for Redis
                    await ac.flush(timeout=30)
                assert ticker.worst < LOOP_BOUND, f"the loop was held {ticker.worst:.3f} s"
                assert sqlite_where.peek("a") == 1
                assert sqlite_where.peek("n") == 2

        run(main(), timeout=60)


def test_queue_app_killed_9_mid_writes_loses_no_acknowledged_write(
        where: Where, qname: str) -> None:
    # An AsyncCache app process on the queue (its own in-process consumer) is killed with
    # kill -9 while writing; a consumer in another cache takes its partitions over
    # (claim_after=1) and the store ends with every acknowledged write, counters once.
    require("redis")
    where.store().save_many({f"d{i}": "old" for i in range(300)})
    acked = write_then_kill9("async-queue", where.url(), f"{REDIS_URL} {qname}", at_least=30)
    assert 30 <= acked < 299, acked

    async def main() -> None:
        policy = queue_policy(qname, claim_after=1.0)
        async with cw.AsyncCache(store=where.store(), policy=policy) as ac:
            views = ac.namespace("views")
            last = f"k{acked - 1}"
            deadline = time.monotonic() + 30
            while where.peek(last) is None or where.peek(f"v{acked - 1}", "views") is None:
                assert time.monotonic() < deadline, "the dead app's writes never landed"
                await asyncio.sleep(0.1)
            assert poll(lambda: depth(ac) == 0, timeout=30), ac.stats().queue
            assert await views.get(f"v{acked - 1}") == [acked - 1]
        for i in range(acked):
            assert where.peek(f"k{i}") == {"i": i, "s": "x" * (i % 7)}, i
            assert where.peek(f"d{i}") is None, i
            assert where.peek(f"v{i}", namespace="views") == [i], i
        assert acked <= where.peek("n") <= acked + 1
        for i in range(acked + 1, 300):
            assert where.peek(f"d{i}") == "old", i

    run(main(), timeout=90)


def test_stats_queue_lists_each_queue_of_the_namespaces_once(
        sqlite_where: Where, qname: str, raw: Any) -> None:
    # stats().queue covers every queue the cache's namespaces write to, each partition of
    # each queue once (queue guide, "Watching the queue").
    other = qname + "_2"

    async def main() -> None:
        async with cw.AsyncCache(store=sqlite_where.store(),
                                 policy=queue_policy(qname, partitions=2)) as ac:
            same = ac.namespace("same")                  # inherits the cache's queue
            own = ac.namespace("own", policy=queue_policy(other, partitions=3))
            await same.set("a", 1)
            await own.set("b", 2)
            await ac.flush(timeout=30)
            seen = sorted((p.queue, p.partition) for p in ac.stats().queue)
            assert seen == [(qname, 0), (qname, 1), (other, 0), (other, 1), (other, 2)]
            assert sqlite_where.peek("b", namespace="own") == 2

    try:
        run(main(), timeout=60)
    finally:
        keys = list(raw.scan_iter(match="{" + other + "*", count=1000))
        if keys:
            raw.unlink(*keys)


def test_stats_while_the_queue_redis_is_stalled_does_not_hold_the_loop(
        sqlite_where: Where, qname: str) -> None:
    # stats() is a plain call of the asyncio front; reading the queue's status from a
    # Redis that stopped answering must not hold the event loop (DESIGN: no cache call
    # blocks the loop; the queue guide: stats().queue is empty while Redis cannot be read).
    require("redis")
    from faultproxy import FaultProxy

    with FaultProxy(6379) as proxy:
        policy = cw.WriteBack(queue=f"redis://127.0.0.1:{proxy.port}/0", queue_name=qname,
                              partitions=2)

        async def main() -> None:
            async with cw.AsyncCache(store=sqlite_where.store(), policy=policy) as ac:
                await ac.set("a", 1)
                await ac.flush(timeout=30)
                assert len(ac.stats().queue) == 2
                async with Ticker() as ticker:
                    proxy.stall()
                    try:
                        t0 = time.monotonic()
                        stats = ac.stats()
                        held = time.monotonic() - t0
                    finally:
                        proxy.forward()
                assert len(stats.queue) in (0, 2)
                assert max(held, ticker.worst) < LOOP_BOUND, (
                    f"stats() held the loop {held:.3f} s")

        run(main(), timeout=60)


def test_a_namespace_journal_replays_off_the_loop_when_first_used(tmp_path: Path) -> None:
    # A namespace with a store of its own replays its journal (PATH.<name>) when it is
    # opened (journal page); on AsyncCache the first awaited call opens it, and the replay
    # into a 300 ms store does not hold the loop.
    journal = str(tmp_path / "app.wal")
    db = str(tmp_path / "app.db")

    def down(items: Any) -> None:
        raise ConnectionError("store is down")

    policy = cw.WriteBack(max_delay=0.05, journal=journal, fsync="always")
    left = cw.Cache(store=cw.SQLiteStore(db), policy=policy)
    ns = left.namespace("side", store=cw.CallbackStore(load_many=lambda keys: {},
                                                       save_many=down, delete_many=down))
    ns.set("a", 1)
    ns.set("b", {"two": 2})
    with pytest.raises(cw.StoreError):
        left.close(timeout=0.3)                  # PATH.side keeps a and b
    slow = SlowStore()

    async def main() -> None:
        async with cw.AsyncCache(store=cw.SQLiteStore(db), policy=policy) as ac:
            async with Ticker() as ticker:
                t0 = time.monotonic()
                side = ac.namespace("side", store=slow.store())    # a plain call
                held = time.monotonic() - t0
                assert await side.get("b") == {"two": 2}
                await side.flush()
            assert sorted(slow.data.values(), key=repr) == [1, {"two": 2}]
            assert held < LOOP_BOUND, f"namespace() held the loop {held:.3f} s"
            assert ticker.worst < LOOP_BOUND, f"the loop was held {ticker.worst:.3f} s"

    run(main())


@pytest.mark.slow       # waits out the Redis client's socket timeout (~5 s)
def test_a_queue_write_redis_never_answers_raises_backend_error_off_the_loop(
        sqlite_where: Where, qname: str) -> None:
    # Queue guide: a write whose reply did not come back raises BackendError ("not
    # acknowledged"). On the asyncio front it raises at the awaited call, the loop runs on
    # meanwhile, and writes acknowledged before are kept.
    require("redis")
    from faultproxy import FaultProxy

    with FaultProxy(6379) as proxy:
        policy = cw.WriteBack(queue=f"redis://127.0.0.1:{proxy.port}/0", queue_name=qname,
                              partitions=2)

        async def main() -> None:
            async with cw.AsyncCache(store=sqlite_where.store(), policy=policy) as ac:
                await ac.set("before", 1)
                async with Ticker() as ticker:
                    proxy.stall()
                    try:
                        with pytest.raises(cw.BackendError):
                            await asyncio.wait_for(ac.set("during", 2), 30)
                    finally:
                        proxy.forward()
                assert ticker.worst < LOOP_BOUND, f"the loop was held {ticker.worst:.3f} s"
                await ac.set("after", 3)
                await ac.flush(timeout=30)
                assert sqlite_where.peek("before") == 1
                assert sqlite_where.peek("after") == 3
                assert await ac.get("after") == 3

        run(main(), timeout=60)


# -- a stalled Redis or PostgreSQL under the loop paths (FastAPI guide: they run on the loop
#    with redis.asyncio and psycopg's async pool) -------------------------------------------

async def stalled_op(ac: cw.AsyncCache, op: str) -> None:
    if op == "get-hit":
        assert await ac.get("seed") == "s"
    elif op == "get-miss":
        assert await ac.get("row") == "r"
    elif op == "get_many":
        assert await ac.get_many(["seed", "row", "none"]) == {"seed": "s", "row": "r"}
    elif op == "set":
        await ac.set("w", 1)
        assert await ac.get("w") == 1
    elif op == "delete":
        await ac.delete("seed")
        assert await ac.get("seed") is None
    elif op == "incr":
        assert await ac.incr("n", 2) == 2


STALL_OPS = ["get-hit", "get-miss", "get_many", "set", "delete", "incr"]


@pytest.mark.parametrize("stalled", ["redis", "postgres"])
@pytest.mark.parametrize("op", STALL_OPS)
def test_a_300ms_stall_of_redis_or_postgres_never_blocks_the_loop(
        pg_table: str, op: str, stalled: str) -> None:
    # Redis or PostgreSQL stops answering for 300 ms while a write-through call runs: the
    # call waits for it and succeeds, the loop is not held.
    require("redis")
    from faultproxy import FaultProxy
    from services import POSTGRES_DSN

    prefix = unique("a4s") + ":"
    port = 6379 if stalled == "redis" else 5432
    with FaultProxy(port) as proxy:
        redis_url = f"redis://127.0.0.1:{proxy.port}/0" if stalled == "redis" else REDIS_URL
        dsn = (POSTGRES_DSN.replace(":5432/", f":{proxy.port}/") if stalled == "postgres"
               else POSTGRES_DSN)
        assert dsn != POSTGRES_DSN or stalled == "redis"
        seed_store = cw.PostgresStore(POSTGRES_DSN, table=pg_table)
        seed_store.save_many({"row": "r"})
        seed_store.close()
        backend = cw.RedisBackend(redis_url, prefix=prefix)
        store = cw.PostgresStore(dsn, table=pg_table)

        async def main() -> None:
            async with cw.AsyncCache(store=store, backend=backend) as ac:
                await ac.set("seed", "s")
                await ac.get("none")                     # warm both connections
                async with Ticker() as ticker:
                    proxy.stall()
                    threading.Timer(SLOW, proxy.forward).start()
                    t0 = time.monotonic()
                    await asyncio.wait_for(stalled_op(ac, op), 30)
                    took = time.monotonic() - t0
                if (stalled, op) != ("postgres", "get-hit"):   # a hit needs no store
                    assert took >= SLOW * 0.5, f"the call did not wait ({took:.3f} s)"
                assert ticker.worst < LOOP_BOUND, f"the loop was held {ticker.worst:.3f} s"

        try:
            run(main(), timeout=60)
        finally:
            proxy.forward()
            backend.clear()
            backend.client.delete(prefix + "~clock")
            backend.close()
            store.close()


@dataclasses.dataclass
class User:
    """The User of the typed guide (as the writer child defines it)."""

    name: str
    joined: datetime.date
    tags: tuple[str, ...] = ()


def child_user(i: int) -> User:
    return User(f"u{i}", datetime.date(2000, 1, 1) + datetime.timedelta(days=i),
                ("t",) * (i % 3))


@pytest.mark.parametrize("writer", ["sync", "async"])
def test_typed_and_expiring_namespaces_replay_across_fronts_after_kill_9(
        sqlite_where: Where, writer: str, tmp_path: Path) -> None:
    # Typed values and expire= stamps survive a kill -9 through the namespaces' journals
    # and replay in the other front: users come back as User, sessions (expire=600) are
    # there, flash data (expire=0.5) ended at its own time, not at the replay's.
    from accept4a_support import TYPED_CHILD

    journal = str(tmp_path / "app.wal")
    acked = write_then_kill9(writer, sqlite_where.url(), journal, at_least=20,
                             script=TYPED_CHILD)
    killed = time.monotonic()
    assert sqlite_where.peek("u0", namespace="users") is None
    while time.monotonic() < killed + 0.7:       # let the flash data's own end pass
        time.sleep(0.05)
    policy = cw.WriteBack(max_delay=0.05, journal=journal, fsync="always")

    async def reopen_async() -> None:
        async with cw.AsyncCache(store=sqlite_where.store(), policy=policy) as ac:
            users = ac.namespace("users", type=User)
            sessions = ac.namespace("sessions", expire=600)
            flash = ac.namespace("flash", expire=0.5)
            await ac.flush(timeout=30)
            got = await users.get_many([f"u{i}" for i in range(acked)])
            assert got == {f"u{i}": child_user(i) for i in range(acked)}
            assert all(type(u) is User and type(u.tags) is tuple for u in got.values())
            assert await sessions.get(f"s{acked - 1}") == {"i": acked - 1}
            assert await flash.get_many([f"f{i}" for i in range(acked)]) == {}

    def reopen_sync() -> None:
        with cw.Cache(store=sqlite_where.store(), policy=policy) as cache:
            users = cache.namespace("users", type=User)
            sessions = cache.namespace("sessions", expire=600)
            flash = cache.namespace("flash", expire=0.5)
            cache.flush(timeout=30)
            got = users.get_many([f"u{i}" for i in range(acked)])
            assert got == {f"u{i}": child_user(i) for i in range(acked)}
            assert all(type(u) is User and type(u.tags) is tuple for u in got.values())
            assert sessions.get(f"s{acked - 1}") == {"i": acked - 1}
            assert flash.get_many([f"f{i}" for i in range(acked)]) == {}

    if writer == "sync":
        run(reopen_async())
    else:
        reopen_sync()
    for i in range(acked):
        assert sqlite_where.peek(f"s{i}", namespace="sessions") == {"i": i}, i
        assert sqlite_where.peek(f"f{i}", namespace="flash") is None, i
        assert sqlite_where.peek(f"u{i}", namespace="users") == {
            "name": f"u{i}", "joined": child_user(i).joined.isoformat(),
            "tags": ["t"] * (i % 3)}, i


def test_a_stampede_across_two_async_caches_sharing_redis_makes_one_store_load(
        pg_table: str) -> None:
    # Guarantee 5 across caches (as across processes): 25 tasks on each of two AsyncCaches
    # sharing Redis miss one key while PostgreSQL is stalled; the fill lease in Redis makes
    # it one store load in all, and every task gets the row.
    require("redis")
    from faultproxy import FaultProxy
    from services import POSTGRES_DSN

    prefix = unique("a4l") + ":"
    seed = cw.PostgresStore(POSTGRES_DSN, table=pg_table)
    seed.save_many({"row": {"v": 1}})
    seed.close()
    with FaultProxy(5432) as proxy:
        dsn = POSTGRES_DSN.replace(":5432/", f":{proxy.port}/")
        made = [(cw.PostgresStore(dsn, table=pg_table), cw.RedisBackend(REDIS_URL, prefix=prefix))
                for _ in range(2)]

        async def main() -> None:
            one = cw.AsyncCache(store=made[0][0], backend=made[0][1])
            two = cw.AsyncCache(store=made[1][0], backend=made[1][1])
            try:
                await one.get("warm")
                await two.get("warm")
                loads = one.stats().loads + two.stats().loads
                proxy.stall()
                threading.Timer(SLOW, proxy.forward).start()
                got = await asyncio.gather(*(ac.get("row") for ac in (one, two)
                                             for _ in range(25)))
                assert got == [{"v": 1}] * 50
                assert one.stats().loads + two.stats().loads - loads == 1
            finally:
                await one.close()
                await two.close()

        try:
            run(main(), timeout=60)
        finally:
            proxy.forward()
            made[0][1].clear()
            made[0][1].client.delete(prefix + "~clock")
            for store, backend in made:
                backend.close()
                store.close()


BAD_OPTIONS: dict[str, Callable[[Any], Any]] = {
    "namespace-empty-name": lambda c: c.namespace(""),
    "namespace-int-name": lambda c: c.namespace(3),
    "namespace-negative-ttl": lambda c: c.namespace("a", ttl=-1),
    "namespace-str-ttl": lambda c: c.namespace("b", ttl="60"),
    "namespace-zero-expire": lambda c: c.namespace("c", expire=0),
    "namespace-negative-expire": lambda c: c.namespace("d", expire=-5),
    "namespace-policy-str": lambda c: c.namespace("e", policy="fast"),
    "cached-negative-ttl": lambda c: c.cached(ttl=-1),
    "cached-key-not-callable": lambda c: c.cached(key="k"),
}


@pytest.mark.parametrize("case", list(BAD_OPTIONS))
def test_bad_options_raise_the_same_error_on_both_fronts(sqlite_where: Where,
                                                         case: str) -> None:
    # Plain calls with bad options raise at the call, with the same class on AsyncCache as
    # on Cache, and the cache goes on working.
    with cw.Cache(store=cw.SQLiteStore(sqlite_where.path, table="sync")) as cache:
        err = sync_error(lambda: BAD_OPTIONS[case](cache))
        cache.set("x", 1)
    assert issubclass(err, (TypeError, ValueError, cw.CachewayError)), err

    async def main() -> None:
        async with cw.AsyncCache(store=sqlite_where.store()) as ac:
            got = sync_error(lambda: BAD_OPTIONS[case](ac))
            assert got is err, (got, err)
            await ac.set("x", 1)
            assert await ac.get("x") == 1

    run(main())


@pytest.mark.parametrize("ttl", [-1, "60", float("nan"), [1]])
def test_bad_per_call_ttl_raises_the_same_error_on_both_fronts(sqlite_where: Where,
                                                               ttl: Any) -> None:
    with cw.Cache(store=cw.SQLiteStore(sqlite_where.path, table="sync")) as cache:
        errs = [sync_error(lambda: cache.set("k", 1, ttl=ttl)),
                sync_error(lambda: cache.set_many({"k": 1}, ttl=ttl)),
                sync_error(lambda: cache.get_or_set("k", 1, ttl=ttl))]
        assert cache.get("k") is None

    async def main() -> None:
        async with cw.AsyncCache(store=sqlite_where.store()) as ac:
            got = [await async_error(lambda: ac.set("k", 1, ttl=ttl)),
                   await async_error(lambda: ac.set_many({"k": 1}, ttl=ttl)),
                   await async_error(lambda: ac.get_or_set("k", 1, ttl=ttl))]
            assert got == errs
            assert await ac.get("k") is None
        assert sqlite_where.peek("k") is None

    run(main())


def test_open_async_with_queue_options(
        pg_where: Where, qname: str, backends: Callable[[], cw.RedisBackend]) -> None:
    # open_async takes the WriteBack options by name (URL page), queue ones included; a set
    # is seen at once by another cache sharing Redis, and flush puts the writes in the store.
    shared = backends()
    pg_where.store().save_many({"gone": "old", "kept": "old"})
    cache = cw.Cache(store=pg_where.store(), backend=shared, policy=queue_policy(qname))

    async def main() -> None:
        ac = await cw.open_async(store=pg_where.url(),
                                 backend=f"{REDIS_URL}?prefix={shared.prefix}",
                                 policy="write-back", queue=REDIS_URL, queue_name=qname,
                                 partitions=4)
        try:
            assert cache.get("kept") == "old"            # a copy in Redis now
            await ac.set("kept", "new")
            assert cache.get("kept") == "new"
            await ac.delete("gone")
            await ac.flush(timeout=30)
            assert pg_where.peek("gone") is None
            assert pg_where.peek("kept") == "new"
            assert cache.get("gone") is None
            assert {p.queue for p in ac.stats().queue} == {qname}
        finally:
            await ac.close()
        with pytest.raises(cw.ConfigError):
            await cw.open_async(store=pg_where.url(), policy=cw.WriteBack(), max_delay=1)
        with pytest.raises(cw.ConfigError):
            await cw.open_async(store=pg_where.url(), policy="write-back", queue_nam="typo")

    try:
        run(main(), timeout=60)
    finally:
        cache.close(timeout=10)


def test_queue_delete_of_a_stored_row_is_seen_at_once_by_a_cache_sharing_redis(
        pg_where: Where, qname: str, backends: Callable[[], cw.RedisBackend]) -> None:
    # No consumer runs (flush_in_process=False), so the delete waits in Redis: every cache
    # sharing the Redis copy must already answer "absent".
    pg_where.store().save_many({"gone": "old", "gone2": "old"})
    reader = cw.Cache(store=pg_where.store(), backend=backends(),
                      policy=queue_policy(qname, in_process=False))

    async def main() -> None:
        async with cw.AsyncCache(store=pg_where.store(), backend=backends(),
                                 policy=queue_policy(qname, in_process=False)) as ac, \
                cw.AsyncCache(store=pg_where.store(), backend=backends(),
                              policy=queue_policy(qname, in_process=False)) as other:
            assert reader.get("gone") == "old"           # a copy in Redis
            await ac.delete("gone")
            await ac.delete("gone2")                     # no copy in Redis before
            assert await ac.get("gone") is None          # the writer sees its delete
            try:
                assert await other.get("gone") is None
                assert await other.get_many(["gone", "gone2"]) == {}
                assert reader.get("gone") is None
                assert reader.get("gone2") is None
            finally:
                async with cw.AsyncCache(store=pg_where.store(),
                                         policy=queue_policy(qname)) as consumer:
                    await consumer.flush(timeout=30)
                    await ac.flush(timeout=30)

    try:
        run(main(), timeout=60)
    finally:
        reader.close(timeout=10)


def test_write_back_reads_and_counters_that_load_a_300ms_store_never_block_the_loop() -> None:
    # Under write-back, incr of an uncached counter, get_many and get_or_set misses load
    # the slow store first; those loads run off the loop too.
    slow = SlowStore({"n": 5, "a": 1})

    async def main() -> None:
        async with cw.AsyncCache(store=slow.store(), policy=cw.WriteBack(max_delay=30)) as ac:
            async with Ticker() as ticker:
                t0 = time.monotonic()
                assert await ac.incr("n", 2) == 7
                assert await ac.get_many(["a", "zz"]) == {"a": 1}
                assert await ac.get_or_set("new", lambda: "made") == "made"
                assert time.monotonic() - t0 >= 3 * SLOW * 0.9
                await ac.flush()
            assert ticker.worst < LOOP_BOUND, f"the loop was held {ticker.worst:.3f} s"
        assert slow.data["n"] == 7
        assert slow.data["new"] == "made"

    run(main())
