"""Distributed write-behind (``WriteBack(queue=...)``, issue 13) on this machine's Redis
and PostgreSQL.

    python bench/distributed.py            # full run (about a minute on 2 cores)
    python bench/distributed.py --quick    # smoke run
    python bench/distributed.py --rounds 5 # drain rows over 5 alternating rounds (3)

1. drain throughput: N accepted writes (over N/2 keys: some coalesce) waiting in the
   streams, drained to PostgreSQL by ``cacheway worker --processes W`` (W = 1, 2, 4; timed
   from the moment the first worker joined to the moment every stream is empty), against raw
   batched ``INSERT ... SELECT FROM unnest(...) ON CONFLICT DO UPDATE`` upserts of the
   same rows from one process (500 rows a statement, one transaction each), and
   against PostgresStore.apply of the same versioned ops in batches of 2000 without and
   with a journal mark (the store's own share of a drain); the raw upserts run twice per
   round (an A/A row: the noise of the method). "x raw" is a time ratio (above 1: slower
   than raw); "x the speed of 1 worker" is 1 worker's time over W workers';
2. acknowledged-write latency: ``cache.set`` on a queue= cache (RedisBackend copies on
   the same Redis: one Lua script) against a plain pipelined ``SET`` + ``XADD`` of the
   same bytes, p50/p99 over interleaved rounds;
3. acknowledged-to-applied time at 1k and 10k writes/s: a writer process paces
   ``cache.set`` (``set_many`` of 25 at 10k/s) for a few seconds while one consumer
   applies to PostgreSQL; each entry's time runs from its stream id (Redis's clock when
   it was accepted, in whole milliseconds: up to 1 ms too long) to the moment its batch
   was acknowledged (``Consumer(on_applied=...)``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import redis

import cacheway as cw
from cacheway.backends.redis import RedisBackend
from cacheway.queue import Consumer, Names

REDIS = os.environ.get("CACHEWAY_TEST_REDIS", "redis://127.0.0.1:6379/0")
PG = os.environ.get("CACHEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
SRC = str(Path(__file__).resolve().parent.parent / "src")
PARTITIONS = 16


def _cleanup(r: redis.Redis, name: str) -> None:
    keys = list(r.scan_iter(match="{" + name + "*", count=1000))
    if keys:
        r.unlink(*keys)


def _fill(name: str, table: str, n: int) -> None:
    store = cw.PostgresStore(PG, table=table)
    cache = cw.Cache(store=store, policy=cw.WriteBack(
        queue=REDIS, queue_name=name, partitions=PARTITIONS, flush_in_process=False))
    keys = n // 2
    batch: dict[str, Any] = {}
    for i in range(n):
        batch[f"k{i % keys}"] = {"i": i, "pad": "x" * 40}
        if len(batch) == 250:
            cache.set_many(batch)
            batch = {}
    if batch:
        cache.set_many(batch)
    cache.close()


def drain(r: redis.Redis, n: int, workers: int) -> float:
    """Seconds for ``workers`` worker processes to drain ``n`` writes."""
    name = f"bq{uuid.uuid4().hex[:8]}"
    table = f"bench_{name}"
    _fill(name, table, n)
    names = Names(name, PARTITIONS)
    env = dict(os.environ, PYTHONPATH=SRC)
    log = open(f"/tmp/{name}.worker.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "cacheway.cli", "worker", "--queue", REDIS, "--queue-name",
         name, "--store", f"{PG}?table={table}", "--partitions", str(PARTITIONS),
         "--processes", str(workers), "--status-every", "0"],
        env=env, stderr=log)
    try:
        # From the first worker's start: a fast one may drain before the others join.
        while r.zcard("{" + name + "}:consumers") < 1:
            time.sleep(0.001)
        started = time.perf_counter()
        while any(r.xlen(names.stream(p)) for p in range(PARTITIONS)):
            time.sleep(0.002)
        took = time.perf_counter() - started
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            print(f"  (the worker did not exit within 30 s of SIGTERM: see {log.name})")
            log.close()
        else:  # a clean exit: its log says nothing worth keeping
            log.close()
            with contextlib.suppress(FileNotFoundError):
                os.remove(log.name)
        _cleanup(r, name)
        with psycopg.connect(PG, autocommit=True) as conn:
            for t in (table, f"{table}_meta", f"{table}_applied"):
                conn.execute(f"DROP TABLE IF EXISTS {t}")
            conn.execute(f"DROP SEQUENCE IF EXISTS {table}_version_seq")
    return took


def raw_unnest(n: int) -> float:
    """Seconds for one process to upsert the same rows with batched unnest."""
    table = f"bench_raw_{uuid.uuid4().hex[:8]}"
    keys = n // 2
    dumps = cw.serializers.JSONSerializer().dumps
    # every write, in order (a key's two writes are n/2 apart: never in one batch)
    items = [(f"k{i % keys}", dumps({"i": i, "pad": "x" * 40})) for i in range(n)]
    with psycopg.connect(PG, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (namespace text, key text, value bytea, "
                     "version bigint, PRIMARY KEY (namespace, key))")
        try:
            started = time.perf_counter()
            for lo in range(0, len(items), 500):
                part = items[lo:lo + 500]
                with conn.transaction():
                    conn.execute(
                        f"INSERT INTO {table} (namespace, key, value, version) "
                        "SELECT '', k, v, 1 FROM unnest(%s::text[], %s::bytea[]) AS u(k, v) "
                        "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, "
                        "version = excluded.version",
                        ([k for k, _ in part], [v for _, v in part]))
            return time.perf_counter() - started
        finally:
            conn.execute(f"DROP TABLE {table}")


def store_apply(n: int, batch: int, *, mark: bool) -> float:
    """Seconds for one process to write the same rows with PostgresStore.apply, versioned
    as the queue's ops are, with or without a journal mark (the store's share of a
    drain: what the consumer adds is the rest)."""
    from cacheway.stores.base import SET, JournalMark, Op

    table = f"bench_st_{uuid.uuid4().hex[:8]}"
    keys = n // 2
    dumps = cw.serializers.JSONSerializer().dumps
    ops = [Op("", f"k{i % keys}", SET, dumps({"i": i, "pad": "x" * 40}), 0, None,
              2**50 + i) for i in range(n)]
    store = cw.PostgresStore(PG, table=table)
    try:
        started = time.perf_counter()
        for lo in range(0, n, batch):
            part = ops[lo:lo + batch]
            journal = (JournalMark("bench", lo + len(part), list(range(lo, lo + len(part))))
                       if mark else None)
            store.apply(part, journal=journal)
        return time.perf_counter() - started
    finally:
        store.close()
        with psycopg.connect(PG, autocommit=True) as conn:
            for t in (table, f"{table}_meta", f"{table}_applied"):
                conn.execute(f"DROP TABLE IF EXISTS {t}")
            conn.execute(f"DROP SEQUENCE IF EXISTS {table}_version_seq")


def latency(r: redis.Redis, rounds: int, per_round: int) -> tuple[list[float], list[float]]:
    name = f"bl{uuid.uuid4().hex[:8]}"
    prefix = f"{name}:"
    cache = cw.Cache(store=cw.PostgresStore(PG, table=f"bench_{name}"),
                     backend=RedisBackend(REDIS, prefix=prefix),
                     policy=cw.WriteBack(queue=REDIS, queue_name=name, partitions=PARTITIONS,
                                         flush_in_process=False))
    payload = cw.serializers.JSONSerializer().dumps({"v": 1, "pad": "x" * 40})
    ours: list[float] = []
    plain: list[float] = []
    clock = time.perf_counter
    try:
        for rnd in range(rounds):
            for i in range(per_round):
                t = clock()
                cache.set(f"k{i}", {"v": 1, "pad": "x" * 40})
                ours.append(clock() - t)
            for i in range(per_round):
                t = clock()
                with r.pipeline(transaction=False) as pipe:
                    pipe.set(f"{prefix}plain:k{i}", payload)
                    pipe.xadd("{" + name + ":plain}", {"k": f"k{i}", "p": payload})
                    pipe.execute()
                plain.append(clock() - t)
            del rnd
    finally:
        cache.close()
        _cleanup(r, name)
        for k in r.scan_iter(match=prefix + "*", count=1000):
            r.unlink(k)
        with psycopg.connect(PG, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS bench_{name}")
            conn.execute(f"DROP SEQUENCE IF EXISTS bench_{name}_version_seq")
    return ours, plain


def _writer(name: str, table: str, rate: int, seconds: float) -> None:
    """(In a child process) ``rate`` writes/s for ``seconds``, paced in 10 ms ticks."""
    cache = cw.Cache(store=cw.PostgresStore(PG, table=table), policy=cw.WriteBack(
        queue=REDIS, queue_name=name, partitions=PARTITIONS, flush_in_process=False))
    per_tick = max(1, rate // 100)
    started = time.perf_counter()
    i = 0
    for tick in range(int(seconds * 100)):
        time.sleep(max(0.0, started + tick / 100 - time.perf_counter()))
        if per_tick <= 10:
            for _ in range(per_tick):
                cache.set(f"k{i % 5000}", {"i": i})
                i += 1
        else:
            for lo in range(0, per_tick, 25):
                n = min(25, per_tick - lo)
                cache.set_many({f"k{(i + j) % 5000}": {"i": i + j} for j in range(n)})
                i += n
    took = time.perf_counter() - started
    print(f"  (writer: {i:,} writes in {took:.2f} s: {i / took:,.0f}/s)")
    cache.close()


def ack_to_applied(r: redis.Redis, rate: int, seconds: float) -> list[float]:
    """Milliseconds from acceptance to applied-and-acknowledged, per write."""
    name = f"ba{uuid.uuid4().hex[:8]}"
    table = f"bench_{name}"
    store = cw.PostgresStore(PG, table=table)
    names = Names(name, PARTITIONS)
    times: list[float] = []

    def applied(_partition: int, ids: list[bytes]) -> None:
        now_ms = time.time() * 1000
        times.extend(now_ms - int(i.split(b"-")[0]) for i in ids)

    consumer = Consumer(r, names, store, batch_size=2000, on_applied=applied)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        subprocess.run([sys.executable, __file__, "--writer", name, table, str(rate),
                        str(seconds)], check=True, env=dict(os.environ, PYTHONPATH=SRC))
        while any(r.xlen(names.stream(p)) for p in range(PARTITIONS)):
            time.sleep(0.01)
    finally:
        stop.set()
        thread.join(30)
        store.close()
        _cleanup(r, name)
        with psycopg.connect(PG, autocommit=True) as conn:
            for t in (table, f"{table}_meta", f"{table}_applied"):
                conn.execute(f"DROP TABLE IF EXISTS {t}")
            conn.execute(f"DROP SEQUENCE IF EXISTS {table}_version_seq")
    return times


def _drains(r: redis.Redis, n: int, alternations: int) -> dict[Any, list[float]]:
    """Seconds of each drain row, ``alternations`` rounds, the order reversed every other
    round (a machine warming up or slowing down is shared alike)."""
    rows: list[Any] = ["raw", 1, 2, 4, "raw (A/A)"]
    out: dict[Any, list[float]] = {row: [] for row in rows}
    for i in range(alternations):
        for row in rows if i % 2 == 0 else rows[::-1]:
            out[row].append(raw_unnest(n) if isinstance(row, str) else drain(r, n, row))
    return out


def _median_ratio(xs: list[float], bases: list[float]) -> float:
    return statistics.median(x / b for x, b in zip(xs, bases))


def _pct(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100)[int(q) - 1] * 1e6


def main() -> None:
    if sys.argv[1:2] == ["--writer"]:
        name, table, rate, seconds = sys.argv[2:6]
        _writer(name, table, int(rate), float(seconds))
        return
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 4,000 writes, 1 round")
    ap.add_argument("--rounds", type=int, help="alternating rounds of the drain rows "
                    "(default 3; 1 with --quick)")
    args = ap.parse_args()
    if args.rounds is not None and args.rounds < 1:
        ap.error("--rounds must be >= 1")
    quick = args.quick
    n = 4000 if quick else 40000
    r = redis.Redis.from_url(REDIS)
    print(f"drain of {n:,} writes over {n // 2:,} keys to PostgreSQL ({PARTITIONS} partitions)")
    alternations = args.rounds or (1 if quick else 3)
    drains = _drains(r, n, alternations)
    raw = statistics.median(drains["raw"])
    print(f"  {'raw unnest upserts, 1 process':30}: {raw:6.2f} s  {n / raw:9,.0f} writes/s")
    aa = _median_ratio(drains["raw (A/A)"], drains["raw"])
    print(f"  {'raw again (A/A)':30}: {aa:.2f}x raw (time)")
    for mark in (False, True):
        took = store_apply(n, 2000, mark=mark)
        label = "PostgresStore.apply" + (" + mark" if mark else "")
        print(f"  {label:30}: {took:6.2f} s  {n / took:9,.0f} writes/s  "
              f"({took / raw:.2f}x raw, time; one run)")
    for workers in (1, 2, 4):
        took = statistics.median(drains[workers])
        print(f"  {f'cacheway worker x{workers}':30}: {took:6.2f} s  {n / took:9,.0f} writes/s"
              f"  ({_median_ratio(drains[workers], drains['raw']):.2f}x raw, time; "
              f"{_median_ratio(drains[1], drains[workers]):.2f}x the speed of 1 worker)")
    print(f"  (medians of {alternations} alternating rounds; ratios: the median of each "
          "round's ratio)")
    rounds, per = (3, 300) if quick else (5, 2000)
    ours, plain = latency(r, rounds, per)
    print(f"acknowledged-write latency ({rounds} x {per} interleaved), microseconds")
    for label, xs in (("cache.set (queue=, one Lua)", ours),
                      ("plain SET + XADD pipeline", plain)):
        print(f"  {label:30}: p50 {_pct(xs, 50):7.0f}  p99 {_pct(xs, 99):7.0f}")
    print("acknowledged-to-applied time (1 consumer, PostgreSQL), milliseconds")
    for rate in (1000, 10000):
        times = ack_to_applied(r, rate, 1.0 if quick else 5.0)
        print(f"  {f'{rate:,} writes/s':30}: p50 {statistics.median(times):7.1f}  "
              f"p99 {statistics.quantiles(times, n=100)[98]:7.1f}  ({len(times):,} writes)")
    r.close()


if __name__ == "__main__":
    main()
