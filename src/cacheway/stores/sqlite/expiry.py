"""Data expiry in SQLiteStore's key/value table (``expire=`` on a namespace).

The table has a nullable ``expires_at`` column (``time.time()`` seconds; NULL: the data
never ends). Tables created before it existed gain it when a store opens them
(``ALTER TABLE ... ADD COLUMN``: existing rows keep their data and never expire). Every
upsert writes it: the op's ``Op.expires_at``, NULL for an op without one. Reads
never see an expired row; an expired row is deleted before a batch that writes its key
(so a counter starts afresh instead of adding to data that has ended), and
:func:`purge` deletes the rest in the background.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from ..base import Op

__all__ = ["add_column", "delete_expired", "purge"]

_CHUNK = 500


def add_column(conn: sqlite3.Connection, table: str) -> None:
    """Give ``table`` its ``expires_at`` column (and index) when it has none yet; inside
    the caller's write transaction, so processes opening it at once do it once."""
    columns = {row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')}
    if "expires_at" not in columns:
        conn.execute(f'ALTER TABLE "{table}" ADD COLUMN expires_at REAL')
    conn.execute(f'CREATE INDEX IF NOT EXISTS "{table}_expires" ON "{table}" (expires_at) '
                 "WHERE expires_at IS NOT NULL")


def delete_expired(conn: sqlite3.Connection, table: str, ops: Sequence[Op],
                   now: float) -> None:
    """Delete the expired rows of the keys ``ops`` write (before the batch)."""
    by_ns: dict[str, list[str]] = {}
    for op in ops:
        by_ns.setdefault(op.namespace, []).append(op.key)
    for ns, keys in by_ns.items():
        keys = list(dict.fromkeys(keys))
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            conn.execute(
                f'DELETE FROM "{table}" WHERE namespace = ? AND expires_at <= ? AND key IN '
                f"({','.join('?' * len(chunk))})", [ns, now, *chunk])


def purge(conn: sqlite3.Connection, table: str, now: float, limit: int) -> int:
    """Delete up to ``limit`` expired rows; how many were deleted."""
    cur = conn.execute(
        f'DELETE FROM "{table}" WHERE (namespace, key) IN (SELECT namespace, key FROM '
        f'"{table}" WHERE expires_at <= ? LIMIT ?)', (now, limit))
    return max(cur.rowcount, 0)

