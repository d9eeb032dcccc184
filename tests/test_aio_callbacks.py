"""AsyncCache (issue 12): async def callbacks and @acache.cached."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable
from typing import Any

import pytest

import cacheway as cw
from cacheway.memoize import namespace_for
from test_aio_support import AsyncDict, run

# -- async callbacks --------------------------------------------------------------------

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
