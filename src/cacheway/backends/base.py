"""The backend protocol: where cached copies live.

A backend maps ``str`` keys to values. Process-memory backends keep the Python object
itself; remote backends keep the serializer's ``payload`` bytes. Versions (from a
versioned store) make fills and write-through sets "set if newer", so a slow writer or
fill can never replace a newer value.

What a backend can do beyond :class:`Backend` is declared by the capability Protocols
below; :func:`backend_capabilities` checks them once (when a cache is built) and engines
read the answer instead of probing with ``getattr``/``hasattr``/``except TypeError``.
A backend whose copies an engine may read (and write) directly declares it with
``fast_view(namespace) -> MemoryView | None`` (:class:`FastViewBackend`).
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..errors import CachewayError, InvalidKeyError

if TYPE_CHECKING:
    from ..serializers import Serializer

__all__ = [
    "DEFAULT_LEASE_TTL",
    "MISS",
    "Backend",
    "BackendCapabilities",
    "ClockBackend",
    "DecodeErrorsBackend",
    "FastViewBackend",
    "ForkAwareBackend",
    "Gate",
    "Item",
    "LeaseBackend",
    "MemoryView",
    "MetaBackend",
    "PeekBackend",
    "PublishBackend",
    "SerializerBinding",
    "StaleBackend",
    "TTLBackend",
    "VersionedDeleteBackend",
    "backend_capabilities",
    "invalid_key",
    "raise_for_keys",
]

MISS: Any = type("Miss", (), {"__repr__": lambda self: "MISS", "__bool__": lambda self: False})()


def invalid_key(key: object) -> InvalidKeyError | None:
    """The error to raise for a key no backend can keep, or None when ``key`` is fine.

    Backends call it only after a key made them fail (so a good key costs nothing):
    a key must be a ``str`` that encodes as UTF-8 (no lone surrogates such as
    ``"\\ud800"``), since remote backends send keys as UTF-8 bytes.

    >>> invalid_key("ok") is None, str(invalid_key(b"k"))
    (True, "keys must be str, not bytes (b'k')")
    """
    if not isinstance(key, str):
        return InvalidKeyError(f"keys must be str, not {type(key).__name__} ({key!r:.60})")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError as exc:
        return InvalidKeyError(
            f"key {key!r:.60} cannot be encoded as UTF-8: {key[exc.start]!r} at position "
            f"{exc.start} is a lone surrogate; keys must be valid Unicode text"
        )
    return None


def raise_for_keys(keys: Iterable[object], exc: BaseException) -> None:
    """After ``exc`` (a ``TypeError`` or ``ValueError`` a key may have caused): raise
    :class:`~cacheway.InvalidKeyError` for the first key in ``keys`` no backend can keep;
    return when they are all fine (the caller re-raises ``exc``)."""
    if isinstance(exc, CachewayError):
        return
    for key in keys:
        bad = invalid_key(key)
        if bad is not None:
            raise bad from exc


@runtime_checkable
class Backend(Protocol):
    """What a policy needs from a backend.

    ``local`` is True when only this process can see the entries (then in-process locks
    are enough for consistency); ``evictions`` counts entries dropped for room or TTL.
    """

    local: bool

    @property
    def evictions(self) -> int: ...

    def get(self, key: str) -> Any: ...

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]: ...

    def set(
        self, key: str, value: Any, payload: bytes | None, ttl: float | None,
        version: int | None = None,
    ) -> object: ...

    def set_many(
        self, items: Sequence[tuple[str, Any, bytes | None, int | None]], ttl: float | None
    ) -> None: ...

    def delete(self, key: str, version: int | None = None) -> object: ...

    def delete_many(self, keys: Sequence[str]) -> None: ...

    def clear(self) -> None: ...

    def close(self) -> None: ...


# -- the fast view: what an engine may read and write without calling the backend ------

#: An entry of a process-memory backend: ``(value, expires_at or None, size charged
#: against max_bytes (0 when max_bytes is None), load time in seconds (early refresh))``.
#: ``expires_at`` is on the view's ``timer``; an entry with ``expires_at <= timer()`` is
#: expired (a reader treats it as absent and leaves its removal to the backend).
Item = tuple[Any, "float | None", int, float]


class Gate:
    """A flag a backend flips and engines read on their hot path: while ``open`` is
    False the view's ``data`` must not answer reads (a two-level backend whose
    invalidations stopped flowing). A plain attribute, so a read costs one lookup.

    >>> gate = Gate(); gate.open
    False
    """

    __slots__ = ("open",)

    def __init__(self, open: bool = False) -> None:
        self.open = open

    def __repr__(self) -> str:
        return f"Gate(open={self.open})"


@dataclass(frozen=True, slots=True)
class MemoryView:
    """What an engine may read and write directly (cacheway.engine.fastpaths).

    - ``data``: key -> :data:`Item` ``(value, expires_at | None, size charged,
      loaded_at)``, the documented layout.
    - ``namespaced``: True when ``data`` holds only this namespace, keyed WITHOUT
      ``"ns:"`` (an unbounded backend); False: full keys (``"ns:key"``).
    - ``ordered``: ``data`` is an LRU ``OrderedDict``: a hit calls
      ``data.move_to_end(key)`` (a ``KeyError`` there means another thread evicted it
      since the lookup: the read still stands).
    - ``timer``: the expiry clock; an item is live while ``item[1] is None or
      item[1] > timer()``.
    - ``lock``: the backend's own (reentrant) lock; a write-back engine guards its dirty
      table with it too.
    - ``evict``: call under ``lock`` after inserting a new key into an ordered view: drops
      LRU entries over ``max_entries``.
    - ``counts_bytes``: ``max_bytes`` is set: sizes are kept, so an engine must not set
      items inline. Otherwise it may set ``data[k] = (value, expires_at, 0, 0.0)`` under
      ``lock``.
    - ``gate``: two-level: hits may be served from ``data`` only while ``gate.open``;
      such a view is for reads only (writes go through the backend, which orders them
      with the invalidations it receives).
    """

    data: dict[str, Item]
    namespaced: bool
    ordered: bool
    timer: Callable[[], float]
    lock: threading.RLock
    max_entries: int | None
    evict: Callable[[], None]
    counts_bytes: bool
    gate: Gate | None


# -- capabilities: declared by the methods a backend has, checked once ----------------


@runtime_checkable
class FastViewBackend(Protocol):
    """Its copies may be read (and, see :class:`MemoryView`, written) inline."""

    def fast_view(self, namespace: str) -> MemoryView | None: ...


@runtime_checkable
class LeaseBackend(Protocol):
    """Cross-process single flight: a miss takes a lease of ``lease_ttl`` seconds, one
    reader loads and fills under it, the others poll. In use only while ``leases``."""

    leases: bool
    lease_ttl: float

    def lease_get(self, key: str, token: bytes) -> tuple[int, Any]: ...

    def lease_fill(self, key: str, token: bytes, value: Any, payload: bytes | None,
                   ttl: float | None, version: int | None, *, found: bool = True) -> bool: ...


@runtime_checkable
class MetaBackend(Protocol):
    """Entry ages, for early refresh: ``(value, seconds left or None, load time)`` or
    MISS. Such a backend's ``set`` takes ``delta=`` (the load time to record)."""

    def get_meta(self, key: str) -> Any: ...


@runtime_checkable
class StaleBackend(Protocol):
    """Keeps expired entries a while, for stale-if-error."""

    def keep_stale(self, seconds: float) -> None: ...

    def get_stale(self, key: str, max_age: float) -> Any: ...


@runtime_checkable
class SerializerBinding(Protocol):
    """Keeps bytes: takes the cache's serializer when the cache is built."""

    def bind_serializer(self, serializer: Serializer) -> None: ...


@runtime_checkable
class PublishBackend(Protocol):
    """Versions accepted writes from a clock of its own, atomically with writing them
    (``RedisBackend.publish``): items are ``(key, kind, value, payload)``."""

    def publish(self, items: Sequence[tuple[str, int, Any, bytes | None]],
                ttl: float | None) -> list[int]: ...


@runtime_checkable
class ClockBackend(Protocol):
    """Hands out ``n`` versions from a clock shared by every process using it."""

    def versions(self, n: int) -> list[int]: ...


@runtime_checkable
class TTLBackend(Protocol):
    """Reads values with the seconds they have left (what an L1 fill needs)."""

    def get_many_ttl(self, keys: Sequence[str], *, payloads: bool = False
                     ) -> dict[str, tuple[Any, bytes | None, float | None]]: ...


@runtime_checkable
class VersionedDeleteBackend(Protocol):
    """``delete_many`` takes ``versions`` (one per key): versioned deletes leave
    tombstones. Checked by the signature too: every backend has a ``delete_many``."""

    def delete_many(self, keys: Sequence[str],
                    versions: Sequence[int | None] | None = None) -> None: ...


@runtime_checkable
class PeekBackend(Protocol):
    """Reads a live value without touching LRU order, expiry or stats."""

    def peek(self, key: str) -> Any: ...


@runtime_checkable
class ForkAwareBackend(Protocol):
    """Has state a forked child must renew (threads, locks, connections)."""

    def after_fork_in_child(self) -> None: ...


@runtime_checkable
class DecodeErrorsBackend(Protocol):
    """Counts entries it found but could not decode (served as misses)."""

    @property
    def decode_errors(self) -> int: ...


@dataclass(frozen=True)
class BackendCapabilities:
    """What one backend can do beyond :class:`Backend`; each field is the backend itself
    (typed as the capability) when it can, else None. From :func:`backend_capabilities`.
    """

    local: bool
    leases: LeaseBackend | None            # leases offered and switched on
    lease_ttl: float                       # how long a waiter polls for another's fill
    meta: MetaBackend | None               # early refresh
    stale: StaleBackend | None             # stale-if-error
    serializer: SerializerBinding | None   # bind_serializer at construction
    publish: PublishBackend | None         # write-back versions from the backend's clock
    clock: ClockBackend | None             # write-through/around versions from its clock
    ttl_reads: TTLBackend | None
    versioned_deletes: VersionedDeleteBackend | None
    peek: PeekBackend | None
    fork: ForkAwareBackend | None
    decode_errors: DecodeErrorsBackend | None
    fast: FastViewBackend | None


#: How long a reader waits for another's fill on a backend without leases (seconds).
DEFAULT_LEASE_TTL = 10.0


def _takes_versions(backend: object) -> bool:
    try:
        params = inspect.signature(backend.delete_many).parameters  # type: ignore[attr-defined]
    except (AttributeError, TypeError, ValueError):  # no signature to read: not declared
        return False
    return "versions" in params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def backend_capabilities(backend: Backend) -> BackendCapabilities:
    """Check once what ``backend`` declares (its methods, see the Protocols above).

    >>> from cacheway.backends.memory import MemoryBackend
    >>> caps = backend_capabilities(MemoryBackend())
    >>> caps.local, caps.meta is not None, caps.leases, caps.lease_ttl
    (True, True, None, 10.0)
    """
    leasing = backend if isinstance(backend, LeaseBackend) else None
    return BackendCapabilities(
        local=bool(backend.local),
        leases=leasing if leasing is not None and leasing.leases else None,
        lease_ttl=float(leasing.lease_ttl) if leasing is not None else DEFAULT_LEASE_TTL,
        meta=backend if isinstance(backend, MetaBackend) else None,
        stale=backend if isinstance(backend, StaleBackend) else None,
        serializer=backend if isinstance(backend, SerializerBinding) else None,
        publish=backend if isinstance(backend, PublishBackend) else None,
        clock=backend if isinstance(backend, ClockBackend) else None,
        ttl_reads=backend if isinstance(backend, TTLBackend) else None,
        versioned_deletes=(backend if isinstance(backend, VersionedDeleteBackend)
                           and _takes_versions(backend) else None),
        peek=backend if isinstance(backend, PeekBackend) else None,
        fork=backend if isinstance(backend, ForkAwareBackend) else None,
        decode_errors=backend if isinstance(backend, DecodeErrorsBackend) else None,
        fast=backend if isinstance(backend, FastViewBackend) else None,
    )
