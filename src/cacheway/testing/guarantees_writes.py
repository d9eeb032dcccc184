"""Guarantees 1-3 of DESIGN.md on one backend x store pair: read your writes, no lost
acknowledged write (write-through), per-key order."""

from __future__ import annotations

import random
import threading
from typing import Any

import cacheway as cw

from .pair import PairSuite, fast_retry
from .policies import make_policy


def fast_policy(name: str, batch_size: int = 7) -> Any:
    """``name``'s policy, write-back flushing small batches at once (to interleave)."""
    if name == "write-back":
        return cw.WriteBack(max_delay=0.002, batch_size=batch_size)
    return make_policy(name)


class WriteGuarantees(PairSuite):
    # -- 1. read your writes ---------------------------------------------------------------
    def test_guarantee1_read_your_writes(self, policy: str) -> None:
        v = self.value
        cache = self.cache(make_policy(policy))
        for i in range(20):
            cache.set("k", v(i))
            assert cache.get("k") == v(i)
        cache.set_many({"a": v(100), "b": v(101)})
        assert cache.get_many(["a", "b"]) == {"a": v(100), "b": v(101)}
        cache.delete("a")
        assert cache.get("a", default="gone") == "gone"
        if self.counters:
            assert cache.incr("n", 3) == 3
            assert cache.get("n") == 3

    def test_guarantee1_read_your_writes_after_eviction_while_dirty(self, policy: str) -> None:
        v = self.value
        self.store().save_many({f"other{i}": v(i) for i in range(30)})
        cache = self.cache(make_policy(policy), max_entries=10)
        for i in range(40):
            cache.set(f"k{i}", v(i))
        cache.flush(timeout=30)  # every policy has put (some of) them in the backend by now
        for i in range(40):
            cache.set(f"k{i}", v(1000 + i))
        for i in range(30):  # read-fills of other keys churn the backend while k* are dirty
            assert cache.get(f"other{i}") == v(i)
        for i in range(40):
            assert cache.get(f"k{i}") == v(1000 + i), f"k{i} lost after eviction"
        if self.evicts:
            assert cache.stats().evictions > 0

    def test_guarantee1_dirty_entries_readable_while_the_backend_evicts_them(self) -> None:
        cache = self.cache(cw.WriteBack(max_delay=60), max_entries=10)
        for i in range(100):
            cache.set(f"k{i}", self.value(i))
        if self.counters:
            for i in range(100):
                cache.incr(f"c{i % 5}")
        assert cache.pending() == (105 if self.counters else 100)
        if self.evicts:
            assert cache.stats().evictions >= 90
        assert cache.get_many([f"k{i}" for i in range(100)]) == {
            f"k{i}": self.value(i) for i in range(100)}
        if self.counters:
            assert [cache.get(f"c{j}") for j in range(5)] == [20] * 5
        assert self.store().load_many(["k0", "k99", "c0"]) == {}, "flushed before max_delay"

    def test_guarantee1_read_your_writes_while_a_flush_is_in_flight(self) -> None:
        v = self.value
        store = self.faulty()
        gate = threading.Event()
        store.write_gate = gate
        cache = self.cache(cw.WriteBack(max_delay=0.01), store=store, max_entries=5)
        try:
            for i in range(20):
                cache.set(f"k{i}", v(i))
            assert store.write_entered.wait(10), "the flusher never started a batch"
            for i in range(20):
                cache.set(f"k{i}", v(i + 100))  # newer writes while the first batch is stuck
            assert cache.get_many([f"k{i}" for i in range(20)]) == {
                f"k{i}": v(i + 100) for i in range(20)}
        finally:
            gate.set()
        cache.flush(timeout=30)
        assert self.store().load_many([f"k{i}" for i in range(20)]) == {
            f"k{i}": v(i + 100) for i in range(20)}

    # -- 2. no lost acknowledged write (write-through) -------------------------------------
    def test_guarantee2_write_through_store_has_value_when_set_returns(self) -> None:
        v = self.value
        cache = self.cache(cw.WriteThrough())
        reader = self.store()  # a separate connection
        for i in range(10):
            cache.set("k", v(i))
            assert reader.load("k") == v(i)
        cache.set_many({"a": v(1), "b": v(2)})
        assert reader.load_many(["a", "b"]) == {"a": v(1), "b": v(2)}
        cache.delete("a")
        assert reader.load_many(["a"]) == {}
        if self.counters:
            assert cache.incr("n", 5) == 5
            assert reader.load("n") == 5
        if self.namespaces:
            cache.namespace("ns").set("x", v(3))
            assert reader.load("x", namespace="ns") == v(3)

    # -- 3. per-key order ------------------------------------------------------------------
    def test_guarantee3_the_last_accepted_write_wins(self, policy: str) -> None:
        cache = self.cache(fast_policy(policy, batch_size=3))
        rng = random.Random(11)
        model: dict[str, Any] = {}
        for seq in range(150):
            key = f"k{rng.randrange(6)}"
            if rng.random() < 0.3:
                cache.delete(key)
                model.pop(key, None)
            else:
                cache.set(key, self.value(seq))
                model[key] = self.value(seq)
        cache.flush(timeout=30)
        keys = [f"k{i}" for i in range(6)]
        assert self.store().load_many(keys) == model
        assert cache.get_many(keys) == model

    def test_guarantee3_per_key_order_many_threads(self, policy: str) -> None:
        cache = self.cache(fast_policy(policy, batch_size=5))
        n_threads, n_writes = 3, 40
        barrier = threading.Barrier(n_threads)
        errors: list[BaseException] = []

        def writer(t: int) -> None:
            try:
                barrier.wait(10)
                for i in range(n_writes):
                    cache.set(f"t{t}", self.value(i))  # one key per thread: its order is defined
            except BaseException as exc:  # noqa: BLE001 - the test thread fails with it
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        assert not errors, errors
        cache.flush(timeout=30)
        keys = [f"t{t}" for t in range(n_threads)]
        assert self.store().load_many(keys) == {k: self.value(n_writes - 1) for k in keys}

    def test_guarantee3_order_holds_through_store_outages(self) -> None:
        store = self.faulty()
        store.fail_writes = 3
        cache = self.cache(cw.WriteBack(max_delay=0.002, batch_size=4,
                                        retry=fast_retry()), store=store)
        rng = random.Random(5)
        model: dict[str, Any] = {}
        for seq in range(200):
            key = f"k{rng.randrange(5)}"
            if rng.random() < 0.25:
                cache.delete(key)
                model.pop(key, None)
            else:
                cache.set(key, self.value(seq))
                model[key] = self.value(seq)
            if seq == 100:
                store.fail_writes = 3  # a second outage mid-burst
        cache.flush(timeout=30)
        assert store.failed_writes >= 3
        assert self.store().load_many([f"k{i}" for i in range(5)]) == model

    def test_guarantee3_last_write_wins_across_caches_sharing_the_backend(
        self, policy: str
    ) -> None:
        # Two caches on the same backend key space and store stand for two processes.
        self.needs_shared_backend()
        first, second = self.cache(make_policy(policy)), self.cache(make_policy(policy))
        last: dict[str, Any] = {}
        for i in range(40):
            cache = (first, second)[i % 2]
            key = f"k{i % 3}"
            cache.set(key, self.value(i))
            last[key] = self.value(i)
        first.flush(timeout=30)
        second.flush(timeout=30)
        assert self.store().load_many(list(last)) == last
        for cache in (first, second):
            assert cache.get_many(list(last)) == last
