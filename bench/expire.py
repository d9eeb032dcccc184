"""Data expiry (``namespace(name, expire=...)``) against the same namespace without it.

    python bench/expire.py            # full run (about a minute on 2 cores)
    python bench/expire.py --quick    # smoke run

Every comparison is a ratio ours / baseline of time per operation (lower is better), in
interleaved rounds (see ``_common.py``), over SQLite (synchronous=FULL):

1. memory hit: ``get`` of an expiring namespace against a plain one whose copies have the
   same ttl (the copy's ttl does the work: nothing more on a hit);
2. write-back ``set`` + ``flush``: each write stamped (the unstaged path: the staged fast
   path keeps no stamp), the store's delete-of-ended-rows and stamp statements, against
   a plain namespace (which takes the staged fast path);
3. write-through ``set``: one durable commit each, with and without the stamp;
4. A/A: two plain write-back namespaces (the noise of the method).

It also reports how fast ``store.purge_expired()`` deletes ended rows.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any

import cacheway as cw
from cacheway.stores.base import SET, Op

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (
    Comparison,
    RoundResult,
    Scratch,
    bench_args,
    environment,
    print_detail,
    run_alternating,
    set_mix,
    show_table,
    source_revision,
    time_batches,
    time_batches2,
)

EXPIRE = 3600.0  # long: nothing ends while it is measured


def _cache(tmp: Scratch, policy: cw.Policy, expire: float | None) -> tuple[cw.Cache, Any]:
    # The plain side's copies get ttl=EXPIRE too: an expiring namespace's copies live at
    # most that long, and a copy with a ttl costs a clock read per hit either way.
    cache = cw.Cache(store=cw.SQLiteStore(tmp.path(f"e-{random.random()}.db")), policy=policy)
    ns = (cache.namespace("s", expire=expire) if expire
          else cache.namespace("s", ttl=EXPIRE))
    return cache, ns


def _hit(tmp: Scratch, n: int, ops: int, rng: random.Random, rounds: int,
         say: Callable[[str], None], *, aa: bool = False) -> Comparison:
    keys = [f"k{rng.randrange(n)}" for _ in range(ops)]
    sides = [_cache(tmp, cw.WriteThrough(), None if aa else EXPIRE),
             _cache(tmp, cw.WriteThrough(), None)]
    for _, ns in sides:
        ns.set_many({f"k{i}": {"n": i} for i in range(n)})
    comp = Comparison("1. memory hit", "get, expire=3600", "get, ttl=3600", target=1.1,
                      unit="gets", ops_per_round=len(keys), batch=10_000)

    def timed(ns: Any) -> Callable[[], RoundResult]:
        return lambda: time_batches(ns.get, keys, 10_000)

    try:
        return run_alternating(comp, timed(sides[0][1]), timed(sides[1][1]), rounds,
                               progress=say)
    finally:
        for cache, _ in sides:
            cache.close()


def _writes(tmp: Scratch, policy: Callable[[], cw.Policy], name: str, items: list[Any],
            rounds: int, say: Callable[[str], None], expire: float | None) -> Comparison:
    wb = isinstance(policy(), cw.WriteBack)
    aa = expire is None
    comp = Comparison(name, f"set{' + flush' if wb else ''}, "
                      f"{'expire=3600' if expire else 'no expire'}",
                      "the same, a second cache" if aa
                      else f"set{' + flush' if wb else ''}, no expire", target=1.1 if aa else 1.3,
                      unit="sets", ops_per_round=len(items),
                      # write-back: one sample per round, the whole set x N + flush()
                      batch=len(items) if wb else 1)

    def side(exp: float | None) -> Callable[[], RoundResult]:
        def run() -> RoundResult:
            cache, ns = _cache(tmp, policy(), exp)
            try:
                if not wb:
                    return time_batches2(ns.set, items, 1)
                started = time.perf_counter_ns()
                sets = time_batches2(ns.set, items, len(items))
                set_done = time.perf_counter_ns()
                cache.flush()  # the store writes are part of what is compared
                whole = (time.perf_counter_ns() - started) / len(items)
                return RoundResult([whole], whole, {
                    "set phase/set": sets.per_op,
                    "flush wait/set": (time.perf_counter_ns() - set_done) / len(items)})
            finally:
                cache.close()
        return run

    return run_alternating(comp, side(expire), side(None), rounds, progress=say)


def _purge_rate(tmp: Scratch, n: int) -> float:
    """Rows per second ``purge_expired`` deletes from a table of ``n`` ended rows."""
    store = cw.SQLiteStore(tmp.path("purge.db"))
    try:
        now = time.time()
        store.apply([Op("s", f"k{i}", SET, b"1", expires_at=now - 1) for i in range(n)])
        started = time.perf_counter()
        done = 0
        while True:
            got = store.purge_expired(1000)
            done += got
            if got < 1000:
                break
        assert done == n, (done, n)
        return n / (time.perf_counter() - started)
    finally:
        store.close()


def main(argv: list[str] | None = None) -> None:
    names = {"hit": "1", "wb": "2", "wt": "3", "aa": "4"}
    args = bench_args(__doc__, names, 13, argv)
    n, ops = (1_000, 20_000) if args.quick else (10_000, 200_000)
    wb_ops, wt_ops = (2_000, 200) if args.quick else (20_000, 1_000)
    rng = random.Random(args.seed)
    say = (lambda s: None) if args.quiet else print
    tmp = Scratch()
    comps: list[Comparison] = []
    wb = lambda: cw.WriteBack(max_delay=1.0, batch_size=1000, max_dirty=10**7)  # noqa: E731
    try:
        for name in args.only or list(names):
            if name == "hit":
                comp = _hit(tmp, n, ops, rng, args.rounds, say)
            elif name == "wb":
                comp = _writes(tmp, wb, "2. write-back", set_mix(rng, wb_ops, 1000),
                               args.rounds, say, EXPIRE)
            elif name == "wt":
                comp = _writes(tmp, cw.WriteThrough, "3. write-through",
                               set_mix(rng, wt_ops, 1000), args.rounds, say, EXPIRE)
            else:
                comp = _writes(tmp, wb, "4. A/A write-back", set_mix(rng, wb_ops, 1000),
                               args.rounds, say, None)
            comps.append(comp)
            print_detail(comp)
        rate = _purge_rate(tmp, 5_000 if args.quick else 50_000)
    finally:
        tmp.cleanup()
    rows = [[c.name, c.ours_label, c.base_label,
             f"{c.summary('ours')['median']:.0f} ns", f"{c.summary('base')['median']:.0f} ns",
             f"{c.ratio:.2f}x"] for c in comps]
    show_table(f"expire=, {source_revision()}",
               ["comparison", "ours", "baseline", "ours/op", "base/op", "median ratio"], rows)
    print(f"purge_expired: {rate:,.0f} ended rows deleted per second (SQLite, batches of 1000)")
    for line in environment():
        print(line)


if __name__ == "__main__":
    main()
