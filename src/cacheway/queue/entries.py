"""A queue's stream entries as Python sees them, and how a batch of them coalesces.

Coalescing per key, in stream order: a SET or DELETE replaces what came before (last
write wins), ADD deltas sum. An ADD after a SET or DELETE of its key would need the
SET's value decoded and added to (the write-back dirty table's rule: ``SET v + ADD d =
SET v + d``, with the value the accepting process computed — which another process may
not have seen); instead the batch is cut before it and the next batch applies the add
as a delta, on top of the row the store then holds.

Expiry (``expire=``): an entry carries its write's stamp (``x``, epoch seconds; entries
written without it parse as never expiring), and an op keeps the stamp of the last write
folded into it. An ADD accepted at or after the stamp of the op it would fold into adds
to data that had ended: its counter started again from 0 when it was accepted (the copy
was gone, the pending write read as ended), so the batch is cut before it too, and the
store, which deletes an ended row before a write of its key, applies it from 0.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..stores.base import ADD, Op
from .layout import SEQ_BITS, seq_of

__all__ = ["QueueEntry", "coalesce", "parse_entry", "settle_args"]


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
    #: when the write's data ends (epoch seconds; None: never, or an entry from before
    #: the field existed)
    expires_at: float | None = None

    @property
    def accepted_ms(self) -> int:
        """Redis's time (ms) when the write was accepted: its stream id's first part."""
        return self.seq >> SEQ_BITS


def parse_entry(entry_id: bytes, fields: dict[bytes, bytes]) -> QueueEntry:
    """A stream entry as :data:`scripts.ACCEPT` wrote it."""
    kind = int(fields[b"o"])
    ttl = fields.get(b"t", b"")
    stamp = fields.get(b"x", b"")
    return QueueEntry(
        entry_id, seq_of(entry_id), fields[b"n"].decode(), fields[b"k"].decode(), kind,
        fields[b"p"] if kind != ADD else None, int(fields.get(b"d") or 0),
        int(fields[b"v"]), int(ttl) if ttl else None, fields.get(b"c", b""),
        float(stamp) if stamp else None)


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

    An op keeps its last write's stamp; an ADD accepted once the data it would fold into
    had ended is cut off too (here at 3 ms, the first add's data ended at 2 ms):

    >>> x = lambda i, ms, end: e(i, "a", ADD, 1)._replace(seq=ms << 20, expires_at=end)
    >>> ops, _, _, n = coalesce([x(1, 1, 0.002), x(2, 1, 0.003)])
    >>> [(o.delta, o.expires_at) for o in ops], n
    ([(2, 0.003)], 2)
    >>> coalesce([x(1, 1, 0.002), x(2, 3, 0.005)])[3]
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
            ops.append(Op(e.namespace, e.key, e.kind, e.payload, e.delta, None, e.version,
                          e.expires_at))
            seqs.append(e.seq)
            lasts.append(e)
        else:
            old = ops[i]
            if e.kind == ADD and old.kind != ADD:
                break  # SET v + ADD d needs v decoded: the next batch applies the add
            if e.kind == ADD and ended_before(old.expires_at, e):
                break  # an add to data that had ended: the next batch applies it from 0
            delta = old.delta + e.delta if e.kind == ADD else 0
            ops[i] = Op(e.namespace, e.key, e.kind, e.payload, delta, None, e.version,
                        e.expires_at)
            seqs[i] = e.seq
            lasts[i] = e
        taken += 1
    return ops, seqs, lasts, taken


def ended_before(expires_at: float | None, e: QueueEntry) -> bool:
    """Whether data ending at ``expires_at`` had ended when ``e`` was accepted."""
    return expires_at is not None and e.accepted_ms >= expires_at * 1000


def settle_args(entries: list[QueueEntry]) -> list[Any]:
    """SETTLE's ARGV for the copies of ``entries``: version, ttl PX, expiry stamp."""
    return [a for e in entries for a in (
        e.version, e.ttl_px or "", "" if e.expires_at is None else repr(e.expires_at))]
