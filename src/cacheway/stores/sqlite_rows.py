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

:class:`RowSpec` (names, checks and value preparation) is shared with the row mode of
:class:`~cacheway.stores.sqlalchemy.SQLAlchemyStore`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ..errors import ConfigError, InvalidWriteError, StoreError
from ..serializers import Serializer
from ._row_versions import TOMBSTONES, plan
from ._sqlite_marks import read_marks, write_mark
from .base import (
    ADD,
    DELETE,
    NOTSET,
    SET,
    Applied,
    JournalMark,
    Loaded,
    Op,
    has_versions,
    validate_identifier,
)

__all__ = ["RowSpec", "SQLiteRows", "canonical_int"]

_CHUNK = 500
_SCALARS = (type(None), bool, int, float, str, bytes)
_INT64 = (-(2**63), 2**63 - 1)


def canonical_int(key: str) -> int | None:
    """``key`` as an int when it is the canonical decimal spelling of one, else None.

    >>> canonical_int("7"), canonical_int("-3"), canonical_int("07"), canonical_int("x")
    (7, -3, None, None)
    """
    try:
        number = int(key)
    except ValueError:
        return None
    return number if str(number) == key else None


class _NoSerializer:
    """Validation sees Python values only; nothing to decode."""

    name = "none"

    def dumps(self, value: Any) -> bytes:
        raise AssertionError("not used")

    def loads(self, data: bytes) -> Any:
        raise AssertionError("not used")


_NO_SERIALIZER: Any = _NoSerializer()


class RowSpec:
    """The names of a row-mode mapping, checked, and the checks of its values."""

    def __init__(self, store: str, table: str, key_column: str | None,
                 columns: Sequence[str] | None, version_column: str | None) -> None:
        if key_column is None or columns is None or isinstance(columns, (str, bytes)) or not (
                columns := list(columns)):
            if isinstance(columns, (str, bytes)):
                raise ConfigError(f"columns must be a list of column names, not the string "
                                  f"{columns!r}")
            raise ConfigError(f"row mode of {store} needs both key_column= and columns=[...]")
        self.store = store
        self.table = validate_identifier(table)
        self.key_column = validate_identifier(key_column, "key_column")
        self.columns = tuple(validate_identifier(c, "column name") for c in columns)
        self.version_column = (None if version_column is None
                               else validate_identifier(version_column, "version_column"))
        named = [*self.wanted()]
        dupes = sorted({c for c in named if named.count(c) > 1})
        if dupes:
            raise ConfigError(
                f"column(s) {', '.join(dupes)} named twice: key_column, columns and "
                "version_column must all differ"
            )
        self.meta = f"{self.table}_cw_meta"
        self.applied = f"{self.table}_cw_applied"
        self._allowed = frozenset(self.columns)

    @property
    def versioned(self) -> bool:
        return self.version_column is not None

    def wanted(self) -> list[str]:
        """Every column the mapping names: key, value columns, version."""
        out = [self.key_column, *self.columns]
        if self.version_column is not None:
            out.append(self.version_column)
        return out

    def missing(self, found: Sequence[str], present: bool) -> None:
        """ConfigError when the table is absent or lacks a named column."""
        t = self.table
        if not present:
            raise ConfigError(
                f"table {t!r} does not exist: row mode maps keys to an existing table "
                "(create it first, or drop key_column=/columns= to get a key/value table)"
            )
        missing = [c for c in self.wanted() if c not in found]
        if missing:
            raise ConfigError(
                f"table {t!r} has no column(s) {', '.join(missing)} "
                f"(it has {', '.join(sorted(found))})"
            )

    def not_unique(self) -> ConfigError:
        return ConfigError(
            f"key_column {self.key_column!r} of {self.table!r} needs a primary key or unique "
            "constraint of its own (upserts conflict on it)"
        )

    def normalize(self, namespace: str, key: str, value: Any, kind: int,
                  scalars_only: bool) -> Any:
        """The value a cache keeps for a row-mode write: every mapped column, None where
        the dict leaves one out (a cache ``set`` replaces the row's mapped columns, so
        the cached copy and the row agree). Raises what :meth:`rows` would, at once."""
        op = Op(namespace, key, kind, None, 0, value)
        row = self.rows([op], _NO_SERIALIZER, scalars_only)[0]
        if row is None:
            return value
        return {c: row.get(c) for c in self.columns}

    def rows(self, ops: Sequence[Op], serializer: Serializer,
             scalars_only: bool) -> list[dict[str, Any] | None]:
        """Check every op before any SQL runs: one bad value fails the batch at once,
        naming its key and the offending columns. A SET becomes the dict of the columns
        it names (without the key); other ops become None."""
        out: list[dict[str, Any] | None] = []
        for op in ops:
            if op.kind == ADD:
                raise InvalidWriteError(
                    f"counters (incr) are not supported by a row-mode {self.store} "
                    f"(table {self.table!r}, key {op.key!r})"
                )
            if op.kind == DELETE:
                out.append(None)
                continue
            if op.kind != SET:
                raise ConfigError(f"unknown op kind {op.kind!r}")
            value = op.value
            if value is NOTSET and op.payload is not None:  # a journal replay: bytes only
                value = serializer.loads(op.payload)
            if not isinstance(value, dict):
                shown = repr(value) if value is None or value is NOTSET else type(value).__name__
                raise InvalidWriteError(f"row mode of {self.table!r} needs a dict value for key "
                                 f"{op.key!r}, not {shown}")
            unknown = sorted(str(c) for c in value
                             if c not in self._allowed and c != self.key_column)
            if unknown:
                raise InvalidWriteError(
                    f"value of key {op.key!r} has keys {', '.join(unknown)} that are not "
                    f"mapped columns of {self.table!r} (columns: {', '.join(self.columns)})"
                )
            if self.key_column in value and str(value[self.key_column]) != op.key:
                raise InvalidWriteError(
                    f"value of key {op.key!r} sets {self.key_column}="
                    f"{value[self.key_column]!r}: a row's key cannot differ from its cache key"
                )
            row = {c: value[c] for c in self.columns if c in value}
            if scalars_only:
                bad = sorted(c for c, v in row.items() if not isinstance(v, _SCALARS) or (
                    isinstance(v, int) and not _INT64[0] <= v <= _INT64[1]))
                if bad:
                    raise InvalidWriteError(
                        f"value of key {op.key!r}: column(s) {', '.join(bad)} of {self.table!r} "
                        "need None, bool, int (64-bit), float, str or bytes, not "
                        + ", ".join(type(row[c]).__name__ for c in bad)
                    )
            out.append(row)
        return out


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

    def __init__(self, spec: RowSpec, serializer: Serializer) -> None:
        self.spec = spec
        self.serializer = serializer
        self.int_key = False
        self.marks_ready = False
        self._batches = 0
        self._set_sql: dict[tuple[str, ...], str] = {}
        s = spec
        cols = ", ".join(_q(c) for c in s.wanted()[1:])
        self._select = f"SELECT {_q(s.key_column)}, {cols} FROM {_q(s.table)} WHERE "
        self._delete = f"DELETE FROM {_q(s.table)} WHERE {_q(s.key_column)} = ?"

    # -- construction-time checks -------------------------------------------------------
    def inspect(self, conn: sqlite3.Connection) -> None:
        """Check the table, its columns and the key's uniqueness; with a version column,
        create the counter row in ``{table}_cw_meta``. Runs in a transaction of its own."""
        s = self.spec
        info = conn.execute(f"PRAGMA table_info({_q(s.table)})").fetchall()
        types = {str(r[1]): str(r[2] or "") for r in info}
        s.missing(list(types), bool(info))
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
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._create_meta(conn)
            # Start above any version already in the column (a meta table dropped by hand).
            conn.execute(
                f"INSERT OR IGNORE INTO {_q(s.meta)} (name, value) VALUES ('version', 0)")
            conn.execute(
                f"UPDATE {_q(s.meta)} SET value = max(value, coalesce((SELECT "
                f"max({_q(s.version_column)}) FROM {_q(s.table)}), 0)) WHERE name = 'version'"
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

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
    def fetch(self, conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, Loaded]:
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
              journal: JournalMark | None) -> list[Applied]:
        """One transaction (``BEGIN IMMEDIATE``): the ops in order, versions from the
        counter row, the journal mark. Every value is checked before it begins."""
        s = self.spec
        rows = s.rows(ops, self.serializer, scalars_only=True)
        keys: list[str | int | None] = []
        for op in ops:
            b = self._bind(op.key)
            if b is None and op.kind != DELETE:  # deleting it is a no-op: no row has it
                raise InvalidWriteError(
                    f"key {op.key!r} does not fit the INTEGER key column {s.key_column!r} of "
                    f"{s.table!r}: use the canonical decimal spelling of an integer"
                )
            keys.append(b)
        if journal is not None and len(journal.seqs) != len(ops):
            raise ConfigError(
                f"journal mark has {len(journal.seqs)} seqs for a batch of {len(ops)} ops")
        conn.execute("BEGIN IMMEDIATE")
        try:
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
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return results

    def _current(self, conn: sqlite3.Connection, ops: Sequence[Op],
                 keys: Sequence[str | int | None]) -> dict[str, int]:
        """The versions of the keys of the versioned ops: rows, else tombstones (see
        :mod:`cacheway.stores._row_versions`)."""
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
        self._batches += 1
        write_mark(conn, _q(self.spec.meta), _q(self.spec.applied), ops, mark,
                   trim=self._batches % 64 == 0)

    def applied_state(self, conn: sqlite3.Connection, journal_id: str
                      ) -> tuple[int, dict[tuple[str, str], int]]:
        s = self.spec
        if not self.marks_ready:
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._create_marks(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return read_marks(conn, _q(s.meta), _q(s.applied), journal_id)
