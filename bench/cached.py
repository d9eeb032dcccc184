"""``@cache.cached`` hit against the in-process memoizers it is compared with.

    python bench/cached.py            # full run (about half a minute on 2 cores)
    python bench/cached.py --quick    # smoke run, a few seconds
    python bench/cached.py --rounds 9 --seed 7 --only lru

Every comparison is a ratio ours / baseline of time per call (lower is better for us),
measured in interleaved rounds (see ``_common.py``); every call is a hit:

1. ``@cache.cached(ttl=3600)`` over a write-through cache on SQLite with a memory backend
   holding every result, against ``functools.lru_cache(maxsize)``: positional calls
   ``price(sku)`` (the default ``region`` applied to the key).
2. The same calls against ``cachetools.cached(cachetools.LRUCache(maxsize))``.
3. Keyword calls ``price(sku=..., region="eu")`` against ``functools.lru_cache``, whose key
   holds the keywords as given (ours binds them to parameters, so both spellings share
   a result).
4. A/A: ours against a second, identical ``@cache.cached`` on its own cache. Its ratio is
   the noise of this method on this machine: read the others' against it.

Ours builds a JSON key of the bound arguments, reads the cache (the same ``get`` as
``bench/embedded.py`` comparison 1) and checks the result's age against ``ttl``; the
baselines hash the argument tuple in a dict of the process. Ours is a cache in front of
a database; theirs end with the process.
"""

from __future__ import annotations

import functools
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import cachetools

import cacheway as cw

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (
    Comparison,
    RoundResult,
    bench_args,
    environment,
    fmt_ns,
    print_detail,
    run_alternating,
    show_table,
    source_revision,
    time_batches,
)
from embedded import get_mix


@dataclass(frozen=True)
class Sizes:
    keys: int
    ops: int
    batch: int


FULL = Sizes(keys=20_000, ops=200_000, batch=10_000)
QUICK = Sizes(keys=2_000, ops=20_000, batch=5_000)


def price(sku: str, region: str = "eu") -> dict[str, Any]:
    """The function every side memoizes: a small JSON-able result."""
    return {"sku": sku, "region": region, "cents": len(sku) * 100}


class Side:
    """One memoized ``price``: ours on its own cache (closed by ``close``) or a baseline."""

    def __init__(self, kind: str, maxsize: int, root: str) -> None:
        self.cache: cw.Cache | None = None
        self.fn: Callable[..., dict[str, Any]]
        if kind == "ours":
            self.cache = cw.Cache(
                store=cw.SQLiteStore(os.path.join(root, f"cached-{id(self)}.db")),
                backend=cw.MemoryBackend(max_entries=maxsize),
                policy=cw.WriteThrough(),
            )
            self.fn = self.cache.cached(ttl=3600)(price)
        elif kind == "lru":
            self.fn = functools.lru_cache(maxsize=maxsize)(price)
        elif kind == "cachetools":
            self.fn = cachetools.cached(cachetools.LRUCache(maxsize))(price)
        else:
            raise ValueError(kind)

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


def bench(name: str, ours_label: str, base_label: str, base_kind: str, keyword: bool,
          sz: Sizes, rng: random.Random, root: str, rounds: int, target: float,
          say: Callable[[str], None]) -> Comparison:
    keys, ops = get_mix(rng, sz.keys, sz.ops)
    maxsize = sz.keys * 2
    ours, base = Side("ours", maxsize, root), Side(base_kind, maxsize, root)
    try:
        for side in (ours, base):
            for k in keys:  # fill: every timed call is a hit
                side.fn(k)
        assert all(ours.fn(k) == base.fn(k) == price(k) for k in keys[:100]), "mismatch"
        assert ours.cache is not None
        hits0 = ours.cache.stats().hits

        def timed(side: Side) -> Callable[[], RoundResult]:
            fn = side.fn
            op = (lambda k: fn(sku=k, region="eu")) if keyword else fn
            return lambda: time_batches(op, ops, sz.batch)

        comp = Comparison(name, ours_label, base_label, target=target, unit="calls",
                          ops_per_round=len(ops), batch=sz.batch)
        run_alternating(comp, timed(ours), timed(base), rounds, progress=say)
        stats = ours.cache.stats()
        timed_calls = (rounds + 1) * len(ops)
        assert stats.hits - hits0 >= timed_calls, "ours missed during the timed rounds"
        assert stats.misses == len(keys), "ours recomputed during the timed rounds"
        return comp
    finally:
        ours.close()
        base.close()


# name, ours label, baseline label, baseline kind, keyword calls, target
COMPARISONS: dict[str, tuple[str, str, str, str, bool, float]] = {
    "lru": ("1. hit, positional", "@cache.cached(ttl=3600) price(sku)",
            "functools.lru_cache price(sku)", "lru", False, 30.0),
    "cachetools": ("2. hit, positional", "@cache.cached(ttl=3600) price(sku)",
                   "cachetools.cached(LRUCache) price(sku)", "cachetools", False, 4.0),
    "keyword": ("3. hit, keywords", "@cache.cached(ttl=3600) price(sku=, region=)",
                "functools.lru_cache price(sku=, region=)", "lru", True, 30.0),
    "aa": ("4. A/A noise", "@cache.cached(ttl=3600) price(sku)",
           "a second identical @cache.cached", "ours", False, 1.1),
}


def main(argv: list[str] | None = None) -> int:
    args = bench_args(__doc__, COMPARISONS, 20240601, argv)
    sz = QUICK if args.quick else FULL
    say: Callable[[str], None] = (lambda s: None) if args.quiet else print

    print("cacheway @cached benchmarks")
    for line in environment([
        ("versions", f"cacheway {cw.__version__} (source {source_revision()}), "
                     f"cachetools {version('cachetools')}, orjson {version('orjson')}"),
        ("run", f"{'quick' if args.quick else 'full'}, {args.rounds} rounds per side "
                f"(+1 warm-up), alternating, seed {args.seed}; {sz.keys} keys, "
                f"{sz.ops} calls per round (80% on a hot 20%)"),
    ]):
        print("  " + line)
    print()

    root = tempfile.mkdtemp(prefix="cacheway-bench-")
    comps: list[Comparison] = []
    started = time.monotonic()
    try:
        for name, (title, ours_label, base_label, kind, keyword, target) in COMPARISONS.items():
            if args.only and name not in args.only:
                continue
            rng = random.Random(f"{args.seed}:{name}")
            comp = bench(title, ours_label, base_label, kind, keyword, sz, rng, root,
                         args.rounds, target, say)
            if not args.quiet:
                print()
            print_detail(comp)
            comps.append(comp)
            sys.stdout.flush()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    header = ["comparison", "ours median", "baseline median", "median ratio", "target",
              "verdict"]
    rows = [[f"{c.name} vs {c.base_label.split(' price')[0]}",
             fmt_ns(c.summary("ours")["median"]), fmt_ns(c.summary("base")["median"]),
             f"{c.ratio:.2f}x", f"<= {c.target:g}x", "PASS" if c.passed else "MISS"]
            for c in comps]
    show_table("cacheway @cached hit (time per call; ratio = ours / baseline)", header, rows)
    print(f"total wall time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
