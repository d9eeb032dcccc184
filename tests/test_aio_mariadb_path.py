"""SQLAlchemyStore on MariaDB under an AsyncCache takes the loop path (issue 12): the
async engine over asyncmy, one per AsyncCache and loop, disposed of with the cache."""

from __future__ import annotations

import asyncio
import os
import random
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import cacheway as cw
from cacheway.stores.sqlalchemy import SQLAlchemyStore
from cacheway.stores.sqlalchemy.aio import SAAsyncPath, async_driver_installed
from pairs import drop_tables
from services import REDIS_URL, require, unique

pytestmark = [pytest.mark.services,
              pytest.mark.skipif(not async_driver_installed(),
                                 reason="needs asyncmy and greenlet (cacheway[sqlalchemy-async])")]


@pytest.fixture
def table(mariadb_url: str) -> Iterator[str]:
    name = unique("cwaioma")
    yield name
    drop_tables(mariadb_url, name)


class SqlThreads:
    """The thread each async path call runs on, and the sync store's calls (counted)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: SQLAlchemyStore) -> None:
        self.path_threads: set[str] = set()
        self.sync_calls = 0
        run = SAAsyncPath._run

        async def recorded(path: SAAsyncPath, *args: Any, **kwargs: Any) -> Any:
            self.path_threads.add(threading.current_thread().name)
            return await run(path, *args, **kwargs)

        monkeypatch.setattr(SAAsyncPath, "_run", recorded)
        for name in ("apply", "fetch"):
            sync = getattr(store, name)

            def counted(*args: Any, _sync: Any = sync, **kwargs: Any) -> Any:
                self.sync_calls += 1
                return _sync(*args, **kwargs)

            monkeypatch.setattr(store, name, counted)


@pytest.mark.parametrize("shared", [False, True], ids=["memory", "redis"])
def test_mariadb_writes_and_loads_on_the_loop(
        mariadb_url: str, table: str, monkeypatch: pytest.MonkeyPatch, shared: bool) -> None:
    store = SQLAlchemyStore(mariadb_url, table=table)
    store.save_many({"old": [0]})
    sql = SqlThreads(monkeypatch, store)
    backend = None
    if shared:
        require("redis")
        backend = cw.RedisBackend(REDIS_URL, prefix=unique("aioma") + ":", leases=False)

    async def main() -> None:
        async with cw.AsyncCache(store=store, backend=backend) as acache:
            await acache.set("a", {"x": 1})
            await acache.set_many({"b": 2, "c": [3]})
            await acache.set("a", {"x": 2})
            assert await acache.get("a") == {"x": 2}
            assert await acache.get("old") == [0]  # a miss, loaded on the loop
            assert await acache.get_many(["b", "c", "none"]) == {"b": 2, "c": [3]}
            if not shared:
                await acache.delete("b")  # deletes too, over a local backend
                assert await acache.get("b", "gone") == "gone"

    try:
        asyncio.run(main())
        assert sql.sync_calls == 0
        assert sql.path_threads == {threading.main_thread().name}  # the loop's thread
        assert store.load_many(["a", "b", "c"]) == (
            {"a": {"x": 2}, "b": 2, "c": [3]} if shared else {"a": {"x": 2}, "c": [3]})
        if backend is not None:
            assert backend.get(":a") == {"x": 2}
    finally:
        if backend is not None:
            backend.clear()
            backend.close()
        store.close()


def test_per_key_order_with_many_tasks(mariadb_url: str, table: str) -> None:
    store = SQLAlchemyStore(mariadb_url, table=table)
    rng = random.Random(9)
    calls = [(f"k{rng.randrange(5)}", i) for i in range(200)]

    async def main() -> None:
        async with cw.AsyncCache(store=store) as acache:
            await asyncio.gather(*(acache.set(k, v) for k, v in calls))
            last = dict(calls)
            assert await acache.get_many(list(last)) == last

    try:
        asyncio.run(main())
        assert store.load_many([k for k, _ in calls]) == dict(calls)
    finally:
        store.close()


def test_a_cancelled_set_lands_and_the_engine_is_disposed_with_the_cache(
        mariadb_url: str, table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SQLAlchemyStore(mariadb_url, table=table)
    made: list[SAAsyncPath] = []
    make = store.async_path

    def recorded() -> SAAsyncPath | None:
        path = make()
        if path is not None:
            made.append(path)
        return path

    monkeypatch.setattr(store, "async_path", recorded)

    async def main() -> None:
        async with cw.AsyncCache(store=store) as acache:
            await acache.set("k", 1)
            write = asyncio.ensure_future(acache.set("k", 2))
            await asyncio.sleep(0)
            write.cancel()
            with pytest.raises(asyncio.CancelledError):
                await write
            assert made[0].engine is not None
        assert made[0].engine is None  # disposed of by close(), after the write ended

    try:
        asyncio.run(main())
        assert len(made) == 1
        assert store.load_many(["k"]) == {"k": 2}
    finally:
        store.close()


def test_used_from_several_loops_and_after_the_store_closed(
        mariadb_url: str, table: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = SQLAlchemyStore(mariadb_url, table=table)
    sql = SqlThreads(monkeypatch, store)
    acache = cw.AsyncCache(store=store)

    async def write(i: int) -> None:
        await acache.set("k", i)

    try:
        asyncio.run(write(1))  # a loop that ends: its engine goes with it
        asyncio.run(write(2))
        assert sql.sync_calls == 0
        assert store.load_many(["k"]) == {"k": 2}
    finally:
        store.close()

    async def refused() -> None:
        with pytest.raises(cw.StoreError, match="is closed"):
            await acache.set("k", 3)
        await acache.close()

    asyncio.run(refused())


def test_without_the_driver_it_names_the_extra(mariadb_url: str, table: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    store = SQLAlchemyStore(mariadb_url, table=table)
    try:
        path = store.async_path()
        assert path is not None
        monkeypatch.setitem(sys.modules, "asyncmy", None)  # import asyncmy raises

        async def main() -> None:
            with pytest.raises(cw.ConfigError, match=r"cacheway\[sqlalchemy-async\]"):
                await path.afetch("", ["k"])

        asyncio.run(main())
    finally:
        store.close()


def test_no_async_path_where_it_does_not_apply(mariadb_url: str, table: str,
                                              tmp_path: Any) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(mariadb_url)
    given = SQLAlchemyStore(engine, table=table)
    sqlite = SQLAlchemyStore(f"sqlite:///{tmp_path / 'x.db'}", table=table)
    try:
        assert given.async_path() is None  # an engine passed in: how it connects is its own
        assert sqlite.async_path() is None  # SQLite: threads
    finally:
        given.close()
        sqlite.close()
        engine.dispose()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_builds_an_engine_of_its_own(mariadb_url: str, table: str) -> None:
    # The child runs the parent's loop object again: only the fork tells it that the
    # engine it holds is the parent's.
    store = SQLAlchemyStore(mariadb_url, table=table)
    store.save_many({"k": "v"})
    path = store.async_path()
    assert path is not None
    loop = asyncio.new_event_loop()
    try:
        assert set(loop.run_until_complete(path.afetch("", ["k"]))) == {"k"}
        parent_engine = path.engine
        assert parent_engine is not None
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                assert set(loop.run_until_complete(path.afetch("", ["k"]))) == {"k"}
                assert path.engine is not None
                assert path.engine is not parent_engine
                loop.run_until_complete(path.aclose())
                code = 0
            except BaseException as exc:
                print(f"child failed: {exc!r}", file=sys.stderr, flush=True)
            finally:
                os._exit(code)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
        assert path.engine is parent_engine
        assert set(loop.run_until_complete(path.afetch("", ["k"]))) == {"k"}
        loop.run_until_complete(path.aclose())
    finally:
        loop.close()
        store.close()
