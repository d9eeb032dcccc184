"""AsyncCache (issue 12): no cache call blocks the event loop; journals across fronts."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw
from test_aio_support import LagMeter, SlowStore

# -- no call blocks the loop -----------------------------------------------------------

@pytest.mark.parametrize("policy", ["write-through", "write-back", "write-around"])
def test_a_300ms_store_does_not_hold_the_event_loop(policy: str) -> None:
    # issue 12 item 6: the loop-lag test (a correctness bound, not a benchmark)
    slow = SlowStore(0.3)
    slow.data = {f"r{i}": i for i in range(4)}
    pol = {"write-through": cw.WriteThrough(), "write-around": cw.WriteAround(),
           "write-back": cw.WriteBack(max_delay=0.01)}[policy]

    async def main() -> None:
        acache = cw.AsyncCache(store=slow.store, policy=pol)  # synchronous: before the ticker
        async with LagMeter() as lag:
            reads = [acache.get(f"r{i}") for i in range(4)]
            writes = [acache.set(f"w{i}", i) for i in range(4)]
            results = await asyncio.gather(*reads, *writes)
            assert results[:4] == [0, 1, 2, 3]
            await acache.get("r0")
            await acache.set("w0", 10)
            await acache.delete("w1")
            await acache.flush()
            await acache.close()
        assert lag.max_gap < 0.150, f"the loop was held {lag.max_gap * 1000:.0f} ms"
        assert lag.ticks > 20
        assert slow.data["w0"] == 10
        assert "w1" not in slow.data

    asyncio.run(main())


def test_journal_fsync_always_from_16_tasks_is_durable(tmp_path: Path,
                                                       make_store: Any) -> None:
    # issue 12 item 7: every acknowledged write is in the journal (the store is down, so
    # nothing is flushed); a new cache replays them all into a working store
    journal = str(tmp_path / "app.wal")
    down = make_store()
    down.failing = True

    async def main() -> None:
        acache = cw.AsyncCache(store=down.store, policy=cw.WriteBack(
            journal=journal, fsync="always", max_delay=0.01, retry=cw.Retry(base_delay=0.01)))

        async def worker(w: int) -> None:
            for i in range(10):
                await acache.set(f"w{w}:{i}", i)
            await acache.incr("total", 10)

        async with LagMeter() as lag:
            await asyncio.gather(*(worker(w) for w in range(16)))
        assert acache.stats().journal_syncs >= 1
        assert lag.max_gap < 0.150
        with pytest.raises(cw.StoreError):
            await acache.close(timeout=0.2)  # the journal keeps what is left

    asyncio.run(main())
    up = make_store()
    with cw.Cache(store=up.store, policy=cw.WriteBack(journal=journal, fsync="always")):
        pass
    expected: dict[str, Any] = {f"w{w}:{i}": i for w in range(16) for i in range(10)}
    expected["total"] = 160
    assert up.data == expected


# Guarantee 8 on AsyncCache: no cache call blocks the loop. The bound is a correctness
# bound, not a benchmark: a callback that blocks 300 ms on the loop shows a lag of 300 ms
# or more; off the loop the lag is a few ms (bench/async.py: p99 under 5 ms). The shared
# 2-core test machine, loaded by other test runs (load average 5-6), showed an idle
# loop's ticker gaps up to 31 ms and these tests up to 115 ms once: 150 ms keeps a 2x
# separation from the blocking time without failing on a busy box. The tests also check
# that no callback ran on the loop's thread (not a timing).
BLOCK = 0.3
LAG_BOUND = 0.15


@pytest.mark.parametrize("policy", ["write-through", "write-back", "write-around"])
def test_guarantee8_no_cache_call_blocks_the_loop_behind_a_300ms_callback(
        policy: str) -> None:
    slow = SlowStore(BLOCK)
    slow.data = {"r0": 0, "r1": 1, "d": 2, "n": 5}
    pol = {"write-through": cw.WriteThrough(), "write-around": cw.WriteAround(),
           "write-back": cw.WriteBack(max_delay=0.01)}[policy]

    async def main() -> None:
        loop_thread = threading.get_ident()
        # built before the ticker starts: the constructor is synchronous by contract (a
        # cold first import of a lazily loaded module on a fresh clone held it 158 ms)
        acache = cw.AsyncCache(store=slow.store, policy=pol)
        async with LagMeter() as lag:
            started = time.perf_counter()
            async with acache:
                got = await asyncio.gather(
                    acache.get("r0"), acache.get_many(["r1", "none"]), acache.incr("n"),
                    acache.set("w", 1), acache.set_many({"a": 1, "b": 2}),
                    acache.delete("d"), acache.get("missing", "dflt"))
                assert got[:2] == [0, {"r1": 1}]
                assert got[6] == "dflt"
                await acache.flush()
            elapsed = time.perf_counter() - started
        # the callbacks did block (each call sleeps 300 ms), but never on the loop's thread
        assert elapsed >= BLOCK
        assert slow.threads
        assert loop_thread not in slow.threads
        assert lag.ticks > 10
        assert lag.max_gap < LAG_BOUND, (
            f"the loop was held {lag.max_gap * 1000:.0f} ms by a {BLOCK * 1000:.0f} ms call")

    asyncio.run(main())
    assert {k: slow.data.get(k) for k in ("w", "a", "d", "n")} == {
        "w": 1, "a": 1, "d": None, "n": 6}


def test_guarantee8_write_back_fsync_always_from_100_tasks_does_not_block_the_loop(
        tmp_path: Path) -> None:
    slow = SlowStore(BLOCK)
    journal = str(tmp_path / "g8.wal")

    async def main() -> None:
        loop_thread = threading.get_ident()
        acache = cw.AsyncCache(store=slow.store, policy=cw.WriteBack(
            journal=journal, fsync="always", max_delay=0.01))  # synchronous: before the ticker
        async with LagMeter() as lag:

            async def task(t: int) -> None:
                for i in range(5):
                    await acache.set(f"t{t}:{i}", i)
                await acache.incr("total")

            await asyncio.gather(*(task(t) for t in range(100)))
            assert acache.stats().journal_syncs >= 1
            await acache.close()
        assert slow.threads
        assert loop_thread not in slow.threads
        assert lag.max_gap < LAG_BOUND, f"the loop was held {lag.max_gap * 1000:.0f} ms"

    asyncio.run(main())
    assert slow.data["total"] == 100
    assert all(slow.data[f"t{t}:{i}"] == i for t in range(100) for i in range(5))


# -- a journal written by one front replays in the other ---------------------------------
def _writes() -> dict[str, Any]:
    return {f"k{i}": {"i": i} for i in range(20)}


@pytest.mark.parametrize("writer", ["async", "thread"])
def test_a_journal_written_by_one_front_replays_in_the_other(
        tmp_path: Path, make_store: Any, writer: str) -> None:
    # The writer's store is down, so nothing reaches it: the writes live only in the
    # journal when the writer closes (close times out and says so). The other front
    # opens the same journal path over a working store and replays every write.
    journal = str(tmp_path / "x.wal")
    policy = {"journal": journal, "fsync": "always", "max_delay": 0.01,
              "retry": cw.Retry(base_delay=0.01)}
    down = make_store()
    down.failing = True
    expected = dict(_writes(), n=7)

    async def write_async() -> None:
        acache = cw.AsyncCache(store=down.store, policy=cw.WriteBack(**policy))
        await acache.set_many(_writes())
        await acache.incr("n", 7)
        await acache.set("gone", 1)
        await acache.delete("gone")
        with pytest.raises(cw.StoreError):
            await acache.close(timeout=0.2)

    def write_thread() -> None:
        cache = cw.Cache(store=down.store, policy=cw.WriteBack(**policy))
        cache.set_many(_writes())
        cache.incr("n", 7)
        cache.set("gone", 1)
        cache.delete("gone")
        with pytest.raises(cw.StoreError):
            cache.close(timeout=0.2)

    up = make_store()
    if writer == "async":
        asyncio.run(write_async())
        with cw.Cache(store=up.store, policy=cw.WriteBack(journal=journal)) as cache:
            assert cache.get("k3") == {"i": 3}
    else:
        write_thread()

        async def read_async() -> None:
            async with cw.AsyncCache(store=up.store,
                                     policy=cw.WriteBack(journal=journal)) as acache:
                assert await acache.get("k3") == {"i": 3}
                assert await acache.get("n") == 7

        asyncio.run(read_async())
    assert down.data == {}
    assert up.data == expected
