"""TwoLevelBackend: the cost of an L1 hit, and how fast other processes' L1s hear of a write.

    python bench/consistency_l1.py                 # full run (about half a minute)
    python bench/consistency_l1.py --quick         # smoke run
    python bench/consistency_l1.py --url redis://127.0.0.1:6379/0 --writes 1000 --seed 7

1. L1 hit: ``Cache.get`` on a ``TwoLevelBackend`` whose L1 holds every key (write-through,
   SQLite store never touched) against ``cachetools.LRUCache.get``, in alternating rounds
   (bench/_common.py); ``Cache.get`` on a plain ``MemoryBackend`` is shown for reference.
   Target: median ratio <= 1.5x.
2. Invalidation delay: a reader process (multiprocessing spawn) holds a ``TwoLevelBackend``
   whose ``on_invalidate`` hook stamps ``time.time_ns()``; this process writes ``--writes``
   distinct keys through its own ``TwoLevelBackend`` on the same prefix, stamping
   ``time.time_ns()`` before each ``set``, paced ``--gap`` ms apart so that the figure is
   latency, not queueing. The delay of a write is the reader's stamp minus the writer's
   (one host, one clock). Reported: p50, p90, p99, max. Target: p99 <= 10 ms.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
import uuid
from importlib.metadata import version
from typing import Any

import cachetools

import cacheway as cw
from cacheway.backends.two_level import TwoLevelBackend

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # the helpers live next to this script
    Comparison,
    RoundResult,
    environment,
    fmt_ns,
    percentile,
    plain_table,
    print_detail,
    run_alternating,
    time_batches,
)

URL = os.environ.get("CACHEWAY_TEST_REDIS", "redis://127.0.0.1:6379/0")


# -- 1. L1 hit ---------------------------------------------------------------------------
def bench_hit(url: str, keys: int, ops: int, rounds: int, seed: int) -> list[Comparison]:
    rng = random.Random(seed)
    names = [f"user:{i}" for i in range(keys)]
    values = {k: {"id": i, "name": f"n{i}", "tags": ["a", "b"]} for i, k in enumerate(names)}
    order = [rng.choice(names) for _ in range(ops)]
    lru: cachetools.LRUCache[str, Any] = cachetools.LRUCache(maxsize=keys * 2)
    for k, v in values.items():
        lru[k] = v
    tmp = tempfile.mkdtemp(prefix="cw-bench-")
    l2 = cw.RedisBackend(url, prefix=f"bench_{uuid.uuid4().hex[:8]}:")
    two = TwoLevelBackend(cw.MemoryBackend(), l2)
    if not two.wait_ready(5.0):
        raise SystemExit(f"no invalidation connection to {url}")
    two_cache = cw.Cache(store=cw.SQLiteStore(os.path.join(tmp, "two.db")), backend=two)
    mem_cache = cw.Cache(store=cw.SQLiteStore(os.path.join(tmp, "mem.db")))
    try:
        two_cache.set_many(values)
        mem_cache.set_many(values)
        # Our own writes come back as invalidations and drop the L1 copies: read until
        # every key is in the L1 and stays there.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for k in names:
                two_cache.get(k)
            if len(two.l1) == keys:
                time.sleep(0.05)
                if len(two.l1) == keys:
                    break
        before = two_cache.stats().loads
        batch = 1000
        comps = []
        for label, get in (("Cache.get(TwoLevel L1 hit)", two_cache.get),
                           ("Cache.get(MemoryBackend)", mem_cache.get)):
            comp = Comparison(
                f"L1 hit: {label}", label, "cachetools.LRUCache.get", 1.5, "gets"
            )
            comp.ops_per_round, comp.batch = ops, batch
            def ours(get: Any = get) -> RoundResult:
                return time_batches(get, order, batch)

            def base() -> RoundResult:
                return time_batches(lru.get, order, batch)

            comps.append(run_alternating(comp, ours, base, rounds))
        assert two_cache.stats().loads == before, "the store was read during the hit bench"
        assert len(two.l1) == keys, "an L1 copy went missing during the hit bench"
        return comps
    finally:
        two_cache.close()
        mem_cache.close()
        l2.clear()
        two.close()
        l2.close()


# -- 2. invalidation delay -----------------------------------------------------------------
def _reader(url: str, prefix: str, ready: Any, done: Any, out: Any) -> None:
    stamps: dict[str, int] = {}

    def hook(keys: list[str] | None) -> None:
        now = time.time_ns()
        for k in keys or ():
            stamps.setdefault(k, now)

    l2 = cw.RedisBackend(url, prefix=prefix)
    two = TwoLevelBackend(cw.MemoryBackend(), l2, on_invalidate=hook)
    two.wait_ready(10.0)
    ready.set()
    done.wait(120)
    time.sleep(0.2)  # the last invalidations
    two.close()
    l2.close()
    out.put(stamps)


def bench_delay(url: str, writes: int, gap_ms: float) -> dict[str, Any]:
    prefix = f"bench_{uuid.uuid4().hex[:8]}:"
    ctx = mp.get_context("spawn")
    ready, done, out = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_reader, args=(url, prefix, ready, done, out), daemon=True)
    proc.start()
    l2 = cw.RedisBackend(url, prefix=prefix)
    two = TwoLevelBackend(cw.MemoryBackend(), l2)
    sent: dict[str, tuple[int, int]] = {}
    try:
        if not ready.wait(30):
            raise SystemExit("the reader process did not subscribe")
        payload = cw.JSONSerializer().dumps({"v": 1})
        for i in range(writes):
            key = f"w{i}"
            t0 = time.time_ns()
            two.set(key, {"v": 1}, payload, 60)
            sent[key] = (t0, time.time_ns())
            time.sleep(gap_ms / 1000)
        done.set()
        stamps: dict[str, int] = out.get(timeout=60)
        proc.join(10)
    finally:
        l2.clear()
        two.close()
        l2.close()
    from_start = [(stamps[k] - t0) for k, (t0, _) in sent.items() if k in stamps]
    from_return = [(stamps[k] - t1) for k, (_, t1) in sent.items() if k in stamps]
    return {"writes": writes, "seen": len(from_start),
            "from_start": from_start, "from_return": from_return}


def _fmt(ns: float) -> str:
    return f"-{fmt_ns(-ns)}" if ns < 0 else fmt_ns(ns)


def _stats(xs: list[int]) -> str:
    return "  ".join(
        f"{name} {_fmt(v):>10}" for name, v in (
            ("p50", percentile(xs, 50)), ("p90", percentile(xs, 90)),
            ("p99", percentile(xs, 99)), ("max", max(xs)),
        )
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default=URL)
    ap.add_argument("--quick", action="store_true", help="a smoke run (few rounds and writes)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--writes", type=int, default=1000)
    ap.add_argument("--gap", type=float, default=2.0, help="ms between the writes")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    rounds, writes, ops = args.rounds, args.writes, 100_000
    if args.quick:
        rounds, writes, ops = 3, 200, 20_000
    print("\n".join(environment([("redis-py", version("redis")),
                                 ("cachetools", version("cachetools"))])))
    print(f"seed {args.seed}, {rounds} rounds, {writes} writes {args.gap:g} ms apart\n")
    comps = bench_hit(args.url, 1000, ops, rounds, args.seed)
    for comp in comps:
        print_detail(comp)
    d = bench_delay(args.url, writes, args.gap)
    p99 = percentile(d["from_start"], 99)
    delay_ok = p99 <= 10_000_000 and d["seen"] == d["writes"]
    print("invalidation delay, writer process -> reader process's on_invalidate hook")
    print(f"  {d['seen']}/{d['writes']} writes seen by the reader")
    print(f"  from the writer's set() call:   {_stats(d['from_start'])}")
    print(f"  from the writer's set() return: {_stats(d['from_return'])}")
    print()
    rows = [
        (c.name, fmt_ns(c.summary("ours")["median"]), fmt_ns(c.summary("base")["median"]),
         f"{c.ratio:.2f}x", f"<= {c.target:g}x", "PASS" if c.passed else "MISS")
        for c in comps
    ]
    rows[-1] = (*rows[-1][:4], "(reference)", "")
    rows.append(("invalidation delay p99 (p50)", fmt_ns(p99),
                 f"({fmt_ns(percentile(d['from_start'], 50))})", "", "<= 10 ms",
                 "PASS" if delay_ok else "MISS"))
    header = ("measure", "ours", "baseline", "ratio", "target", "verdict")
    plain_table(header, rows)
    return 0 if comps[0].passed and delay_ok else 1


if __name__ == "__main__":
    sys.exit(main())
