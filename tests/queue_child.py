"""An app process of the queue's kill -9 trials: writes through ``WriteBack(queue=...,
flush_in_process=False)`` and records every write in a file flushed line by line.

usage: python tests/queue_child.py REDIS_URL QUEUE_NAME PREFIX DB LOG SEED TAG

PREFIX: the key prefix of its RedisBackend on REDIS_URL, or "-" for a memory backend
(on a Redis Cluster: the queue keeps the shared copies itself).

Before each write it records "set KEY VALUE", "incr KEY 1" or "del KEY 0", and "ack"
once the call returned: a write followed by "ack" was acknowledged; the last one may be
in flight when the process (or Redis) died. Keys ``TAG-kN`` are this process's own; the
counters ``cN`` are shared by every child. A write that raises ends the child (exit 3):
it is the one in flight.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import cacheway as cw
from cacheway.backends.redis import RedisBackend

#: the queue's partitions in every trial
PARTITIONS = 4


def main(argv: list[str]) -> int:
    url, qname, prefix, db, log_path, seed, tag = argv
    rng = random.Random(int(seed))
    backend = None if prefix == "-" else RedisBackend(url, prefix=prefix)
    cache = cw.Cache(
        store=cw.SQLiteStore(db), backend=backend,
        policy=cw.WriteBack(queue=url, queue_name=qname, partitions=PARTITIONS,
                            flush_in_process=False, claim_after=1.0))
    with open(log_path, "w", encoding="utf-8") as out:
        out.write("ready\n")
        out.flush()
        i = 0
        while True:
            i += 1
            r = rng.random()
            try:
                if r < 0.55:
                    key = f"{tag}-k{rng.randrange(12)}"
                    out.write(f"set {key} {i}\n")
                    out.flush()
                    cache.set(key, i)
                elif r < 0.9:
                    key = f"c{rng.randrange(3)}"
                    out.write(f"incr {key} 1\n")
                    out.flush()
                    cache.incr(key)
                else:
                    key = f"{tag}-k{rng.randrange(12)}"
                    out.write(f"del {key} 0\n")
                    out.flush()
                    cache.delete(key)
            except cw.CachewayError as exc:
                out.write(f"error {type(exc).__name__}\n")
                out.flush()
                return 3
            out.write("ack\n")
            out.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
