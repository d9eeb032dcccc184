"""The store protocol: the small, batch-first interface between a cache and its system of record.

Policies speak to a store through two calls: :meth:`Store.fetch` (read rows) and
:meth:`Store.apply` (apply a batch of sets, deletes and counter adds in one
transaction). Users get the friendlier Python-value methods of :class:`StoreBase`:
``load``, ``load_many``, ``save_many`` and ``delete_many``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from operator import attrgetter
from typing import Any, NamedTuple, Protocol, runtime_checkable

from ..errors import ConfigError, InvalidWriteError
from ..serializers import JSONSerializer, Serializer
from .capabilities import (
    Expires,
    KeyLimits,
    LateAware,
    SamplesKeys,
    StoreCapabilities,
    Validate,
    ValidateFn,
    store_capabilities,
)

__all__ = [
    "ADD",
    "DELETE",
    "NOTSET",
    "SET",
    "Applied",
    "Expires",
    "JournalMark",
    "KeyLimits",
    "LateAware",
    "Loaded",
    "Op",
    "SamplesKeys",
    "Store",
    "StoreBase",
    "StoreCapabilities",
    "Validate",
    "ValidateFn",
    "check_key",
    "expiring",
    "has_versions",
    "store_capabilities",
    "validate_identifier",
]

SET = 0
DELETE = 1
ADD = 2

NOTSET: Any = type("NotSet", (), {"__repr__": lambda self: "NOTSET"})()

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def validate_identifier(name: object, what: str = "table name") -> str:
    """Return ``name`` if it is a plain SQL identifier, else raise :class:`ConfigError`.

    >>> validate_identifier("cacheway")
    'cacheway'
    """
    if not isinstance(name, str) or not _IDENT.fullmatch(name):
        raise ConfigError(
            f"{what} {name!r} is not a valid identifier: use letters, digits and '_', "
            "starting with a letter or '_', at most 63 characters"
        )
    return name


def check_key(store: object, namespace: str, key: str) -> None:
    """Raise :class:`InvalidWriteError` when ``store`` can never take ``key``: longer
    than its ``max_key_chars`` code points or its ``max_key_bytes`` UTF-8 bytes, holding
    a NUL character where its ``keys_take_nul`` is False, or (key or ``namespace``) not
    encodable as UTF-8 (a lone surrogate). ``store`` is a store or its
    :class:`StoreCapabilities` (what engines keep: nothing is looked up per call). A
    store without these attributes takes any key of valid text.

    >>> check_key(StoreBase(), "", "x" * 10_000)
    """
    # Stores and capabilities declare the limits: read as they are (no probing per call).
    caps: KeyLimits = (store if isinstance(store, (StoreCapabilities, StoreBase))
                       else store_capabilities(store))
    who = caps.name if isinstance(caps, StoreCapabilities) else repr(caps)
    for what, text in (("key", key), ("namespace", namespace)):
        if not caps.keys_take_nul and "\x00" in text:
            raise InvalidWriteError(f"{what} {text[:40]!r} holds a NUL character: {who} "
                                    "cannot keep it")
        if not text.isascii():
            try:
                text.encode()
            except UnicodeEncodeError as exc:
                raise InvalidWriteError(
                    f"{what} {text[:40]!r} is not valid Unicode text ({exc.reason} at "
                    f"position {exc.start}): no store can keep it") from None
    max_chars = caps.max_key_chars
    n = len(key)
    if max_chars is not None and n > max_chars:
        raise InvalidWriteError(
            f"key {key[:40]!r}... has {n} characters: {who} keeps at most {max_chars}")
    max_bytes = caps.max_key_bytes
    if max_bytes is not None and n * 4 > max_bytes:  # else it fits whatever it holds
        size = n if key.isascii() else len(key.encode())
        if size > max_bytes:
            raise InvalidWriteError(
                f"key {key[:40]!r}... is {size} bytes in UTF-8: {who} keeps at most "
                f"{max_bytes}")


class Op(NamedTuple):
    """One write of a batch: ``kind`` is SET (``payload``), DELETE, or ADD (``delta``).

    ``value`` is the Python value (for stores that work in values); for ADD it is the
    absolute value the cache computed, which a store without atomic adds saves instead.

    ``version``: None (the store stamps the write from its own counter) or the version
    the write was given when a cache accepted it (a shared backend's clock). A versioned
    store applies a versioned SET or DELETE only when its version is greater than the
    row's (set-if-newer; see :class:`Applied`), adds a versioned ADD's delta always, and
    raises its own counter to at least every version it applied, so later writes it
    stamps itself are newer. Unversioned stores ignore it.

    ``expires_at``: None, or the wall-clock time (``time.time()``) at which the row's data
    ends: a namespace with ``expire=`` stamps it when the write is accepted. Only stores
    that declare :class:`Expires` take it (an engine refuses ``expire=`` on others).
    """

    namespace: str
    key: str
    kind: int
    payload: bytes | None = None
    delta: int = 0
    value: Any = None
    version: int | None = None
    expires_at: float | None = None


_version = attrgetter("version")


def has_versions(ops: Sequence[Op]) -> bool:
    """Whether any op of ``ops`` carries a version (one pass in C: batches without
    versions keep their fast paths).

    >>> has_versions([Op("", "a", SET)]), has_versions([Op("", "a", SET, version=7)])
    (False, True)
    """
    return list(map(_version, ops)).count(None) != len(ops)


_expires_at = attrgetter("expires_at")


def expiring(ops: Sequence[Op]) -> bool:
    """Whether any op of ``ops`` carries an expiry (one pass in C: batches without one
    keep their fast paths).

    >>> expiring([Op("", "a", SET)]), expiring([Op("", "a", SET, expires_at=1e9)])
    (False, True)
    """
    return list(map(_expires_at, ops)).count(None) != len(ops)


class JournalMark(NamedTuple):
    """Recorded by a store in the same transaction as a batch, so a journal replay can
    skip what was applied: every record with seq <= ``low_water`` is applied, and
    ``seqs[i]`` is the last journal record folded into ``ops[i]``. Empty ``seqs`` (for a
    store that declares ``low_water_marks``) records the low water alone: for a writer
    that applies its records as in-order prefixes, as a queue consumer does.

    ``after`` (a fence, for a store that declares ``fenced_marks``): the low water this
    batch follows. A store that holds a higher low water for the journal refuses the
    batch with :class:`~cacheway.StaleMarkError` and writes none of it: another writer
    applied past it (a queue consumer paused longer than ``claim_after`` whose partition
    was taken over). Checked and raised in the batch's transaction."""

    journal_id: str
    low_water: int
    seqs: Sequence[int]
    after: int | None = None


def _fast(cls: type[Any]) -> Any:
    """``cls((a, b, ...))`` without the NamedTuple's Python-level ``__new__``: the hot
    paths build one op or result per entry of every batch. A shorter tuple (callers
    written before a field was added) gets the defaults of the fields it leaves out."""
    new = tuple.__new__
    fields: tuple[str, ...] = cls._fields
    n = len(fields)
    defaults: dict[str, Any] = cls._field_defaults
    # pads[k]: the defaults of the fields after the first k (None where no default).
    pads = [tuple(defaults.get(f) for f in fields[k:]) for k in range(n + 1)]

    def make(values: tuple[Any, ...]) -> Any:
        if len(values) != n:
            values = values + pads[len(values)]
        return new(cls, values)

    return make


class Loaded(NamedTuple):
    """A row read from a store: ``payload`` bytes and/or the decoded ``value``, its version
    and, from a store that keeps expiry, when its data ends (``time.time()``; None: never).
    Stores never return a row whose ``expires_at`` has passed."""

    payload: bytes | None
    value: Any
    version: int | None
    expires_at: float | None = None


class Applied(NamedTuple):
    """What a store reports for one op: the version it stamped (None when unversioned)
    and, for ADD, the counter's new value.

    ``applied`` is False only for a versioned SET or DELETE that a versioned store
    skipped because the row (or the tombstone of a deleted row) already had a version
    at least as new: ``version`` is then that row's current version, ``value`` None.
    """

    version: int | None
    value: Any = None
    applied: bool = True


@runtime_checkable
class Store(Protocol):
    """What a policy needs from a store.

    What a store can do besides is declared, never probed per call: the capability
    Protocols below (:class:`Validate`, :class:`KeyLimits`, :class:`LateAware`,
    :class:`SamplesKeys`, ``ForkAware`` (in ``_fork.py``)), read once by
    :func:`store_capabilities` when an engine is built.
    """

    serializer: Serializer
    versioned: bool

    def fetch(self, namespace: str, keys: Sequence[str]) -> dict[str, Loaded]: ...

    def apply(
        self, ops: Sequence[Op], *, journal: JournalMark | None = None
    ) -> list[Applied]: ...

    def applied_state(self, journal_id: str) -> tuple[int, dict[tuple[str, str], int]]: ...

    def close(self) -> None: ...


class StoreBase:
    """Python-value methods shared by every store, built on ``fetch`` and ``apply``."""

    serializer: Serializer = JSONSerializer()
    versioned = False
    #: The longest key the store can keep, in UTF-8 bytes and in
    #: characters (code points); None: no limit. A write of a longer key is refused by
    #: ``apply`` with :class:`InvalidWriteError`; a cache refuses it at the call that
    #: makes it (:func:`check_key`).
    max_key_bytes: int | None = None
    max_key_chars: int | None = None
    #: False where keys cannot hold a NUL character (PostgreSQL text).
    keys_take_nul: bool = True
    #: True where ``apply`` takes ``late=`` (see :class:`LateAware`).
    takes_late: bool = False
    #: True where the store's callbacks are ``async def`` (CallbackStore).
    async_callbacks: bool = False
    #: True where ``apply`` takes a journal mark with empty ``seqs``: the low water alone,
    #: no per-key rows (see :class:`JournalMark`).
    low_water_marks: bool = False
    #: True where ``apply`` checks ``JournalMark.after`` in the batch's transaction and
    #: raises :class:`~cacheway.StaleMarkError` (see :class:`JournalMark`).
    fenced_marks: bool = False

    @property
    def validate(self) -> ValidateFn | None:
        """Checks a write at the call (see :class:`Validate`); None: any value goes."""
        return None

    @property
    def atomic_add(self) -> bool:
        """True when the store adds counter deltas itself (atomically)."""
        return True

    def fetch(self, namespace: str, keys: Sequence[str]) -> dict[str, Loaded]:
        raise NotImplementedError

    def apply(
        self, ops: Sequence[Op], *, journal: JournalMark | None = None
    ) -> list[Applied]:
        raise NotImplementedError

    def applied_state(self, journal_id: str) -> tuple[int, dict[tuple[str, str], int]]:
        """(low water, {(namespace, key): last applied seq}) recorded for a journal.
        Stores without a watermark report nothing applied (replay is at-least-once)."""
        return 0, {}

    def close(self) -> None:
        return None

    def decode(self, row: Loaded) -> Any:
        if row.value is not NOTSET:
            return row.value
        assert row.payload is not None
        return self.serializer.loads(row.payload)

    def load(self, key: str, default: Any = None, *, namespace: str = "") -> Any:
        """The stored value of ``key``, or ``default``."""
        row = self.fetch(namespace, [key]).get(key)
        return default if row is None else self.decode(row)

    def load_many(self, keys: Iterable[str], *, namespace: str = "") -> dict[str, Any]:
        """Stored values of ``keys`` (found keys only)."""
        rows = self.fetch(namespace, list(keys))
        return {k: self.decode(r) for k, r in rows.items()}

    def save_many(
        self, items: Mapping[str, Any] | Iterable[tuple[str, Any]], *, namespace: str = ""
    ) -> None:
        """Upsert ``(key, value)`` pairs in one transaction."""
        pairs = items.items() if isinstance(items, Mapping) else items
        dumps = self.serializer.dumps
        self.apply([Op(namespace, k, SET, dumps(v), 0, v) for k, v in pairs])

    def delete_many(self, keys: Iterable[str], *, namespace: str = "") -> None:
        """Delete ``keys`` in one transaction (missing keys are ignored)."""
        self.apply([Op(namespace, k, DELETE) for k in keys])

    def __enter__(self) -> StoreBase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _never() -> bool:
    return False


#: ``make_op((namespace, key, kind, payload, delta, value[, version]))``: a fast :class:`Op`.
make_op = _fast(Op)
#: ``make_applied((version, value[, applied]))``: a fast :class:`Applied`.
make_applied = _fast(Applied)
