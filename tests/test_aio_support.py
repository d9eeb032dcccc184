"""Helpers the AsyncCache tests share (no tests here): running a coroutine, a loop-lag
ticker, slow and async-callback stores."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
from collections.abc import Awaitable
from typing import Any

import cacheway as cw


def rows_of(table: str, keys: list[str]) -> dict[str, Any]:
    """What PostgreSQL ``table`` holds for ``keys`` (read by a sync store of its own)."""
    from services import POSTGRES_DSN

    store = cw.PostgresStore(POSTGRES_DSN, table=table)
    try:
        return store.load_many(keys)
    finally:
        store.close()


def run(coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coro

    return asyncio.run(main())


class LagMeter:
    """A ticker task: the longest gap between wakeups of ``asyncio.sleep(period)``,
    beyond the period itself (how long something held the loop). The garbage collector
    is off meanwhile (a full collection late in a long test run pauses the interpreter
    some 300 ms: CPython's pause, not the cache's)."""

    def __init__(self, period: float = 0.005) -> None:
        self._gc = False
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
        self._gc = gc.isenabled()
        gc.disable()
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task
        if self._gc:
            gc.enable()


class SlowStore:
    """A CallbackStore whose calls sleep ``delay`` seconds (a slow database)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.data: dict[str, Any] = {}
        self.threads: list[int] = []  # the thread of each call (never the loop's)
        self.store = cw.CallbackStore(load_many=self._load, save_many=self._save,
                                      delete_many=self._delete)

    def _load(self, keys: list[str]) -> dict[str, Any]:
        self.threads.append(threading.get_ident())
        time.sleep(self.delay)
        return {k: self.data[k] for k in keys if k in self.data}

    def _save(self, items: list[tuple[str, Any]]) -> None:
        self.threads.append(threading.get_ident())
        time.sleep(self.delay)
        self.data.update(items)

    def _delete(self, keys: list[str]) -> None:
        self.threads.append(threading.get_ident())
        time.sleep(self.delay)
        for k in keys:
            self.data.pop(k, None)


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

