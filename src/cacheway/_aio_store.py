"""AsyncCallbackStore: a CallbackStore whose callbacks may be ``async def``.

>>> import asyncio, cacheway as cw
>>> data = {}
>>> async def load_many(keys):
...     return {k: data[k] for k in keys if k in data}
>>> async def save_many(items):
...     data.update(items)
>>> async def delete_many(keys):
...     for k in keys: data.pop(k, None)
>>> async def main():
...     store = cw.AsyncCallbackStore(load_many, save_many, delete_many)
...     async with cw.AsyncCache(store=store) as acache:
...         await acache.set("k", 1)
...     return data
>>> asyncio.run(main())
{'k': 1}
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
from collections.abc import Callable
from typing import Any

from .errors import ClosedError, ConfigError
from .serializers import Serializer
from .stores.callback import CallbackStore

__all__ = ["AsyncCallbackStore"]

#: Seconds between checks, while a thread waits for a coroutine, that its loop still runs.
LOOP_CHECK = 0.25


class AsyncCallbackStore(CallbackStore):
    """A :class:`CallbackStore` whose callbacks may be ``async def`` (sync ones work too).

    A worker thread of the AsyncCache that uses it (or its flusher thread) runs each
    coroutine on the cache's event loop and waits for it, so the callback awaits its own
    async driver (asyncpg, an HTTP client) on the loop while the loop stays free. A
    callback must not await the same AsyncCache (it could wait for a thread it holds).
    When the loop is not running (the app stopped without closing the cache) a call fails
    with :class:`StoreError` and write-back keeps its entries dirty.
    """

    def __init__(
        self,
        load_many: Callable[[list[str]], Any],
        save_many: Callable[[list[tuple[str, Any]]], Any],
        delete_many: Callable[[list[str]], Any],
        add_many: Callable[[list[tuple[str, int]]], Any] | None = None,
        *,
        serializer: Serializer | None = None,
    ) -> None:
        self._loop_ref: asyncio.AbstractEventLoop | None = None
        super().__init__(
            self._sync_of(load_many, "load_many"), self._sync_of(save_many, "save_many"),
            self._sync_of(delete_many, "delete_many"),
            None if add_many is None else self._sync_of(add_many, "add_many"),
            serializer=serializer)

    def bind_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Run the coroutine callbacks on ``loop`` (the AsyncCache does this)."""
        if loop is not None:
            self._loop_ref = loop

    def _sync_of(self, fn: Callable[[Any], Any], name: str) -> Callable[[Any], Any]:
        if not callable(fn) or not inspect.iscoroutinefunction(fn):
            return fn  # CallbackStore checks it is callable

        def run(arg: Any) -> Any:
            loop = self._loop_ref
            if loop is None:
                raise ClosedError(f"async {name} needs an AsyncCache's running event loop")
            try:
                if asyncio.get_running_loop() is loop:
                    raise ConfigError(
                        f"async {name} called on its event loop's thread would deadlock")
            except RuntimeError:
                pass  # no loop in this thread: the usual case (a worker thread)
            if loop.is_closed():
                raise ClosedError(f"the event loop of async {name} is closed")
            future = asyncio.run_coroutine_threadsafe(fn(arg), loop)
            while True:
                try:
                    return future.result(timeout=LOOP_CHECK)
                except concurrent.futures.TimeoutError:
                    # (the builtin TimeoutError since 3.11: the callback's own, when the
                    # future is done, is its error, not "still running")
                    if future.done():
                        raise
                    if loop.is_closed() or not loop.is_running():
                        future.cancel()
                        raise ClosedError(
                            f"the event loop of async {name} stopped during the call"
                        ) from None

        return run
