"""Guarantees 6, 7 and the asyncio half of 8 of DESIGN.md on one backend x store pair: a
failing store loses no dirty data; bad input fails at its call and damages nothing; the
asyncio front keeps the guarantees without blocking the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

import cacheway as cw

from .pair import PairSuite, fast_retry
from .policies import make_policy
from .support import wait_until


class FailureGuarantees(PairSuite):
    # -- 6. failing store ------------------------------------------------------------------
    def test_guarantee6_failing_store_entries_stay_readable_and_errors_surface(self) -> None:
        store = self.faulty()
        store.failing = True
        cache = self.cache(cw.WriteBack(max_delay=0.01, retry=fast_retry()),
                           store=store)
        values = {f"k{i}": self.value(i) for i in range(5)}
        cache.set_many(values)
        assert wait_until(lambda: cache.stats().flush_errors >= 3), "no failed flush recorded"
        assert wait_until(lambda: cache.stats().retries >= 1)
        assert cache.get_many(list(values)) == values
        assert cache.pending() == 5
        assert cache.stats().dirty == 5
        with pytest.raises(cw.StoreError, match="5"):
            cache.flush(timeout=0.3)
        assert cache.get_many(list(values)) == values
        store.failing = False
        cache.flush(timeout=30)
        assert self.store().load_many(list(values)) == values
        assert cache.pending() == 0
        assert cache.get_many(list(values)) == values

    def test_guarantee6_store_failing_n_times_then_flush_succeeds(self) -> None:
        store = self.faulty()
        store.fail_writes = 4
        cache = self.cache(cw.WriteBack(max_delay=0.01, retry=fast_retry()),
                           store=store)
        values = {f"k{i}": self.value(i) for i in range(10)}
        cache.set_many(values)
        cache.flush(timeout=30)  # failures that a retry fixes do not make flush raise
        assert self.store().load_many(list(values)) == values
        s = cache.stats()
        assert s.flush_errors > 0
        assert s.retries > 0
        assert s.dirty == 0
        assert store.failed_writes == 4

    def test_guarantee6_dead_letter_for_every_entry_readable_until_it_returns(self) -> None:
        store = self.faulty()
        store.failing = True
        seen: dict[str, Any] = {}
        readable: dict[str, Any] = {}
        lock = threading.Lock()
        holder: list[cw.Cache] = []

        def on_dead_letter(key: str, value: Any, exc: BaseException) -> None:
            assert isinstance(exc, Exception)
            with lock:
                seen[key] = value
                readable[key] = holder[0].get(key)

        cache = self.cache(cw.WriteBack(
            max_delay=0.01, retry=cw.Retry(attempts=2, base_delay=0.01, max_delay=0.02),
            on_dead_letter=on_dead_letter), store=store)
        holder.append(cache)
        values = {f"k{i}": self.value(i) for i in range(6)}
        cache.set_many(values)
        assert wait_until(lambda: cache.stats().dead_letters == 6)
        assert seen == values
        assert readable == values, "an entry was not readable during on_dead_letter"
        assert wait_until(lambda: cache.pending() == 0)
        assert self.store().load_many(list(values)) == {}

    # -- 7. bad input ----------------------------------------------------------------------
    def test_guarantee7_non_str_key_raises_type_error(self, policy: str) -> None:
        cache = self.cache(make_policy(policy))
        cache.set("ok", self.value(1))
        for bad_key in (1, b"k", None, ("t",)):
            calls: list[tuple[str, tuple[Any, ...]]] = [
                ("set", (bad_key, self.value(2))),
                ("get", (bad_key,)),
                ("delete", (bad_key,)),
                ("get_many", (["ok", bad_key],)),
                ("set_many", ({bad_key: self.value(2)},)),
                ("delete_many", ([bad_key],)),
                ("incr", (bad_key,)),
                ("get_or_set", (bad_key, self.value(2))),
                ("invalidate", (bad_key,)),
            ]
            for name, args in calls:
                with pytest.raises(TypeError) as info:
                    getattr(cache, name)(*args)
                assert isinstance(info.value, cw.CachewayError), (name, info.value)
        for name in ("set", "get", "delete", "incr", "get_or_set", "invalidate",
                     "get_many", "delete_many", "invalidate_many"):
            unhashable: tuple[Any, ...] = (
                (["t"], self.value(2)) if name in ("set", "get_or_set")
                else ([["t"]],) if name.endswith("_many") else (["t"],))
            with pytest.raises(TypeError) as info:  # an unhashable key too
                getattr(cache, name)(*unhashable)
            assert isinstance(info.value, cw.CachewayError), (name, info.value)
        assert cache.get("ok") == self.value(1)
        cache.flush(timeout=30)
        assert self.store().load_many(["ok"]) == {"ok": self.value(1)}

    def test_guarantee7_a_value_no_store_takes_is_refused_at_set(self, policy: str) -> None:
        cache = self.cache(make_policy(policy))
        cache.set("k", self.value(1))
        cache.set("other", self.value(2))
        cache.flush(timeout=30)
        writes = cache.stats().writes
        for bad in self.refused_values():
            with pytest.raises(cw.CachewayError):
                cache.set("k", bad)
            with pytest.raises(cw.CachewayError):
                cache.set("new", bad)
            with pytest.raises(cw.CachewayError):
                cache.set_many({"other": self.value(3), "new": bad})
        assert cache.pending() == 0
        assert cache.stats().writes == writes
        assert cache.get("k") == self.value(1)
        assert cache.get("new", default="absent") == "absent"
        cache.set("after", self.value(4))
        cache.flush(timeout=30)
        assert self.store().load_many(["k", "new", "other", "after"]) == {
            "k": self.value(1), "other": self.value(2), "after": self.value(4)}
        assert cache.stats().flush_errors == 0

    def test_guarantee7_a_key_the_store_can_never_take_is_refused_at_set(
        self, policy: str
    ) -> None:
        store = self.store()
        cache = self.cache(make_policy(policy), store=store)
        for key in self.refused_keys(store):
            with pytest.raises(cw.CachewayError):
                cache.set(key, self.value(1))
            with pytest.raises(cw.CachewayError):
                cache.set_many({"ok": self.value(2), key: self.value(1)})
        assert cache.pending() == 0
        cache.set("ok", self.value(3))
        cache.flush(timeout=30)
        assert self.store().load_many(["ok"]) == {"ok": self.value(3)}
        assert cache.stats().flush_errors == 0

    def test_guarantee7_use_after_close_raises_closed_error(self, policy: str) -> None:
        cache = self.cache(make_policy(policy))
        views = cache.namespace("views")
        cache.set("a", self.value(1))
        cache.close()
        self.forget(cache)
        calls: list[Callable[[], object]] = [
            lambda: cache.get("a"),
            lambda: cache.set("a", self.value(2)),
            lambda: cache.delete("a"),
            lambda: cache.get_many(["a"]),
            lambda: cache.set_many({"a": self.value(3)}),
            lambda: views.get("x"),
            lambda: views.set("x", self.value(4)),
        ]
        if self.counters:
            calls.append(lambda: cache.incr("n"))
        for call in calls:
            with pytest.raises(cw.ClosedError):
                call()
        assert self.store().load("a") == self.value(1)

    # -- 8. asyncio ------------------------------------------------------------------------
    def test_guarantee8_async_cache_reads_its_writes_and_flushes(self, policy: str) -> None:
        v = self.value

        async def main() -> None:
            async with cw.AsyncCache(store=self.store(), backend=self.backend(),
                                     policy=make_policy(policy)) as acache:
                for i in range(5):
                    await acache.set("k", v(i))
                    assert await acache.get("k") == v(i)
                await acache.set_many({"a": v(10), "b": v(11)})
                assert await acache.get_many(["a", "b", "x"]) == {"a": v(10), "b": v(11)}
                await acache.delete("a")
                assert await acache.get("a", default="gone") == "gone"
                await acache.flush(timeout=30)
            assert self.store().load_many(["k", "a", "b"]) == {"k": v(4), "b": v(11)}

        asyncio.run(main())

    def test_guarantee8_async_store_write_does_not_block_the_event_loop(self) -> None:
        store = self.faulty()
        gate = threading.Event()
        store.write_gate = gate

        async def main() -> None:
            async with cw.AsyncCache(store=store, backend=self.backend(),
                                     policy=cw.WriteThrough()) as acache:
                task = asyncio.ensure_future(acache.set("k", self.value(1)))
                while not store.write_entered.is_set():
                    await asyncio.sleep(0.005)
                # the write waits for the gate in the store: the loop must still run us
                assert not task.done(), "the store write ran on the event loop"
                gate.set()
                await task
                assert await acache.get("k") == self.value(1)

        try:
            asyncio.run(main())
        finally:
            gate.set()
        assert self.store().load("k") == self.value(1)
