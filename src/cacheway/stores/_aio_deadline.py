"""A deadline for an awaited database call that does not wait for the driver to give up.

``asyncio.timeout`` cancels the awaited call and then waits for it to end: a driver
cancelled mid-query may first try to cancel the query on the server, over the link that
stalled (psycopg: up to ~10 s of "cancellation timeout" and "not terminated" before it
closes the connection). :func:`within` answers the caller at the deadline instead and
lets the cancelled call end its own way in the background; its connection is the
driver's to discard.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from .._aio_path import seen

__all__ = ["TimedOut", "still_running", "within"]

T = TypeVar("T")


class TimedOut(asyncio.TimeoutError):
    """:func:`within`'s deadline passed; ``pending`` is the cancelled call, still ending
    in the background (a write in it may yet land: see :func:`still_running`)."""

    def __init__(self, message: str, pending: asyncio.Future[Any]) -> None:
        super().__init__(message)
        self.pending = pending


def still_running(exc: BaseException) -> asyncio.Future[Any] | None:
    """The call a timeout in ``exc`` (or what caused it) left running, if it has not
    ended: a caller that must keep order waits for it before its next call."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimedOut):
            return None if seen.pending.done() else seen.pending
        seen = seen.__cause__
    return None


async def within(work: Coroutine[Any, Any, T], timeout: float) -> T:
    """``await work``, or ``asyncio.TimeoutError`` once ``timeout`` seconds passed (the
    work is cancelled and left to end on its own). A caller cancelled meanwhile cancels
    the work too.

    >>> async def slow() -> int:
    ...     await asyncio.sleep(10)
    ...     return 1
    >>> async def main() -> str:
    ...     try:
    ...         await within(slow(), 0.01)
    ...     except asyncio.TimeoutError:
    ...         return "timed out"
    ...     return "answered"
    >>> asyncio.run(main())
    'timed out'
    """
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if done:
        return task.result()
    task.cancel()
    task.add_done_callback(seen)  # ended after the caller left: nobody else looks
    raise TimedOut(f"no answer within {timeout:g} s", task)
