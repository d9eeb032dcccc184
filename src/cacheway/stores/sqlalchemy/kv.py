"""The key/value mapping of :class:`~cacheway.stores.sqlalchemy.SQLAlchemyStore`: one
table ``(namespace, key, value, version, updated_at)``, a version counter row in
``{table}_meta`` locked first by every batch, journal marks in ``{table}_meta`` and
``{table}_applied``, an ``expires_at`` column (epoch seconds, NULL: never) for namespaces
with ``expire=`` (tables from before it gain it at open). The store turns
``SQLAlchemyError`` into ``StoreError``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError, InvalidWriteError, StoreError
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
)
from ..marks import Trim, check_mark
from .marks import VERSION_ROW, advance, read_marks, write_mark
from .upsert import greatest, newer, upsert
from .versions import plan_versioned

if TYPE_CHECKING:
    import sqlalchemy as sa

__all__ = ["JOURNAL_LEN", "NS_LEN", "SAKeyValue"]

_CHUNK = 500
NS_LEN = 255
JOURNAL_LEN = 64

Key = tuple[str, str]


def _bytes(value: Any) -> bytes | None:
    return value if value is None or isinstance(value, bytes) else bytes(value)


class SAKeyValue:
    """The statements of key/value mode for one table."""

    versioned = True
    atomic_add = True
    validate = None
    expires = True

    def __init__(self, table: str, serializer: Serializer,
                 check_key: Callable[[str, str], None]) -> None:
        self.table = table
        self.serializer = serializer
        self.max_key_chars: int | None = None
        self._check_key = check_key
        self._trim = Trim()

    # -- tables -------------------------------------------------------------------------
    def open(self, engine: sa.Engine, kind: str, table_kw: dict[str, str], ns_len: int,
             key_length: int) -> None:
        """Define the tables, create them when missing, start the version counter."""
        import sqlalchemy as sa_

        self._engine, self._kind, self._ns_len = engine, kind, ns_len
        self._key_length = key_length
        self._define(sa_, table_kw)
        self._create(sa_)
        self._add_expiry_column(sa_)
        # The tables may be older than this store, made with another key_length.
        self.max_key_chars = self._reflect_key_length(sa_, [self._t.name, self._a.name])

    def _define(self, sa_: Any, table_kw: dict[str, str]) -> None:
        from sqlalchemy.dialects import mysql

        md = sa_.MetaData()
        string = sa_.String
        big = sa_.BigInteger
        col = sa_.Column
        blob = sa_.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
        t = sa_.Table(
            self.table, md,
            col("namespace", string(self._ns_len), primary_key=True, nullable=False),
            col("key", string(self._key_length), primary_key=True, nullable=False),
            col("value", blob, nullable=True),
            col("version", big, nullable=False),
            col("updated_at", sa_.Double(), nullable=False),
            col("expires_at", sa_.Double(), nullable=True),
            **table_kw,
        )
        m = sa_.Table(
            f"{self.table}_meta", md,
            col("name", string(NAME_LEN), primary_key=True, nullable=False),
            col("value", big, nullable=False),
            **table_kw,
        )
        a = sa_.Table(
            f"{self.table}_applied", md,
            col("journal", string(JOURNAL_LEN), primary_key=True, nullable=False),
            col("namespace", string(self._ns_len), primary_key=True, nullable=False),
            col("key", string(self._key_length), primary_key=True, nullable=False),
            col("seq", big, nullable=False),
            **table_kw,
        )
        self._md, self._t, self._m, self._a = md, t, m, a
        bind = sa_.bindparam
        keys = bind("keys", expanding=True)
        in_ns = (t.c.namespace == bind("ns")) & t.c.key.in_(keys)
        # A NULL value is the tombstone of a versioned delete: no row to a reader.
        # An expired row (expires_at passed, by the caller's clock) is no row either.
        self._live = t.c.expires_at.is_(None) | (t.c.expires_at > bind("now"))
        self._select = sa_.select(t.c.key, t.c.value, t.c.version, t.c.expires_at).where(
            in_ns & t.c.value.isnot(None) & self._live)
        self._delete_expired = sa_.delete(t).where(in_ns & (t.c.expires_at <= bind("now")))
        self._expired = sa_.select(t.c.namespace, t.c.key).where(
            t.c.expires_at <= bind("now")).limit(bind("limit"))
        # FOR UPDATE: MySQL's REPEATABLE READ would otherwise read an older snapshot.
        self._select_locked = sa_.select(t.c.key, t.c.value).where(in_ns).with_for_update()
        self._select_versions = sa_.select(t.c.key, t.c.value, t.c.version).where(
            in_ns).with_for_update()
        self._raise_counter = sa_.update(m).where(
            (m.c.name == VERSION_ROW) & (m.c.value < bind("top"))).values(value=bind("top"))
        self._delete = sa_.delete(t).where(in_ns)
        biggest = greatest(self._kind)
        self._upsert_rows = upsert(
            self._kind, t, dict.fromkeys(("value", "version", "updated_at", "expires_at"),
                                         newer))
        self._upsert_meta = upsert(self._kind, m, {"value": biggest})
        self._upsert_applied = upsert(self._kind, a, {"seq": biggest})

    def _create(self, sa_: Any) -> None:
        tables = [self._t, self._m, self._a]
        for attempt in range(6):
            try:
                self._md.create_all(self._engine, checkfirst=True)
                break
            except sa_.exc.DBAPIError:
                # Another process created a table between the check and our CREATE.
                inspector = sa_.inspect(self._engine)
                if all(inspector.has_table(t.name) for t in tables):
                    break
                if attempt == 5:
                    raise
                time.sleep(0.05 * (attempt + 1))
        m, t = self._m, self._t
        with self._engine.begin() as conn:
            if conn.execute(sa_.select(m.c.value).where(m.c.name == VERSION_ROW)).first():
                return
            # Start above any version already in the table (a meta table dropped by hand).
            top = conn.execute(sa_.select(sa_.func.max(t.c.version))).scalar() or 0
        row = {"name": VERSION_ROW, "value": int(top)}
        with self._engine.begin() as conn:
            if self._upsert_meta is not None:
                conn.execute(self._upsert_meta, [row])
                return
            try:
                with conn.begin_nested():
                    conn.execute(sa_.insert(m), [row])
            except sa_.exc.IntegrityError:
                pass  # another process inserted it first

    def _add_expiry_column(self, sa_: Any) -> None:
        """A table made before data expiry gains its ``expires_at`` column (its rows keep
        their data and never expire); several processes may race here."""
        name = self._t.name
        for attempt in range(6):
            columns = {c["name"] for c in sa_.inspect(self._engine).get_columns(name)}
            if "expires_at" in columns:
                return
            prep = self._engine.dialect.identifier_preparer
            ddl = (f"ALTER TABLE {prep.quote(name)} ADD COLUMN expires_at "
                   f"{sa_.Double().compile(dialect=self._engine.dialect)}")
            try:
                with self._engine.begin() as conn:
                    conn.execute(sa_.text(ddl))
                return
            except sa_.exc.DBAPIError:
                if attempt == 5:
                    raise
                time.sleep(0.05 * (attempt + 1))  # another process added it: look again

    def _reflect_key_length(self, sa_: Any, tables: list[str]) -> int:
        """The shortest ``key`` column of ``tables`` as the database has it."""
        inspector = sa_.inspect(self._engine)
        found = [self._key_length]
        for name in tables:
            for col in inspector.get_columns(name):
                length = getattr(col["type"], "length", None)
                if col["name"] == "key" and isinstance(length, int):
                    found.append(length)
        return min(found)

    # -- reads --------------------------------------------------------------------------
    def fetch(self, namespace: str, keys: list[str]) -> dict[str, Loaded]:
        with self._engine.connect() as conn:
            return self.fetch_in(conn, namespace, keys)

    def fetch_in(self, conn: sa.Connection, namespace: str, keys: list[str]
                 ) -> dict[str, Loaded]:
        """:meth:`fetch` on ``conn`` (the async path's, see ``aio.py``)."""
        out: dict[str, Loaded] = {}
        now = time.time()
        for i in range(0, len(keys), _CHUNK):
            params = {"ns": namespace, "keys": keys[i : i + _CHUNK], "now": now}
            for key, value, version, at in conn.execute(self._select, params):
                out[key] = Loaded(_bytes(value), NOTSET, int(version), at)
        return out

    def purge_expired(self, limit: int) -> int:
        """Delete up to ``limit`` rows whose data has expired."""
        with self._engine.begin() as conn:
            found = conn.execute(self._expired, {"now": time.time(), "limit": limit}).all()
            for ns, names in _by_namespace((str(a), str(b)) for a, b in found).items():
                for i in range(0, len(names), _CHUNK):
                    conn.execute(self._delete_expired, {
                        "ns": ns, "keys": names[i : i + _CHUNK], "now": time.time()})
        return len(found)

    def sample_keys(self, namespace: str, n: int) -> list[str]:
        import sqlalchemy as sa_

        t = self._t
        rand = sa_.func.rand() if self._kind == "mysql" else sa_.func.random()
        # (a NULL value is the tombstone of a versioned delete)
        query = sa_.select(t.c.key).where(
            t.c.namespace == namespace, t.c.value.is_not(None), self._live
        ).order_by(rand).limit(n)
        with self._engine.connect() as conn:
            return [str(r[0]) for r in conn.execute(query, {"now": time.time()})]

    def applied_state(self, journal_id: str) -> tuple[int, dict[tuple[str, str], int]]:
        with self._engine.connect() as conn:
            return read_marks(conn, self._m, self._a, journal_id)

    # -- writes -------------------------------------------------------------------------
    def apply(self, ops: Sequence[Op], journal: JournalMark | None) -> list[Applied]:
        self._check_ops(ops, journal)
        with self._engine.begin() as conn:
            return self._apply_in(conn, ops, journal)

    def apply_in(self, conn: sa.Connection, ops: Sequence[Op]) -> list[Applied]:
        """:meth:`apply` (no journal mark) in the transaction of ``conn`` (the async
        path's, see ``aio.py``)."""
        self._check_ops(ops, None)
        return self._apply_in(conn, ops, None)

    def _check_ops(self, ops: Sequence[Op], journal: JournalMark | None) -> None:
        for op in ops:
            if op.kind not in (SET, DELETE, ADD):
                raise ConfigError(f"unknown op kind {op.kind!r}")
            if len(op.namespace) > self._ns_len:
                raise InvalidWriteError(
                    f"namespace {op.namespace[:40]!r}... is longer than {self._ns_len} characters"
                )
            self._check_key(op.namespace, op.key)
        if journal is not None:
            check_mark(ops, journal)
            if len(journal.journal_id) > JOURNAL_LEN:
                raise ConfigError(f"journal id {journal.journal_id!r} is over {JOURNAL_LEN} chars")

    def _mark(self, conn: sa.Connection, ops: Sequence[Op], journal: JournalMark) -> None:
        write_mark(conn, self._m, self._a, self._upsert_meta, self._upsert_applied, ops,
                   journal, trim=self._trim.due())

    def _apply_in(
        self, conn: sa.Connection, ops: Sequence[Op], journal: JournalMark | None
    ) -> list[Applied]:
        version = advance(conn, self._engine, self._m, len(ops))
        now = time.time()
        expires: dict[Key, float | None] | None = None
        if expiring(ops):
            # Data that ended is gone before a write of its key (a counter starts at 0).
            expires = {(op.namespace, op.key): op.expires_at for op in ops}
            for ns, names in _by_namespace(expires).items():
                for i in range(0, len(names), _CHUNK):
                    conn.execute(self._delete_expired,
                                 {"ns": ns, "keys": names[i : i + _CHUNK], "now": now})
        if has_versions(ops):
            return self._apply_versioned(conn, ops, journal, version, now, expires)
        stored = self._lock_rows(conn, {(op.namespace, op.key) for op in ops if op.kind == ADD})
        # Only a key's last op reaches the table, so a batch holding one key twice
        # (SET then DELETE, two SETs) ends as it would applied one op at a time.
        final: dict[Key, tuple[bytes | None, int] | None] = {}
        results: list[Applied] = []
        for op in ops:
            version += 1
            k = (op.namespace, op.key)
            if op.kind == SET:
                final[k] = (op.payload, version)
                results.append(Applied(version))
            elif op.kind == DELETE:
                final[k] = None
                results.append(Applied(version))
            else:
                if k in final:
                    last = final[k]
                    current = self._counter(op.key, last[0] if last is not None else None,
                                            last is not None)
                else:
                    current = self._counter(op.key, stored.get(k), k in stored)
                new = current + op.delta
                final[k] = (self.serializer.dumps(new), version)
                results.append(Applied(version, new))
        self._write(conn, now, final, expires)
        if journal is not None:
            self._mark(conn, ops, journal)
        return results

    def _apply_versioned(self, conn: sa.Connection, ops: Sequence[Op],
                         journal: JournalMark | None, before: int, now: float,
                         expires: dict[Key, float | None] | None) -> list[Applied]:
        """A batch holding versioned ops (see :mod:`cacheway.stores.sqlalchemy.versions`)."""
        keys = {(op.namespace, op.key) for op in ops if op.version is not None or op.kind == ADD}
        stored: dict[Key, tuple[bytes | None, int]] = {}
        for ns, names in _by_namespace(keys).items():
            for i in range(0, len(names), _CHUNK):
                params = {"ns": ns, "keys": names[i : i + _CHUNK]}
                for key, value, version in conn.execute(self._select_versions, params):
                    stored[(ns, key)] = (_bytes(value), int(version))
        results, final, top = plan_versioned(ops, before, stored, self._counter,
                                             self.serializer.dumps)
        self._write(conn, now, final, expires)
        conn.execute(self._raise_counter, {"top": top})
        if journal is not None:
            self._mark(conn, ops, journal)
        return results

    def _lock_rows(self, conn: sa.Connection, keys: set[Key]) -> dict[Key, bytes | None]:
        found: dict[Key, bytes | None] = {}
        for ns, names in _by_namespace(keys).items():
            for i in range(0, len(names), _CHUNK):
                params = {"ns": ns, "keys": names[i : i + _CHUNK]}
                for key, value in conn.execute(self._select_locked, params):
                    found[(ns, key)] = _bytes(value)
        return found

    def _counter(self, key: str, payload: bytes | None, exists: bool) -> int:
        if not exists or payload is None:  # no row, or a versioned delete's tombstone
            return 0
        try:
            current = self.serializer.loads(payload)
        except Exception as exc:  # any undecodable value is "not an integer"
            raise StoreError(f"cannot add to key {key!r}: its stored value does not decode: "
                             f"{exc!r}") from exc
        if isinstance(current, bool) or not isinstance(current, int):
            raise InvalidWriteError(
                f"cannot add to key {key!r}: its stored value {current!r} is not an integer"
            )
        return current

    def _write(
        self, conn: sa.Connection, now: float, final: dict[Key, tuple[bytes | None, int] | None],
        expires: dict[Key, float | None] | None = None,
    ) -> None:
        """Write each key's final row; ``expires``: each key's last op's expiry (every
        row written ends its old one)."""
        import sqlalchemy as sa_

        at = expires if expires is not None else {}
        rows = [
            {"namespace": ns, "key": key, "value": v[0], "version": v[1], "updated_at": now,
             "expires_at": at.get((ns, key))}
            for (ns, key), v in final.items()
            if v is not None
        ]
        gone = {k for k, v in final.items() if v is None}
        if rows and self._upsert_rows is None:
            gone.update(k for k, v in final.items() if v is not None)  # delete, then insert
        for ns, names in _by_namespace(gone).items():
            for i in range(0, len(names), _CHUNK):
                conn.execute(self._delete, {"ns": ns, "keys": names[i : i + _CHUNK]})
        if rows:
            conn.execute(
                self._upsert_rows if self._upsert_rows is not None else sa_.insert(self._t), rows
            )


#: Width of the meta table's name column: 191 utf8mb4 characters = 764 bytes, under
#: InnoDB's 767-byte prefix.
NAME_LEN = 191


def _by_namespace(keys: Iterable[Key]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ns, key in keys:
        out.setdefault(ns, []).append(key)
    return out
