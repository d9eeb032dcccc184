"""Read-through options: early refresh (XFetch), stale-if-error and TTL jitter.

XFetch (Vattani, Chierichetti, Lowenstein, "Optimal Probabilistic Cache Stampede
Prevention", VLDB 2015) refreshes a hot entry before it expires, with a probability that
grows as expiry nears and with how long the value takes to load (``delta``): refresh when
``now - delta * beta * log(random()) >= expiry``, i.e. when
``-delta * beta * log(random()) >= seconds left``. One reader then reloads in the
background while the others keep getting the old value, so an expiry never sends a crowd
to the store.

>>> should_refresh(10.0, delta=0.1, beta=1.0, rand=lambda: 0.5)
False
>>> should_refresh(0.01, delta=0.1, beta=1.0, rand=lambda: 0.5)
True
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from .errors import ConfigError

__all__ = ["ReadOptions", "should_refresh"]


def should_refresh(left: float, delta: float, beta: float, rand: Callable[[], float]) -> bool:
    """XFetch's test for an entry with ``left`` seconds to live whose load took ``delta``."""
    r = rand()
    if r <= 0.0:
        return True
    return -delta * beta * math.log(r) >= left


@dataclass(frozen=True)
class ReadOptions:
    """How read-through treats expiry: ``early_refresh`` is XFetch's ``beta`` (1.0 is the
    paper's default; None turns it off), ``stale_if_error`` serves an entry that expired
    less than that many seconds ago when the store fails, ``ttl_jitter`` shortens each
    cached copy's ttl by a random fraction up to it (so copies written together do not
    expire together)."""

    early_refresh: float | None = None
    stale_if_error: float | None = None
    ttl_jitter: float = 0.0
    rand: Callable[[], float] = field(default=random.random, compare=False)

    def __post_init__(self) -> None:
        for name in ("early_refresh", "stale_if_error"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                                  or not v > 0):
                raise ConfigError(f"{name} must be a number > 0 or None, not {v!r}")
        j = self.ttl_jitter
        if isinstance(j, bool) or not isinstance(j, (int, float)) or not 0 <= j < 1:
            raise ConfigError(f"ttl_jitter must be a fraction in [0, 1), not {j!r}")
        if not callable(self.rand):
            raise ConfigError(f"random must be callable, not {self.rand!r}")
