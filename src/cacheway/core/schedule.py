"""The flush schedule of a write-back cache: which batch goes next, what to try when it
fails, and what each failure means (pure: the flusher does the I/O and the waiting).

* :func:`next_step` looks at the dirty table and says: write this batch, probe the store
  with one parked entry, wait (how long), or stop.
* :class:`BatchAttempt` walks a failing batch: the whole batch, then up to three of its
  entries alone (one that goes through proves the store up), then a bisection of the
  rest down to the entries that fail on their own.
* :func:`verdict` turns a failure into retries (with backoff) or dead letters.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import InvalidWriteError
from ..policies import Retry, WriteBack
from .dirty import DirtyTable, Entry

__all__ = ["PROBE_EVERY", "BatchAttempt", "Step", "next_step", "permanent", "verdict"]

#: seconds between probes of a store that is down (see :func:`next_step`)
PROBE_EVERY = 1.0


@dataclass
class Step:
    """What the flusher does next: ``batch`` to write (``probe``: one parked entry tried
    alone), else wait ``wait`` seconds (None: until woken), or ``stop``."""

    batch: list[Entry] | None = None
    probe: bool = False
    wait: float | None = None
    stop: bool = False


def next_step(table: DirtyTable, cfg: WriteBack, now: float, *, hurry: bool,
              stopping: bool, probe_at: float) -> Step:
    """The flusher's next step. ``hurry``: someone waits (flush(), a blocked writer),
    so a batch goes now whatever ``max_delay`` says; ``probe_at``: when the next probe
    of a store that is down may go."""
    table.fill(cfg.batch_size)
    if not (table.dirty or table.parked):
        return Step(stop=stopping)
    oldest = table.oldest_born()
    due = oldest is not None and (
        hurry or stopping or now - oldest >= cfg.max_delay
        or len(table.dirty) >= cfg.batch_size)
    if due or table.ready_parked(now):
        batch = table.take(cfg.batch_size, now)
        if batch:
            return Step(batch=batch)
    wakes = []
    if oldest is not None:
        wakes.append(oldest + cfg.max_delay)
    nxt = table.next_parked()
    if nxt is not None:
        wakes.append(nxt)
        if nxt - now > PROBE_EVERY:
            # Backing off for longer than a probe interval: one parked entry alone
            # tells, once a second, whether the store is back (an outage of seconds then
            # ends in about a second, not after a backoff grown to Retry.max_delay).
            if now >= probe_at:
                return Step(batch=[table.take_one_parked()], probe=True)
            wakes.append(probe_at)
    return Step(wait=max(0.0005, min(wakes) - now) if wakes else None)


def permanent(exc: BaseException) -> bool:
    """The store refuses this write for good (:class:`InvalidWriteError`, maybe wrapped
    by a store that reports its own errors): retrying cannot help."""
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return False
        if isinstance(seen, InvalidWriteError):
            return True
        seen = seen.__cause__
    return False


class BatchAttempt:
    """The parts of one batch to write, in order, and what their outcomes mean.

    Drive it with ``while (part := attempt.next()) is not None: attempt.outcome(part,
    error_or_None)``; then ``failures`` holds ``(entries, error, alone)`` for each part
    that failed for good (``alone``: the entries failed on their own, not only with
    others) and ``store_down`` says whether the store looked down.

    A failing batch of several entries is probed with up to three of its entries alone:
    one that goes through proves the store up, and the rest is then bisected down to the
    entries that fail on their own, however many there are (two refused entries in
    different halves used to make both halves fail, which read as "store down" and spent
    every entry's retry budget). When every probe fails, the store is taken to be down
    and the whole batch waits for a retry."""

    def __init__(self, batch: list[Entry], rand: random.Random) -> None:
        self.failures: list[tuple[list[Entry], Exception, bool]] = []
        self.store_down = False
        self._rand = rand
        self._batch = batch
        self._todo: list[list[Entry]] = [batch]
        self._probes: list[Entry] | None = None  # None: the whole batch is being tried
        self._rest: list[Entry] = []
        self._exc: Exception | None = None
        self._up = False

    def next(self) -> list[Entry] | None:
        if self._probes:
            return [self._probes[-1]]
        if self._probes is not None and not self._up:
            # Not one probe went through: the rest waits for a retry, whatever error the
            # batch or another entry's probe saw.
            if self._rest and self._exc is not None:
                self.store_down = True
                self.failures.append((self._rest, self._exc, False))
                self._rest = []
            return None
        return self._todo.pop() if self._todo else None

    def outcome(self, part: list[Entry], exc: Exception | None) -> None:
        if self._probes:
            entry = self._probes.pop()
            self._rest.remove(entry)
            if exc is None:
                self._up = True
                self._probes = []
                if self._rest:
                    self._todo.append(self._rest)
            elif permanent(exc):
                self.failures.append(([entry], exc, True))  # refused for good: dead letter
            else:
                self._rest.append(entry)  # may be the store: tried again with the rest
                self._exc = exc
            return
        if exc is None:
            return
        if self._probes is None:  # the whole batch failed
            self._exc = exc
            if len(part) == 1:
                self.store_down = not permanent(exc)
                self.failures.append((part, exc, True))
                return
            self._probes = self._rand.sample(part, min(3, len(part)))
            self._rest = list(part)
            return
        if len(part) == 1:  # bisection reached an entry that fails alone
            self.failures.append((part, exc, True))
            return
        mid = len(part) // 2
        self._todo.append(part[mid:])
        self._todo.append(part[:mid])


def verdict(entries: list[Entry], exc: Exception, alone: bool, retry: Retry, now: float,
            rand: Callable[[], float]) -> tuple[list[Entry], float]:
    """Count a failed attempt on each of ``entries``; the ones to dead-letter (retries
    spent, or refused for good on its own: ``alone`` and one entry) and when the others
    may be retried."""
    attempts = max(e.attempts for e in entries) + 1
    not_before = now + retry.delay(attempts, rand)
    hopeless = alone and len(entries) == 1 and permanent(exc)
    dead = []
    for entry in entries:
        entry.attempts += 1
        if hopeless or retry.exhausted(entry.attempts):
            dead.append(entry)
    return dead, not_before
