"""The Redis and PostgreSQL rows (6-9) of ``bench/async.py`` and its loop-lag figure (10);
see that module's docstring. Run them through it: ``python bench/async.py --only redis_aa
--only redis --only wt_pg --only wt_paths --only lag`` (``--only redis`` alone: the Redis
hit, 7)."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cacheway as cw
from _common import (
    Comparison,
    RoundResult,
    Scratch,
    clear_backend,
    percentile,
    perf_ns,
    run_alternating,
    set_mix,
)


# -- shared with bench/async.py ----------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    keys: int
    gets: int
    get_batch: int
    sets: int
    set_batch: int


FULL = Sizes(keys=10_000, gets=100_000, get_batch=5_000, sets=20_000, set_batch=20_000)
QUICK = Sizes(keys=1_000, gets=10_000, get_batch=1_000, sets=2_000, set_batch=2_000)
TASKS = 100

LOOP = asyncio.new_event_loop()


def close_loop() -> None:
    """End the tasks left on the benchmarks' loop (the baselines' background tasks:
    cashews' expiry sweep, connection pools' waiters), then close it."""
    pending = asyncio.all_tasks(LOOP)
    for task in pending:
        task.cancel()
    if pending:  # gather() of nothing makes its future on another loop
        LOOP.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    LOOP.run_until_complete(LOOP.shutdown_asyncgens())
    LOOP.close()


def on_loop(coro: Awaitable[Any]) -> Any:
    async def main() -> Any:
        return await coro

    return LOOP.run_until_complete(main())


async def _time_gets(get: Callable[[str], Awaitable[Any]], keys: Sequence[str],
                     batch: int) -> RoundResult:
    out: list[float] = []
    total = 0
    for start in range(0, len(keys), batch):
        chunk = keys[start:start + batch]
        t0 = perf_ns()
        for key in chunk:
            await get(key)
        dt = perf_ns() - t0
        total += dt
        out.append(dt / len(chunk))
    return RoundResult(out, total / len(keys))


def get_round(get: Callable[[str], Awaitable[Any]], keys: Sequence[str], batch: int
              ) -> Callable[[], RoundResult]:
    return lambda: on_loop(_time_gets(get, keys, batch))


def hit_keys(sz: Sizes, rng: random.Random) -> tuple[dict[str, Any], list[str]]:
    data = {f"item:{i}": {"n": i, "name": f"item {i}"} for i in range(sz.keys)}
    names = list(data)
    return data, [rng.choice(names) for _ in range(sz.gets)]


# -- Redis and PostgreSQL (6-9) and the loop lag (10) -----------------------------------
REDIS_URL = os.environ.get("CACHEWAY_TEST_REDIS", "redis://127.0.0.1:6379/0")
PG_DSN = os.environ.get("CACHEWAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
LAG_TARGET_MS = 5.0
NAME = f"cwbench_aio_{os.getpid()}"


def services_down() -> str | None:
    """Why the Redis/PostgreSQL rows cannot run, or None."""
    try:
        import psycopg
        import redis

        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
        psycopg.connect(PG_DSN, connect_timeout=2).close()
    except Exception as exc:  # noqa: BLE001 - reported as the reason of the skip
        return f"Redis {REDIS_URL} / PostgreSQL {PG_DSN} unavailable: {exc}"[:300]
    return None


def _redis_cache(data: dict[str, Any], tag: str) -> cw.AsyncCache:
    backend = cw.RedisBackend(REDIS_URL, prefix=f"{NAME}_{tag}:")
    acache = cw.AsyncCache(store=cw.SQLiteStore(":memory:"), backend=backend)
    on_loop(acache.set_many(data))
    return acache


def _drop_redis(acache: cw.AsyncCache) -> None:
    on_loop(acache.close())
    assert acache.cache is not None
    backend = acache.cache.backend
    assert isinstance(backend, cw.RedisBackend)
    clear_backend(backend)
    backend.close()


def _redis_keys(sz: Sizes, rng: random.Random) -> tuple[dict[str, Any], list[str]]:
    data, keys = hit_keys(sz, rng)
    return data, keys[: max(1, len(keys) // 5)]  # a round trip each: fewer ops


def bench_redis_aa(sz: Sizes, rng: random.Random, tmp: Scratch, rounds: int,
                   say: Callable[[str], None]) -> Comparison:
    data, keys = _redis_keys(sz, rng)
    a, b = _redis_cache(data, "a"), _redis_cache(data, "b")
    batch = max(1, sz.get_batch // 5)
    comp = Comparison("A/A: Redis hit", "await acache.get (A)", "await acache.get (B)", 1.1,
                      "gets", ops_per_round=len(keys), batch=batch)
    try:
        return run_alternating(comp, get_round(a.get, keys, batch),
                               get_round(b.get, keys, batch), rounds, progress=say)
    finally:
        _drop_redis(a)
        _drop_redis(b)


def bench_redis_hit(sz: Sizes, rng: random.Random, tmp: Scratch, rounds: int,
                    say: Callable[[str], None]) -> Comparison:
    import orjson
    import redis.asyncio as aredis

    data, keys = _redis_keys(sz, rng)
    ours = _redis_cache(data, "ours")
    raw = aredis.Redis.from_url(REDIS_URL)
    prefix = f"{NAME}_raw:"
    on_loop(raw.mset({prefix + k: orjson.dumps(v) for k, v in data.items()}))

    async def raw_get(key: str) -> Any:
        payload = await raw.get(prefix + key)
        return None if payload is None else orjson.loads(payload)

    assert on_loop(raw_get(keys[0])) == on_loop(ours.get(keys[0]))
    batch = max(1, sz.get_batch // 5)
    comp = Comparison("Redis hit vs raw redis.asyncio", "await AsyncCache.get",
                      "await redis.asyncio GET + orjson.loads", 1.2, "gets",
                      ops_per_round=len(keys), batch=batch)
    try:
        return run_alternating(comp, get_round(ours.get, keys, batch),
                               get_round(raw_get, keys, batch), rounds, progress=say)
    finally:
        _drop_redis(ours)
        on_loop(raw.delete(*[prefix + k for k in data]))
        on_loop(raw.aclose())


def bench_write_through_pg(sz: Sizes, rng: random.Random, tmp: Scratch, rounds: int,
                           say: Callable[[str], None]) -> Comparison:
    import orjson
    import psycopg
    import redis.asyncio as aredis
    from psycopg.types.json import Jsonb

    mix = set_mix(rng, max(100, sz.sets // 10), 1000)
    # A plain PostgresStore: its async path writes on the loop (psycopg's
    # AsyncConnectionPool from the same DSN), see _aio_write.
    store = cw.PostgresStore(PG_DSN, table=f"{NAME}_ours")
    backend = cw.RedisBackend(REDIS_URL, prefix=f"{NAME}_wt:")
    ours = cw.AsyncCache(store=store, backend=backend, policy=cw.WriteThrough())
    raw = aredis.Redis.from_url(REDIS_URL)
    table = f"{NAME}_raw"
    conn = on_loop(psycopg.AsyncConnection.connect(PG_DSN, autocommit=True))
    on_loop(conn.execute(f"CREATE TABLE {table} (key text PRIMARY KEY, value jsonb NOT NULL)"))
    upsert = (f"INSERT INTO {table} (key, value) VALUES (%s, %s) "
              "ON CONFLICT (key) DO UPDATE SET value = excluded.value")

    async def raw_set(key: str, value: Any) -> None:
        await conn.execute(upsert, (key, Jsonb(value)))
        await raw.set(f"{NAME}_rawwt:{key}", orjson.dumps(value))

    def round_of(set_: Callable[[str, Any], Awaitable[None]]) -> Callable[[], RoundResult]:
        async def timed() -> RoundResult:
            t0 = perf_ns()
            for k, v in mix:
                await set_(k, v)
            per_op = (perf_ns() - t0) / len(mix)
            return RoundResult([per_op], per_op)

        return lambda: on_loop(timed())

    comp = Comparison("write-through Redis + PostgreSQL", "await AsyncCache.set",
                      "await async upsert + redis.asyncio SET", 1.3, "sets",
                      ops_per_round=len(mix), batch=len(mix))
    try:
        return run_alternating(comp, round_of(ours.set), round_of(raw_set), rounds,
                               progress=say)
    finally:
        on_loop(ours.close())
        clear_backend(backend)
        backend.close()
        with psycopg.connect(PG_DSN, autocommit=True) as sync:
            sync.execute(f"DROP TABLE IF EXISTS {table}, {NAME}_ours, {NAME}_ours_meta, "
                         f"{NAME}_ours_cw_meta, {NAME}_ours_cw_applied CASCADE")
            sync.execute(f"DROP SEQUENCE IF EXISTS {NAME}_ours_version_seq")
        on_loop(conn.close())
        on_loop(raw.delete(*[f"{NAME}_rawwt:{k}" for k, _ in mix]))
        on_loop(raw.aclose())


class _ThreadPostgresStore(cw.PostgresStore):
    """A PostgresStore without its async path: an AsyncCache's calls go to threads."""

    def async_path(self) -> None:
        return None


def bench_write_through_paths(sz: Sizes, rng: random.Random, tmp: Scratch, rounds: int,
                              say: Callable[[str], None]) -> Comparison:
    """The loop path's gain: AsyncCache.set over PostgresStore (its async path: psycopg's
    async pool, redis.asyncio, on the loop) against the same over a PostgresStore that
    declares no async path (each set in a worker thread), same Redis, same mix."""
    mix = set_mix(rng, max(100, sz.sets // 10), 1000)
    sides = []
    for name, kind in (("loop", cw.PostgresStore), ("thread", _ThreadPostgresStore)):
        store = kind(PG_DSN, table=f"{NAME}_{name}")
        backend = cw.RedisBackend(REDIS_URL, prefix=f"{NAME}_{name}:")
        sides.append((name, store, backend, cw.AsyncCache(store=store, backend=backend)))

    def round_of(acache: cw.AsyncCache) -> Callable[[], RoundResult]:
        async def timed() -> RoundResult:
            t0 = perf_ns()
            for k, v in mix:
                await acache.set(k, v)
            per_op = (perf_ns() - t0) / len(mix)
            return RoundResult([per_op], per_op)

        return lambda: on_loop(timed())

    comp = Comparison("write-through paths (loop / thread)", "PostgresStore: on the loop",
                      "no async path: a worker thread per set", 1.0, "sets",
                      ops_per_round=len(mix), batch=len(mix))
    try:
        return run_alternating(comp, round_of(sides[0][3]), round_of(sides[1][3]), rounds,
                               progress=say)
    finally:
        import psycopg

        for name, _, backend, acache in sides:
            on_loop(acache.close())
            clear_backend(backend)
            backend.close()
            with psycopg.connect(PG_DSN, autocommit=True) as sync:
                sync.execute(f"DROP TABLE IF EXISTS {NAME}_{name}, {NAME}_{name}_meta, "
                             f"{NAME}_{name}_applied CASCADE")
                sync.execute(f"DROP SEQUENCE IF EXISTS {NAME}_{name}_version_seq")


async def _lag_round(path: str, writes: int) -> tuple[float, float]:
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last - 0.001)
            last = now

    acache = cw.AsyncCache(store=cw.SQLiteStore(path), policy=cw.WriteBack(
        journal=path + ".wal", fsync="always", max_delay=0.05))
    await acache.pending()  # opened (journal replayed) before the ticker starts
    tick = asyncio.create_task(ticker())
    per_task = max(1, writes // TASKS)

    async def worker(t: int) -> None:
        for i in range(per_task):
            await acache.set(f"t{t}:{i}", i)

    await asyncio.gather(*(worker(t) for t in range(TASKS)))
    done.set()
    await tick
    await acache.close()
    return percentile(gaps, 99) * 1000, max(gaps) * 1000


def bench_loop_lag(writes: int, rounds: int, say: Callable[[str], None]
                   ) -> tuple[list[float], list[float]]:
    """p99 and max loop lag (ms) of each round (9 in the module docstring)."""
    tmp = Scratch()
    p99s, maxes = [], []
    try:
        for r in range(rounds + 1):
            p99, mx = on_loop(_lag_round(tmp.path(f"lag{r}"), writes))
            say(f"  loop lag round {r}{' (warm-up)' if r == 0 else ''}: p99 {p99:.2f} ms, "
                f"max {mx:.1f} ms")
            if r:
                p99s.append(p99)
                maxes.append(mx)
    finally:
        tmp.cleanup()
    return p99s, maxes


