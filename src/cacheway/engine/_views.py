"""TEMPORARY: the backend's declared fast view, until backends declare fast_view()."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..backends.memory import MemoryBackend


class Gate:
    open: bool


@dataclass(frozen=True)
class MemoryView:
    data: Any
    namespaced: bool
    ordered: bool
    timer: Callable[[], float]
    lock: threading.RLock
    max_entries: int | None
    evict: Callable[[], None]
    counts_bytes: bool
    gate: Any = None


class _TwoGate:
    def __init__(self, two: Any) -> None:
        self._two = two

    @property
    def open(self) -> bool:
        return bool(self._two._trusted)


def view_of(backend: Any, namespace: str) -> MemoryView | None:
    fast_view = getattr(backend, "fast_view", None)
    if fast_view is not None:
        return fast_view(namespace)  # type: ignore[no-any-return]
    from ..backends.two_level import TwoLevelBackend

    kind = type(backend)
    if kind is TwoLevelBackend:
        if backend._l1_data is None:
            return None
        l1 = backend.l1 if hasattr(backend, "l1") else None
        return MemoryView(backend._l1_data, False, True, backend._l1_timer,
                          getattr(l1, "_lock", threading.RLock()), None, lambda: None, True,
                          _TwoGate(backend))
    if kind is not MemoryBackend and not kind.__dict__.get("_inline_safe", False):
        return None
    space = not backend._lru
    data = backend._space(namespace) if space else backend._data
    return MemoryView(data, space, not space, backend._timer, backend._lock,
                      backend.max_entries, backend._evict, backend.max_bytes is not None)
