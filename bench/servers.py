"""cacheway on real servers (issue 4): the four comparisons in one run.

    python bench/servers.py                 # full run (about 2-3 minutes)
    python bench/servers.py --quick         # smoke run (< 30 s)
    python bench/servers.py --redis-url redis://127.0.0.1:6379/0 \\
        --dsn postgresql://postgres@127.0.0.1:5432/test --seed 7

1. get hit: ``Cache(backend=RedisBackend(url, prefix=unique)).get`` and the bare
   ``RedisBackend.get``  vs  raw redis-py ``GET`` + ``orjson.loads``, and bare ``GET``
   (target <= 1.15x).
2. ``get_many(100)`` (Cache and bare backend)  vs  raw ``MGET`` + decode into a dict,
   and bare ``MGET`` (target <= 1.3x).
3. write-back drain of 50k keys: ``Cache(store=PostgresStore(dsn, table=unique),
   policy=WriteBack(batch_size=1000, max_delay=60, max_dirty=10**6))``, set all + flush
   vs  raw ``unnest`` upserts of the same rows, 1000 per transaction (target <= 1.5x);
   the baseline as most users write it (``%s`` parameters: text arrays) and, as 3b, the
   tuned one (``%b``: binary arrays, no per-element escaping in Python).
4. write-through ``set`` with ``RedisBackend`` + ``PostgresStore``  vs  psycopg
   autocommit upsert + redis-py ``SET`` of the same bytes (target <= 1.2x).

The Redis groups also carry an A/A row each (1e, 2e: raw against a second raw client,
the noise of the method); they are left out of the "within target" line.

Every ratio is ours / baseline of time per op (lower is better for us), taken per round
from rounds where the sides alternate (Redis groups: all four sides every round, order
rotating), and the headline is the median over rounds: the machine may be shared, so
one round means little. The comparisons live in ``servers_redis.py`` and
``servers_postgres.py`` (each also runs alone); this script only drives them. Keys and
tables are uniquely named and removed at the end.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from importlib.metadata import version

import psycopg

import cacheway as cw

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import servers_postgres as spg
import servers_redis as srd
from _common import Comparison, environment, fmt_ns, percentile, print_detail

# Rounds per comparison (after one warm-up round of each side).
ROUNDS_FULL = {"redis": 13, "drain": 7, "wt": 11}
ROUNDS_QUICK = {"redis": 5, "drain": 3, "wt": 3}
PG_FULL = spg.Sizes(drain_keys=50_000, wt_ops=1_000)
PG_QUICK = spg.Sizes(drain_keys=5_000, wt_ops=200)


def print_final(comps: list[Comparison]) -> None:
    header = ["comparison", "ours", "baseline (what it includes)", "ours median",
              "baseline median", "median ratio", "ratio IQR", "target", "verdict"]
    rows = []
    for c in comps:
        rs = c.ratios
        rows.append([
            c.name, c.ours_label, c.base_label,
            fmt_ns(c.summary("ours")["median"]), fmt_ns(c.summary("base")["median"]),
            f"{c.ratio:.2f}x",
            f"{percentile(rs, 25):.2f}-{percentile(rs, 75):.2f}",
            f"<= {c.target:g}x", "PASS" if c.passed else "MISS",
        ])
    title = ("cacheway on real servers, issue 4 (time per op; ratio = ours / baseline, "
             "median over rounds)")
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(title)
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        for r in rows:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths)))
        return
    table = Table(title=title)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i < 3 else "right",
                         overflow="fold", max_width=44 if i in (1, 2) else None)
    for r, c in zip(rows, comps):
        style = "green" if c.passed else "red"
        table.add_row(*r[:-1], f"[{style}]{r[-1]}[/{style}]")
    console = Console() if sys.stdout.isatty() else Console(width=200, no_color=True)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--redis-url", default=srd.URL, help="default: %(default)s")
    ap.add_argument("--dsn", default=spg.DSN, help="default: %(default)s")
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer rounds")
    ap.add_argument("--seed", type=int, default=20240601, help="seed of key orders and mixes")
    ap.add_argument("--only", choices=["redis", "drain", "wt"], action="append",
                    help="run only these groups (repeatable)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no per-round progress lines")
    args = ap.parse_args(argv)
    rounds = ROUNDS_QUICK if args.quick else ROUNDS_FULL
    rsz = srd.QUICK if args.quick else srd.FULL
    psz = PG_QUICK if args.quick else PG_FULL
    say: Callable[[str], None] = (lambda s: None) if args.quiet else print
    started = time.monotonic()

    print("$ python bench/servers.py" + "".join(" " + a for a in argv))
    print(f"date: {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC")
    tables = spg.Tables(args.dsn)
    pg_server = tables.conn.execute("SHOW server_version").fetchone()
    for line in environment([
        ("versions", f"cacheway {cw.__version__}, {srd.redis_versions(args.redis_url)}, "
                     f"psycopg {version('psycopg')} ({psycopg.pq.__impl__}), psycopg_pool "
                     f"{version('psycopg_pool')}, PostgreSQL "
                     f"{pg_server[0] if pg_server else '?'} on loopback"),
        ("run", f"{'quick' if args.quick else 'full'}; timed rounds per side (+1 warm-up): "
                f"redis reads {rounds['redis']}, drain {rounds['drain']}, write-through "
                f"{rounds['wt']}; seed {args.seed}"),
        ("sizes", f"{rsz.keys} Redis keys, {rsz.get_ops} gets and {rsz.many_ops} "
                  f"get_many(100) per side per round; drain {psz.drain_keys} keys; "
                  f"write-through {psz.wt_ops} sets per side per round"),
    ]):
        print("  " + line)
    print()
    sys.stdout.flush()

    comps: list[Comparison] = []

    def done(new: list[Comparison]) -> None:
        if not args.quiet:
            print()
        for c in new:
            print_detail(c)
        comps.extend(new)
        sys.stdout.flush()

    try:
        if not args.only or "redis" in args.only:
            done(srd.bench_redis(args.redis_url, rsz, random.Random(f"{args.seed}:redis"),
                                 rounds["redis"], say, number="1"))
        if not args.only or "drain" in args.only:
            say("3. write-back drain:")
            done(spg.bench_drain(args.dsn, psz, random.Random(f"{args.seed}:drain"),
                                 tables, rounds["drain"], say, name="3", binary_baseline=True))
        if not args.only or "wt" in args.only:
            say("4. write-through set, Redis + PostgreSQL:")
            done([spg.bench_writethrough_redis(
                args.dsn, args.redis_url, psz, random.Random(f"{args.seed}:wt"), tables,
                rounds["wt"], say, name="4")])
    finally:
        tables.cleanup()
    print_final(comps)
    real = [c for c in comps if "A/A" not in c.ours_label]  # the noise rows aside
    aa = [f"{c.name.split('.')[0]} {c.ratio:.2f}x" for c in comps if c not in real]
    if real:
        misses = [c.name for c in real if not c.passed]
        print(f"{len(real) - len(misses)}/{len(real)} within target; median of their "
              f"ratios {statistics.median(c.ratio for c in real):.2f}x"
              + (f"; A/A (noise) {', '.join(aa)}" if aa else ""))
    print(f"total wall time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
