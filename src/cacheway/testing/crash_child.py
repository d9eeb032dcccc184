"""A child process for the kill -9 trials of guarantee 2: writes through a cache opened
from URLs and prints every acknowledged write, until the parent kills it with SIGKILL.

usage: python -m cacheway.testing.crash_child STORE_URL BACKEND_URL WAL SEED [FLAG...]
FLAGs: ``no-counters`` (the store keeps none); ``async`` (an AsyncCache, ``cw.open_async``,
written by TASKS tasks at once, each on keys of its own: ``t3.k5``); ``write-through``
(no journal: WAL is not used). By default a journalled write-back cache
(``fsync="always"``). Before each write it prints "set KEY VALUE", "incr KEY 1" or
"del KEY 0", and "ack" ("ack KEY" with ``async``) once the call returned: a write followed
by its ack was acknowledged; the last of each key may be in flight.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import Iterator
from typing import Any

import cacheway as cw

#: tasks writing at once in an ``async`` child
TASKS = 16


def writes(rng: random.Random, counters: bool, tag: str = "") -> Iterator[tuple[str, str, int]]:
    """The child's writes ``(op, key, value)``, forever: keys ``{tag}k0..k19`` and
    counters ``{tag}c0..c2``; set values are distinct."""
    i = 0
    while True:
        i += 1
        r = rng.random()
        if r < 0.6 or (r < 0.9 and not counters):
            yield "set", f"{tag}k{rng.randrange(20)}", i
        elif r < 0.9:
            yield "incr", f"{tag}c{rng.randrange(3)}", 1
        else:
            yield "del", f"{tag}k{rng.randrange(20)}", 0


def options(rng: random.Random, write_through: bool, wal: str) -> dict[str, Any]:
    """``cw.open``'s arguments past the URLs."""
    if write_through:
        return {"policy": "write-through"}
    return {"policy": "write-back", "max_delay": 0.01, "batch_size": rng.choice([1, 7, 50]),
            "journal": wal, "fsync": "always"}


def main(argv: list[str]) -> None:
    store_url, backend_url, wal, seed = argv[0], argv[1], argv[2], int(argv[3])
    flags = set(argv[4:])
    rng = random.Random(seed)
    opts = options(rng, "write-through" in flags, wal)
    counters = "no-counters" not in flags
    if "async" in flags:
        asyncio.run(main_async(store_url, backend_url, opts, rng, counters))
        return
    cache = cw.open(store_url, backend=backend_url, **opts)
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    for op, key, value in writes(rng, counters):
        out.write(f"{op} {key} {value}\n")
        out.flush()
        if op == "set":
            cache.set(key, value)
        elif op == "incr":
            cache.incr(key)
        else:
            cache.delete(key)
        out.write("ack\n")
        out.flush()


async def main_async(store_url: str, backend_url: str, opts: dict[str, Any],
                     rng: random.Random, counters: bool) -> None:
    acache = await cw.open_async(store_url, backend=backend_url, **opts)
    out = sys.stdout  # one line per write() on the loop's thread: lines never interleave

    async def task(n: int) -> None:
        for op, key, value in writes(random.Random(rng.random()), counters, f"t{n}."):
            out.write(f"{op} {key} {value}\n")
            out.flush()
            if op == "set":
                await acache.set(key, value)
            elif op == "incr":
                await acache.incr(key)
            else:
                await acache.delete(key)
            out.write(f"ack {key}\n")
            out.flush()

    out.write("ready\n")
    out.flush()
    await asyncio.gather(*(task(n) for n in range(TASKS)))


if __name__ == "__main__":
    main(sys.argv[1:])
