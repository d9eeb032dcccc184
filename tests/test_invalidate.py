"""invalidate / invalidate_many (issue 10 item 9): drop cached copies only, every level and
every process sharing the backend; the store keeps its rows."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw
from conftest import wait_until
from services import REDIS_URL, require, unique


def test_invalidate_makes_the_next_read_load_what_the_database_has_now(
        tmp_path: Path, make_policy: Callable[[], Any]) -> None:
    store = cw.SQLiteStore(tmp_path / "a.db")
    with cw.Cache(store=store, policy=make_policy()) as cache:
        cache.set_many({"a": 1, "b": 1, "c": 1})
        cache.flush()
        assert cache.get_many(["a", "b", "c"]) == {"a": 1, "b": 1, "c": 1}
        store.save_many({"a": 2, "b": 2, "c": 2})  # changed behind the cache's back
        assert cache.get("a") == 1
        cache.invalidate("a")
        cache.invalidate_many(["b", "b"])
        assert cache.get_many(["a", "b", "c"]) == {"a": 2, "b": 2, "c": 1}
        assert store.load("a") == 2, "invalidate must not touch the store"


def test_invalidate_keeps_a_pending_write_back_write(tmp_path: Path) -> None:
    store = cw.SQLiteStore(tmp_path / "a.db")
    with cw.Cache(store=store, backend=cw.MemoryBackend(max_entries=4),
                  policy=cw.WriteBack(max_delay=3600)) as cache:
        cache.set("a", "pending")
        cache.invalidate("a")
        assert cache.get("a") == "pending"
        cache.flush()
        assert store.load("a") == "pending"


def test_invalidate_refuses_a_key_that_is_not_a_str(tmp_path: Path) -> None:
    with cw.Cache(store=cw.SQLiteStore(tmp_path / "a.db")) as cache, \
            pytest.raises(cw.InvalidKeyError):
        cache.invalidate_many(["a", 1])  # type: ignore[list-item]


def test_a_fill_that_loaded_before_invalidate_does_not_land(tmp_path: Path) -> None:
    store = cw.SQLiteStore(tmp_path / "a.db")
    store.save_many({"a": "old"})
    fetch = store.fetch
    loaded, release = threading.Event(), threading.Event()

    def slow_fetch(ns: str, keys: Any) -> Any:
        rows = fetch(ns, keys)
        loaded.set()
        release.wait(10)
        return rows

    store.fetch = slow_fetch  # type: ignore[method-assign]
    with cw.Cache(store=store) as cache:
        got: list[Any] = []
        reader = threading.Thread(target=lambda: got.append(cache.get("a")), daemon=True)
        reader.start()
        assert loaded.wait(10)
        store.fetch = fetch  # type: ignore[method-assign]
        store.save_many({"a": "new"})
        cache.invalidate("a")
        release.set()
        reader.join(10)
        assert got == ["old"]  # it read before the change: fine to return
        assert cache.get("a") == "new", "the fill of the old row landed after invalidate"


@pytest.mark.services
@pytest.mark.parametrize("two_level", [False, True])
def test_invalidate_reaches_every_process_sharing_redis(tmp_path: Path, two_level: bool
                                                        ) -> None:
    require("redis")
    prefix = unique("cwinv") + ":"
    store_path = tmp_path / "a.db"

    def backend() -> Any:
        l2 = cw.RedisBackend(REDIS_URL, prefix=prefix)
        return cw.TwoLevelBackend(cw.MemoryBackend(), l2) if two_level else l2

    a = cw.Cache(store=cw.SQLiteStore(store_path), backend=backend())
    b = cw.Cache(store=cw.SQLiteStore(store_path), backend=backend())
    try:
        for cache in (a, b):
            ready = getattr(cache.backend, "wait_ready", None)
            if ready is not None:
                assert ready(10)
        a.set("k", 1)
        assert b.get("k") == 1  # b has its copy (in its L1 too)
        a.store.save_many({"k": 2})
        a.invalidate("k")
        assert a.get("k") == 2
        assert wait_until(lambda: b.get("k") == 2), "b still serves the dropped copy"
    finally:
        a.close()
        b.close()
