"""The seeded operation mixes ``cacheway demo`` and ``cacheway bench`` run.

A workload is a list of :class:`Op`; the same name, seed and size always give the same
list, so every strategy of one run faces exactly the same operations. Values carry an
increasing sequence number (``{"seq": n, ...}`` or, for counters, the count itself) so
that "the store has at least the last acknowledged write" is a comparison of ints.

>>> ops = generate("read-heavy", ops=1000, seed=1)
>>> sum(op.kind == "get" for op in ops) > 800
True
>>> generate("bulk", ops=10, seed=1) == generate("bulk", ops=10, seed=1)
True
"""

from __future__ import annotations

import itertools
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["WORKLOADS", "Op", "Workload", "generate", "preload", "seq_of", "spec", "stream"]

_PAD = "x" * 64  # a small but not trivial payload, so serialization is part of the cost


@dataclass(frozen=True)
class Workload:
    """The shape of one operation mix."""

    name: str
    description: str
    keys: int  # size of the key space (0: every write takes a new key)
    read_share: float  # share of operations that are reads
    write_kind: str  # "set" or "incr"
    zipf_s: float  # skew of key popularity (0: uniform)
    recent_share: float  # share of reads aimed at the key written last (read-after-write)
    preloaded: bool  # the store holds every key before the run starts
    capacity: int  # max_entries of the cache in front of the store


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("read-heavy", "90% reads / 10% writes, Zipf keys", 1000, 0.9, "set", 1.0,
                 0.2, True, 250),
        Workload("write-heavy", "10% reads / 90% writes, Zipf keys", 1000, 0.1, "set", 1.0,
                 0.2, True, 250),
        Workload("counters", "90% incr / 10% reads on 16 hot counters", 16, 0.1, "incr", 1.0,
                 0.2, False, 250),
        Workload("bulk", "write each key once, 5% reads of written keys", 0, 0.05, "set", 0.0,
                 0.0, False, 250),
    )
}


@dataclass(frozen=True)
class Op:
    """One operation: ``get``, ``set`` (with ``seq``) or ``incr`` of ``key``."""

    kind: str
    key: str
    seq: int = 0


def spec(name: str) -> Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ValueError(
            f"unknown workload {name!r}: use one of {', '.join(WORKLOADS)}"
        ) from None


def value_for(seq: int) -> dict[str, Any]:
    return {"seq": seq, "body": _PAD}


def seq_of(value: Any) -> int | None:
    """The sequence number a stored/cached value carries (counters: the count)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, dict) and isinstance(value.get("seq"), int):
        return int(value["seq"])
    return None


def _key(prefix: str, i: int) -> str:
    return f"{prefix}k{i:06d}"


def stream(name: str, seed: int, prefix: str = "") -> Iterator[Op]:
    """An endless seeded stream of operations of workload ``name``."""
    w = spec(name)
    rng = random.Random(seed * 1_000_003 + zlib.crc32(name.encode()))
    cum: list[float] = []
    if w.keys:
        total = 0.0
        for i in range(w.keys):
            total += 1.0 / (i + 1) ** w.zipf_s
            cum.append(total)
        # popularity rank is not key order: shuffle so hot keys spread over the table
        ranks = list(range(w.keys))
        rng.shuffle(ranks)
    population = range(w.keys)
    last_written: str | None = None
    written = 0  # bulk: keys written so far
    for seq in itertools.count(1):
        if rng.random() < w.read_share:
            if w.keys == 0:
                if written == 0:
                    yield Op("get", _key(prefix, 0))
                else:
                    yield Op("get", _key(prefix, rng.randrange(written)))
            elif last_written is not None and rng.random() < w.recent_share:
                yield Op("get", last_written)
            else:
                i = rng.choices(population, cum_weights=cum)[0]
                yield Op("get", _key(prefix, ranks[i]))
            continue
        if w.keys == 0:
            key = _key(prefix, written)
            written += 1
        else:
            key = _key(prefix, ranks[rng.choices(population, cum_weights=cum)[0]])
        last_written = key
        yield Op(w.write_kind, key, seq)


def generate(name: str, ops: int, seed: int, prefix: str = "") -> list[Op]:
    """The first ``ops`` operations of :func:`stream`."""
    return list(itertools.islice(stream(name, seed, prefix), ops))


def preload(name: str, prefix: str = "") -> dict[str, Any]:
    """What the store holds before the run (seq 0 values), empty unless ``preloaded``."""
    w = spec(name)
    if not w.preloaded:
        return {}
    return {_key(prefix, i): value_for(0) for i in range(w.keys)}
