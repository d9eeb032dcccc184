"""AsyncCache acceptance: order under many tasks, a loop never blocked, journals across
the fronts, invalidation.

Part of the AsyncCache acceptance tests: see ``aio_acceptance.py``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw
from aio_acceptance import (
    Env,
    Ticker,
    acache_for,
    env_fixture,  # noqa: F401 - the env fixture
    run,
)
from services import require


# -- order, concurrency ----------------------------------------------------------------------
def test_per_key_order_and_agreement_with_many_tasks(
    env: Env, make_policy: Callable[[], Any]
) -> None:
    keys = [f"k{i}" for i in range(8)]

    async def writer(ac: Any, key: str) -> None:
        for i in range(25):
            await ac.set(key, i)

    async def filler(ac: Any, key: str) -> None:
        for _ in range(25):
            await ac.invalidate(key)
            await ac.get(key)

    async def shared(ac: Any, n: int) -> None:
        for i in range(10):
            await ac.set("hot", [n, i])

    async def main() -> None:
        async with acache_for(env, make_policy()) as ac:
            await asyncio.gather(
                *(writer(ac, k) for k in keys), *(filler(ac, k) for k in keys),
                *(shared(ac, n) for n in range(10)),
                *(ac.incr("count") for _ in range(100)),
            )
            await ac.flush()
            for k in keys:
                assert await ac.get(k) == 24, k
                assert env.peek(k) == 24, k
            final = await ac.get("hot")
            assert final[1] == 9
            assert env.peek("hot") == final  # the cache agrees with the store
            assert await ac.get("count") == 100
            assert env.peek("count") == 100
        async with acache_for(env, make_policy()) as other:
            assert await other.get("hot") == final

    run(main())


def test_per_key_order_reaches_an_async_callback_store(make_policy: Callable[[], Any]) -> None:
    seen: dict[str, list[int]] = {}

    async def load_many(keys: list[str]) -> dict[str, Any]:
        return {}

    async def save_many(items: list[tuple[str, Any]]) -> None:
        await asyncio.sleep(0.001)
        for k, v in items:
            seen.setdefault(k, []).append(v)

    async def delete_many(keys: list[str]) -> None:
        return None

    async def writer(ac: Any, key: str) -> None:
        for i in range(30):
            await ac.set(key, i)

    async def main() -> None:
        store = cw.CallbackStore(load_many=load_many, save_many=save_many,
                                 delete_many=delete_many)
        async with cw.AsyncCache(store=store, policy=make_policy()) as ac:
            await asyncio.gather(*(writer(ac, f"k{i}") for i in range(10)))
            await ac.flush()
        for i in range(10):
            vals = seen[f"k{i}"]
            assert vals == sorted(vals), vals
            assert vals[-1] == 29, vals

    run(main())


# -- the event loop is never blocked ----------------------------------------------------------
def test_a_slow_sync_callback_store_never_blocks_the_loop(
    make_policy: Callable[[], Any]
) -> None:
    data: dict[str, Any] = {"a": 1}

    def load_many(keys: list[str]) -> dict[str, Any]:
        time.sleep(0.3)
        return {k: data[k] for k in keys if k in data}

    def save_many(items: list[tuple[str, Any]]) -> None:
        time.sleep(0.3)
        data.update(items)

    def delete_many(keys: list[str]) -> None:
        time.sleep(0.3)
        for k in keys:
            data.pop(k, None)

    async def main() -> None:
        store = cw.CallbackStore(load_many=load_many, save_many=save_many,
                                 delete_many=delete_many)
        async with Ticker() as ticker, cw.AsyncCache(store=store,
                                                     policy=make_policy()) as ac:
            t0 = time.monotonic()
            assert await ac.get("a") == 1
            await ac.set("b", 2)
            await ac.delete("a")
            await ac.flush()
            assert time.monotonic() - t0 >= 0.3  # the store was slow
        assert data == {"b": 2}
        assert ticker.worst < 0.1, f"the loop was held {ticker.worst:.3f} s"

    run(main())


def test_a_slow_sync_get_or_set_loader_never_blocks_the_loop(env: Env) -> None:
    def slow() -> int:
        time.sleep(0.3)
        return 42

    async def main() -> None:
        async with acache_for(env, cw.WriteThrough()) as ac, Ticker() as ticker:
            assert await ac.get_or_set("k", slow) == 42
        assert ticker.worst < 0.1, f"the loop was held {ticker.worst:.3f} s"

    run(main())


def test_a_journal_fsync_always_never_blocks_the_loop(tmp_path: Path) -> None:
    async def main() -> None:
        policy = cw.WriteBack(max_delay=0.05, journal=str(tmp_path / "app.wal"),
                              fsync="always")
        async with cw.AsyncCache(store=cw.SQLiteStore(str(tmp_path / "app.db")),
                                 policy=policy) as ac:
            async with Ticker() as ticker:
                await asyncio.gather(*(ac.set(f"k{i}", i) for i in range(200)))
                await ac.flush()
            assert await ac.get("k199") == 199
        assert ticker.worst < 0.1, f"the loop was held {ticker.worst:.3f} s"

    run(main())


# -- journals across the two fronts ----------------------------------------------------------
CHILD = textwrap.dedent("""
    import asyncio, os, sys
    import cacheway as cw

    front, store_url, journal = sys.argv[1:4]
    opts = dict(policy="write-back", max_delay=600, journal=journal, fsync="always")

    def writes(c):
        c.set("a", {"v": 1})
        c.set("b", [1, "two"])
        c.incr("n", 3)
        c.incr("n", 4)
        c.delete("gone")

    if front == "sync":
        cache = cw.open(store=store_url, **opts)
        writes(cache)
        assert cache.pending() > 0
        os._exit(0)                       # a crash: no close, no flush

    async def main():
        acache = await cw.open_async(store=store_url, **opts)
        await acache.set("a", {"v": 1})
        await acache.set("b", [1, "two"])
        await acache.incr("n", 3)
        await acache.incr("n", 4)
        await acache.delete("gone")
        assert await acache.pending() > 0
        os._exit(0)

    asyncio.run(main())
""")


@pytest.mark.parametrize("writer", ["sync", "async"])
def test_a_journal_written_by_one_front_is_replayed_by_the_other(
    env: Env, writer: str, tmp_path: Path
) -> None:
    journal = str(tmp_path / "app.wal")
    env.store().save_many({"gone": "before", "n": 10})
    proc = subprocess.run([sys.executable, "-c", CHILD, writer, env.store_url(), journal],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert env.peek("a") is None  # nothing reached the store before the crash

    policy = cw.WriteBack(max_delay=0.05, journal=journal, fsync="always")

    async def reopen_async() -> None:
        async with acache_for(env, policy) as ac:
            await ac.flush()
            assert await ac.get("n") == 17

    def reopen_sync() -> None:
        with cw.Cache(store=env.store(), backend=env.backend(), policy=policy) as cache:
            cache.flush()
            assert cache.get("n") == 17

    if writer == "sync":
        run(reopen_async())
    else:
        reopen_sync()
    assert env.peek("a") == {"v": 1}
    assert env.peek("b") == [1, "two"]
    assert env.peek("n") == 17  # deltas added once
    assert env.peek("gone") is None
    # a second reopen replays nothing twice
    run(reopen_async())
    assert env.peek("n") == 17


# -- invalidate, across caches ----------------------------------------------------------------
def test_invalidate_drops_cached_copies_and_keeps_the_row(env: Env) -> None:
    async def main() -> None:
        async with acache_for(env, cw.WriteThrough()) as ac, \
                acache_for(env, cw.WriteThrough()) as other:
            await ac.set("k", 1)
            await ac.set("j", 1)
            assert await other.get("k") == 1
            env.store().save_many({"k": 2, "j": 2})  # changed behind the caches' back
            assert await ac.get("k") == 1
            await ac.invalidate("k")
            await ac.invalidate_many(["j"])
            assert await ac.get("k") == 2
            assert await ac.get("j") == 2
            assert env.peek("k") == 2
            if env.kind == "servers":  # every process sharing the backend
                assert await other.get("k") == 2
                assert await other.get("j") == 2

    run(main())


def test_thread_front_and_async_front_share_redis_and_postgres(
    pg_table: str, tmp_path: Path
) -> None:
    require("redis")
    env = Env("servers", tmp_path, pg_table)

    async def main() -> None:
        cache = cw.Cache(store=env.store(), backend=env.backend(), policy=cw.WriteThrough())
        try:
            async with acache_for(env, cw.WriteThrough()) as ac:
                await asyncio.to_thread(cache.set, "k", 1)
                assert await ac.get("k") == 1
                await ac.set("k", 2)
                assert await asyncio.to_thread(cache.get, "k") == 2
                await ac.delete("k")
                assert await asyncio.to_thread(cache.get, "k", "gone") == "gone"
        finally:
            cache.close()

    try:
        run(main())
    finally:
        env.cleanup()


# -- minimal reproductions of the bugs found ---------------------------------------------------
