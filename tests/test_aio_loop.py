"""AsyncCache (issue 12): no cache call blocks the event loop; journals across fronts."""

from __future__ import annotations

import asyncio
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
        async with LagMeter() as lag:
            acache = cw.AsyncCache(store=slow.store, policy=pol)
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
