"""Row mode, shared by the three SQL stores: keys map to the rows of an existing table,
values are dicts of its columns (``key_column=``, ``columns=``, ``version_column=``).

:class:`RowSpec` holds the names (checked) and the checks and preparation of values;
each store's row mapping (:mod:`cacheway.stores.sqlite.rows`,
:mod:`cacheway.stores.postgres.rows`, :mod:`cacheway.stores.sqlalchemy.rows`) runs its
database's SQL with it.

Versions in row mode (:func:`plan`, :data:`TOMBSTONES`):
Versioned ops (``Op.version``) in the row mode of SQLiteStore and SQLAlchemyStore
(with a ``version_column``): the decisions, taken in Python on versions read in the
batch's transaction (both stores serialize their batches: ``BEGIN IMMEDIATE``, or the
lock of the counter row).

A versioned SET or DELETE lands only when its version is greater than the key's
current one (set-if-newer); otherwise it is skipped and reported ``Applied(<current>,
applied=False)``. The current version of a key is its row's ``version_column``, or,
for a deleted row, its *tombstone*: a versioned DELETE records the key's version in
the journal-mark table ``{table}_cw_applied`` under the reserved journal name
:data:`TOMBSTONES` (the user's table cannot hold a row for a deleted key), so an older
SET arriving later is skipped instead of bringing the row back. Unversioned ops of the
batch are stamped above every version it holds, and the counter ends at least there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import ConfigError, InvalidWriteError
from ..serializers import Serializer
from .base import ADD, DELETE, NOTSET, SET, Op, validate_identifier

__all__ = ["TOMBSTONES", "RowSpec", "canonical_int", "plan", "row_mode"]

_SCALARS = (type(None), bool, int, float, str, bytes)
_INT64 = (-(2**63), 2**63 - 1)


def row_mode(key_column: str | None, columns: Sequence[str] | None,
             version_column: str | None) -> bool:
    """Whether a store's options ask for row mode (any of the three given).

    >>> row_mode(None, None, None), row_mode("id", ["name"], None)
    (False, True)
    """
    return key_column is not None or columns is not None or version_column is not None


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
        self._required: tuple[str, ...] = ()  # mapped columns declared NOT NULL

    def require(self, not_null: Sequence[str]) -> None:
        """The table's NOT NULL columns (read by the store at setup): a write leaving a
        mapped one of them empty is refused at the call, not dropped at a flush."""
        self._required = tuple(c for c in self.columns if c in set(not_null))

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
        self._filled(key, [c for c in self._required if row.get(c) is None])
        return {c: row.get(c) for c in self.columns}

    def _filled(self, key: str, empty: list[str]) -> None:
        if empty:
            raise InvalidWriteError(
                f"value of key {key!r} leaves column(s) {', '.join(empty)} of "
                f"{self.table!r} empty (NULL), which the table refuses (NOT NULL): give "
                "them values")

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
            # (a column left out keeps the row's value here; a cache set gives it None)
            self._filled(op.key, [c for c in self._required if c in row and row[c] is None])
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

    def bind_keys(self, ops: Sequence[Op], int_key: bool, column_type: str
                  ) -> list[str | int | None]:
        """Each op's key as the database gets it: an int for an integer key column
        (``int_key``), else the key string. None where no row can have the key (a
        DELETE of it is a no-op); a SET of such a key raises :class:`InvalidWriteError`
        naming ``column_type``."""
        keys: list[str | int | None] = []
        for op in ops:
            b = canonical_int(op.key) if int_key else op.key
            if b is None and op.kind != DELETE:  # deleting it is a no-op: no row has it
                raise InvalidWriteError(
                    f"key {op.key!r} does not fit the {column_type} key column "
                    f"{self.key_column!r} of {self.table!r}: use the canonical decimal "
                    "spelling of an integer"
                )
            keys.append(b)
        return keys


#: The journal name under which ``{table}_cw_applied`` keeps tombstones (journal ids
#: are hex: no journal can have it); namespace "", seq = the delete's version.
TOMBSTONES = "cw:tombstones"


def plan(ops: Sequence[Op], before: int, current: dict[str, int],
         fresh: Iterator[int] | None = None) -> tuple[list[int], list[bool], int]:
    """(each op's version, whether it lands, the counter's new value) for a batch
    holding versions. ``before``: the counter before the batch; ``current``: the
    versions of the keys of the versioned ops (rows and tombstones), updated here;
    ``fresh``: versions for the unversioned ops (from a sequence already raised above
    the batch's versions), else they count on from the counter."""
    top = max(before, *(op.version for op in ops if op.version is not None))
    stamps: list[int] = []
    lands: list[bool] = []
    for op in ops:
        version = op.version
        if version is None:
            top = next(fresh) if fresh is not None else top + 1
            stamps.append(top)
            lands.append(True)
            if op.kind == DELETE:
                current.pop(op.key, None)
            else:
                current[op.key] = top
            continue
        now = current.get(op.key)
        if now is not None and version <= now:
            stamps.append(now)
            lands.append(False)
            continue
        stamps.append(version)
        lands.append(True)
        current[op.key] = version
    return stamps, lands, top
