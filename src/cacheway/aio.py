"""AsyncCache: the asyncio front, driving the thread front from the event loop.

Every call that can wait (a store load or write, a journal fsync, a network backend, a slow
callback, a flush) runs in a worker thread of a pool the AsyncCache owns, and the call
awaits it; nothing of the kind ever runs on the event loop. The guarantees are the thread
front's (:class:`cacheway.Cache`), which this wraps: single flight across the pool's threads
(one store load per stampede of tasks), read-your-writes, per-key order, the journal's group
commit across concurrent fsyncs. Not done yet (each call that needs it still costs a hop
to a thread): the write-back flusher as an asyncio task.

What runs on the loop instead of a worker thread (memory and Redis hits, write-through
writes and read misses over a store's async path, tasks sharing one read, write-back
writes queued to one thread or a journal lane: :mod:`cacheway._aio_batch`) is told in
``docs/architecture.md`` ("On the asyncio front") and measured by ``bench/async.py``.

>>> import asyncio, cacheway as cw
>>> async def main():
...     async with cw.AsyncCache(store=cw.SQLiteStore(":memory:"),
...                              policy=cw.WriteBack(max_delay=0.1)) as acache:
...         await acache.set("k", [1, 2])
...         return await acache.get("k")
>>> asyncio.run(main())
[1, 2]
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ._aio_batch import Batcher
from ._aio_front import UNSET, AsyncFront, in_loop
from ._aio_path import AsyncStorePath, ForkAwarePath, SharedPath, async_path_of
from ._aio_redis import LoopReader
from ._aio_store import AsyncCallbackStore
from ._aio_write import LoopWrites
from .backends.base import Backend
from .cache import Cache, Namespace
from .engine.fastpaths import memory_peek
from .errors import ClosedError, ConfigError
from .policies import Policy, WriteBack
from .serializers import Serializer
from .stores.base import Store
from .stores.callback import CallbackStore

__all__ = ["AsyncCache", "AsyncCallbackStore", "AsyncNamespace", "open_async"]

T = TypeVar("T")
#: Worker threads of an AsyncCache's pool unless ``max_workers=`` says otherwise: enough for
#: a stampede of slow loads and concurrent journal fsyncs (group commit) to proceed together.
DEFAULT_WORKERS = 32
#: Threads that run journalled write-back writes at once: enough for the journal's group
#: commit to gather appends, few enough to leave the loop the GIL (see Batcher).
JOURNAL_LANE = 8


def _pool(max_workers: object) -> concurrent.futures.ThreadPoolExecutor:
    if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
        raise ConfigError(f"max_workers must be an int >= 1, not {max_workers!r}")
    return concurrent.futures.ThreadPoolExecutor(
        max_workers=max_workers, thread_name_prefix="cacheway-aio")


def _journalled(policy: Policy | None) -> bool:
    """True when opening an engine for ``policy`` reads and replays a journal (I/O)."""
    return isinstance(policy, WriteBack) and policy.journal is not None


class AsyncNamespace(AsyncFront):
    """A named slice of an AsyncCache's keys (see ``Cache.namespace``)."""

    def __init__(self, owner: AsyncCache, name: str, options: dict[str, Any]) -> None:
        self._owner = owner
        self.name = name
        #: the options it was opened with (``Cache.namespace``'s)
        self.options = options
        self._lock: asyncio.Lock | None = None
        self._reads = {}

    def __repr__(self) -> str:
        return f"<cacheway.AsyncNamespace {self.name!r}>"

    @property
    def opened(self) -> bool:
        """True once its namespace of the thread front is open."""
        return self._sync is not None

    def open_now(self, cache: Cache) -> Namespace[Any]:
        """Open its namespace of ``cache`` (blocking: a journal may replay)."""
        ns = cache.namespace(self.name, **self.options)
        self._peek = self._owner._peek_for(ns.name)
        self._remote = self._owner._remote_for(ns.name)
        self._batch = self._owner._batcher_for(ns.policy, cache)
        self._writes = self._owner._writes_for(ns.name)
        self._sync = ns
        return ns

    async def _front(self) -> Cache | Namespace[Any]:
        # Deferred (a journalled write-back namespace replays its journal when it opens):
        # opened in a worker thread on first use, once.
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._sync is None:
                cache = await self._owner._ready()
                await self._owner._run(self.open_now, cache)
        assert self._sync is not None
        return self._sync

    def namespace(self, name: str, **options: Any) -> AsyncNamespace:
        """Namespaces are flat: ``ns.namespace(x)`` is ``acache.namespace(x)``."""
        return self._owner.namespace(name, **options)

    async def close(self, timeout: float | None = None) -> None:
        """Flush and stop this namespace; the cache's others go on."""
        front = self._sync or await self._front()
        assert isinstance(front, Namespace)
        if self._writes is not None:
            await self._writes.drain()  # writes on the loop end with their copies first
        await self._call(front.close, timeout)


class AsyncCache(AsyncFront):
    """A :class:`cacheway.Cache` for asyncio: the same arguments (``store``, ``backend``,
    ``policy``, ``ttl``, ``serializer``, ``timer``, ``early_refresh``, ``stale_if_error``,
    ``ttl_jitter``, ``random``), every method awaitable except ``stats()`` and
    ``namespace()``. ``max_workers`` sizes the pool of threads that run the calls.

    A cache whose policy keeps a journal, built on a running event loop, opens (replays
    the journal) in a worker thread on its first awaited call or ``async with``; any other
    opens here (built at import, before any loop runs, the journal is the process's that
    built it: children forked from it get journals of their own). A call cancelled while
    it runs in its thread still takes effect, as with any thread offload.

    Across ``os.fork()`` (gunicorn ``--preload``): a child that runs its own event loop
    uses the AsyncCache it inherited; see :meth:`after_fork_in_child`.
    """

    def __init__(
        self,
        store: Store,
        backend: Backend | None = None,
        policy: Policy | None = None,
        ttl: float | None = None,
        *,
        serializer: Serializer | None = None,
        timer: Callable[[], float] = time.monotonic,
        early_refresh: float | None = None,
        stale_if_error: float | None = None,
        ttl_jitter: float = 0.0,
        random: Callable[[], float] | None = None,
        max_workers: int = DEFAULT_WORKERS,
    ) -> None:
        self._setup(max_workers, inline=early_refresh is None)
        if type(store) is CallbackStore and store.async_callbacks:
            # async def callbacks run on this cache's event loop (AsyncCallbackStore)
            store = AsyncCallbackStore(*store.callbacks, serializer=store.serializer)
        self._build = functools.partial(
            Cache, store, backend, policy, ttl, serializer=serializer, timer=timer,
            early_refresh=early_refresh, stale_if_error=stale_if_error,
            ttl_jitter=ttl_jitter, random=random)
        self._async_store(store)
        if not _journalled(policy) or self._loop is None:  # (no loop to block: at import)
            try:
                self._opened(self._build())
            except BaseException:
                self._pool.shutdown(wait=False)
                raise

    def _setup(self, max_workers: int, *, inline: bool) -> None:
        self._owner = self
        self._closed = False
        self._pool = _pool(max_workers)
        self._workers = max_workers
        self._namespaces: dict[str, AsyncNamespace] = {}
        self._reads = {}
        self._lock: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):  # outside a loop: bound at the first call
            self._loop = asyncio.get_running_loop()
        self._async_stores: list[AsyncCallbackStore] = []
        self._inline = inline  # early refresh decides on each hit: never inline then
        self._reader: LoopReader | None = None
        self._paths: list[AsyncStorePath] = []  # async store paths to close with the cache
        self._store_paths: dict[int, tuple[object, AsyncStorePath | None]] = {}
        self._loop_writes: list[LoopWrites] = []  # their writes under way end before close
        self._inherited: list[object] = []  # a parent's clients and pools, after a fork
        self._forked = False  # in a child forked from the process that built it
        _OPEN.add(self)

    @classmethod
    def from_cache(cls, cache: Cache, *, max_workers: int = DEFAULT_WORKERS) -> AsyncCache:
        """An AsyncCache over an open thread-front ``cache`` (``cw.open``'s, or one you
        built): from then on it owns the cache and closes it when it closes. Early
        refresh decides on each hit, so a cache with it is never answered inline."""
        self = cls.__new__(cls)
        self._setup(max_workers, inline=cache.read_options.early_refresh is None)
        self._async_store(cache.store)
        self._opened(cache)
        return self

    def after_fork_in_child(self) -> None:
        """In a forked child (an ``os.register_at_fork`` hook): worker threads of its own
        (the parent's do not exist here: a call handed to them would wait forever); calls
        in flight at the fork stay the parent loop's. redis.asyncio clients and async
        store pools are the parent loop's: the child builds its own and keeps these
        referenced, never closed (that would end the parent's connections, or drop their
        sockets from the epoll the parent's loop shares with the child). The thread front
        renews its flushers and journal itself (``Cache``'s fork hooks)."""
        if self._closed:
            return
        self._pool = _pool(self._workers)
        self._forked = True
        paths: list[AsyncStorePath] = []
        for path in self._paths:
            if isinstance(path, ForkAwarePath):
                path.after_fork_in_child()
                paths.append(path)
            else:  # the parent's: kept referenced, unused, never closed
                self._inherited.append(path)
        self._paths = paths
        self._loop_writes = [w for w in self._loop_writes if w.path in paths]
        for writes in self._loop_writes:
            writes.after_fork_in_child()
        if self._reader is not None:
            self._inherited.append(self._reader.after_fork_in_child())
        for front in (self, *self._namespaces.values()):
            front.renew_after_fork(self._pool, self._loop_writes)

    def _async_store(self, store: object) -> None:
        if isinstance(store, AsyncCallbackStore):
            self._async_stores.append(store)
            store.bind_loop(self._loop)

    def _bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Async callbacks run on the loop the cache is used from (the latest one)."""
        self._loop = loop
        for store in self._async_stores:
            store.bind_loop(loop)

    def _opened(self, cache: Cache) -> None:
        self._sync = cache
        self._reader = LoopReader.build(cache.backend, cache.serializer) if self._inline else None
        self._peek = self._peek_for("")
        self._remote = self._remote_for("")
        self._batch = self._batcher_for(cache.policy, cache)
        self._writes = self._writes_for("")

    def _writes_for(self, name: str) -> LoopWrites | None:
        """Write-through sets of namespace ``name`` on the loop (:mod:`._aio_write`)."""
        cache = self._sync
        if not isinstance(cache, Cache):
            return None
        engine = next(e for e in cache.engines() if e.namespace == name)
        writes = LoopWrites.build(engine, self._reader, self._path_of)
        if writes is not None and self._forked and not isinstance(writes.path, ForkAwarePath):
            return None  # the parent's (see after_fork_in_child)
        if writes is not None:
            self._loop_writes.append(writes)
            if all(p is not writes.path for p in self._paths):
                self._paths.append(writes.path)  # closed with the cache: attached
                if isinstance(writes.path, SharedPath):
                    writes.path.attach()
        return writes

    def _path_of(self, store: object) -> AsyncStorePath | None:
        """``store``'s async path, asked once: the namespaces over one store share it."""
        known = self._store_paths.get(id(store))
        if known is None:  # (the store is kept with it: its id is not reused meanwhile)
            known = self._store_paths[id(store)] = (store, async_path_of(store))
        return known[1]

    def _peek_for(self, name: str) -> Callable[[str], Any] | None:
        cache = self._sync
        if not self._inline or not isinstance(cache, Cache):
            return None
        engine = next(e for e in cache.engines() if e.namespace == name)
        return memory_peek(engine)

    def _remote_for(self, name: str) -> Callable[[str], Awaitable[Any]] | None:
        """A Redis hit of namespace ``name`` read on the loop (:mod:`._aio_redis`)."""
        cache, reader = self._sync, self._reader
        if reader is None or not isinstance(cache, Cache):
            return None
        return reader.get_for(next(e for e in cache.engines() if e.namespace == name))

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open" if self._sync is not None else "opening"
        return f"<cacheway.AsyncCache {self._sync!r} ({state})>"

    def _loop_for_call(self) -> asyncio.AbstractEventLoop:
        if self._closed:
            raise ClosedError("AsyncCache is closed")
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._bind_loop(loop)
        return loop

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = self._loop_for_call()
        return await loop.run_in_executor(self._pool, fn, *args)

    def _batcher_for(self, policy: Policy, cache: Cache) -> Batcher | None:
        """A Batcher when the writes of ``policy`` never wait for I/O: write-back
        accepting into a process-local backend, with no journal to sync and no
        on_full="write_through" (which writes the store when the table is full); a lane
        of JOURNAL_LANE threads for journalled write-back writes (see Batcher)."""
        if not isinstance(policy, WriteBack) or policy.on_full == "write_through":
            return None
        if policy.journal is not None:
            return Batcher(self._pool, width=JOURNAL_LANE)
        return Batcher(self._pool) if cache.backend.local else None

    async def _ready(self) -> Cache:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._sync is None:
                self._opened(await self._run(self._build))
        assert isinstance(self._sync, Cache)
        return self._sync

    async def _front(self) -> Cache | Namespace[Any]:
        return await self._ready()

    @property
    def cache(self) -> Cache | None:
        """The thread-front :class:`Cache` underneath (None until a journalled one opens)."""
        return self._sync if isinstance(self._sync, Cache) else None

    @property
    def closed(self) -> bool:
        return self._closed

    def namespace(
        self, name: str, *, policy: Policy | None = None, ttl: float | None = UNSET,
        store: Store | None = None, type: Any = None, expire: float | None = None,
    ) -> AsyncNamespace:
        """An :class:`AsyncNamespace` (same options as ``Cache.namespace``, ``type=``
        included: a typed namespace answers its type). Asking again for a name without
        options returns the same view. A journalled write-back namespace asked for on a
        running event loop opens in a worker thread on its first call."""
        if self._closed:
            raise ClosedError("AsyncCache is closed")
        options: dict[str, Any] = {}
        if type is not None:
            options["type"] = type
        if policy is not None:
            options["policy"] = policy
        if ttl is not UNSET:
            options["ttl"] = ttl
        if expire is not None:
            options["expire"] = expire
        if store is not None:
            options["store"] = store
            self._async_store(store)
        cache = self._sync
        existing = self._namespaces.get(name)
        if existing is not None:
            if existing.opened:
                if options and isinstance(cache, Cache):  # it says whether they conflict
                    cache.namespace(name, **options)
            elif options and options != existing.options:
                raise ConfigError(
                    f"namespace {name!r} already exists with {existing.options}; "
                    "open it without options")
            return existing
        view = AsyncNamespace(self, name, options)
        pol = policy if policy is not None else cache.policy if isinstance(cache, Cache) else None
        if isinstance(cache, Cache) and (not _journalled(pol) or not in_loop()):
            view.open_now(cache)  # raises ConfigError as Cache.namespace does
        self._namespaces[name] = view
        return view

    async def close(self, timeout: float | None = None) -> None:
        """Flush every namespace and stop (``Cache.close(timeout)``, in a worker thread),
        then stop the worker threads. On a timeout it raises; the journal keeps the rest."""
        if self._closed:
            return
        cache = self._sync
        try:
            for writes in self._loop_writes:
                await writes.drain()  # a write on the loop ends with its copy, then close
            if isinstance(cache, Cache):
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(self._pool, cache.close, timeout)
        finally:
            self._closed = True
            self._pool.shutdown(wait=False)
            if self._reader is not None:
                await self._reader.aclose()
            for path in self._paths:
                await path.aclose()

    async def __aenter__(self) -> AsyncCache:
        await self._ready()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


_OPEN: weakref.WeakSet[AsyncCache] = weakref.WeakSet()  # renewed in a forked child


def _after_fork_in_child() -> None:
    for acache in list(_OPEN):
        acache.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


async def open_async(
    store: str | Store = "sqlite:///cacheway.db",
    backend: str | Backend = "memory://",
    policy: str | Policy = "write-through",
    ttl: float | None = None,
    *,
    max_workers: int = DEFAULT_WORKERS,
    **options: Any,
) -> AsyncCache:
    """An :class:`AsyncCache` from the URLs :func:`cacheway.open` takes (built, and any
    journal replayed, in a worker thread); what it builds from URLs closes with it."""
    from ._urls import open as open_sync

    _pool(max_workers).shutdown()  # refuse a bad max_workers before any work
    build = functools.partial(open_sync, store, backend, policy, ttl, **options)
    cache = await asyncio.to_thread(build)  # a journal replays off the loop
    try:
        return AsyncCache.from_cache(cache, max_workers=max_workers)
    except BaseException:
        cache.close()
        raise
