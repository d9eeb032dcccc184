"""The dirty table of a write-back cache: pure bookkeeping, no I/O, no locks.

It holds every write accepted and not yet acknowledged by the store, coalesced per
key. The caller (the write-back engine, sync or async) owns the lock and the I/O.

Coalescing rules, applied when a key that is already dirty is written again:

========== =========== ======================================
pending    new write   result
========== =========== ======================================
any        SET/DELETE  the new write (last write wins)
SET v      ADD d       SET v + d (the caller's absolute value)
DELETE     ADD d       SET d
ADD a      ADD d       ADD a + d
========== =========== ======================================

Entries live in three places: ``dirty`` (accepted, ordered by their first unflushed
write, so the oldest write leaves first), ``inflight`` (in the batch being written) and
``parked`` (failed, waiting for a retry). ``held`` maps each key of the last two to its
entry. A key's newest pending write is its ``dirty`` entry, else its ``held`` one: that is
what reads see (:meth:`DirtyTable.pending`).

Readers look without the lock, so every move keeps the entry findable: it enters its
new place before it leaves the old one, and leaves ``held`` only once the store has it.

``staged`` is the hot path's inbox: a plain ``set`` on a process-local backend extends
it by ``key, value, payload, ttl`` (four slots: no record object to allocate and keep,
under the caller's lock). Staged writes are newer than every entry, so they are folded
into ``dirty``, in order (:meth:`drain`), only where an answer depends on them: what a
key's newest write is (:meth:`pending`, :meth:`put`, :meth:`ack` of a counter) and how
many entries are pending (``len``). The flusher folds just enough for its next batch
(:meth:`fill`): a writer that outruns it does not make it fold writes it cannot flush
yet. :meth:`peek`, for readers without the lock, does not see staged writes, which is
why a hot-path write also sets the backend's copy before it returns, and readers look
there first.
"""

from __future__ import annotations

from itertools import islice
from operator import attrgetter
from typing import Any

from ..stats import Counters
from ..stores.base import ADD, DELETE, SET

__all__ = ["DirtyTable", "Entry", "combine"]


class Entry:
    """One key's pending state."""

    __slots__ = (
        "attempts",
        "born",
        "delta",
        "expires_at",
        "first_seq",
        "key",
        "kind",
        "last_seq",
        "not_before",
        "payload",
        "ttl",
        "value",
        "version",
    )

    def __init__(
        self, key: str, kind: int, value: Any, payload: bytes | None, delta: int,
        ttl: float | None, seq: int, born: float,
    ) -> None:
        self.key = key
        self.kind = kind
        self.value = value
        self.payload = payload
        self.delta = delta
        self.ttl = ttl
        self.first_seq = seq
        self.last_seq = seq
        self.born = born
        self.attempts = 0
        self.not_before = 0.0
        # the version a shared backend's clock gave the newest write (None: the store
        # stamps its own)
        self.version: int | None = None
        # when the newest write's data ends (expire=; None: never)
        self.expires_at: float | None = None

    def __repr__(self) -> str:
        kind = ("SET", "DELETE", "ADD")[self.kind]
        return f"Entry({self.key!r}, {kind}, seq={self.first_seq}..{self.last_seq})"

    def absorb(self, kind: int, value: Any, payload: bytes | None, delta: int,
               ttl: float | None, seq: int) -> None:
        """Coalesce a newer write into this entry (see the module's table)."""
        if kind == ADD and self.kind == ADD:
            self.delta += delta
        elif kind == ADD:
            # SET v + ADD d, or DELETE + ADD d: the caller computed the absolute value.
            kind = SET
            delta = 0
        self.kind = kind
        self.value = value
        self.payload = payload
        if kind != ADD:
            self.delta = 0
        self.ttl = ttl
        self.last_seq = seq
        self.version = None  # the caller sets the new write's version, if it has one
        self.expires_at = None  # and its expiry


def combine(old: Entry, new: Entry) -> Entry:
    """``new`` coalesced on top of ``old`` (an older entry of the same key)."""
    if new.kind == ADD:
        if old.kind == ADD:
            new.delta += old.delta
        else:
            new.kind = SET
            new.delta = 0
        new.attempts = old.attempts
        new.not_before = old.not_before
    new.first_seq = min(old.first_seq, new.first_seq)
    new.born = min(old.born, new.born)
    return new


class DirtyTable:
    """Pending writes of one namespace."""

    def __init__(self, counters: Counters | None = None) -> None:
        self.dirty: dict[str, Entry] = {}
        self.inflight: dict[str, Entry] = {}
        self.parked: dict[str, Entry] = {}
        self.held: dict[str, Entry] = {}
        # key, value, payload, ttl of each staged SET, flat; the list object never
        # changes: writers keep it
        self.staged: list[Any] = []
        self.staged_born = 0.0  # when the first of the staged writes was accepted
        # Staged writes may take the table up to stage_limit entries (0: no staging);
        # stage_cap is what is left of it as of the last drain, in slots of ``staged``.
        self.stage_limit = 0
        self.stage_cap = 0
        self.paused = 0  # while > 0, nothing is staged (stage_cap stays 0)
        self.seq = 0  # the sequence number of the last accepted write
        self._counters = counters if counters is not None else Counters()

    def __len__(self) -> int:
        if self.staged:
            self.drain()
        return len(self.dirty) + len(self.inflight) + len(self.parked)

    def drain(self, limit: int | None = None) -> None:
        """Fold the staged writes (the first ``limit`` of them) into ``dirty``, in the
        order they were accepted."""
        staged = self.staged
        if staged:
            if limit is None or 4 * limit >= len(staged):
                slots = iter(staged.copy())
                staged.clear()
            else:
                slots = iter(staged[: 4 * limit])
                del staged[: 4 * limit]
            born, seq0, coalesced = self.staged_born, self.seq, 0
            seq = seq0
            dirty, parked = self.dirty, self.parked
            for key, value, payload, ttl in zip(slots, slots, slots, slots):
                seq += 1
                entry = dirty.get(key)
                if entry is not None:  # put() inlined for the two common cases
                    entry.kind = SET
                    entry.value = value
                    entry.payload = payload
                    entry.delta = 0
                    entry.ttl = ttl
                    entry.last_seq = seq
                    coalesced += 1
                elif not parked:
                    dirty[key] = Entry(key, SET, value, payload, 0, ttl, seq, born)
                else:
                    # _put, not put: put() would fold the rest of ``staged`` first, ahead
                    # of this (older) write.
                    coalesced += self._put(key, SET, value, payload, 0, ttl, seq, born)
            self.seq = seq
            self._counters.writes += seq - seq0
            self._counters.coalesced += coalesced
        held = len(self.dirty) + len(self.inflight) + len(self.parked)
        self.stage_cap = 0 if self.paused else max(0, self.stage_limit - held) * 4

    def fill(self, batch_size: int) -> None:
        """Fold staged writes until ``dirty`` holds ``batch_size`` entries (or none is
        left): what the flusher's next batch needs."""
        while self.staged and len(self.dirty) < batch_size:
            self.drain(batch_size - len(self.dirty))

    def peek(self, key: str) -> Entry | None:
        """:meth:`pending` for a reader without the lock: staged writes are not seen."""
        entry = self.dirty.get(key)
        return entry if entry is not None else self.held.get(key)

    def pending(self, key: str) -> Entry | None:
        """The entry of ``key``'s newest pending write, or None when it is clean."""
        if self.staged:
            self.drain()
        entry = self.dirty.get(key)
        return entry if entry is not None else self.held.get(key)

    def put(
        self, key: str, kind: int, value: Any, payload: bytes | None, delta: int,
        ttl: float | None, seq: int, now: float, version: int | None = None,
        expires_at: float | None = None,
    ) -> bool:
        """Accept a write (``version``: from a shared backend's clock; ``expires_at``:
        when its data ends); True when it was absorbed into an already-dirty entry."""
        if self.staged:
            self.drain()  # staged writes came first
        absorbed = self._put(key, kind, value, payload, delta, ttl, seq, now)
        if version is not None or expires_at is not None:
            entry = self.dirty.get(key)
            if entry is None:
                entry = self.parked[key]
            entry.version = version
            entry.expires_at = expires_at
        return absorbed

    def _put(
        self, key: str, kind: int, value: Any, payload: bytes | None, delta: int,
        ttl: float | None, seq: int, now: float,
    ) -> bool:
        entry = self.dirty.get(key)
        if entry is None:
            entry = self.parked.get(key)
            if entry is not None and kind != ADD:
                # A full overwrite of a parked (failing) entry starts fresh.
                entry.attempts = 0
                entry.not_before = 0.0
        if entry is not None:
            entry.absorb(kind, value, payload, delta, ttl, seq)
            return True
        self.dirty[key] = Entry(key, kind, value, payload, delta, ttl, seq, now)
        self.took_room()
        return False

    def took_room(self) -> None:
        """A new entry joined outside :meth:`drain`: staged writes get one slot less
        (without this, writes staged after it could take the table past its limit)."""
        if self.stage_cap:
            self.stage_cap = max(0, self.stage_cap - 4)

    def ready_parked(self, now: float) -> bool:
        return any(e.not_before <= now for e in self.parked.values())

    def next_parked(self) -> float | None:
        return min((e.not_before for e in self.parked.values()), default=None)

    def oldest_born(self) -> float | None:
        for entry in self.dirty.values():
            return entry.born
        return self.staged_born if self.staged else None

    def take(self, batch_size: int, now: float) -> list[Entry]:
        """Move up to ``batch_size`` ready entries to ``inflight``: retries first, then the
        oldest dirty ones (staged writes are newer: see :meth:`fill`). The batch is in
        order of each key's last accepted write."""
        batch: list[Entry] = []
        inflight = self.inflight
        if self.parked:
            for key, entry in list(self.parked.items()):
                if len(batch) >= batch_size:
                    break
                if entry.not_before <= now:
                    del self.parked[key]  # stays in held
                    inflight[key] = entry
                    batch.append(entry)
        dirty, held = self.dirty, self.held
        room = batch_size - len(batch)
        if room > 0 and dirty:
            # One pass over the front: popping the first key one at a time would rescan the
            # dict's deleted slots each time (quadratic on a long backlog).
            for key in list(islice(dirty, room)):
                entry = dirty[key]
                held[key] = inflight[key] = entry
                del dirty[key]
                batch.append(entry)
        batch.sort(key=_last_seq)
        return batch

    def take_one_parked(self) -> Entry:
        """Move the oldest parked entry to ``inflight`` (a probe of the store), ready or not."""
        key = next(iter(self.parked))
        entry = self.parked.pop(key)  # stays in held
        self.inflight[key] = entry
        return entry

    def ack(self, entry: Entry) -> bool:
        """The store has ``entry``; True when no newer write of its key is pending (a
        staged write is looked for only behind a counter, whose copy the caller then
        replaces with the store's total)."""
        if self.staged and entry.kind == ADD:
            self.drain()
        key = entry.key
        del self.inflight[key]
        if self.held.get(key) is entry:
            del self.held[key]
        return key not in self.dirty

    def park(self, entry: Entry, not_before: float) -> None:
        """A failed entry waits for a retry, merged with any newer write of its key (a
        staged one joins it when it is folded in: put() looks in ``parked``)."""
        key = entry.key
        entry.not_before = not_before
        newer = self.dirty.get(key)
        if newer is not None:
            entry = combine(entry, newer)
            if newer.kind != ADD:
                entry.not_before = 0.0
        self.held[key] = self.parked[key] = entry
        del self.inflight[key]
        if newer is not None:
            del self.dirty[key]

    def low_water(self, next_seq: int, exclude: dict[str, Entry] | None = None) -> int:
        """Every write with a sequence number <= the result is acknowledged by the store
        (``exclude``: entries about to be, e.g. the batch being written). Staged writes
        have no sequence number yet: theirs will be above ``next_seq - 1``."""
        low = next_seq
        for entry in self.dirty.values():
            low = min(low, entry.first_seq)
            break
        for entry in self.parked.values():
            low = min(low, entry.first_seq)
        for entry in self.inflight.values():
            if exclude is None or exclude.get(entry.key) is not entry:
                low = min(low, entry.first_seq)
        return low - 1


_last_seq = attrgetter("last_seq")


assert (SET, DELETE, ADD) == (0, 1, 2)
