"""Versioned ops (``Op.version``) in the row mode of SQLiteStore and SQLAlchemyStore
(with a ``version_column``): the decisions, taken in Python on versions read in the
batch's transaction (both stores serialize their batches: ``BEGIN IMMEDIATE``, or the
lock of the counter row).

A versioned SET or DELETE lands only when its version is greater than the key's
current one (set-if-newer); otherwise it is skipped and reported ``Applied(<current>,
applied=False)``. The current version of a key is its row's ``version_column``, or,
for a deleted row, its *tombstone*: a versioned DELETE records the key's version in
the journal-mark table ``{table}_cw_applied`` under the reserved journal name
:data:`TOMBSTONES` (the user's table cannot hold a row for a deleted key), so an older
SET arriving later is skipped instead of bringing the row back. Unversioned ops of the
batch are stamped above every version it holds, and the counter ends at least there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from .base import DELETE, Op

__all__ = ["TOMBSTONES", "plan"]

#: The journal name under which ``{table}_cw_applied`` keeps tombstones (journal ids
#: are hex: no journal can have it); namespace "", seq = the delete's version.
TOMBSTONES = "cw:tombstones"


def plan(ops: Sequence[Op], before: int, current: dict[str, int],
         fresh: Iterator[int] | None = None) -> tuple[list[int], list[bool], int]:
    """(each op's version, whether it lands, the counter's new value) for a batch
    holding versions. ``before``: the counter before the batch; ``current``: the
    versions of the keys of the versioned ops (rows and tombstones), updated here;
    ``fresh``: versions for the unversioned ops (from a sequence already raised above
    the batch's versions), else they count on from the counter."""
    top = max(before, *(op.version for op in ops if op.version is not None))
    stamps: list[int] = []
    lands: list[bool] = []
    for op in ops:
        version = op.version
        if version is None:
            top = next(fresh) if fresh is not None else top + 1
            stamps.append(top)
            lands.append(True)
            if op.kind == DELETE:
                current.pop(op.key, None)
            else:
                current[op.key] = top
            continue
        now = current.get(op.key)
        if now is not None and version <= now:
            stamps.append(now)
            lands.append(False)
            continue
        stamps.append(version)
        lands.append(True)
        current[op.key] = version
    return stamps, lands, top
