"""Guarantee 2 for ``WriteBack(queue=...)`` (issue 13): an acknowledged write is never
lost and never applied twice, whoever dies with kill -9.

* Redis itself, started here with ``appendonly yes, appendfsync always``, killed at a
  random moment while an app process writes and a consumer applies, then restarted on
  the same directory: every acknowledged write reaches the store with the last
  acknowledged value per key, counters exact.
* App processes and ``cacheway worker`` processes killed at random moments: after the
  queue drained, the same, and every shared cached copy equals the store's row.

How the app processes record their writes and how the store is checked against them:
``queue_trials.py``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw
from cacheway.backends.redis import RedisBackend
from queue_servers import RedisServer, need_redis_server
from queue_trials import Draining, check, expect, process_kill_trial, start_child, wait_ready
from services import REDIS_URL


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test alone, fsyncing every write to its AOF; killed afterwards."""
    need_redis_server()
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def _redis_kill_trial(server: RedisServer, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    db = str(tmp_path / "s.db")
    cw.SQLiteStore(db).close()
    qname, prefix = f"dq{seed}", f"dp{seed}:"
    client = server.client()
    store = cw.SQLiteStore(db)
    consumer = Draining(client, qname, store)  # applies while the child writes
    log = tmp_path / f"child{seed}.log"
    child = start_child(server.url, qname, prefix, db, log, seed, "a")
    try:
        wait_ready(log, child)
        time.sleep(rng.uniform(0.1, 0.8))
        server.kill9()
        assert child.wait(60) == 3  # its write in flight failed: it stopped there
        server.start()  # the same directory: the AOF is replayed
        consumer.drain()
        backend = RedisBackend(server.url, prefix=prefix)
        try:
            check(store, lambda key: backend.get(":" + key), expect([log]))
        finally:
            backend.close()
    finally:
        if child.poll() is None:
            child.kill()
        consumer.stop.set()
        store.close()
        client.close()


def test_guarantee2_queue_redis_kill_9_loses_no_acknowledged_write(
        own_redis: RedisServer, tmp_path: Path) -> None:
    _redis_kill_trial(own_redis, tmp_path, 1)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 12))
def test_guarantee2_queue_redis_kill_9_trials(own_redis: RedisServer, tmp_path: Path,
                                              seed: int) -> None:
    _redis_kill_trial(own_redis, tmp_path, seed)


def _process_kill_trial(raw: Any, qname: str, prefix: str, tmp_path: Path, seed: int,
                        rounds: int) -> None:
    backend = RedisBackend(REDIS_URL, prefix=prefix)
    try:
        process_kill_trial(raw, REDIS_URL, qname, prefix,
                           lambda key: backend.get(":" + key),  # the default namespace
                           tmp_path, seed, rounds)
    finally:
        backend.close()


def test_guarantee2_queue_app_and_worker_processes_killed_with_kill_9(
        raw: Any, qname: str, prefix: str, tmp_path: Path) -> None:
    _process_kill_trial(raw, qname, prefix, tmp_path, 1, rounds=1)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 7))
def test_guarantee2_queue_kill_9_trials_of_apps_and_workers(
        raw: Any, qname: str, prefix: str, tmp_path: Path, seed: int) -> None:
    _process_kill_trial(raw, qname, prefix, tmp_path, seed, rounds=3)
