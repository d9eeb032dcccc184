"""The async store path: a store's own asyncio driver, used by an AsyncCache on the loop.

A store that can load and write on asyncio declares it with a public method
``async_path()`` returning an :class:`AsyncStorePath`, or None when the store's
configuration has none (read once per store, when the AsyncCache opens: capabilities
are declared, never probed per call). The AsyncCache then runs the ops the path
``takes`` on the event loop, without a hop to a worker thread; anything else (a kind
of op the path does not take, a store without the capability) goes through the thread
front as before. The AsyncCache closes the paths it used when it closes.

:class:`cacheway.PostgresStore` declares one (psycopg's ``AsyncConnectionPool``, a new
path and pool per AsyncCache), as does its subclass
:class:`cacheway.stores.postgres.aio.AsyncPostgresStore` (one path per store), and
:class:`cacheway.SQLAlchemyStore` on MariaDB/MySQL (SQLAlchemy's async engine over
asyncmy, :mod:`cacheway.stores.sqlalchemy.aio`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from .stores.base import Applied, Loaded, Op

__all__ = ["AsyncStore", "AsyncStorePath", "ForkAwarePath", "SharedPath", "async_path_of",
           "close_with_loop", "seen", "stop_closing"]


@runtime_checkable
class AsyncStorePath(Protocol):
    """What a store does on asyncio, with the meaning of its sync ``fetch``/``apply``."""

    def takes(self, ops: Sequence[Op]) -> bool:
        """Whether :meth:`aapply` runs ``ops`` (else the caller uses the sync store)."""
        ...

    async def afetch(self, namespace: str, keys: Sequence[str]) -> dict[str, Loaded]:
        """``Store.fetch`` on the running loop."""
        ...

    async def aapply(self, ops: Sequence[Op]) -> list[Applied]:
        """``Store.apply(ops)`` (no journal mark) on the running loop: one transaction,
        set-if-newer for versioned ops; raises StoreError (InvalidWriteError for data the
        store refuses) as the sync store does."""
        ...

    async def aclose(self) -> None:
        """Close what the path opened (a pool the caller passed in stays open)."""
        ...


@runtime_checkable
class ForkAwarePath(Protocol):
    """A path that goes on in a process forked from the one that used it: in the child,
    ``after_fork_in_child()`` drops (never closes: they are the parent's) the pool and
    connections it inherited, and builds its own on the child's loop. An AsyncCache in a
    forked child runs the ops of a path without it through the thread front (the sync
    store reopens its connections in the child) and leaves the path alone."""

    def after_fork_in_child(self) -> None: ...


@runtime_checkable
class SharedPath(Protocol):
    """A path one store gives every AsyncCache over it (``AsyncPostgresStore``'s): each
    AsyncCache calls ``attach()`` when it starts using it, and its ``aclose()`` closes
    what the path opened only when the last one attached closes (the path stays usable
    for the next AsyncCache)."""

    def attach(self) -> None: ...


@runtime_checkable
class AsyncStore(Protocol):
    """The capability: a store that offers an :class:`AsyncStorePath`."""

    def async_path(self) -> AsyncStorePath | None: ...


def async_path_of(store: object) -> AsyncStorePath | None:
    """``store``'s async path, or None when it declares none."""
    if isinstance(store, AsyncStore):
        return store.async_path()
    return None


def close_with_loop(close: Callable[[], Awaitable[None]], name: str) -> asyncio.Task[None]:
    """A task on the running loop that runs ``close()`` when the loop shuts down
    (``asyncio.run`` cancels every task left at its end, and waits for them): a pool
    built for one loop is closed with it, not left to the garbage collector. Cancel the
    task (:func:`stop_closing`) once the pool was closed otherwise.

    It also ends the pool's own tasks: psycopg_pool's workers catch the cancellation
    of a connection attempt under way (``CancelledError`` is one of the errors they
    survive) and wait for their next job, so ``asyncio.run`` waited for them forever;
    the close hands each its stop signal."""
    return asyncio.get_running_loop().create_task(_close_at_end(close), name=name)


async def _close_at_end(close: Callable[[], Awaitable[None]]) -> None:
    try:
        await asyncio.get_running_loop().create_future()  # until cancelled
    except asyncio.CancelledError:
        await close()
        raise


def stop_closing(task: asyncio.Task[None] | None) -> None:
    """The pool of ``task`` (:func:`close_with_loop`) was closed: the task goes."""
    if task is not None and not task.done():
        task.cancel()


def seen(task: asyncio.Future[Any]) -> None:
    """A done callback for a task nobody awaits any more (its caller left, or timed
    out): retrieve its exception, so asyncio never warns it "was never retrieved"."""
    if not task.cancelled():
        task.exception()
