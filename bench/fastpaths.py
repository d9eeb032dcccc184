"""What each inlining in ``cacheway/engine/fastpaths.py`` buys: the same cache with the
memory backend's view (inlined) and without it (a MemoryBackend subclass that declares
no view, so the general paths run), in interleaved rounds.

    python bench/fastpaths.py            # about 20 s on 2 cores
    python bench/fastpaths.py --quick

1. memory hit: ``Cache(WriteThrough, MemoryBackend).get`` — ``fastpaths.memory_get``
   against ``Engine.get`` -> ``MemoryBackend.get``;
2. write-back set: ``Cache(WriteBack).set`` — ``fastpaths.staged_set`` against
   ``WriteBackEngine.set`` -> the dirty table -> ``MemoryBackend.set``;
3. A/A: the inlined hit against a second inlined cache (the noise of the method).
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Callable
from typing import Any

import cacheway as cw
from cacheway.backends.base import MemoryView

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (
    Comparison,
    RoundResult,
    Scratch,
    bench_args,
    environment,
    print_detail,
    run_alternating,
    show_table,
    source_revision,
    time_batches,
    time_batches2,
)


class NoView(cw.MemoryBackend):
    """A MemoryBackend that declares no view: engines use its get/set."""

    def fast_view(self, namespace: str) -> MemoryView | None:
        return None


def _cache(tmp: Scratch, inline: bool, policy: cw.Policy) -> cw.Cache:
    backend = cw.MemoryBackend() if inline else NoView()
    return cw.Cache(store=cw.SQLiteStore(tmp.path("fp")), backend=backend, policy=policy)


def main(argv: list[str] | None = None) -> None:
    names = {"hit": "1", "wbset": "2", "aa": "3"}
    args = bench_args(__doc__, names, 5, argv)
    n = 20_000 if args.quick else 100_000
    rng = random.Random(args.seed)
    say = (lambda s: None) if args.quiet else print
    comps: list[Comparison] = []
    tmp = Scratch()
    try:
        for name in args.only or list(names):
            if name in ("hit", "aa"):
                a = _cache(tmp, True, cw.WriteThrough())
                b = _cache(tmp, name == "aa", cw.WriteThrough())
                keys = [f"k{i}" for i in range(1000)]
                for c in (a, b):
                    c.set_many({k: {"n": i} for i, k in enumerate(keys)})
                ops = [rng.choice(keys) for _ in range(n)]

                batch = 10_000

                def timed(c: cw.Cache, ops: list[str] = ops) -> Callable[[], RoundResult]:
                    return lambda: time_batches(c.get, ops, 10_000)
                label = "get, inlined hit"
                base = ("get, inlined hit (2nd cache)" if name == "aa"
                        else "get via MemoryBackend.get")
            else:
                pol = cw.WriteBack(max_delay=1.0, batch_size=1000, max_dirty=10_000_000)
                a, b = _cache(tmp, True, pol), _cache(tmp, False, pol)
                items = [(f"k{rng.randrange(5000)}", {"n": i}) for i in range(n)]
                batch = 5_000

                def timed(c: cw.Cache, items: list[tuple[str, Any]] = items
                          ) -> Callable[[], RoundResult]:
                    return lambda: time_batches2(c.set, items, 5_000)
                label, base = "set, staged", "set via the dirty table + MemoryBackend.set"
            try:
                comp = Comparison(f"{names[name]}. {name}", label, base,
                                  target=1.1 if name == "aa" else 1.0,
                                  unit="calls", ops_per_round=n, batch=batch)
                run_alternating(comp, timed(a), timed(b), args.rounds, progress=say)
                comps.append(comp)
                print_detail(comp)
            finally:
                a.close()
                b.close()
    finally:
        tmp.cleanup()
    rows = [[c.name, c.ours_label, c.base_label,
             f"{c.summary('ours')['median']:.0f} ns", f"{c.summary('base')['median']:.0f} ns",
             f"{c.ratio:.2f}x"] for c in comps]
    show_table(f"fast paths, {source_revision()}",
               ["comparison", "inlined", "general path", "inlined/op", "general/op", "ratio"],
               rows)
    for line in environment():
        print(line)


if __name__ == "__main__":
    main()
