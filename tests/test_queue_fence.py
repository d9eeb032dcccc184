"""The fence of the distributed write-behind (issue 13): a consumer paused longer than
``claim_after`` after its last lock check loses its partition to another consumer, which
applies the same entries; when the paused one resumes, the store refuses its batch
(``JournalMark.after``, checked in the batch's transaction) instead of applying it a
second time. Real Redis, real stores (SQLite, PostgreSQL, MariaDB), real threads."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw
from cacheway.queue import Consumer, Names
from cacheway.queue.layout import GROUP
from cacheway.stores.base import Applied, JournalMark, Op
from conftest import wait_until
from queue_trials import PARTITIONS, Draining, start_worker
from services import REDIS_URL
from shared_stores import SHARED_STORES

pytestmark = pytest.mark.services


@pytest.fixture(params=list(SHARED_STORES))
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Any]:
    return SHARED_STORES[request.param](tmp_path)


class _PausesInApply:
    """A store whose first ``apply`` waits for ``go`` before it writes: the consumer is
    past its lock check, as a process stopped by a long GC pause or SIGSTOP would be."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.entered = threading.Event()
        self.go = threading.Event()
        self.refused: list[BaseException] = []
        self.low_water_marks = store.low_water_marks
        self.fenced_marks = store.fenced_marks
        self.versioned = store.versioned

    def apply(self, ops: Sequence[Op], *, journal: JournalMark | None = None
              ) -> list[Applied]:
        if not self.entered.is_set():
            self.entered.set()
            assert self.go.wait(30), "the test never let the paused consumer go on"
        try:
            return list(self._store.apply(ops, journal=journal))
        except cw.StaleMarkError as exc:
            self.refused.append(exc)
            raise

    def applied_state(self, journal_id: str) -> tuple[int, dict[tuple[str, str], int]]:
        result: tuple[int, dict[tuple[str, str], int]] = self._store.applied_state(journal_id)
        return result


def _drain(raw: Any, names: Names, store: Any, timeout: float = 20.0) -> Consumer:
    consumer = Consumer(raw, names, store, claim_after=0.3, name="successor")
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: not any(raw.xlen(names.stream(n))
                                       for n in range(names.partitions)), timeout), \
            "the successor did not drain the queue"
    finally:
        stop.set()
        thread.join(10)
    return consumer


def test_a_paused_consumer_never_applies_a_batch_twice(
        make_store: Callable[[], Any], raw: Any, qname: str) -> None:
    """Counters are where a batch applied twice shows: 20 increments of 3 must read 60,
    not 120, after the paused consumer resumes with the batch its successor applied."""
    store = make_store()
    cache = cw.Cache(store=make_store(), policy=cw.WriteBack(
        queue=REDIS_URL, queue_name=qname, partitions=1, flush_in_process=False,
        claim_after=0.3))
    paused_store = _PausesInApply(store)
    names = Names(qname, 1)
    try:
        for _ in range(20):
            cache.incr("n", 3)
        cache.set("s", "v")
        # No heartbeat (step() called by hand, not run()): its lock lapses after 0.3 s.
        paused = Consumer(raw, names, paused_store, claim_after=0.3, name="paused")
        paused.ensure_groups()
        paused.claim()
        assert paused.held() == [0]
        stepping = threading.Thread(target=paused.step, daemon=True)
        stepping.start()
        assert paused_store.entered.wait(10), "the paused consumer never reached apply"
        successor = _drain(raw, names, store)
        assert successor.applied == 21
        assert store.load_many(["n", "s"]) == {"n": 60, "s": "v"}
        paused_store.go.set()
        stepping.join(10)
        assert not stepping.is_alive()
        assert store.load_many(["n", "s"]) == {"n": 60, "s": "v"}  # not 120
        assert len(paused_store.refused) == 1, "the stale batch was not refused"
        assert paused.applied == 0
        assert paused.counters.flush_errors == 0  # a takeover is not a store failure
        assert paused.held() == []  # its lock is the successor's: it let the partition go
        assert raw.xpending(names.stream(0), GROUP)["pending"] == 0
        # the queue goes on: a later write lands once
        cache.incr("n", 1)
        _drain(raw, names, store)
        assert store.load("n") == 61
    finally:
        paused_store.go.set()
        cache.close()
        store.close()


@pytest.mark.slow
def test_a_worker_stopped_past_claim_after_applies_nothing_twice(
        tmp_path: Path, raw: Any, qname: str) -> None:
    """``cacheway worker`` processes stopped with SIGSTOP while increments stream in, for
    longer than claim_after; another worker takes their partitions over; then SIGCONT.
    A stopped worker is most often in the middle of a batch: when it resumes, that batch
    must be refused, never applied on top of its successor's. Counters must be exact."""
    db = str(tmp_path / "s.db")
    cw.SQLiteStore(db).close()
    cache = cw.Cache(store=cw.SQLiteStore(db), policy=cw.WriteBack(
        queue=REDIS_URL, queue_name=qname, partitions=PARTITIONS, flush_in_process=False,
        claim_after=1.0))
    writes = 0
    stop = threading.Event()

    def write() -> None:
        nonlocal writes
        while not stop.is_set():
            cache.incr(f"c{writes % 13}")
            writes += 1

    log = (tmp_path / "workers.log").open("wb")
    workers = [start_worker(REDIS_URL, qname, db, stderr=log)]
    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        for _ in range(4):
            assert wait_until(lambda: raw.zcard("{" + qname + "}:consumers") >= 1, 30)
            time.sleep(0.3)  # the worker is busy with the stream of increments
            stopped = workers[-1]
            stopped.send_signal(signal.SIGSTOP)
            workers.append(start_worker(REDIS_URL, qname, db, stderr=log))
            time.sleep(2.5)  # past claim_after: the new worker took the partitions over
            stopped.send_signal(signal.SIGCONT)
            time.sleep(0.3)
            stopped.send_signal(signal.SIGTERM)
        stop.set()
        writer.join(10)
        store = cw.SQLiteStore(db)
        try:
            Draining(raw, qname, store).drain(timeout=60)
            total = sum(store.load_many([f"c{i}" for i in range(13)]).values())
        finally:
            store.close()
        fenced = (tmp_path / "workers.log").read_text(errors="replace").count(
            "was applied past this consumer's batch")
        print(f"{writes} increments, {fenced} stale batches refused")  # how often it bit
        assert total == writes, f"{total - writes} increments applied twice"
    finally:
        stop.set()
        for w in workers:
            if w.poll() is None:
                w.send_signal(signal.SIGCONT)
                w.kill()
            w.wait(10)
        log.close()
        cache.close()


class _Down:
    """A store that is down: every apply fails (applied_state still answers)."""

    low_water_marks = fenced_marks = versioned = True

    def __init__(self, store: Any) -> None:
        self._store = store
        self.attempts = 0

    def apply(self, ops: Sequence[Op], *, journal: JournalMark | None = None
              ) -> list[Applied]:
        self.attempts += 1
        raise cw.StoreError("the store is down")

    def applied_state(self, journal_id: str) -> tuple[int, dict[tuple[str, str], int]]:
        result: tuple[int, dict[tuple[str, str], int]] = self._store.applied_state(journal_id)
        return result


class _CountsSteps(Consumer):
    steps = 0

    def step(self) -> int:
        self.steps += 1
        return super().step()


def test_a_consumer_waiting_out_a_store_outage_does_not_spin(
        tmp_path: Path, raw: Any, qname: str) -> None:
    """Between retries (backoff 0.5 s) nothing is due: the consumer must sleep, not run
    empty passes as fast as the CPU allows (it held a core, and the GIL of every thread
    of its process, for the whole outage). A sleeping loop makes a few dozen passes in
    the second watched; a spinning one makes tens of thousands."""
    store = cw.SQLiteStore(tmp_path / "s.db")
    cache = cw.Cache(store=cw.SQLiteStore(tmp_path / "s.db"), policy=cw.WriteBack(
        queue=REDIS_URL, queue_name=qname, partitions=2, flush_in_process=False))
    down = _Down(store)
    consumer = _CountsSteps(raw, Names(qname, 2), down, retry=cw.Retry(base_delay=0.5,
                                                                       max_delay=0.5))
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    try:
        cache.set_many({f"k{i}": i for i in range(20)})  # both partitions have entries
        thread.start()
        assert wait_until(lambda: down.attempts >= 2), "the consumer never tried the store"
        before = consumer.steps
        time.sleep(1.0)
        passes = consumer.steps - before
        assert passes < 500, f"{passes} passes in one second of backoff: it spins"
        assert down.attempts <= 8  # retried with the backoff, not at every pass
    finally:
        stop.set()
        thread.join(10)
        cache.close()
        store.close()


class _OnePartition:
    """A queue of one partition, a cache writing to it and a consumer ``c1`` stepped by
    hand: claimed, its own (empty) pending list read, so from now on it reads ">"."""

    def __init__(self, tmp_path: Path, raw: Any, qname: str) -> None:
        self.store = cw.SQLiteStore(tmp_path / "s.db")
        self.cache = cw.Cache(store=cw.SQLiteStore(tmp_path / "s.db"), policy=cw.WriteBack(
            queue=REDIS_URL, queue_name=qname, partitions=1, flush_in_process=False))
        self.names = Names(qname, 1)
        self.stream = self.names.stream(0)
        self.consumer = Consumer(raw, self.names, self.store, name="c1")
        self.consumer.ensure_groups()
        self.consumer.claim()
        self.consumer.step()

    def close(self) -> None:
        self.consumer.release_all()
        self.cache.close()
        self.store.close()


@pytest.fixture
def one(tmp_path: Path, raw: Any, qname: str) -> Iterator[_OnePartition]:
    queue = _OnePartition(tmp_path, raw, qname)
    yield queue
    queue.close()


def test_entries_delivered_by_a_read_whose_reply_was_lost_are_applied_in_order(
        one: _OnePartition, raw: Any) -> None:
    """A read whose reply was lost (Redis restarted, a connection dropped) delivered
    entries into the consumer's pending list that it never saw; a client that sends the
    read again gets the entries after them. Applying those first would raise the
    partition's low water past the unseen ones, and trim them: lost increments."""
    for _ in range(10):
        one.cache.incr("n")
    # the lost reply: four entries delivered to c1, never seen by it
    assert len(raw.xreadgroup(GROUP, "c1", {one.stream: ">"}, count=4)[0][1]) == 4
    for _ in range(20):
        one.consumer.step()
        if not raw.xlen(one.stream):
            break
    assert one.store.load("n") == 10
    assert raw.xpending(one.stream, GROUP)["pending"] == 0


def test_entries_of_a_lost_reply_are_applied_when_nothing_follows_them(
        one: _OnePartition, raw: Any) -> None:
    """The same lost reply, and then no write comes: no batch will show the consumer
    what waits in its pending list, so it reads the list again each claim round (once a
    second in ``run``); a Redis restart left a kill -9 trial's queue undrained before."""
    for _ in range(3):
        one.cache.incr("n")
    assert len(raw.xreadgroup(GROUP, "c1", {one.stream: ">"}, count=3)[0][1]) == 3
    for _ in range(3):
        one.consumer.step()  # nothing new to read
    assert one.store.load("n") is None
    one.consumer.claim()  # the next round
    one.consumer.step()
    assert one.store.load("n") == 3, "the unseen entries were not applied"
    assert raw.xpending(one.stream, GROUP)["pending"] == 0
