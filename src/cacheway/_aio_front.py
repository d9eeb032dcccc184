"""The awaitable methods AsyncCache and AsyncNamespace share, and the inline hit path.

Each method hands its call to the owning AsyncCache's worker threads (``_run``), except a
hit on a plain MemoryBackend, answered on the loop (see :mod:`cacheway.aio`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ._aio_batch import Batcher
from ._aio_memo import CachedFunction, memoize
from .backends.base import MISS
from .core.keys import check_keys, check_mapping
from .stats import Stats

if TYPE_CHECKING:
    from ._aio_write import LoopWrites
    from .aio import AsyncCache
    from .cache import Cache, Namespace

__all__ = ["UNSET", "AsyncFront"]

T = TypeVar("T")
P = ParamSpec("P")
R = TypeVar("R")
UNSET: Any = object()
#: how long ``stats()`` on an event loop waits for a distributed queue's depth (Redis)
STATS_WAIT = 0.05


class AsyncFront:
    """The awaitable methods AsyncCache and AsyncNamespace share."""

    _owner: AsyncCache
    _sync: Cache | Namespace[Any] | None = None
    _peek: Callable[[str], Any] | None = None
    _remote: Callable[[str], Awaitable[Any]] | None = None
    _reads: dict[str, asyncio.Future[Any]]  # key -> the thread's get tasks share
    _setting: dict[str, asyncio.Future[Any]] | None = None  # get_or_set loads, by key
    _batch: Batcher | None = None  # set/delete/invalidate when they never wait for I/O
    _writes: LoopWrites | None = None  # write-through sets on the loop (cacheway._aio_write)
    _lock: asyncio.Lock | None = None  # opening, on the loop that first needs it

    def renew_after_fork(self, pool: concurrent.futures.ThreadPoolExecutor,
                         loop_writes: list[LoopWrites]) -> None:
        """In a forked child (see ``AsyncCache.after_fork_in_child``): reads, loads and
        the lock held at the fork were the parent loop's, the queued writes run on
        ``pool``, the child's worker threads, and writes on the loop only where their
        store path renewed itself (``loop_writes``; else the thread path)."""
        if self._writes is not None and self._writes not in loop_writes:
            self._writes = None
        self._reads = {}
        self._setting = None
        self._lock = None
        if self._batch is not None:
            self._batch.after_fork_in_child(pool)

    async def _front(self) -> Cache | Namespace[Any]:
        raise NotImplementedError

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await self._owner._run(fn, *args)

    async def get(self, key: str, default: Any = None) -> Any:
        """Read-through (see ``Cache.get``); concurrent misses of one key from any number
        of tasks share one store load (and one worker thread)."""
        peek = self._peek
        if peek is not None:
            value = peek(key)
            if value is not MISS:
                return value
        remote = self._remote
        if remote is not None:  # a Redis hit read on the loop (see cacheway._aio_redis)
            value = await remote(key)
            if value is not MISS:
                return value
        front = self._sync or await self._front()
        if key.__class__ is not str:
            return await self._call(front.get, key, default)
        reads = self._reads
        flight = reads.get(key)
        if flight is None:
            # Tasks reading one key share a thread's get: a stampede larger than the pool
            # still makes one load, "not found" included. Every write of the key through
            # this front forgets the flight, so a read after a write never joins a read
            # that began before it (read-your-writes).
            writes = self._writes
            if (writes is not None and writes.loads and (peek is not None or remote is not None)
                    and key.isascii() and not writes.engine.closed):
                # the backend was read on the loop: the store is too (cacheway._aio_write)
                flight = asyncio.ensure_future(_found(writes.load(key)))
            else:
                flight = asyncio.ensure_future(self._call(front.get, key, UNSET))
            reads[key] = flight
            flight.add_done_callback(functools.partial(_landed, reads, key))
        value = await asyncio.shield(flight)
        return default if value is UNSET else value

    def _forget(self, keys: Iterable[object]) -> None:
        reads = self._reads
        if reads:
            for key in keys:
                if isinstance(key, str):
                    reads.pop(key, None)

    async def _write(self, keys: list[Any], fn: Callable[..., T], *args: Any) -> T:
        self._forget(keys)
        try:
            batch = self._batch
            if batch is not None:  # a write that never waits for I/O: queued, see Batcher
                result: T = await batch.submit(self._owner._loop_for_call(), fn, args)
                return result
            return await self._call(fn, *args)
        finally:
            self._forget(keys)

    async def get_or_set(self, key: str, default: Any, ttl: float | None = None) -> Any:
        """The value under ``key``; on a miss ``default`` (``default()`` when callable:
        an ``async def`` loader is awaited on the loop, a plain function runs in a
        worker thread so a slow one never blocks the loop, and an awaitable it returns
        is awaited), called once per stampede of tasks (they share its result or
        exception), written by the policy as ``set(key, value, ttl)`` and returned (see
        ``Cache.get_or_set``)."""
        value = await self.get(key, UNSET)
        if value is not UNSET:
            return value
        if self._setting is None:
            self._setting = {}
        setting = self._setting
        flight = setting.get(key)
        if flight is None:
            flight = asyncio.ensure_future(self._load_and_set(key, default, ttl))
            setting[key] = flight
            flight.add_done_callback(functools.partial(_landed, setting, key))
        return await asyncio.shield(flight)

    async def _load_and_set(self, key: str, default: Any, ttl: float | None) -> Any:
        value = await self.get(key, UNSET)  # another task may have set it meanwhile
        if value is not UNSET:
            return value
        if not callable(default):
            value = default
        elif _is_async(default):
            value = default()
        else:  # a plain function may block (a query, a computation): off the loop
            value = await self._call(default)
        if inspect.isawaitable(value):
            value = await value
        await self.set(key, value, ttl)
        return value

    async def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Values of ``keys`` that exist (cache first, one store load for the rest)."""
        front = self._sync or await self._front()
        ks = list(check_keys(keys))
        writes = self._writes
        if writes is not None and (self._peek is not None or self._remote is not None):
            found = await writes.get_many(ks)  # one MGET on the loop (cacheway._aio_write)
            if found is not None:
                return found
        return await self._call(front.get_many, ks)

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Write ``value`` as the policy says; returns when ``Cache.set`` would."""
        front = self._sync or await self._front()
        writes = self._writes
        if writes is None:
            await self._write([key], front.set, key, value, ttl)
            return
        self._forget([key])
        try:
            await writes.set(key, value, ttl, lambda: self._call(front.set, key, value, ttl))
        finally:
            self._forget([key])

    async def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        """``set`` for each item (write-through/around: one store transaction)."""
        front = self._sync or await self._front()
        items = dict(check_mapping(mapping))
        writes = self._writes
        if writes is None:
            await self._write(list(items), front.set_many, items, ttl)
            return
        self._forget(items)
        try:
            await writes.set_many(items, ttl, lambda: self._call(front.set_many, items, ttl))
        finally:
            self._forget(items)

    async def delete(self, key: str) -> None:
        """Delete ``key`` from the store and the cache."""
        writes = self._writes
        if writes is not None and writes.deletes:
            await self.delete_many([key])  # on the loop (cacheway._aio_write)
            return
        front = self._sync or await self._front()
        await self._write([key], front.delete, key)

    async def delete_many(self, keys: Iterable[str]) -> None:
        """``delete`` for each key."""
        front = self._sync or await self._front()
        ks = list(check_keys(keys))
        writes = self._writes
        if writes is None or not writes.deletes:
            await self._write(ks, front.delete_many, ks)
            return
        self._forget(ks)
        try:
            await writes.delete_many(ks, lambda: self._call(front.delete_many, ks))
        finally:
            self._forget(ks)

    async def incr(self, key: str, delta: int = 1) -> int:
        """Add ``delta`` to the int under ``key``; the new value (see ``Cache.incr``)."""
        front = self._sync or await self._front()
        self._forget([key])  # incr may load the store: never batched
        try:
            return await self._call(front.incr, key, delta)
        finally:
            self._forget([key])

    async def invalidate(self, key: str) -> None:
        """Drop the cached copies of ``key``; the store keeps the row."""
        front = self._sync or await self._front()
        await self._write([key], front.invalidate, key)

    async def invalidate_many(self, keys: Iterable[str]) -> None:
        """``invalidate`` for each key, in one backend call."""
        front = self._sync or await self._front()
        ks = list(check_keys(keys))
        await self._write(ks, front.invalidate_many, ks)

    async def flush(self, timeout: float | None = None) -> None:
        """Return when every write accepted before the call is in the store (the wait
        happens in a worker thread; see ``Cache.flush``)."""
        front = self._sync or await self._front()
        await self._call(front.flush, timeout)

    async def pending(self) -> int:
        """Dirty entries not yet in the store. Awaitable like every other method: counting
        takes the write-back table's lock, which a journal append holds across a write."""
        front = self._sync or await self._front()
        return await self._call(front.pending)

    def stats(self) -> Stats:
        """A :class:`Stats` snapshot, synchronous (as a metrics collector calls it). It
        takes the write-back table's lock for a moment, never across a store call; on
        the event loop it waits at most 50 ms for a distributed queue's depth (Redis),
        then answers its last reading."""
        front = self._sync
        if front is None:
            return Stats()
        return front.stats(wait=STATS_WAIT if in_loop() else None)

    def cached(
        self, ttl: float | None = None, *, key: Callable[..., str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> Callable[[Callable[P, Awaitable[R]]], CachedFunction[P, R]]:
        """Memoize an ``async def`` function: its results live ``ttl`` seconds (by
        ``clock``) in a namespace named after its qualified name, keyed by its bound
        arguments (or ``key(*args, **kwargs)``); concurrent calls of one key from many
        tasks share one computation; ``await f.invalidate(*args, **kwargs)`` drops one
        call's result. See :mod:`cacheway._aio_memo`.

        >>> import asyncio, cacheway as cw
        >>> acache = cw.AsyncCache(store=cw.SQLiteStore(":memory:"))
        >>> @acache.cached(ttl=60)
        ... async def square(x: int) -> int:
        ...     print("computing")
        ...     return x * x
        >>> async def main():
        ...     return [await square(3), await square(x=3)], await acache.close()
        >>> asyncio.run(main())
        computing
        ([9, 9], None)
        """
        return memoize(self._owner.namespace, ttl, key, clock)


async def _found(load: Awaitable[Any]) -> Any:
    value = await load
    return UNSET if value is MISS else value


def in_loop() -> bool:
    """True when this thread runs an event loop (which a journal replay, or a wait for
    Redis, would block)."""
    with contextlib.suppress(RuntimeError):
        return asyncio.get_running_loop() is not None
    return False


def _landed(reads: dict[str, asyncio.Future[Any]], key: str, flight: asyncio.Future[Any]
            ) -> None:
    if reads.get(key) is flight:
        del reads[key]
    if not flight.cancelled():
        flight.exception()  # seen: no "never retrieved" warning when every reader left


def _is_async(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` starts a coroutine (an ``async def`` function, method,
    callable object or ``functools.partial`` of one)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn):
        return True
    return not inspect.isroutine(fn) and inspect.iscoroutinefunction(type(fn).__call__)
