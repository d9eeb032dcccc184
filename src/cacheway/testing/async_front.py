"""The guarantee suite on the asyncio front: :class:`AsyncGuaranteeSuite`.

The suites drive a cache through the thread front's blocking methods (``cache.set(...)``,
threads for concurrency). :class:`BlockingAsyncCache` presents an :class:`cacheway.AsyncCache`
through those same methods, so the very same tests exercise the asyncio front: each call is
a coroutine submitted to one event loop that runs in a thread of its own
(:class:`LoopThread`), and the calling thread waits for its result. Where a test drives the
cache from many threads, their calls are so many tasks in flight on that one loop at once
(what the tasks of an asyncio service do): the adapter never serializes them, and
:attr:`LoopThread.peak` records how many were in flight together.

Run it on your own pair as :class:`~cacheway.testing.GuaranteeSuite` (same hooks)::

    class TestMyStoreOnAsyncio(AsyncGuaranteeSuite):
        def make_store(self) -> Store:
            return MyStore(DSN, table=self.table)

        def make_backend(self, max_entries: int | None = None) -> Backend:
            return cw.MemoryBackend(max_entries=max_entries)

A store or backend the tests make is used by the AsyncCache from its worker threads, as an
AsyncCache built by the application would; the tests' own checks (``self.store().load``)
stay on the test's thread. Set ``journal = True`` on the class to give every write-back
policy a journal (the AsyncCache then opens in a worker thread and runs its writes in its
journal lane). An :class:`cacheway.AsyncCallbackStore`'s coroutines run on the loop of the
AsyncCache using it; for the tests' own checks, and for the stores the tests wrap in
:class:`~cacheway.testing.FaultyStore` (which hides them from the AsyncCache), bind each
store ``make_store`` returns to the test's loop: ``store.bind_loop(self.loop_thread().loop)``.

Besides the guarantee tests, the suite checks the adapter itself
(``test_async_front_tasks_are_in_flight_together``: 16 threads' reads all in flight on the
loop at once while the store load is held).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import functools
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar

import pytest

import cacheway as cw

from .faults import FaultyStore, HeldFill
from .guarantees import GuaranteeSuite
from .pair import PairSuite
from .support import unique, wait_until

__all__ = ["AsyncFrontSuite", "AsyncGuaranteeSuite", "BlockingAsyncCache", "LoopThread"]

T = TypeVar("T")
#: seconds a call through the adapter may take before the test fails with TimeoutError
CALL_TIMEOUT = 120.0
#: seconds between the ticks that measure how long the loop is held
TICK = 0.01


class LoopThread:
    """An asyncio event loop running forever in a daemon thread; :meth:`call` runs a
    coroutine on it from any other thread and returns its result (or raises its
    exception). Calls from many threads are in flight on the loop together."""

    def __init__(self, name: str = "cacheway-testing-loop",
                 call_timeout: float = CALL_TIMEOUT) -> None:
        if call_timeout <= 0:
            raise ValueError(f"call_timeout must be > 0 seconds, not {call_timeout!r}")
        self.call_timeout = call_timeout
        self.loop = asyncio.new_event_loop()
        #: calls made, and the most that were in flight on the loop at once
        self.calls = 0
        self.peak = 0
        self._in_flight = 0
        self._closed = False
        #: the longest the loop was held (seconds a tick came late), outside
        #: :meth:`unmeasured` sections
        self.max_lag = 0.0
        self._unmeasured = 0  # bumped at both ends of each unmeasured section
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        return (f"<LoopThread {self._thread.name} {state}, {self.calls} calls, peak "
                f"{self.peak}, max lag {self.max_lag * 1000:.0f} ms>")

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.create_task(self._tick())
        self.loop.run_forever()

    async def _tick(self) -> None:
        while True:
            start, section = time.monotonic(), self._unmeasured
            await asyncio.sleep(TICK)
            if section == self._unmeasured:
                self.max_lag = max(self.max_lag, time.monotonic() - start - TICK)

    @contextlib.contextmanager
    def unmeasured(self) -> Iterator[None]:
        """A section of code on the loop that may hold it by contract (building an
        AsyncCache, ``namespace()``): the ticks around it do not count in :attr:`max_lag`."""
        self._unmeasured += 1
        try:
            yield
        finally:
            self._unmeasured += 1

    @property
    def in_flight(self) -> int:
        """Calls awaiting on the loop now."""
        return self._in_flight

    @property
    def in_loop_thread(self) -> bool:
        """True when the caller runs on this loop's thread (where :meth:`call` refuses)."""
        return threading.current_thread() is self._thread

    async def _tracked(self, make: Callable[[], Awaitable[T]]) -> T:
        # Runs on the loop thread only: the counters need no lock.
        self.calls += 1
        self._in_flight += 1
        self.peak = max(self.peak, self._in_flight)
        try:
            return await make()
        finally:
            self._in_flight -= 1

    def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Await ``make()`` on the loop (the awaitable is made there) and return its result;
        block the calling thread meanwhile, up to :attr:`call_timeout` seconds."""
        if self._closed:
            raise RuntimeError(f"{self!r}: the loop is closed")
        if self.in_loop_thread:
            raise RuntimeError(f"{self!r}: a blocking call from the loop's own thread would "
                               "wait for itself; await the AsyncCache there instead")
        future = asyncio.run_coroutine_threadsafe(self._tracked(make), self.loop)
        done, _ = concurrent.futures.wait([future], timeout=self.call_timeout)
        if not done:
            future.cancel()
            raise TimeoutError(f"{make!r} did not finish within {self.call_timeout} s on "
                               f"{self!r}")
        return future.result()

    def close(self) -> None:
        """Cancel what still runs on the loop, stop it and join its thread (idempotent)."""
        if self._closed:
            return
        self._closed = True

        async def drain() -> None:
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        try:
            asyncio.run_coroutine_threadsafe(drain(), self.loop).result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
            if not self._thread.is_alive():
                self.loop.close()


class BlockingAsyncCache:
    """An :class:`~cacheway.AsyncCache` (or :class:`~cacheway.AsyncNamespace`) behind the
    blocking methods of :class:`cacheway.Cache`: each call awaits the async method on
    ``loop`` (``stats()``, synchronous on both fronts, is called directly)."""

    def __init__(self, front: cw.AsyncCache | cw.AsyncNamespace, loop: LoopThread) -> None:
        self.front = front
        self.loop = loop

    @classmethod
    def open(cls, loop: LoopThread, **options: Any) -> BlockingAsyncCache:
        """``cw.AsyncCache(**options)`` built on ``loop`` (inside a running loop, as an
        asyncio service builds it), behind the blocking methods."""

        async def build() -> cw.AsyncCache:
            with loop.unmeasured():  # the constructor is synchronous by contract
                return cw.AsyncCache(**options)

        return cls(loop.call(build), loop)

    def __repr__(self) -> str:
        return f"<BlockingAsyncCache {self.front!r}>"

    def _await(self, method: Callable[..., Awaitable[T]], *args: Any) -> T:
        return self.loop.call(functools.partial(method, *args))

    @property
    def closed(self) -> bool:
        owner = self.front if isinstance(self.front, cw.AsyncCache) else None
        return owner is not None and owner.closed

    def get(self, key: str, default: Any = None) -> Any:
        return self._await(self.front.get, key, default)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        return self._await(self.front.get_many, keys)

    def get_or_set(self, key: str, default: Any, ttl: float | None = None) -> Any:
        return self._await(self.front.get_or_set, key, default, ttl)

    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        self._await(self.front.set, key, value, ttl)

    def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        self._await(self.front.set_many, mapping, ttl)

    def delete(self, key: str) -> None:
        self._await(self.front.delete, key)

    def delete_many(self, keys: Iterable[str]) -> None:
        self._await(self.front.delete_many, keys)

    def incr(self, key: str, delta: int = 1) -> int:
        return self._await(self.front.incr, key, delta)

    def invalidate(self, key: str) -> None:
        self._await(self.front.invalidate, key)

    def invalidate_many(self, keys: Iterable[str]) -> None:
        self._await(self.front.invalidate_many, keys)

    def flush(self, timeout: float | None = None) -> None:
        self._await(self.front.flush, timeout)

    def pending(self) -> int:
        return self._await(self.front.pending)

    def stats(self) -> cw.Stats:
        return self.front.stats()

    def namespace(self, name: str, **options: Any) -> BlockingAsyncCache:
        """``front.namespace(name, **options)``, called on the loop, behind this adapter."""
        front = self.front

        async def view() -> cw.AsyncNamespace:
            with self.loop.unmeasured():  # synchronous by contract
                return front.namespace(name, **options)

        return BlockingAsyncCache(self.loop.call(view), self.loop)

    def close(self, timeout: float | None = None) -> None:
        self._await(self.front.close, timeout)


class AsyncFrontSuite(PairSuite):
    """A :class:`~cacheway.testing.PairSuite` whose :meth:`cache` is an AsyncCache behind
    :class:`BlockingAsyncCache`, on one :class:`LoopThread` per test (closed at teardown,
    after the test's caches, stores and backends)."""

    #: the front the tests drive ("async": an AsyncCache on a loop in a thread)
    front: ClassVar[str] = "async"
    #: the longest (seconds) any test may hold the event loop (guarantee 8: no cache call
    #: blocks it); None: not checked. A wide bound, for gross blocking only: a store write
    #: run on the loop in the tests that gate the store's writes holds it up to 10 s; on a
    #: loaded 2-core machine the whole suite measured at most 1.7 s (one test in 1450, not
    #: reproducible alone; 0.25 s in the project's default run)
    max_loop_lag: ClassVar[float | None] = 5.0
    #: write-back policies keep a journal (a new file in the test's ``tmp_path``): the
    #: AsyncCache then opens in a worker thread and runs its writes in the journal lane
    journal: ClassVar[bool] = False

    @pytest.fixture(autouse=True)
    def _loop_not_held(self) -> Iterator[None]:
        yield
        loop: LoopThread | None = self.__dict__.get("_loop_thread")
        bound = self.max_loop_lag
        if loop is not None and bound is not None:
            assert loop.max_lag < bound, (
                f"{loop!r}: a call held the event loop {loop.max_lag:.2f} s (guarantee 8)")

    def loop_thread(self) -> LoopThread:
        """This test's event loop (started on first use)."""
        loop: LoopThread | None = self.__dict__.get("_loop_thread")
        if loop is None:
            loop = LoopThread()
            self.__dict__["_loop_thread"] = loop
            self.close_last(loop)
        return loop

    def make_cache(self, store: Any, backend: Any, policy: Any) -> Any:
        if self.journal and isinstance(policy, cw.WriteBack) and policy.journal is None \
                and policy.queue is None:
            policy = dataclasses.replace(
                policy, journal=str(self.tmp_path / f"{unique('journal')}.wal"))
        return BlockingAsyncCache.open(self.loop_thread(), store=store, backend=backend,
                                       policy=policy)

    # -- the adapter's own check: concurrency is real -----------------------------------------
    def test_async_front_tasks_are_in_flight_together(self) -> None:
        # 16 threads read one key while its store load is held: all 16 calls must be
        # awaiting on the loop at once (and share one store load, guarantee 5), not
        # queued one after another by the adapter.
        self.store().save_many({"hot": self.value(1)})
        store = FaultyStore(self.store())
        hook = HeldFill("hot")
        store.load_hook = hook
        cache = self.cache(cw.WriteThrough(), store=store)
        loop = self.loop_thread()
        results: list[Any] = []
        threads = [threading.Thread(target=lambda: results.append(cache.get("hot")))
                   for _ in range(16)]
        try:
            for th in threads:
                th.start()
            assert hook.loaded.wait(10), "the read never reached the store"
            together = wait_until(lambda: loop.in_flight == 16)
        finally:
            hook.release.set()
            for th in threads:
                th.join(60)
        assert together, f"{loop!r}: at most {loop.peak} of 16 calls in flight at once"
        assert results == [self.value(1)] * 16
        assert store.loads == 1


class AsyncGuaranteeSuite(AsyncFrontSuite, GuaranteeSuite):
    """Guarantees 1-8 of the design on :class:`cacheway.AsyncCache` for the pair the subclass
    makes: every test of :class:`~cacheway.testing.GuaranteeSuite`, its caches AsyncCaches
    driven through :class:`BlockingAsyncCache` (its threads: tasks on one event loop)."""
