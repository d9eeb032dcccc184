"""AsyncCache (issue 12): real PostgreSQL and Redis; CallbackStore with async callbacks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import cacheway as cw
from services import POSTGRES_DSN, REDIS_URL, unique


# -- real servers ---------------------------------------------------------------------------
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
