"""A child process for the kill -9 trials of guarantee 2: writes through a journalled
write-back cache (``fsync="always"``) opened from URLs and prints every acknowledged
write, until the parent kills it with SIGKILL.

usage: python -m cacheway.testing.crash_child STORE_URL BACKEND_URL WAL SEED
Before each write it prints "set KEY VALUE", "incr KEY 1" or "del KEY 0", and "ack" once
the call returned: a write followed by "ack" was acknowledged; the last may be in flight.
"""

from __future__ import annotations

import random
import sys

import cacheway as cw


def main(argv: list[str]) -> None:
    store_url, backend_url, wal, seed = argv[0], argv[1], argv[2], int(argv[3])
    counters = len(argv) < 5 or argv[4] != "no-counters"
    rng = random.Random(seed)
    cache = cw.open(store_url, backend=backend_url, policy="write-back", max_delay=0.01,
                    batch_size=rng.choice([1, 7, 50]), journal=wal, fsync="always")
    out = sys.stdout
    out.write("ready\n")
    out.flush()
    i = 0
    while True:
        i += 1
        r = rng.random()
        if r < 0.6 or (r < 0.9 and not counters):
            key = f"k{rng.randrange(20)}"
            out.write(f"set {key} {i}\n")
            out.flush()
            cache.set(key, i)
        elif r < 0.9:
            key = f"c{rng.randrange(3)}"
            out.write(f"incr {key} 1\n")
            out.flush()
            cache.incr(key)
        else:
            key = f"k{rng.randrange(20)}"
            out.write(f"del {key} 0\n")
            out.flush()
            cache.delete(key)
        out.write("ack\n")
        out.flush()


if __name__ == "__main__":
    main(sys.argv[1:])
