"""A consumer's state of each partition it holds (see :mod:`cacheway.queue.consumer`)."""

from __future__ import annotations

import time
from collections.abc import Iterable

__all__ = ["HeldPartition", "due_in", "id_of"]


class HeldPartition:
    """What a consumer knows of a partition it holds."""

    __slots__ = ("attempts", "backlog", "low", "n", "recheck", "recovering", "retry_at",
                 "single_until")

    def __init__(self, n: int, low: int) -> None:
        self.n = n
        self.low = low  # every entry with seq <= low is in the store
        self.recovering = True  # a dead consumer's pending entries may be left
        self.backlog = True  # our own pending list may hold entries
        self.retry_at = 0.0
        self.attempts = 0
        self.single_until = 0  # apply one entry at a time up to this seq (a refusal)
        self.recheck = False  # a batch failed: it may have committed all the same


def id_of(seq: int) -> str:
    """The stream id of an entry's ``seq`` (milliseconds << 20 | sequence number).

    >>> id_of((1700000000000 << 20) | 3)
    '1700000000000-3'
    """
    return f"{seq >> 20}-{seq & 0xFFFFF}"


def due_in(parts: Iterable[HeldPartition]) -> float:
    """Seconds (1 to 50 ms) until one of ``parts`` is due (a retry, a recovery recheck):
    how long a consumer with nothing to do sleeps.

    >>> p = HeldPartition(0, 0)
    >>> p.retry_at = time.monotonic() + 10
    >>> due_in([p]), due_in([])
    (0.05, 0.05)
    """
    now = time.monotonic()
    due = min((p.retry_at for p in parts if p.retry_at > now), default=None)
    return 0.05 if due is None else min(0.05, max(0.001, due - now))
