"""PostgresStore: PostgreSQL as the store, on psycopg 3 and psycopg_pool.

Key/value mode (the default) keeps every namespace in one table it creates when missing::

    table (namespace text, key text, value jsonb | bytea, version bigint,
           updated_at timestamptz, primary key (namespace, key))

with a sequence ``{table}_version_seq`` (versions survive deletes) and the journal-mark
tables ``{table}_meta`` and ``{table}_applied``. Row mode (``key_column=``, ``columns=``)
maps dict values onto the columns of an existing table instead (see
:mod:`cacheway.stores.postgres_rows`).

>>> store = PostgresStore("postgresql://postgres@127.0.0.1/test", table="doctest_kv")
... # doctest: +SKIP
>>> store.save_many({"a": {"n": 1}}); store.load("a")  # doctest: +SKIP
{'n': 1}
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, InvalidWriteError
from ..serializers import JSONSerializer, Serializer
from ._deadline import Watchdog
from ._errors import storable_text
from ._fork import track
from ._pg_helpers import (
    MAX_KEY_BYTES,
    _Attempt,
    _fill,
    _key_order,
    _modules,
    _scrub,
    _segments,
)
from ._pg_run import PgRunner
from ._pg_versions import raise_sequence
from ._pg_versions import write_sets as write_versioned
from .base import (
    ADD,
    DELETE,
    NOTSET,
    SET,
    Applied,
    JournalMark,
    Loaded,
    Op,
    StoreBase,
    check_key,
    has_versions,
    validate_identifier,
)

if TYPE_CHECKING:
    from psycopg import Connection, Cursor
    from psycopg_pool import ConnectionPool

    from .postgres_rows import RowMapper

__all__ = ["PostgresStore"]

# Advisory-lock class id of cacheway's DDL ("cw"), so user locks on the same hash differ.
LOCK_CLASS = 0x6377


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
    """

    versioned = True
    #: Keys (and namespaces) up to 2000 UTF-8 bytes: a btree index entry holds at most
    #: 2704 bytes (8 kB pages), and the primary key (namespace, key) and the journal
    #: marks' (journal, namespace, key) must fit with their headers (see _pg_helpers).
    max_key_bytes: int | None = MAX_KEY_BYTES
    keys_take_nul = False


    @property
    def validate(self) -> Callable[[str, str, Any, int], Any] | None:
        """In row mode, checks a write at the call and returns the row the cache keeps."""
        return None if self._rows is None else self._rows.normalize

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
        self._rows: RowMapper | None = None
        if key_column is not None or columns is not None or version_column is not None:
            if key_column is None or not columns:
                raise ConfigError("row mode needs both key_column= and columns=[...]")
            from .postgres_rows import RowMapper

            self._rows = RowMapper(table, key_column, columns, version_column)
            self.versioned = version_column is not None
            marks = (f"{table}_cw_meta", f"{table}_cw_applied")
        else:
            marks = (f"{table}_meta", f"{table}_applied")
        companion = marks[1] if self._rows is not None else f"{table}_version_seq"
        if len(companion) > 63:
            # PostgreSQL would truncate the name silently, and two tables could share it.
            raise ConfigError(
                f"table name {table!r} is too long: its companion object {companion!r} "
                "would exceed PostgreSQL's 63-character identifiers"
            )
        self._meta, self._applied = marks
        self._seq = f"{table}_version_seq"
        self._jsonb = False
        self._marks_ready = False
        self._mark_lock = threading.Lock()
        self._batches = 0
        self._closed = False
        self._q: dict[str, str] = {}
        self._secrets: list[str] = []
        self._where = "the caller's pool"
        self._watchdog = Watchdog(table)
        self._max_size = max_size
        self._inherited: list[Any] = []  # a parent's pools, after a fork
        self._reopen: Callable[[], ConnectionPool[Any]] | None = None
        if isinstance(dsn_or_pool, str):
            self._own = True
            self._reopen = lambda: self._open_pool(dsn_or_pool, min_size, max_size,
                                                   psycopg_pool)
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
        """A forked child's own pool (see stores._fork). The parent's pool is kept, unused
        and unclosed: its connections are the parent's sockets. A pool passed in cannot be
        rebuilt here: calls in the child then refuse to use it."""
        if self._closed:
            return
        self._inherited.append(self._pool)
        self._watchdog = Watchdog(self.table)
        if self._reopen is not None:
            self._pool = self._reopen()
        else:
            self._forked_pool = True

    def __repr__(self) -> str:
        return f"PostgresStore({self._where}, table={self.table!r})"

    @property
    def atomic_add(self) -> bool:
        return self._rows is None

    # -- connecting and setting up ------------------------------------------------------
    def _setup(self, conn: Connection[Any]) -> None:
        if self._rows is not None:
            self._rows.inspect(conn)
            self.max_key_chars = self._rows.max_key_chars
            return
        sql = self._pg.sql
        ident = sql.Identifier
        with conn.transaction():
            self._ddl_lock(conn)
            conn.execute(sql.SQL("CREATE SEQUENCE IF NOT EXISTS {}").format(ident(self._seq)))
            value_type = "jsonb" if self.serializer.name == "json" else "bytea"
            conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (namespace text NOT NULL, key text NOT NULL, "
                "value " + value_type + ", version bigint NOT NULL, updated_at timestamptz "
                "NOT NULL DEFAULT now(), PRIMARY KEY (namespace, key))"
            ).format(ident(self.table)))
            self._create_marks(conn)
            found = dict(conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = %s", (self.table,)
            ).fetchall())
        missing = [c for c in ("namespace", "key", "value", "version") if c not in found]
        if missing:
            raise ConfigError(
                f"table {self.table!r} exists without the columns {', '.join(missing)}: "
                "use another table= (or row mode with key_column=/columns=)"
            )
        if found["value"] not in ("jsonb", "bytea"):
            raise ConfigError(f"column value of {self.table!r} is {found['value']}, "
                              "not jsonb or bytea")
        self._jsonb = found["value"] == "jsonb"
        if self._jsonb and self.serializer.name != "json":
            raise ConfigError(
                f"table {self.table!r} keeps jsonb values but the serializer is "
                f"{self.serializer.name!r}: use the JSON serializer or another table"
            )
        self._build_queries(conn)

    def _ddl_lock(self, conn: Connection[Any]) -> None:
        # CREATE ... IF NOT EXISTS alone races (duplicate pg_type rows): one creator at a time.
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema() || '.' || %s))",
            (LOCK_CLASS, self.table),
        )

    def _create_marks(self, conn: Connection[Any]) -> None:
        sql = self._pg.sql
        conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, value bigint NOT NULL)"
        ).format(sql.Identifier(self._meta)))
        conn.execute(sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (journal text NOT NULL, namespace text NOT NULL, "
            "key text NOT NULL, seq bigint NOT NULL, PRIMARY KEY (journal, namespace, key))"
        ).format(sql.Identifier(self._applied)))
        self._marks_ready = True

    def _build_queries(self, conn: Connection[Any]) -> None:
        from ._pg_sql import kv_queries

        self._q.update(kv_queries(conn, self.table, self._seq, self._jsonb))
        self._build_mark_queries(conn)

    def _build_mark_queries(self, conn: Connection[Any]) -> None:
        from ._pg_sql import mark_queries

        self._q.update(mark_queries(conn, self._meta, self._applied))

    def _ensure_marks(self, conn: Connection[Any]) -> None:
        """Row mode creates its mark tables at the first journal mark, not before: a
        store that never sees a journal adds nothing next to the user's table."""
        with self._mark_lock:
            if self._marks_ready:
                return
            with conn.transaction():
                self._ddl_lock(conn)
                self._create_marks(conn)
            self._build_mark_queries(conn)

    # -- the store protocol ------------------------------------------------------------
    def fetch(self, namespace: str, keys: Sequence[str]) -> dict[str, Loaded]:
        self._check()
        # Text PostgreSQL cannot hold (NUL, a lone surrogate) names no row.
        keys = [k for k in keys if storable_text(k, nul=False)]
        if not keys or not storable_text(namespace, nul=False):
            return {}
        rows = self._rows
        if rows is not None:
            return self._run("load from", lambda conn, _: rows.fetch(conn, keys))
        query = self._q["fetch"]

        def work(conn: Connection[Any], _: _Attempt) -> dict[str, Loaded]:
            found = conn.execute(query, (namespace, keys)).fetchall()
            if self._jsonb:
                return {k: Loaded(v.encode(), NOTSET, ver) for k, v, ver in found}
            return {k: Loaded(bytes(v), NOTSET, ver) for k, v, ver in found}

        return self._run("load from", work)

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
        order = _key_order(ops)
        if order is not None:
            # Rows locked in one order by every process: concurrent batches over the
            # same keys wait for each other instead of deadlocking.
            ops = [ops[i] for i in order]
            if journal is not None:
                journal = journal._replace(seqs=[journal.seqs[i] for i in order])
            applied = self._apply_ordered(ops, journal)
            out: list[Applied] = [applied[0]] * len(ops)
            for pos, i in enumerate(order):
                out[i] = applied[pos]
            return out
        return self._apply_ordered(ops, journal)

    def _apply_ordered(self, ops: Sequence[Op], journal: JournalMark | None
                       ) -> list[Applied]:
        rows = self._rows
        prepared = rows.prepare(ops, self.serializer) if rows is not None else None

        segments = _segments(ops)
        kinds = {op.kind for op in ops}
        versions = [op.version for op in ops if op.version is not None]
        if rows is not None and rows.version_column is None:
            versions = []  # an unversioned table: versions are ignored
        # One statement needs no BEGIN/COMMIT of its own on an autocommit connection: it
        # is atomic alone, and saves two round trips (the common write-through case).
        single = (journal is None and not versions and len(segments) == 1 and len(kinds) == 1
                  and (ADD not in kinds or self._jsonb)
                  and (prepared is None or len({tuple(r) for r in prepared if r}) <= 1))

        def write(cur: Cursor[Any], out: list[Applied | None]) -> None:
            if rows is not None and versions:
                assert prepared is not None
                rows.write_stamped(cur, ops, prepared, out)
                return
            for segment in segments:
                if rows is not None:
                    assert prepared is not None
                    rows.write(cur, ops, prepared, segment, out)
                else:
                    self._write(cur, ops, segment, out)

        def work(conn: Connection[Any], attempt: _Attempt) -> list[Applied]:
            out: list[Applied | None] = [None] * len(ops)
            if single and conn.autocommit:
                # Its commit is the statement itself. Repeating a SET or DELETE whose
                # outcome is unknown leaves the same rows; repeating an ADD would not.
                attempt.committing = ADD in kinds
                with conn.cursor(binary=True) as cur:
                    write(cur, out)
                return [a if a is not None else Applied(None) for a in out]
            if (journal is not None or (rows and versions)) and not self._marks_ready:
                self._ensure_marks(conn)  # row mode keeps tombstones there too
            with conn.transaction(), conn.cursor(binary=True) as cur:
                # Unversioned ops of the batch are stamped above its versions: raise the
                # sequence first when there are some (its lock then lasts the whole
                # batch), else last, so the lock is held for the commit only.
                raise_first = bool(versions) and len(versions) < len(ops) and rows is None
                if raise_first:
                    raise_sequence(cur, self._q, self._seq, max(versions))
                write(cur, out)
                if versions and not raise_first and rows is None:
                    raise_sequence(cur, self._q, self._seq, max(versions))
                if journal is not None:
                    self._mark(cur, ops, journal)
                attempt.committing = True
            return [a if a is not None else Applied(None) for a in out]

        return self._run("write to", work, write=True)

    def _write(self, cur: Cursor[Any], ops: Sequence[Op], segment: list[int],
               out: list[Applied | None]) -> None:
        q = self._q
        if has_versions([ops[i] for i in segment]):
            stamped = [i for i in segment if ops[i].version is not None]
            segment = [i for i in segment if ops[i].version is None]
            sets = [i for i in stamped if ops[i].kind != ADD]
            if sets:
                write_versioned(cur, q, ops, sets, out, self._payload)
            adds = [i for i in stamped if ops[i].kind == ADD]
            if adds:
                self._add(cur, ops, adds, out, versioned=True)
        sets = [i for i in segment if ops[i].kind == SET]
        dels = [i for i in segment if ops[i].kind == DELETE]
        adds = [i for i in segment if ops[i].kind == ADD]
        if sets:
            values = [self._payload(ops[i]) for i in sets]
            cur.execute(q["set"], ([ops[i].namespace for i in sets],
                                   [ops[i].key for i in sets], values))
            _fill(out, ops, sets, {(ns, k): Applied(v) for ns, k, v in cur.fetchall()})
        if dels:
            cur.execute(q["delete"], {"ns": [ops[i].namespace for i in dels],
                                      "key": [ops[i].key for i in dels]})
            _fill(out, ops, dels, {(ns, k): Applied(v) for ns, k, v in cur.fetchall()})
        if adds:
            self._add(cur, ops, adds, out)

    def _payload(self, op: Op) -> Any:
        payload = op.payload if op.payload is not None else self.serializer.dumps(op.value)
        if not self._jsonb:
            return payload
        try:
            return payload.decode()
        except UnicodeDecodeError as exc:
            raise InvalidWriteError(f"payload of key {op.key!r} is not UTF-8 JSON: {exc}"
                                    ) from None

    def _add(self, cur: Cursor[Any], ops: Sequence[Op], adds: list[int],
             out: list[Applied | None], versioned: bool = False) -> None:
        """Counter adds; ``versioned``: ops that carry versions, which give the row the
        greater of its version and theirs (queries prefixed "v")."""
        nss, keys = [ops[i].namespace for i in adds], [ops[i].key for i in adds]
        v, stamps = ("v", ([ops[i].version for i in adds],)) if versioned else ("", ())
        if self._jsonb:
            try:
                cur.execute(self._q[v + "add"],
                            (nss, keys, [int(ops[i].delta) for i in adds], *stamps))
            except self._pg.errors.InvalidTextRepresentation as exc:
                raise InvalidWriteError(
                    f"cannot add to a counter in {self.table!r}: a stored value is not an "
                    f"integer ({_scrub(str(exc), self._secrets)})"
                ) from exc
            got = {(ns, k): Applied(v, int(val)) for ns, k, v, val in cur.fetchall()}
            _fill(out, ops, adds, got)
            return
        cur.execute(self._q[v + "add_lock"], (self.serializer.dumps(0), nss, keys))
        # A tombstone's NULL value (a versioned delete) counts from 0.
        current = {(ns, k): 0 if val is None else self.serializer.loads(bytes(val))
                   for ns, k, val in cur.fetchall()}
        news: list[int] = []
        for i in adds:
            value = current[(ops[i].namespace, ops[i].key)]
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidWriteError(f"cannot add to key {ops[i].key!r}: its stored value "
                                 f"{value!r} is not an integer")
            news.append(value + ops[i].delta)
        cur.execute(self._q[v + "add_write"],
                    (nss, keys, [self.serializer.dumps(n) for n in news], *stamps))
        versions = {(ns, k): ver for ns, k, ver in cur.fetchall()}
        _fill(out, ops, adds, {(ops[i].namespace, ops[i].key): Applied(
            versions[(ops[i].namespace, ops[i].key)], n) for i, n in zip(adds, news)})

    def _mark(self, cur: Cursor[Any], ops: Sequence[Op], mark: JournalMark) -> None:
        last: dict[tuple[str, str], int] = {}
        for op, seq in zip(ops, mark.seqs):
            k = (op.namespace, op.key)
            last[k] = max(seq, last.get(k, seq))
        jid = mark.journal_id
        cur.execute(self._q["mark"], (
            "journal:" + jid, mark.low_water, jid, [k[0] for k in last], [k[1] for k in last],
            list(last.values())))
        self._batches += 1
        if self._batches % 64 == 0:
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
        if self._own:
            self._pool.close()
        self._watchdog.close()
