"""Typed namespaces (``cache.namespace(name, type=T)``) against the untyped path.

    python bench/typed.py            # full run (about half a minute on 2 cores)
    python bench/typed.py --quick    # smoke run

Every comparison is a ratio ours / baseline of time per ``get`` (lower is better), in
interleaved rounds (see ``_common.py``), on a write-through cache over SQLite:

1. memory hit: a dataclass namespace against an untyped one holding the same values as
   dicts (a typed hit answers the typed copy the cache keeps: no conversion);
2. memory hit: a ``msgspec.Struct`` namespace, the same baseline;
3. miss answered by the store (a 1-entry memory backend, so every read loads): dataclass
   namespace (the row's plain form turned into the type, msgspec ``convert``) against
   untyped dicts;
4. A/A: the untyped namespace against a second untyped cache (the noise of the method).
"""

from __future__ import annotations

import dataclasses
import os
import random
import sys
from collections.abc import Callable
from typing import Any

import msgspec

import cacheway as cw

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
)


@dataclasses.dataclass
class Profile:
    name: str
    age: int
    tags: list[str]


class ProfileStruct(msgspec.Struct):
    name: str
    age: int
    tags: list[str]


def _value(kind: str, i: int) -> Any:
    fields = {"name": f"user{i}", "age": i % 90, "tags": ["a", "b"]}
    if kind == "dataclass":
        return Profile(**fields)  # type: ignore[arg-type]
    if kind == "struct":
        return ProfileStruct(**fields)  # type: ignore[arg-type]
    return fields


def _side(tmp: Scratch, kind: str, n: int, miss: bool) -> tuple[cw.Cache, Callable[..., Any]]:
    cache = cw.Cache(store=cw.SQLiteStore(tmp.path(f"{kind}-{random.random()}.db")),
                     backend=cw.MemoryBackend(max_entries=1 if miss else None))
    types = {"dataclass": Profile, "struct": ProfileStruct}
    ns = (cache.namespace("p", type=types[kind]) if kind in types
          else cache.namespace("p"))
    ns.set_many({f"k{i}": _value(kind, i) for i in range(n)})
    return cache, ns.get


def main(argv: list[str] | None = None) -> None:
    names = {"dataclass": "1", "struct": "2", "miss": "3", "aa": "4"}
    args = bench_args(__doc__, names, 11, argv)
    n, ops_n = (2_000, 20_000) if args.quick else (10_000, 200_000)
    rng = random.Random(args.seed)
    comps: list[Comparison] = []
    say = (lambda s: None) if args.quiet else print
    tmp = Scratch()
    try:
        for name in args.only or list(names):
            ours_kind = {"dataclass": "dataclass", "struct": "struct", "miss": "dataclass",
                         "aa": "plain"}[name]
            miss = name == "miss"
            count = ops_n // 10 if miss else ops_n
            keys = [f"k{rng.randrange(n)}" for _ in range(count)]
            ours_cache, ours_get = _side(tmp, ours_kind, n, miss)
            base_cache, base_get = _side(tmp, "plain", n, miss)
            try:
                first = ours_get("k1")
                plain = (msgspec.to_builtins(first) if ours_kind != "plain" else first)
                assert plain == base_get("k1"), (plain, base_get("k1"))

                def timed(get: Callable[..., Any], keys: list[str] = keys
                          ) -> Callable[[], RoundResult]:
                    return lambda: time_batches(get, keys, min(len(keys), 10_000))

                aa = name == "aa"
                title = ("A/A memory hit" if aa
                         else "miss (store)" if miss else "memory hit")
                comp = Comparison(
                    f"{names[name]}. {title}",
                    "get, untyped dicts" if aa else f"get, type={ours_kind}",
                    "the same, a second cache" if aa else "get, untyped dicts",
                    target=1.1 if aa else 1.5,
                    unit="gets", ops_per_round=len(keys), batch=min(len(keys), 10_000))
                run_alternating(comp, timed(ours_get), timed(base_get), args.rounds,
                                progress=say)
                comps.append(comp)
                print_detail(comp)
            finally:
                ours_cache.close()
                base_cache.close()
    finally:
        tmp.cleanup()
    rows = [[c.name, c.ours_label, c.base_label,
             f"{c.summary('ours')['median']:.0f} ns", f"{c.summary('base')['median']:.0f} ns",
             f"{c.ratio:.2f}x"] for c in comps]
    show_table(f"typed namespaces, {source_revision()}",
               ["comparison", "ours", "baseline", "ours/get", "base/get", "median ratio"], rows)
    for line in environment([("msgspec", msgspec.__version__)]):
        print(line)


if __name__ == "__main__":
    main()
