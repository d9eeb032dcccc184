"""``@acache.cached(ttl=60)``: memoize an ``async def`` function in an AsyncCache.

The default key is the function's bound arguments (defaults applied), serialized stably
(orjson, sorted keys), in a namespace of its own named after the qualified name
(``module.qualname``, anything outside ``[A-Za-z0-9_.-]`` replaced by ``_``, a hash ending
the name when it is longer than 64). ``key=`` receives the call's arguments instead.

A result is stored as ``[expires_at, result]`` (``expires_at`` by ``clock``, wall time by
default; None without ``ttl``), so a stored result outlives a restart but not its ``ttl``.
Concurrent calls of one key from many tasks share one computation.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, cast

from ._aio_path import seen
from .core.keys import check_ttl
from .errors import ConfigError, InvalidKeyError, SerializationError
from .memoize import CallKey, namespace_for, refused_result

if TYPE_CHECKING:
    from .aio import AsyncNamespace

__all__ = ["CachedFunction", "memoize"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)
_MISS: Any = object()


class CachedFunction(Protocol[P, R_co]):
    """What ``@acache.cached(...)`` returns: the function, awaitable as before, plus
    ``invalidate``."""

    __name__: str  # the function's (functools.wraps), as __qualname__ and __module__
    __qualname__: str
    __module__: str

    @property
    def __wrapped__(self) -> Callable[P, Awaitable[R_co]]: ...

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R_co]: ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, None]:
        """Drop the stored result of this call (store and cache)."""
        ...


class _Abandoned(Exception):
    """The task computing a result was cancelled: a waiter computes it instead."""


def _live(entry: Any, ttl: float | None, clock: Callable[[], float]) -> bool:
    """A stored result ``{"v": result, "at": written}`` (memoize's shape: the sync and
    asyncio fronts share results) that has not outlived ``ttl``."""
    if entry.__class__ is not dict or "v" not in entry:
        return False  # not ours (written by hand): compute and overwrite it
    at = entry.get("at")
    return ttl is None or (isinstance(at, (int, float)) and at + ttl > clock())


def memoize(
    namespace: Callable[[str], AsyncNamespace],
    ttl: float | None,
    key: Callable[..., str] | None,
    clock: Callable[[], float],
) -> Callable[[Callable[P, Awaitable[R]]], CachedFunction[P, R]]:
    """The decorator ``AsyncCache.cached`` returns; ``namespace(name)`` opens the view
    the results live in (on the first call)."""
    ttl = check_ttl(ttl)
    if key is not None and not callable(key):
        raise ConfigError(f"key= must be a callable returning a str, not {key!r}")

    def decorate(fn: Callable[P, Awaitable[R]]) -> CachedFunction[P, R]:
        if not inspect.iscoroutinefunction(fn):
            raise ConfigError(
                f"AsyncCache.cached() takes an async def function, not {fn!r} "
                "(Cache.cached memoizes plain functions)")
        call_key = CallKey(fn)
        make_key = key if key is not None else (
            lambda *args, **kwargs: call_key.key_of(args, kwargs))
        name = namespace_for(fn)
        views: list[AsyncNamespace] = []
        flights: dict[str, asyncio.Future[Any]] = {}

        def key_of(args: Any, kwargs: Any) -> str:
            k = make_key(*args, **kwargs)
            if not isinstance(k, str):
                raise InvalidKeyError(f"key= of {name} returned {k!r}, not a str")
            return k

        def view() -> AsyncNamespace:
            if not views:
                views.append(namespace(name))
            return views[0]

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            k = key_of(args, kwargs)
            ns = view()
            entry = await ns.get(k, _MISS)
            if _live(entry, ttl, clock):
                return cast(R, entry["v"])
            while (flight := flights.get(k)) is not None:
                try:
                    return cast(R, await asyncio.shield(flight))
                except _Abandoned:
                    continue  # its leader was cancelled: lead, or join the next one
            flight = asyncio.get_running_loop().create_future()
            flight.add_done_callback(seen)  # (no waiters left: nobody else looks)
            flights[k] = flight
            try:
                # Read again under the flight: a computation may have ended since.
                entry = await ns.get(k, _MISS)
                if _live(entry, ttl, clock):
                    result = cast(R, entry["v"])
                else:
                    result = await fn(*args, **kwargs)
                    try:
                        await ns.set(k, {"v": result, "at": clock()}, ttl)
                    except SerializationError as exc:
                        raise refused_result(fn.__qualname__, exc) from None
            except asyncio.CancelledError:
                flight.set_exception(_Abandoned())
                raise
            except BaseException as exc:
                flight.set_exception(exc)
                raise
            else:
                flight.set_result(result)
            finally:
                if flights.get(k) is flight:
                    del flights[k]
            return result

        async def invalidate(*args: P.args, **kwargs: P.kwargs) -> None:
            await view().delete(key_of(args, kwargs))

        wrapper.invalidate = invalidate  # type: ignore[attr-defined]
        return cast(CachedFunction[P, R], wrapper)

    return decorate
