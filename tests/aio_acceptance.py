"""Shared pieces of the AsyncCache acceptance tests (``test_aio_accept_*.py``): where a
test's data lives (``env``: the embedded default or Redis + PostgreSQL), a loop-lag ticker,
the values the JSON serializer keeps or refuses, and the reasons of the known bugs."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw
from model_harness import same  # noqa: F401 - the test modules take it from here
from services import POSTGRES_DSN, REDIS_URL, require, unique

KINDS = ["embedded", "servers"]


def run(coro: Any, timeout: float = 30.0) -> Any:
    """Run one coroutine on a fresh event loop, with a generous deadline."""

    async def main() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(main())


class Env:
    """Where a test's data lives: fresh store and backend objects over the same data."""

    def __init__(self, kind: str, tmp_path: Path, table: str | None) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.db = str(tmp_path / "app.db")
        self.table = table
        self.prefix = unique("acc") + ":"
        self._stores: list[Any] = []
        self._backends: list[Any] = []

    def store(self) -> Any:
        if self.kind == "embedded":
            s: Any = cw.SQLiteStore(self.db, table="cacheway")
        else:
            s = cw.PostgresStore(POSTGRES_DSN, table=self.table or "cacheway")
        self._stores.append(s)
        return s

    def backend(self) -> Any:
        if self.kind == "embedded":
            return cw.MemoryBackend()
        b = cw.RedisBackend(REDIS_URL, prefix=self.prefix)
        self._backends.append(b)
        return b

    def store_url(self) -> str:
        if self.kind == "embedded":
            return f"sqlite:///{self.db}"  # an absolute path: sqlite:////tmp/...
        return f"{POSTGRES_DSN}?table={self.table}"

    def backend_url(self) -> str:
        if self.kind == "embedded":
            return "memory://"
        return f"{REDIS_URL}?prefix={self.prefix}"

    def peek(self, key: str, namespace: str = "") -> Any:
        """The store's row of ``key`` as a fresh store object reads it (None: absent)."""
        s = self.store()
        return s.load(key, namespace=namespace)

    def cleanup(self) -> None:
        for s in self._stores:
            s.close()
        for b in self._backends:
            b.close()
        if self.kind == "servers":
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            names = list(client.scan_iter(match=self.prefix + "*", count=1000))
            if names:
                client.unlink(*names)
            client.close()


@pytest.fixture(params=KINDS, name="env")
def env_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    """``env``: the embedded default, or Redis + PostgreSQL (a test module imports it)."""
    table = None
    if request.param == "servers":
        require("redis")
        table = request.getfixturevalue("pg_table")
    e = Env(request.param, tmp_path, table)
    yield e
    e.cleanup()


def acache_for(env: Env, policy: Any, **kw: Any) -> cw.AsyncCache:
    return cw.AsyncCache(store=env.store(), backend=env.backend(), policy=policy, **kw)


class Ticker:
    """How long the event loop was held: the worst lateness of a 10 ms sleep. The
    interpreter's garbage collector is off meanwhile: late in a long test run a full
    collection of the heap the earlier tests left takes some 300 ms, on whichever thread
    allocates, and that pause is CPython's, not the cache's."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None
        self._gc = False

    async def _tick(self) -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, time.monotonic() - t0 - 0.01)

    async def __aenter__(self) -> Ticker:
        self._gc = gc.isenabled()
        gc.disable()
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if self._gc:
            gc.enable()


WB_MIX_BUG = ("WriteBack over a shared Redis: a set and an incr of one key from two caches end "
              "in the store by flush order, not by the order they were accepted")
WB_DELETE_BUG = ("WriteBack delete over a shared Redis: another cache reads the store's old "
                 "row until the flush (older than a value it already saw)")

BAD_KEYS: list[Any] = [1, None, b"bytes", ("t",)]

# Values the JSON serializer cannot give back with the same types (DESIGN "Value fidelity",
# docs/getting-started.md): each is refused by set with SerializationError.
UNFAITHFUL: dict[str, Any] = {
    "tuple": (1, 2),
    "datetime": datetime.datetime(2024, 1, 2, 3, 4, 5),
    "date": datetime.date(2024, 1, 2),
    "int-keys": {1: "a"},
    "nan": float("nan"),
    "inf": float("inf"),
    "too-big": 2**64,
    "surrogate": "\ud800",
    "set": {1, 2},
    "object": object(),
    "nested-tuple": {"a": [1, (2, 3)]},
    "bytes": b"raw",
}

FAITHFUL: dict[str, Any] = {
    "float": 1.0,
    "int": 1,
    "min64": -(2**63),
    "max64": 2**63 - 1,
    "text": "é☃\U0001f600",
    "empty": [[], {}, ""],
    "bools": [True, False, None],
    "mixed": {"f": 2.5, "i": 2, "l": [0.5, -3, "x"], "d": {"z": {"y": []}}},
}


async def wait_for_value(ac: Any, key: str, want: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await ac.get(key) == want:
            return True
        await asyncio.sleep(0.05)
    return bool(await ac.get(key) == want)


class DownStore:
    """A dict behind ``async def`` callbacks whose writes fail while ``down``."""

    def __init__(self) -> None:
        self.down = True
        self.data: dict[str, Any] = {}

    async def load_many(self, keys: list[str]) -> dict[str, Any]:
        return {k: self.data[k] for k in keys if k in self.data}

    async def save_many(self, items: list[tuple[str, Any]]) -> None:
        if self.down:
            raise ConnectionError("store is down")
        self.data.update(items)

    async def delete_many(self, keys: list[str]) -> None:
        if self.down:
            raise ConnectionError("store is down")
        for k in keys:
            self.data.pop(k, None)

    def store(self) -> cw.CallbackStore:
        return cw.CallbackStore(load_many=self.load_many, save_many=self.save_many,
                                delete_many=self.delete_many)
