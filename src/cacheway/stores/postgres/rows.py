"""Row mode of :class:`~cacheway.stores.postgres.PostgresStore`: keys map to the rows of
an existing table, values are dicts of its columns.

``PostgresStore(dsn, table="users", key_column="id", columns=["name", "email"])`` reads
``{"name": ..., "email": ...}`` for a key and upserts the columns a dict names (columns it
leaves out keep their current values on update). The table is never created; its key
column needs a primary key or unique constraint (``ON CONFLICT`` needs one). With
``version_column=`` every write stamps that column from a sequence
``{table}_{version_column}_seq`` (created when missing), which gives the store versions.

Rows travel to PostgreSQL as one JSON document per statement
(``jsonb_populate_recordset``), so each column's own type parses its value: dates as ISO
strings, numbers into text columns, and so on. This module imports psycopg at the top:
it is only imported once :mod:`cacheway.stores.postgres` found the driver.
:class:`~cacheway.stores.rows.RowSpec` (names, value checks) is shared with the other
stores' row modes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from psycopg import Connection, Cursor, sql

from ...errors import ConfigError
from ...serializers import Serializer
from ..base import DELETE, Applied, Loaded, Op, ValidateFn
from ..rows import TOMBSTONES, RowSpec, plan
from .helpers import ddl_lock
from .versions import SEQ_LOCK_CLASS

__all__ = ["RowMapper"]

_ORD = '"cacheway ord"'  # a column name no validated identifier can collide with
_NUMBER_TYPES = ("smallint", "integer", "bigint", "numeric")


class RowMapper:
    """The SQL of row mode for one table; :class:`PostgresStore` runs it on its pool."""

    atomic_add = False  # counters are not supported
    expires = False  # no expiry column: a namespace cannot expire=
    marks_at_setup = False  # the mark tables are created at the first mark
    tombstones_in_marks = True  # tombstones of versioned deletes live there

    def __init__(self, table: str, key_column: str | None, columns: Sequence[str] | None,
                 version_column: str | None, serializer: Serializer) -> None:
        # The names and the value checks are row mode's, shared with the other stores.
        self.spec = spec = RowSpec("PostgresStore", table, key_column, columns, version_column)
        self.serializer = serializer
        self.versioned = spec.versioned
        self.marks = (spec.meta, spec.applied)
        self.companion = spec.applied  # the longest name it adds next to the table
        self.table, self.key_column, self.columns = spec.table, spec.key_column, spec.columns
        self.version_column = spec.version_column
        self.version_seq = (None if version_column is None
                            else f"{table}_{version_column}_seq")
        if self.version_seq is not None and len(self.version_seq) > 63:
            raise ConfigError(f"sequence name {self.version_seq!r} would exceed PostgreSQL's "
                              "63-character identifiers: use a shorter table or column name")
        self._key_type = "text"
        self.max_key_chars: int | None = None
        self._vseq_quoted = ""
        self._set_queries: dict[tuple[str, ...], str] = {}
        self._q: dict[str, str] = {}

    @property
    def validate(self) -> ValidateFn:
        """Checks a write at the call and returns the row the cache keeps."""
        return self.normalize

    def payload_check(self, serializer: Any) -> None:
        """None: a row's values are checked by :attr:`validate` (the row it keeps)."""
        return

    # -- construction-time checks -------------------------------------------------------
    def setup(self, conn: Connection[Any]) -> None:
        """Check the table and columns exist (ConfigError listing what is missing), that
        the key column is unique, and create the version sequence when missing."""
        t = self.table
        info = conn.execute(
            "SELECT column_name, data_type, character_maximum_length, is_nullable "
            "FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s", (t,)
        ).fetchall()
        found = {name: kind for name, kind, _, _ in info}
        self.spec.require([name for name, _, _, nullable in info if nullable == "NO"])
        # varchar(n)/char(n): n characters at most (text: no limit but the btree's).
        self.max_key_chars = next((int(n) for name, _, n, _ in info
                                   if name == self.key_column and n is not None), None)
        if not found:
            raise ConfigError(
                f"table {t!r} does not exist in the current schema: row mode maps keys to "
                "an existing table (create it first, or drop key_column=/columns= to get a "
                "key/value table)"
            )
        wanted = [self.key_column, *self.columns]
        if self.version_column is not None:
            wanted.append(self.version_column)
        missing = [c for c in wanted if c not in found]
        if missing:
            raise ConfigError(
                f"table {t!r} has no column(s) {', '.join(missing)} "
                f"(it has {', '.join(sorted(found))})"
            )
        if self.version_column is not None and found[self.version_column] not in _NUMBER_TYPES:
            raise ConfigError(
                f"version_column {self.version_column!r} of {t!r} is "
                f"{found[self.version_column]}, not an integer type"
            )
        reg = "format('%%I.%%I', current_schema(), %s::text)::regclass"
        row = conn.execute(
            f"SELECT format_type(a.atttypid, a.atttypmod), EXISTS (SELECT 1 FROM pg_index i "
            "WHERE i.indrelid = a.attrelid AND i.indisunique AND i.indnkeyatts = 1 "
            "AND i.indpred IS NULL AND i.indkey[0] = a.attnum) "
            f"FROM pg_attribute a WHERE a.attrelid = {reg} AND a.attname = %s",
            (t, self.key_column),
        ).fetchone()
        assert row is not None
        self._key_type, unique = str(row[0]), bool(row[1])
        if not unique:
            raise ConfigError(
                f"key_column {self.key_column!r} of {t!r} needs a primary key or unique "
                "constraint of its own (upserts use ON CONFLICT on it)"
            )
        if self.version_seq is not None:
            with conn.transaction():
                ddl_lock(conn, t)
                conn.execute(sql.SQL("CREATE SEQUENCE IF NOT EXISTS {}").format(
                    sql.Identifier(self.version_seq)))
        if self.version_seq is not None:
            self._vseq_quoted = sql.Identifier(self.version_seq).as_string(conn)
        self._build(conn)

    def _names(self) -> dict[str, sql.Composable]:
        return {
            "t": sql.Identifier(self.table),
            "key": sql.Identifier(self.key_column),
            "ktype": sql.SQL(self._key_type),  # from the catalog's format_type()
            "vcol": sql.Identifier(self.version_column or "version"),
            # nextval() parses this string as a name: quoted, so case is kept.
            "vseq": sql.Literal(self._vseq_quoted),
            "cols": sql.SQL(", ").join(
                sql.SQL("t.{}").format(sql.Identifier(c)) for c in self.columns),
        }

    def _build(self, conn: Connection[Any]) -> None:
        n = self._names()
        versioned = self.version_column is not None
        fetch = ("SELECT u.k, {cols}" + (", t.{vcol}" if versioned else "") +
                 " FROM unnest(%s::text[]) AS u(k) JOIN {t} AS t ON t.{key} = u.k::{ktype}")
        if versioned:
            delete = ("WITH u AS (SELECT k, n FROM unnest(%s::text[]::{ktype}[]) "
                      "WITH ORDINALITY AS u(k, n)), "
                      "d AS (DELETE FROM {t} AS t USING u WHERE t.{key} = u.k "
                      "RETURNING t.{key} AS k, nextval({vseq}) AS v) "
                      "SELECT u.n, coalesce(d.v, nextval({vseq})) FROM u "
                      "LEFT JOIN d ON d.k = u.k")
        else:
            delete = "DELETE FROM {t} WHERE {key} = ANY(%s::text[]::{ktype}[])"
        queries = [("fetch", fetch), ("delete", delete)]
        if versioned:
            # Batches holding versioned ops (write_stamped): versions decided in Python.
            queries += [
                ("versions", "SELECT u.k, t.{vcol} FROM unnest(%s::text[]) AS u(k) "
                             "JOIN {t} AS t ON t.{key} = u.k::{ktype} FOR UPDATE OF t"),
                ("delete_plain", "DELETE FROM {t} WHERE {key} = ANY(%s::text[]::{ktype}[])"),
                ("tombs", "SELECT key, seq FROM {a} WHERE journal = %s AND namespace = '' "
                          "AND key = ANY(%s::text[])"),
                ("tomb_write", "INSERT INTO {a} AS a (journal, namespace, key, seq) "
                               "SELECT %s, '', u.k, u.v FROM unnest(%s::text[], "
                               "%s::bigint[]) AS u(k, v) ON CONFLICT (journal, namespace, "
                               "key) DO UPDATE SET seq = greatest(a.seq, excluded.seq)"),
                ("fresh", "SELECT nextval({vseq}) FROM generate_series(1, %s::int)"),
                ("seq_lock", "SELECT pg_advisory_xact_lock(%s::int, hashtext("
                             "current_schema() || '.' || %s::text))"),
                ("seq_raise", "SELECT setval({vseq}, greatest(%s::bigint, (SELECT "
                              "last_value FROM {vseqname})))"),
            ]
            n = {**n, "a": sql.Identifier(self.spec.applied),
                 "vseqname": sql.Identifier(str(self.version_seq))}
        self._q = {name: sql.SQL(text).format(**n).as_string(conn) for name, text in queries}

    def _set_query(self, cols: tuple[str, ...], conn: Connection[Any],
                   stamped: bool = False) -> str:
        """The upsert of rows naming ``cols``; ``stamped``: each row brings its version
        (in the version column of its document) instead of drawing one."""
        cache_key = (*cols, "") if stamped else cols
        query = self._set_queries.get(cache_key)
        if query is not None:
            return query
        n = self._names()
        ident = sql.Identifier
        target = sql.SQL(", ").join(ident(c) for c in (self.key_column, *cols))
        source = sql.SQL(", ").join(
            sql.SQL("r.{}").format(ident(c)) for c in (self.key_column, *cols))
        updates = [sql.SQL("{c} = excluded.{c}").format(c=ident(c)) for c in cols]
        if stamped:
            updates.append(sql.SQL("{vcol} = excluded.{vcol}").format(**n))
            composed = sql.SQL(
                "INSERT INTO {t} AS t ({target}, {vcol}) SELECT {source}, r.{vcol} FROM "
                "jsonb_populate_recordset(NULL::{t}, %s::jsonb) AS r "
                "ON CONFLICT ({key}) DO UPDATE SET {updates}"
            ).format(target=target, source=source, updates=sql.SQL(", ").join(updates), **n)
            query = composed.as_string(conn)
            self._set_queries[cache_key] = query
            return query
        if self.version_column is None:
            conflict = (sql.SQL("DO UPDATE SET ") + sql.SQL(", ").join(updates)
                        if updates else sql.SQL("DO NOTHING"))
            composed = sql.SQL(
                "INSERT INTO {t} AS t ({target}) SELECT {source} FROM "
                "jsonb_populate_recordset(NULL::{t}, %s::jsonb) AS r "
                "ON CONFLICT ({key}) {conflict}"
            ).format(target=target, source=source, conflict=conflict, **n)
        else:
            updates.append(sql.SQL("{vcol} = nextval({vseq})").format(**n))
            composed = sql.SQL(
                "WITH src AS (SELECT e.n AS " + _ORD + ", r.* FROM jsonb_array_elements("
                "%s::jsonb) WITH ORDINALITY AS e(doc, n), jsonb_populate_record(NULL::{t}, "
                "e.doc) AS r), w AS (INSERT INTO {t} AS t ({target}, {vcol}) "
                "SELECT {source}, nextval({vseq}) FROM src AS r ON CONFLICT ({key}) "
                "DO UPDATE SET {updates} RETURNING t.{key} AS k, t.{vcol} AS v) "
                "SELECT src." + _ORD + ", w.v FROM src JOIN w ON w.k = src.{key}"
            ).format(target=target, source=source, updates=sql.SQL(", ").join(updates), **n)
        query = composed.as_string(conn)
        self._set_queries[cols] = query
        return query

    # -- reads and writes ---------------------------------------------------------------
    def one_trip(self, ops: Sequence[Op]) -> bool:
        return False  # (row mode's versioned writes keep tombstones in the mark tables)

    def write_one_trip(self, conn: Connection[Any], ops: Sequence[Op]) -> list[Applied]:
        raise ConfigError("row mode writes no batch in one trip")

    def purge_expired(self, conn: Connection[Any], limit: int) -> int:
        raise ConfigError(f"{self.table!r} is a row-mode table: it has no expiry")

    def sample_keys(self, conn: Connection[Any], ns: str, n: int) -> list[str]:
        """Random keys of the table (row mode has no namespace column: ``ns`` is
        ignored, as by every read)."""
        query = sql.SQL("SELECT {}::text FROM {} ORDER BY random() LIMIT %s").format(
            sql.Identifier(self.key_column), sql.Identifier(self.table))
        return [str(r[0]) for r in conn.execute(query, (n,))]

    def fetch(self, conn: Connection[Any], ns: str, keys: list[str]) -> dict[str, Loaded]:
        out: dict[str, Loaded] = {}
        ncols = len(self.columns)
        versioned = self.version_column is not None
        for row in conn.execute(self._q["fetch"], (keys,)).fetchall():
            value = dict(zip(self.columns, row[1 : 1 + ncols]))
            out[row[0]] = Loaded(None, value, row[-1] if versioned else None)
        return out

    def normalize(self, namespace: str, key: str, value: Any, kind: int) -> Any:
        """The value a cache keeps for a row-mode write (see RowSpec.normalize)."""
        return self.spec.normalize(namespace, key, value, kind, False)

    def prepare(self, ops: Sequence[Op]) -> list[dict[str, Any] | None]:
        """Check every op before any SQL runs (RowSpec.rows; a journal replay's bytes are
        decoded with the serializer): each SET becomes its row, key column included."""
        rows = self.spec.rows(ops, self.serializer, scalars_only=False)
        for op, row in zip(ops, rows):
            if row is not None:
                row[self.key_column] = op.key
        return rows

    def versions(self, ops: Sequence[Op]) -> list[int]:
        """The versions the batch carries (none where the table has no version column:
        versions are then ignored)."""
        if self.version_column is None:
            return []
        return [op.version for op in ops if op.version is not None]

    def one_statement(self, ops: Sequence[Op], prepared: list[dict[str, Any] | None],
                      kinds: set[int]) -> bool:
        """Whether a batch of one kind (no key twice) is one statement: the rows all
        name the same columns."""
        return len({tuple(r) for r in prepared if r}) <= 1

    def write(self, cur: Cursor[Any], ops: Sequence[Op],
              prepared: list[dict[str, Any] | None], segments: list[list[int]],
              versions: list[int], out: list[Applied | None]) -> None:
        if versions:
            self.write_stamped(cur, ops, prepared, out)
            return
        for segment in segments:
            self.write_segment(cur, ops, prepared, segment, out)

    def write_stamped(self, cur: Cursor[Any], ops: Sequence[Op],
                      rows: list[dict[str, Any] | None], out: list[Applied | None]) -> None:
        """A whole batch holding versioned ops, set-if-newer (see
        :mod:`cacheway.stores.rows`). Versioned batches of the table run one at
        a time under the lock of its sequence, so tombstones are read and written
        consistently; the sequence is raised above the batch's versions first, so its
        unversioned ops draw newer ones."""
        q, vcol = self._q, str(self.version_column)
        versions = [op.version for op in ops if op.version is not None]
        cur.execute(q["seq_lock"], (SEQ_LOCK_CLASS, self.version_seq))
        cur.execute(q["seq_raise"], (max(versions),))
        names = list(dict.fromkeys(op.key for op in ops if op.version is not None))
        current: dict[str, int] = {}
        cur.execute(q["versions"], (names,))
        current.update((k, int(v)) for k, v in cur.fetchall() if v is not None)
        cur.execute(q["tombs"], (TOMBSTONES, names))
        for k, v in cur.fetchall():
            current[k] = max(int(v), current.get(k, 0))
        fresh: list[int] = []
        if len(versions) < len(ops):
            cur.execute(q["fresh"], (len(ops) - len(versions),))
            fresh = [int(r[0]) for r in cur.fetchall()]
        stamps, lands, _ = plan(ops, 0, current, iter(fresh))
        # Each key's end state: (deleted first, its row or None, version).
        final: dict[str, tuple[bool, dict[str, Any] | None]] = {}
        tombs: dict[str, int] = {}
        for i, (op, row, stamp, ok) in enumerate(zip(ops, rows, stamps, lands)):
            out[i] = Applied(stamp, None, ok)
            if not ok:
                continue
            before = final.get(op.key)
            if row is None:
                final[op.key] = (True, None)
                if op.version is not None:
                    tombs[op.key] = stamp
            else:
                merged = {**before[1], **row} if before and before[1] is not None else row
                final[op.key] = (before is not None and before[0], {**merged, vcol: stamp})
        gone = [k for k, (deleted, _) in final.items() if deleted]
        if gone:
            cur.execute(q["delete_plain"], (gone,))
        if tombs:
            cur.execute(q["tomb_write"], (TOMBSTONES, list(tombs), list(tombs.values())))
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for _, row in final.values():
            if row is not None:
                groups.setdefault(tuple(c for c in self.columns if c in row), []).append(row)
        for cols, docs in groups.items():
            cur.execute(self._set_query(cols, cur.connection, stamped=True),
                        (orjson.dumps(docs, default=str).decode(),))

    def write_segment(self, cur: Cursor[Any], ops: Sequence[Op],
                      rows: list[dict[str, Any] | None], segment: list[int],
                      out: list[Applied | None]) -> None:
        conn = cur.connection
        groups: dict[tuple[str, ...], list[int]] = {}
        dels: list[int] = []
        for i in segment:
            row = rows[i]
            if ops[i].kind == DELETE:
                dels.append(i)
            elif row is not None:
                cols = tuple(c for c in self.columns if c in row)
                groups.setdefault(cols, []).append(i)
        versioned = self.version_column is not None
        # A column set is one statement; dicts with the same keys share it.
        for cols, idx in groups.items():
            doc = orjson.dumps([rows[i] for i in idx], default=str).decode()
            cur.execute(self._set_query(cols, conn), (doc,))
            if versioned:
                for n, version in cur.fetchall():
                    out[idx[n - 1]] = Applied(version)
            else:
                for i in idx:
                    out[i] = Applied(None)
        if dels:
            cur.execute(self._q["delete"], ([ops[i].key for i in dels],))
            if versioned:
                for n, version in cur.fetchall():
                    out[dels[n - 1]] = Applied(version)
            else:
                for i in dels:
                    out[i] = Applied(None)
