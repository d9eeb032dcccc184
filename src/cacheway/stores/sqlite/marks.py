"""Journal marks in SQLite, shared by the key/value and the row mode of SQLiteStore.

``meta`` holds one ``journal:<id>`` row per journal (its low water); ``applied`` holds,
per journal and key, the last journal seq the store applied. Both are written in the
same transaction as the batch they describe (:mod:`cacheway.stores.marks`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ..base import JournalMark, Op
from ..marks import Trim, check_fence, last_seqs

__all__ = ["read_marks", "write_mark"]


def write_mark(conn: sqlite3.Connection, meta: str, applied: str, ops: Sequence[Op],
               mark: JournalMark, trim: Trim) -> None:
    """Record ``mark`` for the batch ``ops`` (``meta``/``applied``: quoted table names);
    when ``trim`` is due, also drop the rows at or under the low water. Its fence
    (``mark.after``) is checked first: the caller's ``BEGIN IMMEDIATE`` holds every
    other writer off until the commit."""
    jid = mark.journal_id
    if mark.after is not None:
        row = conn.execute(f"SELECT value FROM {meta} WHERE name = ?",
                           ("journal:" + jid,)).fetchone()
        check_fence(mark, None if row is None else int(row[0]))
    conn.execute(
        f"INSERT INTO {meta} (name, value) VALUES (?, ?) ON CONFLICT(name) DO "
        "UPDATE SET value = max(value, excluded.value)",
        ("journal:" + jid, mark.low_water),
    )
    conn.executemany(
        f"INSERT INTO {applied} (journal, namespace, key, seq) VALUES (?, ?, ?, ?) "
        "ON CONFLICT(journal, namespace, key) DO UPDATE SET seq = max(seq, excluded.seq)",
        [(jid, ns, key, s) for (ns, key), s in last_seqs(ops, mark).items()],
    )
    if trim.due():
        # Rows at or under the low water say nothing a replay needs.
        conn.execute(f"DELETE FROM {applied} WHERE journal = ? AND seq <= ?",
                     (jid, mark.low_water))


def read_marks(conn: sqlite3.Connection, meta: str, applied: str, journal_id: str
               ) -> tuple[int, dict[tuple[str, str], int]]:
    """(low water, {(namespace, key): last applied seq above it}) of a journal."""
    row = conn.execute(f"SELECT value FROM {meta} WHERE name = ?",
                       ("journal:" + journal_id,)).fetchone()
    low = 0 if row is None else int(row[0])
    rows = conn.execute(
        f"SELECT namespace, key, seq FROM {applied} WHERE journal = ? AND seq > ?",
        (journal_id, low),
    ).fetchall()
    return low, {(ns, key): int(seq) for ns, key, seq in rows}
