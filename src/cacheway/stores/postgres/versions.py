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
from typing import TYPE_CHECKING, Any, cast

from ..base import SET, Applied, Op

if TYPE_CHECKING:
    from psycopg import Cursor

__all__ = ["SEQ_LOCK_CLASS", "one_trip_landed", "one_trip_reports", "one_trip_statement",
           "raise_sequence", "write_sets"]

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


def one_trip_statement(q: dict[str, str], ops: Sequence[Op], seq: str,
                       payload: Callable[[Op], Any]) -> tuple[str, tuple[Any, ...]]:
    """The statement and parameters of a one-trip batch (versioned SETs and DELETEs of
    distinct keys): ``vset_raise1`` for one op, else ``vset_raise`` (see sql.py)."""
    versions = [cast(int, op.version) for op in ops]
    values = [payload(op) if op.kind == SET else None for op in ops]
    if len(ops) == 1:
        op = ops[0]
        return q["vset_raise1"], (op.namespace, op.key, values[0], versions[0],
                                  SEQ_LOCK_CLASS, seq, versions[0])
    return q["vset_raise"], ([op.namespace for op in ops], [op.key for op in ops], values,
                             versions, SEQ_LOCK_CLASS, seq, max(versions))


def one_trip_landed(ops: Sequence[Op], rows: Sequence[tuple[Any, ...]]
                    ) -> tuple[dict[tuple[str, str], int], list[Op]]:
    """From the rows of :func:`one_trip_statement`'s statement (one row of NULLs when no
    op landed): the version each landed op has, and the ops that did not land (their rows
    kept a newer version, to read after the commit for :func:`one_trip_reports`)."""
    landed = {(ns, k): v for ns, k, v in rows if ns is not None}
    return landed, [op for op in ops if (op.namespace, op.key) not in landed]


def one_trip_reports(ops: Sequence[Op], landed: dict[tuple[str, str], int],
                     current: dict[tuple[str, str], int]) -> list[Applied]:
    """What each op of a one-trip batch (``kv_queries()["vset_raise"]``) reports: the
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
