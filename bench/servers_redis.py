"""RedisBackend against raw redis-py on a real Redis.

    python bench/servers_redis.py                 # full run (about half a minute)
    python bench/servers_redis.py --quick         # smoke run
    python bench/servers_redis.py --url redis://127.0.0.1:6379/0 --rounds 9 --seed 7

Comparisons (ratio ours / baseline of time per op, median over alternating rounds, see
``_common.py``; lower is better for us):

1. ``RedisBackend.get`` hit  vs  raw ``GET`` + the same JSON decode (what a cache-aside
   user writes to get a value back).
2. ``RedisBackend.get`` hit  vs  bare raw ``GET`` (bytes only; the decode is all ours).
3. ``RedisBackend.get_many(100)``  vs  raw ``MGET`` of 100 keys + decode of each.
4. ``RedisBackend.get_many(100)``  vs  bare raw ``MGET`` of 100 keys.

Both sides use their own ``redis.Redis`` with the same defaults (hiredis parser when
installed), the same values (small JSON objects) and the same seeded key order. Keys
live under a fresh prefix and are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import orjson
import redis

import cacheway as cw
from cacheway.backends.redis import RedisBackend

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # the helpers live next to this script
    Comparison,
    RoundResult,
    environment,
    fmt_ns,
    print_detail,
    run_alternating,
    time_batches,
)

FULL = {"keys": 2000, "get_ops": 6000, "many_ops": 300, "batch": 200, "many_batch": 20}
QUICK = {"keys": 500, "get_ops": 1000, "many_ops": 60, "batch": 100, "many_batch": 10}
TARGET_GET, TARGET_MANY = 1.15, 1.3


def value_of(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"user-{i}", "email": f"user{i}@example.com", "score": i * 1.5}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=os.environ.get("CACHEWAY_TEST_REDIS",
                                                    "redis://127.0.0.1:6379/0"))
    ap.add_argument("--quick", action="store_true", help="fewer ops, for smoke runs")
    ap.add_argument("--rounds", type=int, default=9, help="timed rounds per side (default 9)")
    ap.add_argument("--seed", type=int, default=20240601, help="seed of the key order")
    ap.add_argument("-q", "--quiet", action="store_true", help="no per-round progress lines")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    sz = QUICK if args.quick else FULL
    say: Callable[[str], None] = (lambda s: None) if args.quiet else print
    rng = random.Random(args.seed)

    print("cacheway RedisBackend benchmarks")
    info = redis.Redis.from_url(args.url).info("server")
    for line in environment([
        ("versions", f"cacheway {cw.__version__}, redis-py {version('redis')}, "
                     f"hiredis {version('hiredis')}, Redis server {info['redis_version']}"),
        ("run", f"{'quick' if args.quick else 'full'}, {args.rounds} rounds per side "
                f"(+1 warm-up), alternating, seed {args.seed}"),
    ]):
        print("  " + line)
    print()

    tag = uuid.uuid4().hex[:10]
    ours = RedisBackend(args.url, prefix=f"bench_{tag}:")
    ours.bind_serializer(cw.JSONSerializer())
    raw = redis.Redis.from_url(args.url)
    raw_prefix = f"benchraw_{tag}:"
    n = sz["keys"]
    ser = cw.JSONSerializer()
    loads = orjson.loads
    comps: list[Comparison] = []
    try:
        ours.set_many([(f"k{i}", None, ser.dumps(value_of(i)), i + 1) for i in range(n)], None)
        with raw.pipeline(transaction=False) as pipe:
            for i in range(n):
                pipe.set(f"{raw_prefix}k{i}", ser.dumps(value_of(i)))
            pipe.execute()

        keys = [f"k{rng.randrange(n)}" for _ in range(sz["get_ops"])]
        raw_keys = [raw_prefix + k for k in keys]
        assert ours.get(keys[0]) == loads(raw.get(raw_keys[0]))
        get, rget = ours.get, raw.get

        def ours_get() -> RoundResult:
            return time_batches(get, keys, sz["batch"])

        def raw_get_decode() -> RoundResult:
            return time_batches(lambda k: loads(rget(k)), raw_keys, sz["batch"])

        def raw_get() -> RoundResult:
            return time_batches(rget, raw_keys, sz["batch"])

        groups = [[f"k{rng.randrange(n)}" for _ in range(100)] for _ in range(sz["many_ops"])]
        raw_groups = [[raw_prefix + k for k in g] for g in groups]
        get_many, mget = ours.get_many, raw.mget
        assert len(get_many(groups[0])) == len(set(groups[0]))

        def ours_many() -> RoundResult:
            return time_batches(get_many, groups, sz["many_batch"])

        def raw_mget_decode() -> RoundResult:
            return time_batches(lambda g: [loads(v) for v in mget(g)], raw_groups,
                                sz["many_batch"])

        def raw_mget() -> RoundResult:
            return time_batches(mget, raw_groups, sz["many_batch"])

        plan = [
            ("get hit", "RedisBackend.get", "GET + orjson.loads", TARGET_GET,
             ours_get, raw_get_decode, "gets", len(keys), sz["batch"]),
            ("get hit (bare)", "RedisBackend.get", "GET (bytes only)", TARGET_GET,
             ours_get, raw_get, "gets", len(keys), sz["batch"]),
            ("get_many(100)", "RedisBackend.get_many", "MGET + orjson.loads each", TARGET_MANY,
             ours_many, raw_mget_decode, "calls of 100 keys", len(groups), sz["many_batch"]),
            ("get_many(100) (bare)", "RedisBackend.get_many", "MGET (bytes only)", TARGET_MANY,
             ours_many, raw_mget, "calls of 100 keys", len(groups), sz["many_batch"]),
        ]
        for name, ol, bl, target, o, b, unit, ops, batch in plan:
            comp = Comparison(name, ol, bl, target, unit)
            comp.ops_per_round, comp.batch = ops, batch
            say(f"{name}:")
            run_alternating(comp, o, b, args.rounds, progress=say)
            if not args.quiet:
                print()
            print_detail(comp)
            comps.append(comp)
            sys.stdout.flush()
    finally:
        ours.clear()
        names = list(raw.scan_iter(match=raw_prefix + "*", count=1000))
        if names:
            raw.unlink(*names)
        ours.close()
        raw.close()
    print_summary(comps)
    return 0


def print_summary(comps: list[Comparison]) -> None:
    header = ["comparison", "ours median", "baseline median", "median ratio", "target", "verdict"]
    rows = [
        [c.name, fmt_ns(c.summary("ours")["median"]), fmt_ns(c.summary("base")["median"]),
         f"{c.ratio:.2f}x", f"<= {c.target:g}x", "PASS" if c.passed else "MISS"]
        for c in comps
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("RedisBackend vs raw redis-py (time per op; ratio = ours / baseline)")
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"total wall time {time.monotonic() - started:.0f} s")
    sys.exit(code)
