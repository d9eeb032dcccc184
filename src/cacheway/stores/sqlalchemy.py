"""SQLAlchemyStore: any database SQLAlchemy 2 speaks to (MySQL/MariaDB, PostgreSQL, SQLite, ...).

Row mode (``key_column=``, ``columns=``, ``version_column=``) maps dict values onto the
columns of an existing table instead of a key/value table (see
:mod:`cacheway.stores.sqlalchemy_rows`).

>>> import tempfile, os
>>> store = SQLAlchemyStore("sqlite:///" + os.path.join(tempfile.mkdtemp(), "app.db"))
>>> store.save_many({"a": 1})
>>> store.load("a")
1
>>> store.close()
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import ClosedError, ConfigError, InvalidWriteError, StoreError
from ..serializers import JSONSerializer, Serializer
from ._errors import is_permanent, storable_text
from ._fork import track
from ._pg_helpers import MAX_KEY_BYTES
from ._sa_engine import import_sqlalchemy, make_engine
from ._sa_marks import VERSION_ROW, advance, read_marks, write_mark
from ._sa_versions import plan_versioned
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
    import sqlalchemy as sa

    from .sqlalchemy_rows import SQLAlchemyRows

__all__ = ["SQLAlchemyStore"]

_CHUNK = 500
_NS_LEN = 255
_NS_LEN_MYSQL = 191  # 191 utf8mb4 characters = 764 bytes, under InnoDB's 767-byte prefix
_JOURNAL_LEN = 64
_MYSQL_KEY_BYTES = 3072  # InnoDB's limit on one index with DYNAMIC rows
# "_applied" is the longest suffix; PostgreSQL cuts names at 63 bytes, MySQL at 64.
_MAX_TABLE = 63 - len("_applied")

Key = tuple[str, str]
Merge = Callable[[Any, Any], Any]


def _bytes(value: Any) -> bytes | None:
    return value if value is None or isinstance(value, bytes) else bytes(value)


class SQLAlchemyStore(StoreBase):
    """Keys and values in one table ``(namespace, key, value, version, updated_at)`` of any
    database SQLAlchemy 2 Core reaches; tested on MariaDB, PostgreSQL and SQLite.

    Every applied write and delete is stamped with a version from a counter row in
    ``{table}_meta`` that only grows (so versions survive deletes); each batch is one
    transaction that locks that row first, so counters added from many processes sum
    correctly and journal marks land with the batch they describe.

    ``engine_or_url`` is an ``sqlalchemy.Engine`` (it stays the caller's: ``close()``
    leaves it open) or a URL such as ``"mysql+pymysql://user:pw@host/db"`` (the store
    builds the engine and disposes of it on ``close()``). ``key_length`` is the width of
    the key column when the table is created (at most 513 on MySQL/MariaDB, where
    utf8mb4 keys must fit InnoDB's index limit); ``max_key_chars`` is what the tables
    found take (a table made earlier with another ``key_length`` keeps its width), and
    a longer key is refused with :class:`~cacheway.InvalidWriteError`. ``timeout``
    bounds the calls of an engine built from a URL: the wait for a pooled connection,
    and each read and write of the driver's socket where the driver has a timeout
    (pymysql, mysqlclient, MariaDB Connector: a stalled server fails the call with
    ``StoreError`` instead of hanging; see :mod:`cacheway.stores._sa_engine`). Keys compare
    byte for byte on every database (MySQL/MariaDB get a binary, no-pad collation), so
    ``"A"``, ``"a"`` and ``"a "`` are three keys.

    Row mode (``key_column=``, ``columns=``, ``version_column=``) maps dict values to
    the columns of an existing table; it has no namespace column, so the namespace of
    an op is ignored (give each namespace its own table); counters are not supported;
    without ``version_column=`` the store is unversioned.

    >>> import tempfile, os, sqlalchemy
    >>> engine = sqlalchemy.create_engine("sqlite:///" + os.path.join(tempfile.mkdtemp(), "x.db"))
    >>> with SQLAlchemyStore(engine, table="items") as store:
    ...     store.save_many({"a": [1, 2]}, namespace="views")
    ...     store.load("a", namespace="views")
    [1, 2]
    """

    versioned = True

    def __init__(
        self,
        engine_or_url: sa.Engine | str,
        table: str = "cacheway",
        *,
        key_column: str | None = None,
        columns: Sequence[str] | None = None,
        version_column: str | None = None,
        serializer: Serializer | None = None,
        key_length: int = 255,
        timeout: float = 30.0,
    ) -> None:
        sa_ = import_sqlalchemy()
        self.table = validate_identifier(table)
        self.serializer = serializer if serializer is not None else JSONSerializer()
        self._rows: SQLAlchemyRows | None = None
        if key_column is not None or columns is not None or version_column is not None:
            from .sqlalchemy_rows import SQLAlchemyRows
            from .sqlite_rows import RowSpec

            spec = RowSpec("SQLAlchemyStore", table, key_column, columns, version_column)
            self._rows = SQLAlchemyRows(spec, self.serializer)
            self.versioned = spec.versioned
        elif len(table) > _MAX_TABLE:
            raise ConfigError(
                f"table name {table!r} is too long: at most {_MAX_TABLE} characters, so that "
                f"'{table}_applied' fits the 63-character limit of PostgreSQL and MySQL"
            )
        if isinstance(key_length, bool) or not isinstance(key_length, int) or key_length < 1:
            raise ConfigError(f"key_length must be an int >= 1, not {key_length!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(f"timeout must be a number of seconds > 0, not {timeout!r}")
        self._timeout = float(timeout)
        self.key_length = key_length
        self._error_type: type[Exception] = sa_.exc.SQLAlchemyError
        self._lock = threading.Lock()
        self._closed = False
        self._batches = itertools.count(1)
        self._engine, self._owned = make_engine(sa_, engine_or_url, self._timeout)
        track(self)
        url = self._engine.url
        self.url: str = url.render_as_string(hide_password=True)
        self._password: str | None = url.password
        try:
            self._open(sa_)
        except BaseException as exc:
            if self._owned:
                self._engine.dispose()
            if isinstance(exc, sa_.exc.SQLAlchemyError):
                raise self._error(f"opening table {self.table!r} at", exc) from exc
            raise


    @property
    def validate(self) -> Callable[[str, str, Any, int], Any] | None:
        """In row mode, checks a write at the call and returns the row the cache keeps."""
        rows = self._rows
        if rows is None:
            return None
        spec = rows.spec
        return lambda ns, key, value, kind: spec.normalize(ns, key, value, kind, False)

    def __repr__(self) -> str:
        return f"SQLAlchemyStore({self.url!r}, table={self.table!r})"

    @property
    def atomic_add(self) -> bool:
        return self._rows is None

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine the store runs on (yours if you passed it in)."""
        return self._engine

    # -- engine and tables -------------------------------------------------------------
    def _open(self, sa_: Any) -> None:
        with self._engine.connect():
            pass  # reach the server first: its dialect (MariaDB or MySQL) picks the collation
        dialect = self._engine.dialect
        self._kind = dialect.name if dialect.name in ("postgresql", "sqlite") else "other"
        if dialect.name in ("mysql", "mariadb"):
            self._kind = "mysql"
        self._ns_len = _NS_LEN_MYSQL if self._kind == "mysql" else _NS_LEN
        table_kw: dict[str, str] = {}
        if self._kind == "mysql":
            most = (_MYSQL_KEY_BYTES // 4) - self._ns_len - _JOURNAL_LEN
            if self.key_length > most:
                raise ConfigError(
                    f"key_length={self.key_length} is too long for MySQL/MariaDB: at most "
                    f"{most} utf8mb4 characters fit InnoDB's {_MYSQL_KEY_BYTES}-byte key limit"
                )
            # A "mariadb://" URL reads the mariadb_ spelling, "mysql://" the mysql_ one.
            options = {"engine": "InnoDB", "charset": "utf8mb4",
                       "collate": self._mysql_collation()}
            table_kw = {f"{p}_{k}": v for k, v in options.items() for p in ("mysql", "mariadb")}
        if self._kind == "postgresql":
            self.max_key_bytes = MAX_KEY_BYTES  # the btree entry limit (see _pg_helpers)
            self.keys_take_nul = False
        if self._rows is not None:
            self._rows.open(self._engine, self._kind, table_kw, self._ns_len, self.key_length)
            self.max_key_chars = self._rows.max_key_chars
            return
        self._define(sa_, table_kw)
        self._create(sa_)
        # The tables may be older than this store, made with another key_length.
        self.max_key_chars = self._reflect_key_length(sa_, [self._t.name, self._a.name])

    def _mysql_collation(self) -> str:
        # Keys compare byte for byte: a *_ci collation would merge "A" and "a", and a
        # PAD SPACE one "a" and "a ".
        dialect: Any = self._engine.dialect
        if getattr(dialect, "is_mariadb", False):
            return "utf8mb4_nopad_bin"
        if (dialect.server_version_info or (0,)) >= (8, 0, 17):
            return "utf8mb4_0900_bin"
        return "utf8mb4_bin"

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
            col("key", string(self.key_length), primary_key=True, nullable=False),
            col("value", blob, nullable=True),
            col("version", big, nullable=False),
            col("updated_at", sa_.Double(), nullable=False),
            **table_kw,
        )
        m = sa_.Table(
            f"{self.table}_meta", md,
            col("name", string(_NS_LEN_MYSQL), primary_key=True, nullable=False),
            col("value", big, nullable=False),
            **table_kw,
        )
        a = sa_.Table(
            f"{self.table}_applied", md,
            col("journal", string(_JOURNAL_LEN), primary_key=True, nullable=False),
            col("namespace", string(self._ns_len), primary_key=True, nullable=False),
            col("key", string(self.key_length), primary_key=True, nullable=False),
            col("seq", big, nullable=False),
            **table_kw,
        )
        self._md, self._t, self._m, self._a = md, t, m, a
        bind = sa_.bindparam
        keys = bind("keys", expanding=True)
        in_ns = (t.c.namespace == bind("ns")) & t.c.key.in_(keys)
        # A NULL value is the tombstone of a versioned delete: no row to a reader.
        self._select = sa_.select(t.c.key, t.c.value, t.c.version).where(
            in_ns & t.c.value.isnot(None))
        # FOR UPDATE: MySQL's REPEATABLE READ would otherwise read an older snapshot.
        self._select_locked = sa_.select(t.c.key, t.c.value).where(in_ns).with_for_update()
        self._select_versions = sa_.select(t.c.key, t.c.value, t.c.version).where(
            in_ns).with_for_update()
        self._raise_counter = sa_.update(m).where(
            (m.c.name == VERSION_ROW) & (m.c.value < bind("top"))).values(value=bind("top"))
        self._delete = sa_.delete(t).where(in_ns)
        self._greatest: Merge = sa_.func.max if self._kind == "sqlite" else sa_.func.greatest
        self._upsert_rows = self._upsert(
            sa_, t, {c: (lambda old, new: new) for c in ("value", "version", "updated_at")}
        )
        self._upsert_meta = self._upsert(sa_, m, {"value": self._greatest})
        self._upsert_applied = self._upsert(sa_, a, {"seq": self._greatest})

    def _upsert(self, sa_: Any, table: sa.Table, merge: dict[str, Merge]) -> Any:
        """An INSERT that merges into an existing row, or None where the dialect has none."""
        if self._kind == "mysql":
            from sqlalchemy.dialects.mysql import insert as mysql_insert

            ins = mysql_insert(table)
            return ins.on_duplicate_key_update(
                {c: f(table.c[c], ins.inserted[c]) for c, f in merge.items()}
            )
        if self._kind not in ("postgresql", "sqlite"):
            return None
        from sqlalchemy.dialects import postgresql, sqlite

        dialect: Any = postgresql if self._kind == "postgresql" else sqlite
        conflict = dialect.insert(table)
        return conflict.on_conflict_do_update(
            index_elements=list(table.primary_key.columns),
            set_={c: f(table.c[c], conflict.excluded[c]) for c, f in merge.items()},
        )

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

    def _reflect_key_length(self, sa_: Any, tables: list[str]) -> int:
        """The shortest ``key`` column of ``tables`` as the database has it."""
        inspector = sa_.inspect(self._engine)
        found = [self.key_length]
        for name in tables:
            for col in inspector.get_columns(name):
                length = getattr(col["type"], "length", None)
                if col["name"] == "key" and isinstance(length, int):
                    found.append(length)
        return min(found)

    def _check(self) -> None:
        if self._closed:
            raise ClosedError(f"{self!r} is closed")

    def _error(self, what: str, exc: BaseException, write: bool = False) -> StoreError:
        """``exc`` as a StoreError; with ``write``, an error about the data written (a
        value too long, a constraint) is an :class:`InvalidWriteError`."""
        orig = getattr(exc, "orig", None)
        detail = f"{type(orig).__name__}: {orig}" if orig is not None else str(exc)
        if self._password:
            detail = detail.replace(self._password, "***")
        permanent = write and is_permanent(orig if orig is not None else exc)
        kind = InvalidWriteError if permanent else StoreError
        return kind(f"SQLAlchemyStore {what} {self.url} failed: {detail}")

    # -- the store protocol ------------------------------------------------------------
    def fetch(self, namespace: str, keys: Sequence[str]) -> dict[str, Loaded]:
        self._check()
        out: dict[str, Loaded] = {}
        if not keys:
            return out
        wanted = list(dict.fromkeys(keys))
        # Text the database cannot hold (a lone surrogate, NUL on PostgreSQL) names no row.
        nul = self.keys_take_nul
        wanted = [k for k in wanted if storable_text(k, nul)]
        if not wanted or not storable_text(namespace, nul):
            return out
        try:
            if self._rows is not None:
                return self._rows.fetch(wanted)
            with self._engine.connect() as conn:
                for i in range(0, len(wanted), _CHUNK):
                    params = {"ns": namespace, "keys": wanted[i : i + _CHUNK]}
                    for key, value, version in conn.execute(self._select, params):
                        out[key] = Loaded(_bytes(value), NOTSET, int(version))
        except self._error_type as exc:
            raise self._error(f"load from {self.table!r} at", exc) from exc
        return out

    def apply(
        self, ops: Sequence[Op], *, journal: JournalMark | None = None
    ) -> list[Applied]:
        self._check()
        if not ops and journal is None:
            return []
        try:
            if self._rows is not None:
                return self._rows.apply(ops, journal)
            self._check_ops(ops, journal)
            with self._engine.begin() as conn:
                return self._apply_in(conn, ops, journal)
        except self._error_type as exc:
            raise self._error(f"write to {self.table!r} at", exc, write=True) from exc
        except UnicodeEncodeError as exc:  # text no database takes
            raise self._error(f"write to {self.table!r} at", exc, write=True) from None

    def _check_ops(self, ops: Sequence[Op], journal: JournalMark | None) -> None:
        for op in ops:
            if op.kind not in (SET, DELETE, ADD):
                raise ConfigError(f"unknown op kind {op.kind!r}")
            if len(op.namespace) > self._ns_len:
                raise InvalidWriteError(
                    f"namespace {op.namespace[:40]!r}... is longer than {self._ns_len} characters"
                )
            check_key(self, op.namespace, op.key)
        if journal is not None:
            if len(journal.seqs) != len(ops):
                raise ConfigError(
                    f"journal mark has {len(journal.seqs)} seqs for a batch of {len(ops)} ops"
                )
            if len(journal.journal_id) > _JOURNAL_LEN:
                raise ConfigError(f"journal id {journal.journal_id!r} is over {_JOURNAL_LEN} chars")

    def _apply_in(
        self, conn: sa.Connection, ops: Sequence[Op], journal: JournalMark | None
    ) -> list[Applied]:
        version = advance(conn, self._engine, self._m, len(ops))
        now = time.time()
        if has_versions(ops):
            return self._apply_versioned(conn, ops, journal, version, now)
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
        self._write(conn, now, final)
        if journal is not None:
            write_mark(conn, self._m, self._a, self._upsert_meta, self._upsert_applied, ops,
                       journal, trim=next(self._batches) % 64 == 0)
        return results

    def _apply_versioned(self, conn: sa.Connection, ops: Sequence[Op],
                         journal: JournalMark | None, before: int, now: float
                         ) -> list[Applied]:
        """A batch holding versioned ops (see :mod:`cacheway.stores._sa_versions`)."""
        keys = {(op.namespace, op.key) for op in ops if op.version is not None or op.kind == ADD}
        stored: dict[Key, tuple[bytes | None, int]] = {}
        for ns, names in _by_namespace(keys).items():
            for i in range(0, len(names), _CHUNK):
                params = {"ns": ns, "keys": names[i : i + _CHUNK]}
                for key, value, version in conn.execute(self._select_versions, params):
                    stored[(ns, key)] = (_bytes(value), int(version))
        results, final, top = plan_versioned(ops, before, stored, self._counter,
                                             self.serializer.dumps)
        self._write(conn, now, final)
        conn.execute(self._raise_counter, {"top": top})
        if journal is not None:
            write_mark(conn, self._m, self._a, self._upsert_meta, self._upsert_applied, ops,
                       journal, trim=next(self._batches) % 64 == 0)
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
        self, conn: sa.Connection, now: float, final: dict[Key, tuple[bytes | None, int] | None]
    ) -> None:
        import sqlalchemy as sa_

        rows = [
            {"namespace": ns, "key": key, "value": v[0], "version": v[1], "updated_at": now}
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

    def applied_state(self, journal_id: str) -> tuple[int, dict[tuple[str, str], int]]:
        self._check()

        try:
            if self._rows is not None:
                return self._rows.applied_state(journal_id)
            with self._engine.connect() as conn:
                return read_marks(conn, self._m, self._a, journal_id)
        except self._error_type as exc:
            raise self._error("read of journal marks from", exc) from exc

    def after_fork_in_child(self) -> None:
        """A forked child opens connections of its own: the pool forgets the inherited
        ones without closing them (SQLAlchemy's own advice for fork), a passed-in engine
        too, since the child must not talk over the parent's sockets."""
        self._lock = threading.Lock()
        self._engine.dispose(close=False)

    def close(self) -> None:
        """Stop using the store; an engine built from a URL is disposed of, one passed
        in is left to its owner."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._owned:
            self._engine.dispose()


def _by_namespace(keys: Iterable[Key]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ns, key in keys:
        out.setdefault(ns, []).append(key)
    return out
