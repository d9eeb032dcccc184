"""Distributed write-behind on Redis Streams (``WriteBack(queue=...)``, issue 13), on the
real Redis and real processes: read-your-writes, flush(), exactly-once counters after a
consumer dies between the store's commit and its XACK, takeover of a dead consumer's
partitions, per-key order across processes, and ``cacheway worker`` on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw
from cacheway.backends.base import MISS
from cacheway.backends.redis import RedisBackend
from cacheway.queue import Consumer, Names
from cacheway.queue.layout import GROUP
from services import REDIS_URL

SRC = str(Path(__file__).resolve().parent.parent / "src")


def _cache(db: str, qname: str, *, backend: Any = None, in_process: bool = True,
           partitions: int = 4, claim_after: float = 1.0) -> cw.Cache:
    return cw.Cache(store=cw.SQLiteStore(db), backend=backend, policy=cw.WriteBack(
        queue=REDIS_URL, queue_name=qname, partitions=partitions,
        flush_in_process=in_process, claim_after=claim_after))


def _drain(raw: Any, qname: str, store: Any, partitions: int = 4, *,
           claim_after: float = 1.0, timeout: float = 20.0) -> Consumer:
    """Run a consumer until every partition stream is empty."""
    names = Names(qname, partitions)
    consumer = Consumer(raw, names, store, claim_after=claim_after)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while any(raw.xlen(names.stream(n)) for n in range(partitions)):
            assert time.monotonic() < deadline, "the consumer did not drain the queue"
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(10)
    return consumer


@pytest.mark.parametrize("shared", [False, True], ids=["memory-backend", "redis-backend"])
def test_read_your_writes_before_any_consumer(tmp_path: Path, raw: Any, qname: str,
                                              prefix: str, shared: bool) -> None:
    db = str(tmp_path / "s.db")
    backend = RedisBackend(REDIS_URL, prefix=prefix) if shared else None
    cache = _cache(db, qname, backend=backend, in_process=False)
    try:
        cache.set("a", {"x": 1})
        cache.set_many({"b": 2, "c": 3})
        cache.delete("c")
        assert cache.incr("n", 5) == 5
        assert cache.incr("n", 2) == 7
        assert cache.get("a") == {"x": 1}
        assert cache.get("b") == 2
        assert cache.get("c") is None
        assert cache.get("n") == 7
        store = cw.SQLiteStore(db)
        assert store.load("a") is None  # nothing applied yet: no consumer runs
        assert cache.pending() == 4
        _drain(raw, qname, store)
        assert store.load_many(["a", "b", "c", "n"]) == {"a": {"x": 1}, "b": 2, "n": 7}
        assert cache.pending() == 0
        assert cache.get("n") == 7
        store.close()
    finally:
        cache.close()


def test_flush_waits_for_the_in_process_consumer(tmp_path: Path, qname: str,
                                                 prefix: str) -> None:
    db = str(tmp_path / "s.db")
    cache = _cache(db, qname, backend=RedisBackend(REDIS_URL, prefix=prefix))
    try:
        cache.set_many({f"k{i}": i for i in range(300)})
        for _ in range(50):
            cache.incr("hits")
        cache.flush(timeout=30)
        store = cw.SQLiteStore(db)
        assert store.load("k299") == 299
        assert store.load("hits") == 50
        assert cache.pending() == 0
        stats = cache.stats()
        assert stats.writes == 350
        assert stats.flushes >= 1
        assert stats.store_writes >= 301  # coalesced: at most one row per key per batch
        assert stats.flush_errors == 0
        store.close()
    finally:
        cache.close(timeout=10)


def test_flush_times_out_without_a_consumer(tmp_path: Path, qname: str) -> None:
    cache = _cache(str(tmp_path / "s.db"), qname, in_process=False)
    try:
        cache.set("k", 1)
        with pytest.raises(cw.StoreError, match="not applied yet"):
            cache.flush(timeout=0.2)
    finally:
        cache.close()


class _DiesBeforeAck(Consumer):
    """A consumer "killed -9" right after the store committed its batch."""

    def _ack(self, *args: Any, **kwargs: Any) -> None:
        raise SystemExit("killed between the commit and the XACK")


def _step_until_gone(consumer: Consumer) -> None:
    for _ in range(100):
        consumer.step()


def test_counters_exactly_once_when_a_consumer_dies_after_the_commit(
        tmp_path: Path, raw: Any, qname: str) -> None:
    """The store committed the batch and its mark; the consumer died before XACK. The
    consumer that takes the partition over gets the batch again and skips it."""
    db = str(tmp_path / "s.db")
    cache = _cache(db, qname, in_process=False, partitions=1, claim_after=0.3)
    store = cw.SQLiteStore(db)
    try:
        for _ in range(20):
            cache.incr("n", 3)
        cache.set("s", "v")
        names = Names(qname, 1)
        dying = _DiesBeforeAck(raw, names, store, claim_after=0.3, name="dying")
        dying.ensure_groups()
        dying.claim()
        assert dying.held() == [0]
        with pytest.raises(SystemExit):
            _step_until_gone(dying)
        assert store.load("n") == 60  # committed once
        pending = raw.xpending(names.stream(0), GROUP)
        assert pending["pending"] == 21  # delivered, never acknowledged
        # The dying consumer's lock expires after claim_after; the next one takes over,
        # claims the entries (idle > claim_after) and finds them applied.
        _drain(raw, qname, store, partitions=1, claim_after=0.3)
        assert store.load("n") == 60
        assert store.load("s") == "v"
        assert raw.xpending(names.stream(0), GROUP)["pending"] == 0
        cache.incr("n", 1)
        _drain(raw, qname, store, partitions=1, claim_after=0.3)
        assert store.load("n") == 61
    finally:
        store.close()
        cache.close()


def test_a_dead_consumers_entries_are_reclaimed(tmp_path: Path, raw: Any,
                                                qname: str) -> None:
    """A consumer that read entries and died before applying them: after claim_after
    its partition lock is gone and the next consumer claims and applies them."""
    db = str(tmp_path / "s.db")
    cache = _cache(db, qname, in_process=False, partitions=2, claim_after=0.5)
    store = cw.SQLiteStore(db)
    try:
        cache.set_many({f"k{i}": i for i in range(40)})
        names = Names(qname, 2)
        Consumer(raw, names, store).ensure_groups()
        for n in range(2):
            raw.set(names.lock(n), b"ghost", px=500)
            raw.xreadgroup(GROUP, "ghost", {names.stream(n): ">"}, count=1000)
        assert sum(raw.xpending(names.stream(n), GROUP)["pending"] for n in range(2)) == 40
        started = time.monotonic()
        _drain(raw, qname, store, partitions=2, claim_after=0.5)
        assert time.monotonic() - started >= 0.4  # not before the lock expired
        assert store.load_many([f"k{i}" for i in range(40)]) == {f"k{i}": i for i in range(40)}
    finally:
        store.close()
        cache.close()


_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {src!r})
    import cacheway as cw
    from cacheway.backends.redis import RedisBackend
    db, qname, prefix, tag = sys.argv[1:5]
    cache = cw.Cache(store=cw.SQLiteStore(db), backend=RedisBackend({url!r}, prefix=prefix),
                     policy=cw.WriteBack(queue={url!r}, queue_name=qname, partitions=4,
                                         claim_after=2.0))
    for i in range(300):
        cache.set(f"k{{i % 10}}", f"{{tag}}-{{i}}")
        cache.incr("total", 1)
    cache.flush(timeout=60)
    cache.close()
""")


def test_two_processes_per_key_order_and_counters(tmp_path: Path, raw: Any, qname: str,
                                                  prefix: str) -> None:
    db = str(tmp_path / "s.db")
    cw.SQLiteStore(db).close()
    code = _WRITER.format(src=SRC, url=REDIS_URL)
    procs = [subprocess.Popen([sys.executable, "-c", code, db, qname, prefix, tag])
             for tag in ("a", "b")]
    assert [p.wait(120) for p in procs] == [0, 0]
    store = cw.SQLiteStore(db)
    _drain(raw, qname, store)  # nothing left: each writer flushed its own writes
    backend = RedisBackend(REDIS_URL, prefix=prefix)
    try:
        assert store.load("total") == 600
        for i in range(10):
            # The last acknowledged write of each key (the shared copy) is the store's.
            copy = backend.get(f":k{i}")  # the default namespace's keys: ":" + key
            assert copy is not MISS
            assert store.load(f"k{i}") == copy
            assert copy.endswith(f"-{290 + i}")
    finally:
        backend.close()
        store.close()


def _worker(qname: str, db: str, *extra: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.Popen(
        [sys.executable, "-m", "cacheway.cli", "worker", "--queue", REDIS_URL,
         "--queue-name", qname, "--store", f"sqlite:///{db}", "--partitions", "4",
         "--claim-after", "1", "--status-every", "0", *extra],
        env=env, stderr=subprocess.PIPE)


def _wait_started(raw: Any, qname: str, worker: subprocess.Popen[bytes], n: int = 1) -> None:
    """Until ``n`` consumers joined the live set (their SIGTERM handler is installed)."""
    deadline = time.monotonic() + 30
    while raw.zcard("{" + qname + "}:consumers") < n:
        assert worker.poll() is None, "the worker exited"
        assert time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.02)


@pytest.mark.parametrize("processes", ["1", "2"])
def test_worker_applies_and_exits_0_on_sigterm(tmp_path: Path, raw: Any, qname: str,
                                               processes: str) -> None:
    db = str(tmp_path / "s.db")
    cache = _cache(db, qname, in_process=False)
    worker = _worker(qname, db, "--processes", processes)
    try:
        cache.set_many({f"k{i}": i for i in range(200)})
        for _ in range(100):
            cache.incr("n")
        cache.flush(timeout=60)
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
        assert worker.returncode == 0, err.decode()
        store = cw.SQLiteStore(db)
        assert store.load("n") == 100
        assert store.load("k199") == 199
        store.close()
        assert raw.zcard("{" + qname + "}:consumers") == 0  # left the live set
    finally:
        if worker.poll() is None:
            worker.kill()
        cache.close()


def test_sigterm_mid_stream_loses_nothing(tmp_path: Path, raw: Any, qname: str) -> None:
    """SIGTERM while entries keep coming: the worker finishes its batch and exits 0; what
    it did not take waits in the streams for the next consumer."""
    db = str(tmp_path / "s.db")
    cache = _cache(db, qname, in_process=False)
    worker = _worker(qname, db, "--batch-size", "50")
    try:
        _wait_started(raw, qname, worker)
        for i in range(1500):
            cache.incr(f"c{i % 7}")
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
        assert worker.returncode == 0, err.decode()
        store = cw.SQLiteStore(db)
        _drain(raw, qname, store)
        assert sum(store.load_many([f"c{i}" for i in range(7)]).values()) == 1500
        store.close()
    finally:
        if worker.poll() is None:
            worker.kill()
        cache.close()


@pytest.mark.slow
def test_workers_killed_with_kill_9_apply_counters_exactly_once(
        tmp_path: Path, raw: Any, qname: str) -> None:
    db = str(tmp_path / "s.db")
    cache = _cache(db, qname, in_process=False)
    writes = 0
    try:
        for _round in range(8):
            worker = _worker(qname, db, "--batch-size", "20")
            for i in range(400):
                cache.incr(f"c{i % 13}")
                writes += 1
            time.sleep(0.05 + 0.05 * (_round % 3))
            worker.kill()  # kill -9: whatever batch it had in hand
            worker.wait(10)
        store = cw.SQLiteStore(db)
        _drain(raw, qname, store, timeout=60)
        assert sum(store.load_many([f"c{i}" for i in range(13)]).values()) == writes
        store.close()
    finally:
        cache.close()


@pytest.mark.parametrize("many", [False, True], ids=["one-partition", "pipeline"])
def test_an_accept_whose_reply_was_lost_is_not_run_twice(tmp_path: Path, raw: Any,
                                                         qname: str, many: bool) -> None:
    """The connection drops after Redis ran ACCEPT, before its reply was read. redis-py
    resends a command on such a ConnectionError when retries are on: the counter's
    entry would be queued twice for one incr. The write must fail (not acknowledged) and
    be queued once."""
    import redis

    cache = _cache(str(tmp_path / "s.db"), qname, in_process=False)
    try:
        cache.set("warm", 0)  # a pooled connection, its scripts loaded
        client = cache.engines()[0].client
        conn = client.connection_pool.get_connection()
        client.connection_pool.release(conn)
        real = conn.read_response
        dropped: list[bool] = []

        def drop_once(*args: Any, **kwargs: Any) -> Any:
            reply = real(*args, **kwargs)
            if not dropped:
                dropped.append(True)
                raise redis.ConnectionError("reply lost")
            return reply

        conn.read_response = drop_once
        names = Names(qname, 4)
        before = sum(raw.xlen(names.stream(n)) for n in range(4))
        write = ((lambda: cache.set_many({f"k{i}": i for i in range(8)}))  # 4 partitions
                 if many else (lambda: cache.incr("n")))
        with pytest.raises(cw.BackendError, match="not acknowledged"):
            write()
        assert dropped
        after = sum(raw.xlen(names.stream(n)) for n in range(4))
        assert after - before <= (8 if many else 1)
    finally:
        cache.close()
