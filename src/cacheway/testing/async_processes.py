"""Guarantees 2 (kill -9) and 8 (a forked child) on :class:`cacheway.AsyncCache`, as an
asyncio service runs it: :class:`AsyncProcessGuaranteeSuite`.

- kill -9 of a process whose AsyncCache acknowledged writes from many tasks at once
  (:mod:`cacheway.testing.crash_child` with ``async``): write-back with a journal and
  ``fsync="always"`` (reopening an AsyncCache on the journal replays it), and write-through;
  every acknowledged write ends in the store.
- gunicorn ``--preload`` with asyncio workers: an AsyncCache built in the parent (at import,
  before any event loop runs, or after the parent used it on its loop), then ``os.fork()``;
  each child runs its own loop (``asyncio.run``) and uses the inherited AsyncCache from
  many tasks. Its writes reach the store, it never flushes the parent's dirty entries, it
  never waits on the parent's worker threads, locks or connections, and the parent's loop
  goes on with its own connections after the child used (and dropped) its copies.

The parent drives its AsyncCaches on one event loop per test that outlives the forks
(:meth:`AsyncProcessGuarantees.run`), as a process that keeps its loop would. Same hooks
as :class:`~cacheway.testing.ProcessGuaranteeSuite`, plus :meth:`make_async_store` for a
store with an async path (``AsyncPostgresStore``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest

import cacheway as cw

from .async_front import LoopThread
from .crash_child import TASKS as CHILD_TASKS
from .faults import FaultyStore, HeldFill
from .guarantees_processes import CHILD_DEADLINE, ProcessPairSuite, in_children
from .support import unique

__all__ = ["AsyncProcessGuaranteeSuite"]

T = TypeVar("T")

#: the write policies the fork tests run under
FORK_MODES = ["write-back", "write-back-journal", "write-through"]
#: tasks of a forked child writing at once
TASKS = 20


def reopen_async(store_url: str, backend_url: str, wal: str) -> None:
    """Reopen a journalled write-back AsyncCache on ``wal`` (it replays) and close it."""

    async def reopen() -> None:
        acache = await cw.open_async(store_url, backend=backend_url, policy="write-back",
                                     journal=wal, fsync="always")
        await acache.close()

    asyncio.run(reopen())


def run_in_children(works: list[Callable[[], Coroutine[Any, Any, object]]]) -> list[int]:
    """``asyncio.run(work())`` for each of ``works`` in forked children at once (each a
    loop of its own); their exit codes."""
    return in_children([functools.partial(_run, work) for work in works])


def _run(work: Callable[[], Coroutine[Any, Any, object]]) -> object:
    return asyncio.run(work())


@dataclasses.dataclass
class _Closing:
    """An AsyncCache of the test, closed on the parent's loop at teardown."""

    acache: cw.AsyncCache
    loop: asyncio.AbstractEventLoop | LoopThread

    def close(self, timeout: float | None = None) -> None:
        if isinstance(self.loop, LoopThread):
            self.loop.call(lambda: self.acache.close(timeout))
        else:
            self.loop.run_until_complete(self.acache.close(timeout))


class AsyncProcessGuarantees(ProcessPairSuite):
    # -- hooks and helpers -----------------------------------------------------------------
    def make_async_store(self) -> Any:
        """The store of the AsyncCaches the fork tests build (``make_store()`` unless a
        pair has a store with an async path to exercise, e.g. ``AsyncPostgresStore``)."""
        return self.make_store()

    def loop(self) -> asyncio.AbstractEventLoop:
        """The parent's event loop: one per test, kept across forks (not running then)."""
        loop: asyncio.AbstractEventLoop | None = self.__dict__.get("_loop")
        if loop is None:
            loop = self.__dict__["_loop"] = asyncio.new_event_loop()
            self.close_last(loop)
        return loop

    def run(self, work: Awaitable[T]) -> T:
        """Run ``work`` on the parent's event loop."""
        return self.loop().run_until_complete(work)

    def policy(self, mode: str, **options: Any) -> cw.Policy:
        """The policy of ``mode`` (one of :data:`FORK_MODES`; ``options``: WriteBack's);
        with a journal of its own under "write-back-journal"."""
        if mode == "write-through":
            return cw.WriteThrough()
        if mode == "write-back-journal":
            options.update(journal=str(self.tmp_path / f"{unique('j')}.wal"), fsync="always")
        return cw.WriteBack(**{"max_delay": 0.05, **options})

    def async_cache(self, mode: str, **options: Any) -> cw.AsyncCache:
        """An AsyncCache of this pair under ``mode`` (see :meth:`policy`), built outside
        any running loop (as at import), closed at teardown on the parent's loop."""
        acache = cw.AsyncCache(store=self.make_async_store(), backend=self.backend(),
                               policy=self.policy(mode, **options))
        self._caches.append(_Closing(acache, self.loop()))
        return acache

    # -- 2. kill -9 ------------------------------------------------------------------------
    @pytest.mark.parametrize("mode", ["write-back-journal", "write-through"])
    def test_guarantee2_async_kill_9_loses_no_acknowledged_write(self, mode: str) -> None:
        tags = [f"t{n}." for n in range(CHILD_TASKS)]
        if mode == "write-through":
            self.kill_9_trials(["async", "write-through"], tags, reopen=None)
        else:
            self.kill_9_trials(["async"], tags, reopen=reopen_async)

    # -- 8. fork ---------------------------------------------------------------------------
    @pytest.mark.parametrize("mode", FORK_MODES)
    @pytest.mark.parametrize("used", [False, True], ids=["at-import", "used-before-fork"])
    def test_guarantee8_async_writes_made_in_forked_children_reach_the_store(
            self, mode: str, used: bool, caplog: pytest.LogCaptureFixture) -> None:
        self.needs_fork()
        acache = self.async_cache(mode)
        views = acache.namespace("views", policy=self.policy(mode)) if self.namespaces else None
        if used:
            self.run(acache.set("p", self.value(0)))
            assert self.run(acache.get("p")) == self.value(0)

        async def work(i: int) -> None:
            # one call on its own first (a worker's first request), then many tasks
            await acache.set(f"c{i}", self.value(i))
            assert await acache.get(f"c{i}") == self.value(i)

            async def task(t: int) -> None:
                await acache.set(f"c{i}.{t}", self.value(t))
                assert await acache.get(f"c{i}.{t}") == self.value(t)
                if self.counters:
                    await acache.incr("n")

            await asyncio.gather(*(task(t) for t in range(TASKS)))
            if views is not None:  # a namespace of its own (its own journal)
                await views.set(f"v{i}", self.value(i))
                await views.flush(timeout=30)
            await acache.flush(timeout=30)
            gc.collect()  # what the child dropped of the parent's is finalized (not closed)

        codes = run_in_children([functools.partial(work, i) for i in range(2)])
        assert codes == [0, 0], "a forked child failed or hung (-14: still at work)"
        self.run(acache.flush(timeout=30))
        expected: dict[str, Any] = {f"c{i}.{t}": self.value(t)
                                    for i in range(2) for t in range(TASKS)}
        expected.update({"c0": self.value(0), "c1": self.value(1)})
        if used:
            expected["p"] = self.value(0)
        if self.counters:
            expected["n"] = 2 * TASKS
        assert self.store().load_many(list(expected)) == expected

        async def after() -> None:
            await acache.set("after", self.value(1))
            assert await acache.get("after") == self.value(1)
            assert await acache.get("p") == (self.value(0) if used else None)
            if views is not None:
                assert [await views.get(f"v{i}") for i in range(2)] == [
                    self.value(0), self.value(1)]
            await acache.flush(timeout=30)

        # The parent's loop goes on with its own connections, which the children left
        # alone: no Redis read that times out (a socket a child unregistered from the
        # epoll it shares with the parent's loop), no PostgreSQL session a child ended.
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cacheway"):
            self.run(asyncio.wait_for(after(), CHILD_DEADLINE))  # (a hang: TimeoutError)
        assert not caplog.records, [r.getMessage() for r in caplog.records]
        assert self.store().load("after") == self.value(1)

    def test_guarantee8_async_a_read_in_flight_at_the_fork_stays_the_parents(self) -> None:
        # The parent forks while a task on its loop (in a thread, as a server's) waits
        # for a store load: the child's read of that key must not join the parent's
        # (a future of the parent's loop, whose thread does not exist in the child). A
        # process-local backend: a shared one's lease would have the child wait for the
        # parent's load (single flight across processes), which the test holds.
        self.needs_fork()
        self.store().save_many({"hot": self.value(1)})
        store = FaultyStore(self.store())  # (its loads in worker threads: the hook holds one)
        hook = store.load_hook = HeldFill("hot")
        acache = cw.AsyncCache(store=store, backend=cw.MemoryBackend(), policy=cw.WriteThrough())
        loop = LoopThread()
        self.close_last(loop)
        self._caches.append(_Closing(acache, loop))
        parents = asyncio.run_coroutine_threadsafe(acache.get("hot"), loop.loop)
        try:
            assert hook.loaded.wait(30), "the parent's read never reached the store"

            async def work() -> None:
                assert await acache.get("hot") == self.value(1)
                await acache.set("child", self.value(2))

            assert run_in_children([work]) == [0]
        finally:
            hook.release.set()
        assert parents.result(CHILD_DEADLINE) == self.value(1)
        assert self.store().load("child") == self.value(2)

    @pytest.mark.parametrize("mode", ["write-back", "write-back-journal"])
    def test_guarantee8_async_child_never_flushes_the_parents_dirty_entries(
            self, mode: str) -> None:
        self.needs_fork()
        acache = self.async_cache(mode, max_delay=3600)
        self.run(acache.set("p", self.value(1)))  # dirty in the parent when it forks

        async def work() -> None:
            assert await acache.pending() == 0  # the parent's entry is the parent's
            await asyncio.gather(*(acache.set(f"child{t}", self.value(t))
                                   for t in range(TASKS)))
            await acache.flush(timeout=30)
            gc.collect()

        assert run_in_children([work]) == [0]
        store = self.store()
        assert store.load_many([f"child{t}" for t in range(TASKS)]) == {
            f"child{t}": self.value(t) for t in range(TASKS)}
        assert store.load_many(["p"]) == {}, "the child flushed the parent's entry"
        self.run(acache.flush(timeout=30))
        assert store.load("p") == self.value(1)


class AsyncProcessGuaranteeSuite(AsyncProcessGuarantees):
    """Guarantee 2 under ``kill -9`` and guarantee 8 across ``os.fork()`` on
    :class:`cacheway.AsyncCache`, for the pair the subclass makes (the hooks of
    :class:`~cacheway.testing.ProcessGuaranteeSuite`, and :meth:`make_async_store`)."""
