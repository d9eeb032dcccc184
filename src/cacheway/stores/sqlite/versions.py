"""Batches holding versioned ops (``Op.version``) in SQLiteStore's key/value mode.

A versioned SET or DELETE lands only when its version is greater than the row's
(set-if-newer); otherwise it is skipped and reported ``Applied(<row's version>,
applied=False)``. A versioned DELETE keeps the key's version in a *tombstone*: the row
stays with a NULL value (reads treat it as absent), so an older SET arriving later
is skipped instead of bringing the key back. A versioned ADD always adds its delta and
gives the row the greater of the two versions. The per-table counter is raised to at
least every version in the batch, so writes the store stamps itself afterwards are
newer. The batch runs under the store's ``BEGIN IMMEDIATE``: every decision is taken
in Python on versions read in the same transaction, which no other writer can change.

Batches without versions never come here: their SQL is what it always was.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from operator import attrgetter

from ...errors import ConfigError
from ..base import ADD, DELETE, SET, Applied, Op

__all__ = ["apply_versioned"]

_version = attrgetter("version")
_CHUNK = 500

Row = tuple[str, str, bytes | None, int, float, float | None]
WriteSets = Callable[[sqlite3.Connection, list[Row], list[tuple[str, str]]], None]
Add = Callable[[sqlite3.Connection, Op, int, float], Applied]


def stored_versions(conn: sqlite3.Connection, table: str, idents: set[tuple[str, str]]
                    ) -> dict[tuple[str, str], int]:
    """The versions of the rows (tombstones included) of ``idents`` in ``table``."""
    by_ns: dict[str, list[str]] = {}
    for ns, key in idents:
        by_ns.setdefault(ns, []).append(key)
    out: dict[tuple[str, str], int] = {}
    for ns, keys in by_ns.items():
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            rows = conn.execute(
                f'SELECT key, version FROM "{table}" WHERE namespace = ? AND key IN '
                f"({','.join('?' * len(chunk))})", [ns, *chunk]).fetchall()
            for key, version in rows:
                out[(ns, key)] = int(version)
    return out


def apply_versioned(conn: sqlite3.Connection, table: str, meta: str, ops: Sequence[Op],
                    now: float, write_sets: WriteSets, add: Add) -> list[Applied]:
    """Write ``ops`` in order inside the caller's transaction (see the module doc);
    ``write_sets`` and ``add`` are the store's own writers."""
    before = conn.execute(
        f"SELECT value FROM \"{meta}\" WHERE name = 'version'").fetchone()[0]
    state = stored_versions(conn, table, {(op.namespace, op.key) for op in ops
                                          if op.version is not None})
    # Unversioned ops of the batch are stamped above every version it holds: an op
    # after a versioned one in the batch is newer than it.
    counter = max(int(before), *(v for v in map(_version, ops) if v is not None))
    results: list[Applied] = []
    sets: list[Row] = []
    dels: list[tuple[str, str]] = []
    pending: set[tuple[str, str]] = set()
    for op in ops:
        kind, ident, version = op.kind, (op.namespace, op.key), op.version
        if kind not in (SET, DELETE, ADD):
            raise ConfigError(f"unknown op kind {kind!r}")
        if version is None:
            counter += 1
            version = counter
        elif kind != ADD:
            current = state.get(ident)
            if current is not None and version <= current:
                results.append(Applied(current, None, False))
                continue
        if ident in pending or kind == ADD:
            # A key twice in one batch, or an add that must read what precedes it:
            # write what is pending first, so the key's order holds.
            write_sets(conn, sets, dels)
            sets, dels = [], []
            pending.clear()
        if kind == ADD:
            if op.version is not None:
                current = state.get(ident)
                version = version if current is None else max(current, version)
            results.append(add(conn, op, version, now))
            state[ident] = version
            continue
        pending.add(ident)
        if kind == SET:
            sets.append((op.namespace, op.key, op.payload, version, now, op.expires_at))
            state[ident] = version
        elif op.version is None:
            dels.append(ident)
            state.pop(ident, None)
        else:
            sets.append((op.namespace, op.key, None, version, now, None))  # the tombstone
            state[ident] = version
        results.append(Applied(version))
    write_sets(conn, sets, dels)
    conn.execute(f"UPDATE \"{meta}\" SET value = max(value, ?) WHERE name = 'version'",
                 (counter,))
    return results
