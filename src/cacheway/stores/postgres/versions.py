"""Versioned ops (``Op.version``) in PostgresStore's key/value mode.

A versioned SET or DELETE is one upsert ``... ON CONFLICT DO UPDATE ... WHERE
t.version < excluded.version``: the row's lock orders it against every other writer
of the key, and a version not greater than the row's leaves the row as it is (still
locked, so the version read back for the report is the row's latest). A versioned
DELETE writes a *tombstone*: the row with a NULL value (reads skip it) holding the
delete's version, so an older SET arriving later is skipped instead of bringing the key
back. Versioned ADDs are in :mod:`cacheway.stores.postgres.kv` (``_add``).

After the batch's writes the table's sequence is raised to at least every version of
the batch (:func:`raise_sequence`), so writes the store stamps itself afterwards are
newer than all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..base import SET, Applied, Op

if TYPE_CHECKING:
    from psycopg import Cursor

__all__ = ["SEQ_LOCK_CLASS", "one_trip_reports", "raise_sequence", "write_sets"]

# Advisory-lock class id of the sequence raise ("cv"); cacheway's DDL lock is "cw".
SEQ_LOCK_CLASS = 0x6376


def write_sets(cur: Cursor[Any], q: dict[str, str], ops: Sequence[Op], idx: list[int],
               out: list[Applied | None], payload: Callable[[Op], Any]) -> None:
    """The versioned SETs and DELETEs at positions ``idx`` (no key twice), set-if-newer;
    a skipped op reports the row's version and ``applied=False``."""
    nss = [ops[i].namespace for i in idx]
    keys = [ops[i].key for i in idx]
    cur.execute(q["vset"], (nss, keys,
                            [payload(ops[i]) if ops[i].kind == SET else None for i in idx],
                            [ops[i].version for i in idx]))
    landed = {(ns, k): v for ns, k, v in cur.fetchall()}
    skipped = [i for i in idx if (ops[i].namespace, ops[i].key) not in landed]
    current: dict[tuple[str, str], int] = {}
    if skipped:
        cur.execute(q["versions"], ([ops[i].namespace for i in skipped],
                                    [ops[i].key for i in skipped]))
        current = {(ns, k): v for ns, k, v in cur.fetchall()}
    for i in idx:
        ident = (ops[i].namespace, ops[i].key)
        version = landed.get(ident)
        out[i] = (Applied(version) if version is not None
                  else Applied(current[ident], None, False))


def one_trip_reports(ops: Sequence[Op], landed: dict[tuple[str, str], int],
                     current: dict[tuple[str, str], int]) -> list[Applied]:
    """What each op of a one-trip batch (``kv_queries()["one_trip"]``) reports: the
    version it ``landed`` with, else ``applied=False`` and the row's ``current`` version,
    read after the commit (a row deleted since, by an unversioned delete, reports none)."""
    out = []
    for op in ops:
        ident = (op.namespace, op.key)
        v = landed.get(ident)
        out.append(Applied(v) if v is not None else Applied(current.get(ident), None, False))
    return out


def raise_sequence(cur: Cursor[Any], q: dict[str, str], seq: str, top: int) -> None:
    """Raise the sequence ``seq`` to at least ``top``. ``setval`` is not transactional
    and a read-then-set could race another batch's backwards: both run under a
    transaction-level advisory lock of the sequence, held until the commit."""
    cur.execute(q["seq_lock"], (SEQ_LOCK_CLASS, seq))
    cur.execute(q["seq_raise"], (top,))
