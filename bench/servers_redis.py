"""RedisBackend against raw redis-py on a real Redis.

    python bench/servers_redis.py                 # full run (about half a minute)
    python bench/servers_redis.py --quick         # smoke run
    python bench/servers_redis.py --url redis://127.0.0.1:6379/0 --rounds 9 --seed 7

Comparisons (ratio ours / baseline of time per op, median over rounds; lower is better
for us). Each group runs all its sides in every round, in an order that rotates and
reverses from round to round, so drift in the machine's speed hits every side alike:

get hit, sides ``Cache.get`` (``Cache(store=SQLiteStore(tmp),
backend=RedisBackend(...))``, write-through; the store is never touched on a hit), bare
``RedisBackend.get``, raw ``GET`` + ``orjson.loads`` (what a cache-aside user writes to
get a value back) and bare raw ``GET`` (bytes only:
the decode is all ours). Same for ``get_many(100)`` against raw ``MGET`` (+ decode into
a dict of found keys, or bytes only). Each group also has an A/A row (e): raw ``GET`` /
``MGET`` + decode on a second ``redis.Redis`` against the first, the noise of the method.

Both sides use their own ``redis.Redis`` with the same defaults (hiredis parser when
installed), the same values (small JSON objects) and the same seeded key order. Keys
live under fresh prefixes and are removed at the end. ``bench/servers.py`` imports
:func:`bench_redis` from here.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import orjson
import redis

import cacheway as cw

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # the helpers live next to this script
    Comparison,
    RoundResult,
    _round,
    clear_backend,
    environment,
    fmt_ns,
    print_detail,
    time_batches,
)

URL = os.environ.get("CACHEWAY_TEST_REDIS", "redis://127.0.0.1:6379/0")


@dataclass(frozen=True)
class Sizes:
    keys: int
    get_ops: int
    many_ops: int
    batch: int
    many_batch: int


FULL = Sizes(keys=2000, get_ops=2500, many_ops=150, batch=250, many_batch=15)
QUICK = Sizes(keys=500, get_ops=1000, many_ops=50, batch=100, many_batch=10)
TARGET_GET, TARGET_MANY = 1.15, 1.3


def value_of(i: int) -> dict[str, Any]:
    return {"id": i, "name": f"user-{i}", "email": f"user{i}@example.com", "score": i * 1.5}


def redis_versions(url: str) -> str:
    client = redis.Redis.from_url(url)
    try:
        server = client.info("server")["redis_version"]
    finally:
        client.close()
    try:
        hiredis = f"hiredis {version('hiredis')}"
    except PackageNotFoundError:
        hiredis = "no hiredis (pure-Python parser)"
    return f"redis-py {version('redis')}, {hiredis}, Redis server {server} on loopback"


# -- N-way alternation ---------------------------------------------------------------------
Pair = tuple[Comparison, str, str]  # (comparison, name of our side, name of its baseline)


def run_group(sides: dict[str, Callable[[], RoundResult]], pairs: Sequence[Pair],
              rounds: int, warmup: int = 1,
              progress: Callable[[str], None] | None = None) -> None:
    """Run every side once per round (order rotated by one each round, and reversed on
    odd rounds); each pair's comparison gets the two sides' results of the same round.
    GC is collected before and disabled during each side's run, as in ``_common``."""
    names = list(sides)
    for _ in range(warmup):
        for name in names:
            _round(sides[name])
    for r in range(rounds):
        k = r % len(names)
        order = names[k:] + names[:k]
        if r % 2:
            order.reverse()
        got = {name: _round(sides[name]) for name in order}
        for comp, ours, base in pairs:
            comp.ours.append(got[ours])
            comp.base.append(got[base])
        if progress is not None:
            progress(f"  round {r + 1}/{rounds}: " + ", ".join(
                f"{c.name} {c.ratios[-1]:.2f}" for c, _, _ in pairs))


# -- the benchmark -------------------------------------------------------------------------
def bench_redis(url: str, sz: Sizes, rng: random.Random, rounds: int,
                say: Callable[[str], None], number: str = "") -> list[Comparison]:
    """Comparisons of Redis reads (get hit, get_many(100)), ours vs raw redis-py.

    ``number`` prefixes the comparison names (``"1"`` gives ``1a``, ``1b``...; the
    get_many group then takes the next number)."""
    tag = uuid.uuid4().hex[:10]
    backend = cw.RedisBackend(url, prefix=f"cwbench_{tag}:")
    # Nothing here reads the store: every key is written (write-through) before timing.
    # A built-in (versioned) store, so Redis holds versioned entries as in production
    # (an unversioned CallbackStore would make write-through invalidate instead).
    tmp = tempfile.TemporaryDirectory(prefix="cwbench_")
    store = cw.SQLiteStore(os.path.join(tmp.name, "store.db"), table="cwbench",
                           synchronous="NORMAL")
    cache = cw.Cache(store=store, backend=backend, policy=cw.WriteThrough())
    raw = redis.Redis.from_url(url)
    raw2 = redis.Redis.from_url(url)  # the A/A rows' second raw side
    raw_prefix = f"cwbenchraw_{tag}:"
    n = sz.keys
    dumps, loads = orjson.dumps, orjson.loads
    n1 = number or "1"
    n2 = str(int(number) + 1) if number.isdigit() else "2"
    try:
        cache.set_many({f"k{i}": value_of(i) for i in range(n)})
        with raw.pipeline(transaction=False) as pipe:
            for i in range(n):
                pipe.set(f"{raw_prefix}k{i}", dumps(value_of(i)))
            pipe.execute()
        bget = backend.get
        # The backend was bound by the cache: its keys carry the default namespace's ":".
        assert bget(":k1") == value_of(1) == cache.get("k1") == loads(raw.get(raw_prefix + "k1"))

        # get hit --------------------------------------------------------------------------
        keys = [f"k{rng.randrange(n)}" for _ in range(sz.get_ops)]
        bkeys = [":" + k for k in keys]
        raw_keys = [raw_prefix + k for k in keys]
        cget, rget, rget2 = cache.get, raw.get, raw2.get

        def raw_get_decode(k: str) -> Any:
            return loads(rget(k))

        def raw_get_decode2(k: str) -> Any:
            return loads(rget2(k))

        sides = {
            "cache": lambda: time_batches(cget, keys, sz.batch),
            "backend": lambda: time_batches(bget, bkeys, sz.batch),
            "raw+decode": lambda: time_batches(raw_get_decode, raw_keys, sz.batch),
            "raw": lambda: time_batches(rget, raw_keys, sz.batch),
            "raw+decode2": lambda: time_batches(raw_get_decode2, raw_keys, sz.batch),
        }
        pairs: list[Pair] = []
        for tag_, (ours, ol), (base, bl) in [
            ("a", ("cache", "Cache.get"), ("raw+decode", "GET + orjson.loads")),
            ("b", ("backend", "RedisBackend.get"), ("raw+decode", "GET + orjson.loads")),
            ("c", ("cache", "Cache.get"), ("raw", "GET only (bytes, no decode)")),
            ("d", ("backend", "RedisBackend.get"), ("raw", "GET only (bytes, no decode)")),
            ("e", ("raw+decode2", "A/A: GET + orjson.loads, 2nd client"),
             ("raw+decode", "GET + orjson.loads")),
        ]:
            comp = Comparison(f"{n1}{tag_}. get hit", ol, bl,
                              1.1 if tag_ == "e" else TARGET_GET, "gets",
                              ops_per_round=len(keys), batch=sz.batch)
            pairs.append((comp, ours, base))
        say(f"{n1}. get hit ({len(keys)} gets per side per round):")
        run_group(sides, pairs, rounds, progress=say)
        comps = [c for c, _, _ in pairs]

        # get_many(100) --------------------------------------------------------------------
        groups = [[f"k{rng.randrange(n)}" for _ in range(100)] for _ in range(sz.many_ops)]
        bgroups = [[":" + k for k in g] for g in groups]
        raw_groups = [[(k, raw_prefix + k) for k in g] for g in groups]
        raw_bare = [[rk for _, rk in g] for g in raw_groups]
        cmany, bmany, mget, mget2 = cache.get_many, backend.get_many, raw.mget, raw2.mget
        assert cmany(groups[0]) == {k: value_of(int(k[1:])) for k in groups[0]}

        def raw_mget_decode(g: list[tuple[str, str]]) -> dict[str, Any]:
            # What a user writes for a dict of found keys: one MGET, decode each.
            vals = mget([rk for _, rk in g])
            return {k: loads(v) for (k, _), v in zip(g, vals) if v is not None}

        def raw_mget_decode2(g: list[tuple[str, str]]) -> dict[str, Any]:
            vals = mget2([rk for _, rk in g])
            return {k: loads(v) for (k, _), v in zip(g, vals) if v is not None}

        sides = {
            "cache": lambda: time_batches(cmany, groups, sz.many_batch),
            "backend": lambda: time_batches(bmany, bgroups, sz.many_batch),
            "raw+decode": lambda: time_batches(raw_mget_decode, raw_groups, sz.many_batch),
            "raw": lambda: time_batches(mget, raw_bare, sz.many_batch),
            "raw+decode2": lambda: time_batches(raw_mget_decode2, raw_groups, sz.many_batch),
        }
        pairs = []
        for tag_, (ours, ol), (base, bl) in [
            ("a", ("cache", "Cache.get_many"),
             ("raw+decode", "MGET + orjson.loads each into a dict")),
            ("b", ("backend", "RedisBackend.get_many"),
             ("raw+decode", "MGET + orjson.loads each into a dict")),
            ("c", ("cache", "Cache.get_many"), ("raw", "MGET only (list of bytes, no decode)")),
            ("d", ("backend", "RedisBackend.get_many"),
             ("raw", "MGET only (list of bytes, no decode)")),
            ("e", ("raw+decode2", "A/A: MGET + orjson.loads, 2nd client"),
             ("raw+decode", "MGET + orjson.loads each into a dict")),
        ]:
            comp = Comparison(f"{n2}{tag_}. get_many(100)", ol, bl,
                              1.1 if tag_ == "e" else TARGET_MANY,
                              "calls of 100 keys", ops_per_round=len(groups),
                              batch=sz.many_batch)
            pairs.append((comp, ours, base))
        say(f"{n2}. get_many(100) ({len(groups)} calls per side per round):")
        run_group(sides, pairs, rounds, progress=say)
        comps += [c for c, _, _ in pairs]
    finally:
        try:
            clear_backend(backend)
            names = list(raw.scan_iter(match=raw_prefix + "*", count=1000))
            if names:
                raw.unlink(*names)
        finally:
            cache.close()
            backend.close()
            store.close()
            raw.close()
            raw2.close()
            tmp.cleanup()
    return comps


def print_summary(comps: list[Comparison]) -> None:
    header = ["comparison", "ours", "ours median", "baseline", "baseline median",
              "median ratio", "target", "verdict"]
    rows = [
        [c.name, c.ours_label, fmt_ns(c.summary("ours")["median"]), c.base_label,
         fmt_ns(c.summary("base")["median"]), f"{c.ratio:.2f}x", f"<= {c.target:g}x",
         "PASS" if c.passed else "MISS"]
        for c in comps
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("RedisBackend vs raw redis-py (time per op; ratio = ours / baseline)")
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default=URL)
    ap.add_argument("--quick", action="store_true", help="fewer ops, for smoke runs")
    ap.add_argument("--rounds", type=int, default=9, help="timed rounds (default 9)")
    ap.add_argument("--seed", type=int, default=20240601, help="seed of the key order")
    ap.add_argument("-q", "--quiet", action="store_true", help="no per-round progress lines")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    sz = QUICK if args.quick else FULL
    say: Callable[[str], None] = (lambda s: None) if args.quiet else print

    print("cacheway RedisBackend benchmarks")
    for line in environment([
        ("versions", f"cacheway {cw.__version__}, {redis_versions(args.url)}"),
        ("run", f"{'quick' if args.quick else 'full'}, {args.rounds} rounds "
                f"(+1 warm-up), rotating order, seed {args.seed}"),
    ]):
        print("  " + line)
    print()
    comps = bench_redis(args.url, sz, random.Random(args.seed), args.rounds, say)
    print()
    for comp in comps:
        print_detail(comp)
    print_summary(comps)
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"total wall time {time.monotonic() - started:.0f} s")
    sys.exit(code)
