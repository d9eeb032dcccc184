"""expire= on a queue= write-back namespace (issue 13): each write's expiry stamp travels
in its stream entry to the store's ``expires_at`` column; the copy in Redis lives until
the stamp at the latest; reads before the consumer applied the write (this process's
pending write, the shared copy, another process) return the default after it; a counter
whose data ended starts again from 0, in the cache and in the store.

Stamps are checked against the time of the write (no sleeping) wherever the test can;
where the data must have ended, the tests poll for it. A read that must see the data is
only checked when it finished before the earliest possible end (one-sided, no timing
assert that can flake).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw
from cacheway.backends.redis import RedisBackend
from cacheway.queue import Names
from cacheway.queue.entries import parse_entry
from services import REDIS_URL, unique
from test_queue import _drain

SHORT = 0.5  # seconds: data that must end during a test
LONG = 100.0  # seconds: data that must not


def _cache(store: Any, qname: str, prefix: str | None, *, in_process: bool = False
           ) -> cw.Cache:
    backend = RedisBackend(REDIS_URL, prefix=prefix) if prefix is not None else None
    return cw.Cache(store=store, backend=backend, policy=cw.WriteBack(
        queue=REDIS_URL, queue_name=qname, partitions=2, flush_in_process=in_process,
        claim_after=1.0))


def _row(db: str, key: str, ns: str = "s") -> tuple[str, float | None]:
    """(value, expires_at) of a row of the SQLite table, expired or not."""
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT value, expires_at FROM cacheway WHERE namespace = ? AND "
                           "key = ?", (ns, key)).fetchone()
    assert row is not None, f"no row of {key!r}"
    return bytes(row[0]).decode(), row[1]


def _poll(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_expire_is_taken_on_the_queue(tmp_path: Path, qname: str, autoclose: Any) -> None:
    # (refused with ConfigError before the queue carried stamps)
    cache = autoclose(_cache(cw.SQLiteStore(str(tmp_path / "s.db")), qname, None))
    s = cache.namespace("s", expire=60)
    assert s.expire == 60
    assert "s" in cache.namespaces()


@pytest.mark.parametrize("shared", [False, True], ids=["memory-backend", "redis-backend"])
def test_each_write_carries_its_stamp_to_the_store(tmp_path: Path, raw: Any, qname: str,
                                                   prefix: str, shared: bool) -> None:
    db = str(tmp_path / "s.db")
    store = cw.SQLiteStore(db)
    cache = _cache(cw.SQLiteStore(db), qname, prefix if shared else None)
    try:
        s = cache.namespace("s", expire=LONG)
        t0 = time.time()
        s.set("a", {"u": 1})
        s.set_many({"b": 2, "c": 3})
        assert s.incr("n", 5) == 5
        t1 = time.time()
        s.set("a", {"u": 2})  # coalesced: the last write's stamp wins
        assert s.incr("n", 2) == 7  # an add to live data: folded into the first
        t2 = time.time()
        entries = [parse_entry(i, f) for n in range(2)
                   for i, f in raw.xrange(Names(qname, 2).stream(n))]
        assert len(entries) == 6
        assert all(t0 + LONG <= e.expires_at <= t2 + LONG for e in entries
                   if e.expires_at is not None)
        assert all(e.expires_at is not None for e in entries)
        _drain(raw, qname, store, 2)
        rows = store.fetch("s", ["a", "b", "c", "n"])
        assert {k: store.serializer.loads(r.payload) for k, r in rows.items()} == {
            "a": {"u": 2}, "b": 2, "c": 3, "n": 7}
        for key in ("b", "c"):
            assert t0 + LONG <= rows[key].expires_at <= t1 + LONG
        for key in ("a", "n"):
            assert t1 + LONG <= rows[key].expires_at <= t2 + LONG
    finally:
        store.close()
        cache.close()


def test_the_stamp_reaches_postgres_through_the_in_process_consumer(
        qname: str, postgres_dsn: str, autoclose: Any) -> None:
    store = cw.PostgresStore(postgres_dsn, table=unique("qexp"))
    cache = autoclose(_cache(store, qname, None, in_process=True))
    s = cache.namespace("s", expire=LONG)
    t0 = time.time()
    s.set("a", "v")
    s.incr("n", 3)
    t1 = time.time()
    cache.flush(timeout=20)
    rows = store.fetch("s", ["a", "n"])
    assert set(rows) == {"a", "n"}
    assert all(t0 + LONG <= r.expires_at <= t1 + LONG for r in rows.values()
               if r.expires_at is not None)
    assert all(r.expires_at is not None for r in rows.values())
    assert store.load("n", namespace="s") == 3


def test_the_shared_copy_lives_until_the_stamp_at_most(tmp_path: Path, raw: Any,
                                                       qname: str, prefix: str) -> None:
    db = str(tmp_path / "s.db")
    store = cw.SQLiteStore(db)
    cache = _cache(cw.SQLiteStore(db), qname, prefix)
    try:
        s = cache.namespace("s", expire=LONG)
        s.set("a", "v", ttl=3 * LONG)  # a ttl longer than the data: capped
        s.set("b", "v", ttl=LONG / 10)
        # Pending: pinned until the stamp (past a shorter ttl), not for good.
        assert 0 < raw.pttl(f"{prefix}s:a") <= LONG * 1000
        assert LONG * 100 < raw.pttl(f"{prefix}s:b") <= LONG * 1000
        _drain(raw, qname, store, 2)
        # Settled: min(ttl, what is left until the stamp).
        assert 0 < raw.pttl(f"{prefix}s:a") <= LONG * 1000
        assert 0 < raw.pttl(f"{prefix}s:b") <= LONG * 100
    finally:
        store.close()
        cache.close()


@pytest.mark.parametrize("shared", [False, True], ids=["memory-backend", "redis-backend"])
def test_reads_end_at_the_stamp_before_the_consumer_applied(
        tmp_path: Path, raw: Any, qname: str, prefix: str, shared: bool) -> None:
    db = str(tmp_path / "s.db")
    store = cw.SQLiteStore(db)
    cache = _cache(cw.SQLiteStore(db), qname, prefix if shared else None)
    other = cw.Cache(store=cw.SQLiteStore(db), backend=RedisBackend(REDIS_URL, prefix=prefix))
    try:
        s = cache.namespace("s", expire=SHORT)
        t0 = time.time()
        s.set("a", "v")
        assert s.incr("n", 5) == 5
        got = (s.get("a"), s.get_many(["a", "n"]))
        if time.time() < t0 + SHORT:  # read before the end: it sees the writes
            assert got == ("v", {"a": "v", "n": 5})
        if shared:
            assert raw.pttl(f"{prefix}s:a") != -1  # not pinned for good
        # After the stamp: this process's pending writes and the shared copy read as
        # absent.
        _poll(lambda: s.get("n") is None)  # (written after "a": it ends after it)
        assert s.get("a", "gone") == "gone"
        assert s.get_many(["a", "n"]) == {}
        if shared:
            assert other.namespace("s").get_many(["a", "n"]) == {}
        s.invalidate_many(["a", "n"])  # the copies are gone: the pending writes answer
        assert s.get("n") is None
        # A counter whose data ended starts again from 0.
        t1 = time.time()
        assert s.incr("n", 2) == 2
        t2 = time.time()
        assert store.load("n", namespace="s") is None  # nothing applied yet
        _drain(raw, qname, store, 2)
        # The store applied the first add (ended, past its stamp) and then the second
        # from 0: the batch was cut between them (folded they would make 7).
        value, end = _row(db, "n")
        assert value == "2"
        assert end is not None
        assert t1 + SHORT <= end <= t2 + SHORT
        _, end = _row(db, "a")
        assert end is not None
        assert t0 + SHORT <= end <= t1 + SHORT
        assert s.get("a") is None
    finally:
        store.close()
        other.close()
        cache.close()


def test_a_counter_that_ended_counts_from_0_with_the_consumer_running(
        tmp_path: Path, raw: Any, qname: str, prefix: str) -> None:
    db = str(tmp_path / "s.db")
    store = cw.SQLiteStore(db)
    cache = _cache(cw.SQLiteStore(db), qname, prefix, in_process=True)
    try:
        s = cache.namespace("s", expire=SHORT)
        assert s.incr("n", 5) == 5
        cache.flush(timeout=20)
        _poll(lambda: s.get("n") is None)
        assert store.load("n", namespace="s") is None
        assert s.incr("n") == 1
        cache.flush(timeout=20)
        assert _row(db, "n")[0] == "1"
    finally:
        store.close()
        cache.close(timeout=5)


def test_entries_without_a_stamp_still_parse_and_apply(tmp_path: Path, raw: Any,
                                                       qname: str) -> None:
    """An entry queued by a version without ``x`` (or by a namespace without expire=):
    the consumer applies it as never expiring."""
    db = str(tmp_path / "s.db")
    store = cw.SQLiteStore(db)
    names = Names(qname, 2)
    n = names.partition("s", "k")
    raw.xadd(names.stream(n), {"n": "s", "k": "k", "o": 0, "p": b'"v"', "d": 0, "v": 7,
                               "t": "", "c": ""})
    raw.xadd(names.stream(n), {"n": "s", "k": "c", "o": 2, "p": b"", "d": 3, "v": 8,
                               "t": "", "c": ""})
    try:
        _drain(raw, qname, store, 2)
        assert _row(db, "k") == ('"v"', None)
        assert _row(db, "c") == ("3", None)
    finally:
        store.close()
