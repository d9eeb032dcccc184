"""SQLAlchemyStore: any database SQLAlchemy 2 speaks to (MySQL/MariaDB, PostgreSQL, SQLite, ...).

The store owns the engine and the errors; a mapping chosen at construction writes the
SQL: key/value (:mod:`cacheway.stores.sqlalchemy.kv`) or row mode (``key_column=``,
``columns=``, ``version_column=``: dict values onto the columns of an existing table,
see :mod:`cacheway.stores.sqlalchemy.rows`). Each dialect's upsert is chosen in
:mod:`cacheway.stores.sqlalchemy.upsert`.

>>> import tempfile, os
>>> store = SQLAlchemyStore("sqlite:///" + os.path.join(tempfile.mkdtemp(), "app.db"))
>>> store.save_many({"a": 1})
>>> store.load("a")
1
>>> store.close()
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ...errors import ClosedError, ConfigError, InvalidWriteError, StoreError
from ...serializers import JSONSerializer, Serializer
from .._errors import is_permanent, storable_text
from .._fork import GATE, track
from ..base import (
    Applied,
    JournalMark,
    Loaded,
    Op,
    StoreBase,
    ValidateFn,
    check_key,
    validate_identifier,
)
from ..postgres.helpers import MAX_KEY_BYTES
from ..rows import RowSpec, row_mode
from .engine import import_sqlalchemy, make_engine
from .kv import JOURNAL_LEN, NS_LEN, SAKeyValue
from .upsert import dialect_kind

if TYPE_CHECKING:
    import sqlalchemy as sa

    from .aio import SAAsyncPath

__all__ = ["SAMapping", "SQLAlchemyStore"]

_NS_LEN_MYSQL = 191  # 191 utf8mb4 characters = 764 bytes, under InnoDB's 767-byte prefix
_MYSQL_KEY_BYTES = 3072  # InnoDB's limit on one index with DYNAMIC rows
# "_applied" is the longest suffix; PostgreSQL cuts names at 63 bytes, MySQL at 64.
_MAX_TABLE = 63 - len("_applied")


class SAMapping(Protocol):
    """How keys map to SQL (key/value or row mode); the store turns ``SQLAlchemyError``
    into ``StoreError``."""

    versioned: bool
    atomic_add: bool
    expires: bool  # keeps data expiry (key/value mode)
    max_key_chars: int | None

    @property
    def validate(self) -> ValidateFn | None: ...

    def open(self, engine: sa.Engine, kind: str, table_kw: dict[str, str], ns_len: int,
             key_length: int) -> None: ...

    def fetch(self, namespace: str, keys: list[str]) -> dict[str, Loaded]: ...

    def sample_keys(self, namespace: str, n: int) -> list[str]: ...

    def purge_expired(self, limit: int) -> int: ...

    def apply(self, ops: Sequence[Op], journal: JournalMark | None) -> list[Applied]: ...

    def applied_state(self, journal_id: str) -> tuple[int, dict[tuple[str, str], int]]: ...


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
    ``StoreError`` instead of hanging; see :mod:`cacheway.stores.sqlalchemy.engine`). Keys compare
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
    low_water_marks = True  # journal marks of the low water alone (a queue consumer's)
    fenced_marks = True  # JournalMark.after checked in the batch's transaction

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
        self._mapping: SAMapping
        if row_mode(key_column, columns, version_column):
            from .rows import SQLAlchemyRows

            spec = RowSpec("SQLAlchemyStore", table, key_column, columns, version_column)
            self._mapping = SQLAlchemyRows(spec, self.serializer)
        elif len(table) > _MAX_TABLE:
            raise ConfigError(
                f"table name {table!r} is too long: at most {_MAX_TABLE} characters, so that "
                f"'{table}_applied' fits the 63-character limit of PostgreSQL and MySQL"
            )
        else:
            self._mapping = SAKeyValue(self.table, self.serializer,
                                       lambda ns, key: check_key(self, ns, key))
        self.versioned = self._mapping.versioned
        if isinstance(key_length, bool) or not isinstance(key_length, int) or key_length < 1:
            raise ConfigError(f"key_length must be an int >= 1, not {key_length!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError(f"timeout must be a number of seconds > 0, not {timeout!r}")
        self._timeout = float(timeout)
        self.key_length = key_length
        self._error_type: type[Exception] = sa_.exc.SQLAlchemyError
        self._lock = threading.Lock()
        self._closed = False
        self._engine, self._owned = make_engine(sa_, engine_or_url, self._timeout)
        track(self)
        url = self._engine.url
        self.url: str = url.render_as_string(hide_password=True)
        self._password: str | None = url.password
        try:
            with GATE:
                self._open(sa_)
        except BaseException as exc:
            if self._owned:
                self._engine.dispose()
            if isinstance(exc, sa_.exc.SQLAlchemyError):
                raise self._error(f"opening table {self.table!r} at", exc) from exc
            raise


    @property
    def validate(self) -> ValidateFn | None:
        """In row mode, checks a write at the call and returns the row the cache keeps."""
        return self._mapping.validate

    def __repr__(self) -> str:
        return f"SQLAlchemyStore({self.url!r}, table={self.table!r})"

    @property
    def atomic_add(self) -> bool:
        return self._mapping.atomic_add

    @property
    def expires(self) -> bool:
        """True in key/value mode: namespaces may ``expire=`` (see
        :class:`~cacheway.stores.base.Expires`); row mode has no expiry column."""
        return self._mapping.expires

    def purge_expired(self, limit: int = 1000) -> int:
        """Delete up to ``limit`` rows whose data has expired; how many it deleted."""
        self._check()
        try:
            with GATE:  # see stores/_fork.py
                return self._mapping.purge_expired(limit)
        except self._error_type as exc:
            raise self._error(f"purge of expired rows of {self.table!r} at", exc,
                              write=True) from exc

    @property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine the store runs on (yours if you passed it in)."""
        return self._engine

    # -- engine and tables -------------------------------------------------------------
    def _open(self, sa_: Any) -> None:
        with self._engine.connect():
            pass  # reach the server first: its dialect (MariaDB or MySQL) picks the collation
        self._kind = dialect_kind(self._engine.dialect.name)
        self._ns_len = _NS_LEN_MYSQL if self._kind == "mysql" else NS_LEN
        table_kw: dict[str, str] = {}
        if self._kind == "mysql":
            most = (_MYSQL_KEY_BYTES // 4) - self._ns_len - JOURNAL_LEN
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
            self.max_key_bytes = MAX_KEY_BYTES  # the btree entry limit (see postgres/helpers.py)
            self.keys_take_nul = False
        self._mapping.open(self._engine, self._kind, table_kw, self._ns_len, self.key_length)
        self.max_key_chars = self._mapping.max_key_chars

    def _mysql_collation(self) -> str:
        # Keys compare byte for byte: a *_ci collation would merge "A" and "a", and a
        # PAD SPACE one "a" and "a ".
        dialect: Any = self._engine.dialect
        if getattr(dialect, "is_mariadb", False):
            return "utf8mb4_nopad_bin"
        if (dialect.server_version_info or (0,)) >= (8, 0, 17):
            return "utf8mb4_0900_bin"
        return "utf8mb4_bin"

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def async_path(self) -> SAAsyncPath | None:
        """A new async path for an AsyncCache (:mod:`cacheway._aio_path`) on MariaDB or
        MySQL: SQLAlchemy's async engine over ``asyncmy`` from this store's URL, built on
        the loop the cache is used from and disposed of when the cache closes (see
        :mod:`.aio`). None (the calls run in worker threads) in row mode, on other
        databases, over an engine passed in, and when the driver is not installed
        (``pip install 'cacheway[sqlalchemy-async]'``)."""
        from .aio import SAAsyncPath, async_driver_installed

        mapping = self._mapping
        if (not self._owned or not isinstance(mapping, SAKeyValue)
                or self._engine.dialect.name not in ("mysql", "mariadb")
                or not async_driver_installed()):
            return None
        size_of = getattr(self._engine.pool, "size", None)  # a QueuePool's, as the sync one
        size = size_of() if callable(size_of) else 5
        return SAAsyncPath(self._engine.url, mapping, timeout=self._timeout, pool_size=size,
                           keys_take_nul=self.keys_take_nul, error=self._error,
                           closed=lambda: self._closed, name=repr(self.table))

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
            with GATE:  # see stores/_fork.py
                return self._mapping.fetch(namespace, wanted)
        except self._error_type as exc:
            raise self._error(f"load from {self.table!r} at", exc) from exc

    def sample_keys(self, namespace: str, n: int) -> list[str]:
        """Up to ``n`` random keys of ``namespace`` that hold a value (for the checker)."""
        self._check()
        if n <= 0 or not storable_text(namespace, self.keys_take_nul):
            return []
        try:
            with GATE:  # see stores/_fork.py
                return self._mapping.sample_keys(namespace, n)
        except self._error_type as exc:
            raise self._error("listing keys of", exc) from exc

    def apply(
        self, ops: Sequence[Op], *, journal: JournalMark | None = None
    ) -> list[Applied]:
        self._check()
        if not ops and journal is None:
            return []
        try:
            with GATE:  # see stores/_fork.py
                return self._mapping.apply(ops, journal)
        except self._error_type as exc:
            raise self._error(f"write to {self.table!r} at", exc, write=True) from exc
        except UnicodeEncodeError as exc:  # text no database takes
            raise self._error(f"write to {self.table!r} at", exc, write=True) from None

    def applied_state(self, journal_id: str) -> tuple[int, dict[tuple[str, str], int]]:
        self._check()

        try:
            with GATE:  # see stores/_fork.py
                return self._mapping.applied_state(journal_id)
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
            with GATE:
                self._engine.dispose()

