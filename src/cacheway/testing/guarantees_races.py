"""Guarantees 4 and 5 of DESIGN.md on one backend x store pair: concurrent writers and
read-fills never leave the backend disagreeing with the store; a stampede loads once."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

import pytest

import cacheway as cw

from .faults import FaultyStore, HeldFill
from .pair import PairSuite
from .policies import make_policy

ABSENT = object()


def hammer(caches: list[Any], keys: list[str], value: Callable[[int], Any], n_threads: int,
           n_ops: int, seed: int) -> None:
    """``n_threads`` threads (spread over ``caches``) doing random set/delete/get, plus a
    reader per cache that keeps filling until the last write is done (a stale fill then
    has nothing after it to hide it)."""
    barrier = threading.Barrier(n_threads + len(caches))
    writers_done = threading.Event()
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        cache = caches[t % len(caches)]
        rng = random.Random(seed * 100 + t)
        try:
            barrier.wait(10)
            for i in range(n_ops):
                key = rng.choice(keys)
                r = rng.random()
                if r < 0.45:
                    cache.set(key, value(t * 100_000 + i))
                elif r < 0.6:
                    cache.delete(key)
                else:
                    cache.get(key)
        except BaseException as exc:  # noqa: BLE001 - the test thread fails with it
            errors.append(exc)

    def reader(cache: Any) -> None:
        try:
            barrier.wait(10)
            while not writers_done.is_set():
                for key in keys:
                    cache.get(key)
        except BaseException as exc:  # noqa: BLE001 - the test thread fails with it
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    readers = [threading.Thread(target=reader, args=(c,)) for c in caches]
    for th in threads + readers:
        th.start()
    for th in threads:
        th.join(120)
    writers_done.set()
    for th in readers:
        th.join(60)
    assert not errors, errors


def race_fill_against(store: FaultyStore, cache: Any, write: Callable[[], object]) -> Any:
    """Start a read-fill of "k" that loaded the old value, do ``write`` meanwhile, then let
    the fill land. Returns what the racing get returned."""
    hook = HeldFill("k")
    store.load_hook = hook
    result: dict[str, Any] = {}
    reader = threading.Thread(target=lambda: result.setdefault("get", cache.get("k")))
    reader.start()
    assert hook.loaded.wait(10), "the read-fill never reached the store"
    writer = threading.Thread(target=write)
    writer.start()
    writer.join(0.5)  # the write may wait for the fill or not; give it a chance to finish
    hook.release.set()
    writer.join(10)
    reader.join(10)
    assert not writer.is_alive(), "deadlock between fill and write"
    assert not reader.is_alive(), "deadlock between fill and write"
    store.load_hook = None
    return result.get("get")


class RaceGuarantees(PairSuite):
    # -- 4. concurrent writers and read-fills ----------------------------------------------
    def agree(self, caches: list[Any], keys: list[str]) -> None:
        for cache in caches:
            cache.flush(timeout=30)
            assert cache.pending() == 0
        fresh = self.store().load_many(keys)
        for cache in caches:
            cached = {k: v for k in keys if (v := cache.get(k, default=ABSENT)) is not ABSENT}
            assert cached == fresh, "the backend disagrees with the store after flush"

    def test_guarantee4_concurrent_writers_backend_agrees_with_store(self, policy: str) -> None:
        keys = [f"k{i}" for i in range(5)]
        cache = self.cache(make_policy(policy))
        hammer([cache], keys, self.value, n_threads=4, n_ops=60, seed=4)
        self.agree([cache], keys)
        assert self.cache(make_policy(policy)).get_many(keys) == self.store().load_many(keys)

    def test_guarantee4_caches_sharing_the_backend_agree_with_store(self, policy: str) -> None:
        self.needs_shared_backend()
        keys = [f"k{i}" for i in range(5)]
        caches = [self.cache(make_policy(policy)), self.cache(make_policy(policy))]
        hammer(caches, keys, self.value, n_threads=4, n_ops=60, seed=7)
        self.agree(caches, keys)

    def test_guarantee4_a_fill_in_another_cache_does_not_undo_an_accepted_delete(
        self, policy: str
    ) -> None:
        # Cache "b" stands for another process sharing the backend: once "a" accepted the
        # delete, b's read-fill of the row the store still holds must not land over it.
        self.needs_shared_backend()
        slow = cw.WriteBack(max_delay=60) if policy == "write-back" else make_policy(policy)
        a, b = self.cache(slow), self.cache(make_policy(policy))
        b.set("k", self.value(1))
        b.flush(timeout=30)
        a.delete("k")
        for _ in range(3):
            # b may read the row the store still holds (a write-back delete is pending in
            # a: guarantee 1 is per process); its fills must not land over the delete.
            b.get("k", default="absent")
        a.flush(timeout=30)
        assert self.store().load_many(["k"]) == {}
        for cache in (a, b):
            assert cache.get("k", default="absent") == "absent", (
                "the backend kept a row the store deleted")

    def test_guarantee4_fills_racing_writes_never_land_after_the_last(self, policy: str) -> None:
        # Against a real store a fill cannot be held: race many fills against writes and
        # check that no fill of an older row lands after the last write.
        cache = self.cache(make_policy(policy))
        stop = threading.Event()
        errors: list[BaseException] = []

        def reader() -> None:
            try:
                while not stop.is_set():
                    cache.get("k")
            except BaseException as exc:  # noqa: BLE001 - the test thread fails with it
                errors.append(exc)

        readers = [threading.Thread(target=reader) for _ in range(3)]
        for th in readers:
            th.start()
        try:
            for i in range(150):
                cache.set("k", self.value(i))
        finally:
            stop.set()
            for th in readers:
                th.join(30)
        assert not errors, errors
        assert cache.get("k") == self.value(149)
        cache.flush(timeout=30)
        assert self.store().load("k") == self.value(149)
        assert cache.get("k") == self.value(149)

    def test_guarantee4_read_fill_racing_a_write_does_not_land_after_it(
        self, policy: str
    ) -> None:
        old, new = self.value(1), self.value(2)
        self.store().save_many({"k": old})
        store = self.faulty()
        cache = self.cache(make_policy(policy), store=store)
        got = race_fill_against(store, cache, lambda: cache.set("k", new))
        assert got in (old, new)
        assert cache.get("k") == new, "a fill that loaded before the write landed after it"
        cache.flush(timeout=30)
        assert cache.get("k") == new
        assert self.store().load("k") == new

    def test_guarantee4_read_fill_racing_a_flushed_write_back_does_not_land_after_it(
        self,
    ) -> None:
        # The write is accepted *and acknowledged by the store* while the fill is held: the
        # key is clean again when the fill lands, so only the fill token can stop it.
        old, new = self.value(1), self.value(2)
        self.store().save_many({"k": old})
        store = self.faulty()
        cache = self.cache(cw.WriteBack(max_delay=60), store=store)

        def write_and_flush() -> None:
            cache.set("k", new)
            cache.flush(timeout=10)

        got = race_fill_against(store, cache, write_and_flush)
        assert got in (old, new)
        assert self.store().load("k") == new
        assert cache.get("k") == new, "a fill that loaded before a flushed write landed after it"

    def test_guarantee4_read_fill_racing_a_delete_does_not_resurrect(self, policy: str) -> None:
        self.store().save_many({"k": self.value(1)})
        store = self.faulty()
        cache = self.cache(make_policy(policy), store=store)
        race_fill_against(store, cache, lambda: cache.delete("k"))
        assert cache.get("k", default="absent") == "absent", "a stale fill resurrected a delete"
        cache.flush(timeout=30)
        assert self.store().load_many(["k"]) == {}
        assert cache.get("k", default="absent") == "absent"

    # -- 5. stampede -----------------------------------------------------------------------
    def stampede(self, caches: list[Any], n: int) -> list[Any]:
        barrier = threading.Barrier(n)
        results: list[Any] = []
        errors: list[BaseException] = []

        def reader(cache: Any) -> None:
            try:
                barrier.wait(10)
                results.append(cache.get("hot", default="missing"))
            except BaseException as exc:  # noqa: BLE001 - the test thread fails with it
                errors.append(exc)

        threads = [threading.Thread(target=reader, args=(caches[i % len(caches)],))
                   for i in range(n)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        assert not errors, errors
        return results

    @pytest.mark.parametrize("stored", [True, False], ids=["found", "not-found"])
    def test_guarantee5_stampede_causes_one_store_load(self, stored: bool) -> None:
        if stored:
            self.store().save_many({"hot": self.value(1)})
        store = self.faulty()
        store.load_delay = 0.2
        cache = self.cache(cw.WriteThrough(), store=store)
        results = self.stampede([cache], 16)
        assert results == [self.value(1) if stored else "missing"] * 16
        assert store.loads == 1, f"{store.loads} store loads for one stampede"
        assert cache.stats().loads == 1

    @pytest.mark.parametrize("stored", [True, False], ids=["found", "not-found"])
    def test_guarantee5_stampede_across_caches_sharing_the_backend(self, stored: bool) -> None:
        self.needs_shared_backend(versions=False)  # a lease in the backend, no versions
        if stored:
            self.store().save_many({"hot": self.value(1)})
        stores = [self.faulty(), self.faulty()]
        for store in stores:
            store.load_delay = 0.2
        caches = [self.cache(cw.WriteThrough(), store=s) for s in stores]
        results = self.stampede(caches, 16)
        assert results == [self.value(1) if stored else "missing"] * 16
        loads = sum(s.loads for s in stores)
        assert loads == 1, f"{loads} store loads for one stampede over two caches"
