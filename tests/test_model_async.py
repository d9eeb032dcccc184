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
from collections.abc import Callable
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import cacheway as cw
from faultproxy import FaultProxy
from model_harness import ABSENT, BACKENDS, STORES, _drop_pg_table, same
from services import POSTGRES_DSN, REDIS_URL, require, unique
from test_model_writeback import HEALTH, WriteBackModel, _run, values


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


# every backend and store kind is run on the thread front (test_model_writeback.py); here
# the default run takes one of each, the slow run all of them
DEFAULT_PAIRS = {("memory-2", "callback"), ("memory", "sqlite"), ("redis", "postgresql"),
                 ("two-level", "sqlite")}
PAIRS = [(b, s) if (b, s) in DEFAULT_PAIRS else pytest.param(b, s, marks=pytest.mark.slow)
         for b in BACKENDS for s in STORES]


@pytest.mark.parametrize(("backend_kind", "store_kind"), PAIRS)
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


# -- write-through on the loop (PostgresStore's async path) through store outages ------------

WT_KEYS = ["k0", "k1", "k2"]


class WriteThroughLoopModel(RuleBasedStateMachine):
    """An AsyncCache writing through to PostgreSQL on its event loop (psycopg's async
    pool, redis.asyncio: ``cacheway._aio_write``) while the server goes down and comes
    back behind a proxy.

    The model is a set of possible values per key: a write that returned is the key's
    only value; one that raised leaves the key either as it was or as written (the
    outcome of a failed write is unknown) until the store, read directly, says which.
    After every step with the store up, the store holds the model, and the AsyncCache
    and a second, synchronous Cache over the same Redis and table read it (no stale
    copy survives a failed write; guarantee 4 across fronts); with the store down a read
    answers one of the key's possible values or raises StoreError (as may a read just
    after the store came back, while the pool reconnects)."""

    kind: ClassVar[str]
    proxy: ClassVar[FaultProxy]
    table: ClassVar[str]
    prefix: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        through_proxy = self.proxy_dsn()
        self.store = cw.PostgresStore(through_proxy, table=self.table, timeout=0.3)
        self.direct = cw.PostgresStore(POSTGRES_DSN, table=self.table)
        self.direct.delete_many(WT_KEYS)
        if self.kind == "redis":
            self.backend: Any = cw.RedisBackend(REDIS_URL, prefix=self.prefix)
            self.backend.clear()
            self.other: cw.Cache | None = cw.Cache(
                store=self.direct, backend=cw.RedisBackend(REDIS_URL, prefix=self.prefix),
                policy=cw.WriteThrough())
        else:
            self.backend = cw.MemoryBackend(max_entries=2)
            self.other = None
        self.acache = cw.AsyncCache(store=self.store, backend=self.backend,
                                    policy=cw.WriteThrough())
        self.c = OnLoop(self.acache, self.loop)
        self.possible: dict[str, list[Any]] = {k: [ABSENT] for k in WT_KEYS}
        # writes that raised since the key's last write that returned: a timed-out one
        # may still land (its statement ends in the background) until the next write of
        # the key, which waits for it
        self.unknown: dict[str, list[Any]] = {k: [] for k in WT_KEYS}
        self.down = False
        self.trace: list[str] = []

    @classmethod
    def proxy_dsn(cls) -> str:
        parts = urlsplit(POSTGRES_DSN)
        host = parts.netloc.rsplit("@", 1)
        auth = host[0] + "@" if len(host) == 2 else ""
        return urlunsplit(parts._replace(netloc=f"{auth}127.0.0.1:{cls.proxy.port}"))

    def _write(self, what: str, changes: dict[str, Any], call: Callable[[], Any]) -> Any:
        self.trace.append(f"{what} {changes} (store {'down' if self.down else 'up'})")
        try:
            result = call()
        except cw.StoreError:
            self.trace.append("  raised StoreError")
            for k, v in changes.items():
                self.possible[k] = [*self.possible[k], v]  # as it was, or as written
                self.unknown[k].append(v)
            return None
        assert not self.down, f"{what} returned while the store was down" + self.recent()
        for k, v in changes.items():
            self.possible[k] = [v]
            self.unknown[k] = []
        return result

    def recent(self) -> str:
        return "; steps: " + " | ".join(self.trace[-15:])

    @rule(key=st.sampled_from(WT_KEYS), value=values)
    def set(self, key: str, value: Any) -> None:
        self._write("set", {key: value}, lambda: self.c.set(key, value))

    @rule(items=st.dictionaries(st.sampled_from(WT_KEYS), values, min_size=1, max_size=3))
    def set_many(self, items: dict[str, Any]) -> None:
        self._write("set_many", dict(items), lambda: self.c.set_many(items))

    @rule(key=st.sampled_from(WT_KEYS))
    def delete(self, key: str) -> None:
        self._write("delete", {key: ABSENT}, lambda: self.c.delete(key))

    @rule(ks=st.lists(st.sampled_from(WT_KEYS), min_size=1, max_size=3, unique=True))
    def delete_many(self, ks: list[str]) -> None:
        self._write("delete_many", dict.fromkeys(ks, ABSENT), lambda: self.c.delete_many(ks))

    @precondition(lambda self: not self.down)
    @rule(key=st.sampled_from(WT_KEYS), delta=st.integers(-3, 3))
    def incr(self, key: str, delta: int) -> None:
        self.settle()
        if self.unknown[key]:
            return  # a timed-out write of the key may still land: no exact total to expect
        current = self.possible[key][0]
        current = 0 if current is ABSENT else current
        if type(current) is not int:
            with pytest.raises(cw.CachewayError):
                self.c.incr(key, delta)
            return
        got = self._write("incr", {key: current + delta}, lambda: self.c.incr(key, delta))
        assert got == current + delta, f"incr({key!r}, {delta}) = {got}" + self.recent()

    @rule(ks=st.lists(st.sampled_from(WT_KEYS), min_size=1, max_size=3, unique=True))
    def get_many(self, ks: list[str]) -> None:
        try:
            got = self.c.get_many(ks)
        except cw.StoreError:
            return  # a store down (or its pool still reconnecting): never a wrong answer
        for k in ks:
            self.check(k, got.get(k, ABSENT), "get_many")

    @rule()
    def store_down(self) -> None:
        self.proxy.down()
        self.down = True
        self.trace.append("store down")

    @rule()
    def store_up(self) -> None:
        self.proxy.forward()
        self.down = False
        self.trace.append("store up")

    def settle(self) -> None:
        """With the store up: resolve each key's possible values by the store's row."""
        content = self.direct.load_many(WT_KEYS)
        for k in WT_KEYS:
            row = content.get(k, ABSENT)
            allowed = [*self.possible[k], *self.unknown[k]]
            assert any(same(row, v) for v in allowed), (
                f"store {k} = {row!r}, never written ({allowed})" + self.recent())
            self.possible[k] = [row, *self.unknown[k]]

    def check(self, k: str, got: Any, how: str) -> None:
        assert any(same(got, v) for v in self.possible[k]), (
            f"{how}({k!r}) = {got!r}, possible {self.possible[k]}" + self.recent())

    @invariant()
    def reads_follow_the_store(self) -> None:
        missing = object()
        if not self.down:
            self.settle()
        # With the store down a miss waits for the store's timeout: one key per step then
        for k in WT_KEYS if not self.down else [WT_KEYS[len(self.trace) % len(WT_KEYS)]]:
            try:
                got = self.c.get(k, missing)
            except cw.StoreError:
                continue  # a store down (or its pool still reconnecting): not a wrong answer
            self.check(k, ABSENT if got is missing else got, "get")
            if self.other is not None and not self.down:
                seen = self.other.get(k, missing)
                self.check(k, ABSENT if seen is missing else seen, "other Cache get")

    def teardown(self) -> None:
        try:
            self.proxy.forward()
            self.c.close()
        finally:
            try:
                if self.other is not None:
                    self.other.close()
                if self.kind == "redis":
                    self.backend.clear()
                    self.backend.close()
                self.store.close()
                self.direct.close()
            finally:
                self.loop.close()


@pytest.mark.parametrize(("kind", "examples"), [
    ("redis", 8),
    pytest.param("redis", 30, marks=pytest.mark.slow),
    pytest.param("memory-2", 12, marks=pytest.mark.slow)])
def test_write_through_on_the_loop_matches_a_model_through_store_outages(kind: str,
                                                                         examples: int) -> None:
    # guarantees 2 and 4 on AsyncCache's loop path: a write that returned is in the
    # store; a failed one leaves no copy that disagrees with the store
    require("postgresql")
    if kind == "redis":
        require("redis")
    table = unique("wtloop")
    with FaultProxy(urlsplit(POSTGRES_DSN).port or 5432) as proxy:
        machine = type(f"WTLoop_{kind}".replace("-", "_"), (WriteThroughLoopModel,),
                       {"kind": kind, "proxy": proxy, "table": table,
                        "prefix": unique("wtloop") + ":"})
        try:
            run_state_machine_as_test(machine, settings=settings(
                max_examples=examples, stateful_step_count=25, deadline=None,
                suppress_health_check=HEALTH))
        finally:
            _drop_pg_table(POSTGRES_DSN, table)
