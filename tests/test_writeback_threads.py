"""Write-back under threads on the embedded default: writers, readers, counters, deletes
and flushes racing a flusher that keeps taking small batches, over an unbounded and a
tiny LRU memory backend. Guarantees 1, 3 and 4 in one process."""

from __future__ import annotations

import random
import sqlite3
import threading

import orjson
import pytest

import cacheway as cw
from cacheway.backends.base import MISS

THREADS = 6
OPS = 2500


def _stored(db_path: str) -> dict[str, object]:
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute("SELECT key, value FROM cacheway WHERE namespace = ''").fetchall()
    return {key: orjson.loads(value) for key, value in rows}


@pytest.mark.parametrize("max_entries", [None, 8])
def test_guarantee4_threads_mixed_ops_agree_with_the_store_after_flush(
    db_path: str, autoclose, max_entries: int | None
) -> None:
    backend = cw.MemoryBackend(max_entries=max_entries)
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path), backend=backend,
                               policy=cw.WriteBack(max_delay=0.001, batch_size=5)))
    shared = [f"shared:{i}" for i in range(6)]  # every thread sets and deletes these
    counters = [f"count:{i}" for i in range(3)]  # every thread only increments these
    errors: list[str] = []
    added = [[0] * len(counters) for _ in range(THREADS)]
    last_own: list[dict[str, int]] = [{} for _ in range(THREADS)]
    accepted = [0] * THREADS  # set/delete/incr calls each thread made

    def worker(t: int) -> None:
        rng = random.Random(t)
        own = [f"own:{t}:{i}" for i in range(4)]  # only this thread writes these
        for i in range(OPS):
            roll = rng.random()
            if roll < 0.35:
                key = rng.choice(own)
                cache.set(key, i)
                last_own[t][key] = i
                accepted[t] += 1
            elif roll < 0.55:
                cache.set(rng.choice(shared), [t, i])
                accepted[t] += 1
            elif roll < 0.62:
                cache.delete(rng.choice(shared))
                accepted[t] += 1
            elif roll < 0.75:
                c = rng.randrange(len(counters))
                cache.incr(counters[c], 1)
                added[t][c] += 1
                accepted[t] += 1
            elif roll < 0.98:
                key = rng.choice(own)
                got = cache.get(key)
                if got != last_own[t].get(key):
                    errors.append(f"{key}: last wrote {last_own[t].get(key)!r}, read {got!r}")
                    return
            else:
                cache.flush(timeout=30)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not any(th.is_alive() for th in threads)
    assert not errors, errors[:5]
    cache.flush(timeout=30)
    assert cache.pending() == 0

    stored = _stored(db_path)
    for t in range(THREADS):
        for key, value in last_own[t].items():
            assert stored[key] == value, f"{key}: store has {stored.get(key)!r}, last write {value}"
    for c, key in enumerate(counters):
        assert stored[key] == sum(added[t][c] for t in range(THREADS))
    for key in shared + counters + [k for own in last_own for k in own]:
        copy = backend.peek(":" + key)
        assert copy is MISS or copy == stored.get(key), f"{key}: cache {copy!r} vs store"
        assert cache.get(key) == stored.get(key)
    assert cache.stats().writes == sum(accepted)
