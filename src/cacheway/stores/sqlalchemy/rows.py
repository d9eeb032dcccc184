"""Row mode of :class:`~cacheway.stores.sqlalchemy.SQLAlchemyStore`: keys map to the rows
of an existing table, values are dicts of its columns.

``SQLAlchemyStore(engine, table="users", key_column="id", columns=["name", "email"])``
reflects the table (it is never created), reads ``{"name": ..., "email": ...}`` for a
key and upserts the columns a dict names; columns a dict leaves out keep their values on
update. The key column needs a primary key or a unique constraint/index of its own.
Upserts are ``INSERT ... ON DUPLICATE KEY UPDATE`` on MySQL/MariaDB (which fires on any
unique key of the table) and ``INSERT ... ON CONFLICT (key_column)`` on PostgreSQL and
SQLite; other dialects run UPDATE, then INSERT where no row matched. Deleting a key
deletes its row; counters (``incr``) are not supported; the namespace of an op is
ignored (give each namespace its own table).

Values are bound through the reflected column types, so SQLAlchemy converts them as it
does for any Core insert (a JSON column takes a dict; a ``DATETIME`` column on SQLite
wants a ``datetime``, and a string fails the write with ``StoreError``). An integer key
column takes keys that are canonical decimal integers (``"7"``, not ``"07"``) and binds
them as ``int``; other key columns get the key string. Keys compare as the key column's
collation says: use a binary collation on MySQL/MariaDB for exact keys.

With ``version_column=`` every applied write and delete takes a version from a counter
row in ``{table}_cw_meta`` (created with the store, started above the column's current
maximum), locked and advanced first in each batch's transaction, and sets stamp it into
that column: the store is then versioned. Journal marks go to ``{table}_cw_meta`` and
``{table}_cw_applied``, created before the first marked batch (MySQL commits implicitly
around DDL, so not inside it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...errors import ConfigError, InvalidWriteError
from ...serializers import Serializer
from ..base import DELETE, Applied, JournalMark, Loaded, Op, ValidateFn, has_versions
from ..marks import Trim, check_mark
from ..rows import TOMBSTONES, RowSpec, canonical_int, plan
from .kv import JOURNAL_LEN, NAME_LEN
from .marks import VERSION_ROW, advance, merge_max, read_marks, write_mark
from .upsert import greatest, newer, upsert

if TYPE_CHECKING:
    import sqlalchemy as sa

__all__ = ["SQLAlchemyRows"]

_CHUNK = 500


class SQLAlchemyRows:
    """The statements of row mode for one table; :class:`SQLAlchemyStore` calls them and
    turns ``SQLAlchemyError`` into ``StoreError``."""

    def __init__(self, spec: RowSpec, serializer: Serializer) -> None:
        if len(spec.applied) > 63:
            raise ConfigError(
                f"table name {spec.table!r} is too long for row mode: its companion table "
                f"{spec.applied!r} would exceed the 63-character names of PostgreSQL and MySQL"
            )
        self.spec = spec
        self.serializer = serializer
        self.versioned = spec.versioned
        self.int_key = False
        self._kind = "other"
        self._key_length = 255
        self._ns_len = 255
        self.max_key_chars: int | None = None
        self._marks_ready = False
        self._mark_lock = threading.Lock()
        self._trim = Trim()
        self._upserts: dict[tuple[str, ...], Any] = {}

    atomic_add = False  # counters are not supported
    expires = False  # no expiry column: a namespace cannot expire=

    def purge_expired(self, limit: int) -> int:
        raise ConfigError(f"{self.spec.table!r} is a row-mode table: it has no expiry")

    @property
    def validate(self) -> ValidateFn:
        """Checks a write at the call and returns the row the cache keeps."""
        spec = self.spec
        return lambda ns, key, value, kind: spec.normalize(ns, key, value, kind, False)

    # -- construction -------------------------------------------------------------------
    def open(self, engine: sa.Engine, kind: str, table_kw: dict[str, str], ns_len: int,
             key_length: int) -> None:
        """Reflect and check the table; define the companion tables; with a version
        column, create ``{table}_cw_meta`` and its counter row."""
        import sqlalchemy

        sa_: Any = sqlalchemy
        s = self.spec
        self._engine, self._kind = engine, kind
        self._ns_len, self._key_length = ns_len, key_length
        md = sa_.MetaData()
        try:
            t = sa_.Table(s.table, md, autoload_with=engine)
        except sa_.exc.NoSuchTableError:
            s.missing([], False)
            raise  # unreachable: missing() raised
        s.missing([c.name for c in t.columns], True)
        s.require([c.name for c in t.columns if not c.nullable])
        key = t.c[s.key_column]
        self.int_key = isinstance(key.type, sa_.Integer)
        # A key must fit the key column and the journal marks' key (key_length).
        width = getattr(key.type, "length", None)
        self.max_key_chars = min(key_length, width) if isinstance(width, int) else key_length
        if s.version_column is not None:
            vtype = t.c[s.version_column].type
            numeric_int = (isinstance(vtype, sa_.Numeric) and not isinstance(vtype, sa_.Float)
                           and getattr(vtype, "scale", None) == 0)
            if not (isinstance(vtype, sa_.Integer) or numeric_int):
                raise ConfigError(f"version_column {s.version_column!r} of {s.table!r} is "
                                  f"{vtype}, not an integer type")
        if not self._unique(sa_, engine):
            raise s.not_unique()
        self._t = t
        self._m = sa_.Table(
            s.meta, md,
            sa_.Column("name", sa_.String(NAME_LEN), primary_key=True, nullable=False),
            sa_.Column("value", sa_.BigInteger, nullable=False),
            **table_kw,
        )
        self._a = sa_.Table(
            s.applied, md,
            sa_.Column("journal", sa_.String(JOURNAL_LEN), primary_key=True, nullable=False),
            sa_.Column("namespace", sa_.String(ns_len), primary_key=True, nullable=False),
            sa_.Column("key", sa_.String(key_length), primary_key=True, nullable=False),
            sa_.Column("seq", sa_.BigInteger, nullable=False),
            **table_kw,
        )
        keys = sa_.bindparam("keys", expanding=True)
        cols = [t.c[c] for c in s.columns]
        if s.version_column is not None:
            cols.append(t.c[s.version_column])
        self._select = sa_.select(key, *cols).where(key.in_(keys))
        self._delete = sa_.delete(t).where(key.in_(keys))
        if s.version_column is not None:
            self._create(sa_, [self._m])
            self._start_version(sa_)

    def _unique(self, sa_: Any, engine: sa.Engine) -> bool:
        s = self.spec
        inspector = sa_.inspect(engine)
        want = [s.key_column]
        if list(inspector.get_pk_constraint(s.table).get("constrained_columns") or []) == want:
            return True
        try:
            uniques = inspector.get_unique_constraints(s.table)
        except NotImplementedError:
            uniques = []
        if any(list(u.get("column_names") or []) == want for u in uniques):
            return True
        return any(ix.get("unique") and list(ix.get("column_names") or []) == want
                   and not (ix.get("dialect_options") or {}).get("postgresql_where")
                   and not (ix.get("dialect_options") or {}).get("sqlite_where")
                   for ix in inspector.get_indexes(s.table))

    def _create(self, sa_: Any, tables: list[sa.Table]) -> None:
        md = tables[0].metadata
        for attempt in range(6):
            try:
                md.create_all(self._engine, tables=tables, checkfirst=True)
                return
            except sa_.exc.DBAPIError:
                # Another process created a table between the check and our CREATE.
                inspector = sa_.inspect(self._engine)
                if all(inspector.has_table(t.name) for t in tables):
                    return
                if attempt == 5:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def _start_version(self, sa_: Any) -> None:
        s, m, t = self.spec, self._m, self._t
        assert s.version_column is not None
        with self._engine.begin() as conn:
            top = int(conn.execute(sa_.select(sa_.func.max(t.c[s.version_column]))).scalar()
                      or 0)
            merge_max(conn, m, self._max_upsert(m, "value"),
                      [{"name": VERSION_ROW, "value": top}], "value")

    def _ensure_marks(self) -> None:
        """Create the journal-mark tables at the first mark, not before: a store that
        never sees a journal adds nothing next to the user's table (but ``_cw_meta``
        for versions)."""
        import sqlalchemy as sa_

        with self._mark_lock:
            if not self._marks_ready:
                self._create(sa_, [self._m, self._a])
                self._marks_ready = True

    # -- keys ---------------------------------------------------------------------------
    def _bind(self, key: str) -> str | int | None:
        return canonical_int(key) if self.int_key else key

    # -- reads --------------------------------------------------------------------------
    def sample_keys(self, namespace: str, n: int) -> list[str]:
        """Random keys of the table (row mode has no namespace column: ``namespace`` is
        ignored, as by every read)."""
        import sqlalchemy as sa_

        key = self._t.c[self.spec.key_column]
        rand = sa_.func.rand() if self._kind == "mysql" else sa_.func.random()
        with self._engine.connect() as conn:
            return [str(r[0]) for r in conn.execute(
                sa_.select(key).order_by(rand).limit(n))]

    def fetch(self, namespace: str, keys: Sequence[str]) -> dict[str, Loaded]:
        s = self.spec
        bound: dict[Any, str] = {}
        for key in keys:
            b = self._bind(key)
            if b is not None:
                bound[b] = key
        wanted = list(bound)
        out: dict[str, Loaded] = {}
        n = len(s.columns)
        with self._engine.connect() as conn:
            for i in range(0, len(wanted), _CHUNK):
                for row in conn.execute(self._select, {"keys": wanted[i : i + _CHUNK]}):
                    found = bound.get(row[0])
                    if found is None:
                        found = bound.get(str(row[0]))
                    if found is None:
                        continue
                    version = row[-1] if s.versioned else None
                    out[found] = Loaded(None, dict(zip(s.columns, row[1 : 1 + n])),
                                      None if version is None else int(version))
        return out

    # -- writes -------------------------------------------------------------------------
    def apply(self, ops: Sequence[Op], journal: JournalMark | None) -> list[Applied]:
        """One transaction: the version counter first (when versioned), the ops in order,
        the journal mark. Every value is checked before it begins."""
        s = self.spec
        rows = s.rows(ops, self.serializer, scalars_only=False)
        keys = s.bind_keys(ops, self.int_key, "integer")
        stamped = s.versioned and has_versions(ops)
        if journal is not None:
            self._check_mark(ops, journal)
        if (journal is not None or stamped) and not self._marks_ready:
            self._ensure_marks()  # tombstones live in the mark table too
        with self._engine.begin() as conn:
            version = (advance(conn, self._engine, self._m, len(ops))
                       if s.versioned and ops else None)
            stamps: list[int] = []
            lands: list[bool] = []
            last = 0
            if stamped and version is not None:
                stamps, lands, last = plan(ops, version, self._current(conn, ops, keys))
            results: list[Applied] = []
            run_key: tuple[str, ...] | None = None  # ("",) = delete, else the set's columns
            run: list[Any] = []
            for i, (key, row) in enumerate(zip(keys, rows)):
                if version is not None:
                    version += 1
                if stamps:
                    version = stamps[i]
                    if not lands[i]:
                        results.append(Applied(version, None, False))
                        continue
                this = ("",) if row is None else tuple(row)
                if this != run_key:
                    self._run(conn, run_key, run)
                    run_key, run = this, []
                if row is None:
                    if key is not None:
                        run.append(key)
                else:
                    params = {s.key_column: key, **row}
                    if s.version_column is not None:
                        params[s.version_column] = version
                    run.append(params)
                results.append(Applied(version))
            self._run(conn, run_key, run)
            if stamps:
                self._after_versions(conn, ops, stamps, lands, last)
            if journal is not None:
                self._mark(conn, ops, journal)
        return results

    def _current(self, conn: sa.Connection, ops: Sequence[Op], keys: Sequence[Any]
                 ) -> dict[str, int]:
        """The versions of the keys of the versioned ops: rows (locked), else tombstones
        (see :mod:`cacheway.stores.rows`)."""
        import sqlalchemy as sa_

        s, t, a = self.spec, self._t, self._a
        assert s.version_column is not None
        names = {b: op.key for op, b in zip(ops, keys) if op.version is not None}
        bound = [b for b in names if b is not None]
        key, vcol = t.c[s.key_column], t.c[s.version_column]
        out: dict[str, int] = {}
        for i in range(0, len(bound), _CHUNK):
            query = sa_.select(key, vcol).where(key.in_(bound[i : i + _CHUNK]))
            for b, v in conn.execute(query.with_for_update()):
                name = names.get(b, names.get(str(b)))
                if name is not None and v is not None:
                    out[name] = int(v)
        wanted = list(names.values())
        for i in range(0, len(wanted), _CHUNK):
            query = sa_.select(a.c.key, a.c.seq).where(
                a.c.journal == TOMBSTONES, a.c.namespace == "",
                a.c.key.in_(wanted[i : i + _CHUNK]))
            for name, v in conn.execute(query):
                out[name] = max(int(v), out.get(name, 0))
        return out

    def _after_versions(self, conn: sa.Connection, ops: Sequence[Op], stamps: list[int],
                        lands: list[bool], top: int) -> None:
        """Tombstones of the versioned deletes that landed; the counter raised to ``top``."""
        merge_max(conn, self._a, self._max_upsert(self._a, "seq"), [
            {"journal": TOMBSTONES, "namespace": "", "key": op.key, "seq": v}
            for op, v, ok in zip(ops, stamps, lands)
            if ok and op.kind == DELETE and op.version is not None], "seq")
        merge_max(conn, self._m, self._max_upsert(self._m, "value"),
                  [{"name": VERSION_ROW, "value": top}], "value")

    def _check_mark(self, ops: Sequence[Op], journal: JournalMark) -> None:
        check_mark(ops, journal)
        if len(journal.journal_id) > JOURNAL_LEN:
            raise ConfigError(f"journal id {journal.journal_id!r} is over {JOURNAL_LEN} chars")
        for op in ops:
            if len(op.key) > self._key_length or len(op.namespace) > self._ns_len:
                raise InvalidWriteError(
                    f"key {op.key[:40]!r} (namespace {op.namespace[:40]!r}) is too long for "
                    f"the journal marks of {self.spec.table!r} (key_length="
                    f"{self._key_length}, namespaces up to {self._ns_len} characters)"
                )

    def _run(self, conn: sa.Connection, run_key: tuple[str, ...] | None, run: list[Any]
             ) -> None:
        """Execute one run of consecutive ops of the same shape."""
        import sqlalchemy as sa_

        if run_key is None or not run:
            return
        if run_key == ("",):
            for i in range(0, len(run), _CHUNK):
                conn.execute(self._delete, {"keys": run[i : i + _CHUNK]})
            return
        stmt = self._upsert(run_key)
        if stmt is not None:
            conn.execute(stmt, run)
            return
        # No upsert in this dialect: UPDATE, then INSERT where no row matched.
        s, t = self.spec, self._t
        key = t.c[s.key_column]
        for params in run:
            values = {c: v for c, v in params.items() if c != s.key_column}
            matched = 0
            if values:
                matched = conn.execute(
                    sa_.update(t).where(key == params[s.key_column]).values(values)).rowcount
            elif conn.execute(sa_.select(key).where(key == params[s.key_column])).first():
                matched = 1
            if matched == 0:
                conn.execute(sa_.insert(t), [params])

    def _upsert(self, cols: tuple[str, ...]) -> Any:
        """The INSERT merging ``cols`` (and the version) into an existing row, or None
        where the dialect has no upsert."""
        if cols in self._upserts:
            return self._upserts[cols]
        s, t = self.spec, self._t
        names = [*cols, *([s.version_column] if s.version_column is not None else [])]
        stmt = upsert(self._kind, t, dict.fromkeys(names, newer), [t.c[s.key_column]])
        self._upserts[cols] = stmt
        return stmt

    def _mark(self, conn: sa.Connection, ops: Sequence[Op], mark: JournalMark) -> None:
        write_mark(conn, self._m, self._a, self._max_upsert(self._m, "value"),
                   self._max_upsert(self._a, "seq"), ops, mark, trim=self._trim.due())

    def _max_upsert(self, table: sa.Table, column: str) -> Any:
        """This dialect's insert that keeps the larger ``column`` on conflict, or None
        (then :func:`merge_max` updates or inserts row by row)."""
        return upsert(self._kind, table, {column: greatest(self._kind)})

    def applied_state(self, journal_id: str) -> tuple[int, dict[tuple[str, str], int]]:
        if not self._marks_ready:
            self._ensure_marks()
        with self._engine.connect() as conn:
            return read_marks(conn, self._m, self._a, journal_id)
