"""Guarantees 1-8 of DESIGN.md on the asyncio front (issue 12: "the guarantees suite runs
against both fronts").

``cacheway.testing.AsyncGuaranteeSuite`` runs every test of the guarantee suite with each
cache an ``AsyncCache`` behind ``BlockingAsyncCache`` (the tests' threads: tasks on one
event loop in a thread). One class per backend x store pair of ``tests/pairs.py``,
``TestAio_<backend>__<store>``, plus pairs whose CallbackStore's callbacks are ``async def``
(``*+async-callback``) and pairs whose write-back policies keep a journal
(``TestAioJournal_*``, write-back only). By default: every test under every policy on the
pairs in FULL (one per path of the asyncio front: the memory hit answered on the loop and
the queued write-back writes; the Redis hit read with ``redis.asyncio``; async callbacks
run on the loop; the journal lane), every test under one policy on ONE_POLICY's (a
two-level backend over PostgreSQL); the slow run runs
everything on every pair.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw
from cacheway.testing import AsyncGuaranteeSuite, BlockingAsyncCache, LoopThread, wait_until
from pairs import BACKENDS, PAIR_STORES, StoreMaker, pair_class

# the pairs whose every test runs by default under every policy (one per path of the
# asyncio front), and those whose every test runs under one policy; the others: slow
FULL = {"memory+sqlite", "redis+sqlite", "memory+async-callback", "journal:memory+sqlite"}
ONE_POLICY = {"two-level+postgres": "write-back"}
# pairs of a CallbackStore whose callbacks are async def (AsyncCallbackStore)
ASYNC_CALLBACK_PAIRS = [f"{b}+async-callback" for b in BACKENDS]
# pairs run with a journal under write-back (the AsyncCache's journal lane), as
# TestAioJournal_<backend>__<store>
JOURNAL_PAIRS = ["memory+sqlite", "redis+postgres", "two-level+sqlite"]

# AsyncCache bugs: {pair ("journal:<pair>" for TestAioJournal_) or "*": {(test, policy
# or None): what fails}}, xfail(strict)
KNOWN_FAILURES: dict[str, dict[tuple[str, str | None], str]] = {}
FLAKY_FAILURES: dict[str, dict[tuple[str, str | None], str]] = {}


class DefaultRun:
    """Which pairs the default run keeps (:meth:`marks` marks the rest slow)."""

    pair_name: str
    journal: bool

    def marks(self, test: str, policy: str | None) -> list[Any]:
        name = f"journal:{self.pair_name}" if self.journal else self.pair_name
        if name in FULL:
            return []
        if name in ONE_POLICY:
            return [] if policy in (None, ONE_POLICY[name]) else [pytest.mark.slow]
        return [] if policy is not None else [pytest.mark.slow]


class AsyncCallbackStores(StoreMaker):
    """Stores whose callbacks are ``async def`` (on the test's dict), run on the test's
    loop: the AsyncCache binds its stores to it, and the test's own checks
    (``self.store().load``) and stores wrapped by FaultyStore (which hides them from the
    AsyncCache) need it too."""

    def __init__(self, tmp_path: Path, table: str, loop: LoopThread) -> None:
        super().__init__("callback", tmp_path, table)
        self.loop = loop

    def _callback_store(self) -> Any:
        data, lock = self.data, self.lock

        async def load_many(keys: list[str]) -> dict[str, Any]:
            await asyncio.sleep(0)  # a real driver awaits: let other tasks in
            with lock:
                return {k: data[k] for k in keys if k in data}

        async def save_many(items: list[tuple[str, Any]]) -> None:
            await asyncio.sleep(0)
            with lock:
                data.update(items)

        async def delete_many(keys: list[str]) -> None:
            await asyncio.sleep(0)
            with lock:
                for k in keys:
                    data.pop(k, None)

        async def add_many(items: list[tuple[str, int]]) -> dict[str, Any]:
            await asyncio.sleep(0)
            with lock:
                for k, d in items:
                    data[k] = data.get(k, 0) + d  # a str + int raises, as a store must
                return {k: data[k] for k, _ in items}

        store = cw.AsyncCallbackStore(load_many, save_many, delete_many, add_many)
        store.bind_loop(self.loop.loop)
        return store


class AsyncCallbackHooks:
    """Hooks of a pair whose store is an :class:`AsyncCallbackStores`'s."""

    tmp_path: Path
    table: str
    stores: StoreMaker

    def open_pair(self, pair: object) -> None:
        super().open_pair(pair)  # type: ignore[misc]
        assert isinstance(self, AsyncGuaranteeSuite)
        self.stores = AsyncCallbackStores(self.tmp_path, self.table, self.loop_thread())


def _failures(table: dict[str, dict[tuple[str, str | None], str]], pair: str
              ) -> dict[tuple[str, str | None], str]:
    return {**table.get("*", {}), **table.get(pair, {})}


def _declare(pair: str, *, journal: bool = False) -> None:
    key = f"journal:{pair}" if journal else pair
    attrs: dict[str, Any] = {"journal": journal}
    if journal:
        attrs["policies"] = ["write-back"]  # the others keep no journal
    cls = pair_class(type("Suite", (DefaultRun, AsyncGuaranteeSuite), {}), pair,
                     known_failures=_failures(KNOWN_FAILURES, key),
                     flaky_failures=_failures(FLAKY_FAILURES, key), **attrs)
    if pair.endswith("+async-callback"):
        cls = type(cls.__name__, (AsyncCallbackHooks, cls), {})
    name = cls.__name__.replace("Test_", "TestAioJournal_" if journal else "TestAio_", 1)
    cls.__name__ = cls.__qualname__ = name
    globals()[name] = cls


for _pair in [f"{b}+{s}" for b in BACKENDS for s in PAIR_STORES] + ASYNC_CALLBACK_PAIRS:
    _declare(_pair)
for _pair in JOURNAL_PAIRS:
    _declare(_pair, journal=True)


# -- the adapter itself ------------------------------------------------------------------


def test_loop_thread_refuses_a_blocking_call_from_its_own_thread() -> None:
    loop = LoopThread()
    try:
        async def nested() -> None:
            loop.call(lambda: asyncio.sleep(0))

        with pytest.raises(RuntimeError, match="from the loop's own thread"):
            loop.call(nested)
    finally:
        loop.close()
    with pytest.raises(RuntimeError, match="closed"):
        loop.call(lambda: asyncio.sleep(0))


def test_loop_thread_runs_calls_from_many_threads_together() -> None:
    loop = LoopThread()
    release = threading.Event()
    started = threading.Barrier(9)

    async def wait() -> int:
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 10)
        return 1

    results: list[int] = []

    def caller() -> None:
        started.wait(10)
        results.append(loop.call(wait))

    threads = [threading.Thread(target=caller) for _ in range(8)]
    try:
        for th in threads:
            th.start()
        started.wait(10)
        assert wait_until(lambda: loop.in_flight == 8), loop
    finally:
        release.set()
        for th in threads:
            th.join(30)
        loop.close()
    assert results == [1] * 8
    assert loop.peak == 8


def test_loop_thread_measures_how_long_a_call_holds_the_loop() -> None:
    loop = LoopThread()

    async def hold(seconds: float) -> None:
        time.sleep(seconds)  # what a store call run on the loop would do

    async def hold_unmeasured(seconds: float) -> None:
        with loop.unmeasured():
            time.sleep(seconds)

    try:
        loop.call(lambda: hold_unmeasured(0.6))
        loop.call(lambda: asyncio.sleep(0.05))  # a few ticks after it
        assert loop.max_lag < 0.5, loop
        loop.call(lambda: hold(0.6))
        loop.call(lambda: asyncio.sleep(0.05))
        assert loop.max_lag >= 0.5, loop
    finally:
        loop.close()


def test_blocking_async_cache_raises_what_the_async_call_raises(tmp_path: Any) -> None:
    loop = LoopThread()
    try:
        cache = BlockingAsyncCache.open(loop, store=cw.SQLiteStore(str(tmp_path / "a.db")))
        assert isinstance(cache.front, cw.AsyncCache)
        cache.set("k", 1)
        with pytest.raises(TypeError):
            cache.set(1, 2)  # type: ignore[arg-type]
        assert cache.get("k") == 1
        cache.close()
        assert cache.closed
        with pytest.raises(cw.ClosedError):
            cache.set("k", 2)
    finally:
        loop.close()


# -- guarantee 6 on AsyncCallbackStore: a callback's own TimeoutError ---------------------


# Regression: AsyncCallbackStore's worker thread waited with future.result(timeout=...)
# and took the callback's own TimeoutError (the builtin one since 3.11) for "not done
# yet", retrying forever instead of raising StoreError.
@pytest.mark.parametrize("failing", ["save_many", "load_many"])
def test_guarantee6_an_async_callback_raising_timeout_error_surfaces(failing: str) -> None:
    data: dict[str, Any] = {"k": 1}

    async def load_many(keys: list[str]) -> dict[str, Any]:
        if failing == "load_many":
            raise asyncio.TimeoutError("the database timed out")
        return {k: data[k] for k in keys if k in data}

    async def save_many(items: list[tuple[str, Any]]) -> None:
        if failing == "save_many":
            raise asyncio.TimeoutError("the database timed out")
        data.update(items)

    async def delete_many(keys: list[str]) -> None:
        for k in keys:
            data.pop(k, None)

    async def main() -> None:
        acache = cw.AsyncCache(store=cw.AsyncCallbackStore(load_many, save_many, delete_many),
                               policy=cw.WriteThrough())
        try:
            call = asyncio.ensure_future(
                acache.set("k", 2) if failing == "save_many" else acache.get("k"))
            await asyncio.wait([call], timeout=3)  # the error is immediate: 3 s is plenty
            assert call.done(), f"a {failing} that raised TimeoutError never returned"
            with pytest.raises(cw.StoreError):
                call.result()
        finally:
            # the loop closing ends a thread stuck in the retry loop (ClosedError)
            await acache.close(timeout=5)

    asyncio.run(main())
