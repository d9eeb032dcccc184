"""AsyncCache (issue 12): hits answered on the loop (memory views, Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import cacheway as cw
from test_aio_support import run


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
