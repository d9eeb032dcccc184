"""Row mode of :class:`~cacheway.stores.sqlite.SQLiteStore`: keys map to the rows of an
existing table, values are dicts of its columns.

``SQLiteStore(path, table="users", key_column="id", columns=["name", "email"])`` reads
``{"name": ..., "email": ...}`` for a key and upserts the columns a dict names (columns
it leaves out keep their current values on update, and get their defaults on insert).
The table is never created; its key column needs a primary key or a unique index of its
own (the upsert is ``ON CONFLICT (key_column)``). Deleting a key deletes its row;
counters (``incr``) are not supported, and the namespace of an op is ignored (give each
namespace its own table).

Keys are ``str`` in cacheway; the key column's type affinity decides what reaches
SQLite: an INTEGER-affinity column (``INTEGER PRIMARY KEY``, ``BIGINT``, ...) takes keys
that are canonical decimal integers (``"7"``, ``"-3"``; not ``"07"``, ``"+7"`` or
``"7.0"``) and binds them as ``int``: writing another key fails with ``StoreError`` and
reading one finds nothing. TEXT, BLOB and untyped key columns take the key string as it
is. REAL and NUMERIC key columns are refused (a key would not survive the round trip).

Column values must be SQLite scalars (``None``, ``bool``, ``int``, ``float``, ``str``,
``bytes``): anything else fails the write with ``StoreError`` before any SQL runs.

With ``version_column=`` every applied write and delete takes a version from a counter
row in ``{table}_cw_meta`` (created with the store, started above the column's current
maximum) advanced in the batch's own transaction, and sets stamp it into that column:
the store is then versioned. Without it the store is unversioned (in-process guarantees
only). Journal marks go to ``{table}_cw_meta`` and ``{table}_cw_applied``, created at the
first mark in the transaction of that batch.

:class:`~cacheway.stores.rows.RowSpec` (names, checks and value preparation) is shared
with the row modes of the other stores.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ...errors import ConfigError, StoreError
from ...serializers import Serializer
from ..base import DELETE, Applied, JournalMark, Loaded, Op, ValidateFn, has_versions
from ..marks import Trim, check_mark
from ..rows import TOMBSTONES, RowSpec, canonical_int, plan
from .marks import read_marks, write_mark
from .tx import immediate

__all__ = ["SQLiteRows"]

_CHUNK = 500


def _affinity(declared: str) -> str:
    """SQLite's type affinity of a declared column type (section 3.1 of its datatype doc)."""
    t = declared.upper()
    if "INT" in t:
        return "INTEGER"
    if "CHAR" in t or "CLOB" in t or "TEXT" in t:
        return "TEXT"
    if "BLOB" in t or not t:
        return "BLOB"
    if "REAL" in t or "FLOA" in t or "DOUB" in t:
        return "REAL"
    return "NUMERIC"


def _q(name: str) -> str:
    return f'"{name}"'  # validated identifiers only: no quote can occur in them


class SQLiteRows:
    """The SQL of row mode for one table; :class:`SQLiteStore` runs it on its
    connections, under its lock, and turns ``sqlite3.Error`` into ``StoreError``."""

    atomic_add = False  # counters are not supported
    expires = False  # no expiry column: a namespace cannot expire=

    def __init__(self, spec: RowSpec, serializer: Serializer) -> None:
        self.spec = spec
        self.serializer = serializer
        self.versioned = spec.versioned
        self.int_key = False
        self.marks_ready = False
        self._trim = Trim()
        self._set_sql: dict[tuple[str, ...], str] = {}
        s = spec
        cols = ", ".join(_q(c) for c in s.wanted()[1:])
        self._select = f"SELECT {_q(s.key_column)}, {cols} FROM {_q(s.table)} WHERE "
        self._delete = f"DELETE FROM {_q(s.table)} WHERE {_q(s.key_column)} = ?"

    @property
    def validate(self) -> ValidateFn:
        """Checks a write at the call and returns the row the cache keeps."""
        spec = self.spec
        return lambda ns, key, value, kind: spec.normalize(ns, key, value, kind, True)

    def purge_expired(self, conn: sqlite3.Connection, limit: int) -> int:
        raise ConfigError(f"{self.spec.table!r} is a row-mode table: it has no expiry")

    # -- construction-time checks -------------------------------------------------------
    def setup(self, conn: sqlite3.Connection) -> None:
        """Check the table, its columns and the key's uniqueness; with a version column,
        create the counter row in ``{table}_cw_meta``. Runs in a transaction of its own."""
        s = self.spec
        info = conn.execute(f"PRAGMA table_info({_q(s.table)})").fetchall()
        types = {str(r[1]): str(r[2] or "") for r in info}
        s.missing(list(types), bool(info))
        s.require([str(r[1]) for r in info if r[3]])  # (cid, name, type, notnull, ...)
        key_aff = _affinity(types[s.key_column])
        if key_aff in ("REAL", "NUMERIC"):
            raise ConfigError(
                f"key_column {s.key_column!r} of {s.table!r} is {types[s.key_column]} "
                f"({key_aff} affinity): row mode needs an INTEGER or TEXT key column"
            )
        self.int_key = key_aff == "INTEGER"
        if s.version_column is not None and _affinity(types[s.version_column]) in (
                "TEXT", "REAL"):
            raise ConfigError(
                f"version_column {s.version_column!r} of {s.table!r} is "
                f"{types[s.version_column] or 'untyped'}, not an integer type"
            )
        pks = [str(r[1]) for r in info if r[5]]
        unique = pks == [s.key_column]
        if not unique:
            for idx in conn.execute(f"PRAGMA index_list({_q(s.table)})").fetchall():
                # (seq, name, unique, origin, partial)
                if not idx[2] or (len(idx) > 4 and idx[4]):
                    continue
                names = [r[2] for r in conn.execute(f"PRAGMA index_info({_q(idx[1])})")]
                if names == [s.key_column]:
                    unique = True
                    break
        if not unique:
            raise s.not_unique()
        if s.version_column is None:
            return
        with immediate(conn):
            self._create_meta(conn)
            # Start above any version already in the column (a meta table dropped by hand).
            conn.execute(
                f"INSERT OR IGNORE INTO {_q(s.meta)} (name, value) VALUES ('version', 0)")
            conn.execute(
                f"UPDATE {_q(s.meta)} SET value = max(value, coalesce((SELECT "
                f"max({_q(s.version_column)}) FROM {_q(s.table)}), 0)) WHERE name = 'version'"
            )

    def _create_meta(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {_q(self.spec.meta)} "
                     "(name TEXT PRIMARY KEY, value INTEGER NOT NULL)")

    def _create_marks(self, conn: sqlite3.Connection) -> None:
        """The journal-mark tables, in the caller's transaction."""
        self._create_meta(conn)
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {_q(self.spec.applied)} (journal TEXT NOT NULL, "
            "namespace TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL, "
            "PRIMARY KEY (journal, namespace, key)) WITHOUT ROWID"
        )
        self.marks_ready = True

    # -- keys ---------------------------------------------------------------------------
    def _bind(self, key: str) -> str | int | None:
        """The key as SQLite gets it (None: no row can have it)."""
        return canonical_int(key) if self.int_key else key

    # -- reads --------------------------------------------------------------------------
    def sample_keys(self, conn: sqlite3.Connection, ns: str, n: int) -> list[str]:
        """Random keys of the table (row mode has no namespace column: ``ns`` is
        ignored, as by every read)."""
        s = self.spec
        return [str(r[0]) for r in conn.execute(
            f"SELECT {_q(s.key_column)} FROM {_q(s.table)} ORDER BY random() LIMIT ?", (n,))]

    def fetch(self, conn: sqlite3.Connection, ns: str, keys: Sequence[str]
              ) -> dict[str, Loaded]:
        s = self.spec
        bound: dict[str | int, str] = {}
        for key in keys:
            b = self._bind(key)
            if b is not None:
                bound[b] = key
        out: dict[str, Loaded] = {}
        wanted = list(bound)
        n = len(s.columns)
        for i in range(0, len(wanted), _CHUNK):
            chunk = wanted[i : i + _CHUNK]
            where = (f"{_q(s.key_column)} = ?" if len(chunk) == 1
                     else f"{_q(s.key_column)} IN ({','.join('?' * len(chunk))})")
            for row in conn.execute(self._select + where, chunk).fetchall():
                found = bound.get(row[0])
                if found is None:
                    found = bound.get(str(row[0]))  # a number kept in a TEXT/BLOB column
                if found is None:
                    continue
                value = dict(zip(s.columns, row[1 : 1 + n]))
                version = row[-1] if s.versioned else None
                out[found] = Loaded(None, value, None if version is None else int(version))
        return out

    # -- writes -------------------------------------------------------------------------
    def _upsert(self, cols: tuple[str, ...]) -> str:
        sql = self._set_sql.get(cols)
        if sql is not None:
            return sql
        s = self.spec
        names = [s.key_column, *cols]
        if s.version_column is not None:
            names.append(s.version_column)
        updates = [f"{_q(c)} = excluded.{_q(c)}" for c in names[1:]]
        conflict = "DO UPDATE SET " + ", ".join(updates) if updates else "DO NOTHING"
        sql = (f"INSERT INTO {_q(s.table)} ({', '.join(_q(c) for c in names)}) VALUES "
               f"({', '.join('?' * len(names))}) ON CONFLICT ({_q(s.key_column)}) {conflict}")
        self._set_sql[cols] = sql
        return sql

    def apply(self, conn: sqlite3.Connection, ops: Sequence[Op],
              journal: JournalMark | None, late: object = None) -> list[Applied]:
        """One transaction (``BEGIN IMMEDIATE``): the ops in order, versions from the
        counter row, the journal mark. Every value is checked before it begins."""
        s = self.spec
        rows = s.rows(ops, self.serializer, scalars_only=True)
        keys = s.bind_keys(ops, self.int_key, "INTEGER")
        if journal is not None:
            check_mark(ops, journal)
        with immediate(conn):
            version: int | None = None
            stamps: list[int] | None = None
            lands: list[bool] = []
            last = 0
            if s.versioned and ops:
                top = conn.execute(
                    f"UPDATE {_q(s.meta)} SET value = value + ? WHERE name = 'version' "
                    "RETURNING value", (len(ops),)
                ).fetchone()
                if top is None:
                    raise StoreError(f"the version counter row of {s.meta!r} is missing; "
                                     "reopen the store to recreate it")
                version = int(top[0]) - len(ops)
                if has_versions(ops):
                    stamps, lands, last = plan(ops, version, self._current(conn, ops, keys))
            results: list[Applied] = []
            run_sql: str | None = None
            run: list[tuple[Any, ...]] = []
            for i, (key, row) in enumerate(zip(keys, rows)):
                if version is not None:
                    version += 1
                if stamps is not None:
                    version = stamps[i]
                    if not lands[i]:
                        results.append(Applied(version, None, False))
                        continue
                if row is None and key is None:
                    results.append(Applied(version))
                    continue
                if row is None:
                    sql, params = self._delete, (key,)
                else:
                    cols = tuple(row)
                    sql = self._upsert(cols)
                    params = (key, *row.values(), *(() if version is None else (version,)))
                if sql != run_sql:
                    if run_sql is not None:
                        conn.executemany(run_sql, run)
                    run_sql, run = sql, []
                run.append(params)
                results.append(Applied(version))
            if run_sql is not None:
                conn.executemany(run_sql, run)
            if stamps is not None:
                self._after_versions(conn, ops, stamps, lands, last)
            if journal is not None:
                if not self.marks_ready:
                    self._create_marks(conn)  # DDL is transactional in SQLite
                self._mark(conn, ops, journal)
        return results

    def _current(self, conn: sqlite3.Connection, ops: Sequence[Op],
                 keys: Sequence[str | int | None]) -> dict[str, int]:
        """The versions of the keys of the versioned ops: rows, else tombstones (see
        :mod:`cacheway.stores.rows`)."""
        s = self.spec
        names = {b: op.key for op, b in zip(ops, keys) if op.version is not None}
        bound = [b for b in names if b is not None]
        out: dict[str, int] = {}
        for i in range(0, len(bound), _CHUNK):
            chunk = bound[i : i + _CHUNK]
            for b, v in conn.execute(
                    f"SELECT {_q(s.key_column)}, {_q(str(s.version_column))} FROM "
                    f"{_q(s.table)} WHERE {_q(s.key_column)} IN ({','.join('?' * len(chunk))})",
                    chunk):
                name = names.get(b, names.get(str(b)))
                if name is not None and v is not None:
                    out[name] = int(v)
        if not self.marks_ready:
            self._create_marks(conn)  # DDL is transactional in SQLite
        wanted = list(names.values())
        for i in range(0, len(wanted), _CHUNK):
            part = wanted[i : i + _CHUNK]
            for name, v in conn.execute(
                    f"SELECT key, seq FROM {_q(s.applied)} WHERE journal = ? AND namespace = '' "
                    f"AND key IN ({','.join('?' * len(part))})", [TOMBSTONES, *part]):
                out[name] = max(int(v), out.get(name, 0))
        return out

    def _after_versions(self, conn: sqlite3.Connection, ops: Sequence[Op], stamps: list[int],
                        lands: list[bool], top: int) -> None:
        """Tombstones of the versioned deletes that landed; the counter raised to ``top``."""
        s = self.spec
        conn.executemany(
            f"INSERT INTO {_q(s.applied)} (journal, namespace, key, seq) VALUES (?, '', ?, ?) "
            "ON CONFLICT(journal, namespace, key) DO UPDATE SET seq = max(seq, excluded.seq)",
            [(TOMBSTONES, op.key, v) for op, v, ok in zip(ops, stamps, lands)
             if ok and op.kind == DELETE and op.version is not None])
        conn.execute(f"UPDATE {_q(s.meta)} SET value = max(value, ?) WHERE name = 'version'",
                     (top,))

    def _mark(self, conn: sqlite3.Connection, ops: Sequence[Op], mark: JournalMark) -> None:
        write_mark(conn, _q(self.spec.meta), _q(self.spec.applied), ops, mark, self._trim)

    def applied_state(self, conn: sqlite3.Connection, journal_id: str
                      ) -> tuple[int, dict[tuple[str, str], int]]:
        s = self.spec
        if not self.marks_ready:
            with immediate(conn):
                self._create_marks(conn)
        return read_marks(conn, _q(s.meta), _q(s.applied), journal_id)
