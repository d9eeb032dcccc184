"""One generic suite every policy must pass: WriteThrough(), WriteBack(max_delay=0.05),
WriteAround(), each over SQLiteStore + MemoryBackend (parametrised in conftest)."""

from __future__ import annotations

import pytest

import cacheway as cw


@pytest.fixture
def cache(db_path: str, make_policy, autoclose):
    return autoclose(
        cw.Cache(store=cw.SQLiteStore(db_path), backend=cw.MemoryBackend(), policy=make_policy())
    )


def stored(db_path: str, key: str, namespace: str | None = None) -> dict:
    """What a second SQLiteStore on the same file sees: {key: value} or {} when absent."""
    store = cw.SQLiteStore(db_path)
    try:
        if namespace is None:
            return store.load_many([key])
        return store.load_many([key], namespace=namespace)
    finally:
        store.close()


def test_read_your_writes(cache) -> None:
    cache.set("a", {"n": 1, "tags": ["x"]})
    assert cache.get("a") == {"n": 1, "tags": ["x"]}
    cache.set("a", "second")
    assert cache.get("a") == "second"


def test_delete_then_get_returns_default(cache) -> None:
    cache.set("a", 1)
    cache.delete("a")
    assert cache.get("a") is None
    assert cache.get("a", default="d") == "d"
    assert cache.get_many(["a"]) == {}


def test_delete_of_missing_key_is_fine(cache) -> None:
    cache.delete("never")
    cache.delete_many(["never", "again"])
    assert cache.get("never", default="d") == "d"


def test_none_is_a_value_not_a_miss(cache, db_path: str) -> None:
    cache.set("n", None)
    assert cache.get("n", default="d") is None
    assert cache.get_many(["n", "missing"]) == {"n": None}
    assert cache.get("missing", default="d") == "d"
    cache.flush()
    assert stored(db_path, "n") == {"n": None}


def test_none_survives_a_read_through(db_path: str, make_policy, autoclose) -> None:
    cw.SQLiteStore(db_path).save_many({"n": None})
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path), policy=make_policy()))
    assert cache.get("n", default="d") is None
    assert cache.get("n", default="d") is None  # now from the backend


def test_get_many_returns_found_keys_only(cache) -> None:
    cache.set("a", 1)
    cache.set("b", 2)
    cache.delete("b")
    assert cache.get_many(["a", "b", "c"]) == {"a": 1}
    assert cache.get_many([]) == {}


def test_get_many_mixes_backend_and_store(cache, db_path: str) -> None:
    cw.SQLiteStore(db_path).save_many({"s1": "from-store", "s2": 2})
    cache.set("c1", "from-cache")
    got = cache.get_many(["c1", "s1", "s2", "zz"])
    assert got == {"c1": "from-cache", "s1": "from-store", "s2": 2}


def test_read_through_fills_from_the_store(cache, db_path: str) -> None:
    cw.SQLiteStore(db_path).save_many({"p": [1, 2, 3]})
    assert cache.get("p") == [1, 2, 3]
    loads = cache.stats().loads
    assert cache.get("p") == [1, 2, 3]
    assert cache.stats().loads == loads, "second read went to the store again"


def test_incr_counts(cache, db_path: str) -> None:
    assert cache.incr("c") == 1
    assert cache.incr("c", 10) == 11
    assert cache.incr("c", delta=-1) == 10
    assert cache.get("c") == 10
    cache.flush()
    assert stored(db_path, "c") == {"c": 10}


def test_incr_starts_from_the_stored_value(cache, db_path: str) -> None:
    cw.SQLiteStore(db_path).save_many({"c": 40})
    assert cache.incr("c", 2) == 42
    cache.flush()
    assert stored(db_path, "c") == {"c": 42}


def test_set_many(cache, db_path: str) -> None:
    cache.set_many({"a": 1, "b": "two", "c": [3]})
    assert cache.get_many(["a", "b", "c"]) == {"a": 1, "b": "two", "c": [3]}
    cache.flush()
    store = cw.SQLiteStore(db_path)
    assert store.load_many(["a", "b", "c"]) == {"a": 1, "b": "two", "c": [3]}


def test_namespaces_isolate_keys(cache, db_path: str) -> None:
    views = cache.namespace("views")
    other = cache.namespace("other")
    cache.set("k", "root")
    views.set("k", "views")
    assert other.get("k") is None
    assert cache.get("k") == "root"
    assert views.get("k") == "views"
    views.delete("k")
    assert cache.get("k") == "root"
    views.set("k", "views-2")
    cache.flush()
    assert stored(db_path, "k") == {"k": "root"}
    assert stored(db_path, "k", namespace="views") == {"k": "views-2"}
    assert stored(db_path, "k", namespace="other") == {}


def test_values_reach_the_store_after_flush(cache, db_path: str) -> None:
    for i in range(20):
        cache.set(f"k{i}", {"i": i})
    cache.delete("k3")
    cache.flush()
    assert cache.pending() == 0
    store = cw.SQLiteStore(db_path)
    got = store.load_many([f"k{i}" for i in range(20)])
    assert got == {f"k{i}": {"i": i} for i in range(20) if i != 3}
    assert store.load("k0") == {"i": 0}


def test_namespaced_values_reach_the_store_after_flush(cache, db_path: str) -> None:
    views = cache.namespace("views")
    views.set("page", {"hits": 3})
    views.incr("count", 4)
    cache.flush()
    store = cw.SQLiteStore(db_path)
    assert store.load("page", namespace="views") == {"hits": 3}
    assert store.load("count", namespace="views") == 4
    assert store.load("page") is None


def test_delete_reaches_the_store(cache, db_path: str) -> None:
    cw.SQLiteStore(db_path).save_many({"old": 1})
    cache.delete("old")
    cache.flush()
    assert stored(db_path, "old") == {}
    assert cache.get("old", default="d") == "d"


def test_close_flushes(db_path: str, make_policy) -> None:
    cache = cw.Cache(store=cw.SQLiteStore(db_path), policy=make_policy())
    cache.set_many({"a": 1, "b": 2})
    cache.incr("c", 3)
    cache.delete("b")
    cache.close()
    store = cw.SQLiteStore(db_path)
    assert store.load_many(["a", "b", "c"]) == {"a": 1, "c": 3}


def test_stats_count_writes(cache) -> None:
    cache.set("a", 1)
    cache.set_many({"b": 2, "c": 3})
    cache.delete("a")
    cache.delete_many(["b", "c"])
    cache.incr("n")
    assert cache.stats().writes == 7


def test_a_second_cache_reads_what_the_first_flushed(cache, db_path: str, make_policy,
                                                      autoclose) -> None:
    cache.set("shared", [1, 2])
    cache.flush()
    other = autoclose(cw.Cache(store=cw.SQLiteStore(db_path), policy=make_policy()))
    assert other.get("shared") == [1, 2]


@pytest.mark.parametrize("policy", [cw.WriteThrough, cw.WriteAround])
def test_store_failure_raises_store_error_and_keeps_old_value(make_store, autoclose,
                                                              policy) -> None:
    ds = make_store({"k": "old"})
    cache = autoclose(cw.Cache(store=ds.store, policy=policy()))
    assert cache.get("k") == "old"
    ds.failing = True
    with pytest.raises(cw.StoreError):
        cache.set("k", "new")
    ds.failing = False
    assert cache.get("k") == "old", "backend kept a value the store refused"
    assert ds.data == {"k": "old"}
