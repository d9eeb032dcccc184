"""The kill -9 trials of the queue (``test_queue_durability.py``, ``test_queue_cluster.py``):
app processes (``queue_child.py``) record each write before making it and "ack" after it
returned, in a file flushed line by line; :func:`expect` turns the records into what the
store may hold (the write in flight at a kill may or may not have landed: both are
allowed, counters up to one more per child) and :func:`check` compares."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

import cacheway as cw
from cacheway.backends.base import MISS
from cacheway.queue import Consumer, Names
from cacheway.queue.layout import GROUP
from queue_child import PARTITIONS

HERE = Path(__file__).resolve().parent
SRC = str(HERE.parent / "src")


@dataclass
class Expected:
    """What the store may hold after the children's writes: per own key, the values
    with and without the write in flight; per counter, the bounds."""

    values: dict[str, set[Any]] = field(default_factory=dict)
    low: dict[str, int] = field(default_factory=dict)
    high: dict[str, int] = field(default_factory=dict)
    acked: int = 0


def read_log(path: Path) -> tuple[list[tuple[str, str, int]], tuple[str, str, int] | None]:
    """(acknowledged writes, the write in flight) from a child's record."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    lines = text.split("\n")
    lines.pop()  # "" after the last newline, or a line cut by the kill
    acked: list[tuple[str, str, int]] = []
    in_flight: tuple[str, str, int] | None = None
    for line in lines:
        if line == "ack":
            assert in_flight is not None
            acked.append(in_flight)
            in_flight = None
        elif line != "ready" and not line.startswith("error "):
            op, key, value = line.split()
            in_flight = (op, key, int(value))
    return acked, in_flight


def expect(logs: list[Path]) -> Expected:
    out = Expected()
    for log in logs:
        acked, in_flight = read_log(log)
        out.acked += len(acked)
        last: dict[str, Any] = {}
        for op, key, value in acked:
            if op == "incr":
                out.low[key] = out.low.get(key, 0) + 1
                out.high[key] = out.high.get(key, 0) + 1
            else:
                last[key] = value if op == "set" else None
        for key, value in last.items():
            out.values[key] = {value}
        if in_flight is not None:
            op, key, value = in_flight
            if op == "incr":
                out.low.setdefault(key, 0)
                out.high[key] = out.high.get(key, 0) + 1
            else:
                out.values.setdefault(key, {None}).add(value if op == "set" else None)
    return out


def check(store: Any, copy_of: Callable[[str], Any], exp: Expected) -> None:
    """0 lost, 0 applied twice, and every shared cached copy (``copy_of(key)``: the
    copy's value or MISS) is the store's row."""
    assert exp.acked > 0, "no write was acknowledged: the trial tested nothing"
    for key, allowed in exp.values.items():
        got = store.load(key)
        assert got in allowed, (key, got, allowed)
    for key, low in exp.low.items():
        got = store.load(key) or 0
        assert low <= got <= exp.high[key], (key, got, low, exp.high[key])
    for key in [*exp.values, *exp.low]:
        copy = copy_of(key)
        assert copy is MISS or copy == store.load(key), (key, copy, store.load(key))


def start_child(url: str, qname: str, prefix: str | None, db: str, log: Path, seed: int,
                tag: str) -> subprocess.Popen[bytes]:
    """An app process writing through the queue (``prefix``: its RedisBackend's; None:
    a memory backend)."""
    return subprocess.Popen([sys.executable, str(HERE / "queue_child.py"), url, qname,
                             prefix or "-", db, str(log), str(seed), tag])


def wait_ready(log: Path, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not (log.exists() and log.read_text(encoding="utf-8").startswith("ready\n")):
        assert proc.poll() is None, f"the app child exited ({proc.returncode})"
        assert time.monotonic() < deadline, "the app child did not start"
        time.sleep(0.01)


class Draining:
    """A consumer thread of the queue, stopped by :meth:`drain` once every partition
    stream is empty (nothing accepted is left unapplied)."""

    def __init__(self, client: Any, qname: str, store: Any) -> None:
        self.client = client
        self.names = Names(qname, PARTITIONS)
        self.consumer = Consumer(client, self.names, store, claim_after=1.0, batch_size=50)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.consumer.run, args=(self.stop,),
                                       daemon=True)
        self.thread.start()

    def state(self) -> str:
        """What the streams hold and who holds the partitions (for a failure's message)."""
        parts = []
        for n in range(PARTITIONS):
            stream = self.names.stream(n)
            pending = self.client.xpending(stream, GROUP)
            parts.append(f"p{n}: {self.client.xlen(stream)} entries, pending "
                         f"{pending['pending']} {pending['consumers']}, lock "
                         f"{self.client.get(self.names.lock(n))!r}")
        return (f"consumer {self.consumer.name} (thread alive: {self.thread.is_alive()}) "
                f"holds {self.consumer.held()}; " + "; ".join(parts))

    def drain(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if not any(self.client.xlen(self.names.stream(n))
                               for n in range(PARTITIONS)):
                        break
                except redis.ConnectionError:
                    pass  # the restarted Redis is still loading
                assert time.monotonic() < deadline, \
                    f"the consumer did not drain the queue: {self.state()}"
                time.sleep(0.02)
        finally:
            self.stop.set()
            self.thread.join(15)
        assert not self.thread.is_alive()
        for n in range(PARTITIONS):
            assert self.client.xlen(self.names.dead(n)) == 0  # nothing refused


def start_worker(url: str, qname: str, db: str, stderr: Any = subprocess.DEVNULL
                 ) -> subprocess.Popen[bytes]:
    """``cacheway worker`` on the queue, applying to the SQLite store ``db`` (its log
    lines to ``stderr``: a file, or DEVNULL)."""
    return subprocess.Popen(
        [sys.executable, "-m", "cacheway.cli", "worker", "--queue", url,
         "--queue-name", qname, "--store", f"sqlite:///{db}", "--partitions",
         str(PARTITIONS), "--claim-after", "1", "--batch-size", "20", "--status-every", "0"],
        env=dict(os.environ, PYTHONPATH=SRC), stderr=stderr)


def process_kill_trial(client: Any, url: str, qname: str, prefix: str | None,
                       copy_of: Callable[[str], Any], tmp_path: Path, seed: int,
                       rounds: int) -> None:
    """``rounds`` times: two app processes and two workers, each killed with kill -9 at
    its own random moment; then one consumer drains what is left."""
    rng = random.Random(seed)
    db = str(tmp_path / "s.db")
    cw.SQLiteStore(db).close()
    logs: list[Path] = []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for rnd in range(rounds):
            workers = [start_worker(url, qname, db) for _ in range(2)]
            procs += workers
            deadline = time.monotonic() + 60
            while client.zcard("{" + qname + "}:consumers") < 2:  # both consume now
                assert time.monotonic() < deadline, "the workers did not start"
                time.sleep(0.01)
            apps = []
            for tag in "ab":
                log = tmp_path / f"r{rnd}{tag}.log"
                logs.append(log)
                apps.append(start_child(url, qname, prefix, db, log,
                                        seed * 100 + len(logs), f"r{rnd}{tag}"))
                wait_ready(log, apps[-1])
            procs += apps
            victims = [*apps, *workers]
            moments = sorted((rng.uniform(0.05, 1.0), i) for i in range(len(victims)))
            started = time.monotonic()
            for at, i in moments:
                time.sleep(max(0.0, started + at - time.monotonic()))
                victims[i].send_signal(signal.SIGKILL)
            for proc in victims:
                proc.wait(30)
        store = cw.SQLiteStore(db)
        try:
            Draining(client, qname, store).drain()
            check(store, copy_of, expect(logs))
        finally:
            store.close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


