"""The Batcher of AsyncCache (calls that never wait for I/O, run back to back by one
worker thread: write-back over a process-local backend) across event loops."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from cacheway._aio_batch import Batcher


def test_a_call_queued_from_the_next_loop_is_answered_on_that_loop() -> None:
    """Regression: the worker thread started for one loop's calls answered every call it
    took on that loop, also those queued meanwhile from the next loop (one asyncio.run
    per request or test): their callers waited forever."""
    pool = ThreadPoolExecutor(2)
    batcher = Batcher(pool)
    started, release = threading.Event(), threading.Event()

    def first() -> str:
        started.set()
        release.wait(10)
        return "first"

    gone = asyncio.new_event_loop()  # a request's loop: its call runs, then the loop ends
    batcher.submit(gone, first, ())
    assert started.wait(10)
    gone.close()

    async def next_request() -> str:
        # Queued while the thread still runs `first`: that thread takes it next.
        future = batcher.submit(asyncio.get_running_loop(), lambda: "second", ())
        release.set()
        return await asyncio.wait_for(future, 5)

    try:
        assert asyncio.run(next_request()) == "second"
    finally:
        release.set()
        pool.shutdown(wait=True)
