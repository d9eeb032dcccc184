"""MemoryBackend through the Cache: LRU order, max_entries, max_bytes, TTL with an injected
timer, evictions in stats(), and object identity vs what the store receives."""

from __future__ import annotations

from typing import Any

import pytest

import cacheway as cw
from cacheway.backends.base import Backend, backend_capabilities


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def loads_of(ds, key: str) -> int:
    return sum(call.count(key) for call in ds.load_calls)


def test_lru_evicts_the_least_recently_used(make_store, autoclose) -> None:
    ds = make_store({k: k.upper() for k in "abcdef"})
    cache = autoclose(cw.Cache(store=ds.store, backend=cw.MemoryBackend(max_entries=3),
                               policy=cw.WriteThrough()))
    for k in "abc":
        assert cache.get(k) == k.upper()  # fills a, b, c
    assert cache.get("a") == "A"  # a is now the most recently used
    assert cache.get("d") == "D"  # fills d and evicts b, the least recently used
    assert [loads_of(ds, k) for k in "abcd"] == [1, 1, 1, 1]
    for k in "acd":
        assert cache.get(k) == k.upper()
    assert [loads_of(ds, k) for k in "acd"] == [1, 1, 1], "a recently used key was evicted"
    assert cache.get("b") == "B"
    assert loads_of(ds, "b") == 2, "b should have been evicted"
    assert cache.stats().evictions == 2  # b to make room for d, then a for b


def test_max_entries_bounds_the_backend(make_store, autoclose) -> None:
    ds = make_store({f"k{i}": i for i in range(30)})
    cache = autoclose(cw.Cache(store=ds.store, backend=cw.MemoryBackend(max_entries=10),
                               policy=cw.WriteThrough()))
    for i in range(30):
        assert cache.get(f"k{i}") == i
    assert cache.stats().evictions == 20
    before = len(ds.load_calls)
    for i in range(20, 30):
        assert cache.get(f"k{i}") == i  # the last 10 are still cached
    assert len(ds.load_calls) == before
    assert cache.get("k0") == 0
    assert len(ds.load_calls) == before + 1


def test_max_bytes_bounds_the_backend(make_store, autoclose) -> None:
    value = "x" * 200
    ds = make_store({f"k{i:03d}": value for i in range(100)})
    cache = autoclose(cw.Cache(store=ds.store, backend=cw.MemoryBackend(max_bytes=5000),
                               policy=cw.WriteThrough()))
    for i in range(100):
        assert cache.get(f"k{i:03d}") == value
    # at most 25 values of 200 bytes fit in 5000 bytes, whatever the per-entry overhead
    assert cache.stats().evictions >= 75
    before = len(ds.load_calls)
    assert cache.get("k099") == value  # the most recent one is still cached
    assert len(ds.load_calls) == before
    assert cache.get("k000") == value
    assert len(ds.load_calls) == before + 1


def test_value_larger_than_max_bytes_is_still_served(make_store, autoclose) -> None:
    big = "y" * 10_000
    ds = make_store({"big": big})
    cache = autoclose(cw.Cache(store=ds.store, backend=cw.MemoryBackend(max_bytes=1000),
                               policy=cw.WriteThrough()))
    assert cache.get("big") == big
    assert cache.get("big") == big


def test_ttl_expires_with_an_injected_timer(make_store, autoclose, clock) -> None:
    ds = make_store({"k": "v"})
    cache = autoclose(cw.Cache(store=ds.store, backend=cw.MemoryBackend(timer=clock),
                               policy=cw.WriteThrough(), ttl=10))
    assert cache.get("k") == "v"
    clock.advance(9)
    assert cache.get("k") == "v"
    assert loads_of(ds, "k") == 1, "expired before its ttl"
    clock.advance(2)
    assert cache.get("k") == "v"
    assert loads_of(ds, "k") == 2, "still cached after its ttl"
    assert cache.stats().evictions >= 1


def test_no_ttl_never_expires(make_store, autoclose, clock) -> None:
    ds = make_store({"k": "v"})
    cache = autoclose(cw.Cache(store=ds.store, backend=cw.MemoryBackend(timer=clock),
                               policy=cw.WriteThrough()))
    assert cache.get("k") == "v"
    clock.advance(10 ** 7)
    assert cache.get("k") == "v"
    assert loads_of(ds, "k") == 1


def test_per_call_ttl_overrides_the_default(db_path: str, autoclose, clock) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path),
                               backend=cw.MemoryBackend(timer=clock),
                               policy=cw.WriteThrough(), ttl=10))
    cache.set("short", 1)
    cache.set("long", 2, ttl=100)
    cache.set_many({"many": 3}, ttl=100)
    misses = cache.stats().misses
    clock.advance(50)
    assert cache.get("long") == 2
    assert cache.get("many") == 3
    assert cache.stats().misses == misses, "per-call ttl=100 expired after 50 s"
    assert cache.get("short") == 1  # from the store again
    assert cache.stats().misses == misses + 1
    clock.advance(51)
    assert cache.get("long") == 2
    assert cache.stats().misses == misses + 2


@pytest.mark.parametrize("ttl_on", ["namespace", "parent"])
def test_namespace_ttl(make_store, autoclose, clock, ttl_on: str) -> None:
    # a namespace's own ttl, or the one it inherits from its cache
    ds = make_store({"views:k": "v"})
    cache = autoclose(cw.Cache(store=ds.store, backend=cw.MemoryBackend(timer=clock),
                               policy=cw.WriteThrough(),
                               ttl=5 if ttl_on == "parent" else None))
    views = cache.namespace("views", ttl=5) if ttl_on == "namespace" else cache.namespace("views")
    assert views.get("k") == "v"
    clock.advance(4)
    assert views.get("k") == "v"
    assert loads_of(ds, "views:k") == 1
    clock.advance(2)
    assert views.get("k") == "v"
    assert loads_of(ds, "views:k") == 2


def test_write_around_fill_ttl(make_store, autoclose, clock) -> None:
    ds = make_store({"k": "v"})
    cache = autoclose(cw.Cache(store=ds.store, backend=cw.MemoryBackend(timer=clock),
                               policy=cw.WriteAround(fill_ttl=5)))
    assert cache.get("k") == "v"
    clock.advance(4)
    assert cache.get("k") == "v"
    assert loads_of(ds, "k") == 1
    clock.advance(2)
    assert cache.get("k") == "v"
    assert loads_of(ds, "k") == 2


def test_ttl_expiry_of_a_dirty_entry_keeps_it_readable(make_store, autoclose, clock) -> None:
    ds = make_store()
    cache = autoclose(cw.Cache(store=ds.store, backend=cw.MemoryBackend(timer=clock),
                               policy=cw.WriteBack(max_delay=60), ttl=1))
    cache.set("k", "dirty")
    clock.advance(5)
    assert cache.get("k") == "dirty"
    cache.flush()
    assert ds.data == {"k": "dirty"}


@pytest.mark.parametrize("policy", [cw.WriteThrough, lambda: cw.WriteBack(max_delay=60)],
                         ids=["write-through", "write-back"])
def test_memory_backend_keeps_a_copy_that_reads_share(db_path: str, autoclose, policy
                                                      ) -> None:
    # Value fidelity (issue 10 item 4): the caller's object is not kept (changing it later
    # must change nothing); reads share one copy (treat it as read-only, as lru_cache's).
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path), backend=cw.MemoryBackend(),
                               policy=policy()))
    obj = {"a": [1, 2]}
    cache.set("k", obj)
    got = cache.get("k")
    assert got == obj
    assert got is not obj
    assert got["a"] is not obj["a"]
    assert cache.get("k") is got
    assert cache.get_many(["k"])["k"] is got


@pytest.mark.parametrize("policy", [cw.WriteThrough, lambda: cw.WriteBack(max_delay=60)],
                         ids=["write-through", "write-back"])
def test_store_gets_what_was_serialized_at_set_time(db_path: str, autoclose, policy) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path), backend=cw.MemoryBackend(),
                               policy=policy()))
    obj = {"a": [1, 2]}
    cache.set("k", obj)
    obj["a"].append(3)
    obj["b"] = "later"
    cache.flush()
    assert cw.SQLiteStore(db_path).load("k") == {"a": [1, 2]}


def test_callback_store_gets_what_was_serialized_at_set_time(make_store, autoclose) -> None:
    ds = make_store()
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(max_delay=60)))
    obj = {"a": 1}
    cache.set("k", obj)
    obj["a"] = 2
    cache.flush()
    assert ds.data == {"k": {"a": 1}}
    assert ds.data["k"] is not obj


def test_timer_must_be_callable() -> None:
    with pytest.raises(cw.ConfigError):
        cw.MemoryBackend(timer=5)


@pytest.mark.parametrize("max_entries", [None, 100])
def test_keys_len_peek_and_clear_across_namespaces(make_store, autoclose,
                                                   max_entries: int | None) -> None:
    # An unbounded backend keeps one dict per namespace; a bounded one, one LRU dict.
    # Either way the backend's own view is of full "namespace:key" keys.
    backend = cw.MemoryBackend(max_entries=max_entries)
    cache = autoclose(cw.Cache(store=make_store().store, backend=backend,
                               policy=cw.WriteThrough()))
    views = cache.namespace("views")
    cache.set("a:b", 1)
    views.set("b", 2)
    backend.set("plain", 3, None, None)  # no namespace at all
    assert sorted(backend) == sorted(backend.keys()) == [":a:b", "plain", "views:b"]
    assert len(backend) == 3
    assert backend.peek(":a:b") == 1
    assert backend.peek("views:b") == 2
    assert backend.peek("plain") == 3
    assert backend.peek("views:a:b") is cw.backends.base.MISS
    backend.delete("views:b")
    assert views.get("b") == 2  # a miss: read through again
    assert backend.peek("views:b") == 2
    # a key that looks namespaced but is no cache's namespace: no dict is made for it
    backend.set("id123:x", 4, None, None)
    assert backend.peek("id123:x") == 4
    assert "id123:x" in list(backend)
    if max_entries is None:
        assert set(backend._spaces) == {"", "views"}
        # ...until a cache's namespace of that name asks for one: the entry moves in
        ids = cache.namespace("id123")
        view = backend.fast_view("id123")
        assert view is not None
        assert view.namespaced
        assert view.data["x"][0] == 4
        assert ids.get("x") == 4
        assert backend.peek("id123:x") == 4
    backend.clear()
    assert len(backend) == 0
    assert list(backend) == []
    # the engines still see (and refill) the backend they were given
    assert cache.get("a:b") == 1
    assert backend.peek(":a:b") == 1


def test_unbounded_backend_expires_per_namespace_entries(make_store, autoclose, clock) -> None:
    backend = cw.MemoryBackend(timer=clock)
    ds = make_store()
    cache = autoclose(cw.Cache(store=ds.store, backend=backend, ttl=5,
                               policy=cw.WriteBack(max_delay=60)))
    cache.set("k", "v")
    assert backend.peek(":k") == "v"
    clock.advance(6)
    assert backend.peek(":k") is cw.backends.base.MISS
    assert cache.get("k") == "v"  # expired copy, still pending: the dirty table answers
    cache.flush()
    assert ds.data == {"k": "v"}


# -- the declared fast view and capabilities ------------------------------------------------
def test_fast_view_of_a_bounded_backend_is_its_lru_dict() -> None:
    clock = FakeClock()
    backend = cw.MemoryBackend(max_entries=2, timer=clock)
    view = backend.fast_view("ns")
    assert view is not None
    assert (view.ordered, view.namespaced, view.counts_bytes, view.gate) == (
        True, False, False, None)
    assert view.max_entries == 2
    assert view.timer is clock
    backend.set("ns:a", 1, None, 10)
    assert view.data["ns:a"] == (1, clock.now + 10, 0, 0.0)  # the documented layout
    # what an engine may do inline: insert under the lock, then evict over max_entries
    with view.lock, view.lock:  # the backend's own lock, reentrant
        view.data["ns:b"] = (2, None, 0, 0.0)
        view.data["ns:c"] = (3, None, 0, 0.0)
        view.evict()
    assert backend.get("ns:a") is cw.backends.base.MISS  # the least recently used went
    assert (backend.get("ns:b"), backend.get("ns:c")) == (2, 3)
    assert backend.evictions == 1


def test_fast_view_of_an_unbounded_backend_is_one_namespace() -> None:
    backend = cw.MemoryBackend()
    backend.set("ns:a", 1, None, None)  # stored before the view: it moves in
    view = backend.fast_view("ns")
    assert view is not None
    assert view.namespaced
    assert not view.ordered
    assert view.data == {"a": (1, None, 0, 0.0)}
    view.data["b"] = (2, None, 0, 0.0)  # set inline by an engine
    assert backend.get("ns:b") == 2
    backend.delete("ns:a")
    assert "a" not in view.data
    assert backend.fast_view("ns").data is view.data  # type: ignore[union-attr]


def test_fast_view_says_when_sizes_are_kept() -> None:
    view = cw.MemoryBackend(max_bytes=10_000).fast_view("")
    assert view is not None
    assert view.counts_bytes
    assert view.ordered


def test_no_fast_view_for_a_subclass_that_overrides_get_or_set() -> None:
    class Counting(cw.MemoryBackend):
        def get(self, key: str) -> Any:
            return super().get(key)

    class Checking(cw.MemoryBackend):
        def set(self, key: str, value: Any, *args: Any, **kw: Any) -> None:
            super().set(key, value, *args, **kw)

    class Named(cw.MemoryBackend):  # adds, overrides neither: inlined as the base
        def name(self) -> str:
            return "named"

    assert Counting(max_entries=5).fast_view("") is None
    assert Checking().fast_view("") is None
    assert Named(max_entries=5).fast_view("") is not None


def test_delete_many_takes_versions() -> None:
    backend = cw.MemoryBackend()
    backend.set_many([("a", 1, None, None), ("b", 2, None, None)], None)
    backend.delete_many(["a", "b"], versions=[3, None])
    assert len(backend) == 0


def test_capabilities_of_a_memory_backend() -> None:
    backend = cw.MemoryBackend(max_entries=5)
    caps = backend_capabilities(backend)
    assert caps.local is True
    for name in ("meta", "stale", "peek", "fork", "fast", "versioned_deletes"):
        assert getattr(caps, name) is backend, name
    for name in ("leases", "publish", "clock", "serializer", "ttl_reads", "decode_errors"):
        assert getattr(caps, name) is None, name
    assert caps.lease_ttl == 10.0


def test_capabilities_of_a_minimal_backend() -> None:
    class Minimal:
        local = True
        evictions = 0

        def get(self, key: str) -> Any:
            return cw.backends.base.MISS

        def get_many(self, keys: Any) -> dict[str, Any]:
            return {}

        def set(self, *args: Any) -> None: ...

        def set_many(self, items: Any, ttl: Any) -> None: ...

        def delete(self, key: str, version: Any = None) -> None: ...

        def delete_many(self, keys: Any) -> None: ...  # no versions: not declared

        def clear(self) -> None: ...

        def close(self) -> None: ...

    backend = Minimal()
    assert isinstance(backend, Backend)
    caps = backend_capabilities(backend)
    assert caps.local
    assert caps.versioned_deletes is None
    assert caps.fast is None
    assert caps.meta is None
    assert caps.leases is None
    assert caps.lease_ttl == 10.0
