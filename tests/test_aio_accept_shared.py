"""AsyncCache acceptance: the known bugs' reproductions, several loops, caches sharing Redis.

Part of the AsyncCache acceptance tests: see ``aio_acceptance.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw
from aio_acceptance import (
    WB_DELETE_BUG,
    WB_MIX_BUG,
    DownStore,
    Env,
    acache_for,
    env_fixture,  # noqa: F401 - the env fixture
    run,
    wait_for_value,
)
from services import POSTGRES_DSN, REDIS_URL, require


def test_postgres_write_back_refuses_a_nul_in_a_value_at_set(pg_table: str) -> None:
    async def main() -> None:
        store = cw.PostgresStore(POSTGRES_DSN, table=pg_table)
        try:
            async with cw.AsyncCache(store=store, policy=cw.WriteBack(max_delay=0.05)) as ac:
                try:
                    await ac.set("k", "a\x00b")
                except cw.CachewayError:
                    return  # refused at the call: what DESIGN asks
                await ac.flush(timeout=5)  # accepted: then the store must have it
                assert store.load("k") == "a\x00b", "an acknowledged write was dropped"
        finally:
            store.close()

    run(main())


@pytest.mark.xfail(strict=True, reason=WB_DELETE_BUG)
def test_write_back_delete_is_seen_at_once_by_a_cache_sharing_redis(
    pg_table: str, tmp_path: Path
) -> None:
    require("redis")
    env = Env("servers", tmp_path, pg_table)

    async def main() -> None:
        a = acache_for(env, cw.WriteBack(max_delay=30.0))
        b = acache_for(env, cw.WriteBack(max_delay=30.0))
        async with a, b:
            await a.set("k", 1)
            await a.flush()
            await b.set("k", 2)
            assert await a.get("k") == 2  # a write-back set is seen at once
            await b.delete("k")
            assert await b.get("k") is None
            assert await a.get("k") is None  # gets 1: the store's row, older than 2

    try:
        run(main())
    finally:
        env.cleanup()


def test_postgres_write_back_refuses_what_its_store_cannot_take(pg_table: str) -> None:
    # The same value under WriteThrough is refused at set (InvalidWriteError); over a
    # SQLiteStore it round-trips. Under WriteBack it is acknowledged, then lost.
    async def main() -> None:
        store = cw.PostgresStore(POSTGRES_DSN, table=pg_table)
        policy = cw.WriteBack(max_delay=0.05)
        try:
            async with cw.AsyncCache(store=store, policy=policy,
                                     serializer=cw.MsgpackSerializer()) as ac:
                try:
                    await ac.set("k", b"\x00\xff")
                except cw.CachewayError:
                    return  # refused at the call: what DESIGN asks
                await ac.flush(timeout=5)
                await ac.invalidate("k")
                assert await ac.get("k") == b"\x00\xff", "an acknowledged write was dropped"
        finally:
            store.close()

    run(main())


# -- more of the contract ------------------------------------------------------------------------
def test_one_cache_used_from_several_event_loops(env: Env, make_policy: Callable[[], Any]) -> None:
    # A cache built at import (no loop running) and used from one asyncio.run per request
    # or test: each loop works (the guide: a pool belongs to one loop, a new one is opened).
    ac = acache_for(env, make_policy())

    async def once(i: int) -> tuple[Any, int]:
        await ac.set("k", i)
        return await ac.get("k"), await ac.incr("n")

    assert [run(once(i)) for i in range(3)] == [(0, 1), (1, 2), (2, 3)]
    run(ac.close())
    assert env.peek("k") == 2
    assert env.peek("n") == 3


def test_close_with_a_timeout_raises_and_the_journal_keeps_the_rest(tmp_path: Path) -> None:
    flaky = DownStore()

    async def main() -> None:
        store = flaky.store()
        policy = cw.WriteBack(max_delay=0.02, journal=str(tmp_path / "app.wal"),
                              retry=cw.Retry(base_delay=0.01, max_delay=0.02))
        ac = cw.AsyncCache(store=store, policy=policy)
        await ac.set("a", 1)
        with pytest.raises(cw.StoreError):
            await ac.close(timeout=0.3)
        flaky.down = False
        async with cw.AsyncCache(store=store, policy=policy) as again:  # replays
            await again.flush(timeout=5)
        assert flaky.data == {"a": 1}

    run(main())


def test_incr_past_the_serializers_range_is_refused(env: Env,
                                                    make_policy: Callable[[], Any]) -> None:
    async def main() -> None:
        async with acache_for(env, make_policy()) as ac:
            await ac.set("big", 2**64 - 1)
            with pytest.raises(cw.SerializationError):
                await ac.incr("big")
            assert await ac.get("big") == 2**64 - 1
            await ac.flush()
            assert ac.stats().flush_errors == 0
        assert env.peek("big") == 2**64 - 1

    run(main())


def test_caches_sharing_redis_see_write_back_sets_at_once_and_load_once(
    pg_table: str, tmp_path: Path
) -> None:
    require("redis")
    env = Env("servers", tmp_path, pg_table)
    env.store().save_many({"hot": "row"})

    async def main() -> None:
        a = acache_for(env, cw.WriteBack(max_delay=30.0))
        b = acache_for(env, cw.WriteBack(max_delay=30.0))
        async with a, b:
            got = await asyncio.gather(*(a.get("hot") for _ in range(20)),
                                       *(b.get("hot") for _ in range(20)))
            assert got == ["row"] * 40
            assert a.stats().loads + b.stats().loads == 1  # one load across both (a lease)
            await a.set("k", {"v": 1})
            assert await b.get("k") == {"v": 1}  # in Redis before set returned
            assert env.peek("k") is None  # only the store lags

    try:
        run(main())
    finally:
        env.cleanup()


def test_two_level_backends_from_urls_invalidate_each_other(
    pg_table: str, tmp_path: Path, make_policy: Callable[[], Any]
) -> None:
    require("redis")
    env = Env("servers", tmp_path, pg_table)
    name = {"WriteThrough": "write-through", "WriteBack": "write-back",
            "WriteAround": "write-around"}[type(make_policy()).__name__]
    url = REDIS_URL.replace("redis://", "redis+l1://", 1) + f"?prefix={env.prefix}"

    async def main() -> None:
        a = await cw.open_async(store=env.store_url(), backend=url, policy=name)
        b = await cw.open_async(store=env.store_url(), backend=url, policy=name)
        async with a, b:
            await a.set("k", 1)
            assert await b.get("k") == 1  # now in b's process memory too
            await a.set("k", 2)
            assert await wait_for_value(b, "k", 2, timeout=2.0)
            await a.delete("k")
            assert await wait_for_value(b, "k", None, timeout=2.0)

    try:
        run(main())
    finally:
        env.cleanup()


def test_counters_from_two_caches_sharing_redis_and_postgres_sum(
    pg_table: str, tmp_path: Path, make_policy: Callable[[], Any]
) -> None:
    require("redis")
    env = Env("servers", tmp_path, pg_table)

    async def main() -> None:
        a = acache_for(env, make_policy())
        b = acache_for(env, make_policy())
        async with a, b:
            await asyncio.gather(*(a.incr("n") for _ in range(50)),
                                 *(b.incr("n") for _ in range(50)),
                                 *(a.get("n") for _ in range(10)),
                                 *(b.invalidate("n") for _ in range(5)),
                                 *(b.get("n") for _ in range(10)))
            await a.flush()
            await b.flush()
            assert env.peek("n") == 100
            assert await a.get("n") == 100  # the caches agree with the store
            assert await b.get("n") == 100

    try:
        run(main())
    finally:
        env.cleanup()


def test_clear_errors_for_misuse_of_the_api(env: Env) -> None:
    async def main() -> None:
        async with acache_for(env, cw.WriteThrough()) as ac:
            with pytest.raises((TypeError, cw.ConfigError)):
                @ac.cached(ttl=1)
                def plain(x: int) -> int:  # not an async def
                    return x

            @ac.cached(ttl=1, key=lambda x: x)
            async def badkey(x: Any) -> Any:
                return x

            with pytest.raises((TypeError, cw.CachewayError)):
                await badkey(1)  # key= must return a str
            for name in ("", "a b", "x" * 500):
                with pytest.raises(cw.ConfigError):
                    ac.namespace(name)
            with pytest.raises(cw.ConfigError):
                cw.WriteBack(max_delay=-1)
            # a stored None is a value, not a miss
            await ac.set("none", None)
            assert await ac.get("none", "dflt") is None
            assert await ac.get_many(["none"]) == {"none": None}
            assert await ac.get_or_set("none", lambda: pytest.fail("loader called")) is None

    run(main())


@pytest.mark.xfail(strict=True, reason=WB_MIX_BUG)
@pytest.mark.parametrize(("first", "second", "want"), [
    (("set", 1), ("incr", 5), 6),    # b.incr returns 6; the store ends at 5
    (("incr", 5), ("set", 2), 2),    # the set was last; the store ends at 7
])
def test_write_back_set_and_incr_from_two_caches_keep_their_order(
    pg_table: str, tmp_path: Path, first: tuple[str, int], second: tuple[str, int], want: int
) -> None:
    # Guarantee 3 across processes sharing Redis: the last acknowledged write wins,
    # whichever cache flushes first. Here the later writer (b) flushes first.
    require("redis")
    env = Env("servers", tmp_path, pg_table)

    async def write(c: cw.AsyncCache, op: tuple[str, int]) -> None:
        if op[0] == "set":
            await c.set("k", op[1])
        else:
            await c.incr("k", op[1])

    async def main() -> None:
        a = acache_for(env, cw.WriteBack(max_delay=30.0))
        b = acache_for(env, cw.WriteBack(max_delay=30.0))
        async with a, b:
            await write(a, first)
            await write(b, second)
            assert await b.get("k") == want
            await b.flush()
            await a.flush()
            assert env.peek("k") == want
            assert await a.get("k") == want

    try:
        run(main())
    finally:
        env.cleanup()
