"""The L1 of a TwoLevelBackend and the bookkeeping that keeps it coherent with Redis.

A read or write takes a token, ``(epoch, generation of the key's stripe)``, before it
goes to Redis; the L1 update it makes afterwards stands only if, under the lock, the
token still matches: an invalidation (or a write of this process) bumps the stripe's
generation, a reconnection or a flush bumps the epoch, so an update based on what Redis
held before a change is dropped instead of kept.

>>> from cacheway.backends.memory import MemoryBackend
>>> guard = L1Guard(MemoryBackend(), ttl_cap=None); guard.gate.open = True
>>> token = guard.token("k")
>>> guard.drop(["k"])  # another process wrote "k"
>>> with guard.lock:
...     guard.valid("k", token)
False
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

from .base import Gate
from .memory import MemoryBackend

__all__ = ["L1Guard", "Token"]

_STRIPES = 1024  # power of two
_MASK = _STRIPES - 1

# (epoch, stripe generation) when a read or write started; an L1 update made with a
# token that no longer matches would be based on what Redis held before a change.
Token = tuple[int, int]


class L1Guard:
    """The L1 (``l1``), its ``lock``, the stripe generations, the epoch and the ``gate``
    (open while invalidations flow: only then may the L1 answer or be updated).
    ``ttl_cap`` caps the life of every L1 copy (None: only the L2's TTL bounds it)."""

    def __init__(self, l1: MemoryBackend, ttl_cap: float | None) -> None:
        self.l1 = l1
        self.ttl_cap = ttl_cap
        # One lock orders every L1 mutation with the token checks: an invalidation can
        # never slip between "the token still matches" and the L1 write it allows.
        self.lock = threading.Lock()
        self.gens = [0] * _STRIPES
        self.epoch = 0
        self.gate = Gate()

    def token(self, key: str) -> Token:
        return self.epoch, self.gens[hash(key) & _MASK]

    def valid(self, key: str, token: Token) -> bool:
        """Under ``lock``: the L1 is in use and nothing changed ``key`` since ``token``."""
        return self.gate.open and token == (self.epoch, self.gens[hash(key) & _MASK])

    def ttl(self, ttl: float | None) -> float | None:
        cap = self.ttl_cap
        if cap is None:
            return ttl
        return cap if ttl is None else min(ttl, cap)

    # -- after a read or a write went to Redis ---------------------------------------------
    def fill(self, keys: Sequence[str], tokens: Sequence[Token],
             found: dict[str, tuple[Any, bytes | None, float | None]]) -> None:
        """Copy what Redis returned (``{key: (value, payload, seconds left)}``) into the
        L1, except the keys an invalidation or a write touched since their token."""
        with self.lock:
            set1 = self.l1.set
            for key, token in zip(keys, tokens):
                hit = found.get(key)
                if hit is not None and self.valid(key, token):
                    set1(key, hit[0], hit[1], self.ttl(hit[2]))

    def settle(self, writes: Iterable[tuple[str, Token, bool, Any, bytes | None]],
               ttl: float | None) -> None:
        """After a write to Redis: copy each ``(key, token, keep, value, payload)`` into
        the L1 when ``keep`` and the token still holds, else drop the L1 copy (refused
        because Redis holds newer, failed, or raced); either way void the key's older
        tokens."""
        l1_ttl = self.ttl(ttl)
        with self.lock:
            for key, token, keep, value, payload in writes:
                if keep and self.valid(key, token):
                    self.l1.set(key, value, payload, l1_ttl)
                else:
                    self.l1.delete(key)
                self.gens[hash(key) & _MASK] += 1

    def drop(self, keys: Iterable[str]) -> None:
        """Drop the L1 copies of ``keys`` and void their tokens (an invalidation from
        Redis, or a delete of this process)."""
        with self.lock:
            gens, delete = self.gens, self.l1.delete
            for key in keys:
                gens[hash(key) & _MASK] += 1
                delete(key)

    def clear(self) -> None:
        """Empty the L1 and void every token (a flush)."""
        with self.lock:
            self.epoch += 1
            self.l1.clear()

    # -- the gate --------------------------------------------------------------------------
    def open(self, closing: threading.Event) -> None:
        """Invalidations flow from now on: start afresh and use the L1, unless
        ``closing`` is set (then raise ``ConnectionError``)."""
        with self.lock:
            if closing.is_set():  # close() gave up waiting for the subscriber
                raise ConnectionError("closed")
            # Tokens taken before this point may predate a write whose invalidation
            # was lost while we were away: the epoch bump voids them.
            self.epoch += 1
            self.l1.clear()
            self.gate.open = True

    def shut(self) -> None:
        """Invalidations stopped: bypass the L1 and empty it."""
        with self.lock:
            self.gate.open = False
            self.epoch += 1
            self.l1.clear()

    def after_fork_in_child(self) -> None:
        """A lock a parent's thread held at the fork stays held: a new one; then as
        :meth:`shut` (the child has no subscriber yet)."""
        self.lock = threading.Lock()
        self.l1.after_fork_in_child()
        self.shut()
