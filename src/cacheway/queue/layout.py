"""Where a queue keeps things in Redis, and how stream ids become journal seqs.

Every key of partition ``n`` of queue ``q`` carries the hash tag ``{q:p<n>}``, so all of
a partition's keys (its stream, lock, clock and applied mark) live in one Redis Cluster
slot and one Lua script may touch them together:

=====================  ==========================================================
``{q:pN}``             the stream of accepted writes (consumer group ``cacheway``)
``{q:pN}:lock``        the token of the one consumer applying this partition
``{q:pN}:clock``       the partition's version clock (the last version handed out)
``{q:pN}:done``        the highest seq applied to the store (for ``flush()``)
``{q:pN}:dead``        entries the store refused for good (dead letters)
``{q:pN}:c:...``       on Redis Cluster, each key's cached copy (see ``engine.py``)
=====================  ==========================================================

>>> names = Names("cw", 16)
>>> names.partition("users", "alice"), names.stream(3), names.lock(3)
(12, '{cw:p3}', '{cw:p3}:lock')
>>> seq_of(b"1751900000123-5") == (1751900000123 << 20) + 5
True
"""

from __future__ import annotations

import zlib

__all__ = ["GROUP", "SEQ_BITS", "Names", "seq_of"]

#: the consumer group of every partition stream
GROUP = "cacheway"

# A stream id is "<ms>-<n>"; n counts the entries XADDed to one stream in one
# millisecond, far below 2**20 (a million entries in a millisecond). ms * 2**20 + n keeps
# the ids' order and fits a bigint (ms ~ 2**41 today: 2**61).
SEQ_BITS = 20


def seq_of(entry_id: bytes | str) -> int:
    """The increasing int a store's journal mark records for a stream entry id."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, n = text.partition("-")
    return (int(ms) << SEQ_BITS) + int(n or 0)


class Names:
    """The Redis key names of queue ``name`` with ``partitions`` partitions."""

    def __init__(self, name: str, partitions: int) -> None:
        self.name = name
        self.partitions = partitions

    def partition(self, namespace: str, key: str) -> int:
        """The partition of ``key`` of ``namespace``: stable across processes, hosts and
        Python versions (crc32, not hash())."""
        data = f"{namespace}\x00{key}".encode("utf-8", "surrogatepass")
        return zlib.crc32(data) % self.partitions

    def stream(self, n: int) -> str:
        return f"{{{self.name}:p{n}}}"

    def lock(self, n: int) -> str:
        return f"{{{self.name}:p{n}}}:lock"

    def clock(self, n: int) -> str:
        return f"{{{self.name}:p{n}}}:clock"

    def done(self, n: int) -> str:
        return f"{{{self.name}:p{n}}}:done"

    def dead(self, n: int) -> str:
        return f"{{{self.name}:p{n}}}:dead"

    def copy(self, n: int, namespace: str, key: str) -> str:
        """On Redis Cluster: the copy of ``key`` of ``namespace`` (partition ``n``) that
        the queue keeps in its partition's slot (RedisBackend's entry layout)."""
        return f"{{{self.name}:p{n}}}:c:{len(namespace)}:{namespace}:{key}"

    def journal_id(self, n: int) -> str:
        """The id under which a store records this partition's applied seqs."""
        return f"{self.name}:p{n}"
