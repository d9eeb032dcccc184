"""Acceptance tests of the distributed write-behind (``WriteBack(queue=...)``, ``cacheway
worker``), written from DESIGN.md ("API v2", "Distributed write-behind"), the queue and
workers guides and the README only: real Redis, PostgreSQL and SQLite, real worker and app
subprocesses, kill -9 of both."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw
from accept3b_support import App, Worker, poll, sqlite_rows
from accept3b_support import pg_live_rows as pg_rows
from services import POSTGRES_DSN, REDIS_URL, require

pytestmark = pytest.mark.services


@pytest.fixture
def procs() -> Iterator[list[Any]]:
    """Workers and apps to kill at teardown whatever happened."""
    started: list[Any] = []
    yield started
    for p in reversed(started):
        p.cleanup()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> tuple[str, str, str]:
    """(store URL, path, table) of a fresh SQLite key/value table."""
    path = str(tmp_path / "q.db")
    table = "kv_" + tmp_path.name.replace("-", "_")[-20:]
    cw.SQLiteStore(path, table=table).close()          # the table exists before any worker
    return f"sqlite:///{path}?table={table}", path, table


def pg_store_url(table: str) -> str:
    cw.PostgresStore(POSTGRES_DSN, table=table).close()
    return f"{POSTGRES_DSN}?table={table}"


def depth(cache: cw.Cache) -> int:
    return sum(p.depth for p in cache.stats().queue)


# -- flush() with a separate worker process --------------------------------------------------

def test_flush_waits_for_a_separate_worker_on_sqlite_and_sigterm_exits_0_with_status(
        qname: str, sqlite_url: tuple[str, str, str], tmp_path: Path,
        procs: list[Any]) -> None:
    require("redis")
    url, path, table = sqlite_url
    worker = Worker(REDIS_URL, qname, url, tmp_path / "w.log", partitions=4,
                    claim_after=5, processes=2, status_every=0.2)
    procs.append(worker)
    policy = cw.WriteBack(queue=REDIS_URL, queue_name=qname, partitions=4,
                          flush_in_process=False)
    with cw.Cache(store=cw.SQLiteStore(path, table=table), policy=policy) as cache:
        for i in range(40):
            cache.set(f"k{i}", {"i": i})
        cache.delete("k0")
        cache.incr("views", 2)
        cache.incr("views", 5)
        cache.flush(timeout=30)                 # returns only once the worker applied them
        rows = sqlite_rows(path, table)
        assert rows == {**{f"k{i}": {"i": i} for i in range(1, 40)}, "views": 7}
        assert cache.pending() == 0
    # its status line counts what it applied
    assert poll(lambda: "applied" in worker.stderr(), timeout=15), worker.stderr()
    assert worker.terminate() == 0, worker.stderr()
    err = worker.stderr()
    assert "Traceback" not in err, err
    for word in ("cacheway worker", "depth", "dead"):
        assert word in err, err


def test_flush_without_any_consumer_raises_store_error_after_its_timeout(
        qname: str, sqlite_url: tuple[str, str, str]) -> None:
    require("redis")
    _, path, table = sqlite_url
    policy = cw.WriteBack(queue=REDIS_URL, queue_name=qname, partitions=2,
                          flush_in_process=False)
    cache = cw.Cache(store=cw.SQLiteStore(path, table=table), policy=policy)
    try:
        cache.set("a", 1)
        cache.set("b", 2)
        with pytest.raises(cw.StoreError):
            cache.flush(timeout=1)
        assert cache.get("a") == 1                   # still readable, nothing lost
        assert sqlite_rows(path, table) == {}
    finally:
        # a consumer in this process drains it so close() can finish
        with cw.Cache(store=cw.SQLiteStore(path, table=table),
                      policy=cw.WriteBack(queue=REDIS_URL, queue_name=qname, partitions=2)):
            assert poll(lambda: sqlite_rows(path, table) == {"a": 1, "b": 2}, timeout=30)
        cache.close(timeout=10)


# -- order and counters across app processes --------------------------------------------------

def test_last_acknowledged_write_wins_across_app_processes(
        qname: str, pg_table: str, tmp_path: Path, procs: list[Any]) -> None:
    require("redis")
    url = pg_store_url(pg_table)
    # Three app processes write the same keys one after the other and leave without
    # flushing; only afterwards does a worker drain the queue.
    ops_a = [["set", "k", "a"], ["incr", "c", 5], ["set", "gone", 1], ["set", "only_a", 1],
             ["set", "z", 5], ["incr", "y", 1]]
    ops_b = [["set", "c", 100], ["set", "k", "b"], ["delete", "gone", None],
             ["delete", "z", None], ["set", "y", 10]]
    ops_c = [["incr", "c", 1], ["set", "k", "c"], ["set", "gone", 3], ["delete", "gone", None],
             ["incr", "z", 2], ["delete", "y", None]]
    for ops in (ops_a, ops_b, ops_c):
        app = App(REDIS_URL, qname, url, ops, mode="exit")
        procs.append(app)
        app.go()
        app.wait_line("acked")
        rc, err = app.wait()
        assert rc == 0, err
    assert pg_rows(POSTGRES_DSN, pg_table) == {}       # nothing applied yet
    worker = Worker(REDIS_URL, qname, url, tmp_path / "w.log", claim_after=5)
    procs.append(worker)
    expected = {"k": "c", "c": 101, "only_a": 1, "z": 2}
    assert poll(lambda: pg_rows(POSTGRES_DSN, pg_table) == expected, timeout=30), (
        pg_rows(POSTGRES_DSN, pg_table), worker.stderr())
    assert worker.terminate() == 0


def test_counters_from_concurrent_app_processes_sum_exactly(
        qname: str, pg_table: str, procs: list[Any]) -> None:
    require("redis")
    url = pg_store_url(pg_table)
    apps = []
    for n in range(3):
        ops: list[list[Any]] = []
        for i in range(150):
            ops.append(["incr", "hits", 1])
            ops.append(["incr", f"c{i % 5}", n + 1])
            ops.append(["set", f"p{n}:{i % 10}", i])
        # each app process runs its own consumer (the default) and flushes at the end
        app = App(REDIS_URL, qname, url, ops, flush_in_process=True, mode="flush")
        procs.append(app)
        apps.append(app)
    for app in apps:
        app.go()
    for app in apps:
        app.wait_line("acked")
        app.wait_line("flushed")
        rc, err = app.wait()
        assert rc == 0, err
    rows = pg_rows(POSTGRES_DSN, pg_table)
    assert rows["hits"] == 450
    for j in range(5):
        assert rows[f"c{j}"] == 30 * (1 + 2 + 3)
    for n in range(3):
        for j in range(10):
            assert rows[f"p{n}:{j}"] == 140 + j
    assert len(rows) == 1 + 5 + 30


def test_a_burst_to_one_key_ends_with_the_last_write_in_the_store(
        qname: str, sqlite_url: tuple[str, str, str], tmp_path: Path,
        procs: list[Any]) -> None:
    require("redis")
    url, path, table = sqlite_url
    worker = Worker(REDIS_URL, qname, url, tmp_path / "w.log", partitions=3,
                    claim_after=5, batch_size=7)
    procs.append(worker)
    policy = cw.WriteBack(queue=REDIS_URL, queue_name=qname, partitions=3,
                          flush_in_process=False)
    with cw.Cache(store=cw.SQLiteStore(path, table=table), policy=policy) as cache:
        for i in range(300):
            cache.set("k", i)
            if i % 3 == 0:
                cache.delete("d")
            else:
                cache.set("d", i)
        cache.flush(timeout=30)
        rows = sqlite_rows(path, table)
    assert rows["k"] == 299
    assert rows["d"] == 299
    assert worker.terminate() == 0


# -- deletes, expire= -------------------------------------------------------------------------

def test_deletes_reach_the_store_and_other_processes(
        qname: str, pg_table: str, redis_backend: cw.RedisBackend) -> None:
    url = pg_store_url(pg_table)
    policy = cw.WriteBack(queue=REDIS_URL, queue_name=qname, partitions=4)
    with cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table), backend=redis_backend,
                  policy=policy) as cache:
        cache.set_many({"a": 1, "b": 2, "c": 3})
        cache.flush(timeout=30)
        assert pg_rows(POSTGRES_DSN, pg_table) == {"a": 1, "b": 2, "c": 3}
        cache.delete("a")
        cache.delete_many(["b"])
        assert cache.get("a") is None
        cache.flush(timeout=30)
        assert pg_rows(POSTGRES_DSN, pg_table) == {"c": 3}
    with cw.open(store=url, policy="write-through") as other:
        assert other.get("a") is None
        assert other.get("b") is None
        assert other.get("c") == 3


def test_expire_on_a_queue_namespace_ends_the_data_in_cache_and_store(
        qname: str, sqlite_url: tuple[str, str, str]) -> None:
    require("redis")
    _, path, table = sqlite_url
    policy = cw.WriteBack(queue=REDIS_URL, queue_name=qname, partitions=2)
    with cw.Cache(store=cw.SQLiteStore(path, table=table), policy=policy) as cache:
        sessions = cache.namespace("sess", expire=1.0)
        keep = cache.namespace("keep")
        sessions.set("s1", {"user": 1})
        sessions.incr("n", 4)
        keep.set("s1", "forever")
        cache.flush(timeout=30)
        assert sessions.get("s1") == {"user": 1}
        start = time.time()
        # bounded wait for the end of the data (1 s after the last write)
        assert poll(lambda: sessions.get("s1") is None, timeout=15)
        assert time.time() - start >= 0.5 or sessions.get("s1") is None
        assert keep.get("s1") == "forever"
        assert sessions.incr("n", 2) == 2                   # ended counter starts from 0
        cache.flush(timeout=30)
    with cw.Cache(store=cw.SQLiteStore(path, table=table), policy=cw.WriteThrough()) as fresh:
        assert fresh.namespace("sess", expire=1.0).get("s1") is None
        assert fresh.namespace("sess", expire=1.0).get("n") == 2
        assert fresh.namespace("keep").get("s1") == "forever"


def test_expire_data_read_before_the_consumer_applied_it_ends_too(
        qname: str, sqlite_url: tuple[str, str, str]) -> None:
    require("redis")
    _, path, table = sqlite_url
    policy = cw.WriteBack(queue=REDIS_URL, queue_name=qname, partitions=2,
                          flush_in_process=False)
    cache = cw.Cache(store=cw.SQLiteStore(path, table=table), policy=policy)
    try:
        sessions = cache.namespace("sess", expire=0.5)
        sessions.set("s", "v")
        assert sessions.get("s") == "v"
        assert poll(lambda: sessions.get("s") is None, timeout=15)
    finally:
        with cw.Cache(store=cw.SQLiteStore(path, table=table),
                      policy=cw.WriteBack(queue=REDIS_URL, queue_name=qname, partitions=2)) as c2:
            c2.namespace("sess", expire=0.5)
            time.sleep(0.3)
        cache.close(timeout=10)
    with cw.Cache(store=cw.SQLiteStore(path, table=table)) as fresh:
        assert fresh.namespace("sess", expire=0.5).get("s") is None


# -- stats() ------------------------------------------------------------------------------------

def test_stats_show_depth_and_lag_per_partition_until_a_worker_drains(
        qname: str, sqlite_url: tuple[str, str, str], tmp_path: Path,
        procs: list[Any]) -> None:
    require("redis")
    url, path, table = sqlite_url
    policy = cw.WriteBack(queue=REDIS_URL, queue_name=qname, partitions=4,
                          flush_in_process=False)
    with cw.Cache(store=cw.SQLiteStore(path, table=table), policy=policy) as cache:
        for i in range(20):
            cache.set(f"k{i}", i)
        time.sleep(0.2)
        parts = cache.stats().queue
        assert sorted(p.partition for p in parts) == [0, 1, 2, 3]
        assert {p.queue for p in parts} == {qname}
        assert sum(p.depth for p in parts) == 20
        assert all(p.dead == 0 for p in parts)
        assert all(p.lag >= 0 for p in parts)
        assert max(p.lag for p in parts) > 0              # the oldest entry waits
        assert all(p.lag == 0.0 for p in parts if p.depth == 0)
        assert cache.stats().dirty == 20
        # the same from any process, with a plain redis client
        import redis

        from cacheway.queue import Names, queue_status
        client = redis.Redis.from_url(REDIS_URL)
        try:
            seen = queue_status(client, Names(qname, 4))
        finally:
            client.close()
        assert sorted((p.partition, p.depth) for p in seen) == sorted(
            (p.partition, p.depth) for p in parts)
        worker = Worker(REDIS_URL, qname, url, tmp_path / "w.log", partitions=4, claim_after=5)
        procs.append(worker)
        assert poll(lambda: all(p.consumer for p in cache.stats().queue), timeout=15)
        cache.flush(timeout=30)
        assert poll(lambda: depth(cache) == 0, timeout=15)
        parts = cache.stats().queue
        assert all(p.lag == 0.0 for p in parts)
        assert cache.stats().dirty == 0
    assert worker.terminate() == 0


# -- kill -9 ------------------------------------------------------------------------------------

def test_worker_killed_mid_run_is_taken_over_and_nothing_is_lost_or_doubled(
        qname: str, pg_table: str, tmp_path: Path, procs: list[Any]) -> None:
    require("redis")
    url = pg_store_url(pg_table)
    policy = cw.WriteBack(queue=REDIS_URL, queue_name=qname, partitions=4,
                          flush_in_process=False, claim_after=1.0)
    with cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table), policy=policy) as cache:
        for i in range(2000):
            cache.incr(f"c{i % 8}", 1)
            if i % 4 == 0:
                cache.set(f"s{(i // 4) % 16}", i)
        total = depth(cache)
        first = Worker(REDIS_URL, qname, url, tmp_path / "a.log", partitions=4,
                       claim_after=1, batch_size=5)
        procs.append(first)
        # wait until it applied some, then kill -9 in the middle of its run
        assert poll(lambda: depth(cache) < total * 0.8, timeout=30, step=0.005), first.stderr()
        first.kill9()
        assert depth(cache) > 0, "the first worker finished before it was killed"
        second = Worker(REDIS_URL, qname, url, tmp_path / "b.log", partitions=4,
                        claim_after=1, batch_size=50)
        procs.append(second)
        cache.flush(timeout=60)
        rows = pg_rows(POSTGRES_DSN, pg_table)
    for j in range(8):
        assert rows[f"c{j}"] == 250, rows
    for j in range(16):
        assert rows[f"s{j}"] == max(i for i in range(0, 2000, 4) if (i // 4) % 16 == j)
    assert second.terminate() == 0


def test_app_killed_after_acknowledgements_its_writes_reach_the_store_via_a_worker(
        qname: str, pg_table: str, tmp_path: Path, procs: list[Any]) -> None:
    require("redis")
    url = pg_store_url(pg_table)
    ops: list[list[Any]] = [["set", f"k{i}", i] for i in range(100)]
    ops += [["incr", "n", 3]] * 50 + [["delete", "k5", None]]
    app = App(REDIS_URL, qname, url, ops, mode="hang")
    procs.append(app)
    app.go()
    app.wait_line("acked")
    app.kill9()
    worker = Worker(REDIS_URL, qname, url, tmp_path / "w.log", claim_after=1)
    procs.append(worker)
    expected = {**{f"k{i}": i for i in range(100) if i != 5}, "n": 150}
    assert poll(lambda: pg_rows(POSTGRES_DSN, pg_table) == expected, timeout=30), worker.stderr()
    time.sleep(0.5)
    assert pg_rows(POSTGRES_DSN, pg_table) == expected        # nothing applied twice
    assert worker.terminate() == 0


def test_app_with_in_process_consumer_killed_mid_flush_loses_nothing(
        qname: str, pg_table: str, tmp_path: Path, procs: list[Any]) -> None:
    require("redis")
    url = pg_store_url(pg_table)
    ops: list[list[Any]] = [["incr", f"c{i % 4}", 1] for i in range(800)]
    # the app's own consumer applies while it writes; kill -9 once it acknowledged all
    app = App(REDIS_URL, qname, url, ops, flush_in_process=True, mode="hang", claim_after=1)
    procs.append(app)
    app.go()
    app.wait_line("acked")
    app.kill9()
    worker = Worker(REDIS_URL, qname, url, tmp_path / "w.log", claim_after=1)
    procs.append(worker)
    expected = {f"c{j}": 200 for j in range(4)}
    assert poll(lambda: pg_rows(POSTGRES_DSN, pg_table) == expected, timeout=30), (
        pg_rows(POSTGRES_DSN, pg_table), worker.stderr())
    assert worker.terminate() == 0


# -- bad inputs ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "word"), [
    ({"queue": REDIS_URL, "queue_name": "x", "partitions": 0}, "partitions"),
    ({"queue": REDIS_URL, "queue_name": "x", "partitions": -3}, "partitions"),
    ({"queue": REDIS_URL, "queue_name": "x", "claim_after": 0}, "claim_after"),
    ({"queue": REDIS_URL, "queue_name": "x", "claim_after": -1.0}, "claim_after"),
    ({"queue": REDIS_URL, "queue_name": ""}, "queue_name"),
    ({"queue": "http://127.0.0.1:6379/0", "queue_name": "x"}, "http"),
    ({"queue": "not a url", "queue_name": "x"}, "not a url"),
    ({"queue": REDIS_URL + "?bogus=1", "queue_name": "x"}, "bogus"),
])
def test_bad_queue_options_raise_config_error_at_the_call(kwargs: dict[str, Any], word: str,
                                                          tmp_path: Path) -> None:
    def build() -> None:
        policy = cw.WriteBack(**kwargs)
        with cw.Cache(store=cw.SQLiteStore(str(tmp_path / "a.db")), policy=policy):
            pass

    with pytest.raises(cw.ConfigError, match=word):
        build()


def test_unknown_write_back_option_is_refused_at_the_call() -> None:
    with pytest.raises((TypeError, cw.CachewayError), match="queue_nmae"):
        cw.WriteBack(queue=REDIS_URL, queue_nmae="x")  # type: ignore[call-arg]


def test_worker_with_zero_partitions_exits_non_zero_without_traceback(
        qname: str, sqlite_url: tuple[str, str, str], tmp_path: Path) -> None:
    from accept_support import cli, no_traceback

    url, _, _ = sqlite_url
    out = cli("worker", "--queue", REDIS_URL, "--queue-name", qname, "--store", url,
              "--partitions", "0", "--status-every", "0", timeout=30)
    assert out.returncode != 0
    assert "partitions" in out.stderr, out.stderr
    assert no_traceback(out), out.stderr[-500:]


# -- close(), shutdown and takeover -------------------------------------------------------------

def test_close_without_any_consumer_raises_after_its_timeout_like_flush(
        qname: str, sqlite_url: tuple[str, str, str]) -> None:
    require("redis")
    _, path, table = sqlite_url
    policy = cw.WriteBack(queue=REDIS_URL, queue_name=qname, partitions=2,
                          flush_in_process=False)
    cache = cw.Cache(store=cw.SQLiteStore(path, table=table), policy=policy)
    cache.set("a", 1)
    try:
        with pytest.raises(cw.StoreError, match="cacheway worker"):
            cache.close(timeout=1)
        assert cache.closed
    finally:
        # the write is still in Redis: a consumer applies it
        with cw.Cache(store=cw.SQLiteStore(path, table=table),
                      policy=cw.WriteBack(queue=REDIS_URL, queue_name=qname, partitions=2)):
            assert poll(lambda: sqlite_rows(path, table) == {"a": 1}, timeout=30)
        cache.close(timeout=5)


def test_sigterm_mid_run_hands_the_partitions_over_and_counters_stay_exact(
        qname: str, pg_table: str, tmp_path: Path, procs: list[Any]) -> None:
    require("redis")
    url = pg_store_url(pg_table)
    policy = cw.WriteBack(queue=REDIS_URL, queue_name=qname, partitions=4,
                          flush_in_process=False)
    with cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table), policy=policy) as cache:
        for i in range(2000):
            cache.incr(f"c{i % 10}", 1)
        total = depth(cache)
        # claim_after is long: the second worker can only take over quickly because the
        # first one released its partitions on SIGTERM
        first = Worker(REDIS_URL, qname, url, tmp_path / "a.log", partitions=4,
                       claim_after=120, batch_size=5)
        procs.append(first)
        assert poll(lambda: depth(cache) < total * 0.8, timeout=30, step=0.005), first.stderr()
        assert first.terminate() == 0, first.stderr()
        assert "Traceback" not in first.stderr()
        second = Worker(REDIS_URL, qname, url, tmp_path / "b.log", partitions=4,
                        claim_after=120, batch_size=100)
        procs.append(second)
        cache.flush(timeout=30)
        rows = pg_rows(POSTGRES_DSN, pg_table)
    assert rows == {f"c{j}": 200 for j in range(10)}
    assert second.terminate() == 0


# -- several app processes sharing a RedisBackend -------------------------------------------

def _shared(path: str, table: str, qname: str, prefix: str) -> cw.Cache:
    return cw.Cache(store=cw.SQLiteStore(path, table=table),
                    backend=cw.RedisBackend(REDIS_URL, prefix=prefix),
                    policy=cw.WriteBack(queue=REDIS_URL, queue_name=qname, partitions=2,
                                        flush_in_process=False))


def test_counters_and_sets_are_seen_at_once_by_another_cache_sharing_redis(
        qname: str, sqlite_url: tuple[str, str, str], prefix: str) -> None:
    _, path, table = sqlite_url
    a, b = _shared(path, table, qname, prefix), _shared(path, table, qname, prefix)
    try:
        assert a.incr("n", 5) == 5
        assert b.incr("n", 1) == 6                    # computed from the shared copy
        a.set("j", "a")
        b.set("j", "b")
        assert a.get("j") == "b"                      # the later acknowledged write
        assert b.get("n") == 6
        sa, sb = a.namespace("s", expire=0.5), b.namespace("s", expire=0.5)
        sa.set("x", 1)
        assert sb.get("x") == 1
        assert poll(lambda: sb.get("x") is None and sa.get("x") is None, timeout=15)
        with cw.Cache(store=cw.SQLiteStore(path, table=table),
                      policy=cw.WriteBack(queue=REDIS_URL, queue_name=qname,
                                          partitions=2)) as consumer:
            consumer.flush(timeout=30)
            a.flush(timeout=30)
            b.flush(timeout=30)
        assert sqlite_rows(path, table) == {"n": 6, "j": "b"}
    finally:
        a.close(timeout=5)
        b.close(timeout=5)


def test_a_later_delete_from_another_cache_wins_over_a_queued_write(
        qname: str, sqlite_url: tuple[str, str, str], prefix: str) -> None:
    _, path, table = sqlite_url
    a, b = _shared(path, table, qname, prefix), _shared(path, table, qname, prefix)
    try:
        a.set("k", "old")
        a.incr("n", 2)
        b.delete("k")                                  # acknowledged after a's write
        b.delete("n")
        assert b.get("k") is None
        assert a.get("k") is None
        assert a.get_many(["k", "n"]) == {}
        assert a.get("n") is None
        a.set("k", "new")                              # a's later write wins again
        assert a.get("k") == b.get("k") == "new"
    finally:
        with cw.Cache(store=cw.SQLiteStore(path, table=table),
                      policy=cw.WriteBack(queue=REDIS_URL, queue_name=qname,
                                          partitions=2)) as consumer:
            consumer.flush(timeout=30)
            a.flush(timeout=30)
            b.flush(timeout=30)
        a.close(timeout=5)
        b.close(timeout=5)


def test_queue_redis_down_set_refuses_and_stats_show_no_queue(
        qname: str, sqlite_url: tuple[str, str, str]) -> None:
    require("redis")
    from faultproxy import FaultProxy

    _, path, table = sqlite_url
    with FaultProxy(6379) as proxy:
        queue = f"redis://127.0.0.1:{proxy.port}/0"
        policy = cw.WriteBack(queue=queue, queue_name=qname, partitions=2,
                              flush_in_process=False)
        cache = cw.Cache(store=cw.SQLiteStore(path, table=table), policy=policy)
        try:
            cache.set("a", 1)
            assert sum(p.depth for p in cache.stats().queue) == 1
            proxy.down()
            assert tuple(cache.stats().queue) == ()        # empty while Redis can't be read
            with pytest.raises(cw.BackendError, match="not acknowledged"):
                cache.set("b", 2)
            assert cache.get("a") == 1
            proxy.forward()
            cache.set("c", 3)
        finally:
            cache.close()  # no consumer: the writes wait in Redis
    with cw.Cache(store=cw.SQLiteStore(path, table=table),
                  policy=cw.WriteBack(queue=REDIS_URL, queue_name=qname, partitions=2)):
        assert poll(lambda: sqlite_rows(path, table) == {"a": 1, "c": 3}, timeout=30)


def test_flush_timeout_message_says_how_many_entries_are_left(
        qname: str, sqlite_url: tuple[str, str, str]) -> None:
    require("redis")
    _, path, table = sqlite_url
    policy = cw.WriteBack(queue=REDIS_URL, queue_name=qname, partitions=2,
                          flush_in_process=False)
    cache = cw.Cache(store=cw.SQLiteStore(path, table=table), policy=policy)
    try:
        for i in range(7):
            cache.set(f"k{i}", i)
        assert cache.pending() == 7
        with pytest.raises(cw.StoreError, match=r"\b7\b"):
            cache.flush(timeout=0.5)
    finally:
        with cw.Cache(store=cw.SQLiteStore(path, table=table),
                      policy=cw.WriteBack(queue=REDIS_URL, queue_name=qname, partitions=2)):
            assert poll(lambda: len(sqlite_rows(path, table)) == 7, timeout=30)
        cache.close(timeout=5)


def _in_transaction(table: str) -> tuple[bool, bool]:
    """(a session idle inside a transaction holds a lock on one of ``table``'s relations,
    one holds any lock on them or an advisory lock)."""
    import psycopg

    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT l.locktype, coalesce(l.relation::regclass::text, '') FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE a.state LIKE 'idle in transaction%%' "
            "AND a.pid <> pg_backend_pid()").fetchall()
    on_table = any(table in rel for _, rel in rows)
    return on_table, on_table or any(kind == "advisory" for kind, _ in rows)


def _sessions() -> list[Any]:
    import psycopg

    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        return conn.execute("SELECT state, wait_event_type, left(query, 80) FROM "
                            "pg_stat_activity WHERE pid <> pg_backend_pid() AND state <> 'idle'"
                            ).fetchall()


def _pause(worker: Worker, table: str, inside: bool, cache: cw.Cache) -> None:
    """SIGSTOP ``worker`` at a moment when it is (``inside``) or is not in the middle of
    a store transaction; retries until so while entries wait."""
    for _ in range(400):
        os.killpg(worker.proc.pid, signal.SIGSTOP)
        time.sleep(0.05)
        on_table, anything = _in_transaction(table)
        if (inside and on_table) or (not inside and not anything):
            return
        os.killpg(worker.proc.pid, signal.SIGCONT)
        time.sleep(0.01)
        if depth(cache) == 0:
            break
    pytest.skip("could not pause the worker at the wanted moment")


def _paused_takeover(qname: str, pg_table: str, tmp_path: Path, procs: list[Any],
                     inside: bool) -> None:
    url = pg_store_url(pg_table)
    policy = cw.WriteBack(queue=REDIS_URL, queue_name=qname, partitions=4,
                          flush_in_process=False)
    with cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table), policy=policy) as cache:
        for i in range(3000):
            cache.incr(f"c{i % 10}", 1)
        total = depth(cache)
        first = Worker(REDIS_URL, qname, url, tmp_path / "a.log", partitions=4,
                       claim_after=1, batch_size=2)
        procs.append(first)
        assert poll(lambda: depth(cache) < total * 0.95, timeout=30, step=0.005), first.stderr()
        _pause(first, pg_table, inside, cache)      # a long GC pause, a stopped container
        try:
            second = Worker(REDIS_URL, qname, url, tmp_path / "b.log", partitions=4,
                            claim_after=1, batch_size=100)
            procs.append(second)
            try:
                # the second one takes over (inside a transaction: once the server ends
                # the paused one's, timeout + 1 s = 31 s later)
                cache.flush(timeout=20 if not inside else 90)
            except cw.StoreError as exc:
                raise AssertionError(f"{exc}; second worker: {second.stderr()[-1500:]!r}; "
                                     f"sessions: {_sessions()}") from exc
        finally:
            os.killpg(first.proc.pid, signal.SIGCONT)
        for i in range(100):                        # more work once the first is back
            cache.incr(f"c{i % 10}", 1)
        cache.flush(timeout=60)
        rows = pg_rows(POSTGRES_DSN, pg_table)
    assert rows == {f"c{j}": 310 for j in range(10)}
    assert second.terminate() == 0, second.stderr()
    assert first.terminate() == 0, first.stderr()
    assert "Traceback" not in first.stderr() + second.stderr()


def test_a_worker_paused_between_batches_is_taken_over_and_does_no_harm(
        qname: str, pg_table: str, tmp_path: Path, procs: list[Any]) -> None:
    require("redis")
    _paused_takeover(qname, pg_table, tmp_path, procs, inside=False)


@pytest.mark.slow
def test_a_worker_paused_inside_its_store_transaction_is_taken_over(
        qname: str, pg_table: str, tmp_path: Path, procs: list[Any]) -> None:
    require("redis")
    _paused_takeover(qname, pg_table, tmp_path, procs, inside=True)


def test_a_new_worker_starts_while_another_session_has_the_table_in_a_transaction(
        qname: str, pg_table: str, tmp_path: Path, procs: list[Any]) -> None:
    import psycopg

    require("redis")
    url = pg_store_url(pg_table)
    policy = cw.WriteBack(queue=REDIS_URL, queue_name=qname, partitions=2,
                          flush_in_process=False)
    with cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table), policy=policy) as cache:
        reporting = psycopg.connect(POSTGRES_DSN)      # a long report: a read transaction
        try:
            reporting.execute(f'SELECT count(*) FROM "{pg_table}"').fetchall()
            worker = Worker(REDIS_URL, qname, url, tmp_path / "w.log", partitions=2,
                            claim_after=5)
            procs.append(worker)
            cache.set("a", 1)
            try:
                cache.flush(timeout=6)
            finally:
                reporting.rollback()
            assert pg_rows(POSTGRES_DSN, pg_table) == {"a": 1}
        finally:
            reporting.close()
