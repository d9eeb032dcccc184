"""The public API of docs/design.md, used the way a new user would use it."""

from __future__ import annotations

import dataclasses

import pytest

import cacheway as cw

EMBEDDED_NAMES = {
    "Cache",
    "open",
    "SQLiteStore",
    "CallbackStore",
    "MemoryBackend",
    "WriteThrough",
    "WriteBack",
    "WriteAround",
    "Retry",
    "Stats",
    "CachewayError",
    "StoreError",
    "BackendError",
    "SerializationError",
    "Backpressure",
    "ConfigError",
    "ClosedError",
    # the asyncio front (issue 12)
    "AsyncCache",
    "AsyncCallbackStore",
    "AsyncNamespace",
    "open_async",
}

STATS_FIELDS = {
    "hits",
    "misses",
    "loads",
    "writes",
    "store_writes",
    "coalesced",
    "flushes",
    "flush_errors",
    "retries",
    "dead_letters",
    "dirty",
    "evictions",
    "journal_bytes",
    "journal_syncs",
}

CACHE_METHODS = [
    "get",
    "get_many",
    "set",
    "set_many",
    "delete",
    "delete_many",
    "incr",
    "flush",
    "pending",
    "stats",
    "namespace",
    "close",
    "__enter__",
    "__exit__",
]


def test_all_is_sorted_and_every_name_importable() -> None:
    assert list(cw.__all__) == sorted(cw.__all__)
    assert len(set(cw.__all__)) == len(cw.__all__), "duplicates in __all__"
    for name in cw.__all__:
        assert hasattr(cw, name), f"cacheway.__all__ lists {name!r} but it is not importable"
    ns: dict[str, object] = {}
    exec("from cacheway import *", ns)
    assert set(cw.__all__) <= set(ns)


def test_all_has_the_embedded_public_names() -> None:
    missing = EMBEDDED_NAMES - set(cw.__all__)
    assert not missing, f"missing from cacheway.__all__: {sorted(missing)}"


def test_errors_form_one_hierarchy() -> None:
    for name in ["StoreError", "BackendError", "SerializationError", "Backpressure",
                 "ConfigError", "ClosedError"]:
        err = getattr(cw, name)
        assert issubclass(err, cw.CachewayError), name
        assert issubclass(err, Exception)
    assert issubclass(cw.CachewayError, Exception)


def test_cache_has_every_method_of_the_contract(db_path: str, autoclose) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path)))
    for name in CACHE_METHODS:
        assert callable(getattr(cache, name, None)), f"Cache.{name} is missing"


def test_store_has_every_method_of_the_contract(db_path: str, make_store) -> None:
    for store in (cw.SQLiteStore(db_path), make_store().store):
        for name in ["load", "load_many", "save_many", "delete_many"]:
            assert callable(getattr(store, name, None)), f"{type(store).__name__}.{name}"


def test_defaults_are_memory_backend_and_write_through(db_path: str, autoclose) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path)))
    cache.set("k", {"a": 1})
    # write-through is the default policy: the store has it when set returns
    assert cw.SQLiteStore(db_path).load("k") == {"a": 1}
    assert cache.pending() == 0


def test_get_returns_default_for_missing_key(db_path: str, autoclose) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path)))
    assert cache.get("nope") is None
    assert cache.get("nope", default="d") == "d"
    assert cache.get("nope", "d2") == "d2"
    cache.set("k", 0)
    assert cache.get("k", default="d") == 0


def test_get_many_returns_only_found_keys(db_path: str, autoclose) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path)))
    cache.set("a", 1)
    cache.set("b", None)
    got = cache.get_many(["a", "b", "c"])
    assert isinstance(got, dict)
    assert got == {"a": 1, "b": None}


def test_set_many_and_delete_many(db_path: str, autoclose) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path)))
    cache.set_many({"a": 1, "b": [2], "c": {"x": 3}})
    assert cache.get_many(["a", "b", "c"]) == {"a": 1, "b": [2], "c": {"x": 3}}
    cache.delete_many(["a", "c", "never-set"])
    assert cache.get_many(["a", "b", "c"]) == {"b": [2]}
    cache.delete("b")
    assert cache.get("b", default="gone") == "gone"
    store = cw.SQLiteStore(db_path)
    assert store.load_many(["a", "b", "c"]) == {}


def test_incr_returns_int(db_path: str, autoclose) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path)))
    first = cache.incr("hits")
    assert first == 1
    assert type(first) is int
    assert cache.incr("hits", delta=5) == 6
    assert cache.incr("hits", -2) == 4
    assert cache.get("hits") == 4
    cache.set("n", 10)
    assert cache.incr("n") == 11


def test_flush_and_pending(db_path: str, autoclose) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path), policy=cw.WriteBack(max_delay=60)))
    cache.set("a", 1)
    cache.set("b", 2)
    assert cache.pending() == 2
    cache.flush()
    assert cache.pending() == 0
    assert cw.SQLiteStore(db_path).load_many(["a", "b"]) == {"a": 1, "b": 2}


def test_stats_is_a_dataclass_with_the_contract_fields(db_path: str, autoclose) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path)))
    stats = cache.stats()
    assert isinstance(stats, cw.Stats)
    assert dataclasses.is_dataclass(stats)
    names = {f.name for f in dataclasses.fields(stats)}
    missing = STATS_FIELDS - names
    assert not missing, f"Stats lacks {sorted(missing)}"
    for name in STATS_FIELDS:
        assert getattr(stats, name) == 0, f"a fresh cache has {name}={getattr(stats, name)}"


def test_stats_count_hits_misses_loads_writes(db_path: str, autoclose) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path), policy=cw.WriteThrough()))
    cache.set("a", 1)
    cache.set_many({"b": 2, "c": 3})
    assert cache.get("a") == 1  # hit: write-through filled the backend
    assert cache.get("zz") is None  # miss: one store load
    s = cache.stats()
    assert s.writes == 3
    assert s.hits == 1
    assert s.misses == 1
    assert s.loads == 1
    assert s.store_writes == 3
    assert s.dirty == 0


def test_stats_is_a_snapshot(db_path: str, autoclose) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path)))
    before = cache.stats()
    cache.set("a", 1)
    after = cache.stats()
    assert before.writes == 0
    assert after.writes == 1


def test_namespace_is_a_cache_like_view(db_path: str, autoclose) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path)))
    views = cache.namespace("views", policy=cw.WriteBack(max_delay=60), ttl=60)
    for name in ["get", "get_many", "set", "set_many", "delete", "delete_many", "incr",
                 "flush", "pending", "stats"]:
        assert callable(getattr(views, name, None)), f"namespace view lacks {name}"
    views.set("k", "view")
    cache.set("k", "root")
    assert views.get("k") == "view"
    assert cache.get("k") == "root"
    assert views.pending() == 1
    cache.flush()  # covers every namespace
    assert views.pending() == 0
    store = cw.SQLiteStore(db_path)
    assert store.load("k", namespace="views") == "view"
    assert store.load("k") == "root"


def test_namespace_inherits_parent_policy(db_path: str, autoclose) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path), policy=cw.WriteThrough()))
    users = cache.namespace("users")
    users.set("u1", {"name": "ada"})
    # inherited write-through: in the store when set returns, no flush needed
    assert cw.SQLiteStore(db_path).load("u1", namespace="users") == {"name": "ada"}
    assert cw.SQLiteStore(db_path).load("u1") is None


def test_namespace_keys_reach_a_callback_store_prefixed(make_store, autoclose) -> None:
    ds = make_store()
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteThrough()))
    cache.namespace("views").set("k", 1)
    cache.set("k", 2)
    assert ds.data == {"views:k": 1, "k": 2}


def test_namespace_with_its_own_store(db_path: str, make_store, autoclose) -> None:
    ds = make_store()
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path), policy=cw.WriteThrough()))
    side = cache.namespace("side", store=ds.store)
    side.set("k", 1)
    assert ds.data.get("side:k", ds.data.get("k")) == 1
    assert cw.SQLiteStore(db_path).load("k", namespace="side") is None


def test_close_flushes_and_later_use_raises_closed(db_path: str) -> None:
    cache = cw.Cache(store=cw.SQLiteStore(db_path), policy=cw.WriteBack(max_delay=60))
    cache.set("a", 1)
    cache.close()
    assert cw.SQLiteStore(db_path).load("a") == 1
    with pytest.raises(cw.ClosedError):
        cache.get("a")


def test_context_manager_closes_and_flushes(db_path: str) -> None:
    with cw.Cache(store=cw.SQLiteStore(db_path), policy=cw.WriteBack(max_delay=60)) as cache:
        cache.set("a", [1, 2])
        assert cache.pending() == 1
    assert cw.SQLiteStore(db_path).load("a") == [1, 2]
    with pytest.raises(cw.ClosedError):
        cache.set("b", 1)


def test_open_url_form_write_back(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    cache = cw.open(store="sqlite:///app.db", backend="memory://", policy="write-back")
    try:
        cache.set("a", {"x": 1})
        assert cache.get("a") == {"x": 1}
        cache.flush()
    finally:
        cache.close()
    assert (tmp_path / "app.db").exists()
    assert cw.SQLiteStore(str(tmp_path / "app.db")).load("a") == {"x": 1}


def test_open_absolute_path_positional(db_path: str) -> None:
    with cw.open(f"sqlite:///{db_path}", backend="memory://", policy="write-back") as cache:
        cache.set("a", 1)
    assert cw.SQLiteStore(db_path).load("a") == 1


@pytest.mark.parametrize("policy", ["write-through", "write-around"])
def test_open_policies_that_write_the_store_first(db_path: str, policy: str) -> None:
    with cw.open(store=f"sqlite:///{db_path}", backend="memory://", policy=policy) as cache:
        cache.set("a", 1)
        assert cw.SQLiteStore(db_path).load("a") == 1  # before any flush
        assert cache.get("a") == 1


def test_close_leaves_a_store_passed_in_open(db_path: str) -> None:
    store = cw.SQLiteStore(db_path)
    cache = cw.Cache(store=store, policy=cw.WriteThrough())
    cache.set("a", 1)
    cache.close()
    # the store belongs to the caller: still usable after the cache closed
    assert store.load("a") == 1
    store.save_many({"b": 2})
    assert store.load_many(["a", "b"]) == {"a": 1, "b": 2}


def test_retry_accepts_the_contract_arguments() -> None:
    r = cw.Retry(attempts=None, base_delay=0.1, max_delay=30.0, jitter=True)
    assert r is not None
    cw.Retry(attempts=3, base_delay=0.01, max_delay=0.05, jitter=False)
    policy = cw.WriteBack(
        max_delay=1.0, batch_size=500, max_dirty=100_000, on_full="block", block_timeout=10.0,
        journal=None, fsync="everysec", retry=r, on_dead_letter=None,
    )
    assert policy is not None
    assert cw.WriteAround(fill_ttl=300) is not None


def test_cache_accepts_default_ttl(db_path: str, autoclose) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path),
                               backend=cw.MemoryBackend(max_entries=100_000),
                               policy=cw.WriteBack(max_delay=1.0, batch_size=500), ttl=None))
    cache.set("a", 1, ttl=30)
    cache.set_many({"b": 2}, ttl=30)
    assert cache.get_many(["a", "b"]) == {"a": 1, "b": 2}


def test_get_many_of_many_missing_keys_is_one_store_load(make_store, autoclose) -> None:
    ds = make_store({f"k{i}": i for i in range(0, 100, 2)})
    cache = autoclose(cw.Cache(store=ds.store))
    got = cache.get_many([f"k{i}" for i in range(100)])
    assert got == {f"k{i}": i for i in range(0, 100, 2)}
    assert len(ds.load_calls) == 1
    assert cache.stats().loads == 1
    assert cache.stats().misses == 100


def test_reads_of_dirty_entries_are_hits(make_store, autoclose) -> None:
    ds = make_store()
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(max_delay=60)))
    cache.set("a", 1)
    cache.delete("b")
    assert cache.get("a") == 1
    assert cache.get("b", default="absent") == "absent"
    s = cache.stats()
    assert (s.hits, s.misses, s.loads) == (2, 0, 0)
    assert ds.load_calls == []
