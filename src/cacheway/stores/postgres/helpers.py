"""Helpers of :mod:`cacheway.stores.postgres`: driver import, secret scrubbing, batch
ordering and segmentation."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ...errors import ConfigError
from ..base import Applied, Op

_INSTALL = "pip install 'cacheway[postgres]'"


def _modules() -> tuple[Any, Any]:
    try:
        import psycopg
        import psycopg_pool
    except ImportError as exc:  # the driver is an extra
        raise ConfigError(f"PostgresStore needs psycopg 3 and psycopg_pool: {_INSTALL}") from exc
    return psycopg, psycopg_pool


def _secrets(dsn: str) -> list[str]:
    """Every spelling of a password in ``dsn``, also when it is malformed (libpq quotes
    the broken part of a DSN in its error messages)."""
    found = re.findall(r"[^\s:/@=]*:([^@\s]+)@", dsn)
    found += re.findall(r"password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn)
    return sorted({s.strip("'") for s in found if s.strip("'")}, key=len, reverse=True)


def connect_options(params: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Connection keywords a pool adds to a DSN's ``params``: a ``connect_timeout`` under
    the call's ``timeout`` (at most 10 s) unless the DSN sets one."""
    return {} if "connect_timeout" in params else {
        "connect_timeout": max(1, int(min(timeout, 10)))}


def _scrub(message: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        message = message.replace(secret, "***")
    return message


# The longest key (UTF-8 bytes) PostgresStore takes. A btree index entry holds at most
# 2704 bytes on 8 kB pages (BTMaxItemSize: a third of a page less overheads). The
# largest entries are the journal marks' (journal, namespace, key): an 8-byte tuple
# header, a 33-byte journal id, a namespace of up to 64 bytes (cache.py's names) and the
# key, each with a varlena header and 4-byte alignment: some 120 bytes besides the key.
# 2000 leaves room for longer namespaces of direct store users; it is a round, safe
# bound, not the exact limit.
MAX_KEY_BYTES = 2000

# Deadlocks between processes writing the same rows in different orders are rolled back
# whole by the server; repeating the transaction is safe.
_CONFLICT_RETRIES = 8


def _key_order(ops: Sequence[Op]) -> list[int] | None:
    """Positions of ``ops`` sorted by (namespace, key), or None when a key repeats (its
    ops must keep their order) or there is nothing to sort."""
    if len(ops) < 2:
        return None
    idents = [(op.namespace, op.key) for op in ops]
    if len(set(idents)) != len(idents):
        return None
    order = sorted(range(len(ops)), key=idents.__getitem__)
    return None if order == list(range(len(ops))) else order


class _Attempt:
    """One try of a unit of work: whether COMMIT was sent (after that, a broken
    connection leaves the outcome unknown, so the work must not be retried)."""

    __slots__ = ("committing",)

    def __init__(self) -> None:
        self.committing = False


def _segments(ops: Sequence[Op]) -> list[list[int]]:
    """Split a batch where a key repeats, so each part names a key at most once (one
    upsert cannot touch a row twice) and a key's writes keep their order."""
    parts: list[list[int]] = [[]]
    seen: set[tuple[str, str]] = set()
    for i, op in enumerate(ops):
        k = (op.namespace, op.key)
        if k in seen:
            parts.append([])
            seen.clear()
        seen.add(k)
        parts[-1].append(i)
    return parts


def _fill(out: list[Applied | None], ops: Sequence[Op], idx: list[int],
          got: dict[tuple[str, str], Applied]) -> None:
    for i in idx:
        out[i] = got[(ops[i].namespace, ops[i].key)]


# Advisory-lock class id of cacheway's DDL ("cw"), so user locks on the same hash differ.
LOCK_CLASS = 0x6377


def ddl_lock(conn: Any, table: str) -> None:
    """Take the DDL lock of ``table`` for the transaction: CREATE ... IF NOT EXISTS alone
    races (duplicate pg_type rows), so one creator at a time."""
    conn.execute(
        "SELECT pg_advisory_xact_lock(%s, hashtext(current_schema() || '.' || %s))",
        (LOCK_CLASS, table),
    )


def create_marks(conn: Any, meta: str, applied: str) -> None:
    """The journal-mark tables (see :mod:`cacheway.stores.marks`), in the caller's
    transaction."""
    from psycopg import sql

    conn.execute(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, value bigint NOT NULL)"
    ).format(sql.Identifier(meta)))
    conn.execute(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (journal text NOT NULL, namespace text NOT NULL, "
        "key text NOT NULL, seq bigint NOT NULL, PRIMARY KEY (journal, namespace, key))"
    ).format(sql.Identifier(applied)))
