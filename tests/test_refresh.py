"""Early refresh (XFetch), stale-if-error and TTL jitter, with an injected clock and
random source (no waiting on real deadlines)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import cacheway as cw
from cacheway._refresh import should_refresh
from conftest import wait_until


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SlowStore:
    """A dict behind a CallbackStore whose loads take ``delay`` seconds and can fail."""

    def __init__(self, delay: float = 0.05) -> None:
        self.data: dict[str, Any] = {}
        self.delay = delay
        self.loads = 0
        self.failing = False
        self.lock = threading.Lock()
        self.store = cw.CallbackStore(self.load_many, self.save_many, self.delete_many)

    def load_many(self, keys: list[str]) -> dict[str, Any]:
        with self.lock:
            self.loads += 1
        if self.failing:
            raise ConnectionError("store is down")
        time.sleep(self.delay)
        return {k: self.data[k] for k in keys if k in self.data}

    def save_many(self, items: list[tuple[str, Any]]) -> None:
        self.data.update(items)

    def delete_many(self, keys: list[str]) -> None:
        for k in keys:
            self.data.pop(k, None)


@pytest.mark.parametrize(
    ("left", "delta", "beta", "r", "expected"),
    [
        (10.0, 0.1, 1.0, 0.5, False),   # far from expiry
        (0.05, 0.1, 1.0, 0.5, True),    # -0.1 * ln(0.5) = 0.069 >= 0.05
        (0.08, 0.1, 1.0, 0.5, False),   # 0.069 < 0.08
        (0.08, 0.1, 2.0, 0.5, True),    # a larger beta refreshes earlier
        (5.0, 0.1, 1.0, 1e-30, True),   # a tiny random draw refreshes early (rarely)
        (5.0, 0.0, 1.0, 0.5, False),    # nothing known about the load time
    ],
)
def test_xfetch_formula(left: float, delta: float, beta: float, r: float,
                        expected: bool) -> None:
    assert should_refresh(left, delta, beta, lambda: r) is expected


def test_early_refresh_reloads_in_the_background_and_serves_the_old_value() -> None:
    clock = Clock()
    slow = SlowStore(delay=0.05)
    slow.data["k"] = "v1"
    cache = cw.Cache(store=slow.store, backend=cw.MemoryBackend(timer=clock), ttl=10,
                     early_refresh=1.0, random=lambda: 0.5)
    assert cache.get("k") == "v1"
    assert slow.loads == 1
    clock.now += 5.0  # 5 s left: -0.05 * ln(0.5) = 0.035 s is far from it
    assert cache.get("k") == "v1"
    assert slow.loads == 1
    slow.data["k"] = "v2"  # changed behind the cache's back
    clock.now += 4.99  # 0.01 s left: time to refresh
    assert cache.get("k") == "v1", "the reader that triggers a refresh does not wait"
    assert wait_until(lambda: cache.get("k") == "v2")
    assert slow.loads == 2
    cache.close()


def test_early_refresh_makes_one_load_for_a_crowd_of_readers() -> None:
    clock = Clock()
    slow = SlowStore(delay=0.2)
    slow.data["hot"] = 1
    cache = cw.Cache(store=slow.store, backend=cw.MemoryBackend(timer=clock), ttl=10,
                     early_refresh=1.0, random=lambda: 0.5)
    cache.get("hot")
    clock.now += 9.99
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(cache.get("hot")))
               for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [1] * 20
    assert wait_until(lambda: slow.loads == 2)
    cache.close()
    assert slow.loads == 2, "20 readers near expiry caused one background reload"


def test_stale_if_error_serves_an_expired_copy_while_the_store_is_down() -> None:
    clock = Clock()
    slow = SlowStore(delay=0.0)
    slow.data["k"] = "v"
    cache = cw.Cache(store=slow.store, backend=cw.MemoryBackend(timer=clock), ttl=1,
                     stale_if_error=30)
    assert cache.get("k") == "v"
    clock.now += 2  # expired
    slow.failing = True
    assert cache.get("k") == "v", "a failing store: the stale copy is served"
    clock.now += 60  # beyond stale_if_error
    with pytest.raises(cw.StoreError):
        cache.get("k")
    slow.failing = False
    assert cache.get("k") == "v"
    cache.close()


def test_without_stale_if_error_an_expired_copy_is_not_served() -> None:
    clock = Clock()
    slow = SlowStore(delay=0.0)
    slow.data["k"] = "v"
    cache = cw.Cache(store=slow.store, backend=cw.MemoryBackend(timer=clock), ttl=1)
    cache.get("k")
    clock.now += 2
    slow.failing = True
    with pytest.raises(cw.StoreError):
        cache.get("k")
    cache.close()


def test_ttl_jitter_shortens_each_copy_by_a_random_share() -> None:
    clock = Clock()
    backend = cw.MemoryBackend(timer=clock)
    slow = SlowStore(delay=0.0)
    cache = cw.Cache(store=slow.store, backend=backend, ttl=100, ttl_jitter=0.2,
                     random=lambda: 0.5)
    cache.set("k", "v")
    _, left, _ = backend.get_meta(":k")
    assert left == pytest.approx(90.0)  # 100 * (1 - 0.2 * 0.5)
    cache.close()


@pytest.mark.parametrize("kwargs", [{"early_refresh": 0}, {"stale_if_error": -1},
                                    {"ttl_jitter": 1.5}, {"early_refresh": "x"}])
def test_bad_read_options_are_config_errors(kwargs: dict[str, Any]) -> None:
    slow = SlowStore()
    with pytest.raises(cw.ConfigError):
        cw.Cache(store=slow.store, **kwargs)


def test_early_refresh_needs_a_backend_that_keeps_entry_ages(redis_url: str) -> None:
    slow = SlowStore()
    with pytest.raises(cw.ConfigError, match="early_refresh"):
        cw.Cache(store=slow.store, backend=cw.RedisBackend(redis_url), early_refresh=1.0)
