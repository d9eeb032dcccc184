"""PostgresStore: PostgreSQL as the store, on psycopg 3 and psycopg_pool.

Key/value mode (the default) keeps every namespace in one table it creates when missing::

    table (namespace text, key text, value jsonb | bytea, version bigint,
           updated_at timestamptz, primary key (namespace, key))

with a sequence ``{table}_version_seq`` (versions survive deletes) and the journal-mark
tables ``{table}_meta`` and ``{table}_applied`` (see :mod:`cacheway.stores.postgres.kv`).
Row mode (``key_column=``, ``columns=``) maps dict values onto the columns of an
existing table instead (see :mod:`cacheway.stores.postgres.rows`). The store owns the
pool and the transactions (:mod:`cacheway.stores.postgres.run`); the mapping chosen at
construction writes the SQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ...errors import ConfigError
from ...serializers import JSONSerializer, Serializer
from .._deadline import Watchdog
from .._errors import storable_text
from .._fork import GATE, track
from ..base import (
    ADD,
    DELETE,
    SET,
    Applied,
    JournalMark,
    Loaded,
    Op,
    StoreBase,
    ValidateFn,
    check_key,
    validate_identifier,
)
from ..marks import Trim, check_fence, check_mark, last_seqs
from ..rows import row_mode
from .helpers import (
    LOCK_CLASS,
    MAX_KEY_BYTES,
    _Attempt,
    _key_order,
    _modules,
    _scrub,
    _segments,
    create_marks,
    ddl_lock,
)
from .run import PgRunner

if TYPE_CHECKING:
    from psycopg import Connection, Cursor
    from psycopg_pool import ConnectionPool

    from .aio import PgAsyncPath

__all__ = ["LOCK_CLASS", "PgMapping", "PostgresStore"]


class PgMapping(Protocol):
    """How keys map to SQL (key/value or row mode); the store runs it on its pool."""

    versioned: bool
    atomic_add: bool
    expires: bool  # keeps data expiry (key/value mode)
    max_key_chars: int | None
    marks: tuple[str, str]  # (meta, applied) table names
    companion: str  # the longest name the mapping adds next to the table
    marks_at_setup: bool  # mark tables made by setup(), else at the first mark
    tombstones_in_marks: bool  # versioned batches need the mark tables

    @property
    def validate(self) -> ValidateFn | None: ...

    def payload_check(self, serializer: Serializer) -> Callable[[bytes], None] | None: ...

    def setup(self, conn: Connection[Any]) -> None: ...

    def fetch(self, conn: Connection[Any], ns: str, keys: list[str]) -> dict[str, Loaded]: ...

    def sample_keys(self, conn: Connection[Any], ns: str, n: int) -> list[str]: ...

    def purge_expired(self, conn: Connection[Any], limit: int) -> int: ...

    def prepare(self, ops: Sequence[Op]) -> Any: ...

    def versions(self, ops: Sequence[Op]) -> list[int]: ...

    def one_statement(self, ops: Sequence[Op], prepared: Any, kinds: set[int]) -> bool: ...

    def one_trip(self, ops: Sequence[Op]) -> bool: ...

    def write_one_trip(self, conn: Connection[Any], ops: Sequence[Op]) -> list[Applied]: ...

    def write(self, cur: Cursor[Any], ops: Sequence[Op], prepared: Any,
              segments: list[list[int]], versions: list[int],
              out: list[Applied | None]) -> None: ...


class PostgresStore(PgRunner, StoreBase):
    """A PostgreSQL table as the store: batched versioned upserts, atomic counter adds.

    ``dsn_or_pool`` is a libpq DSN/URL (the store builds a pool of ``min_size`` to
    ``max_size`` connections and closes it in :meth:`close`) or a
    ``psycopg_pool.ConnectionPool`` (the caller's: left open). ``timeout`` bounds each
    call: waiting for a pooled connection and running its statements, COMMIT included.
    Past it, a client-side deadline drops the connection (a server or network that
    stalls never answers, and ``statement_timeout`` cannot help when the query never
    arrived) and the call raises :class:`StoreError` saying it timed out; the pool
    replaces the connection. Give a batch that may legitimately run longer a larger
    ``timeout``.

    Each :meth:`apply` is one transaction with at most one statement per kind of op
    (``unnest`` arrays: sets, deletes, adds; plus one for the journal mark). Versions
    come from ``nextval`` of the table's sequence, drawn after the row lock on updates
    and deletes, so a key's versions follow its commit order across processes. Counter
    adds happen in SQL (``jsonb``) or read-modify-write under the row lock (``bytea``,
    for non-JSON serializers). A JSON value holding a NUL character (``"\\u0000"``) is
    refused by ``jsonb``: the write fails with :class:`StoreError`.

    Row mode (``key_column=``, ``columns=``, ``version_column=``) maps dict values to
    the columns of an existing table; it has no namespace column, so the namespace of
    an op is ignored (give each namespace its own table); counters are not supported.

    Under an :class:`~cacheway.AsyncCache`, a store opened from a DSN in key/value mode
    writes through and loads on the event loop with psycopg's ``AsyncConnectionPool``
    (see :meth:`async_path`); its sync calls serve the thread front, journal replay and
    the flusher as before.
    """

    versioned = True
    low_water_marks = True  # journal marks of the low water alone (a queue consumer's)
    fenced_marks = True  # JournalMark.after checked in the batch's transaction
    #: Keys (and namespaces) up to 2000 UTF-8 bytes: a btree index entry holds at most
    #: 2704 bytes (8 kB pages), and the primary key (namespace, key) and the journal
    #: marks' (journal, namespace, key) must fit with their headers (see postgres/helpers.py).
    max_key_bytes: int | None = MAX_KEY_BYTES
    keys_take_nul = False

    @property
    def validate(self) -> ValidateFn | None:
        """In row mode, checks a write at the call and returns the row the cache keeps."""
        return self._mapping.validate

    def payload_check(self, serializer: Serializer) -> Callable[[bytes], None] | None:
        """In key/value mode, the check of a cache's payloads (``PayloadCheck``): a jsonb
        table refuses a NUL character and a serializer other than JSON at the write."""
        return self._mapping.payload_check(serializer)

    def __init__(
        self,
        dsn_or_pool: str | ConnectionPool[Any],
        table: str = "cacheway",
        *,
        key_column: str | None = None,
        columns: Sequence[str] | None = None,
        version_column: str | None = None,
        serializer: Serializer | None = None,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 30.0,
    ) -> None:
        psycopg, psycopg_pool = _modules()
        self._pg = psycopg
        self.table = validate_identifier(table)
        self.serializer = serializer if serializer is not None else JSONSerializer()
        if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
            raise ConfigError(f"min_size must be an int >= 0, not {min_size!r}")
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < max(
                1, min_size):
            raise ConfigError(f"max_size must be an int >= max(1, min_size), not {max_size!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(f"timeout must be a number of seconds > 0, not {timeout!r}")
        self._timeout = float(timeout)
        self._secrets: list[str] = []
        self._mapping: PgMapping
        if row_mode(key_column, columns, version_column):
            if key_column is None or not columns:
                raise ConfigError("row mode needs both key_column= and columns=[...]")
            from .rows import RowMapper

            self._mapping = RowMapper(table, key_column, columns, version_column,
                                      self.serializer)
        else:
            from .kv import PgKV

            self._mapping = PgKV(table, self.serializer,
                                 lambda text: _scrub(text, self._secrets))
        self.versioned = self._mapping.versioned
        companion = self._mapping.companion
        if len(companion) > 63:
            # PostgreSQL would truncate the name silently, and two tables could share it.
            raise ConfigError(
                f"table name {table!r} is too long: its companion object {companion!r} "
                "would exceed PostgreSQL's 63-character identifiers"
            )
        self._meta, self._applied = self._mapping.marks
        self._marks_ready = False
        self._mark_lock = threading.Lock()
        self._trim = Trim()
        self._closed = False
        self._q: dict[str, str] = {}  # the journal marks' queries
        self._where = "the caller's pool"
        self._watchdog = Watchdog(table)
        self._max_size = max_size
        self._inherited: list[Any] = []  # a parent's pools, after a fork
        self._reopen: Callable[[], ConnectionPool[Any]] | None = None
        self._async_from: tuple[str, int, int] | None = None  # see async_path
        if isinstance(dsn_or_pool, str):
            self._own = True
            if not row_mode(key_column, columns, version_column):
                self._async_from = (dsn_or_pool, min_size, max_size)
            self._reopen = lambda: self._open_pool(dsn_or_pool, min_size, max_size,
                                                   psycopg_pool)
            with GATE:
                self._pool = self._reopen()
        elif isinstance(dsn_or_pool, psycopg_pool.ConnectionPool):
            self._own = False
            self._pool = dsn_or_pool
            self._max_size = dsn_or_pool.max_size
            self._run("setup of", lambda conn, _: self._setup(conn))
        else:
            raise ConfigError(
                "PostgresStore needs a DSN string or a psycopg_pool.ConnectionPool, "
                f"not {type(dsn_or_pool).__name__}"
            )

        track(self)

    def after_fork_in_child(self) -> None:
        """A forked child's own pool (see ``_fork.py``). The parent's pool is kept, unused
        and unclosed: its connections are the parent's sockets. A pool passed in cannot be
        rebuilt here: calls in the child then refuse to use it."""
        if self._closed:
            return
        self._inherited.append(self._pool)
        self._watchdog = Watchdog(self.table)
        if self._reopen is not None:  # at the first call: a fork hook does no I/O
            self._child_lock = threading.Lock()
            self._reopen_in_child = self._reopen
        else:
            self._forked_pool = True

    def __repr__(self) -> str:
        return f"PostgresStore({self._where}, table={self.table!r})"

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def async_path(self) -> PgAsyncPath | None:
        """A new async path for an AsyncCache (:mod:`cacheway._aio_path`): psycopg's
        ``AsyncConnectionPool`` from this store's DSN, sizes and timeout, opened on the
        loop the cache is used from and closed when the cache closes (each AsyncCache
        over the store has its own). None in row mode and over a pool passed in (which
        says how to connect only for sync connections): those calls run in threads."""
        if self._async_from is None:
            return None
        from .aio import PgAsyncPath

        dsn, low, high = self._async_from
        return PgAsyncPath(self.table, conninfo=dsn, min_size=low, max_size=high,
                           timeout=self._timeout, store=self)

    @property
    def atomic_add(self) -> bool:
        return self._mapping.atomic_add

    @property
    def expires(self) -> bool:
        """True in key/value mode: namespaces may ``expire=`` (see
        :class:`~cacheway.stores.base.Expires`); row mode has no expiry column."""
        return self._mapping.expires

    def purge_expired(self, limit: int = 1000) -> int:
        """Delete up to ``limit`` rows whose data has expired; how many it deleted."""
        self._check()
        purge = self._mapping.purge_expired
        return int(self._run("purging expired rows of", lambda conn, _: purge(conn, limit),
                             write=True))

    # -- connecting and setting up ------------------------------------------------------
    def _setup(self, conn: Connection[Any]) -> None:
        mapping = self._mapping
        mapping.setup(conn)
        self.max_key_chars = mapping.max_key_chars
        if mapping.marks_at_setup:
            self._marks_ready = True
            self._build_mark_queries(conn)

    def _build_mark_queries(self, conn: Connection[Any]) -> None:
        from .sql import mark_queries

        self._q.update(mark_queries(conn, self._meta, self._applied))

    def _ensure_marks(self, conn: Connection[Any]) -> None:
        """Row mode creates its mark tables at the first journal mark, not before: a
        store that never sees a journal adds nothing next to the user's table."""
        with self._mark_lock:
            if self._marks_ready:
                return
            with conn.transaction():
                ddl_lock(conn, self.table)
                create_marks(conn, self._meta, self._applied)
            self._marks_ready = True
            self._build_mark_queries(conn)

    # -- the store protocol ------------------------------------------------------------
    def fetch(self, namespace: str, keys: Sequence[str]) -> dict[str, Loaded]:
        self._check()
        # Text PostgreSQL cannot hold (NUL, a lone surrogate) names no row.
        keys = [k for k in keys if storable_text(k, nul=False)]
        if not keys or not storable_text(namespace, nul=False):
            return {}
        fetch = self._mapping.fetch
        return self._run("load from", lambda conn, _: fetch(conn, namespace, keys))

    def sample_keys(self, namespace: str, n: int) -> list[str]:
        """Up to ``n`` random keys of ``namespace`` that hold a value (for the checker)."""
        if n <= 0 or not storable_text(namespace, nul=False):
            return []
        sample = self._mapping.sample_keys
        return self._run("listing keys of", lambda conn, _: sample(conn, namespace, n))

    def apply(
        self, ops: Sequence[Op], *, journal: JournalMark | None = None
    ) -> list[Applied]:
        self._check()
        if not ops and journal is None:
            return []
        for op in ops:
            if op.kind not in (SET, DELETE, ADD):
                raise ConfigError(f"unknown op kind {op.kind!r}")
            check_key(self, op.namespace, op.key)
        if journal is not None:
            check_mark(ops, journal)
        order = _key_order(ops)
        if order is not None:
            # Rows locked in one order by every process: concurrent batches over the
            # same keys wait for each other instead of deadlocking.
            ops = [ops[i] for i in order]
            if journal is not None and journal.seqs:
                journal = journal._replace(seqs=[journal.seqs[i] for i in order])
            applied = self._apply_ordered(ops, journal)
            out: list[Applied] = [applied[0]] * len(ops)
            for pos, i in enumerate(order):
                out[i] = applied[pos]
            return out
        return self._apply_ordered(ops, journal)

    def _apply_ordered(self, ops: Sequence[Op], journal: JournalMark | None
                       ) -> list[Applied]:
        mapping = self._mapping
        prepared = mapping.prepare(ops)
        segments = _segments(ops)
        kinds = {op.kind for op in ops}
        versions = mapping.versions(ops)
        # One statement needs no BEGIN/COMMIT of its own on an autocommit connection: it
        # is atomic alone, and saves two round trips (the common write-through case).
        single = (journal is None and not versions and len(segments) == 1 and len(kinds) == 1
                  and mapping.one_statement(ops, prepared, kinds))
        marks_needed = journal is not None or (mapping.tombstones_in_marks and bool(versions))
        one_trip = journal is None and bool(versions) and mapping.one_trip(ops)

        def work(conn: Connection[Any], attempt: _Attempt) -> list[Applied]:
            if one_trip and conn.autocommit:
                # Set-if-newer: repeating an outcome-unknown attempt leaves the same rows.
                return mapping.write_one_trip(conn, ops)
            out: list[Applied | None] = [None] * len(ops)
            if single and conn.autocommit:
                # Its commit is the statement itself. Repeating a SET or DELETE whose
                # outcome is unknown leaves the same rows; repeating an ADD would not.
                attempt.committing = ADD in kinds
                with conn.cursor(binary=True) as cur:
                    mapping.write(cur, ops, prepared, segments, versions, out)
                return [a if a is not None else Applied(None) for a in out]
            if marks_needed and not self._marks_ready:
                self._ensure_marks(conn)  # row mode keeps tombstones there too
            with conn.transaction(), conn.cursor(binary=True) as cur:
                mapping.write(cur, ops, prepared, segments, versions, out)
                if journal is not None:
                    self._mark(cur, ops, journal)
                attempt.committing = True
            return [a if a is not None else Applied(None) for a in out]

        return self._run("write to", work, write=True)

    def _mark(self, cur: Cursor[Any], ops: Sequence[Op], mark: JournalMark) -> None:
        last = last_seqs(ops, mark)
        jid = mark.journal_id
        if mark.after is not None:
            cur.execute(self._q["fence"], ("journal:" + jid, mark.low_water, mark.after))
            if cur.fetchone() is None:  # passed by another writer: roll the batch back
                row = cur.execute(self._q["low"], ("journal:" + jid,)).fetchone()
                check_fence(mark, None if row is None else int(row[0]))
        if last or mark.after is None:
            cur.execute(self._q["mark"], (
                "journal:" + jid, mark.low_water, jid, [k[0] for k in last],
                [k[1] for k in last], list(last.values())))
        if self._trim.due():
            # Rows at or under the low water say nothing a replay needs.
            cur.execute(self._q["mark_trim"], (jid, mark.low_water))

    def applied_state(self, journal_id: str) -> tuple[int, dict[tuple[str, str], int]]:
        def work(conn: Connection[Any], _: _Attempt) -> tuple[int, dict[tuple[str, str], int]]:
            if not self._marks_ready:
                self._ensure_marks(conn)
            row = conn.execute(self._q["low"], ("journal:" + journal_id,)).fetchone()
            low = 0 if row is None else int(row[0])
            rows = conn.execute(self._q["applied"], (journal_id, low)).fetchall()
            return low, {(ns, key): int(seq) for ns, key, seq in rows}

        return self._run("read of journal marks of", work)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._own and self._reopen_in_child is None:  # else the parent's pool
            with GATE:
                self._pool.close()
        self._watchdog.close()
