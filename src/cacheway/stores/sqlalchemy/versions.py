"""Batches holding versioned ops (``Op.version``) in SQLAlchemyStore's key/value mode.

:func:`plan_versioned` decides, from the rows the batch's transaction locked, what each
key ends as; the store then writes only that. A versioned SET or DELETE lands only when
its version is greater than the row's (set-if-newer), else it is reported
``Applied(<row's version>, applied=False)``; a versioned DELETE leaves a *tombstone*
(the row with a NULL value, which reads skip) holding its version, so an older SET
arriving later stays skipped; a versioned ADD always adds its delta and gives the row
the greater of the two versions. Unversioned ops of the batch are stamped above every
version the batch holds, and the version counter ends at least that high.

Every batch of the store locks the counter row first, so no other writer changes the
rows between the read and the write.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..base import ADD, DELETE, SET, Applied, Op

__all__ = ["plan_versioned"]

Key = tuple[str, str]
#: What a key ends as: (payload, version) — a NULL payload is a tombstone — or None
#: (deleted).
Final = tuple[bytes | None, int] | None


def plan_versioned(
    ops: Sequence[Op], before: int, stored: dict[Key, tuple[bytes | None, int]],
    counter: Callable[[str, bytes | None, bool], int], dumps: Callable[[int], bytes],
) -> tuple[list[Applied], dict[Key, Final], int]:
    """(results, what each written key ends as, the version counter's new value).

    ``before``: the counter before the batch; ``stored``: the locked rows of the keys
    of the versioned ops and of the adds; ``counter(key, payload, exists)``: the
    stored integer of a counter (raises when it is not one); ``dumps``: encodes a
    counter's new value."""
    top = max(before, *(op.version for op in ops if op.version is not None))
    final: dict[Key, Final] = {}
    results: list[Applied] = []
    for op in ops:
        k = (op.namespace, op.key)
        current = final[k] if k in final else stored.get(k)
        version = op.version
        if version is None:
            top += 1
            version = top
        elif op.kind != ADD and current is not None and version <= current[1]:
            results.append(Applied(current[1], None, False))
            continue
        if op.kind == SET:
            final[k] = (op.payload, version)
            results.append(Applied(version))
        elif op.kind == DELETE:
            final[k] = None if op.version is None else (None, version)
            results.append(Applied(version))
        else:
            payload = None if current is None else current[0]
            new = counter(op.key, payload, payload is not None) + op.delta
            if op.version is not None and current is not None:
                version = max(version, current[1])
            final[k] = (dumps(new), version)
            results.append(Applied(version, new))
    return results, final, top
