"""asyncio benchmarks (issue 12): AsyncCache against the async caches and the thread front.

    python bench/async.py            # full run (about 6 minutes on 2 cores)
    python bench/async.py --quick    # smoke run, a few seconds

Comparisons, each a ratio ours / baseline of time per op (lower is better for us), in
interleaved rounds (see ``_common.py``), every side awaited on one event loop:

1. A/A: ``await acache.get`` memory hit against itself (a second AsyncCache): the noise
   floor of the harness.
2. memory hit: ``await acache.get`` (AsyncCache over SQLite, MemoryBackend holding every
   key: answered on the loop) against cashews' ``mem://`` ``await cache.get``.
3. the same against aiocache's ``SimpleMemoryCache.get``.
4. the inline hit path's gain: ``await acache.get`` against the same hit offloaded to a
   worker thread (``await loop.run_in_executor(pool, cache.get, key)``): what every hit
   would cost without the inline path.
5. write-back ``set`` from 100 tasks (``await acache.set``, WriteBack over SQLite) against
   the thread front's ``cache.set`` from 100 threads (same store, same mix), time per set.
6. A/A: ``await acache.get`` Redis hit against itself (a second AsyncCache on the same
   Redis): the noise floor of the Redis rows.
7. Redis hit: ``await acache.get`` (AsyncCache over a RedisBackend holding every key: read
   on the loop with redis.asyncio) against a raw ``redis.asyncio`` ``GET`` plus
   ``orjson.loads`` of the bytes (what an app reading the same JSON needs). Target 1.2x.
8. write-through Redis + PostgreSQL: ``await acache.set`` (PostgresStore, RedisBackend)
   against a raw upsert on a psycopg ``AsyncConnection`` (autocommit) followed by a
   ``redis.asyncio`` ``SET``, one task, time per set. Target 1.3x.
9. the loop path's gain: ``await acache.set`` over ``PostgresStore`` (on the loop: its
   async path, psycopg's ``AsyncConnectionPool``, redis.asyncio) against the same over a
   PostgresStore that declares no async path (a worker thread per set), same Redis.
10. loop lag while 100 tasks write with ``fsync="always"`` (WriteBack over SQLite with a
   journal): the p99 of a 1 ms ticker's lateness, median over the rounds (not a ratio;
   target < 5 ms).

6-9 need Redis and PostgreSQL (``CACHEWAY_TEST_REDIS``, ``CACHEWAY_TEST_POSTGRES``, the
test suite's defaults on loopback); without them they are skipped with the reason.

cashews and aiocache are cache-only (nothing reaches a database): 2 and 3 compare the
hit path alone. AsyncCache runs store calls in worker threads (see cacheway/aio.py) except
over a store with an async path (8: PostgresStore, see cacheway/_aio_write.py); hits
(memory, Redis) are answered on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import cacheway as cw

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (
    Comparison,
    RoundResult,
    Scratch,
    bench_args,
    environment,
    perf_ns,
    print_detail,
    print_table,
    run_alternating,
    set_mix,
    source_revision,
)
from async_servers import (
    FULL,
    LAG_TARGET_MS,
    QUICK,
    TASKS,
    Sizes,
    bench_loop_lag,
    bench_redis_aa,
    bench_redis_hit,
    bench_write_through_paths,
    bench_write_through_pg,
    close_loop,
    get_round,
    hit_keys,
    on_loop,
    services_down,
)


def _filled_async_cache(tmp: Scratch, data: dict[str, Any]) -> cw.AsyncCache:
    acache = cw.AsyncCache(store=cw.SQLiteStore(tmp.path("b")))
    on_loop(acache.set_many(data))
    return acache


def bench_aa(sz: Sizes, rng: random.Random, tmp: Scratch, rounds: int,
             say: Callable[[str], None]) -> Comparison:
    data, keys = hit_keys(sz, rng)
    a, b = _filled_async_cache(tmp, data), _filled_async_cache(tmp, data)
    comp = Comparison("A/A: memory hit", "await acache.get (A)", "await acache.get (B)",
                      1.1, "gets", ops_per_round=len(keys), batch=sz.get_batch)
    try:
        return run_alternating(comp, get_round(a.get, keys, sz.get_batch),
                               get_round(b.get, keys, sz.get_batch), rounds, progress=say)
    finally:
        on_loop(a.close())
        on_loop(b.close())


def bench_cashews(sz: Sizes, rng: random.Random, tmp: Scratch, rounds: int,
                  say: Callable[[str], None]) -> Comparison:
    from cashews import Cache as Cashews

    data, keys = hit_keys(sz, rng)
    ours = _filled_async_cache(tmp, data)
    theirs = Cashews()
    theirs.setup("mem://")
    for k, v in data.items():
        on_loop(theirs.set(k, v))
    comp = Comparison("memory hit vs cashews", "await AsyncCache.get",
                      "await cashews(mem://).get", 1.0, "gets", ops_per_round=len(keys),
                      batch=sz.get_batch)
    try:
        return run_alternating(comp, get_round(ours.get, keys, sz.get_batch),
                               get_round(theirs.get, keys, sz.get_batch), rounds,
                               progress=say)
    finally:
        on_loop(ours.close())


def bench_aiocache(sz: Sizes, rng: random.Random, tmp: Scratch, rounds: int,
                   say: Callable[[str], None]) -> Comparison:
    from aiocache import SimpleMemoryCache

    data, keys = hit_keys(sz, rng)
    ours = _filled_async_cache(tmp, data)
    theirs = SimpleMemoryCache()
    for k, v in data.items():
        on_loop(theirs.set(k, v))
    comp = Comparison("memory hit vs aiocache", "await AsyncCache.get",
                      "await aiocache.SimpleMemoryCache.get", 1.0, "gets",
                      ops_per_round=len(keys), batch=sz.get_batch)
    try:
        return run_alternating(comp, get_round(ours.get, keys, sz.get_batch),
                               get_round(theirs.get, keys, sz.get_batch), rounds,
                               progress=say)
    finally:
        on_loop(ours.close())


def bench_inline(sz: Sizes, rng: random.Random, tmp: Scratch, rounds: int,
                 say: Callable[[str], None]) -> Comparison:
    data, keys = hit_keys(sz, rng)
    ours = _filled_async_cache(tmp, data)
    cache = ours.cache
    assert cache is not None
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)

    async def offloaded(key: str) -> Any:
        return await asyncio.get_running_loop().run_in_executor(pool, cache.get, key)

    few = keys[: max(1, len(keys) // 10)]  # a thread hop is ~100x slower: fewer ops
    comp = Comparison("inline hit vs thread hop", "await AsyncCache.get (inline)",
                      "await run_in_executor(cache.get)", 0.5, "gets",
                      ops_per_round=len(few), batch=max(1, sz.get_batch // 10))
    try:
        return run_alternating(comp, get_round(ours.get, few, comp.batch),
                               get_round(offloaded, few, comp.batch), rounds, progress=say)
    finally:
        pool.shutdown()
        on_loop(ours.close())


def bench_set_100(sz: Sizes, rng: random.Random, tmp: Scratch, rounds: int,
                  say: Callable[[str], None]) -> Comparison:
    mix = set_mix(rng, sz.sets, 1000)
    parts = [mix[i::TASKS] for i in range(TASKS)]
    policy = cw.WriteBack(max_delay=0.2, batch_size=1000, max_dirty=10 * sz.sets)
    acache = cw.AsyncCache(store=cw.SQLiteStore(tmp.path("b")), policy=policy)
    cache = cw.Cache(store=cw.SQLiteStore(tmp.path("b")), policy=policy)

    async def tasks_round() -> RoundResult:
        async def worker(part: list[tuple[str, Any]]) -> None:
            for k, v in part:
                await acache.set(k, v)

        t0 = perf_ns()
        await asyncio.gather(*(worker(p) for p in parts))
        per_op = (perf_ns() - t0) / len(mix)
        await acache.flush()
        return RoundResult([per_op], per_op)

    def threads_round() -> RoundResult:
        barrier = threading.Barrier(TASKS + 1)

        def worker(part: list[tuple[str, Any]]) -> None:
            barrier.wait()
            for k, v in part:
                cache.set(k, v)

        threads = [threading.Thread(target=worker, args=(p,)) for p in parts]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = perf_ns()
        for t in threads:
            t.join()
        per_op = (perf_ns() - t0) / len(mix)
        cache.flush()
        return RoundResult([per_op], per_op)

    comp = Comparison(f"write-back set, {TASKS} writers", f"{TASKS} tasks: await acache.set",
                      f"{TASKS} threads: cache.set", 5.0, "sets", ops_per_round=len(mix),
                      batch=len(mix))
    try:
        return run_alternating(comp, lambda: on_loop(tasks_round()), threads_round, rounds,
                               progress=say)
    finally:
        on_loop(acache.close())
        cache.close()


BENCHES: dict[str, Callable[..., Comparison]] = {
    "aa": bench_aa,
    "cashews": bench_cashews,
    "aiocache": bench_aiocache,
    "inline": bench_inline,
    "set100": bench_set_100,
    "redis_aa": bench_redis_aa,
    "redis": bench_redis_hit,
    "wt_pg": bench_write_through_pg,
    "wt_paths": bench_write_through_paths,
}
SERVICES = ("redis_aa", "redis", "wt_pg", "wt_paths")


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def main(argv: list[str] | None = None) -> int:
    args = bench_args(__doc__, [*BENCHES, "lag"], 20261127, argv)
    sz = QUICK if args.quick else FULL
    say: Callable[[str], None] = (lambda s: None) if args.quiet else print
    print("cacheway asyncio benchmarks")
    for line in environment([
        ("versions", f"cacheway {cw.__version__} (source {source_revision()}), "
                     f"cashews {_version('cashews')}, aiocache {_version('aiocache')}"),
        ("run", f"{'quick' if args.quick else 'full'}, {args.rounds} rounds per side "
                f"(+1 warm-up), alternating, seed {args.seed}"),
    ]):
        print("  " + line)
    print()
    tmp = Scratch()
    comps: list[Comparison] = []
    started = time.monotonic()
    try:
        for name, bench in BENCHES.items():
            if args.only and name not in args.only:
                continue
            if name in ("cashews", "aiocache") and _version(name) == "not installed":
                print(f"{name}: not installed (pip install {name}); skipped\n")
                continue
            if name in SERVICES and (down := services_down()):
                print(f"{name}: skipped ({down})\n")
                continue
            comp = bench(sz, random.Random(f"{args.seed}:{name}"), tmp, args.rounds, say)
            if not args.quiet:
                print()
            print_detail(comp)
            comps.append(comp)
            sys.stdout.flush()
    finally:
        tmp.cleanup()
    print_table(comps, "cacheway asyncio benchmarks")
    if not args.only or "lag" in args.only:
        p99s, maxes = bench_loop_lag(sz.sets, args.rounds, say)
        p99 = statistics.median(p99s)
        verdict = "PASS" if p99 < LAG_TARGET_MS else "MISS"
        print(f"\nloop lag, {TASKS} tasks writing with fsync='always': p99 median "
              f"{p99:.2f} ms over {len(p99s)} rounds (each {', '.join(f'{x:.1f}' for x in p99s)}"
              f"), max {max(maxes):.1f} ms (target p99 < {LAG_TARGET_MS:g} ms) {verdict}")
    close_loop()
    print(f"total wall time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
