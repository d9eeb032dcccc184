"""The backend protocol: where cached copies live.

A backend maps ``str`` keys to values. Process-memory backends keep the Python object
itself; remote backends keep the serializer's ``payload`` bytes. Versions (from a
versioned store) make fills and write-through sets "set if newer", so a slow writer or
fill can never replace a newer value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["MISS", "Backend"]

MISS: Any = type("Miss", (), {"__repr__": lambda self: "MISS", "__bool__": lambda self: False})()


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
