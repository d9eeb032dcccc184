"""Regressions found in review: each test reproduced a real bug before its fix."""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw


def test_write_through_incr_does_not_deadlock_with_a_concurrent_load(tmp_path: Path
                                                                     ) -> None:
    # incr held the key's stripe lock and joined a single-flight load whose fill needed
    # that same lock: both threads hung forever.
    store = cw.SQLiteStore(tmp_path / "a.db")
    store.save_many({"c": 5})
    fetch = store.fetch
    loading = threading.Event()

    def slow_fetch(ns: str, keys: Any) -> Any:
        loading.set()
        time.sleep(0.3)
        return fetch(ns, keys)

    store.fetch = slow_fetch  # type: ignore[method-assign]
    cache = cw.Cache(store=store)
    res: dict[str, Any] = {}
    b = threading.Thread(target=lambda: res.setdefault("get", cache.get("c")), daemon=True)
    b.start()
    assert loading.wait(5)
    a = threading.Thread(target=lambda: res.setdefault("incr", cache.incr("c")), daemon=True)
    a.start()
    a.join(10)
    b.join(10)
    assert not a.is_alive(), "deadlock"
    assert not b.is_alive(), "deadlock"
    assert res["incr"] == 6
    assert res["get"] in (5, 6)
    cache.close()
    store.close()


def test_on_full_write_through_keeps_a_pending_key_in_order(tmp_path: Path) -> None:
    store = cw.SQLiteStore(tmp_path / "a.db")
    cache = cw.Cache(store=store, policy=cw.WriteBack(max_delay=3600, max_dirty=2,
                                                       on_full="write_through"))
    cache.set("a", "old")
    cache.set("b", "x")  # full
    cache.set_many({"a": "new", "c": "y"})  # a is pending (coalesces), c goes to the store
    assert store.load("c") == "y"
    assert cache.get("a") == "new"
    cache.flush()
    assert store.load("a") == "new", "the older pending write of a landed last"
    cache.close()
    store.close()


def test_close_does_not_drop_writes_accepted_while_it_flushes(tmp_path: Path) -> None:
    for _ in range(5):
        store = cw.SQLiteStore(tmp_path / "a.db")
        cache = cw.Cache(store=store, policy=cw.WriteBack(max_delay=0.01))
        acked: list[str] = []
        stop = threading.Event()

        def writer() -> None:
            i = 0
            while not stop.is_set():  # noqa: B023 - this round's event
                try:
                    cache.set(f"k{i}", i)  # noqa: B023 - this round's cache
                except cw.ClosedError:
                    return
                acked.append(f"k{i}")  # noqa: B023
                i += 1

        t = threading.Thread(target=writer)
        t.start()
        time.sleep(0.05)
        cache.close()
        stop.set()
        t.join()
        rows = store.load_many(acked)
        assert [k for k in acked if k not in rows] == [], "acknowledged sets lost by close()"
        store.close()
        (tmp_path / "a.db").unlink()


@pytest.mark.parametrize("mode", ["callback", "sqlite"])
def test_write_back_incr_never_builds_on_a_stale_read(tmp_path: Path, mode: str) -> None:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        data: dict[str, Any] = {}
        lock = threading.Lock()

        def load(ks: list[str]) -> dict[str, Any]:
            with lock:
                return {k: data[k] for k in ks if k in data}

        def save(items: list[tuple[str, Any]]) -> None:
            with lock:
                data.update(items)

        store: Any = (cw.CallbackStore(load, save, lambda ks: None) if mode == "callback"
                      else cw.SQLiteStore(tmp_path / "a.db"))
        cache = cw.Cache(store=store, backend=cw.MemoryBackend(max_entries=1),
                         policy=cw.WriteBack(max_delay=0, batch_size=1))
        n, threads = 1000, 4
        returned: list[int] = []

        def worker(j: int) -> None:
            for _ in range(n):
                returned.append(cache.incr("ctr"))
                cache.get(f"other{j}")  # evicts ctr from the 1-entry backend

        ts = [threading.Thread(target=worker, args=(j,)) for j in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        cache.flush()
        assert store.load("ctr") == n * threads
        assert len(set(returned)) == len(returned), "two incr calls returned the same value"
        cache.close()
    finally:
        sys.setswitchinterval(old)


def test_one_poison_entry_never_gets_good_entries_dead_lettered() -> None:
    logging.disable(logging.CRITICAL)
    try:
        for _ in range(20):
            data: dict[str, Any] = {}

            def save(items: list[tuple[str, Any]]) -> None:
                if any(v == "POISON" for _, v in items):
                    raise ValueError("row rejected")
                data.update(items)  # noqa: B023 - this round's dict

            dead: list[str] = []
            store = cw.CallbackStore(lambda ks: {}, save, lambda ks: None)
            cache = cw.Cache(store=store, policy=cw.WriteBack(
                max_delay=3600, retry=cw.Retry(attempts=2, base_delay=0.0, max_delay=0.0),
                on_dead_letter=lambda k, v, e: dead.append(k)))  # noqa: B023
            cache.set("p", "POISON")
            for i in range(7):
                cache.set(f"g{i}", i)
            cache.flush(timeout=10)
            assert dead == ["p"]
            assert data == {f"g{i}": i for i in range(7)}
            cache.close()
    finally:
        logging.disable(logging.NOTSET)


def test_flush_from_on_dead_letter_is_an_error_not_a_hang(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    cache: cw.Cache

    def on_dead(key: str, value: Any, exc: BaseException) -> None:
        try:
            cache.flush()
        except cw.ConfigError as e:
            errors.append(e)

    def save(items: list[tuple[str, Any]]) -> None:
        raise ValueError("always fails")

    cache = cw.Cache(store=cw.CallbackStore(lambda ks: {}, save, lambda ks: None),
                     policy=cw.WriteBack(max_delay=0.01, retry=cw.Retry(
                         attempts=1, base_delay=0.0, max_delay=0.0), on_dead_letter=on_dead))
    cache.set("k", 1)
    cache.flush(timeout=10)
    assert len(errors) == 1
    assert "flusher thread" in str(errors[0])
    cache.close()
