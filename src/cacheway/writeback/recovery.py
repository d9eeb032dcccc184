"""Replay a write-back journal into the store after a crash.

Records the store already applied are skipped using the marks it recorded in the same
transaction as each batch (:class:`~cacheway.stores.base.JournalMark`): everything at or
under the low water, and any record at or under its key's last applied sequence. The
rest is coalesced per key (as the dirty table would have) and applied in batches, so a
replay interrupted by another crash can run again without applying anything twice.

A write the store refuses (:class:`~cacheway.errors.InvalidWriteError`: a counter over a
row another process made a string) is isolated by bisecting its batch, handed to
``on_dead_letter`` and dropped from the journal, as the flusher would have done: one bad
record never keeps the application from starting.

The journals of forked processes (:meth:`~cacheway.writeback.journal.Journal.for_child`)
that died are replayed with their parent's journal, and removed.
"""

from __future__ import annotations

import heapq
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidWriteError
from ..stores.base import ADD, DELETE, NOTSET, SET, JournalMark, Op, Store, store_capabilities
from .journal import Journal, JournalInUse, abandoned_children
from .journal_files import fsync_dir

if TYPE_CHECKING:
    from ..backends.base import Backend
    from .journal import Record

__all__ = ["CACHE_STORE_MARK", "Invalidate", "OnDeadLetter", "ReplayReport", "mark_cache_store",
           "open_replayed", "replay", "replay_children", "replay_namespaces"]

log = logging.getLogger("cacheway")

OnDeadLetter = Callable[[str, Any, Exception], object]
"""``on_dead_letter(key, value, exc)``: value is the value for a set, None for a delete,
the summed delta for increments that had no value before them in the journal."""

Invalidate = Callable[[list[tuple[str, str]]], None]
"""Called with the (namespace, key) pairs a replay wrote (or gave up): shared copies of
them (written by the process that died before its writes reached the store) are stale."""


@dataclass
class ReplayReport:
    """What a replay found and did."""

    records: int = 0
    skipped: int = 0
    applied: int = 0
    batches: int = 0
    dead_letters: int = 0
    children: int = 0  # journals of dead forked processes replayed (and removed)

    def add(self, other: ReplayReport) -> None:
        for name in ("records", "skipped", "applied", "batches", "dead_letters", "children"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class _Pending:
    kind: int
    payload: bytes
    delta: int
    first_seq: int
    last_seq: int
    expires_at: float | None = None  # the newest write's (expire=)
    #: the newest write's version from a shared backend's clock (its VERSION record):
    #: applied set-if-newer, so a later write another process acknowledged stays
    version: int | None = None


_Item = tuple[tuple[str, str], _Pending]


def _coalesce(records: list[Record], low: int, applied: dict[tuple[str, str], int],
              store: Store, report: ReplayReport) -> dict[tuple[str, str], _Pending]:
    pending: dict[tuple[str, str], _Pending] = {}
    loads, dumps = store.serializer.loads, store.serializer.dumps
    for rec in records:
        report.records += 1
        k = (rec.namespace, rec.key)
        if rec.seq <= low or rec.seq <= applied.get(k, 0):
            report.skipped += 1
            continue
        cur = pending.get(k)
        # (an ADD is relative: applied unversioned, as the flusher applies counters)
        version = rec.version if rec.kind != ADD else None
        if cur is None or rec.kind != ADD:
            if cur is None:
                pending[k] = _Pending(rec.kind, rec.payload, rec.delta, rec.seq, rec.seq,
                                      rec.expires_at, version)
            else:
                cur.kind, cur.payload, cur.delta, cur.last_seq, cur.expires_at = (
                    rec.kind, rec.payload, rec.delta, rec.seq, rec.expires_at)
                cur.version = version
            continue
        cur.last_seq = rec.seq
        cur.expires_at = rec.expires_at
        cur.version = None
        if cur.kind == ADD:
            cur.delta += rec.delta
        elif cur.kind == DELETE:
            cur.kind, cur.payload, cur.delta = SET, dumps(rec.delta), 0
        else:
            base = loads(cur.payload)
            cur.payload = dumps(int(base) + rec.delta)
    return pending


class _Replay:
    """Applies the coalesced items of one journal, isolating writes the store refuses."""

    def __init__(self, journal: Journal, store: Store, report: ReplayReport,
                 on_dead_letter: OnDeadLetter | None) -> None:
        self.journal, self.store, self.report = journal, store, report
        self.on_dead_letter = on_dead_letter
        self.atomic_add = store_capabilities(store).atomic_add
        self.waiting: dict[tuple[str, str], int] = {}  # first seq of what is not yet applied
        self.firsts: list[tuple[int, tuple[str, str]]] = []  # heap of them (lazily pruned)

    def run(self, items: list[_Item], batch_size: int,
            invalidate: Invalidate | None) -> None:
        self.waiting = {k: p.first_seq for k, p in items}
        self.firsts = [(p.first_seq, k) for k, p in items]
        heapq.heapify(self.firsts)
        for i in range(0, len(items), batch_size):
            chunk = [(k, p, self._op(k, p)) for k, p in items[i : i + batch_size]]
            self._apply(chunk)
            if invalidate is not None:
                invalidate([k for k, _, _ in chunk])

    def _op(self, k: tuple[str, str], p: _Pending) -> Op:
        value: Any = NOTSET
        store = self.store
        if p.kind == ADD and not self.atomic_add:
            row = store.fetch(k[0], [k[1]]).get(k[1])
            base: Any = 0
            if row is not None:
                base = row.value if row.value is not NOTSET else store.serializer.loads(
                    row.payload or b"0")
            value = int(base) + p.delta
        return Op(k[0], k[1], p.kind, p.payload if p.kind == SET else None, p.delta, value,
                  p.version, p.expires_at)

    def _apply(self, part: list[tuple[tuple[str, str], _Pending, Op]]) -> None:
        for k, _, _ in part:
            del self.waiting[k]
        # Every record below the first one still waiting (or refused and not yet dropped)
        # is in the store once this commits.
        firsts = self.firsts
        while firsts and firsts[0][1] not in self.waiting:
            heapq.heappop(firsts)
        low = (firsts[0][0] if firsts else self.journal.last_seq + 1) - 1
        mark = JournalMark(self.journal.id, low, [p.last_seq for _, p, _ in part])
        try:
            self.store.apply([op for _, _, op in part], journal=mark)
        except InvalidWriteError as exc:
            for k, p, _ in part:
                self.waiting[k] = p.first_seq
                heapq.heappush(self.firsts, (p.first_seq, k))
            if len(part) == 1:
                self._dead_letter(part[0][0], part[0][1], exc)
                return
            mid = len(part) // 2
            self._apply(part[:mid])
            self._apply(part[mid:])
            return
        self.report.applied += len(part)
        self.report.batches += 1

    def _dead_letter(self, k: tuple[str, str], p: _Pending, exc: InvalidWriteError) -> None:
        namespace, key = k
        # Dropped before anyone is told: a write the application heard was given up must
        # never be applied by a later replay.
        self.journal.drop(namespace, key, p.last_seq)
        del self.waiting[k]
        self.report.dead_letters += 1
        value: Any = None
        if p.kind == SET:
            value = self.store.serializer.loads(p.payload)
        elif p.kind == ADD:
            value = p.delta
        if self.on_dead_letter is None:
            log.error("cacheway: replay of journal %s: dropping write of key %r in namespace "
                      "%r: %r", self.journal.id, key, namespace or "default", exc)
            return
        try:
            self.on_dead_letter(key, value, exc)
        except Exception:
            log.exception("cacheway: on_dead_letter raised for key %r", key)


def replay(
    journal: Journal,
    store: Store,
    *,
    batch_size: int = 500,
    on_dead_letter: OnDeadLetter | None = None,
    invalidate: Invalidate | None = None,
    children: bool = True,
) -> ReplayReport:
    """Apply the journal's unacknowledged records to ``store`` and checkpoint the journal;
    then (``children``) the same for the journals of its dead forked processes.

    One journal serves one namespace's engine, so one store gets all its records. A write
    the store refuses goes to ``on_dead_letter(key, value, exc)`` (logged when None) and is
    dropped from the journal. ``invalidate`` is called after each batch with the
    (namespace, key) pairs of the batch, and once with the keys of the remaining live
    records (skipped as already applied), so the caller can drop shared cached copies.
    """
    report = _replay_one(journal, store, batch_size, on_dead_letter, invalidate)
    if children:
        report.add(replay_children(journal.path, store, batch_size=batch_size,
                                   on_dead_letter=on_dead_letter, invalidate=invalidate))
    return report


def replay_children(
    path: str | os.PathLike[str],
    store: Store,
    *,
    batch_size: int = 500,
    on_dead_letter: OnDeadLetter | None = None,
    invalidate: Invalidate | None = None,
) -> ReplayReport:
    """Replay into ``store`` and remove the journals of the dead processes forked from the
    one that has (or had) the journal at ``path`` open, at any depth, parents first.
    Safe to run in several processes at once: a journal another one holds is skipped."""
    return _replay_free(abandoned_children(path), store, batch_size, on_dead_letter,
                        invalidate, dead_child=True)


def _replay_free(paths: Iterable[str | os.PathLike[str]], store: Store, batch_size: int,
                 on_dead_letter: OnDeadLetter | None, invalidate: Invalidate | None, *,
                 dead_child: bool) -> ReplayReport:
    """Replay into ``store`` each journal at ``paths`` that no other process holds:
    a ``dead_child``'s alone, then removed; a namespace's with its own dead children."""
    report = ReplayReport()
    for found in paths:
        try:
            journal = Journal(found, fsync="never")  # drop() and checkpoints sync anyway
        except JournalInUse:
            continue
        try:
            if dead_child:
                report.add(_replay_one(journal, store, batch_size, on_dead_letter,
                                       invalidate))
                journal.remove()
            else:
                report.add(replay(journal, store, batch_size=batch_size,
                                  on_dead_letter=on_dead_letter, invalidate=invalidate))
        finally:
            journal.close()
        report.children += dead_child
    return report


#: In the journal ``PATH.<name>`` of a namespace that writes to its cache's own store:
#: whoever reopens the cache's journal ``PATH`` replays it too, namespace opened or not.
CACHE_STORE_MARK = "cache-store"


def mark_cache_store(path: str | os.PathLike[str]) -> None:
    """Mark the namespace journal at ``path`` as one of its cache's store (durably: the
    replay of a crash must find the mark)."""
    mark = os.path.join(os.fspath(path), CACHE_STORE_MARK)
    if os.path.exists(mark):
        return
    fd = os.open(mark, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(Path(path))


def open_replayed(path: str, fsync: str, store: Store, *, namespace: str, cache_store: bool,
                  batch_size: int, on_dead_letter: OnDeadLetter | None,
                  backend: Backend) -> Journal:
    """The journal at ``path`` of a cache's engine, opened and replayed into ``store``:
    the default namespace's open replays the namespaces' journals too (see
    :func:`replay_namespaces`); another ``namespace``'s is marked when it writes to the
    cache's own store (``cache_store``). The replay drops ``backend``'s copies of the
    keys it applies."""

    def invalidate(keys: list[tuple[str, str]]) -> None:
        # The process that wrote the journal died with these writes in the shared
        # backend but not in the store (or not stamped): whatever copy is there is stale.
        backend.delete_many([f"{ns}:{key}" for ns, key in keys])

    journal = Journal(path, fsync=fsync)
    try:
        replay(journal, store, batch_size=batch_size, on_dead_letter=on_dead_letter,
               invalidate=invalidate)
        if not namespace:
            replay_namespaces(path, store, batch_size=batch_size,
                              on_dead_letter=on_dead_letter, invalidate=invalidate)
        elif cache_store:
            mark_cache_store(path)
    except BaseException:
        journal.close()
        raise
    return journal


def replay_namespaces(
    path: str | os.PathLike[str],
    store: Store,
    *,
    batch_size: int = 500,
    on_dead_letter: OnDeadLetter | None = None,
    invalidate: Invalidate | None = None,
) -> ReplayReport:
    """Replay into ``store`` the namespace journals ``PATH.<name>`` next to the cache
    journal at ``path`` that carry :data:`CACHE_STORE_MARK` (a namespace with a store of
    its own replays when it opens), with their dead children; a journal another process
    holds is skipped."""
    base = os.fspath(path)
    parent, name = os.path.split(os.path.abspath(base))
    try:
        names = sorted(os.listdir(parent))
    except FileNotFoundError:
        return ReplayReport()
    # (a forked child's journal, NAME.x@pid, is replayed with its parent's)
    marked = [os.path.join(parent, entry) for entry in names
              if entry.startswith(name + ".") and "@" not in entry
              and os.path.exists(os.path.join(parent, entry, CACHE_STORE_MARK))]
    return _replay_free(marked, store, batch_size, on_dead_letter, invalidate,
                        dead_child=False)


def _replay_one(journal: Journal, store: Store, batch_size: int,
                on_dead_letter: OnDeadLetter | None,
                invalidate: Invalidate | None) -> ReplayReport:
    report = ReplayReport()
    low, applied = store.applied_state(journal.id)
    top = max([low, *applied.values()])
    if top > journal.last_seq:
        # The store applied records the journal lost (a power cut under fsync="everysec"):
        # continue numbering after them, or new records would be skipped as applied.
        journal.checkpoint(top)
    records = journal.records()
    if not records:
        return report
    pending = _coalesce(records, low, applied, store, report)
    items = sorted(pending.items(), key=lambda kv: kv[1].last_seq)
    _Replay(journal, store, report, on_dead_letter).run(items, batch_size, invalidate)
    if invalidate is not None:
        # Records the store had applied before the crash: the process may have died before
        # it stamped the shared copies of them.
        skipped = {(r.namespace, r.key) for r in records} - pending.keys()
        if skipped:
            invalidate(sorted(skipped))
    journal.checkpoint(journal.last_seq)
    if report.applied or report.dead_letters:
        log.warning(
            "cacheway: replayed %d writes (%d records, %d already applied, %d refused and "
            "dropped) from journal %s",
            report.applied, report.records, report.skipped, report.dead_letters, journal.id,
        )
    return report
