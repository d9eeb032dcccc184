"""Read-through bookkeeping: fill tokens and single flights (pure; the caller locks).

Fill tokens: keys hash to one of :data:`STRIPES` stripes, each with a generation that
every write of one of its keys bumps. A read-fill takes the generation before it reads
the store and may put its value in the cache only while the generation is unchanged: a
fill that loaded a value before a write can then never land after it (guarantee 4).
1024 stripes: a false conflict (a write to another key of the stripe) only makes a
fill stand down, and at 1024 two hot keys share a stripe once in a thousand.

Single flights: concurrent misses of one key share one store load. The first reader of
a key (at a generation) leads; later ones wait for its answer on a waiter the front
provides (a ``threading.Event`` on the thread front).

>>> tokens = FillTokens()
>>> t = tokens.token("ns:a"); tokens.bump("ns:a"); tokens.valid("ns:a", t)
False
>>> flights = Flights()
>>> (f, lead), (g, follow) = flights.join("ns:a", 0, object), flights.join("ns:a", 0, object)
>>> lead, follow, f is g
(True, False, True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["MASK", "STRIPES", "FillTokens", "Flight", "Flights"]

STRIPES = 1024  # a power of two
MASK = STRIPES - 1


class FillTokens:
    """A generation per stripe of keys. Hot paths index ``gens`` with
    ``hash(bkey) & MASK`` themselves (a method call costs more than the lookup)."""

    __slots__ = ("gens",)

    def __init__(self) -> None:
        self.gens = [0] * STRIPES

    @staticmethod
    def stripe(bkey: str) -> int:
        return hash(bkey) & MASK

    def token(self, bkey: str) -> int:
        return self.gens[hash(bkey) & MASK]

    def bump(self, bkey: str) -> None:
        self.gens[hash(bkey) & MASK] += 1

    def valid(self, bkey: str, token: int) -> bool:
        return self.gens[hash(bkey) & MASK] == token


class Flight:
    """One store load that readers of a key share: its outcome, once ``waiter`` is set."""

    __slots__ = ("error", "found", "gen", "value", "waiter")

    def __init__(self, gen: int, waiter: Any) -> None:
        self.gen = gen
        self.waiter = waiter
        self.value: Any = None
        self.found = False
        self.error: BaseException | None = None


class Flights:
    """The loads in flight, by key."""

    __slots__ = ("by_key",)

    def __init__(self) -> None:
        self.by_key: dict[str, Flight] = {}

    def join(self, bkey: str, gen: int, make_waiter: Callable[[], Any]) -> tuple[Flight, bool]:
        """The flight of ``bkey`` at generation ``gen`` and whether the caller leads it (a
        flight of an older generation read before a write: a new one starts)."""
        flight = self.by_key.get(bkey)
        if flight is not None and flight.gen == gen:
            return flight, False
        flight = self.by_key[bkey] = Flight(gen, make_waiter())
        return flight, True

    def land(self, bkey: str, flight: Flight) -> None:
        """``flight`` has its outcome: later readers start their own."""
        if self.by_key.get(bkey) is flight:
            del self.by_key[bkey]
