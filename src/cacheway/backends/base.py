"""The backend protocol: where cached copies live.

A backend maps ``str`` keys to values. Process-memory backends keep the Python object
itself; remote backends keep the serializer's ``payload`` bytes. Versions (from a
versioned store) make fills and write-through sets "set if newer", so a slow writer or
fill can never replace a newer value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

from ..errors import CachewayError, InvalidKeyError

__all__ = ["MISS", "Backend", "invalid_key", "raise_for_keys"]

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
