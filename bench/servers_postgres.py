"""PostgreSQL benchmarks: cacheway's PostgresStore against raw psycopg doing the same work.

    python bench/servers_postgres.py                   # full run
    python bench/servers_postgres.py --quick           # smoke run
    python bench/servers_postgres.py --dsn postgresql://postgres@127.0.0.1/test

Four comparisons (``--only`` names: drain, wtset, wtredis, aa), each a ratio ours /
baseline of time per op (lower is better for us), measured in interleaved rounds (see
``_common.py``), each round on a fresh small table:

1. write-back drain: ``Cache(WriteBack(batch_size=1000, max_delay=60))``, ``set`` of 50k
   distinct keys then ``flush()``, against raw ``unnest`` upserts of the same rows
   (orjson values, ``nextval`` versions), 1000 rows per transaction, with ``%s``
   parameters (text arrays, as most users write it) and with ``%b`` (binary arrays).
2. write-through ``set`` (``MemoryBackend``): against one autocommit upsert
   (``RETURNING version``) + a dict set per call.
3. write-through ``set`` with ``RedisBackend`` + ``PostgresStore``: against one autocommit
   upsert (``RETURNING version``) + a redis-py ``SET`` of the same serialized bytes.
4. A/A: write-through ``set`` (``MemoryBackend``, as 2) against the same on a second
   cache: the noise of the method on this server.

``bench/servers.py`` imports :func:`bench_drain` and :func:`bench_writethrough_redis`.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import orjson
import psycopg
import redis

import cacheway as cw
from cacheway.stores.postgres import PostgresStore

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (
    Comparison,
    RoundResult,
    clear_backend,
    distinct_mix,
    environment,
    perf_ns,
    print_detail,
    print_table,
    run_alternating,
    set_mix,
    time_batches2,
)

DSN = os.environ.get("CACHEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CACHEWAY_TEST_REDIS", "redis://127.0.0.1:6379/0")

# The baseline's table has the store's shape, so both sides write the same rows.
DDL = (
    "CREATE SEQUENCE {t}_version_seq; CREATE TABLE {t} (namespace text NOT NULL, "
    "key text NOT NULL, value jsonb, version bigint NOT NULL, updated_at timestamptz NOT NULL "
    "DEFAULT now(), PRIMARY KEY (namespace, key))"
)
UNNEST_UPSERT = (
    "INSERT INTO {t} AS t (namespace, key, value, version) "
    "SELECT '', u.key, u.value::jsonb, nextval('{t}_version_seq') "
    "FROM unnest(%s::text[], %s::text[]) AS u(key, value) "
    "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, "
    "version = nextval('{t}_version_seq'), updated_at = now()"
)
ONE_UPSERT = (
    "INSERT INTO {t} AS t (namespace, key, value, version) "
    "VALUES ('', %s, %s::jsonb, nextval('{t}_version_seq')) "
    "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, "
    "version = nextval('{t}_version_seq'), updated_at = now() RETURNING version"
)


@dataclass(frozen=True)
class Sizes:
    drain_keys: int
    wt_ops: int


FULL = Sizes(drain_keys=50_000, wt_ops=2_000)
QUICK = Sizes(drain_keys=5_000, wt_ops=300)


class Tables:
    """Fresh table names for each round, all dropped at the end (and after each round)."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.made: list[str] = []

    def name(self) -> str:
        t = f"cwbench_{uuid.uuid4().hex[:10]}"
        self.made.append(t)
        return t

    def _execute(self, query: str) -> None:
        # The server is shared: another job may restart it or terminate our session.
        try:
            self.conn.execute(query)
        except psycopg.OperationalError:
            self.conn.close()
            self.conn = psycopg.connect(self.dsn, autocommit=True)
            self.conn.execute(query)

    def create(self) -> str:
        t = self.name()
        self._execute(DDL.format(t=t))
        return t

    def drop(self, t: str) -> None:
        self._execute(f"DROP TABLE IF EXISTS {t}, {t}_meta, {t}_applied; "
                      f"DROP SEQUENCE IF EXISTS {t}_version_seq")

    def cleanup(self) -> None:
        try:
            for t in self.made:
                self.drop(t)
        finally:
            self.conn.close()


# -- 1. write-back drain -----------------------------------------------------------------------
def bench_drain(dsn: str, sz: Sizes, rng: random.Random, tables: Tables, rounds: int,
                say: Callable[[str], None], name: str = "1",
                binary_baseline: bool = False) -> list[Comparison]:
    """Ours vs the raw ``unnest`` upsert as most users write it (``%s`` parameters:
    psycopg dumps the ``text[]`` arrays in text format, escaping each element in
    Python); with ``binary_baseline`` also vs the same upsert with ``%b`` (binary
    arrays, no escaping), the fastest plain psycopg gets. All sides alternate in each
    round (order rotating), so they share the machine's drift."""
    from servers_redis import run_group  # N-way alternation (lives with the Redis benches)

    items = distinct_mix(rng, sz.drain_keys, lambda i: {"n": i, "name": f"user {i}"})
    n = len(items)
    ours_label = "Cache(PostgresStore, WriteBack(batch_size=1000)): set x N, flush()"
    comps = [Comparison(
        f"{name}. write-back drain {n // 1000}k keys", ours_label,
        "psycopg unnest upsert, %s params (text arrays), 1000 rows per transaction, orjson",
        target=1.5, unit="keys", ops_per_round=n, batch=n,
    )]
    if binary_baseline:
        comps.append(Comparison(
            f"{name}b. write-back drain {n // 1000}k keys", ours_label,
            "same upsert with %b params (binary arrays): tuned raw psycopg",
            target=1.5, unit="keys", ops_per_round=n, batch=n,
        ))

    def ours() -> RoundResult:
        t = tables.name()
        store = PostgresStore(dsn, table=t)
        cache = cw.Cache(store=store, backend=cw.MemoryBackend(), policy=cw.WriteBack(
            max_delay=60, batch_size=1000, max_dirty=10**6))
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
            store.close()
            tables.drop(t)
        return RoundResult([(t2 - t0) / n], (t2 - t0) / n,
                           {"set phase/key": (t1 - t0) / n, "flush wait/key": (t2 - t1) / n})

    def base(binary: bool) -> RoundResult:
        t = tables.create()
        query = UNNEST_UPSERT.format(t=t)
        if binary:
            query = query.replace("%s::text[]", "%b::text[]")
        dumps = orjson.dumps
        try:
            with psycopg.connect(dsn) as conn:
                t0 = perf_ns()
                for start in range(0, n, 1000):
                    chunk = items[start : start + 1000]
                    conn.execute(query, ([k for k, _ in chunk],
                                         [dumps(v).decode() for _, v in chunk]))
                    conn.commit()
                t1 = perf_ns()
        finally:
            tables.drop(t)
        return RoundResult([(t1 - t0) / n], (t1 - t0) / n)

    sides: dict[str, Callable[[], RoundResult]] = {"ours": ours, "base": lambda: base(False)}
    pairs = [(comps[0], "ours", "base")]
    if binary_baseline:
        sides["base_b"] = lambda: base(True)
        pairs.append((comps[1], "ours", "base_b"))
    run_group(sides, pairs, rounds, progress=say)
    return comps


# -- 2. write-through set ----------------------------------------------------------------------
def _write_through_round(dsn: str, tables: Tables, items: list[tuple[str, Any]]
                         ) -> RoundResult:
    """One round of write-through sets on a fresh table (rows 2 and 4)."""
    t = tables.name()
    store = PostgresStore(dsn, table=t)
    cache = cw.Cache(store=store, backend=cw.MemoryBackend(), policy=cw.WriteThrough())
    try:
        return time_batches2(cache.set, items, 100)
    finally:
        cache.close()
        store.close()
        tables.drop(t)


def bench_writethrough(dsn: str, sz: Sizes, rng: random.Random, tables: Tables, rounds: int,
                       say: Callable[[str], None]) -> Comparison:
    items = set_mix(rng, sz.wt_ops, window=200)
    comp = Comparison(
        "2. write-through set", "Cache(WriteThrough, MemoryBackend).set",
        "psycopg autocommit upsert RETURNING version + dict set",
        target=1.2, unit="sets (each a commit)", ops_per_round=len(items), batch=100,
    )

    def ours() -> RoundResult:
        return _write_through_round(dsn, tables, items)

    def base() -> RoundResult:
        t = tables.create()
        query = ONE_UPSERT.format(t=t)
        data: dict[str, Any] = {}
        conn = psycopg.connect(dsn, autocommit=True)
        dumps = orjson.dumps

        def set_(key: str, value: Any) -> None:
            conn.execute(query, (key, dumps(value).decode())).fetchone()
            data[key] = value

        try:
            return time_batches2(set_, items, 100)
        finally:
            conn.close()
            tables.drop(t)

    return run_alternating(comp, ours, base, rounds, progress=say)


# -- 3. write-through set, Redis + PostgreSQL -----------------------------------------------
def bench_writethrough_redis(dsn: str, url: str, sz: Sizes, rng: random.Random,
                             tables: Tables, rounds: int, say: Callable[[str], None],
                             name: str = "3") -> Comparison:
    items = set_mix(rng, sz.wt_ops, window=200)
    comp = Comparison(
        f"{name}. write-through set (Redis + PG)",
        "Cache(PostgresStore, RedisBackend, WriteThrough).set",
        "psycopg autocommit upsert RETURNING version + redis-py SET of the same bytes",
        target=1.2, unit="sets (each a commit + a Redis write)", ops_per_round=len(items),
        batch=100,
    )
    tag = uuid.uuid4().hex[:10]
    raw_prefix = f"cwbenchraw_{tag}:"

    def ours() -> RoundResult:
        t = tables.name()
        store = PostgresStore(dsn, table=t)
        backend = cw.RedisBackend(url, prefix=f"cwbench_{t}:")
        cache = cw.Cache(store=store, backend=backend, policy=cw.WriteThrough())
        try:
            return time_batches2(cache.set, items, 100)
        finally:
            try:
                clear_backend(backend)
            finally:
                cache.close()
                backend.close()
                store.close()
                tables.drop(t)

    def base() -> RoundResult:
        t = tables.create()
        query = ONE_UPSERT.format(t=t)
        conn = psycopg.connect(dsn, autocommit=True)
        r = redis.Redis.from_url(url)
        rset = r.set
        dumps = orjson.dumps

        def set_(key: str, value: Any) -> None:
            data = dumps(value)
            conn.execute(query, (key, data.decode())).fetchone()
            rset(raw_prefix + key, data)

        try:
            return time_batches2(set_, items, 100)
        finally:
            names = list(r.scan_iter(match=raw_prefix + "*", count=1000))
            if names:
                r.unlink(*names)
            r.close()
            conn.close()
            tables.drop(t)

    return run_alternating(comp, ours, base, rounds, progress=say)


# -- 4. A/A: the noise floor ----------------------------------------------------------------
def bench_aa(dsn: str, sz: Sizes, rng: random.Random, tables: Tables, rounds: int,
             say: Callable[[str], None]) -> Comparison:
    """Comparison 2's ours against itself (a fresh cache and table each round, as there)."""
    items = set_mix(rng, sz.wt_ops, window=200)
    comp = Comparison(
        "4. A/A write-through set", "Cache(WriteThrough, MemoryBackend).set",
        "the same, a second cache", target=1.1, unit="sets (each a commit)",
        ops_per_round=len(items), batch=100,
    )

    def side() -> RoundResult:
        return _write_through_round(dsn, tables, items)

    return run_alternating(comp, side, side, rounds, progress=say)


BENCHES = {"drain": bench_drain, "wtset": bench_writethrough, "wtredis": bench_writethrough_redis,
           "aa": bench_aa}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dsn", default=DSN, help="PostgreSQL DSN (default: %(default)s)")
    ap.add_argument("--redis-url", default=REDIS_URL,
                    help="Redis URL of the wtredis comparison (default: %(default)s)")
    ap.add_argument("--quick", action="store_true", help="fewer ops, for smoke runs")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per side (default 5)")
    ap.add_argument("--seed", type=int, default=20240601, help="seed of the operation mixes")
    ap.add_argument("--only", choices=sorted(BENCHES), action="append",
                    help="run only these comparisons (repeatable)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no per-round progress lines")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    sz = QUICK if args.quick else FULL
    say: Callable[[str], None] = (lambda s: None) if args.quiet else print
    tables = Tables(args.dsn)
    server = tables.conn.execute("SHOW server_version").fetchone()

    print("cacheway PostgreSQL benchmarks")
    for line in environment([
        ("versions", f"cacheway {cw.__version__}, psycopg {version('psycopg')}, "
                     f"psycopg_pool {version('psycopg_pool')}, PostgreSQL "
                     f"{server[0] if server else '?'} on loopback"),
        ("run", f"{'quick' if args.quick else 'full'}, {args.rounds} rounds per side "
                f"(+1 warm-up), alternating, seed {args.seed}"),
    ]):
        print("  " + line)
    print()
    comps: list[Comparison] = []
    started = time.monotonic()
    try:
        for name, bench in BENCHES.items():
            if args.only and name not in args.only:
                continue
            rng = random.Random(f"{args.seed}:{name}")
            got: Comparison | list[Comparison]
            if bench is bench_writethrough_redis:
                got = bench_writethrough_redis(args.dsn, args.redis_url, sz, rng, tables,
                                               args.rounds, say)
            elif bench is bench_drain:
                got = bench_drain(args.dsn, sz, rng, tables, args.rounds, say,
                                  binary_baseline=True)
            elif bench is bench_aa:
                got = bench_aa(args.dsn, sz, rng, tables, args.rounds, say)
            else:
                got = bench_writethrough(args.dsn, sz, rng, tables, args.rounds, say)
            if not args.quiet:
                print()
            for comp in got if isinstance(got, list) else [got]:
                print_detail(comp)
                comps.append(comp)
            sys.stdout.flush()
    finally:
        tables.cleanup()
    print_table(comps, "cacheway PostgreSQL benchmarks")
    print(f"total wall time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
