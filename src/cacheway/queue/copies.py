"""On Redis Cluster, the copy of each key the queue keeps in its partition's slot.

A RedisBackend cannot run on a cluster, and a copy in another slot than the partition's
stream could not be written by the same script as the stream entry. So on a cluster the
queue keeps its own copy of each key at ``{q:pN}:c:...`` (:meth:`Names.copy`), in
RedisBackend's entry layout (``backends/redis_format``): ACCEPT writes it with the entry
(pinned: no expiry while the write waits), counters add to it, the consumer gives it an
expiry once the store has the write (``SETTLE``), and every process's reads look at it
before the store (``QueueWriteBackEngine.fetch``). With ``expire=`` the copy ends by the
write's stamp at the latest.
"""

from __future__ import annotations

import time
from typing import Any

from ..backends.redis_format import HLEN
from ..stores.base import NOTSET, Loaded
from .layout import Names

__all__ = ["decode_copy", "deleted_at", "read_copies"]


def decode_copy(raw: bytes | None) -> tuple[bool, Loaded | None]:
    """``(found, row)``: a copy's row, or None for a delete's tombstone; ``found`` is
    False when there is no usable copy (absent, a lease or not-found marker, too short
    to be an entry).

    >>> from cacheway.backends.redis_format import header
    >>> decode_copy(header(7, 0) + b'"v"')
    (True, Loaded(payload=b'"v"', value=NOTSET, version=7, expires_at=None))
    >>> decode_copy(header(8, 1)), decode_copy(None), decode_copy(b"junk")
    ((True, None), (False, None), (False, None))
    """
    if not raw or len(raw) < HLEN:
        return False, None
    flag = raw[HLEN - 1]
    if flag == 0:
        return True, Loaded(raw[HLEN:], NOTSET, int.from_bytes(raw[1:HLEN - 1], "big"))
    return flag == 1, None


def deleted_at(raw: bytes | None) -> int:
    """The version of the delete a RedisBackend marker records: a tombstone's, or the
    floor a fill lease (or its "not found") kept of the tombstone it replaced; 0 for a
    value and anything else.

    >>> from cacheway.backends.redis_format import header
    >>> deleted_at(header(8, 1)), deleted_at(header(8, 2) + b"token")
    (8, 8)
    >>> deleted_at(header(8, 0) + b"1")
    0
    >>> deleted_at(None), deleted_at(b"junk")
    (0, 0)
    """
    if not raw or len(raw) < HLEN or raw[HLEN - 1] not in (1, 2, 3):
        return 0
    return int.from_bytes(raw[1:HLEN - 1], "big")


def read_copies(client: Any, names: Names, namespace: str, keys: list[str], *,
                expiry: bool = False) -> dict[str, Loaded | None]:
    """{key: its copy's row, or None for a tombstone} of the ``keys`` of ``namespace``
    whose copy is there (one pipeline: a cluster client sends each node its share).

    ``expiry`` (a namespace with ``expire=``): each row's ``expires_at`` is when its copy
    ends (the copy never outlives the data), so a fill from it lives no longer."""
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            name = names.copy(names.partition(namespace, key), namespace, key)
            pipe.get(name)
            if expiry:
                pipe.pttl(name)
        replies = pipe.execute()
    now = time.time()
    step = 2 if expiry else 1
    out: dict[str, Loaded | None] = {}
    for i, key in enumerate(keys):
        found, row = decode_copy(replies[i * step])
        if not found:
            continue
        if row is not None and expiry and int(replies[i * step + 1]) > 0:
            row = row._replace(expires_at=now + int(replies[i * step + 1]) / 1000)
        out[key] = row
    return out
