"""The generic backend suite (``cacheway.testing.BackendSuite``) on every backend here:
``MemoryBackend`` (with an injected clock), ``RedisBackend`` (a real Redis, a fresh key
prefix per backend, cleaned up after) and ``TwoLevelBackend`` (memory in front of Redis).
Redis-only tests (glob characters in prefixes, tombstone expiry, script reloads) stay here.
"""

from __future__ import annotations

import pytest

import cacheway as cw
from cacheway.backends.base import MISS, Backend
from cacheway.backends.redis import RedisBackend
from cacheway.testing import BackendSuite, SharedBackendSuite, put
from conftest import wait_until
from services import REDIS_URL, require, unique


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def redis_backend(prefix: str | None = None, **kw: object) -> RedisBackend:
    b = RedisBackend(REDIS_URL, prefix=prefix or f"{unique('suite')}:", **kw)  # type: ignore[arg-type]
    b.bind_serializer(cw.JSONSerializer())
    return b


class TestMemoryBackend(BackendSuite):
    clock_driven = True

    def make_backend(self) -> Backend:
        self.clock = getattr(self, "clock", None) or Clock()
        return cw.MemoryBackend(timer=self.clock)

    def expire(self, backend: object, key: str, ttl: float) -> bool:
        self.clock.now += ttl + 0.001
        return backend.get(key) is MISS  # type: ignore[attr-defined]


def test_memory_ignores_versions() -> None:
    b = cw.MemoryBackend()
    put(b, "k", "v5", version=5)
    put(b, "k", "v3", version=3)
    assert b.get("k") == "v3"  # last write wins; in-process locks keep order
    b.delete("k", version=6)
    assert b.get("k") is MISS


class TestRedisBackend(SharedBackendSuite):

    def make_backend(self) -> Backend:
        require("redis")
        return redis_backend()

    def test_clear_with_glob_characters_in_the_prefix(self) -> None:
        require("redis")
        base = unique("glob")
        tricky = redis_backend(f"{base}[ab]*?:")
        lookalike = redis_backend(f"{base}a-x:")  # matched by the unescaped "{base}[ab]*"
        try:
            put(tricky, "k", 1)
            put(lookalike, "k", 2)
            tricky.clear()
            assert tricky.get("k") is MISS
            assert lookalike.get("k") == 2
        finally:
            for b in (tricky, lookalike):
                b.clear()
                b.close()

    def test_tombstone_expires(self, backend: RedisBackend) -> None:
        b = redis_backend(backend.prefix, tombstone_ttl=0.2)
        try:
            b.delete("k", version=6)
            assert put(b, "k", "v4", version=4) is False
            assert wait_until(lambda: put(b, "k", "v4", version=4), timeout=5.0)
            assert b.get("k") == "v4"
        finally:
            b.close()

    def test_scripts_reload_when_redis_forgot_them(self, backend: RedisBackend,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
        # What a restarted Redis (empty script cache) looks like to a pipeline: NOSCRIPT.
        monkeypatch.setattr(backend._set_script, "sha", "0" * 40)
        backend.set_many([("a", 1, None, 3), ("b", 2, None, None)], None)
        assert backend.get_many(["a", "b"]) == {"a": 1, "b": 2}
        monkeypatch.setattr(backend._set_script, "sha", "0" * 40)
        assert put(backend, "a", 5, version=5) is True  # single calls reload through redis-py
        assert backend.get("a") == 5


class TestTwoLevelBackend(SharedBackendSuite):

    def make_backend(self) -> Backend:
        require("redis")
        l2 = redis_backend()
        two = cw.TwoLevelBackend(cw.MemoryBackend(), l2)
        two.bind_serializer(cw.JSONSerializer())
        self._l2s = [*getattr(self, "_l2s", []), l2]
        return two

    @pytest.fixture(autouse=True)
    def _close_l2(self) -> object:
        yield
        for l2 in getattr(self, "_l2s", []):
            l2.clear()
            l2.close()
