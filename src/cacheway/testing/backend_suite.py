"""The generic backend suite: every backend passes the same tests.

Subclass :class:`BackendSuite` in a test module and give it :meth:`~BackendSuite.make_backend`;
pytest collects the inherited ``test_*`` methods (the subclass's name must start with
``Test``)::

    from cacheway.testing import BackendSuite

    class TestMyBackend(SharedBackendSuite):  # many processes share it: versions too

        def make_backend(self) -> Backend:
            return MyBackend(prefix=unique_prefix())

Versions (set-if-newer, tombstones) are a contract of shared backends only
(:class:`SharedBackendSuite`): ``MemoryBackend`` ignores them, as in one process the engines' stripe
locks and fill tokens do that job. TTL tests let time pass through :meth:`expire`, which
polls real time unless the subclass moves an injected clock.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

import cacheway as cw
from cacheway.backends.base import MISS, Backend

from .support import wait_until

__all__ = ["BackendSuite", "SharedBackendSuite", "put"]


def put(backend: Any, key: str, value: Any, ttl: float | None = None,
        version: int | None = None) -> Any:
    """Set as the engines do: with the serializer's payload alongside the value."""
    return backend.set(key, value, cw.JSONSerializer().dumps(value), ttl, version)


class BackendSuite:
    """The backend contract as pytest tests; subclasses provide :meth:`make_backend`."""

    #: True when :meth:`expire` moves an injected clock instead of waiting.
    clock_driven: ClassVar[bool] = False

    _made: list[Any]

    # -- hooks -----------------------------------------------------------------------------
    def make_backend(self) -> Backend:
        """A new backend with a key space of its own (each call a different one), bound to
        the JSON serializer where the backend takes one. Closed (after ``clear()``) at
        teardown."""
        raise NotImplementedError

    def expire(self, backend: Any, key: str, ttl: float) -> bool:
        """Let ``ttl`` seconds pass; True once ``key`` reads as a miss. The default polls
        real time for 5 s; a backend with an injected clock moves it instead."""
        return wait_until(lambda: backend.get(key) is MISS, timeout=5.0)

    # -- fixtures --------------------------------------------------------------------------
    def new_backend(self) -> Any:
        backend = self.make_backend()
        self._made.append(backend)
        return backend

    @pytest.fixture
    def backend(self) -> Iterator[Any]:
        self._made = []
        try:
            yield self.new_backend()
        finally:
            for made in reversed(self._made):
                try:
                    made.clear()
                finally:
                    made.close()

    # -- the protocol ----------------------------------------------------------------------
    def test_is_a_backend(self, backend: Any) -> None:
        assert isinstance(backend, Backend)
        assert isinstance(backend.local, bool)
        assert backend.evictions >= 0

    def test_get_set_delete(self, backend: Any) -> None:
        assert backend.get("a") is MISS
        put(backend, "a", {"x": [1, 2]})
        assert backend.get("a") == {"x": [1, 2]}
        put(backend, "a", "second")
        assert backend.get("a") == "second"
        backend.delete("a")
        assert backend.get("a") is MISS
        backend.delete("a")  # deleting a missing key is fine

    def test_set_without_payload_serializes_the_value(self, backend: Any) -> None:
        backend.set("n", 41, None, None)
        assert backend.get("n") == 41

    @pytest.mark.parametrize("value", [None, 0, "", [], {}, False, "ü€", 2**62, 1.5])
    def test_falsy_and_odd_values_round_trip(self, backend: Any, value: Any) -> None:
        put(backend, "v", value)
        got = backend.get("v")
        assert got is not MISS
        assert got == value

    def test_keys_are_exact_strings(self, backend: Any) -> None:
        put(backend, ":a", 1)
        put(backend, "ns:a", 2)
        put(backend, "ns:a ", 3)
        put(backend, "ключ*?[]", 4)
        assert [backend.get(k) for k in (":a", "ns:a", "ns:a ", "ключ*?[]")] == [1, 2, 3, 4]
        assert backend.get("a") is MISS

    def test_get_many_returns_found_keys_only(self, backend: Any) -> None:
        for i in range(5):
            put(backend, f"k{i}", i)
        got = backend.get_many([f"k{i}" for i in range(8)])
        assert got == {f"k{i}": i for i in range(5)}
        assert backend.get_many([]) == {}

    def test_set_many_and_delete_many(self, backend: Any) -> None:
        s = cw.JSONSerializer()
        backend.set_many([(f"m{i}", i, s.dumps(i), None) for i in range(50)], None)
        assert backend.get_many([f"m{i}" for i in range(50)]) == {f"m{i}": i for i in range(50)}
        backend.delete_many([f"m{i}" for i in range(0, 50, 2)] + ["never-set"])
        assert backend.get_many([f"m{i}" for i in range(50)]) == {
            f"m{i}": i for i in range(1, 50, 2)
        }
        backend.set_many([], None)
        backend.delete_many([])

    def test_set_many_with_payloads_none(self, backend: Any) -> None:
        backend.set_many([("p1", [1], None, None), ("p2", {"a": 1}, None, None)], None)
        assert backend.get_many(["p1", "p2"]) == {"p1": [1], "p2": {"a": 1}}

    # -- TTL -------------------------------------------------------------------------------
    def test_ttl_expires(self, backend: Any) -> None:
        put(backend, "short", 1, ttl=0.2)
        put(backend, "long", 2, ttl=600)
        put(backend, "forever", 3)
        assert backend.get("short") == 1
        assert self.expire(backend, "short", 0.2)
        assert backend.get("long") == 2
        assert backend.get("forever") == 3

    def test_set_many_ttl_expires(self, backend: Any) -> None:
        s = cw.JSONSerializer()
        backend.set_many([("t1", 1, s.dumps(1), None), ("t2", 2, s.dumps(2), None)], 0.2)
        assert backend.get_many(["t1", "t2"]) == {"t1": 1, "t2": 2}
        assert self.expire(backend, "t1", 0.2)
        assert self.expire(backend, "t2", 0.0)

    def test_set_without_ttl_replaces_a_ttl(self, backend: Any) -> None:
        put(backend, "k", 1, ttl=0.2)
        put(backend, "k", 2)
        if self.clock_driven:
            self.expire(backend, "k", 0.2)
        else:
            time.sleep(0.3)  # the only way to show a real-time TTL did not fire: outlive it
        assert backend.get("k") == 2

    # -- clear -----------------------------------------------------------------------------
    def test_clear_only_touches_its_own_key_space(self, backend: Any) -> None:
        other = self.new_backend()
        for b in (backend, other):
            for i in range(3):
                put(b, f"c{i}", i)
        backend.clear()
        assert backend.get_many(["c0", "c1", "c2"]) == {}
        assert other.get_many(["c0", "c1", "c2"]) == {"c0": 0, "c1": 1, "c2": 2}

    def test_clear_many_keys(self, backend: Any) -> None:
        backend.set_many([(f"x{i}", i, None, None) for i in range(2500)], None)
        backend.clear()
        assert backend.get_many([f"x{i}" for i in range(0, 2500, 100)]) == {}



class SharedBackendSuite(BackendSuite):
    """:class:`BackendSuite` plus the contract of backends that many processes share
    (Redis, two levels): versioned set-if-newer writes and tombstones."""

    @pytest.fixture
    def shared_backend(self, backend: Any) -> Any:
        return backend

    def test_versioned_set_if_newer(self, shared_backend: Any) -> None:
        backend = shared_backend
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

    def test_tombstone_admits_the_row_of_its_own_version(self, shared_backend: Any) -> None:
        backend = shared_backend
        # Write-around publishes the new row's version with the invalidation; the fill of
        # exactly that row must land, or every write would disable caching of its key.
        backend.delete("k", version=8)
        assert put(backend, "k", "v7", version=7) is False
        assert put(backend, "k", "v8", version=8) is True
        assert backend.get("k") == "v8"

    def test_versioned_delete_keeps_a_newer_value(self, shared_backend: Any) -> None:
        backend = shared_backend
        put(backend, "k", "v9", version=9)
        assert backend.delete("k", version=6) is False
        assert backend.get("k") == "v9"
        assert backend.delete("k", version=9) is False  # the value of that version stays
        assert backend.delete("k", version=10) is True
        assert backend.get("k") is MISS

    def test_unversioned_writes_always_apply(self, shared_backend: Any) -> None:
        backend = shared_backend
        put(backend, "k", "v9", version=9)
        put(backend, "k", "plain")
        assert backend.get("k") == "plain"
        backend.delete("k", version=12)
        put(backend, "k", "after tombstone")  # write-back accepts: the dirty table decides
        assert backend.get("k") == "after tombstone"
        assert put(backend, "k", "v10", version=10) is True  # unversioned counts as version 0
        backend.delete("k")
        assert backend.get("k") is MISS

    def test_set_many_is_set_if_newer_per_item(self, shared_backend: Any) -> None:
        backend = shared_backend
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

    def test_delete_many_with_versions(self, shared_backend: Any) -> None:
        backend = shared_backend
        put(backend, "a", "a9", version=9)
        put(backend, "b", "b1", version=1)
        put(backend, "c", "c")
        backend.delete_many(["a", "b", "c"], [5, 5, None])
        assert backend.get_many(["a", "b", "c"]) == {"a": "a9"}
        assert put(backend, "b", "b3", version=3) is False  # tombstone v5 left by delete_many
