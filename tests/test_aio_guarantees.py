"""Guarantees 1-8 of DESIGN.md on the asyncio front (issue 12: "the guarantees suite runs
against both fronts").

``cacheway.testing.AsyncGuaranteeSuite`` runs every test of the guarantee suite with each
cache an ``AsyncCache`` behind ``BlockingAsyncCache`` (the tests' threads: tasks on one
event loop in a thread). One class per backend x store pair of ``tests/pairs.py``,
``TestAio_<backend>__<store>``. By default: every test under every policy on the pairs in
FULL (one per path of the asyncio front: the memory hit answered on the loop and the
queued write-back writes; the Redis hit read with ``redis.asyncio``; a two-level backend
over PostgreSQL; async-free callbacks), the slow run everything on every pair.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import cacheway as cw
from cacheway.testing import AsyncGuaranteeSuite, BlockingAsyncCache, LoopThread, wait_until
from pairs import BACKENDS, PAIR_STORES, pair_class

# the pairs whose every test runs by default (the others: slow)
FULL = {"memory+sqlite", "redis+sqlite", "two-level+postgres", "memory+callback"}

# AsyncCache bugs: {pair or "*": {(test, policy or None): what fails}}, xfail(strict)
KNOWN_FAILURES: dict[str, dict[tuple[str, str | None], str]] = {}
FLAKY_FAILURES: dict[str, dict[tuple[str, str | None], str]] = {}


class DefaultRun:
    """Which pairs the default run keeps (:meth:`marks` marks the rest slow)."""

    pair_name: str

    def marks(self, test: str, policy: str | None) -> list[Any]:
        if self.pair_name in FULL or policy is not None:
            return []
        return [pytest.mark.slow]


def _failures(table: dict[str, dict[tuple[str, str | None], str]], pair: str
              ) -> dict[tuple[str, str | None], str]:
    return {**table.get("*", {}), **table.get(pair, {})}


for _backend in BACKENDS:
    for _store in PAIR_STORES:
        _pair = f"{_backend}+{_store}"
        _cls = pair_class(type("Suite", (DefaultRun, AsyncGuaranteeSuite), {}), _pair,
                          known_failures=_failures(KNOWN_FAILURES, _pair),
                          flaky_failures=_failures(FLAKY_FAILURES, _pair))
        _cls.__name__ = _cls.__qualname__ = _cls.__name__.replace("Test_", "TestAio_", 1)
        globals()[_cls.__name__] = _cls


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
