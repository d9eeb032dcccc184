"""Per-key single flight for computations: concurrent callers of one key share one
``compute()``, its result or its exception (``get_or_set`` and ``@cached``; the engine's
own single flight covers store loads only).

>>> flight = SingleFlight()
>>> seen = flight.epoch("k")
>>> flight.run("k", seen, lookup=lambda: MISSING, compute=lambda: 42)
42
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

from .core.keys import check_key

if TYPE_CHECKING:
    from ._front import Front

__all__ = ["MISSING", "SingleFlight", "get_or_set"]

#: What a lookup returns for an absent value.
MISSING: Any = object()


class _Call:
    __slots__ = ("error", "event", "value", "waiters")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.waiters = 0


class SingleFlight:
    """Per-key single flight: concurrent callers of :meth:`run` for one key share one
    ``compute()``, its result or its exception.

    A caller reads :meth:`epoch` before its own lookup missed. A flight ending (its result
    written) bumps the epoch of its key's stripe, so a caller whose lookup raced with the
    end of a flight looks again instead of leading a second computation; without it a
    caller that missed just before the write and arrived just after the flight ended
    would compute again.
    """

    def __init__(self, stripes: int = 64) -> None:
        self._lock = threading.Lock()
        self._calls: dict[Hashable, _Call] = {}
        self.stripes = stripes
        #: flights ended per stripe of keys (``hash(key) % stripes``): more stripes, fewer
        #: callers looking again because some other key's flight ended
        self.epochs = [0] * stripes

    def epoch(self, key: Hashable) -> int:
        return self.epochs[hash(key) % self.stripes]

    def waiting(self) -> int:
        """Callers now waiting for another caller's computation (for tests and stats)."""
        with self._lock:
            return sum(call.waiters for call in self._calls.values())

    def run(self, key: Hashable, seen: int, lookup: Callable[[], Any],
            compute: Callable[[], Any]) -> Any:
        """The value for ``key`` after a lookup that missed at epoch ``seen``: ``lookup()``
        again if a flight ended since (:data:`MISSING` when absent), else the result of this
        caller's ``compute()`` or of the one already running."""
        stripe = hash(key) % self.stripes
        while True:
            with self._lock:
                call = self._calls.get(key)
                leader = call is None and self.epochs[stripe] == seen
                if leader:
                    call = self._calls[key] = _Call()
                elif call is not None:
                    call.waiters += 1
            if call is None:  # a flight ended while we looked: its result may be there
                seen = self.epochs[stripe]
                value = lookup()
                if value is not MISSING:
                    return value
                continue
            if not leader:
                call.event.wait()
                if call.error is not None:
                    raise call.error  # as concurrent.futures.Future.result() does
                return call.value
            try:
                call.value = compute()
            except BaseException as exc:
                call.error = exc
                raise
            finally:
                with self._lock:
                    self.epochs[stripe] += 1
                    del self._calls[key]
                call.event.set()
            return call.value


def get_or_set(front: Front[Any], key: str, default: Any, ttl: float | None = None) -> Any:
    """See :meth:`cacheway.Cache.get_or_set`."""
    if key.__class__ is not str:
        check_key(key)  # InvalidKeyError at the call (an unhashable key too)
    flight_key = (front, key)
    seen = _FLIGHTS.epoch(flight_key)  # before the lookup (see SingleFlight)
    value = front.get(key, MISSING)
    if value is not MISSING:
        return value

    def compute() -> Any:
        result = default() if callable(default) else default
        front.set(key, result, ttl)
        return result

    return _FLIGHTS.run(flight_key, seen, lambda: front.get(key, MISSING), compute)


_FLIGHTS = SingleFlight()  # get_or_set's, keyed by (view, key)
