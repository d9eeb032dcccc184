"""The generic backend suite: every backend passes the same tests.

The ``backend`` fixture is parametrised over ``MemoryBackend`` (with an injected clock)
and ``RedisBackend`` (a real Redis, a fresh key prefix per test, cleaned up after). TTL
expiry moves the memory clock and polls Redis with a deadline. Versions are a contract
of shared backends only: ``MemoryBackend`` ignores them (in one process the engines'
stripe locks and fill tokens do that job), which ``test_memory_ignores_versions`` pins.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import cacheway as cw
from cacheway.backends.base import MISS, Backend
from conftest import wait_until
from services import unique


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Env:
    """One backend under test plus how to make time pass for it."""

    def __init__(self, kind: str, make: Callable[[str | None], Any], clock: Clock | None):
        self.kind = kind
        self._make = make
        self._clock = clock
        self.made: list[Any] = []
        self.backend = self.new()

    def new(self, prefix: str | None = None) -> Any:
        b = self._make(prefix)
        self.made.append(b)
        return b

    def expired(self, backend: Any, key: str, ttl: float) -> bool:
        """Let ``ttl`` pass; True once ``key`` reads as a miss."""
        if self._clock is not None:
            self._clock.now += ttl + 0.001
            return backend.get(key) is MISS
        return wait_until(lambda: backend.get(key) is MISS, timeout=5.0)


def redis_env(url: str) -> Env:
    from cacheway.backends.redis import RedisBackend

    def make(prefix: str | None) -> Any:
        b = RedisBackend(url, prefix=prefix or f"{unique('suite')}:")
        b.bind_serializer(cw.JSONSerializer())
        return b

    return Env("redis", make, None)


def close_all(e: Env) -> None:
    for b in e.made:
        b.clear()
        b.close()


@pytest.fixture(params=["memory", "redis"])
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    if request.param == "memory":
        clock = Clock()
        e = Env("memory", lambda prefix: cw.MemoryBackend(timer=clock), clock)
    else:
        e = redis_env(request.getfixturevalue("redis_url"))
    yield e
    close_all(e)


@pytest.fixture
def backend(env: Env) -> Any:
    return env.backend


@pytest.fixture
def shared(redis_url: str) -> Iterator[Env]:
    """The shared backends only (Redis): versions are their contract."""
    e = redis_env(redis_url)
    yield e
    close_all(e)


def put(b: Any, key: str, value: Any, ttl: float | None = None, version: int | None = None):
    """Set as the engines do: with the serializer's payload alongside the value."""
    return b.set(key, value, cw.JSONSerializer().dumps(value), ttl, version)


# -- the protocol ------------------------------------------------------------------------
def test_is_a_backend(backend: Any) -> None:
    assert isinstance(backend, Backend)
    assert isinstance(backend.local, bool)
    assert backend.evictions >= 0


def test_get_set_delete(backend: Any) -> None:
    assert backend.get("a") is MISS
    put(backend, "a", {"x": [1, 2]})
    assert backend.get("a") == {"x": [1, 2]}
    put(backend, "a", "second")
    assert backend.get("a") == "second"
    backend.delete("a")
    assert backend.get("a") is MISS
    backend.delete("a")  # deleting a missing key is fine


def test_set_without_payload_serializes_the_value(backend: Any) -> None:
    backend.set("n", 41, None, None)
    assert backend.get("n") == 41


@pytest.mark.parametrize("value", [None, 0, "", [], {}, False, "ü€", 2**62, 1.5])
def test_falsy_and_odd_values_round_trip(backend: Any, value: Any) -> None:
    put(backend, "v", value)
    got = backend.get("v")
    assert got is not MISS
    assert got == value


def test_keys_are_exact_strings(backend: Any) -> None:
    put(backend, ":a", 1)
    put(backend, "ns:a", 2)
    put(backend, "ns:a ", 3)
    put(backend, "ключ*?[]", 4)
    assert [backend.get(k) for k in (":a", "ns:a", "ns:a ", "ключ*?[]")] == [1, 2, 3, 4]
    assert backend.get("a") is MISS


def test_get_many_returns_found_keys_only(backend: Any) -> None:
    for i in range(5):
        put(backend, f"k{i}", i)
    got = backend.get_many([f"k{i}" for i in range(8)])
    assert got == {f"k{i}": i for i in range(5)}
    assert backend.get_many([]) == {}


def test_set_many_and_delete_many(backend: Any) -> None:
    s = cw.JSONSerializer()
    backend.set_many([(f"m{i}", i, s.dumps(i), None) for i in range(50)], None)
    assert backend.get_many([f"m{i}" for i in range(50)]) == {f"m{i}": i for i in range(50)}
    backend.delete_many([f"m{i}" for i in range(0, 50, 2)] + ["never-set"])
    assert backend.get_many([f"m{i}" for i in range(50)]) == {
        f"m{i}": i for i in range(1, 50, 2)
    }
    backend.set_many([], None)
    backend.delete_many([])


def test_set_many_with_payloads_none(backend: Any) -> None:
    backend.set_many([("p1", [1], None, None), ("p2", {"a": 1}, None, None)], None)
    assert backend.get_many(["p1", "p2"]) == {"p1": [1], "p2": {"a": 1}}


# -- TTL ---------------------------------------------------------------------------------
def test_ttl_expires(env: Env, backend: Any) -> None:
    put(backend, "short", 1, ttl=0.2)
    put(backend, "long", 2, ttl=600)
    put(backend, "forever", 3)
    assert backend.get("short") == 1
    assert env.expired(backend, "short", 0.2)
    assert backend.get("long") == 2
    assert backend.get("forever") == 3


def test_set_many_ttl_expires(env: Env, backend: Any) -> None:
    s = cw.JSONSerializer()
    backend.set_many([("t1", 1, s.dumps(1), None), ("t2", 2, s.dumps(2), None)], 0.2)
    assert backend.get_many(["t1", "t2"]) == {"t1": 1, "t2": 2}
    assert env.expired(backend, "t1", 0.2)
    assert env.expired(backend, "t2", 0.0)


def test_set_without_ttl_replaces_a_ttl(env: Env, backend: Any) -> None:
    put(backend, "k", 1, ttl=0.2)
    put(backend, "k", 2)
    if env.kind == "memory":
        env.expired(backend, "k", 0.2)
    else:
        time.sleep(0.3)  # the only way to show a Redis TTL did not fire is to outlive it
    assert backend.get("k") == 2


# -- clear -------------------------------------------------------------------------------
def test_clear_only_touches_its_own_prefix(env: Env, backend: Any) -> None:
    other = env.new()
    for b in (backend, other):
        for i in range(3):
            put(b, f"c{i}", i)
    backend.clear()
    assert backend.get_many(["c0", "c1", "c2"]) == {}
    assert other.get_many(["c0", "c1", "c2"]) == {"c0": 0, "c1": 1, "c2": 2}


def test_clear_with_glob_characters_in_the_prefix(shared: Env) -> None:
    env = shared
    base = unique("glob")
    tricky = env.new(f"{base}[ab]*?:")
    lookalike = env.new(f"{base}a-x:")  # matched by the unescaped pattern "{base}[ab]*"
    put(tricky, "k", 1)
    put(lookalike, "k", 2)
    tricky.clear()
    assert tricky.get("k") is MISS
    assert lookalike.get("k") == 2


def test_clear_many_keys(backend: Any) -> None:
    backend.set_many([(f"x{i}", i, None, None) for i in range(2500)], None)
    backend.clear()
    assert backend.get_many([f"x{i}" for i in range(0, 2500, 100)]) == {}


# -- versions ----------------------------------------------------------------------------
def test_memory_ignores_versions() -> None:
    b = cw.MemoryBackend()
    put(b, "k", "v5", version=5)
    put(b, "k", "v3", version=3)
    assert b.get("k") == "v3"  # last write wins; in-process locks keep order
    b.delete("k", version=6)
    assert b.get("k") is MISS


def test_versioned_set_if_newer(shared: Env) -> None:
    backend = shared.backend
    assert put(backend, "k", "v5", version=5) is True
    assert put(backend, "k", "v3", version=3) is False
    assert backend.get("k") == "v5"
    assert put(backend, "k", "v5 again", version=5) is False  # same version: same row
    assert backend.get("k") == "v5"
    backend.delete("k", version=6)
    assert backend.get("k") is MISS
    assert put(backend, "k", "v4", version=4) is False  # a late fill of an older row
    assert backend.get("k") is MISS
    assert put(backend, "k", "v7", version=7) is True
    assert backend.get("k") == "v7"


def test_tombstone_admits_the_row_of_its_own_version(shared: Env) -> None:
    backend = shared.backend
    # Write-around publishes the new row's version with the invalidation; the fill of
    # exactly that row must land, or every write would disable caching of its key.
    backend.delete("k", version=8)
    assert put(backend, "k", "v7", version=7) is False
    assert put(backend, "k", "v8", version=8) is True
    assert backend.get("k") == "v8"


def test_versioned_delete_keeps_a_newer_value(shared: Env) -> None:
    backend = shared.backend
    put(backend, "k", "v9", version=9)
    assert backend.delete("k", version=6) is False
    assert backend.get("k") == "v9"
    assert backend.delete("k", version=9) is False  # the value of that version stays
    assert backend.delete("k", version=10) is True
    assert backend.get("k") is MISS


def test_unversioned_writes_always_apply(shared: Env) -> None:
    backend = shared.backend
    put(backend, "k", "v9", version=9)
    put(backend, "k", "plain")
    assert backend.get("k") == "plain"
    backend.delete("k", version=12)
    put(backend, "k", "after tombstone")  # write-back accepts: the dirty table decides
    assert backend.get("k") == "after tombstone"
    assert put(backend, "k", "v10", version=10) is True  # unversioned counts as version 0
    backend.delete("k")
    assert backend.get("k") is MISS


def test_tombstone_expires(shared: Env, redis_url: str) -> None:
    backend = shared.backend
    from cacheway.backends.redis import RedisBackend

    b = RedisBackend(redis_url, prefix=backend.prefix, tombstone_ttl=0.2)
    try:
        b.delete("k", version=6)
        assert put(b, "k", "v4", version=4) is False
        assert wait_until(lambda: put(b, "k", "v4", version=4), timeout=5.0)
        assert b.get("k") == "v4"
    finally:
        b.close()


def test_set_many_is_set_if_newer_per_item(shared: Env) -> None:
    backend = shared.backend
    s = cw.JSONSerializer()
    put(backend, "a", "a9", version=9)
    put(backend, "b", "b1", version=1)
    backend.delete("c", version=5)
    backend.set_many(
        [
            ("a", "a3", s.dumps("a3"), 3),  # older: ignored
            ("b", "b4", s.dumps("b4"), 4),  # newer: applied
            ("c", "c2", s.dumps("c2"), 2),  # behind a tombstone: ignored
            ("d", "d0", s.dumps("d0"), None),  # unversioned: applied
        ],
        60,
    )
    assert backend.get_many(["a", "b", "c", "d"]) == {"a": "a9", "b": "b4", "d": "d0"}


def test_delete_many_with_versions(shared: Env) -> None:
    backend = shared.backend
    put(backend, "a", "a9", version=9)
    put(backend, "b", "b1", version=1)
    put(backend, "c", "c")
    backend.delete_many(["a", "b", "c"], [5, 5, None])
    assert backend.get_many(["a", "b", "c"]) == {"a": "a9"}
    assert put(backend, "b", "b3", version=3) is False  # tombstone v5 left by delete_many


def test_scripts_reload_when_redis_forgot_them(shared: Env,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    backend = shared.backend
    # What a restarted Redis (empty script cache) looks like to a pipeline: NOSCRIPT.
    monkeypatch.setattr(backend._set_script, "sha", "0" * 40)
    backend.set_many([("a", 1, None, 3), ("b", 2, None, None)], None)
    assert backend.get_many(["a", "b"]) == {"a": 1, "b": 2}
    monkeypatch.setattr(backend._set_script, "sha", "0" * 40)
    assert put(backend, "a", 5, version=5) is True  # single calls reload through redis-py
    assert backend.get("a") == 5
