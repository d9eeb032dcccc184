"""PostgresStore on asyncio: psycopg's ``AsyncConnectionPool`` under an AsyncCache.

:class:`PgAsyncPath` is the async path (:class:`cacheway._aio_path.AsyncStorePath`) of a
key/value table: an AsyncCache over it loads and writes through with psycopg on the
event loop instead of a worker thread. A plain :class:`PostgresStore` opened from a DSN
gives each AsyncCache a path of its own (``PostgresStore.async_path``: a pool from the
same DSN and settings, opened on the cache's loop, closed with the cache);
:class:`AsyncPostgresStore` is a PostgresStore with one path, which may run on a pool
the caller opened (``async_pool=``). The SQL is the sync store's
(:func:`.sql.kv_queries`): a versioned write is one statement (``vset_raise``: the
set-if-newer upsert, then the sequence raise under its advisory lock), an unversioned
one a single autocommit statement, as the sync store runs them.

The path takes SET and DELETE batches of key/value mode (no key twice, all versioned or
all unversioned, one kind when unversioned); counters (ADD), journal marks and row mode
go through the sync store.

>>> store = cw.PostgresStore("postgresql://127.0.0.1/test")  # doctest: +SKIP
>>> acache = cw.AsyncCache(store=store, backend=cw.RedisBackend())  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from ..._aio_path import close_with_loop, stop_closing
from ...errors import ClosedError, ConfigError, InvalidWriteError, StoreError
from .._aio_deadline import within
from .._errors import is_permanent, storable_text
from .._fork import track
from ..base import DELETE, NOTSET, SET, Applied, Loaded, Op, expiring
from .helpers import _CONFLICT_RETRIES, _modules, _scrub, _secrets, connect_options
from .run import _RECONNECT
from .store import PostgresStore
from .versions import one_trip_landed, one_trip_reports, one_trip_statement

if TYPE_CHECKING:
    from psycopg import AsyncConnection, Connection
    from psycopg_pool import AsyncConnectionPool, ConnectionPool

__all__ = ["AsyncPostgresStore", "PgAsyncPath"]


class PgAsyncPath:
    """The async path of one key/value table: a psycopg ``AsyncConnectionPool`` of its
    own (built from ``conninfo`` on the loop that first uses it, closed by
    :meth:`aclose`) or the caller's (``pool``: used as given, never closed here).
    ``store``: the sync store of the table, whose :meth:`~PostgresStore.close` closes
    this path too (its calls then raise ClosedError, as the store's do).

    A pool belongs to one event loop. Used from another loop (``asyncio.run`` once per
    test, say), the path opens a new pool there and drops the previous loop's unclosed
    (its tasks and sockets belong to that loop; the connections close when it is
    garbage). In the child of a fork it opens a pool of its own likewise (the inherited
    one is the parent's sockets: kept unused and unclosed); the caller's pool cannot be
    rebuilt there, so the child's calls refuse it."""

    def __init__(self, table: str, *, conninfo: str | None = None,
                 pool: AsyncConnectionPool[Any] | None = None, min_size: int = 1,
                 max_size: int = 10, timeout: float = 30.0,
                 store: PostgresStore | None = None) -> None:
        if (conninfo is None) == (pool is None):
            raise ConfigError("PgAsyncPath needs a conninfo or an AsyncConnectionPool")
        self.table = table
        self._store = store
        self._inherited: list[Any] = []  # a parent's pools, after a fork
        self._forked = False  # the caller's pool, inherited across a fork
        self.seq = f"{table}_version_seq"  # PgKV's sequence (see kv.py)
        self._conninfo = conninfo
        self._given = pool
        self._pool: AsyncConnectionPool[Any] | None = pool
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of _ready
        self._pool_loop: asyncio.AbstractEventLoop | None = None  # the loop of _pool
        self._min, self._max, self._timeout = min_size, max_size, timeout
        self._secrets = _secrets(conninfo) if conninfo else []
        self._q: dict[str, str] = {}
        self._jsonb = False
        self._closed = False
        self._users = 0  # AsyncCaches attached (a shared path: AsyncPostgresStore's)
        self._ready: asyncio.Lock | None = None
        self._closer: asyncio.Task[None] | None = None  # closes _pool when its loop ends
        track(self)

    def after_fork_in_child(self) -> None:
        """A forked child's calls open a pool of their own (see ``stores/_fork.py``)."""
        if self._given is not None:
            self._forked = True
        elif self._pool is not None:
            self._inherited.append(self._pool)
            self._pool, self._pool_loop, self._closer = None, None, None

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
        if self._store is not None and self._store.closed:
            raise ClosedError(f"{self._store!r} is closed")
        if self._forked:
            raise StoreError(
                f"{self!r} was given a psycopg_pool.AsyncConnectionPool before os.fork(): "
                "its connections are the parent's sockets and cannot be shared. Open the "
                "pool in the child, or let the store build its own from the DSN")
        loop = asyncio.get_running_loop()
        if self._pool is not None and (self._given is not None or (
                self._pool_loop is loop and not self._pool.closed)):
            if not self._q:
                await self._setup(self._pool)
            return self._pool
        if self._ready is None or self._loop is not loop:
            self._ready = asyncio.Lock()  # (an asyncio lock belongs to one loop too)
            self._loop = loop
        async with self._ready:
            if self._given is None and (self._pool is None or self._pool_loop is not loop
                                        or self._pool.closed):
                from psycopg_pool import AsyncConnectionPool

                psycopg, _ = _modules()
                conninfo = cast(str, self._conninfo)
                extra = connect_options(psycopg.conninfo.conninfo_to_dict(conninfo),
                                        self._timeout)
                # A pool belongs to one loop: a previous loop's is dropped with it. The
                # settings are the sync store's (see PgRunner._open_pool).
                pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
                    conninfo, min_size=self._min, max_size=self._max,
                    timeout=self._timeout, reconnect_timeout=_RECONNECT,
                    kwargs={"autocommit": True, **extra}, open=False,
                    name=f"cacheway-aio-{self.table}")
                # wait=True: the first call finds its connection ready, so the pool
                # does not grow a second one for it while the loop may be ending.
                try:
                    await pool.open(wait=True, timeout=self._timeout)
                except BaseException as exc:
                    await pool.close(timeout=0)  # its workers would retry for good
                    if isinstance(exc, psycopg.Error):
                        raise self._error("connecting for", exc, False) from exc
                    raise
                self._pool, self._pool_loop = pool, loop
                self._closer = close_with_loop(pool.close, f"{pool.name}-closer")
            assert self._pool is not None
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

    def attach(self) -> None:
        """An AsyncCache starts using this shared path (:class:`AsyncPostgresStore`'s):
        its :meth:`aclose` then closes the pool only when the last one attached closes,
        and leaves the path usable (a later AsyncCache opens a new pool)."""
        self._users += 1

    async def aclose(self) -> None:
        """Close the pool this path built on the running loop (the caller's stays open;
        one of a loop that is gone was dropped with it). On a path AsyncCaches attached
        to, only the last one's close does it, and the path stays usable."""
        if self._users > 0:
            self._users -= 1
            if self._users > 0:
                return  # another AsyncCache still uses the pool
        else:
            self._closed = True
        pool, self._pool = self._pool, None
        if (pool is not None and self._given is None and not pool.closed
                and self._pool_loop is asyncio.get_running_loop()):
            await pool.close()
            stop_closing(self._closer)

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
        # One round trip, one transaction: the upsert and the sequence raise under its
        # advisory lock in one statement (see ``vset_raise`` in sql.py).
        query, params = one_trip_statement(q, ops, self.seq, self._payload)
        cur = await conn.execute(query, params, binary=True)
        landed, skipped = one_trip_landed(ops, await cur.fetchall())
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
            # (not asyncio.timeout: psycopg's cancel of a stalled query takes ~10 s more)
            return await within(attempts(), self._timeout)
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
    """A :class:`PostgresStore` (same arguments) with one async path for every AsyncCache
    over it: ``async_pool`` (a ``psycopg_pool.AsyncConnectionPool``, open, the caller's:
    never closed here) or, by default, a pool of its own built from the DSN
    (``min_size``..``max_size``) on the loop that first uses it and closed when the
    AsyncCache closes (a plain PostgresStore gives each AsyncCache a pool of its own).
    Key/value mode only: row mode has no async path (refused here)."""

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
            pool=async_pool, min_size=min_size, max_size=max_size, timeout=timeout,
            store=self)

    def async_path(self) -> PgAsyncPath:
        """The async path (one per store)."""
        return self._async
