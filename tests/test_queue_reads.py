"""Reads of a queue= write-back cache while writes wait in the streams: this process
answers its pending writes (also when the shared copy is gone), and a fill that loaded
the store's older row before the write reached the store does not outlive the write."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw
from cacheway.backends.redis import RedisBackend
from cacheway.queue import Consumer, Names
from services import REDIS_URL


def _cache(db: str, qname: str, prefix: str | None) -> cw.Cache:
    backend = RedisBackend(REDIS_URL, prefix=prefix) if prefix is not None else None
    return cw.Cache(store=cw.SQLiteStore(db), backend=backend, policy=cw.WriteBack(
        queue=REDIS_URL, queue_name=qname, partitions=2, flush_in_process=False,
        claim_after=1.0))


def _drain(raw: Any, qname: str, db: str, batch_size: int = 500) -> None:
    names = Names(qname, 2)
    store = cw.SQLiteStore(db)
    consumer = Consumer(raw, names, store, batch_size=batch_size)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    try:
        while any(raw.xlen(names.stream(n)) for n in range(2)):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(10)
        store.close()


@pytest.mark.parametrize("shared", [False, True], ids=["memory-backend", "redis-backend"])
def test_pending_writes_answer_reads_when_the_copy_is_gone(
        tmp_path: Path, raw: Any, qname: str, prefix: str, shared: bool) -> None:
    db = str(tmp_path / "s.db")
    store = cw.SQLiteStore(db)
    store.save_many({"a": "old", "b": "old", "c": "old"})
    cache = _cache(db, qname, prefix if shared else None)
    try:
        cache.set("a", "new")
        cache.delete("b")
        cache.invalidate_many(["a", "b", "c"])  # the copies are gone, the writes wait
        assert cache.get("a") == "new"
        assert cache.get("b") is None
        assert cache.get_many(["a", "b", "c"]) == {"a": "new", "c": "old"}
        assert store.load("a") == "old"
        _drain(raw, qname, db)
        assert store.load_many(["a", "b", "c"]) == {"a": "new", "c": "old"}
        assert cache.get_many(["a", "b", "c"]) == {"a": "new", "c": "old"}
    finally:
        store.close()
        cache.close()


def test_a_fill_of_the_older_row_does_not_outlive_the_write(
        tmp_path: Path, raw: Any, qname: str, prefix: str) -> None:
    """Another process reads the key while its write waits and the copy was dropped: it
    loads and caches the store's older row. Once the write is applied the consumer
    removes that copy, so reads then answer the write."""
    db = str(tmp_path / "s.db")
    store = cw.SQLiteStore(db)
    store.save_many({"k": "old"})
    writer = _cache(db, qname, prefix)
    other = cw.Cache(store=cw.SQLiteStore(db), backend=RedisBackend(REDIS_URL, prefix=prefix))
    try:
        writer.set("k", "new")
        writer.invalidate("k")
        assert other.get("k") == "old"  # the store has not got the write yet
        assert other.get("k") == "old"  # ... and the old row was cached
        _drain(raw, qname, db)
        assert store.load("k") == "new"
        assert other.get("k") == "new"
        assert writer.get("k") == "new"
    finally:
        store.close()
        other.close()
        writer.close()


def test_the_copy_gets_its_ttl_back_once_applied(tmp_path: Path, raw: Any, qname: str,
                                                  prefix: str) -> None:
    db = str(tmp_path / "s.db")
    cache = _cache(db, qname, prefix)
    try:
        cache.set("k", "v", ttl=300)
        assert raw.pttl(f"{prefix}:k") == -1  # pinned while the write waits
        _drain(raw, qname, db)
        assert 0 < raw.pttl(f"{prefix}:k") <= 300_000
    finally:
        cache.close()


def test_every_copy_of_a_large_batch_is_settled(tmp_path: Path, raw: Any, qname: str,
                                                prefix: str) -> None:
    """One batch of 2000 entries settles its copies a chunk per script call: every copy
    gets its ttl back, and an older copy a fill left is removed, in every chunk."""
    db = str(tmp_path / "s.db")
    store = cw.SQLiteStore(db)
    store.save_many({f"k{i}": "old" for i in range(0, 3000, 250)})
    cache = _cache(db, qname, prefix)
    other = cw.Cache(store=cw.SQLiteStore(db), backend=RedisBackend(REDIS_URL, prefix=prefix))
    try:
        cache.set_many({f"k{i}": i for i in range(3000)}, ttl=300)
        stale = [f"k{i}" for i in range(0, 3000, 250)]
        cache.invalidate_many(stale)
        assert other.get_many(stale) == dict.fromkeys(stale, "old")  # older fills
        assert raw.pttl(f"{prefix}:k1") == -1  # pinned while the write waits
        _drain(raw, qname, db, batch_size=2000)
        ttls = [raw.pttl(f"{prefix}:k{i}") for i in range(3000) if i % 250]
        assert all(0 < t <= 300_000 for t in ttls)
        assert other.get_many(stale) == {k: int(k[1:]) for k in stale}
    finally:
        store.close()
        other.close()
        cache.close()
