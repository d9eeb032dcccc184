"""SQLAlchemyStore on asyncio: SQLAlchemy's async engine (asyncmy) for MariaDB and MySQL.

:class:`SAAsyncPath` is the async path (:class:`cacheway._aio_path.AsyncStorePath`) of a
key/value table on MariaDB or MySQL: an AsyncCache over the store writes through and
loads on the event loop, with no worker thread. It runs the sync store's own statements
(``SAKeyValue.apply_in`` / ``fetch_in``: the version counter row locked first, the
set-if-newer upserts) through ``AsyncConnection.run_sync``, which drives them on the loop
over the ``asyncmy`` driver, so both paths write the same rows the same way.

The engine is built from the store's URL with the driver swapped for ``asyncmy``, on
the loop that first uses it (one per loop, as a pool of connections belongs to one
loop; a previous loop's is dropped), and disposed of by :meth:`aclose`. The driver is an
extra, ``pip install 'cacheway[sqlalchemy-async]'``, imported at the first call.

>>> store = cw.SQLAlchemyStore("mysql+pymysql://root@127.0.0.1/test")  # doctest: +SKIP
>>> acache = cw.AsyncCache(store=store)  # its async path: mysql+asyncmy  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..._aio_path import close_with_loop, stop_closing
from ...errors import ClosedError, ConfigError, StoreError
from .._aio_deadline import within
from .._errors import storable_text
from .._fork import track
from ..base import DELETE, SET, Applied, Loaded, Op

if TYPE_CHECKING:
    import sqlalchemy as sa
    from sqlalchemy.ext.asyncio import AsyncEngine

    from .kv import SAKeyValue

__all__ = ["ASYNC_DRIVER", "ASYNC_EXTRA", "SAAsyncPath", "async_driver_installed"]

ASYNC_DRIVER = "asyncmy"
ASYNC_EXTRA = "pip install 'cacheway[sqlalchemy-async]'"


def async_driver_installed() -> bool:
    """True when the async driver and SQLAlchemy's asyncio support can be imported."""
    return all(importlib.util.find_spec(m) is not None for m in (ASYNC_DRIVER, "greenlet"))


class SAAsyncPath:
    """The async path of one key/value table on MariaDB/MySQL (see the module).

    ``url``: the store's (its driver is replaced); ``mapping``: the store's statements;
    ``error(what, exc, write)``: the store's StoreError for an SQLAlchemy error;
    ``closed()``: whether the store was closed (its calls then raise ClosedError)."""

    def __init__(self, url: sa.URL, mapping: SAKeyValue, *, timeout: float, pool_size: int,
                 keys_take_nul: bool, error: Callable[[str, BaseException, bool], StoreError],
                 closed: Callable[[], bool], name: str) -> None:
        self._url = url.set(drivername=f"{url.get_backend_name()}+{ASYNC_DRIVER}")
        self._mapping = mapping
        self._timeout = timeout
        self._pool_size = pool_size
        self._nul = keys_take_nul
        self._error = error
        self._store_closed = closed
        self._name = name
        self._engine: AsyncEngine | None = None
        self._engine_loop: asyncio.AbstractEventLoop | None = None
        self._inherited: list[Any] = []  # a parent's engines, after a fork
        self._closer: asyncio.Task[None] | None = None  # disposes _engine at its loop's end
        self._closed = False
        track(self)

    def __repr__(self) -> str:
        return f"<SAAsyncPath {self._name}>"

    @property
    def engine(self) -> AsyncEngine | None:
        """The async engine in use (None before the first call and after aclose)."""
        return self._engine

    def after_fork_in_child(self) -> None:
        """A forked child builds an engine of its own (see ``stores/_fork.py``); the
        inherited pool is forgotten, not closed (the parent's sockets)."""
        if self._engine is not None:
            self._engine.sync_engine.dispose(close=False)
            self._inherited.append(self._engine)
            self._engine, self._engine_loop, self._closer = None, None, None

    def _engine_for_loop(self) -> AsyncEngine:
        if self._closed:
            raise ClosedError(f"{self!r} is closed")
        if self._store_closed():
            raise ClosedError(f"the store of {self!r} is closed")
        loop = asyncio.get_running_loop()
        if self._engine is not None and self._engine_loop is loop:
            return self._engine
        try:
            import asyncmy  # noqa: F401  (the extra: named in the error)
            from sqlalchemy.ext.asyncio import create_async_engine
        except ImportError as exc:
            raise ConfigError(f"SQLAlchemyStore on asyncio needs {ASYNC_DRIVER} and "
                              f"greenlet: {ASYNC_EXTRA}") from exc
        # A previous loop's engine is dropped (its connections are that loop's: it was
        # disposed of when its loop shut down); building one does no I/O.
        engine = create_async_engine(
            self._url, pool_pre_ping=True, pool_timeout=self._timeout,
            pool_size=self._pool_size, connect_args={"connect_timeout": self._timeout})
        self._engine, self._engine_loop = engine, loop
        self._closer = close_with_loop(engine.dispose, f"cacheway-aio-{self._name}-closer")
        return engine

    async def aclose(self) -> None:
        """Dispose of the running loop's engine (one of a loop that is gone was dropped
        with it)."""
        self._closed = True
        engine, self._engine = self._engine, None
        if engine is not None and self._engine_loop is asyncio.get_running_loop():
            await engine.dispose()
            stop_closing(self._closer)

    # -- the store path --------------------------------------------------------------------
    def takes(self, ops: Sequence[Op]) -> bool:
        return bool(ops) and {op.kind for op in ops} <= {SET, DELETE}

    async def afetch(self, namespace: str, keys: Sequence[str]) -> dict[str, Loaded]:
        wanted = [k for k in dict.fromkeys(keys) if storable_text(k, self._nul)]
        if not wanted or not storable_text(namespace, self._nul):
            return {}
        engine = self._engine_for_loop()
        fetch_in = self._mapping.fetch_in

        async def work() -> dict[str, Loaded]:
            async with engine.connect() as conn:
                return await conn.run_sync(lambda c: fetch_in(c, namespace, wanted))

        got: dict[str, Loaded] = await self._run("load from", work, write=False)
        return got

    async def aapply(self, ops: Sequence[Op]) -> list[Applied]:
        if not self.takes(ops):
            raise ConfigError(f"{self!r} does not take this batch (see takes())")
        engine = self._engine_for_loop()
        apply_in = self._mapping.apply_in

        async def work() -> list[Applied]:
            async with engine.begin() as conn:
                return await conn.run_sync(lambda c: apply_in(c, ops))

        applied: list[Applied] = await self._run("write to", work, write=True)
        return applied

    async def _run(self, doing: str, work: Callable[[], Any], *, write: bool) -> Any:
        """``work()`` within ``timeout`` seconds, with the sync store's errors."""
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return await within(work(), self._timeout)  # (see _aio_deadline)
        except SQLAlchemyError as exc:
            raise self._error(f"{doing} {self._name} at", exc, write) from exc
        except UnicodeEncodeError as exc:  # text no database takes
            raise self._error(f"{doing} {self._name} at", exc, write) from None
        except asyncio.TimeoutError as exc:
            # A connection cancelled mid-query is invalidated by the pool, not reused.
            raise StoreError(f"SQLAlchemyStore {doing} {self._name} timed out: no answer "
                             f"within timeout={self._timeout:g} s") from exc
