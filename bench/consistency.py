"""Consistency benchmarks of issue 5, in one run.

1. L1 hit of TwoLevelBackend (bounded L1) vs cachetools.LRUCache.get, and the invalidation delay
   across processes (from bench/consistency_l1.py; needs Redis on 127.0.0.1:6379).
2. Expiry storms: 1000 hot keys expire while 8 threads read them. Store loads per 1000
   expiries and read latency for a textbook cache-aside (no single flight), cacheway
   (single flight), and cacheway with early refresh (XFetch, beta=1).

usage: python bench/consistency.py [--quick] [--skip-redis] [--seed N]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cacheway as cw

KEYS = 1000
TTL = 1.0
LOAD_DELAY = 0.005
THREADS = 8


class _Store:
    def __init__(self) -> None:
        self.loads = 0
        self.lock = threading.Lock()

    def load_many(self, keys: list[str]) -> dict[str, Any]:
        with self.lock:
            self.loads += 1
        time.sleep(LOAD_DELAY)
        return {k: k for k in keys}


class _Textbook:
    """The 30-line cache-aside: a dict with expiry times; every miss loads."""

    def __init__(self, store: _Store) -> None:
        self.store = store
        self.data: dict[str, tuple[Any, float]] = {}

    def get(self, key: str) -> Any:
        hit = self.data.get(key)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        value = self.store.load_many([key])[key]
        self.data[key] = (value, time.monotonic() + TTL)
        return value


def _storm(kind: str, seconds: float, seed: int) -> dict[str, Any]:
    store = _Store()
    getter: Any
    cache = None
    if kind == "textbook":
        getter = _Textbook(store).get
    else:
        cache = cw.Cache(
            store=cw.CallbackStore(store.load_many, lambda items: None, lambda keys: None),
            ttl=TTL, early_refresh=1.0 if kind == "early-refresh" else None,
        )
        getter = cache.get
    keys = [f"k{i}" for i in range(KEYS)]
    for k in keys:  # warm: every key cached at about the same moment
        getter(k)
    warm_loads = store.loads
    latencies: list[list[float]] = [[] for _ in range(THREADS)]
    stop = time.monotonic() + seconds

    def reader(i: int) -> None:
        rng = random.Random(seed + i)
        out = latencies[i]
        while time.monotonic() < stop:
            k = keys[rng.randrange(KEYS)]
            t0 = time.perf_counter()
            getter(k)
            out.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if cache is not None:
        cache.close()
    lat = sorted(x for xs in latencies for x in xs)
    expiries = KEYS * (seconds / TTL)
    return {
        "kind": kind,
        "loads_per_1000_expiries": (store.loads - warm_loads) / expiries * 1000,
        "reads": len(lat),
        "p50_us": lat[len(lat) // 2] * 1e6,
        "p99_us": lat[int(len(lat) * 0.99)] * 1e6,
        "max_ms": lat[-1] * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--skip-redis", action="store_true", help="only the expiry storms")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    rc = 0
    if not args.skip_redis:
        import consistency_l1

        rc = consistency_l1.main(["--quick"] if args.quick else [])
        print()
    seconds = 2.0 if args.quick else 4.0
    print(f"expiry storms: {KEYS} keys, ttl {TTL:g} s, load {LOAD_DELAY * 1e3:g} ms, "
          f"{THREADS} reader threads, {seconds:g} s each")
    header = f"{'strategy':<16}{'loads/1000 expiries':>21}{'reads':>9}{'p50 µs':>9}" \
             f"{'p99 µs':>10}{'max ms':>9}"
    print(header)
    print("-" * len(header))
    for kind in ("textbook", "cacheway", "early-refresh"):
        r = _storm(kind, seconds, args.seed)
        print(f"{kind:<16}{r['loads_per_1000_expiries']:>21.0f}{r['reads']:>9}"
              f"{r['p50_us']:>9.1f}{r['p99_us']:>10.1f}{r['max_ms']:>9.1f}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
