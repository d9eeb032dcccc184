"""``_aio_path.close_with_loop``: what a store path builds for one event loop (a pool,
an engine) is closed when that loop shuts down, not left to the garbage collector."""

from __future__ import annotations

import asyncio

from cacheway._aio_path import close_with_loop, stop_closing


class Pool:
    def __init__(self) -> None:
        self.closed_on: list[asyncio.AbstractEventLoop] = []

    async def close(self) -> None:
        await asyncio.sleep(0)  # a close that awaits, as psycopg_pool's does
        self.closed_on.append(asyncio.get_running_loop())


def test_a_pool_is_closed_on_its_own_loop_when_asyncio_run_ends() -> None:
    pool = Pool()
    loops: list[asyncio.AbstractEventLoop] = []

    async def main() -> None:
        loops.append(asyncio.get_running_loop())
        close_with_loop(pool.close, "test-closer")
        await asyncio.sleep(0.01)
        assert pool.closed_on == [], "closed while its loop still runs"

    asyncio.run(main())
    assert pool.closed_on == loops


def test_a_pool_closed_before_the_loop_ends_is_not_closed_again() -> None:
    pool = Pool()

    async def main() -> None:
        closer = close_with_loop(pool.close, "test-closer")
        await pool.close()
        stop_closing(closer)

    asyncio.run(main())
    assert len(pool.closed_on) == 1


def test_a_task_that_survives_its_cancellation_is_ended_by_the_close() -> None:
    # psycopg_pool's workers catch the CancelledError of a connection attempt and wait
    # for their next job: asyncio.run waited for them forever. The close ends them.
    jobs: asyncio.Queue[str] = asyncio.Queue()

    async def worker() -> None:
        while True:
            try:
                if await jobs.get() == "stop":
                    return
            except asyncio.CancelledError:
                continue  # as the pool's worker does

    async def close() -> None:
        jobs.put_nowait("stop")

    async def main() -> None:
        asyncio.get_running_loop().create_task(worker())
        close_with_loop(close, "test-closer")
        await asyncio.sleep(0)

    asyncio.run(main())  # returns: the close stopped the worker
