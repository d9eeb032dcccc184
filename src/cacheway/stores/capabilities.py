"""What a store can do beyond :class:`~cacheway.stores.base.Store`, declared by the store and
read once by :func:`store_capabilities` or when an engine is built (nothing is probed per
call): checks at the call (:class:`Validate`, :class:`PayloadCheck`), key limits
(:class:`KeyLimits`), a lateness hint (:class:`LateAware`), key sampling
(:class:`SamplesKeys`), data expiry (:class:`Expires`), low-water-only journal marks,
fork awareness, async callbacks.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .base import Applied, JournalMark, Op

__all__ = [
    "Expires",
    "KeyLimits",
    "LateAware",
    "PayloadCheck",
    "SamplesKeys",
    "StoreCapabilities",
    "Validate",
    "ValidateFn",
    "store_capabilities",
]


# -- capabilities: declared by a store, read once (store_capabilities) ---------------------
#: ``validate(namespace, key, value, kind) -> the value the cache keeps``: called by
#: every write before it is accepted, to refuse a write at the call that makes it (a
#: dict with an unknown column) instead of later in a write-back flusher. It raises
#: :class:`~cacheway.ConfigError` or ``StoreError``.
ValidateFn = Callable[[str, str, Any, int], Any]


@runtime_checkable
class Validate(Protocol):
    """A store that checks writes at the call (None: it takes any value)."""

    @property
    def validate(self) -> ValidateFn | None: ...


@runtime_checkable
class PayloadCheck(Protocol):
    """A store that can refuse some encoded payloads (PostgreSQL's ``jsonb`` holds no NUL
    character): ``payload_check(serializer)``, asked once when an engine is built with
    the cache's serializer, returns a check every write's payload goes through at the
    call (raising :class:`~cacheway.InvalidWriteError` naming what the store cannot
    keep), or None when the store keeps whatever that serializer writes."""

    def payload_check(self, serializer: Any) -> Callable[[bytes], None] | None: ...


@runtime_checkable
class KeyLimits(Protocol):
    """The longest key a store can ever keep (UTF-8 bytes, characters; None: no
    limit), and whether keys may hold NUL (see :func:`check_key`)."""

    @property
    def max_key_bytes(self) -> int | None: ...

    @property
    def max_key_chars(self) -> int | None: ...

    @property
    def keys_take_nul(self) -> bool: ...


@runtime_checkable
class LateAware(Protocol):
    """A store whose ``apply`` takes ``late=``: a callable saying whether the batch is
    now later than its ``max_delay`` (a write-back flusher passes it), so the store may
    spend more work to get it through busy writer threads (SQLiteStore does).
    ``takes_late`` is True (a declaration: every store has an ``apply``)."""

    takes_late: bool

    def apply(self, ops: Sequence[Op], *, journal: JournalMark | None = None,
              late: Callable[[], bool] | None = None) -> list[Applied]: ...


@runtime_checkable
class SamplesKeys(Protocol):
    """A store that can list some of its keys (for :func:`cacheway.check.check`)."""

    def sample_keys(self, namespace: str, n: int) -> list[str]:
        """Up to ``n`` random keys of ``namespace`` that hold a value."""
        ...


@runtime_checkable
class Expires(Protocol):
    """A store that keeps data expiry (``expire=`` on a namespace): it writes each op's
    ``expires_at``, never returns an expired row from ``fetch``, starts a counter
    afresh on an expired row, and deletes expired rows when asked.

    ``expires`` is True (a declaration: a subclass may turn it off)."""

    expires: bool

    def purge_expired(self, limit: int = 1000) -> int:
        """Delete up to ``limit`` rows whose data has expired; how many it deleted."""
        ...


@dataclass(frozen=True)
class StoreCapabilities:
    """What a store can do, read once by :func:`store_capabilities`.

    ``atomic_add``: counter deltas are added by the store (else the cache sends the
    absolute value); ``validate``: see :class:`Validate`; ``max_key_*`` and
    ``keys_take_nul``: see :class:`KeyLimits` (``max_key`` is the smaller limit);
    ``takes_late``: see :class:`LateAware`; ``sample_keys``: the store's bound method,
    or None; ``fork_aware``: it reopens its connections in a forked child itself;
    ``async_callbacks``: it holds ``async def`` callbacks (an AsyncCache runs them);
    ``expires``: it keeps data expiry (see :class:`Expires`); ``low_water_marks``: it
    takes a :class:`JournalMark` with empty ``seqs`` (the low water alone);
    ``fenced_marks``: it checks ``JournalMark.after`` in the batch's transaction.
    """

    name: str
    versioned: bool
    atomic_add: bool = True
    validate: ValidateFn | None = None
    max_key_bytes: int | None = None
    max_key_chars: int | None = None
    keys_take_nul: bool = True
    takes_late: bool = False
    sample_keys: Callable[[str, int], list[str]] | None = None
    fork_aware: bool = False
    async_callbacks: bool = False
    expires: bool = False
    low_water_marks: bool = False
    fenced_marks: bool = False

    @property
    def max_key(self) -> int | None:
        """The smaller of the two key limits: an ASCII key of at most this many
        characters without NUL fits (engines check only longer keys)."""
        limits = [n for n in (self.max_key_bytes, self.max_key_chars) if n is not None]
        return min(limits) if limits else None

    @property
    def limits_keys(self) -> bool:
        """Whether some key can be refused (a length limit, or no NUL)."""
        return self.max_key is not None or not self.keys_take_nul


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    """True when ``fn`` takes the keyword argument ``name`` (read once, at construction)."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # no signature to read: not declared
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD
                                 for p in params.values())


def store_capabilities(store: object) -> StoreCapabilities:
    """What ``store`` declares it can do, read once (engines keep the answer).

    Built-in stores declare every capability on :class:`StoreBase`; a store that only
    implements the :class:`Store` protocol gets the defaults of what it leaves out.

    >>> from cacheway.stores.base import StoreBase
    >>> caps = store_capabilities(StoreBase())
    >>> caps.atomic_add, caps.takes_late, caps.sample_keys, caps.max_key
    (True, False, None, None)
    """
    sample = store.sample_keys if isinstance(store, SamplesKeys) else None
    limits = store if isinstance(store, KeyLimits) else None
    return StoreCapabilities(
        name=repr(store),
        versioned=bool(getattr(store, "versioned", False)),
        atomic_add=bool(getattr(store, "atomic_add", True)),
        validate=store.validate if isinstance(store, Validate) else None,
        max_key_bytes=None if limits is None else limits.max_key_bytes,
        max_key_chars=None if limits is None else limits.max_key_chars,
        keys_take_nul=True if limits is None else bool(limits.keys_take_nul),
        # declared, and still in the signature: a subclass whose apply() drops late=
        # inherits the declaration, not the parameter
        takes_late=isinstance(store, LateAware) and bool(store.takes_late) and _accepts(
            store.apply, "late"),
        sample_keys=sample,
        fork_aware=callable(getattr(store, "after_fork_in_child", None)),
        async_callbacks=bool(getattr(store, "async_callbacks", False)),
        expires=isinstance(store, Expires) and bool(store.expires),
        low_water_marks=bool(getattr(store, "low_water_marks", False)),
        fenced_marks=bool(getattr(store, "fenced_marks", False)),
    )
