"""The key/value mapping of :class:`~cacheway.stores.postgres.PostgresStore`: one table
``(namespace, key, value jsonb | bytea, version, updated_at)`` it creates when missing,
versions from the sequence ``{table}_version_seq``, journal marks in ``{table}_meta``
and ``{table}_applied`` (created with the table), an ``expires_at`` column (epoch
seconds, NULL: never) for namespaces with ``expire=`` (tables from before it gain it at
open). Imported once the driver was found.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

from psycopg import Connection, Cursor, errors, sql

from ...errors import ConfigError, InvalidWriteError, SerializationError
from ...serializers import Serializer
from ..base import ADD, DELETE, NOTSET, SET, Applied, Loaded, Op, expiring, has_versions
from .helpers import _fill, create_marks, ddl_lock
from .sql import kv_queries
from .versions import one_trip_landed, one_trip_reports, one_trip_statement, raise_sequence
from .versions import write_sets as write_versioned

__all__ = ["PgKV"]

# JSON's escape of a NUL character: ``\u0000`` after an even number of backslashes
# (``\\u0000`` is a backslash and the text "u0000").
_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
# A number in exponent form (how JSON writes floats from 1e16 up): jsonb's numeric keeps a
# whole one without a fraction, so it would come back an int.
_EXPONENT = re.compile(rb"[0-9][eE]\+?[0-9]")


def _check_whole_floats(value: Any, table: str) -> None:
    """SerializationError for a float a jsonb column would give back as an int."""
    if isinstance(value, float):
        # (from 2**63 on, the decoder reads the digits back as a float)
        if value.is_integer() and abs(value) >= 1e16 and -2**63 <= int(value) < 2**63:
            raise SerializationError(
                f"the float {value!r} would come back from the jsonb column of table "
                f"{table!r} as the int {int(value)}: store it as an int, or give the store "
                "a bytea table (a serializer other than JSON)")
    elif isinstance(value, list):
        for item in value:
            _check_whole_floats(item, table)
    elif isinstance(value, dict):
        for item in value.values():
            _check_whole_floats(item, table)


class PgKV:
    """The SQL of key/value mode for one table; :class:`PostgresStore` runs it on its
    pool, in its transactions."""

    versioned = True
    atomic_add = True
    validate = None
    expires = True
    max_key_chars: int | None = None
    marks_at_setup = True  # the mark tables are created with the table
    tombstones_in_marks = False  # tombstones are rows with a NULL value

    def __init__(self, table: str, serializer: Serializer,
                 scrub: Callable[[str], str]) -> None:
        self.table = table
        self.serializer = serializer
        self.marks = (f"{table}_meta", f"{table}_applied")
        self.seq = f"{table}_version_seq"
        self.companion = self.seq  # the longest name it adds next to the table
        self._scrub = scrub
        self._jsonb = False
        self._q: dict[str, str] = {}

    def _ready(self, conn: Connection[Any]) -> bool:
        """Whether everything :meth:`setup` creates is there (the usual open): then it
        runs no DDL, whose table lock (``ALTER TABLE``'s is exclusive even when the column
        exists) would wait for every transaction open on the table (a worker's batch) and
        hold up every query after it."""
        names = (self.seq, self.table + "_expires", *self.marks)
        row = conn.execute(
            "SELECT " + " AND ".join(["to_regclass(quote_ident(current_schema()) || '.' || "
                                      "quote_ident(%s)) IS NOT NULL"] * len(names))
            + " AND EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = "
            "current_schema() AND table_name = %s AND column_name = 'expires_at')",
            (*names, self.table)).fetchone()
        return bool(row and row[0])

    def setup(self, conn: Connection[Any]) -> None:
        if not self._ready(conn):
            self._create(conn)
        found = dict(conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s", (self.table,)
        ).fetchall())
        self._check_columns(found)
        self._q.update(kv_queries(conn, self.table, self.seq, self._jsonb))

    def _create(self, conn: Connection[Any]) -> None:
        ident = sql.Identifier
        with conn.transaction():
            ddl_lock(conn, self.table)
            conn.execute(sql.SQL("CREATE SEQUENCE IF NOT EXISTS {}").format(ident(self.seq)))
            value_type = "jsonb" if self.serializer.name == "json" else "bytea"
            conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (namespace text NOT NULL, key text NOT NULL, "
                "value " + value_type + ", version bigint NOT NULL, updated_at timestamptz "
                "NOT NULL DEFAULT now(), expires_at double precision, "
                "PRIMARY KEY (namespace, key))"
            ).format(ident(self.table)))
            # a table from before data expiry gains the column (its rows never expire)
            conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS expires_at "
                                 "double precision").format(ident(self.table)))
            conn.execute(sql.SQL(
                "CREATE INDEX IF NOT EXISTS {} ON {} (expires_at) WHERE expires_at IS NOT NULL"
            ).format(ident(self.table + "_expires"), ident(self.table)))
            create_marks(conn, *self.marks)

    def _check_columns(self, found: dict[str, str]) -> None:
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

    def payload_check(self, serializer: Serializer) -> Callable[[bytes], None]:
        """The check of a cache's payloads (see ``PayloadCheck``): a ``jsonb`` table
        (known once the store has set up) keeps JSON without NUL characters only."""
        table, json_ = self.table, serializer.name == "json"

        def check(payload: bytes) -> None:
            if not self._jsonb:
                return  # bytea keeps any bytes
            if not json_:
                raise InvalidWriteError(
                    f"table {table!r} keeps jsonb values and the cache's serializer is "
                    f"{serializer.name!r}: give the store the same serializer "
                    f"(PostgresStore(..., serializer=...)) or use the JSON serializer")
            if b"\\u0000" in payload and _NUL.search(payload):
                raise InvalidWriteError(
                    f"the value holds a NUL character (\\u0000), which the jsonb column "
                    f"of table {table!r} cannot keep")
            if _EXPONENT.search(payload):
                _check_whole_floats(json.loads(payload), table)

        return check

    # -- reads --------------------------------------------------------------------------
    def fetch(self, conn: Connection[Any], ns: str, keys: list[str]) -> dict[str, Loaded]:
        found = conn.execute(self._q["fetch"], (ns, keys, time.time())).fetchall()
        if self._jsonb:
            return {k: Loaded(v.encode(), NOTSET, ver, at) for k, v, ver, at in found}
        return {k: Loaded(bytes(v), NOTSET, ver, at) for k, v, ver, at in found}

    def sample_keys(self, conn: Connection[Any], ns: str, n: int) -> list[str]:
        # (a NULL value is the tombstone of a versioned delete)
        query = sql.SQL("SELECT key FROM {} WHERE namespace = %s AND value IS NOT NULL "
                        "AND (expires_at IS NULL OR expires_at > %s) ORDER BY random() "
                        "LIMIT %s").format(sql.Identifier(self.table))
        return [str(r[0]) for r in conn.execute(query, (ns, time.time(), n))]

    def purge_expired(self, conn: Connection[Any], limit: int) -> int:
        return conn.execute(self._q["purge"], (time.time(), limit)).rowcount

    # -- writes -------------------------------------------------------------------------
    def prepare(self, ops: Sequence[Op]) -> None:
        return None

    def versions(self, ops: Sequence[Op]) -> list[int]:
        return [op.version for op in ops if op.version is not None]

    def one_statement(self, ops: Sequence[Op], prepared: None, kinds: set[int]) -> bool:
        """Whether a batch of one kind (no key twice) is one statement: a bytea ADD
        is two (read, then write)."""
        return (ADD not in kinds or self._jsonb) and not expiring(ops)

    def one_trip(self, ops: Sequence[Op]) -> bool:
        """Whether :meth:`write_one_trip` takes ``ops``: versioned SETs and DELETEs of
        distinct keys, none expiring."""
        return (all(op.version is not None and op.kind != ADD and op.expires_at is None
                    for op in ops)
                and len({(op.namespace, op.key) for op in ops}) == len(ops))

    def write_one_trip(self, conn: Connection[Any], ops: Sequence[Op]) -> list[Applied]:
        """``ops`` (see :meth:`one_trip`) in one statement on an autocommit connection
        (``vset_raise``), instead of BEGIN, three statements and COMMIT (a write-through
        set's store write)."""
        query, params = one_trip_statement(self._q, ops, self.seq, self._payload)
        landed, skipped = one_trip_landed(
            ops, conn.execute(query, params, binary=True).fetchall())
        current: dict[tuple[str, str], int] = {}
        if skipped:  # rows that kept a newer version: report it (read after the commit)
            found = conn.execute(self._q["versions"], (
                [op.namespace for op in skipped], [op.key for op in skipped]), binary=True)
            current = {(ns, k): v for ns, k, v in found.fetchall()}
        return one_trip_reports(ops, landed, current)

    def write(self, cur: Cursor[Any], ops: Sequence[Op], prepared: None,
              segments: list[list[int]], versions: list[int],
              out: list[Applied | None]) -> None:
        # Unversioned ops of the batch are stamped above its versions: raise the
        # sequence first when there are some (its lock then lasts the whole batch),
        # else last, so the lock is held for the commit only.
        raise_first = bool(versions) and len(versions) < len(ops)
        expire = expiring(ops)
        if expire:  # data that ended is gone before a write of its key
            cur.execute(self._q["expired_delete"], (
                [op.namespace for op in ops], [op.key for op in ops], time.time()))
        if raise_first:
            raise_sequence(cur, self._q, self.seq, max(versions))
        for segment in segments:
            self._write(cur, ops, segment, out)
        if versions and not raise_first:
            raise_sequence(cur, self._q, self.seq, max(versions))
        if expire:  # the writes above ended the rows' old expiry: stamp the new one
            stamp = {(op.namespace, op.key): op.expires_at for op, res in zip(ops, out)
                     if op.expires_at is not None and op.kind != DELETE
                     and res is not None and res.applied}  # a key's last write wins
            if stamp:
                cur.execute(self._q["expires_stamp"], (
                    [k[0] for k in stamp], [k[1] for k in stamp], list(stamp.values())))

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
            except errors.InvalidTextRepresentation as exc:
                raise InvalidWriteError(
                    f"cannot add to a counter in {self.table!r}: a stored value is not an "
                    f"integer ({self._scrub(str(exc))})"
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
