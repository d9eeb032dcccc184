"""The write-back model of tests/test_model_writeback.py, run on the asyncio front.

``AsyncCache`` answers hits on the event loop, batches ``get_many`` there, and hands writes
to the same engines (with the real flusher thread) through its own paths: the same
hypothesis state machine (set / set_many / burst / delete / incr / get_many / flush while
the store goes down and up and a tiny memory backend evicts) drives an ``AsyncCache``
instead of a ``Cache``, each call awaited on one event loop, and checks the same things:
every read follows a plain-dict model of the accepted writes, a flush puts the model in
the store, and every key's writes reach the store in the order they were accepted.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from hypothesis import settings

import cacheway as cw
from model_harness import BACKENDS, STORES
from test_model_writeback import FAST_RETRY, HEALTH, WriteBackModel, _run


class OnLoop:
    """An ``AsyncCache`` (or one of its namespaces) called from synchronous code: each
    coroutine method runs to its end on ``loop``; everything else passes through."""

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._loop.run_until_complete(attr(*args, **kwargs))

        return call


class AsyncWriteBackModel(WriteBackModel):
    """WriteBackModel with an AsyncCache in place of the Cache, on a loop of its own."""

    loop: asyncio.AbstractEventLoop | None = None

    def make_front(self, policy: cw.WriteBack) -> tuple[Any, Any]:
        self.loop = asyncio.new_event_loop()
        acache = cw.AsyncCache(store=self.ts.store, backend=self.backend, policy=policy)
        front = acache if self.expire is None else acache.namespace(self.NS, expire=self.expire)
        return OnLoop(acache, self.loop), OnLoop(front, self.loop)

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            if self.loop is not None:
                self.loop.close()


@pytest.mark.parametrize("store_kind", STORES)
@pytest.mark.parametrize("backend_kind", BACKENDS)
def test_write_back_on_asyncio_matches_a_model(backend_kind: str, store_kind: str,
                                               tmp_path: Any) -> None:
    # guarantees 1, 3 and 6 on AsyncCache: reads, store content and per-key order
    _run(backend_kind, store_kind, tmp_path, settings(
        max_examples=30, stateful_step_count=40, deadline=None, suppress_health_check=HEALTH),
        base=AsyncWriteBackModel)


@pytest.mark.parametrize(("backend_kind", "store_kind"), [("memory-2", "sqlite"),
                                                          ("redis", "postgresql")])
def test_write_back_on_asyncio_with_expire_matches_a_model(backend_kind: str, store_kind: str,
                                                           tmp_path: Any) -> None:
    # the stamped write path of an AsyncNamespace with expire= (nothing ends in an hour)
    _run(backend_kind, store_kind, tmp_path, settings(
        max_examples=20, stateful_step_count=40, deadline=None, suppress_health_check=HEALTH),
        expire=3600.0, base=AsyncWriteBackModel)
