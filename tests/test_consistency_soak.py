"""Guarantee 4 across processes, measured by the consistency checker.

4 processes x 8 threads read, write and delete 20 shared keys (and incr 4 counter keys)
through their own caches on ONE PostgreSQL table and ONE Redis prefix. Once every
process has stopped writing (and flushed), every key must agree between Redis and
PostgreSQL, and every process's L1 (two-level variant) with PostgreSQL, as
cacheway.check.check sees it. Counter totals must equal the sum of the increments.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import redis

import cacheway as cw
from cacheway.check import check
from services import unique

pytestmark = pytest.mark.services

PROCESSES, THREADS, KEYS, COUNTERS = 4, 8, 20, 4
START_DELAY = 0.5  # from "every process is ready" to the common start time

VARIANTS: dict[str, Callable[[], Any]] = {
    "write-through": lambda: cw.WriteThrough(),
    "write-around": lambda: cw.WriteAround(),
    "write-back": lambda: cw.WriteBack(max_delay=0.05),
    "two-level-write-through": lambda: cw.WriteThrough(),
}


def _work(cache: Any, rng: random.Random, until: float, tail: float, tag: str
          ) -> tuple[int, int]:
    """Random operations until the wall clock passes ``until``, read-mostly in the last
    ``tail`` seconds (so fills race the last writes and caches end up holding copies):
    (operations, the sum of increments)."""
    added = 0
    n = 0
    while (now := time.time()) < until:
        n += 1
        key = f"k{rng.randrange(KEYS)}"
        roll = rng.random()
        if now > until - tail and rng.random() < 0.8:
            roll *= 0.5  # a read
        if roll < 0.45:
            cache.get(key)
        elif roll < 0.50:
            cache.get_many([f"k{rng.randrange(KEYS)}" for _ in range(3)])
        elif roll < 0.78:
            cache.set(key, {"by": tag, "n": n} if rng.random() < 0.5 else rng.randrange(1000))
        elif roll < 0.93:
            cache.delete(key)
        elif roll < 0.97:
            delta = rng.randrange(1, 5)
            cache.incr(f"c{rng.randrange(COUNTERS)}", delta)
            added += delta
        else:
            cache.get(f"c{rng.randrange(COUNTERS)}")
    return n, added


def _process(variant: str, redis_url: str, dsn: str, table: str, prefix: str, start: Any,
             seconds: float, seed: int, ready: Any, done: Any, out: Any) -> None:
    result: dict[str, Any] = {"errors": [], "added": 0, "ops": 0, "l1": None}
    store = cw.PostgresStore(dsn, table=table, max_size=THREADS + 2)
    l2 = cw.RedisBackend(redis_url, prefix=prefix)
    two = None
    backend: Any = l2
    if variant.startswith("two-level"):
        two = backend = cw.TwoLevelBackend(cw.MemoryBackend(), l2)
        if not two.wait_ready(10):
            result["errors"].append("the L1 invalidation connection never came up")
    cache = cw.Cache(store=store, backend=backend, policy=VARIANTS[variant]())
    lock = threading.Lock()
    try:
        def thread(i: int) -> None:
            try:
                ops, added = _work(cache, random.Random(seed * 100 + i), until,
                                   seconds * 0.2, f"p{seed}t{i}")
                with lock:
                    result["added"] += added
                    result["ops"] += ops
            except Exception as exc:  # reported to the test, which fails on it
                with lock:
                    result["errors"].append(repr(exc))

        # The start barrier: the parent sets a wall-clock start once every process is
        # ready (a loaded machine may take seconds to spawn one).
        ready.put(seed)
        while start.value == 0.0:
            time.sleep(0.005)
        until = start.value + seconds
        time.sleep(max(0.0, start.value - time.time()))
        threads = [threading.Thread(target=thread, args=(i,)) for i in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 60)
        cache.flush(timeout=30)  # write-back: every accepted write is in the store
        # Wait for every process to stop writing before judging this process's L1.
        done.wait(timeout=60)
        if two is not None:
            report = check(store, two.l1, quiet=0.2, rounds=5)
            result["l1"] = (report.checked, report.disagreeing, str(report),
                            [repr(e) for e in report.examples])
    except Exception as exc:
        result["errors"].append(repr(exc))
    finally:
        try:
            cache.close(timeout=30)
        finally:
            if two is not None:
                two.close()
            l2.close()
            store.close()
            out.put(result)


def _drop(dsn: str, table: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}", "{table}_meta", "{table}_applied" CASCADE')
        conn.execute(f'DROP SEQUENCE IF EXISTS "{table}_version_seq"')


def soak(variant: str, redis_url: str, dsn: str, seconds: float) -> None:
    table, prefix = unique("cwsoak"), unique("cwsoak") + ":"
    cw.PostgresStore(dsn, table=table).close()  # created once, before the crowd arrives
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    ready = ctx.Queue()
    done = ctx.Barrier(PROCESSES)
    start = ctx.Value("d", 0.0)
    procs = [ctx.Process(target=_process, args=(variant, redis_url, dsn, table, prefix,
                                                start, seconds, n + 1, ready, done, out))
             for n in range(PROCESSES)]
    try:
        for p in procs:
            p.start()
        for _ in procs:
            ready.get(timeout=60)
        start.value = time.time() + START_DELAY
        results = [out.get(timeout=START_DELAY + seconds + 90) for _ in procs]
        for p in procs:
            p.join(30)
        assert not any(p.is_alive() for p in procs), "a worker process did not exit"

        store = cw.PostgresStore(dsn, table=table)
        backend = cw.RedisBackend(redis_url, prefix=prefix)
        try:
            report = check(store, backend, quiet=0.2, rounds=5)
            counters = store.load_many([f"c{i}" for i in range(COUNTERS)])
        finally:
            backend.close()
            store.close()
        # Agreement first: it must hold even when a worker saw store errors.
        assert report.disagreeing == 0, (str(report), report.examples)
        for r in results:
            if r["l1"] is not None:
                _, disagreeing, text, examples = r["l1"]
                assert disagreeing == 0, (text, examples)
        errors = [e for r in results for e in r["errors"]]
        assert not errors, errors[:5]
        # ...and the run did test something.
        assert all(r["ops"] > 0 for r in results), [r["ops"] for r in results]
        assert report.checked > 0, report
        if variant.startswith("two-level"):
            assert sum(r["l1"][0] for r in results) > 0, [r["l1"] for r in results]
        assert sum(counters.values()) == sum(r["added"] for r in results), counters
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        client = redis.Redis.from_url(redis_url)
        for name in client.scan_iter(match=prefix + "*"):
            client.delete(name)
        client.close()
        _drop(dsn, table)


@pytest.mark.slow  # a 5 s soak per variant
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_guarantee4_every_key_agrees_after_quiescence(variant: str, redis_url: str,
                                                      postgres_dsn: str) -> None:
    soak(variant, redis_url, postgres_dsn, seconds=3.0)


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_guarantee4_long_soak(variant: str, redis_url: str, postgres_dsn: str) -> None:
    soak(variant, redis_url, postgres_dsn, seconds=30.0)
