"""Guarantee 2 with real crashes: a child writing through a journalled write-back cache
(fsync="always") is killed with SIGKILL at a random moment; reopening the cache replays
the journal, and the store must hold every acknowledged write."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import cacheway as cw
from cacheway.testing.guarantees_processes import (
    acknowledged,
    check_replayed,
    run_and_kill,
)


def _run_and_kill(tmp: Path, seed: int) -> list[str]:
    """The shipped crash child (cacheway.testing.crash_child) on memory + SQLite."""
    return run_and_kill([f"sqlite:///{tmp / 'app.db'}", "memory://", str(tmp / "app.wal"),
                         str(seed)], seed)


def _check(tmp: Path, lines: list[str]) -> int:
    acked, in_flight = acknowledged(lines)
    # Reopening the cache replays the journal into the store.
    store = cw.SQLiteStore(tmp / "app.db")
    cache = cw.Cache(store=store, policy=cw.WriteBack(journal=str(tmp / "app.wal"),
                                                      fsync="always"))
    cache.close()
    check_replayed(store, acked, in_flight)
    store.close()
    return len(acked)


@pytest.mark.parametrize("seed", range(20))
def test_guarantee2_no_lost_acknowledged_write_after_kill9(tmp_path: Path, seed: int) -> None:
    lines = _run_and_kill(tmp_path, seed)
    assert _check(tmp_path, lines) > 0, "the child acknowledged nothing before the kill"


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(100, 200))
def test_guarantee2_kill9_soak(tmp_path: Path, seed: int) -> None:
    lines = _run_and_kill(tmp_path, seed)
    _check(tmp_path, lines)


def test_guarantee2_replay_twice_is_idempotent(tmp_path: Path) -> None:
    """Crash after the store committed a batch but before the journal checkpoint: the
    records are replayed on top of a store that already has them; counters must not
    double, and replaying again changes nothing."""
    from cacheway.stores.base import ADD, SET, JournalMark, Op
    from cacheway.writeback.journal import Journal
    from cacheway.writeback.recovery import replay

    db, wal = tmp_path / "app.db", tmp_path / "app.wal"
    store = cw.SQLiteStore(db)
    journal = Journal(wal, fsync="always")
    seqs = [journal.append("", "c", ADD, b"", 5), journal.append("", "k", SET, b'"v1"'),
            journal.append("", "c", ADD, b"", 2)]
    for s in seqs:
        journal.wait(s)
    # the store applied the first two (coalesced as a flusher would) and recorded marks
    store.apply([Op("", "c", ADD, None, 5), Op("", "k", SET, b'"v1"')],
                journal=JournalMark(journal.id, 0, [seqs[0], seqs[1]]))
    journal.close()  # no checkpoint: as if killed right after the store commit
    journal = Journal(wal)
    report = replay(journal, store)
    assert store.load("c") == 7
    assert store.load("k") == "v1"
    assert report.skipped == 2
    journal.close()
    journal = Journal(wal)
    assert replay(journal, store).applied == 0
    assert store.load("c") == 7
    journal.close()


def test_guarantee2_namespaces_replay_their_own_journals(tmp_path: Path) -> None:
    db, wal = tmp_path / "app.db", tmp_path / "app.wal"
    code = (
        "import os, cacheway as cw\n"
        f"cache = cw.Cache(store=cw.SQLiteStore({str(db)!r}), policy=cw.WriteBack("
        f"max_delay=3600, journal={str(wal)!r}, fsync='always'))\n"
        "views = cache.namespace('views')\n"
        "cache.set('a', 1); views.set('a', 2); views.incr('n', 5)\n"
        "os._exit(0)  # a crash: nothing flushed\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    store = cw.SQLiteStore(db)
    assert store.load("a") is None, "the child flushed nothing"
    policy = cw.WriteBack(journal=str(wal), fsync="always")
    with cw.Cache(store=store, policy=policy) as cache:
        assert store.load("a") == 1  # the default namespace's journal replayed on open
        views = cache.namespace("views")  # ...and this one's when the namespace opens
        assert store.load("a", namespace="views") == 2
        assert store.load("n", namespace="views") == 5
        assert views.get("n") == 5
    store.close()
