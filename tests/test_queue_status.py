"""Queue depth and lag per partition (issue 13: "stats() shows queue depth and lag per
partition"): ``QueueWriteBackEngine.queue_stats()``, ``cacheway.queue.queue_status`` and
the ``cacheway worker`` status line."""

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

import cacheway as cw
from cacheway.queue import Consumer, Names, PartitionStatus, queue_status
from services import REDIS_URL

SRC = str(Path(__file__).resolve().parent.parent / "src")


def _cache(db: str, qname: str) -> cw.Cache:
    return cw.Cache(store=cw.SQLiteStore(db), policy=cw.WriteBack(
        queue=REDIS_URL, queue_name=qname, partitions=4, flush_in_process=False,
        claim_after=1.0))


def test_a_queue_nobody_wrote_to_is_empty(raw: Any, qname: str) -> None:
    status = queue_status(raw, Names(qname, 3))  # no stream, no consumer group yet
    assert status == [PartitionStatus(qname, n, 0, 0, 0.0, 0, None) for n in range(3)]


def test_depth_and_lag_per_partition_until_a_consumer_applies(
        tmp_path: Path, raw: Any, qname: str) -> None:
    db = str(tmp_path / "s.db")
    cache = _cache(db, qname)
    store = cw.SQLiteStore(db)
    try:
        cache.set_many({f"k{i}": i for i in range(40)})
        for _ in range(10):
            cache.incr("n")
        time.sleep(0.2)
        engine = cache.engines()[0]
        status = engine.queue_stats()
        # stats() carries it, once per queue (lag grows between the two reads)
        assert [p[:4] for p in cache.stats().queue] == [p[:4] for p in status]
        other = cache.namespace("other")  # a second namespace on the same queue
        other.set("x", 1)
        assert sorted(p.partition for p in cache.stats().queue) == [0, 1, 2, 3]
        assert sum(p.depth for p in cache.stats().queue) == 51
        assert sum(p.depth for p in other.stats().queue) == 51  # the whole queue
        other.delete("x")  # (the count below is of the first 50 writes plus these two)
        status = engine.queue_stats()
        names = Names(qname, 4)
        assert [s.partition for s in status] == [0, 1, 2, 3]
        assert sum(s.depth for s in status) == 52
        for s in status:
            assert s.depth == raw.xlen(names.stream(s.partition))
            assert (s.pending, s.dead, s.consumer) == (0, 0, None)
            if s.depth:
                assert s.lag >= 0.15  # accepted at least 0.2 s ago, on Redis's clock
            else:
                assert s.lag == 0.0
        # A consumer takes the partitions and reads one batch without finishing it:
        # the entries are in its hands (pending), still counted in the depth.
        consumer = Consumer(raw, names, store, claim_after=1.0, name="status-test")
        consumer.ensure_groups()
        consumer.claim()
        raw.xreadgroup("cacheway", "status-test", {names.stream(n): ">" for n in range(4)},
                       count=1000)
        status = queue_status(raw, names)
        assert sum(s.depth for s in status) == 52
        assert sum(s.pending for s in status) == 52
        assert {s.consumer for s in status} == {"status-test"}
        for _ in range(20):
            consumer.step()
        status = queue_status(raw, names)
        assert sum(s.depth for s in status) == 0
        assert all(s.lag == 0.0 and s.pending == 0 for s in status)
        assert store.load("n") == 10
        consumer.release_all()
    finally:
        store.close()
        cache.close()


def test_the_worker_status_line_shows_depth_and_lag(tmp_path: Path, raw: Any,
                                                    qname: str) -> None:
    db = str(tmp_path / "s.db")
    cache = _cache(db, qname)
    worker = subprocess.Popen(
        [sys.executable, "-m", "cacheway.cli", "worker", "--queue", REDIS_URL,
         "--queue-name", qname, "--store", f"sqlite:///{db}", "--partitions", "4",
         "--status-every", "0.1"],
        env=dict(os.environ, PYTHONPATH=SRC), stderr=subprocess.PIPE, text=True)
    try:
        cache.set_many({f"k{i}": i for i in range(20)})
        cache.flush(timeout=60)
        assert worker.stderr is not None
        deadline = time.monotonic() + 30
        line = ""
        while "depth 0 (0 in hand), max lag 0 s, 0 dead" not in line:
            assert time.monotonic() < deadline, f"no status line of an empty queue: {line}"
            line = worker.stderr.readline()
        assert "20 applied" in line
        worker.send_signal(signal.SIGTERM)
        worker.communicate(timeout=30)
        assert worker.returncode == 0
    finally:
        if worker.poll() is None:
            worker.kill()
        cache.close()


def test_a_status_reader_answers_its_last_reading_while_redis_does_not() -> None:
    # AsyncCache.stats() on its loop waits STATS_WAIT for the queue's depth, not the Redis
    # client's socket timeout; one read at a time, however often it is asked.
    from cacheway.queue.status import StatusReader

    gate = threading.Event()
    reads: list[int] = []
    first = [PartitionStatus("q", 0, 3, 0, 0.5, 0, None)]

    def read() -> list[PartitionStatus]:
        reads.append(1)
        if len(reads) > 1:
            assert gate.wait(30)  # Redis stalled until the gate opens
        return first if len(reads) == 1 else []

    reader = StatusReader(read)
    try:
        assert reader.get(wait=30) == first
        assert reader.get(wait=0.01) == first  # stalled: the last reading
        assert reader.get(wait=0.01) == first  # shares the read under way
        assert len(reads) == 2
        gate.set()
        assert reader.get(wait=30) in ([], first)  # the stalled read's answer, or a new one
        deadline = time.monotonic() + 30
        while reader.last and time.monotonic() < deadline:
            time.sleep(0.01)
        assert reader.last == []
    finally:
        gate.set()
        reader.close()


def test_a_status_read_stuck_on_a_silent_redis_does_not_hold_up_interpreter_exit() -> None:
    # The reader's thread must not be joined at exit: a read waits up to the Redis client's
    # socket timeout (here: a read that never ends), and a process ending must not.
    script = textwrap.dedent("""
        import threading
        from cacheway.queue.status import StatusReader
        never = threading.Event()
        reader = StatusReader(lambda: [never.wait()] and [])
        assert reader.get(wait=0.05) == []
        print("asked", flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=30, env=dict(os.environ, PYTHONPATH=SRC))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "asked"
