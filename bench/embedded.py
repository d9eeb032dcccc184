"""Embedded benchmarks: cacheway against the textbook code it replaces, in one process.

    python bench/embedded.py            # full run (about a minute on 2 cores)
    python bench/embedded.py --quick    # smoke run, a few seconds
    python bench/embedded.py --rounds 9 --seed 7

Five comparisons, each a ratio ours / baseline of time per op (lower is better for us),
measured in interleaved rounds (see ``_common.py``); ``--only`` takes their short names
(get, wbset, flush, wtset, aa):

1. memory ``get`` hit: write-through cache over SQLite with a memory backend holding every
   key, against ``cachetools.LRUCache.get``.
2. write-back ``set``: against a dict + ``queue.Queue`` write-behind whose worker thread
   drains the queue into the same SQLite table (ours pays serialization at ``set`` time
   by contract; the textbook worker pays it later, off the timed thread).
3. write-back ``set`` of 50k distinct keys + ``flush``: against raw ``sqlite3``
   ``executemany`` upserts, 1000 rows per transaction, values serialized with orjson.
4. write-through ``set``: against one autocommit upsert per set + a dict set.
5. A/A: write-back ``set`` on one cache against a second, identical cache: the noise of
   the method on this machine (read the others' ratios against it).

Every SQLite file lives in a fresh temporary directory; both sides use
``journal_mode=WAL`` and ``synchronous=FULL`` and the same table shape.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import cachetools
import orjson

import cacheway as cw

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (
    Comparison,
    RoundResult,
    Scratch,
    bench_args,
    distinct_mix,
    environment,
    perf_ns,
    print_detail,
    print_table,
    run_alternating,
    set_mix,
    source_revision,
    time_batches,
    time_batches2,
)

TABLE_DDL = (
    "CREATE TABLE IF NOT EXISTS kv (namespace TEXT NOT NULL, key TEXT NOT NULL, value BLOB, "
    "version INTEGER NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (namespace, key)) "
    "WITHOUT ROWID"
)
UPSERT = (
    "INSERT INTO kv (namespace, key, value, version, updated_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT(namespace, key) DO UPDATE SET value = excluded.value, "
    "version = excluded.version, updated_at = excluded.updated_at"
)


@dataclass(frozen=True)
class Sizes:
    get_keys: int
    get_ops: int
    get_batch: int
    wb_ops: int
    wb_batch: int
    flush_keys: int
    wt_ops: int


FULL = Sizes(get_keys=20_000, get_ops=300_000, get_batch=10_000, wb_ops=60_000,
             wb_batch=5_000, flush_keys=50_000, wt_ops=400)
QUICK = Sizes(get_keys=2_000, get_ops=30_000, get_batch=5_000, wb_ops=6_000,
              wb_batch=1_000, flush_keys=5_000, wt_ops=40)


def raw_connection(path: str) -> sqlite3.Connection:
    """The baseline's connection: autocommit, WAL, synchronous=FULL, the same table."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(TABLE_DDL)
    return conn


def remove_db(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)


# -- operation mixes (seeded, identical for both sides) -----------------------------------
def get_mix(rng: random.Random, nkeys: int, nops: int) -> tuple[list[str], list[str]]:
    """Keys ``user:<i>``; reads 80% from a hot 20% of them, the rest uniform."""
    keys = [f"user:{i}" for i in range(nkeys)]
    hot = nkeys // 5
    ops = [
        keys[rng.randrange(hot)] if rng.random() < 0.8 else keys[rng.randrange(nkeys)]
        for _ in range(nops)
    ]
    return keys, ops


# -- 1. memory get hit --------------------------------------------------------------------
def bench_get(sz: Sizes, rng: random.Random, tmp: Scratch, rounds: int, say: Callable[[str], None]
              ) -> Comparison:
    keys, ops = get_mix(rng, sz.get_keys, sz.get_ops)
    maxsize = sz.get_keys * 2
    cache = cw.Cache(
        store=cw.SQLiteStore(tmp.path("get")),
        backend=cw.MemoryBackend(max_entries=maxsize),
        policy=cw.WriteThrough(),
    )
    for i in range(0, len(keys), 1000):
        cache.set_many({k: {"n": j} for j, k in enumerate(keys[i : i + 1000], i)})
    lru: cachetools.LRUCache[str, Any] = cachetools.LRUCache(maxsize)
    for j, k in enumerate(keys):
        lru[k] = {"n": j}
    assert all(cache.get(k) == lru.get(k) for k in keys[:100]), "pre-load mismatch"
    hits0 = cache.stats().hits

    ours_get, base_get = cache.get, lru.get
    comp = Comparison(
        "1. memory get hit", "Cache(WriteThrough, MemoryBackend).get", "cachetools.LRUCache.get",
        target=2.0, unit="gets", ops_per_round=len(ops), batch=sz.get_batch,
    )
    run_alternating(
        comp,
        lambda: time_batches(ours_get, ops, sz.get_batch),
        lambda: time_batches(base_get, ops, sz.get_batch),
        rounds, progress=say,
    )
    st = cache.stats()
    assert st.misses == 0, st
    assert st.hits - hits0 == len(ops) * (rounds + 1), st
    cache.close()
    return comp


# -- 2. write-back set --------------------------------------------------------------------
class TextbookWriteBehind:
    """The 30-line write-behind: a dict for reads, a queue drained by a worker thread that
    writes batches of up to ``batch_size`` to SQLite (serializing there)."""

    _STOP = object()

    def __init__(self, path: str, batch_size: int) -> None:
        self.data: dict[str, Any] = {}
        self.queue: queue.Queue[Any] = queue.Queue()
        self.batch_size = batch_size
        self.conn = raw_connection(path)
        self.version = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.queue.put((key, value))

    def _run(self) -> None:
        q, dumps = self.queue, orjson.dumps
        while True:
            item = q.get()
            batch = []
            while item is not self._STOP:
                batch.append(item)
                if len(batch) >= self.batch_size:
                    break
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    break
            if batch:
                now = time.time()
                rows = []
                for k, v in batch:
                    self.version += 1
                    rows.append(("", k, dumps(v), self.version, now))
                self.conn.execute("BEGIN IMMEDIATE")
                self.conn.executemany(UPSERT, rows)
                self.conn.execute("COMMIT")
            if item is self._STOP:
                return

    def close(self) -> None:
        self.queue.put(self._STOP)
        self.thread.join()
        self.conn.close()


def bench_writeback_set(sz: Sizes, rng: random.Random, tmp: Scratch, rounds: int,
                        say: Callable[[str], None]) -> Comparison:
    items = set_mix(rng, sz.wb_ops, window=1000)
    comp = Comparison(
        "2. write-back set", "Cache(WriteBack(batch_size=1000)).set",
        "dict + queue.Queue.put (worker drains to SQLite)",
        target=1.5, unit="sets", ops_per_round=len(items), batch=sz.wb_batch,
    )

    def ours() -> RoundResult:
        path = tmp.path("wb")
        cache = cw.Cache(
            store=cw.SQLiteStore(path),
            policy=cw.WriteBack(max_delay=1.0, batch_size=1000, max_dirty=10_000_000),
        )
        try:
            return time_batches2(cache.set, items, sz.wb_batch)
        finally:
            cache.close()
            remove_db(path)

    def base() -> RoundResult:
        path = tmp.path("wb-base")
        tb = TextbookWriteBehind(path, batch_size=1000)
        try:
            return time_batches2(tb.set, items, sz.wb_batch)
        finally:
            tb.close()
            remove_db(path)

    return run_alternating(comp, ours, base, rounds, progress=say)


# -- 3. write-back set + flush of distinct keys -------------------------------------------
def bench_flush(sz: Sizes, rng: random.Random, tmp: Scratch, rounds: int,
                say: Callable[[str], None]) -> Comparison:
    items = distinct_mix(rng, sz.flush_keys)
    n = len(items)
    comp = Comparison(
        f"3. write-back set+flush {n // 1000}k keys",
        "WriteBack(batch_size=1000): set x N, flush()",
        "sqlite3 executemany upserts, 1000 per transaction (orjson)",
        target=2.0, unit="keys", ops_per_round=n, batch=n,
    )

    def ours() -> RoundResult:
        path = tmp.path("flush")
        cache = cw.Cache(
            store=cw.SQLiteStore(path),
            policy=cw.WriteBack(max_delay=1.0, batch_size=1000, max_dirty=10_000_000),
        )
        set_ = cache.set
        try:
            t0 = perf_ns()
            for k, v in items:
                set_(k, v)
            t1 = perf_ns()
            cache.flush()
            t2 = perf_ns()
        finally:
            cache.close()
            remove_db(path)
        return RoundResult([(t2 - t0) / n], (t2 - t0) / n,
                           {"set phase/key": (t1 - t0) / n, "flush wait/key": (t2 - t1) / n})

    def base() -> RoundResult:
        path = tmp.path("flush-base")
        conn = raw_connection(path)
        dumps, execute, executemany = orjson.dumps, conn.execute, conn.executemany
        try:
            t0 = perf_ns()
            version = 0
            for start in range(0, n, 1000):
                now = time.time()
                rows = []
                for k, v in items[start : start + 1000]:
                    version += 1
                    rows.append(("", k, dumps(v), version, now))
                execute("BEGIN IMMEDIATE")
                executemany(UPSERT, rows)
                execute("COMMIT")
            t1 = perf_ns()
        finally:
            conn.close()
            remove_db(path)
        return RoundResult([(t1 - t0) / n], (t1 - t0) / n)

    return run_alternating(comp, ours, base, rounds, progress=say)


# -- 4. write-through set -----------------------------------------------------------------
def bench_writethrough(sz: Sizes, rng: random.Random, tmp: Scratch, rounds: int,
                       say: Callable[[str], None]) -> Comparison:
    items = set_mix(rng, sz.wt_ops, window=1000)
    comp = Comparison(
        "4. write-through set", "Cache(WriteThrough).set",
        "autocommit sqlite3 upsert + dict set",
        target=1.3, unit="sets (each a durable commit)", ops_per_round=len(items), batch=1,
    )

    def ours() -> RoundResult:
        path = tmp.path("wt")
        cache = cw.Cache(store=cw.SQLiteStore(path), policy=cw.WriteThrough())
        try:
            return time_batches2(cache.set, items, 1)
        finally:
            cache.close()
            remove_db(path)

    def base() -> RoundResult:
        path = tmp.path("wt-base")
        conn = raw_connection(path)
        data: dict[str, Any] = {}
        execute, dumps = conn.execute, orjson.dumps
        counter = [0]

        def set_(key: str, value: Any) -> None:
            counter[0] += 1
            execute(UPSERT, ("", key, dumps(value), counter[0], time.time()))
            data[key] = value

        try:
            return time_batches2(set_, items, 1)
        finally:
            conn.close()
            remove_db(path)

    return run_alternating(comp, ours, base, rounds, progress=say)


# -- 5. A/A: the noise floor ---------------------------------------------------------------
def bench_aa(sz: Sizes, rng: random.Random, tmp: Scratch, rounds: int,
             say: Callable[[str], None]) -> Comparison:
    """Two identical write-back caches timed against each other, alternating as every
    comparison is: how far from 1.0 a ratio strays with nothing different on either side."""
    items = set_mix(rng, sz.wb_ops, window=1000)
    caches = [cw.Cache(store=cw.SQLiteStore(tmp.path(f"aa{i}")), policy=cw.WriteBack(
        max_delay=1.0, batch_size=1000, max_dirty=10**7)) for i in range(2)]
    comp = Comparison(
        "5. A/A write-back set", "Cache(WriteBack).set", "the same, a second cache",
        target=1.1, unit="sets", ops_per_round=len(items), batch=sz.wb_batch,
    )

    def run(cache: cw.Cache) -> Callable[[], RoundResult]:
        return lambda: time_batches2(cache.set, items, sz.wb_batch)

    run_alternating(comp, run(caches[0]), run(caches[1]), rounds, progress=say)
    for cache in caches:
        cache.close()
    return comp


BENCHES = {
    "get": bench_get,
    "wbset": bench_writeback_set,
    "flush": bench_flush,
    "wtset": bench_writethrough,
    "aa": bench_aa,  # last: its two caches' flushes must not overlap another comparison
}


def main(argv: list[str] | None = None) -> int:
    args = bench_args(__doc__, BENCHES, 20240601, argv)
    sz = QUICK if args.quick else FULL
    say: Callable[[str], None] = (lambda s: None) if args.quiet else print

    print("cacheway embedded benchmarks")
    mode = "quick" if args.quick else "full"
    for line in environment([
        ("versions", f"cacheway {cw.__version__} (source {source_revision()}), "
                     f"cachetools {version('cachetools')}, orjson {version('orjson')}"),
        ("run", f"{mode}, {args.rounds} rounds per side (+1 warm-up), alternating, "
                f"seed {args.seed}"),
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
            rng = random.Random(f"{args.seed}:{name}")
            comp = bench(sz, rng, tmp, args.rounds, say)
            if not args.quiet:
                print()
            print_detail(comp)
            comps.append(comp)
            sys.stdout.flush()
    finally:
        tmp.cleanup()
    print_table(comps)
    print(f"total wall time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
