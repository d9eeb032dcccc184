"""Leased fills on Redis: cross-process single flight, and stale fills that cannot land.

Real Redis, real processes. Each test has its own key prefix (tests/services.unique).
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis

import cacheway as cw
from services import REDIS_URL, unique


def _counting_slow_store(redis_url: str, counter: str, value: Any, delay: float,
                         gate: threading.Event | None = None) -> cw.CallbackStore:
    client = redis.Redis.from_url(redis_url)

    def load_many(keys: list[str]) -> dict[str, Any]:
        client.incr(counter)
        if gate is not None:
            gate.wait(10)
        time.sleep(delay)
        return dict.fromkeys(keys, value) if value is not None else {}

    return cw.CallbackStore(load_many=load_many, save_many=lambda items: None,
                            delete_many=lambda keys: None)


def _stampede_process(redis_url: str, prefix: str, counter: str, start: float,
                      found: bool, out: Any) -> None:
    store = _counting_slow_store(redis_url, counter, {"v": 1} if found else None, 0.2)
    cache = cw.Cache(store=store, backend=cw.RedisBackend(redis_url, prefix=prefix))
    results: list[Any] = []
    lock = threading.Lock()

    def reader() -> None:
        value = cache.get("hot", "absent")
        with lock:
            results.append(value)

    time.sleep(max(0.0, start - time.time()))
    threads = [threading.Thread(target=reader) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cache.close()
    out.put(results)


@pytest.mark.parametrize("found", [True, False], ids=["found", "not-found"])
def test_guarantee5_stampede_across_processes_makes_one_load(redis_url: str, found: bool
                                                             ) -> None:
    prefix, counter = unique("cw") + ":", unique("loads")
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start = time.time() + 2.5  # spawned interpreters need a moment to import
    procs = [ctx.Process(target=_stampede_process,
                         args=(redis_url, prefix, counter, start, found, out))
             for _ in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(30)
    client = redis.Redis.from_url(redis_url)
    loads = int(client.get(counter) or 0)
    client.delete(counter)
    cw.RedisBackend(redis_url, prefix=prefix).clear()
    expected = {"v": 1} if found else "absent"
    assert all(r == [expected] * 10 for r in results), results
    assert loads == 1, f"{loads} store loads for 40 concurrent misses in 4 processes"


def _race(redis_url: str, tmp_path: Path, leases: bool) -> Any:
    """A fill loads the old value, pauses; another process-like cache writes through
    (invalidating, since a callback store has no versions); the fill then completes."""
    prefix = unique("cw") + ":"
    data = {"k": "old"}
    gate, loading = threading.Event(), threading.Event()

    def load_many(keys: list[str]) -> dict[str, Any]:
        found = {k: data[k] for k in keys if k in data}  # read the store...
        loading.set()
        gate.wait(10)  # ...and pause before the fill
        return found

    def save_many(items: list[tuple[str, Any]]) -> None:
        data.update(items)

    reader_store = cw.CallbackStore(load_many=load_many, save_many=save_many,
                                    delete_many=lambda keys: None)
    writer_store = cw.CallbackStore(load_many=lambda keys: {k: data[k] for k in keys},
                                    save_many=save_many, delete_many=lambda keys: None)
    reader = cw.Cache(store=reader_store,
                      backend=cw.RedisBackend(redis_url, prefix=prefix, leases=leases))
    writer = cw.Cache(store=writer_store, backend=cw.RedisBackend(redis_url, prefix=prefix))
    got: list[Any] = []
    t = threading.Thread(target=lambda: got.append(reader.get("k")))
    t.start()
    assert loading.wait(10)
    writer.set("k", "new")  # store, then invalidate the shared copy
    gate.set()
    t.join(10)
    backend = cw.RedisBackend(redis_url, prefix=prefix)
    cached = backend.get(":k")
    backend.clear()
    reader.close()
    writer.close()
    return cached


def test_guarantee4_stale_fill_lands_without_leases(redis_url: str, tmp_path: Path) -> None:
    # The textbook race, shown: without a lease the paused fill puts "old" back after
    # the writer's invalidation, and it stays there.
    assert _race(redis_url, tmp_path, leases=False) == "old"


def test_guarantee4_stale_fill_cannot_land_with_leases(redis_url: str, tmp_path: Path
                                                       ) -> None:
    cached = _race(redis_url, tmp_path, leases=True)
    assert cached in (cw.backends.base.MISS, "new"), cached


def test_a_dead_lease_holder_blocks_readers_only_until_the_lease_expires(
    redis_url: str, tmp_path: Path
) -> None:
    prefix = unique("cw") + ":"
    backend = cw.RedisBackend(redis_url, prefix=prefix, lease_ttl=0.5)
    # a holder that died right after taking the lease
    from cacheway.engine.leases import LEASE_ACQUIRED

    assert backend.lease_get(":k", b"dead-holder")[0] == LEASE_ACQUIRED
    store = cw.SQLiteStore(tmp_path / "app.db")
    store.save_many({"k": 42})
    cache = cw.Cache(store=store, backend=backend)
    started = time.monotonic()
    assert cache.get("k") == 42
    assert time.monotonic() - started < 5.0  # bounded by the lease, not forever
    assert cache.stats().loads == 1
    backend.clear()
    cache.close()
    store.close()


@pytest.mark.parametrize("after_delete", [False, True], ids=["plain", "after-a-delete"])
def test_a_lease_holder_whose_load_fails_gives_the_lease_up(
    redis_url: str, tmp_path: Path, after_delete: bool
) -> None:
    # Found by the long outage model run (session 3): the holder's failed load left its
    # lease in Redis, so every other reader of the key, in every process, polled for
    # lease_ttl (10 s) for a fill that never came before loading by itself.
    from cacheway.backends.redis_format import HLEN, LEASE, TOMBSTONE

    prefix = unique("cw") + ":"
    down = threading.Event()

    def load_many(keys: list[str]) -> dict[str, Any]:
        if down.is_set():
            raise ConnectionError("store down")
        return {}

    store = cw.CallbackStore(load_many=load_many, save_many=lambda items: None,
                             delete_many=lambda keys: None)
    raw = redis.Redis.from_url(redis_url)
    backend = cw.RedisBackend(redis_url, prefix=prefix)
    with cw.Cache(store=store, backend=backend) as cache:
        if after_delete:
            # a versioned delete's tombstone: the lease keeps its version as a floor
            assert backend.delete(":k", version=5)
        down.set()
        with pytest.raises(cw.StoreError, match="store down"):
            cache.get("k")
        entry = raw.get(prefix + ":k")
        flag = None if entry is None else entry[HLEN - 1]
        assert flag != LEASE, "the failed holder's lease is still in Redis"
        if after_delete:
            assert flag == TOMBSTONE  # the delete's version still refuses older fills
        # The next reader takes the lease at once and loads (here: fails) by itself.
        with pytest.raises(cw.StoreError, match="store down"):
            cache.get("k")
        assert cache.stats().loads == 2
        down.clear()
        assert cache.get("k", "absent") == "absent"
    raw.close()


@pytest.mark.parametrize("reader_policy", ["write-through", "write-back"])
def test_guarantee4_a_stale_fill_cannot_outlive_another_process_s_pending_delete(
    tmp_path: Path, redis_url: str, reader_policy: str
) -> None:
    # Found by tests/test_consistency_soak.py (1 run in 3): a reader's fill of the row
    # that another process's write-back delete is about to remove was refused, but the
    # refusal deleted the key and with it the delete's tombstone; the next reader's lease
    # then had no floor, filled the same old row, and Redis kept serving it after the
    # delete reached the store.
    prefix = unique("cw") + ":"
    store = cw.SQLiteStore(tmp_path / "app.db")
    raw = redis.Redis.from_url(redis_url)

    def cache(policy: cw.Policy) -> cw.Cache:
        return cw.Cache(store=store, backend=cw.RedisBackend(redis_url, prefix=prefix),
                        policy=policy)

    reader = cache(cw.WriteThrough() if reader_policy == "write-through"
                   else cw.WriteBack(max_delay=0.01))
    deleter = cache(cw.WriteBack(max_delay=3600))  # "another process": its delete pends
    try:
        reader.set("k", {"n": 1})
        reader.flush(timeout=30)
        deleter.delete("k")  # accepted: a tombstone in Redis, the row still in the store
        for _ in range(3):  # readers load the old row; none may put it back in Redis
            assert reader.get("k") == {"n": 1}  # not read-your-writes across processes
        entry = raw.get(prefix + ":k")
        assert entry is not None, "the delete's tombstone is gone"
        assert entry[8] != 0, "a stale fill replaced the tombstone"
        deleter.flush(timeout=30)
        assert store.load("k") is None
        assert reader.get("k", "absent") == "absent", "Redis kept a row the store deleted"
    finally:
        deleter.close()
        reader.close()
        raw.delete(*raw.keys(prefix + "*") or [prefix + "none"])
        raw.close()
        store.close()


def test_guarantee4_a_fill_older_than_the_leases_floor_keeps_the_tombstone(
        raw: Any, prefix: str) -> None:
    # A lease taken over a tombstone (a delete not yet in the store) keeps its version as
    # the floor; a fill of a row older than that is refused. The refusal must leave the
    # tombstone: it used to DEL the key, so the next lease had no floor and the same old
    # row filled (found by the write-back consistency soak).
    from cacheway.backends.redis_format import HLEN, TOMBSTONE
    from cacheway.engine.leases import LEASE_ACQUIRED

    backend = cw.RedisBackend(REDIS_URL, prefix=prefix)
    try:
        assert backend.delete(":k", version=50)
        for token in (b"first", b"second"):
            assert backend.lease_get(":k", token)[0] == LEASE_ACQUIRED
            assert not backend.lease_fill(":k", token, "old", None, None, 40)
            entry = raw.get(prefix + ":k")
            assert entry is not None
            assert entry[HLEN - 1] == TOMBSTONE
            assert int.from_bytes(entry[1:8], "big") == 50
            assert 0 < raw.pttl(prefix + ":k") <= 30_000  # a marker keeps an expiry
        assert backend.get(":k") is cw.backends.base.MISS
        # A row at least as new as the delete still fills.
        assert backend.lease_get(":k", b"third")[0] == LEASE_ACQUIRED
        assert backend.lease_fill(":k", b"third", "new", None, None, 60)
        assert backend.get(":k") == "new"
    finally:
        backend.close()


def test_a_holder_whose_fill_is_void_gives_the_lease_up(redis_url: str) -> None:
    # Found by the guarantee suite (cacheway.testing, Redis pairs): a write to another
    # key of the same stripe during the holder's load voids its fill (a fill token per
    # stripe); the holder then neither filled nor released, and the other readers of the
    # key polled out the whole lease (10 s) for a fill that never came.
    from cacheway.backends.redis_format import HLEN, LEASE
    from cacheway.core.fills import FillTokens

    prefix = unique("cw") + ":"
    k_stripe = FillTokens.stripe(":k")
    neighbour = next(f"j{i}" for i in range(1_000_000)
                     if FillTokens.stripe(f":j{i}") == k_stripe)
    holder: list[cw.Cache] = []

    def load_many(keys: list[str]) -> dict[str, Any]:
        if keys == ["k"]:
            holder[0].invalidate(neighbour)  # a write elsewhere in k's stripe, mid-load
        return dict.fromkeys(keys, "v")

    store = cw.CallbackStore(load_many=load_many, save_many=lambda items: None,
                             delete_many=lambda keys: None)
    raw = redis.Redis.from_url(redis_url)
    with cw.Cache(store=store, backend=cw.RedisBackend(redis_url, prefix=prefix)) as cache:
        holder.append(cache)
        assert cache.get("k") == "v"
        entry = raw.get(prefix + ":k")
        assert entry is None or entry[HLEN - 1] != LEASE, "the void fill's lease stayed"
    raw.close()
