"""Running work on PostgreSQL for :class:`~cacheway.stores.postgres.PostgresStore`: the
pool, a deadline on every call, retries on stale connections and deadlocks, and errors
that never show a password."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from ...errors import ClosedError, ConfigError, InvalidWriteError, StoreError
from .._deadline import Deadline, Watchdog
from .._errors import is_permanent
from .._fork import GATE
from .helpers import _CONFLICT_RETRIES, _Attempt, _scrub, _secrets, connect_options

if TYPE_CHECKING:
    from psycopg import Connection
    from psycopg_pool import ConnectionPool

__all__ = ["PgRunner"]

_T = TypeVar("_T")
# How long the pool retries a lost connection in the background before the next call
# starts over (see _open_pool).
_RECONNECT = 2.0


class PgRunner:
    """The connection side of PostgresStore (a base class): it sets these attributes
    and implements ``_setup``."""

    _pg: Any  # the psycopg module
    table: str
    _timeout: float
    _secrets: list[str]
    _where: str
    _watchdog: Watchdog
    _max_size: int
    _closed: bool
    _pool: ConnectionPool[Any]

    def _setup(self, conn: Connection[Any]) -> None:
        raise NotImplementedError

    # -- connecting ------------------------------------------------------------------------
    def _open_pool(self, dsn: str, min_size: int, max_size: int, psycopg_pool: Any
                   ) -> ConnectionPool[Any]:
        psycopg = self._pg
        self._secrets = _secrets(dsn)
        try:
            params = psycopg.conninfo.conninfo_to_dict(dsn)
        except psycopg.Error as exc:
            raise ConfigError(
                f"malformed PostgreSQL DSN: {_scrub(str(exc), self._secrets)}"
            ) from None
        if params.get("password"):
            self._secrets = sorted({*self._secrets, str(params["password"])}, key=len,
                                   reverse=True)
        host, port = params.get("host", "localhost"), params.get("port", "5432")
        self._where = f"postgresql://{params.get('user', '')}@{host}:{port}/" + str(
            params.get("dbname", ""))
        extra = connect_options(params, self._timeout)
        # Connect once up front: a bad host or password fails here, fast and clearly,
        # rather than as a pool timeout later.
        try:
            conn = psycopg.connect(dsn, autocommit=True, **extra)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL at {self._where} for table {self.table!r}: "
                + _scrub(str(exc).strip(), self._secrets)
            ) from None
        call: Deadline | None = None
        try:
            with conn, self._watchdog.guard(conn.fileno(), self._timeout) as call:
                self._setup(conn)
        except psycopg.Error as exc:
            raise (self._timed_out("setup of", exc, False) if call is not None and call.fired
                   else self._error("setup of", exc)) from exc
        # reconnect_timeout: a lost connection is retried in the background for
        # _RECONNECT s only (psycopg_pool's backoff doubles up to minutes); then the
        # next call asks for a new one, so a server that came back is used at once.
        # A process stopped inside a batch (SIGSTOP, a long pause) keeps its row locks
        # until the server ends its idle transaction: another worker's writes of those
        # rows wait for it. No call of ours stays in a transaction past its deadline.
        idle = f"SET idle_in_transaction_session_timeout = {int(self._timeout * 1000) + 1000}"
        pool: ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            dsn, min_size=min_size, max_size=max_size, timeout=self._timeout,
            reconnect_timeout=_RECONNECT, configure=lambda conn: conn.execute(idle),
            kwargs={"autocommit": True, **extra}, open=True, name=f"cacheway-{self.table}",
        )
        return pool

    # -- running work on a pooled connection -------------------------------------------
    _forked_pool = False  # a pool passed in, inherited across a fork (see after_fork_in_child)
    # In a forked child until its first call: opens the child's own pool.
    _reopen_in_child: Callable[[], ConnectionPool[Any]] | None = None
    _child_lock: threading.Lock

    def _check(self) -> None:
        if self._closed:
            raise ClosedError(f"{self!r} is closed")
        if self._forked_pool:
            raise StoreError(
                f"{self!r} was given a psycopg_pool.ConnectionPool before os.fork(): its "
                "connections are the parent's sockets and cannot be shared. Pass a DSN "
                "(the store then opens a pool of its own in each child), or open the pool "
                "in the child")

    def _error(self, doing: str, exc: BaseException, write: bool = False) -> StoreError:
        text = _scrub(str(exc).strip() or type(exc).__name__, self._secrets)
        kind = InvalidWriteError if write and is_permanent(exc) else StoreError
        return kind(f"PostgreSQL {doing} table {self.table!r} at {self._where} failed: "
                    + text)

    def _timed_out(self, doing: str, exc: BaseException, committing: bool) -> StoreError:
        text = (f"PostgreSQL {doing} table {self.table!r} at {self._where} timed out: no "
                f"answer within timeout={self._timeout:g} s, the connection was dropped")
        if committing:
            text += " during COMMIT: the outcome of this batch is unknown"
        return StoreError(f"{text} ({_scrub(str(exc).strip(), self._secrets)})")

    def _run(self, doing: str, work: Callable[[Connection[Any], _Attempt], _T],
             write: bool = False) -> _T:
        """``work`` on a pooled connection, within ``timeout`` seconds in all: waiting
        for a connection, then the work under a :class:`Watchdog` deadline that drops
        the connection when the server does not answer in time (``StoreError``).

        A connection found broken (the server restarted, a proxy dropped it) is
        discarded by the pool; the work is tried again on another one, while time is
        left, unless COMMIT was already sent. With ``write``, an error about the data
        written (a value too long, a constraint) is an :class:`InvalidWriteError`."""
        self._check()
        with GATE:  # see stores/_fork.py
            if self._reopen_in_child is not None:
                self._open_in_child()
            return self._attempts(doing, work, write)

    def _open_in_child(self) -> None:
        """A forked child's first call opens its own pool (the fork hook does no I/O)."""
        with self._child_lock:
            reopen = self._reopen_in_child
            if reopen is not None:
                self._pool = reopen()
                self._reopen_in_child = None

    def _attempts(self, doing: str, work: Callable[[Connection[Any], _Attempt], _T],
                  write: bool) -> _T:
        psycopg, pool_timeout = self._pg, self._pg_pool_timeout()
        retryable = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
        deadline = time.monotonic() + self._timeout
        attempt_no = 0
        conflicts = 0
        while True:
            attempt_no += 1
            attempt = _Attempt()
            conn: Connection[Any] | None = None
            call: Deadline | None = None
            try:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise pool_timeout(f"no connection within {self._timeout:g} s")
                with self._pool.connection(timeout=left) as conn, self._watchdog.guard(
                        conn.fileno(), max(0.0, deadline - time.monotonic())) as call:
                    return work(conn, attempt)
            except UnicodeEncodeError as exc:  # text no database takes (a lone surrogate)
                raise self._error(doing, exc, write) from None
            except psycopg.Error as exc:
                if call is not None and call.fired:
                    raise self._timed_out(doing, exc, attempt.committing) from exc
                if isinstance(exc, retryable) and conflicts < _CONFLICT_RETRIES:
                    # The server rolled the whole transaction back (another process
                    # locked the same rows in another order): nothing applied, repeat.
                    conflicts += 1
                    time.sleep(random.uniform(0.001, 0.01) * conflicts)
                    attempt_no -= 1
                    continue
                broken = conn is not None and conn.broken
                if (broken and not attempt.committing and attempt_no <= self._max_size
                        and not isinstance(exc, pool_timeout)):
                    # Stale connections (a server restart ends them all) fail fast; the
                    # pool replaces each one it gets back broken.
                    continue
                if isinstance(exc, pool_timeout):
                    raise StoreError(
                        f"PostgreSQL {doing} table {self.table!r} at {self._where} timed "
                        f"out: no connection to the server within timeout="
                        f"{self._timeout:g} s ({exc})") from exc
                err = self._error(doing, exc, write)
                if broken and attempt.committing:
                    err = StoreError(f"{err} (the connection broke during COMMIT: the "
                                     "outcome of this batch is unknown)")
                raise err from exc

    def _pg_pool_timeout(self) -> type[BaseException]:
        import psycopg_pool

        return psycopg_pool.PoolTimeout
