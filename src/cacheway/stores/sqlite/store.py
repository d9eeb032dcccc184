"""SQLiteStore: the embedded default store (stdlib ``sqlite3``, WAL mode, durable on return).

The store owns the connections (a writer under a lock, a small pool of WAL readers)
and delegates the SQL to a mapping chosen at construction: key/value
(:mod:`cacheway.stores.sqlite.kv`) or row mode (``key_column=``, ``columns=``,
``version_column=``: dict values onto the columns of an existing table, see
:mod:`cacheway.stores.sqlite.rows`).

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
from typing import Protocol, TypeVar

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
    validate_identifier,
)
from ..rows import RowSpec, row_mode
from .kv import SQLiteKV
from .rows import SQLiteRows

__all__ = ["SQLiteMapping", "SQLiteStore"]

_SYNC_MODES = ("FULL", "NORMAL", "EXTRA", "OFF")
_T = TypeVar("_T")
_IDLE_READERS = 8  # reader connections kept open between loads


class SQLiteMapping(Protocol):
    """How keys map to SQL (key/value or row mode): run on the store's connections,
    under its lock for writes; ``sqlite3.Error`` is the store's to translate."""

    versioned: bool
    atomic_add: bool
    expires: bool

    @property
    def validate(self) -> ValidateFn | None: ...

    def purge_expired(self, conn: sqlite3.Connection, limit: int) -> int: ...

    def setup(self, conn: sqlite3.Connection) -> None: ...

    def fetch(self, conn: sqlite3.Connection, ns: str, keys: Sequence[str]
              ) -> dict[str, Loaded]: ...

    def sample_keys(self, conn: sqlite3.Connection, ns: str, n: int) -> list[str]: ...

    def apply(self, conn: sqlite3.Connection, ops: Sequence[Op],
              journal: JournalMark | None, late: Callable[[], bool] | None) -> list[Applied]: ...

    def applied_state(self, conn: sqlite3.Connection, journal_id: str
                      ) -> tuple[int, dict[tuple[str, str], int]]: ...


class SQLiteStore(StoreBase):
    """Keys and values in one SQLite table ``(namespace, key, value, version, updated_at)``.

    Every applied write and delete is stamped with a version from a per-table counter
    that survives deletes; each batch is one transaction (``BEGIN IMMEDIATE``), so
    counters added from many processes sum correctly. ``synchronous="FULL"`` (the
    default) makes a write durable when ``apply`` returns; ``"NORMAL"`` trades the last
    transactions on power loss for speed; ``"EXTRA"`` is SQLite's FULL plus a directory
    sync in rollback-journal modes (under WAL, as FULL); ``"OFF"`` never syncs (an OS
    crash or power loss can corrupt the file: for scratch data and tests only). Any
    other value raises ``ConfigError``.

    Row mode (``key_column=``, ``columns=``, ``version_column=``) maps dict values to
    the columns of an existing table; it has no namespace column, so the namespace of
    an op is ignored (give each namespace its own table); counters are not supported;
    without ``version_column=`` the store is unversioned.
    """

    versioned = True
    takes_late = True
    low_water_marks = True  # journal marks of the low water alone (a queue consumer's)
    fenced_marks = True  # JournalMark.after checked in the batch's transaction

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
        self._mapping: SQLiteMapping
        if row_mode(key_column, columns, version_column):
            spec = RowSpec("SQLiteStore", table, key_column, columns, version_column)
            self._mapping = SQLiteRows(spec, self.serializer)
        else:
            self._mapping = SQLiteKV(self.table, self.serializer)
        self.versioned = self._mapping.versioned
        self._inherited: list[sqlite3.Connection] = []  # a parent's, after a fork
        with GATE:  # every call into SQLite: see stores/_fork.py
            try:
                self._conn = self._connect()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot open SQLite store {self.path!r}: {exc}") from exc
            try:
                self._create()
            except BaseException as exc:
                self._conn.close()
                if isinstance(exc, sqlite3.Error):
                    raise StoreError(
                        f"cannot open SQLite store {self.path!r}: {exc}") from exc
                raise
        if not self._memory:  # an in-memory database cannot be shared with a child anyway
            track(self)

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r}, table={self.table!r})"

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
            with GATE, self._lock:
                return self._mapping.purge_expired(self._conn, limit)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite purge of expired rows of {self.table!r} failed: "
                             f"{exc}") from exc

    # -- connections -------------------------------------------------------------------
    def after_fork_in_child(self) -> None:
        """Fresh connections in a forked child (see ``_fork.py``); the inherited ones are
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
        with self._lock:
            self._mapping.setup(self._conn)

    @property
    def validate(self) -> ValidateFn | None:
        """In row mode, checks a write at the call and returns the row the cache keeps."""
        return self._mapping.validate

    def _check(self) -> None:
        if self._closed:
            raise ClosedError(f"{self!r} is closed")

    # -- the store protocol ------------------------------------------------------------
    def _read(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        """``work`` on a reader connection (the store's own for an in-memory database:
        only it sees the data)."""
        with GATE:
            if self._memory:
                with self._lock:
                    return work(self._conn)
            conn = self._borrow()
            try:
                return work(conn)
            finally:
                self._give_back(conn)

    def fetch(self, namespace: str, keys: Sequence[str]) -> dict[str, Loaded]:
        self._check()
        if not keys:
            return {}
        fetch = self._mapping.fetch
        try:
            return self._read(lambda conn: fetch(conn, namespace, keys))
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite load from {self.table!r} failed: {exc}") from exc
        except UnicodeEncodeError as exc:
            # A key that is not valid text (a lone surrogate) names no row.
            valid = [k for k in keys if storable_text(k)]
            if len(valid) == len(keys) and storable_text(namespace):
                raise StoreError(f"SQLite load from {self.table!r} failed: {exc}") from exc
            return self.fetch(namespace, valid) if valid and storable_text(namespace) else {}

    def sample_keys(self, namespace: str, n: int) -> list[str]:
        """Up to ``n`` random keys of ``namespace`` that hold a value (for the checker)."""
        self._check()
        if n <= 0:
            return []
        sample = self._mapping.sample_keys
        try:
            return self._read(lambda conn: sample(conn, namespace, n))
        except sqlite3.Error as exc:
            raise StoreError(f"listing keys of {self!r} failed: {exc}") from exc

    def apply(
        self, ops: Sequence[Op], *, journal: JournalMark | None = None,
        late: Callable[[], bool] | None = None,
    ) -> list[Applied]:
        """Apply ``ops`` in one transaction. ``late()`` says whether the batch is now
        later than its max_delay: the store then spends more work to get it through busy
        writer threads (see :class:`~cacheway.stores.base.LateAware`)."""
        self._check()
        if not ops and journal is None:
            return []
        try:
            with GATE, self._lock:
                return self._mapping.apply(self._conn, ops, journal, late)
        except (sqlite3.Error, UnicodeEncodeError, OverflowError) as exc:
            # What the batch holds and SQLite refuses (a lone surrogate, a blob over its
            # length limit, a constraint) will be refused again: InvalidWriteError.
            kind = InvalidWriteError if is_permanent(exc) else StoreError
            raise kind(f"SQLite write to {self.table!r} failed: {exc}") from exc

    def applied_state(self, journal_id: str) -> tuple[int, dict[tuple[str, str], int]]:
        self._check()
        try:
            with GATE, self._lock:
                return self._mapping.applied_state(self._conn, journal_id)
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite read of journal marks failed: {exc}") from exc

    def close(self) -> None:
        with GATE, self._lock:
            if self._closed:
                return
            self._closed = True
            for conn in [*self._readers, self._conn]:
                conn.close()
            self._readers.clear()
            self._idle.clear()
