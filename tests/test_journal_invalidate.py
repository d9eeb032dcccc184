"""A journal replay refreshes the shared cache: the copies of the keys it writes are
dropped from the backend, so no process keeps serving what the store no longer holds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import cacheway as cw
from cacheway.backends.base import MISS
from services import unique

SRC = str(Path(__file__).resolve().parents[1] / "src")

WORKER_A = """
import sys, time, cacheway as cw
db, wal, url, prefix, ns = sys.argv[1:6]
cache = cw.Cache(store=cw.SQLiteStore(db), backend=cw.RedisBackend(url, prefix=prefix),
                 policy=cw.WriteBack(max_delay=3600, journal=wal, fsync="always"))
view = cache.namespace(ns) if ns else cache
for _ in range(5):
    view.incr("n")
view.set("s", "from A")
print("acked", flush=True)
time.sleep(3600)
"""


@pytest.mark.parametrize("ns", ["", "views"])
def test_replay_of_a_killed_worker_drops_the_stale_shared_copies(
    tmp_path: Path, redis_url: str, ns: str
) -> None:
    # issue 10 item 8
    db, wal, prefix = tmp_path / "app.db", tmp_path / "a.wal", f"{unique('replay')}:"
    worker_a = subprocess.Popen(
        [sys.executable, "-c", WORKER_A, str(db), str(wal), redis_url, prefix, ns],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": SRC},
    )
    assert worker_a.stdout is not None
    assert worker_a.stdout.readline() == "acked\n"
    os.kill(worker_a.pid, signal.SIGKILL)  # 5 acknowledged increments, none in the store
    worker_a.wait()
    worker_a.stdout.close()

    store, backend = cw.SQLiteStore(db), cw.RedisBackend(redis_url, prefix=prefix)
    try:
        # worker B: its own journal; adds 1 and flushes: the store's total (1) goes to Redis
        b = cw.Cache(store=store, backend=backend,
                     policy=cw.WriteBack(journal=str(tmp_path / "b.wal")))
        view_b = b.namespace(ns) if ns else b
        view_b.incr("n")
        view_b.flush()
        assert backend.get(f"{ns}:n") == 1
        assert store.load("n", namespace=ns) == 1
        # A restarts: its journal replays the 5 increments into the store
        a = cw.Cache(store=store, backend=cw.RedisBackend(redis_url, prefix=prefix),
                     policy=cw.WriteBack(journal=str(wal)))
        view_a = a.namespace(ns) if ns else a
        assert store.load("n", namespace=ns) == 6
        assert store.load("s", namespace=ns) == "from A"
        assert backend.get(f"{ns}:n") is MISS, "the shared copy kept the value before replay"
        assert view_b.get("n") == 6  # B reads the store's total, not its old copy
        assert view_a.get("n") == 6
        assert view_b.get("s") == "from A"
        a.close()
        b.close()
    finally:
        backend.clear()
        store.close()


def test_replay_invalidates_each_batch_after_the_store_has_it(tmp_path: Path) -> None:
    # issue 10 item 8: also the keys the store applied before the crash (their copies may
    # never have been stamped)
    from cacheway.stores.base import SET, JournalMark, Op
    from cacheway.writeback.journal import Journal
    from cacheway.writeback.recovery import replay

    wal, store = tmp_path / "app.wal", cw.SQLiteStore(tmp_path / "app.db")
    with Journal(wal, fsync="always") as journal:
        done = journal.append("ns", "done", SET, b"0")
        for i in range(5):
            journal.append("ns", f"k{i}", SET, str(i).encode())
        store.apply([Op("ns", "done", SET, b"0")], journal=JournalMark(journal.id, 0, [done]))
        journal.sync()
    calls: list[list[tuple[str, str]]] = []

    def invalidate(keys: list[tuple[str, str]]) -> None:
        for ns, key in keys:
            assert store.load(key, namespace=ns) is not None, "invalidated before applied"
        calls.append(keys)

    with Journal(wal) as journal:
        replay(journal, store, batch_size=2, invalidate=invalidate)
    assert calls == [[("ns", "k0"), ("ns", "k1")], [("ns", "k2"), ("ns", "k3")],
                     [("ns", "k4")], [("ns", "done")]]
    store.close()
