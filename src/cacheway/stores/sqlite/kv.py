"""The key/value mapping of :class:`~cacheway.stores.sqlite.SQLiteStore`: one table
``(namespace, key, value, version, updated_at)``, a version counter row in
``{table}_meta`` that survives deletes, journal marks in ``{table}_meta`` and
``{table}_applied``; an ``expires_at`` column for namespaces with ``expire=``
(:mod:`.expiry`). The store runs it on its connections, under its lock, and turns
``sqlite3.Error`` into ``StoreError``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from functools import partial
from itertools import chain, repeat
from operator import attrgetter
from typing import Any

from ...errors import ConfigError, InvalidWriteError
from ...serializers import Serializer
from ..base import (
    ADD,
    DELETE,
    NOTSET,
    SET,
    Applied,
    JournalMark,
    Loaded,
    Op,
    expiring,
    has_versions,
    make_applied,
)
from ..marks import Trim, check_mark
from . import expiry
from .marks import read_marks, write_mark
from .tx import immediate
from .versions import apply_versioned

__all__ = ["SQLiteKV"]

Late = Callable[[], bool] | None  # None: never late (a write-through, a replay)


class SQLiteKV:
    """The SQL of key/value mode for one table."""

    versioned = True
    atomic_add = True
    validate = None
    expires = True

    def __init__(self, table: str, serializer: Serializer) -> None:
        self.table = table
        self.serializer = serializer
        self._meta = f"{table}_meta"
        self._applied = f"{table}_applied"
        self._trim = Trim()

    def setup(self, conn: sqlite3.Connection) -> None:
        """Create the tables when missing (many processes may race here)."""
        t, m = self.table, self._meta
        with immediate(conn):
            conn.execute(
                f'CREATE TABLE IF NOT EXISTS "{t}" (namespace TEXT NOT NULL, key TEXT NOT '
                "NULL, value BLOB, version INTEGER NOT NULL, updated_at REAL NOT NULL, "
                "expires_at REAL, PRIMARY KEY (namespace, key)) WITHOUT ROWID"
            )
            expiry.add_column(conn, t)  # a table from before expiry gains the column
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

    # -- reads --------------------------------------------------------------------------
    def fetch(self, conn: sqlite3.Connection, ns: str, keys: Sequence[str]
              ) -> dict[str, Loaded]:
        out: dict[str, Loaded] = {}
        t = self.table
        now = time.time()
        if len(keys) == 1:
            row = conn.execute(
                f'SELECT value, version, expires_at FROM "{t}" WHERE namespace = ? AND '
                "key = ? AND value IS NOT NULL AND (expires_at IS NULL OR expires_at > ?)",
                (ns, keys[0], now),
            ).fetchone()
            if row is not None:
                out[keys[0]] = Loaded(row[0], NOTSET, row[1], row[2])
            return out
        for i in range(0, len(keys), _CHUNK):
            chunk = list(keys[i : i + _CHUNK])
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(
                f'SELECT key, value, version, expires_at FROM "{t}" WHERE namespace = ? AND '
                f"key IN ({marks}) AND value IS NOT NULL AND (expires_at IS NULL OR "
                "expires_at > ?)", [ns, *chunk, now],
            ).fetchall()
            for key, value, version, expires_at in rows:
                out[key] = Loaded(value, NOTSET, version, expires_at)
        return out

    def sample_keys(self, conn: sqlite3.Connection, ns: str, n: int) -> list[str]:
        # (a NULL value is the tombstone of a versioned delete)
        return [str(r[0]) for r in conn.execute(
            f'SELECT key FROM "{self.table}" WHERE namespace = ? AND value IS NOT NULL '
            "AND (expires_at IS NULL OR expires_at > ?) ORDER BY random() LIMIT ?",
            (ns, time.time(), n))]

    def purge_expired(self, conn: sqlite3.Connection, limit: int) -> int:
        with immediate(conn):
            return expiry.purge(conn, self.table, time.time(), limit)

    def applied_state(self, conn: sqlite3.Connection, journal_id: str
                      ) -> tuple[int, dict[tuple[str, str], int]]:
        return read_marks(conn, f'"{self._meta}"', f'"{self._applied}"', journal_id)

    # -- writes -------------------------------------------------------------------------
    def apply(self, conn: sqlite3.Connection, ops: Sequence[Op],
              journal: JournalMark | None, late: Late) -> list[Applied]:
        if journal is not None:
            check_mark(ops, journal)
        now = time.time()
        stamped = expiring(ops)
        with immediate(conn):
            if stamped:  # data that ended is gone before a write of its key
                expiry.delete_expired(conn, self.table, ops, now)
            if has_versions(ops):
                write_sets = partial(self._write_sets, late=late)
                results = apply_versioned(conn, self.table, self._meta, ops, now,
                                          write_sets, self._add)
            else:
                results = self._write_unversioned(conn, ops, now, late)
            if journal is not None:
                write_mark(conn, f'"{self._meta}"', f'"{self._applied}"', ops, journal,
                           self._trim)
        return results

    def _write_unversioned(self, conn: sqlite3.Connection, ops: Sequence[Op], now: float,
                           late: Late) -> list[Applied]:
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
                repeat(now), map(_expires_at, ops))), [], late)
            return list(map(make_applied, zip(versions, repeat(None), repeat(True))))
        return self._write_ops(conn, ops, version, now, late)

    def _write_ops(self, conn: sqlite3.Connection, ops: Sequence[Op], version: int,
                   now: float, late: Late) -> list[Applied]:
        """Write ``ops`` in order, stamping versions from ``version + 1`` on."""
        results: list[Applied] = []
        sets: list[_Row] = []
        dels: list[tuple[str, str]] = []
        pending: set[tuple[str, str]] = set()  # keys in sets/dels not yet written
        for op in ops:
            version += 1
            kind = op.kind
            ident = (op.namespace, op.key)
            if ident in pending:
                # A key twice in one batch: write what precedes it first, so the
                # set/delete order of that key holds.
                self._write_sets(conn, sets, dels, late)
                sets, dels = [], []
                pending.clear()
            pending.add(ident)
            if kind == SET:
                sets.append((op.namespace, op.key, op.payload, version, now, op.expires_at))
                results.append(make_applied((version, None)))
            elif kind == DELETE:
                dels.append((op.namespace, op.key))
                results.append(make_applied((version, None)))
            elif kind == ADD:
                # Flush the pending sets first so an add reads what precedes it.
                self._write_sets(conn, sets, dels, late)
                sets, dels = [], []
                pending.clear()
                results.append(self._add(conn, op, version, now))
            else:
                raise ConfigError(f"unknown op kind {kind!r}")
        self._write_sets(conn, sets, dels, late)
        return results

    def _write_sets(self, conn: sqlite3.Connection, sets: list[_Row],
                    dels: list[tuple[str, str]], late: Late) -> None:
        """Upsert ``sets`` and delete ``dels`` (no key twice in either)."""
        t = self.table
        insert = (f'INSERT INTO "{t}" (namespace, key, value, version, updated_at, expires_at) '
                  "VALUES ")
        for start in range(0, len(sets), _STEP):
            if late is not None and late() and _gil_contended():
                # executemany releases the GIL around each row and takes it back after;
                # while another thread keeps the interpreter busy, each take-back waits
                # a whole switch interval (5 ms): a flusher would write ~200 rows a
                # second. A multi-row statement takes it back once, for some 15% more
                # SQLite work than executemany needs: worth it for a late batch.
                for chunk in _chunks(sets[start:]):
                    conn.execute(
                        insert + ", ".join(["(?, ?, ?, ?, ?, ?)"] * len(chunk)) + _UPSERT,
                        list(chain.from_iterable(chunk)),
                    )
                break
            conn.executemany(insert + "(?, ?, ?, ?, ?, ?)" + _UPSERT,
                             sets[start : start + _STEP])
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
            f'INSERT INTO "{t}" (namespace, key, value, version, updated_at, expires_at) '
            "VALUES (?, ?, ?, ?, ?, ?)" + _UPSERT,
            (op.namespace, op.key, self.serializer.dumps(new), version, now, op.expires_at),
        )
        return Applied(version, new)


_Row = tuple[str, str, bytes | None, int, float, float | None]
_kind, _namespace, _key, _payload, _expires_at = (
    attrgetter("kind"), attrgetter("namespace"), attrgetter("key"), attrgetter("payload"),
    attrgetter("expires_at"))


def _plain_sets(ops: Sequence[Op]) -> bool:
    """Every op a SET, all of one namespace, no key twice."""
    return (
        len(ops) > 1
        and all(kind == SET for kind in map(_kind, ops))
        and len(set(map(_namespace, ops))) == 1
        and len(set(map(_key, ops))) == len(ops)
    )


# (expires_at: each write sets the row's expiry, NULL where its op carries none)
_UPSERT = (" ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value, "
           "version = excluded.version, updated_at = excluded.updated_at, "
           "expires_at = excluded.expires_at")

# Rows per multi-row statement (and keys per read), within SQLite's limit on parameters
# per statement (999 before 3.32, 32766 since) at 6 parameters a row.
_CHUNK = 1000 if sqlite3.sqlite_version_info >= (3, 32, 0) else 166
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
