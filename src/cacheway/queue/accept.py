"""How a queue engine's writes become :data:`~cacheway.queue.scripts.ACCEPT` calls: one
script call per partition (pipelined when a batch spans several), a NOSCRIPT answered by
loading the scripts and running that partition's call again, and counters whose copy
vanished asked for their value and run again.

Each write of a namespace with ``expire=`` carries the batch's expiry stamp (epoch
seconds, ``Engine.expires_at()``): the script keeps it in the entry and pins the copy
only until it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import BackendError
from ..stores.base import ADD
from . import scripts
from .connect import Scripts, is_noscript
from .layout import Names, seq_of

__all__ = ["CLUSTER_COPY_PX", "TOMBSTONE_PX", "Acceptor", "Item"]

# How long a delete's tombstone blocks older fills of its key (a value's copy is pinned
# while its write waits; a marker needs an expiry). Five minutes of consumer lag.
TOMBSTONE_PX = 300_000

# On Redis Cluster: how long the queue's own copy of a key lives once the store has its
# write, when the cache has no ttl (with one, the copy lives that long).
CLUSTER_COPY_PX = 300_000

#: (key, kind, value, payload, delta, ttl) of one write
Item = tuple[str, int, Any, "bytes | None", int, "float | None"]


class Acceptor:
    """Runs ACCEPT for the writes of namespace ``namespace`` (backend keys ``prefix +
    key``). ``copy_prefix``: the RedisBackend prefix when the copies live on the queue's
    Redis; ``cluster``: the queue keeps its own copies (``Names.copy``); ``json``: copies
    hold JSON (the script adds to a counter's copy itself)."""

    def __init__(self, client: Any, script_set: Scripts, names: Names, namespace: str,
                 prefix: str, *, copy_prefix: str | None, cluster: bool, json: bool,
                 dumps: Callable[[Any], bytes], where: str,
                 errors: tuple[type[BaseException], ...]) -> None:
        self.client = client
        self.scripts = script_set
        self.names = names
        self.namespace = namespace
        self.prefix = prefix
        self.copy_prefix = copy_prefix
        self.cluster = cluster
        self.json = json
        self.dumps = dumps
        self.where = where
        self.errors = errors
        self._script = script_set.register(scripts.ACCEPT)

    def accept(self, items: list[Item], bases: dict[int, int], stamp: float | None,
               base_of: Callable[[str], int]) -> list[tuple[int, int, str]]:
        """Accept ``items`` (``bases``: counters' values before their add, where the
        caller read them; ``base_of(key)`` reads one the script asks for); ``(version,
        seq, counter)`` per item, the counter '' unless ADD."""
        groups: dict[int, list[int]] = {}
        for i, it in enumerate(items):
            groups.setdefault(self.names.partition(self.namespace, it[0]), []).append(i)
        out: list[tuple[int, int, str]] = [(0, 0, "")] * len(items)
        todo = list(groups.items())
        for _ in range(3):
            try:
                replies = self._run(todo, items, bases, stamp)
            except self.errors as exc:
                raise BackendError(f"queue write to {self.where} failed (not "
                                   f"acknowledged): {type(exc).__name__}: {exc}") from exc
            again: list[tuple[int, list[int]]] = []
            for (p, idx), reply in zip(todo, replies):
                if reply and int(reply[0]) == -1:
                    # Counters whose copy is gone: their value comes from here.
                    for j in reply[1:]:
                        i = idx[int(j) - 1]
                        bases[i] = base_of(items[i][0])
                    again.append((p, idx))
                    continue
                for j, i in enumerate(idx):
                    v, entry_id, counter = reply[3 * j: 3 * j + 3]
                    out[i] = (int(v), seq_of(entry_id),
                              counter.decode() if isinstance(counter, bytes) else counter)
            if not again:
                return out
            todo = again
        raise BackendError("queue write failed: counters' copies kept vanishing")

    def _run(self, todo: list[tuple[int, list[int]]], items: list[Item],
             bases: dict[int, int], stamp: float | None) -> list[Any]:
        calls = []
        expires = "" if stamp is None else repr(stamp)
        for p, idx in todo:
            keys = [self.names.stream(p), self.names.clock(p)]
            args: list[Any] = [TOMBSTONE_PX, "1" if self.json else "0", len(idx)]
            for i in idx:
                key, kind, _, payload, delta, ttl = items[i]
                ci = 0
                if self.copy_prefix is not None:
                    keys.append(self.copy_prefix + self.prefix + key)
                    ci = len(keys)
                elif self.cluster:
                    keys.append(self.names.copy(p, self.namespace, key))
                    ci = len(keys)
                    if ttl is None:
                        ttl = CLUSTER_COPY_PX / 1000
                base = bases.get(i)
                if kind == ADD and base is not None and not self.json:
                    payload = self.dumps(base + delta)
                args += [self.namespace, key, kind, payload if payload is not None else b"",
                         delta, "" if ttl is None else max(1, int(ttl * 1000)), ci,
                         "" if base is None else base, expires]
            calls.append((keys, args))
        if len(calls) == 1:
            return [self._script(keys=calls[0][0], args=calls[0][1])]
        with self.client.pipeline(transaction=False) as pipe:
            for keys, args in calls:
                self._script(keys=keys, args=args, client=pipe)
            replies = list(pipe.execute(raise_on_error=False))
        # NOSCRIPT: that partition's script did not run (a node that lost its scripts);
        # run it again once they are loaded. Any other error: not acknowledged.
        lost = [i for i, r in enumerate(replies) if is_noscript(r)]
        if lost:
            self.scripts.reload()
            for i in lost:
                replies[i] = self._script(keys=calls[i][0], args=calls[i][1])
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies
