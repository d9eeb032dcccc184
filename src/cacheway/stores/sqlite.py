"""SQLiteStore: the embedded default store (stdlib ``sqlite3``, WAL mode, durable on return).

Row mode (``key_column=``, ``columns=``, ``version_column=``) maps dict values onto the
columns of an existing table instead of a key/value table (see
:mod:`cacheway.stores.sqlite_rows`).

>>> import tempfile, os
>>> store = SQLiteStore(os.path.join(tempfile.mkdtemp(), "app.db"))
>>> store.save_many({"a": 1})
>>> store.load("a")
1
>>> store.close()
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from itertools import chain, repeat
from operator import attrgetter
from typing import Any

from ..errors import ClosedError, ConfigError, InvalidWriteError, StoreError
from ..serializers import JSONSerializer, Serializer
from ._errors import is_permanent, storable_text
from ._fork import track
from ._sqlite_marks import read_marks, write_mark
from ._sqlite_versions import apply_versioned
from .base import (
    ADD,
    DELETE,
    LATENESS,
    NOTSET,
    SET,
    Applied,
    JournalMark,
    Loaded,
    Op,
    StoreBase,
    has_versions,
    make_applied,
    validate_identifier,
)
from .sqlite_rows import RowSpec, SQLiteRows

__all__ = ["SQLiteStore"]

_SYNC_MODES = ("FULL", "NORMAL", "EXTRA", "OFF")
_IDLE_READERS = 8  # reader connections kept open between loads
_CHUNK = 500


class SQLiteStore(StoreBase):
    """Keys and values in one SQLite table ``(namespace, key, value, version, updated_at)``.

    Every applied write and delete is stamped with a version from a per-table counter
    that survives deletes; each batch is one transaction (``BEGIN IMMEDIATE``), so
    counters added from many processes sum correctly. ``synchronous="FULL"`` (the
    default) makes a write durable when ``apply`` returns; ``"NORMAL"`` trades the last
    transactions on power loss for speed.

    Row mode (``key_column=``, ``columns=``, ``version_column=``) maps dict values to
    the columns of an existing table; it has no namespace column, so the namespace of
    an op is ignored (give each namespace its own table); counters are not supported;
    without ``version_column=`` the store is unversioned.
    """

    versioned = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        table: str = "cacheway",
        *,
        key_column: str | None = None,
        columns: Sequence[str] | None = None,
        version_column: str | None = None,
        synchronous: str = "FULL",
        timeout: float = 30.0,
        serializer: Serializer | None = None,
    ) -> None:
        self.table = validate_identifier(table)
        sync = str(synchronous).upper()
        if sync not in _SYNC_MODES:
            raise ConfigError(
                f"synchronous={synchronous!r} is not one of {', '.join(_SYNC_MODES)}"
            )
        if not isinstance(timeout, (int, float)) or timeout < 0:
            raise ConfigError(f"timeout must be a number of seconds >= 0, not {timeout!r}")
        self.path = os.fspath(path)
        self.synchronous = sync
        self.serializer = serializer if serializer is not None else JSONSerializer()
        self._timeout = float(timeout)
        self._memory = self.path == ":memory:" or self.path.startswith("file::memory:")
        self._lock = threading.Lock()
        self._closed = False
        self._readers: list[sqlite3.Connection] = []
        self._idle: list[sqlite3.Connection] = []
        self._meta = f"{self.table}_meta"
        self._applied = f"{self.table}_applied"
        self._batches = 0
        self._rows: SQLiteRows | None = None
        if key_column is not None or columns is not None or version_column is not None:
            spec = RowSpec("SQLiteStore", table, key_column, columns, version_column)
            self._rows = SQLiteRows(spec, self.serializer)
            self.versioned = spec.versioned
        self._inherited: list[sqlite3.Connection] = []  # a parent's, after a fork
        try:
            self._conn = self._connect()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite store {self.path!r}: {exc}") from exc
        try:
            self._create()
        except BaseException as exc:
            self._conn.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open SQLite store {self.path!r}: {exc}") from exc
            raise
        if not self._memory:  # an in-memory database cannot be shared with a child anyway
            track(self)

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r}, table={self.table!r})"

    @property
    def atomic_add(self) -> bool:
        return self._rows is None

    # -- connections -------------------------------------------------------------------
    def after_fork_in_child(self) -> None:
        """Fresh connections in a forked child (see stores._fork); the inherited ones are
        kept, unused and unclosed."""
        if self._closed:
            return
        self._inherited += [self._conn, *self._readers]
        self._lock = threading.Lock()
        self._readers = []
        self._idle = []
        self._conn = self._connect()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )
        if not self._memory:
            self._wal(conn)
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return conn

    def _wal(self, conn: sqlite3.Connection) -> None:
        # Switching to WAL needs an exclusive moment that SQLite's busy timeout does not
        # always wait for (another process opening or closing the file): retry until the
        # timeout, and skip the switch when the file is already in WAL mode.
        deadline = time.monotonic() + self._timeout
        delay = 0.001
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                if str(mode).lower() != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(0.05, delay * 2)

    def _borrow(self) -> sqlite3.Connection:
        # A small pool of reader connections (WAL readers do not block the writer), not
        # one per thread: servers that start a thread per request would leak them.
        try:
            return self._idle.pop()
        except IndexError:
            conn = self._connect()
            with self._lock:
                self._readers.append(conn)
            return conn

    def _give_back(self, conn: sqlite3.Connection) -> None:
        if len(self._idle) < _IDLE_READERS and not self._closed:
            self._idle.append(conn)
            return
        with self._lock:
            if conn in self._readers:
                self._readers.remove(conn)
        conn.close()

    def _create(self) -> None:
        t, m = self.table, self._meta
        with self._lock:
            conn = self._conn
            if self._rows is not None:
                self._rows.inspect(conn)
                return
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    f'CREATE TABLE IF NOT EXISTS "{t}" (namespace TEXT NOT NULL, key TEXT NOT '
                    "NULL, value BLOB, version INTEGER NOT NULL, updated_at REAL NOT NULL, "
                    "PRIMARY KEY (namespace, key)) WITHOUT ROWID"
                )
                conn.execute(
                    f'CREATE TABLE IF NOT EXISTS "{m}" (name TEXT PRIMARY KEY, '
                    "value INTEGER NOT NULL)"
                )
                conn.execute(f"INSERT OR IGNORE INTO \"{m}\" VALUES ('version', 0)")
                conn.execute(
                    f'CREATE TABLE IF NOT EXISTS "{self._applied}" (journal TEXT NOT NULL, '
                    "namespace TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL, "
                    "PRIMARY KEY (journal, namespace, key)) WITHOUT ROWID"
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    @property
    def validate(self) -> Callable[[str, str, Any, int], Any] | None:
        """In row mode, checks a write at the call and returns the row the cache keeps."""
        rows = self._rows
        if rows is None:
            return None
        spec = rows.spec
        return lambda ns, key, value, kind: spec.normalize(ns, key, value, kind, True)

    def _check(self) -> None:
        if self._closed:
            raise ClosedError(f"{self!r} is closed")

    # -- the store protocol ------------------------------------------------------------
    def fetch(self, namespace: str, keys: Sequence[str]) -> dict[str, Loaded]:
        self._check()
        out: dict[str, Loaded] = {}
        if not keys:
            return out
        try:
            if self._memory:
                with self._lock:
                    self._fetch_into(self._conn, namespace, keys, out)
            else:
                conn = self._borrow()
                try:
                    self._fetch_into(conn, namespace, keys, out)
                finally:
                    self._give_back(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite load from {self.table!r} failed: {exc}") from exc
        except UnicodeEncodeError as exc:
            # A key that is not valid text (a lone surrogate) names no row.
            valid = [k for k in keys if storable_text(k)]
            if len(valid) == len(keys) and storable_text(namespace):
                raise StoreError(f"SQLite load from {self.table!r} failed: {exc}") from exc
            return self.fetch(namespace, valid) if valid and storable_text(namespace) else out
        return out

    def _fetch_into(
        self, conn: sqlite3.Connection, ns: str, keys: Sequence[str], out: dict[str, Loaded]
    ) -> None:
        if self._rows is not None:
            out.update(self._rows.fetch(conn, keys))
            return
        t = self.table
        if len(keys) == 1:
            row = conn.execute(
                f'SELECT value, version FROM "{t}" WHERE namespace = ? AND key = ? '
                "AND value IS NOT NULL", (ns, keys[0]),
            ).fetchone()
            if row is not None:
                out[keys[0]] = Loaded(row[0], NOTSET, row[1])
            return
        for i in range(0, len(keys), _CHUNK):
            chunk = list(keys[i : i + _CHUNK])
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f'SELECT key, value, version FROM "{t}" WHERE namespace = ? AND key IN ({marks}) '
                "AND value IS NOT NULL", [ns, *chunk],
            ).fetchall()
            for key, value, version in rows:
                out[key] = Loaded(value, NOTSET, version)

    def apply(
        self, ops: Sequence[Op], *, journal: JournalMark | None = None
    ) -> list[Applied]:
        self._check()
        if not ops and journal is None:
            return []
        try:
            with self._lock:
                if self._rows is not None:
                    return self._rows.apply(self._conn, ops, journal)
                return self._apply_locked(ops, journal)
        except (sqlite3.Error, UnicodeEncodeError, OverflowError) as exc:
            # What the batch holds and SQLite refuses (a lone surrogate, a blob over its
            # length limit, a constraint) will be refused again: InvalidWriteError.
            kind = InvalidWriteError if is_permanent(exc) else StoreError
            raise kind(f"SQLite write to {self.table!r} failed: {exc}") from exc

    def _apply_locked(self, ops: Sequence[Op], journal: JournalMark | None) -> list[Applied]:
        conn = self._conn
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            if has_versions(ops):
                results = apply_versioned(conn, self.table, self._meta, ops, now,
                                          self._write_sets, self._add)
            else:
                results = self._write_unversioned(conn, ops, now)
            if journal is not None:
                self._mark(conn, ops, journal)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results

    def _write_unversioned(self, conn: sqlite3.Connection, ops: Sequence[Op], now: float
                           ) -> list[Applied]:
        n = len(ops)
        top = conn.execute(
            f"UPDATE \"{self._meta}\" SET value = value + ? WHERE name = 'version' "
            "RETURNING value", (n,),
        ).fetchone()[0]
        version = top - n
        if _plain_sets(ops):
            # Every op a SET of a distinct key (a flusher's batch): rows and results
            # built in C, no per-op bookkeeping of repeated keys.
            versions = range(version + 1, top + 1)
            self._write_sets(conn, list(zip(
                map(_namespace, ops), map(_key, ops), map(_payload, ops), versions,
                repeat(now))), [])
            return list(map(make_applied, zip(versions, repeat(None), repeat(True))))
        return self._write_ops(conn, ops, version, now)

    def _write_ops(self, conn: sqlite3.Connection, ops: Sequence[Op], version: int,
                   now: float) -> list[Applied]:
        """Write ``ops`` in order, stamping versions from ``version + 1`` on."""
        results: list[Applied] = []
        sets: list[tuple[str, str, bytes | None, int, float]] = []
        dels: list[tuple[str, str]] = []
        pending: set[tuple[str, str]] = set()  # keys in sets/dels not yet written
        for op in ops:
            version += 1
            kind = op.kind
            ident = (op.namespace, op.key)
            if ident in pending:
                # A key twice in one batch: write what precedes it first, so the
                # set/delete order of that key holds.
                self._write_sets(conn, sets, dels)
                sets, dels = [], []
                pending.clear()
            pending.add(ident)
            if kind == SET:
                sets.append((op.namespace, op.key, op.payload, version, now))
                results.append(make_applied((version, None)))
            elif kind == DELETE:
                dels.append((op.namespace, op.key))
                results.append(make_applied((version, None)))
            elif kind == ADD:
                # Flush the pending sets first so an add reads what precedes it.
                self._write_sets(conn, sets, dels)
                sets, dels = [], []
                pending.clear()
                results.append(self._add(conn, op, version, now))
            else:
                raise ConfigError(f"unknown op kind {kind!r}")
        self._write_sets(conn, sets, dels)
        return results

    def _write_sets(
        self,
        conn: sqlite3.Connection,
        sets: list[tuple[str, str, bytes | None, int, float]],
        dels: list[tuple[str, str]],
    ) -> None:
        """Upsert ``sets`` and delete ``dels`` (no key twice in either)."""
        t = self.table
        insert = f'INSERT INTO "{t}" (namespace, key, value, version, updated_at) VALUES '
        late = LATENESS.late
        for start in range(0, len(sets), _STEP):
            if late() and _gil_contended():
                # executemany releases the GIL around each row and takes it back after;
                # while another thread keeps the interpreter busy, each take-back waits
                # a whole switch interval (5 ms): a flusher would write ~200 rows a
                # second. A multi-row statement takes it back once, for some 15% more
                # SQLite work than executemany needs: worth it for a late batch.
                for chunk in _chunks(sets[start:]):
                    conn.execute(
                        insert + ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk)) + _UPSERT,
                        list(chain.from_iterable(chunk)),
                    )
                break
            conn.executemany(insert + "(?, ?, ?, ?, ?)" + _UPSERT, sets[start : start + _STEP])
        if dels:
            conn.executemany(f'DELETE FROM "{t}" WHERE namespace = ? AND key = ?', dels)

    def _add(self, conn: sqlite3.Connection, op: Op, version: int, now: float) -> Applied:
        t = self.table
        row = conn.execute(
            f'SELECT value FROM "{t}" WHERE namespace = ? AND key = ?', (op.namespace, op.key)
        ).fetchone()
        # No row, or the tombstone of a versioned delete (NULL): the counter starts at 0.
        current: Any = 0 if row is None or row[0] is None else self.serializer.loads(row[0])
        if isinstance(current, bool) or not isinstance(current, int):
            raise InvalidWriteError(
                f"cannot add to key {op.key!r}: its stored value {current!r} is not an integer"
            )
        new = current + op.delta
        conn.execute(
            f'INSERT INTO "{t}" (namespace, key, value, version, updated_at) VALUES '
            "(?, ?, ?, ?, ?) ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value, "
            "version = excluded.version, updated_at = excluded.updated_at",
            (op.namespace, op.key, self.serializer.dumps(new), version, now),
        )
        return Applied(version, new)

    def _mark(self, conn: sqlite3.Connection, ops: Sequence[Op], mark: JournalMark) -> None:
        self._batches += 1
        write_mark(conn, f'"{self._meta}"', f'"{self._applied}"', ops, mark,
                   trim=self._batches % 64 == 0)

    def applied_state(self, journal_id: str) -> tuple[int, dict[tuple[str, str], int]]:
        self._check()
        try:
            with self._lock:
                if self._rows is not None:
                    return self._rows.applied_state(self._conn, journal_id)
                return read_marks(self._conn, f'"{self._meta}"', f'"{self._applied}"',
                                  journal_id)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite read of journal marks failed: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for conn in [*self._readers, self._conn]:
                conn.close()
            self._readers.clear()
            self._idle.clear()


_kind, _namespace, _key, _payload = (
    attrgetter("kind"), attrgetter("namespace"), attrgetter("key"), attrgetter("payload"))


def _plain_sets(ops: Sequence[Op]) -> bool:
    """Every op a SET, all of one namespace, no key twice."""
    return (
        len(ops) > 1
        and all(kind == SET for kind in map(_kind, ops))
        and len(set(map(_namespace, ops))) == 1
        and len(set(map(_key, ops))) == len(ops)
    )


_UPSERT = (" ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value, "
           "version = excluded.version, updated_at = excluded.updated_at")

# Rows per multi-row statement, within SQLite's limit on parameters per statement (999
# before 3.32, 32766 since) at 5 parameters a row.
_CHUNK = 1000 if sqlite3.sqlite_version_info >= (3, 32, 0) else 199
# Rows per executemany call: between two, a late batch may switch to multi-row statements.
_STEP = 50


def _chunks(rows: list[Any]) -> list[list[Any]]:
    return [rows[i : i + _CHUNK] for i in range(0, len(rows), _CHUNK)]


def _gil_contended() -> bool:
    """Whether another thread is waiting to run Python: giving the GIL up for a moment
    (``sleep(0)``) then costs a switch interval instead of a few microseconds."""
    started = time.perf_counter()
    time.sleep(0)
    return time.perf_counter() - started > 0.0005
