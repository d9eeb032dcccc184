"""The async store path: a store's own asyncio driver, used by an AsyncCache on the loop.

A store that can load and write on asyncio declares it with a public method
``async_path()`` returning an :class:`AsyncStorePath` (read once, when the AsyncCache
opens: capabilities are declared, never probed per call). The AsyncCache then runs the
ops the path ``takes`` on the event loop, without a hop to a worker thread; anything
else (a kind of op the path does not take, a store without the capability) goes
through the thread front as before.

:class:`cacheway.stores.postgres.aio.AsyncPostgresStore` declares one (psycopg's
``AsyncConnectionPool``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .stores.base import Applied, Loaded, Op

__all__ = ["AsyncStore", "AsyncStorePath", "async_path_of"]


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
class AsyncStore(Protocol):
    """The capability: a store that offers an :class:`AsyncStorePath`."""

    def async_path(self) -> AsyncStorePath: ...


def async_path_of(store: object) -> AsyncStorePath | None:
    """``store``'s async path, or None when it declares none."""
    if isinstance(store, AsyncStore):
        return store.async_path()
    return None
