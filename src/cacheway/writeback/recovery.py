"""Replay a write-back journal into the store after a crash.

Records the store already applied are skipped using the marks it recorded in the same
transaction as each batch (:class:`~cacheway.stores.base.JournalMark`): everything at or
under the low water, and any record at or under its key's last applied sequence. The
rest is coalesced per key (as the dirty table would have) and applied in batches, so a
replay interrupted by another crash can run again without applying anything twice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..stores.base import ADD, DELETE, NOTSET, SET, JournalMark, Op, Store

if TYPE_CHECKING:
    from .journal import Journal, Record

__all__ = ["ReplayReport", "replay"]

log = logging.getLogger("cacheway")


@dataclass
class ReplayReport:
    """What a replay found and did."""

    records: int = 0
    skipped: int = 0
    applied: int = 0
    batches: int = 0


@dataclass
class _Pending:
    kind: int
    payload: bytes
    delta: int
    first_seq: int
    last_seq: int


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
        if cur is None or rec.kind != ADD:
            if cur is None:
                pending[k] = _Pending(rec.kind, rec.payload, rec.delta, rec.seq, rec.seq)
            else:
                cur.kind, cur.payload, cur.delta, cur.last_seq = (
                    rec.kind, rec.payload, rec.delta, rec.seq)
            continue
        cur.last_seq = rec.seq
        if cur.kind == ADD:
            cur.delta += rec.delta
        elif cur.kind == DELETE:
            cur.kind, cur.payload, cur.delta = SET, dumps(rec.delta), 0
        else:
            base = loads(cur.payload)
            cur.payload = dumps(int(base) + rec.delta)
    return pending


def replay(journal: Journal, store: Store, *, batch_size: int = 500) -> ReplayReport:
    """Apply the journal's unacknowledged records to ``store`` and checkpoint the journal.

    One journal serves one namespace's engine, so one store gets all its records.
    """
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
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        ops = []
        for (ns, key), p in chunk:
            value: Any = NOTSET
            if p.kind == ADD and not getattr(store, "atomic_add", True):
                row = store.fetch(ns, [key]).get(key)
                base: Any = 0
                if row is not None:
                    base = row.value if row.value is not NOTSET else store.serializer.loads(
                        row.payload or b"0")
                value = int(base) + p.delta
            ops.append(Op(ns, key, p.kind, p.payload if p.kind == SET else None, p.delta, value))
        rest = [p.first_seq for _, p in items[i + batch_size :]]
        mark_low = (min(rest) - 1) if rest else journal.last_seq
        store.apply(ops, journal=JournalMark(journal.id, mark_low, [p.last_seq for _, p in chunk]))
        report.applied += len(ops)
        report.batches += 1
    journal.checkpoint(journal.last_seq)
    if report.applied:
        log.warning(
            "cacheway: replayed %d writes (%d records, %d already applied) from journal %s",
            report.applied, report.records, report.skipped, journal.id,
        )
    return report
