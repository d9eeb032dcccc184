"""A queue's stream entries as Python sees them, and how a batch of them coalesces.

Coalescing per key, in stream order: a SET or DELETE replaces what came before (last
write wins), ADD deltas sum. An ADD after a SET or DELETE of its key would need the
SET's value decoded and added to (the write-back dirty table's rule: ``SET v + ADD d =
SET v + d``, with the value the accepting process computed — which another process may
not have seen); instead the batch is cut before it and the next batch applies the add
as a delta, on top of the row the store then holds.
"""

from __future__ import annotations

from typing import NamedTuple

from ..stores.base import ADD, Op
from .layout import seq_of

__all__ = ["QueueEntry", "coalesce", "parse_entry"]


class QueueEntry(NamedTuple):
    """One stream entry: an accepted write."""

    id: bytes
    seq: int
    namespace: str
    key: str
    kind: int
    payload: bytes | None
    delta: int
    version: int
    ttl_px: int | None
    copy: bytes


def parse_entry(entry_id: bytes, fields: dict[bytes, bytes]) -> QueueEntry:
    """A stream entry as :data:`scripts.ACCEPT` wrote it."""
    kind = int(fields[b"o"])
    ttl = fields.get(b"t", b"")
    return QueueEntry(
        entry_id, seq_of(entry_id), fields[b"n"].decode(), fields[b"k"].decode(), kind,
        fields[b"p"] if kind != ADD else None, int(fields.get(b"d") or 0),
        int(fields[b"v"]), int(ttl) if ttl else None, fields.get(b"c", b""))


def coalesce(entries: list[QueueEntry]) -> tuple[list[Op], list[int], list[QueueEntry], int]:
    """``(ops, seqs, last entry of each op, taken)``: the longest prefix of ``entries``
    (``taken`` of them) coalesced per key in order, ``seqs[i]`` the last seq folded into
    ``ops[i]``.

    >>> e = lambda i, k, kind, d=0: QueueEntry(b"1-%d" % i, i, "", k, kind, b"v%d" % i,
    ...                                        d, i, None, b"")
    >>> ops, seqs, _, n = coalesce([e(1, "a", ADD, 2), e(2, "a", ADD, 3), e(3, "b", 0)])
    >>> [(o.key, o.kind, o.delta) for o in ops], seqs, n
    ([('a', 2, 5), ('b', 0, 0)], [2, 3], 3)
    >>> coalesce([e(1, "a", 0), e(2, "a", ADD, 1), e(3, "b", 0)])[3]  # cut before the add
    1
    """
    by_key: dict[tuple[str, str], int] = {}
    ops: list[Op] = []
    seqs: list[int] = []
    lasts: list[QueueEntry] = []
    taken = 0
    for e in entries:
        k = (e.namespace, e.key)
        i = by_key.get(k)
        if i is None:
            by_key[k] = len(ops)
            ops.append(Op(e.namespace, e.key, e.kind, e.payload, e.delta, None, e.version))
            seqs.append(e.seq)
            lasts.append(e)
        else:
            old = ops[i]
            if e.kind == ADD and old.kind != ADD:
                break  # SET v + ADD d needs v decoded: the next batch applies the add
            delta = old.delta + e.delta if e.kind == ADD else 0
            ops[i] = Op(e.namespace, e.key, e.kind, e.payload, delta, None, e.version)
            seqs[i] = e.seq
            lasts[i] = e
        taken += 1
    return ops, seqs, lasts, taken
