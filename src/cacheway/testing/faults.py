"""A store wrapper that injects faults into any store: failing writes, a write gate, slow
or held loads, and counts of what reached the store. Everything else is the wrapped
store's (its versions, key limits and validation stay in force)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import cacheway as cw

__all__ = ["FaultyStore", "HeldFill"]


class FaultyStore:
    """Wraps ``store``; all knobs are off by default.

    ``failing`` writes raise :class:`cacheway.StoreError` while true; ``fail_writes``
    the next N writes raise; ``write_gate`` (an Event) writes wait for it (10 s at most);
    ``load_delay`` seconds slept in each load after reading; ``load_hook(keys)`` called
    after reading and before returning. ``loads`` / ``write_attempts`` /
    ``failed_writes`` count calls; ``write_entered`` is set when a write starts.
    """

    def __init__(self, store: Any) -> None:
        self.inner = store
        self.failing = False
        self.fail_writes = 0
        self.write_gate: threading.Event | None = None
        self.write_entered = threading.Event()
        self.load_delay = 0.0
        self.load_hook: Callable[[list[str]], None] | None = None
        self.loads = 0
        self.write_attempts = 0
        self.failed_writes = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"FaultyStore({self.inner!r})"

    def async_path(self) -> None:
        """None: an AsyncCache must go through the calls that inject the faults (the
        inner store's async path, forwarded by ``__getattr__``, would bypass them)."""

    def fetch(self, namespace: str, keys: Sequence[str]) -> Any:
        keys = list(keys)
        with self._lock:
            self.loads += 1
        found = self.inner.fetch(namespace, keys)
        if self.load_delay:
            time.sleep(self.load_delay)
        if self.load_hook is not None:
            self.load_hook(keys)
        return found

    def apply(self, ops: Sequence[Any], *, journal: Any = None) -> Any:
        self.write_entered.set()
        gate = self.write_gate
        if gate is not None:
            gate.wait(10)
        with self._lock:
            self.write_attempts += 1
            fail = self.failing
            if not fail and self.fail_writes > 0:
                self.fail_writes -= 1
                fail = True
            if fail:
                self.failed_writes += 1
        if fail:
            raise cw.StoreError(f"injected: the store is down (batch of {len(ops)})")
        return self.inner.apply(ops, journal=journal)


class HeldFill:
    """A ``load_hook`` that holds the first load of ``key`` between the store read and the
    cache fill until :attr:`release` is set."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.loaded = threading.Event()
        self.release = threading.Event()
        self._first = True
        self._lock = threading.Lock()

    def __call__(self, keys: list[str]) -> None:
        with self._lock:
            hold = self._first and self.key in keys
            if hold:
                self._first = False
        if hold:
            self.loaded.set()
            self.release.wait(10)
