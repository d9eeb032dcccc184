"""PostgresStore on asyncio: psycopg's ``AsyncConnectionPool`` under an AsyncCache.

:class:`AsyncPostgresStore` is a :class:`PostgresStore` (the same table, SQL and sync
calls) that also declares an async path (:class:`cacheway._aio_path.AsyncStorePath`):
an AsyncCache over it loads and writes through with psycopg on the event loop instead
of a worker thread. The SQL is the sync store's (:func:`.sql.kv_queries`); a versioned
write is one transaction sent as one simple query (the set-if-newer upsert and the
sequence raise under its advisory lock, parameters bound client-side: one round trip),
an unversioned one a single autocommit statement, as the sync store runs them.

The path takes SET and DELETE batches of key/value mode (no key twice, all versioned or
all unversioned, one kind when unversioned); counters (ADD), journal marks and row mode
go through the sync store.

>>> store = AsyncPostgresStore("postgresql://127.0.0.1/test")  # doctest: +SKIP
>>> acache = cw.AsyncCache(store=store, backend=cw.RedisBackend())  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from ...errors import ClosedError, ConfigError, InvalidWriteError, StoreError
from .._errors import is_permanent, storable_text
from ..base import DELETE, NOTSET, SET, Applied, Loaded, Op, expiring
from .helpers import _CONFLICT_RETRIES, _modules, _scrub, _secrets
from .store import PostgresStore
from .versions import SEQ_LOCK_CLASS, one_trip_reports

if TYPE_CHECKING:
    from psycopg import AsyncConnection, Connection
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

__all__ = ["AsyncPostgresStore", "PgAsyncPath"]


class PgAsyncPath:
    """The async path of one key/value table: a psycopg ``AsyncConnectionPool`` of its
    own (built from ``conninfo`` on the loop that first uses it, closed by
    :meth:`aclose`) or the caller's (``pool``: used as given, never closed here)."""

    def __init__(self, table: str, *, conninfo: str | None = None,
                 pool: AsyncConnectionPool[Any] | None = None, min_size: int = 1,
                 max_size: int = 10, timeout: float = 30.0) -> None:
        if (conninfo is None) == (pool is None):
            raise ConfigError("PgAsyncPath needs a conninfo or an AsyncConnectionPool")
        self.table = table
        self.seq = f"{table}_version_seq"  # PgKV's sequence (see kv.py)
        self._conninfo = conninfo
        self._given = pool
        self._pool: AsyncConnectionPool[Any] | None = pool
        self._loop: asyncio.AbstractEventLoop | None = None
        self._min, self._max, self._timeout = min_size, max_size, timeout
        self._secrets = _secrets(conninfo) if conninfo else []
        self._q: dict[str, str] = {}
        self._jsonb = False
        self._closed = False
        self._ready: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"<PgAsyncPath table={self.table!r}>"

    @property
    def pool(self) -> AsyncConnectionPool[Any] | None:
        """The pool in use (None before the first call and after :meth:`aclose`)."""
        return self._pool

    @property
    def owns_pool(self) -> bool:
        """True when the pool is this path's own (built from a conninfo)."""
        return self._given is None

    # -- the pool ------------------------------------------------------------------------
    async def _pool_for_loop(self) -> AsyncConnectionPool[Any]:
        if self._closed:
            raise ClosedError(f"{self!r} is closed")
        loop = asyncio.get_running_loop()
        if self._pool is not None and (self._given is not None or self._loop is loop):
            if not self._q:
                await self._setup(self._pool)
            return self._pool
        if self._ready is None or self._loop is not loop:
            self._ready = asyncio.Lock()
            self._loop = loop
        async with self._ready:
            if self._pool is None or self._loop is not loop or self._pool.closed:
                from psycopg_pool import AsyncConnectionPool

                # A pool belongs to one loop: a previous loop's is dropped with it.
                pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                    cast(str, self._conninfo), min_size=self._min, max_size=self._max,
                    timeout=self._timeout, kwargs={"autocommit": True}, open=False,
                    name=f"cacheway-aio-{self.table}")
                await pool.open()
                self._pool = pool
            if not self._q:
                await self._setup(self._pool)
        return self._pool

    async def _setup(self, pool: AsyncConnectionPool[Any]) -> None:
        from .sql import kv_queries

        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT data_type FROM information_schema.columns WHERE table_schema = "
                "current_schema() AND table_name = %s AND column_name = 'value'",
                (self.table,))
            row = await cur.fetchone()
            if row is None:
                raise ConfigError(f"table {self.table!r} has no value column: the sync "
                                  "store creates it (key/value mode)")
            jsonb = row[0] == "jsonb"
            # kv_queries only quotes identifiers with the connection (no I/O).
            q = kv_queries(cast("Connection[Any]", conn), self.table, self.seq, jsonb)
            self._q = q
            self._jsonb = jsonb

    async def aclose(self) -> None:
        """Close the pool this path built (the caller's stays open)."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None and self._given is None and not pool.closed:
            await pool.close()

    # -- the store path --------------------------------------------------------------------
    def takes(self, ops: Sequence[Op]) -> bool:
        if not ops or len({(op.namespace, op.key) for op in ops}) != len(ops):
            return False
        kinds = {op.kind for op in ops}
        if not kinds <= {SET, DELETE} or expiring(ops):
            return False
        stamped = {op.version is not None for op in ops}
        return stamped == {True} or (stamped == {False} and len(kinds) == 1)

    async def afetch(self, namespace: str, keys: Sequence[str]) -> dict[str, Loaded]:
        keys = [k for k in keys if storable_text(k, nul=False)]
        if not keys or not storable_text(namespace, nul=False):
            return {}

        async def work(conn: AsyncConnection[Any]) -> dict[str, Loaded]:
            cur = await conn.execute(self._q["fetch"], (namespace, keys, time.time()))
            found = await cur.fetchall()
            if self._jsonb:
                return {k: Loaded(v.encode(), NOTSET, ver, at) for k, v, ver, at in found}
            return {k: Loaded(bytes(v), NOTSET, ver, at) for k, v, ver, at in found}

        loaded: dict[str, Loaded] = await self._run("load from", work, write=False)
        return loaded

    async def aapply(self, ops: Sequence[Op]) -> list[Applied]:
        if not self.takes(ops):
            raise ConfigError(f"{self!r} does not take this batch (see takes())")
        order = sorted(range(len(ops)), key=lambda i: (ops[i].namespace, ops[i].key))
        ordered = [ops[i] for i in order]  # rows locked in one order by every process
        if ordered[0].version is not None:
            got = await self._run("write to", lambda c: self._versioned(c, ordered),
                                  write=True)
        else:
            got = await self._run("write to", lambda c: self._stamped(c, ordered),
                                  write=True)
        out: list[Applied] = [Applied(None)] * len(ops)
        for pos, i in enumerate(order):
            out[i] = got[pos]
        return out

    async def _versioned(self, conn: AsyncConnection[Any], ops: list[Op]) -> list[Applied]:
        q = self._q
        nss, keys = [op.namespace for op in ops], [op.key for op in ops]
        values = [self._payload(op) if op.kind == SET else None for op in ops]
        versions = [op.version for op in ops]
        # One round trip, one transaction: the statements of the sync store's versioned
        # batch (vset, then the sequence raise under its advisory lock) sent as one
        # simple query, parameters bound client-side (which the server runs as one
        # implicit transaction; a pipeline of three costs the client twice the CPU).
        from psycopg import AsyncClientCursor

        cur = AsyncClientCursor(conn)
        await cur.execute(q["one_trip"], (nss, keys, values, versions, SEQ_LOCK_CLASS,
                                                self.seq, max(cast(list[int], versions))))
        landed = {(ns, k): v for ns, k, v in await cur.fetchall()}
        skipped = [op for op in ops if (op.namespace, op.key) not in landed]
        current: dict[tuple[str, str], int] = {}
        if skipped:  # rows that kept a newer version: which (read after the commit)
            read = await conn.execute(q["versions"], ([op.namespace for op in skipped],
                                                      [op.key for op in skipped]))
            current = {(ns, k): v for ns, k, v in await read.fetchall()}
        return one_trip_reports(ops, landed, current)

    async def _stamped(self, conn: AsyncConnection[Any], ops: list[Op]) -> list[Applied]:
        q = self._q
        nss, keys = [op.namespace for op in ops], [op.key for op in ops]
        if ops[0].kind == SET:
            cur = await conn.execute(q["set"], (nss, keys, [self._payload(o) for o in ops]),
                                     binary=True)
        else:
            cur = await conn.execute(q["delete"], {"ns": nss, "key": keys}, binary=True)
        got = {(ns, k): v for ns, k, v in await cur.fetchall()}
        return [Applied(got[(op.namespace, op.key)]) for op in ops]

    def _payload(self, op: Op) -> Any:
        assert op.payload is not None  # the engine serialized it (Engine.prepare)
        if not self._jsonb:
            return op.payload
        try:
            return op.payload.decode()
        except UnicodeDecodeError as exc:
            raise InvalidWriteError(f"payload of key {op.key!r} is not UTF-8 JSON: {exc}"
                                    ) from None

    # -- running on a pooled connection ----------------------------------------------------
    async def _run(self, doing: str, work: Any, *, write: bool) -> Any:
        """``work(conn)`` within ``timeout`` seconds in all, repeated on a broken
        connection and on a deadlock (a versioned SET or DELETE lands the same when
        repeated: set-if-newer), with the sync store's errors."""
        psycopg, _ = _modules()
        import psycopg_pool

        retryable = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
        pool = await self._pool_for_loop()

        async def attempts() -> Any:
            tries = 0
            while True:
                tries += 1
                conn = None
                try:
                    async with pool.connection() as conn:
                        return await work(conn)
                except psycopg.Error as exc:
                    broken = conn is not None and conn.broken
                    if isinstance(exc, psycopg_pool.PoolTimeout):
                        raise self._error(doing, exc, False) from exc
                    if (isinstance(exc, retryable) or broken) and tries <= _CONFLICT_RETRIES:
                        await asyncio.sleep(0.001 * tries)
                        continue
                    raise self._error(doing, exc, write) from exc
                except UnicodeEncodeError as exc:
                    raise self._error(doing, exc, write) from None

        try:
            if sys.version_info >= (3, 11):
                async with asyncio.timeout(self._timeout):
                    return await attempts()
            return await asyncio.wait_for(attempts(), self._timeout)
        except asyncio.TimeoutError as exc:
            # A connection cancelled mid-query goes back to the pool not idle: discarded.
            raise StoreError(
                f"PostgreSQL {doing} table {self.table!r} timed out: no answer within "
                f"timeout={self._timeout:g} s") from exc

    def _error(self, doing: str, exc: BaseException, write: bool) -> StoreError:
        text = _scrub(str(exc).strip() or type(exc).__name__, self._secrets)
        kind = InvalidWriteError if write and is_permanent(exc) else StoreError
        return kind(f"PostgreSQL {doing} table {self.table!r} failed: {text}")


class AsyncPostgresStore(PostgresStore):
    """A :class:`PostgresStore` (same arguments) that declares an async path for an
    AsyncCache: ``async_pool`` (a ``psycopg_pool.AsyncConnectionPool``, open, the
    caller's: never closed here) or, by default, a pool of its own built from the DSN
    (``min_size``..``max_size``) on the loop that first uses it and closed when the
    AsyncCache closes. Key/value mode only: row mode has no async path (refused here)."""

    def __init__(self, dsn_or_pool: str | ConnectionPool[Any], table: str = "cacheway", *,
                 async_pool: AsyncConnectionPool[Any] | None = None, min_size: int = 1,
                 max_size: int = 10, timeout: float = 30.0, **options: Any) -> None:
        if options.get("key_column") is not None or options.get("columns"):
            raise ConfigError("AsyncPostgresStore is key/value mode only: use "
                              "PostgresStore for row mode (its calls run in threads)")
        if async_pool is None and not isinstance(dsn_or_pool, str):
            raise ConfigError("AsyncPostgresStore over a sync pool needs async_pool= "
                              "(a psycopg_pool.AsyncConnectionPool)")
        super().__init__(dsn_or_pool, table, min_size=min_size, max_size=max_size,
                         timeout=timeout, **options)
        self._async = PgAsyncPath(
            self.table, conninfo=dsn_or_pool if isinstance(dsn_or_pool, str) and
            async_pool is None else None,
            pool=async_pool, min_size=min_size, max_size=max_size, timeout=timeout)

    def async_path(self) -> PgAsyncPath:
        """The async path (one per store)."""
        return self._async
