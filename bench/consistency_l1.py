"""TwoLevelBackend: the cost of an L1 hit, and how fast other processes' L1s hear of a write.

    python bench/consistency_l1.py                 # full run (about half a minute)
    python bench/consistency_l1.py --quick         # smoke run
    python bench/consistency_l1.py --url redis://127.0.0.1:6379/0 --writes 1000 --seed 7

1. L1 hit: ``Cache.get`` on a ``TwoLevelBackend`` whose L1 (``MemoryBackend(max_entries=
   2000)``, the baseline's maxsize) holds every key (write-through, SQLite store never
   touched) against ``cachetools.LRUCache.get``, in alternating rounds (bench/_common.py).
   Target: median ratio <= 1.5x. For reference: the same over an unbounded L1
   (``MemoryBackend()``, whose hit is not inlined: see ``TwoLevelBackend.fast_view``) and
   ``Cache.get`` on a plain ``MemoryBackend``; and an A/A row (the headline's ``get``
   against itself: the noise of the method).
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
import shutil
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
    clear_backend,
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
def _fill_l1(cache: cw.Cache, two: TwoLevelBackend, names: list[str],
             values: dict[str, Any]) -> None:
    cache.set_many(values)
    # Our own writes come back as invalidations and drop the L1 copies: read until
    # every key is in the L1 and stays there.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for k in names:
            cache.get(k)
        if len(two.l1) == len(names):
            time.sleep(0.05)
            if len(two.l1) == len(names):
                break


def bench_hit(url: str, keys: int, ops: int, rounds: int, seed: int) -> list[Comparison]:
    """The headline (a bounded L1, as large as the LRUCache baseline: its hit is inlined),
    the same on an unbounded L1 and on a plain MemoryBackend (references), and an A/A."""
    rng = random.Random(seed)
    names = [f"user:{i}" for i in range(keys)]
    values = {k: {"id": i, "name": f"n{i}", "tags": ["a", "b"]} for i, k in enumerate(names)}
    order = [rng.choice(names) for _ in range(ops)]
    lru: cachetools.LRUCache[str, Any] = cachetools.LRUCache(maxsize=keys * 2)
    for k, v in values.items():
        lru[k] = v
    tmp = tempfile.mkdtemp(prefix="cw-bench-")
    twos: list[tuple[cw.RedisBackend, TwoLevelBackend, cw.Cache]] = []
    mem_cache = cw.Cache(store=cw.SQLiteStore(os.path.join(tmp, "mem.db")))
    try:
        for i, l1 in enumerate((cw.MemoryBackend(max_entries=keys * 2), cw.MemoryBackend())):
            l2 = cw.RedisBackend(url, prefix=f"bench_{uuid.uuid4().hex[:8]}:")
            two = TwoLevelBackend(l1, l2)
            cache = cw.Cache(store=cw.SQLiteStore(os.path.join(tmp, f"two{i}.db")),
                             backend=two)
            twos.append((l2, two, cache))
            if not two.wait_ready(5.0):
                raise SystemExit(f"no invalidation connection to {url}")
            _fill_l1(cache, two, names, values)
        mem_cache.set_many(values)
        before = [cache.stats().loads for _, _, cache in twos]
        batch = 1000
        bounded, unbounded = twos[0][2].get, twos[1][2].get
        comps = []
        for name, label, get, base_label, base_get, target in (
            ("L1 hit", f"Cache.get(TwoLevel, L1 max_entries={keys * 2})", bounded,
             "cachetools.LRUCache.get", lru.get, 1.5),
            ("L1 hit, unbounded L1", "Cache.get(TwoLevel, L1 MemoryBackend())", unbounded,
             "cachetools.LRUCache.get", lru.get, 1.5),
            ("memory hit", "Cache.get(MemoryBackend)", mem_cache.get,
             "cachetools.LRUCache.get", lru.get, 1.5),
            ("A/A L1 hit", f"Cache.get(TwoLevel, L1 max_entries={keys * 2})", bounded,
             "the same get", bounded, 1.1),
        ):
            comp = Comparison(name, label, base_label, target, "gets")
            comp.ops_per_round, comp.batch = ops, batch

            def ours(get: Any = get) -> RoundResult:
                return time_batches(get, order, batch)

            def base(get: Any = base_get) -> RoundResult:
                return time_batches(get, order, batch)

            comps.append(run_alternating(comp, ours, base, rounds))
        assert [c.stats().loads for _, _, c in twos] == before, \
            "the store was read during the hit bench"
        assert all(len(two.l1) == keys for _, two, _ in twos), \
            "an L1 copy went missing during the hit bench"
        return comps
    finally:
        mem_cache.close()
        for l2, two, cache in twos:
            cache.close()
            clear_backend(l2)
            two.close()
            l2.close()
        shutil.rmtree(tmp, ignore_errors=True)


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
        clear_backend(l2)
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
    for i in (1, 2):  # the unbounded L1 and the plain MemoryBackend
        rows[i] = (*rows[i][:4], "(reference)", "")
    rows.append(("invalidation delay p99 (p50)", fmt_ns(p99),
                 f"({fmt_ns(percentile(d['from_start'], 50))})", "", "<= 10 ms",
                 "PASS" if delay_ok else "MISS"))
    header = ("measure", "ours", "baseline", "ratio", "target", "verdict")
    plain_table(header, rows)
    return 0 if comps[0].passed and delay_ok else 1


if __name__ == "__main__":
    sys.exit(main())
