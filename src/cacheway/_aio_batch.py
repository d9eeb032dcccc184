"""Batcher: calls that never wait for I/O, run back to back by one worker thread.

A write-back namespace without a journal over a process-local backend accepts a write in
memory (the flusher does the I/O later), so a hop to a thread per call costs far more than
the call itself. Tasks queue such calls here; one worker thread runs every queued call in
order and hands the results back to the loop in one wakeup. Per-key order holds: calls run
in the order the tasks made them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Batcher"]

_Call = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]
_Done = tuple["asyncio.Future[Any]", Any, "BaseException | None"]


def _resolve(done: list[_Done]) -> None:
    for future, result, exc in done:
        if future.cancelled():
            continue  # the task left; its call took effect all the same
        if exc is None:
            future.set_result(result)
        else:
            future.set_exception(exc)


class Batcher:
    """Queue of calls for one worker thread of ``pool`` at a time."""

    def __init__(self, pool: concurrent.futures.ThreadPoolExecutor) -> None:
        self._pool = pool
        self._lock = threading.Lock()  # held for a list swap, never across a call
        self._queue: list[_Call] = []
        self._running = False

    def submit(self, loop: asyncio.AbstractEventLoop, fn: Callable[..., Any],
               args: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Queue ``fn(*args)``; the future completes on ``loop`` with its outcome."""
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            self._queue.append((fn, args, future))
            start = not self._running
            self._running = True
        if start:
            try:
                self._pool.submit(self._drain, loop)
            except RuntimeError:  # the pool is shut down (the cache closed)
                with self._lock:
                    self._running = False
                raise
        return future

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            with self._lock:
                batch, self._queue = self._queue, []
                if not batch:
                    self._running = False
                    return
            done: list[_Done] = []
            for fn, args, future in batch:
                try:
                    done.append((future, fn(*args), None))
                except Exception as exc:  # noqa: BLE001 - handed to the caller's task
                    done.append((future, None, exc))
            # A closed loop raises RuntimeError: nobody waits for these results any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve, done)
