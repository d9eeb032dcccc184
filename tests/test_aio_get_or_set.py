"""AsyncCache.get_or_set (issue 12: the same methods as Cache, awaitable)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw
from test_aio_support import run


def test_get_or_set_calls_the_loader_once_per_stampede_of_tasks(tmp_path: Path) -> None:
    calls: list[str] = []

    async def load() -> dict[str, int]:
        calls.append("load")
        await asyncio.sleep(0.05)  # every task arrives while the load runs
        return {"n": 1}

    async def main() -> None:
        async with cw.AsyncCache(store=cw.SQLiteStore(str(tmp_path / "a.db")),
                                 policy=cw.WriteBack(max_delay=0.01)) as acache:
            results = await asyncio.gather(*(acache.get_or_set("k", load)
                                             for _ in range(50)))
            assert results == [{"n": 1}] * 50
            assert calls == ["load"]
            assert await acache.get_or_set("k", load) == {"n": 1}  # a hit: not called
            assert calls == ["load"]
            await acache.flush()
        with cw.SQLiteStore(str(tmp_path / "a.db")) as store:
            assert store.load("k") == {"n": 1}  # written by the policy

    run(main())


@pytest.mark.parametrize("default", [7, lambda: 7], ids=["value", "sync-callable"])
def test_get_or_set_takes_a_value_or_a_plain_callable(tmp_path: Path, default: Any) -> None:
    async def main() -> None:
        async with cw.AsyncCache(store=cw.SQLiteStore(str(tmp_path / "a.db"))) as acache:
            ns = acache.namespace("views")
            assert await ns.get_or_set("k", default, ttl=60) == 7
            assert await ns.get("k") == 7

    run(main())


def test_a_failing_loader_fails_every_waiter_and_the_next_call_loads_again(
        tmp_path: Path) -> None:
    attempts: list[int] = []

    async def flaky() -> int:
        attempts.append(1)
        await asyncio.sleep(0.02)
        if len(attempts) == 1:
            raise ConnectionError("the source is down")
        return 3

    async def main() -> None:
        async with cw.AsyncCache(store=cw.SQLiteStore(str(tmp_path / "a.db"))) as acache:
            results = await asyncio.gather(*(acache.get_or_set("k", flaky) for _ in range(5)),
                                           return_exceptions=True)
            assert all(isinstance(r, ConnectionError) for r in results)
            assert await acache.get("k") is None  # nothing written
            assert await acache.get_or_set("k", flaky) == 3
            assert len(attempts) == 2

    run(main())
