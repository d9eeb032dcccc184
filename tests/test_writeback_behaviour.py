"""Write-back behaviour: coalescing, counters, the max_delay flusher, pending(), flush
timeouts, back-pressure, and a hypothesis model of set/delete/incr/flush."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cacheway as cw
from conftest import DictStore, wait_until

FAST_RETRY = cw.Retry(attempts=None, base_delay=0.01, max_delay=0.05)


def test_coalescing_ten_sets_one_row_write(make_store, autoclose) -> None:
    ds = make_store()
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(max_delay=60)))
    for i in range(10):
        cache.set("k", i)
    assert cache.pending() == 1
    cache.flush()
    assert ds.save_calls == [[("k", 9)]]
    s = cache.stats()
    assert s.coalesced == 9
    assert s.store_writes == 1
    assert s.writes == 10
    assert s.flushes == 1


def test_coalescing_many_keys_each_written_once(make_store, autoclose) -> None:
    ds = make_store()
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(max_delay=60)))
    for round_ in range(5):
        for k in ("a", "b", "c"):
            cache.set(k, f"{k}{round_}")
    cache.flush()
    assert ds.saved_rows == 3
    assert ds.data == {"a": "a4", "b": "b4", "c": "c4"}
    assert cache.stats().coalesced == 12
    assert cache.stats().store_writes == 3


def test_counters_sum_until_flush_absolute_value_without_add_many(make_store,
                                                                  autoclose) -> None:
    ds = make_store()
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(max_delay=60)))
    last = 0
    for _ in range(1000):
        last = cache.incr("hits")
    assert last == 1000
    assert cache.get("hits") == 1000
    cache.flush()
    assert ds.save_calls == [[("hits", 1000)]]
    assert cache.stats().store_writes == 1
    assert cache.stats().coalesced == 999


def test_counters_reach_add_many_as_one_delta(make_store, autoclose) -> None:
    ds = make_store({"hits": 5}, add_many=True)
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(max_delay=60)))
    last = 0
    for _ in range(1000):
        last = cache.incr("hits")
    assert last == 1005
    cache.flush()
    assert ds.add_calls == [[("hits", 1000)]]
    assert ds.data == {"hits": 1005}
    assert cache.get("hits") == 1005


def test_counters_from_two_caches_sum_in_sqlite(db_path: str, autoclose) -> None:
    one = autoclose(cw.Cache(store=cw.SQLiteStore(db_path), policy=cw.WriteBack(max_delay=60)))
    two = autoclose(cw.Cache(store=cw.SQLiteStore(db_path), policy=cw.WriteBack(max_delay=60)))
    for _ in range(30):
        one.incr("c", 2)
        two.incr("c", 5)
    one.flush()
    two.flush()
    assert cw.SQLiteStore(db_path).load("c") == 30 * 7


def test_set_after_incr_replaces_the_counter(make_store, autoclose) -> None:
    ds = make_store({"c": 100}, add_many=True)
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(max_delay=60)))
    cache.incr("c", 5)
    cache.set("c", 1)
    cache.incr("c", 2)
    assert cache.get("c") == 3
    cache.flush()
    assert ds.data == {"c": 3}


def test_max_delay_flushes_without_calling_flush(make_store, autoclose) -> None:
    ds = make_store()
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(max_delay=0.05)))
    cache.set("a", 1)
    cache.incr("n", 2)
    cache.delete("gone")
    assert wait_until(lambda: ds.data == {"a": 1, "n": 2}), f"store has {ds.data}"
    assert wait_until(lambda: cache.pending() == 0)
    assert cache.stats().flushes >= 1


def test_max_delay_flushes_sqlite(db_path: str, autoclose) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path),
                               policy=cw.WriteBack(max_delay=0.05)))
    cache.set("a", {"x": 1})
    reader = cw.SQLiteStore(db_path)
    assert wait_until(lambda: reader.load("a") == {"x": 1})


def test_pending_counts_dirty_entries(make_store, autoclose) -> None:
    ds = make_store()
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(max_delay=60)))
    assert cache.pending() == 0
    cache.set("a", 1)
    cache.set("b", 1)
    cache.set("a", 2)
    assert cache.pending() == 2
    cache.delete("c")
    assert cache.pending() == 3
    cache.incr("d")
    assert cache.pending() == 4
    assert cache.stats().dirty == 4
    cache.flush()
    assert cache.pending() == 0
    assert cache.stats().dirty == 0


def test_pending_covers_namespaces(make_store, autoclose) -> None:
    ds = make_store()
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(max_delay=60)))
    views = cache.namespace("views")
    views.set("a", 1)
    cache.set("a", 1)
    assert views.pending() == 1
    cache.flush()
    assert views.pending() == 0
    assert ds.data == {"a": 1, "views:a": 1}


def test_flush_timeout_raises_store_error_saying_how_many_are_left(make_store,
                                                                   autoclose) -> None:
    ds = make_store()
    ds.failing = True
    cache = autoclose(cw.Cache(store=ds.store,
                               policy=cw.WriteBack(max_delay=0.01, retry=FAST_RETRY)))
    cache.set_many({f"k{i}": i for i in range(7)})
    with pytest.raises(cw.StoreError) as info:
        cache.flush(timeout=0.3)
    assert "7" in str(info.value), f"message does not say 7 entries are left: {info.value}"
    assert cache.pending() == 7
    ds.failing = False
    cache.flush(timeout=10)
    assert len(ds.data) == 7


def test_close_timeout_raises_when_the_store_stays_down(make_store) -> None:
    ds = make_store()
    ds.failing = True
    cache = cw.Cache(store=ds.store, policy=cw.WriteBack(max_delay=0.01, retry=FAST_RETRY))
    cache.set("a", 1)
    try:
        with pytest.raises(cw.StoreError):
            cache.close(timeout=0.3)
    finally:
        ds.failing = False
        with contextlib.suppress(cw.CachewayError):
            cache.close(timeout=5)


def test_close_flushes_a_long_max_delay(db_path: str) -> None:
    cache = cw.Cache(store=cw.SQLiteStore(db_path), policy=cw.WriteBack(max_delay=60))
    views = cache.namespace("views", policy=cw.WriteBack(max_delay=60))
    cache.set("a", 1)
    views.set("a", 2)
    cache.close()
    store = cw.SQLiteStore(db_path)
    assert store.load("a") == 1
    assert store.load("a", namespace="views") == 2


# -- back-pressure -----------------------------------------------------------------------------


def _blocked_store(make_store) -> tuple[DictStore, threading.Event]:
    ds = make_store()
    gate = threading.Event()
    ds.write_gate = gate
    return ds, gate


def test_backpressure_raise_at_max_dirty(make_store, autoclose) -> None:
    ds, gate = _blocked_store(make_store)
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(
        max_delay=0.01, max_dirty=5, on_full="raise")))
    try:
        for i in range(5):
            cache.set(f"k{i}", i)
        with pytest.raises(cw.Backpressure):
            cache.set("k5", 5)
        assert issubclass(cw.Backpressure, cw.CachewayError)
        assert cache.get("k5", default="absent") == "absent"
        assert cache.get_many([f"k{i}" for i in range(5)]) == {f"k{i}": i for i in range(5)}
        assert cache.pending() == 5
    finally:
        gate.set()
    cache.flush(timeout=10)
    assert ds.data == {f"k{i}": i for i in range(5)}
    cache.set("k5", 5)  # room again
    cache.flush(timeout=10)
    assert ds.data["k5"] == 5


def test_backpressure_block_raises_after_block_timeout(make_store, autoclose) -> None:
    ds, gate = _blocked_store(make_store)
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(
        max_delay=0.01, max_dirty=5, on_full="block", block_timeout=0.2)))
    try:
        for i in range(5):
            cache.set(f"k{i}", i)
        started = time.monotonic()
        with pytest.raises(cw.Backpressure):
            cache.set("k5", 5)
        # it waited for room before giving up (a lower bound cannot flake on a slow machine)
        assert time.monotonic() - started >= 0.1
        assert cache.get("k5", default="absent") == "absent"
    finally:
        gate.set()
    cache.flush(timeout=10)
    assert ds.data == {f"k{i}": i for i in range(5)}


def test_backpressure_block_proceeds_when_room_frees(make_store, autoclose) -> None:
    ds, gate = _blocked_store(make_store)
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(
        max_delay=0.01, max_dirty=5, on_full="block", block_timeout=10.0)))
    errors: list[BaseException] = []
    try:
        for i in range(5):
            cache.set(f"k{i}", i)

        def blocked_set() -> None:
            try:
                cache.set("k5", 5)
            except BaseException as exc:
                errors.append(exc)

        th = threading.Thread(target=blocked_set)
        th.start()
        th.join(0.2)
        assert th.is_alive(), "set did not block while the dirty table was full"
    finally:
        gate.set()
    th.join(10)
    assert not th.is_alive()
    assert not errors, errors
    cache.flush(timeout=10)
    assert ds.data == {f"k{i}": i for i in range(6)}


def test_backpressure_write_through_writes_straight_to_the_store(make_store,
                                                                 autoclose) -> None:
    ds, gate = _blocked_store(make_store)
    main = threading.get_ident()
    ds.gate_threads = lambda: threading.get_ident() != main  # only the flusher is stuck
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(
        max_delay=0.01, max_dirty=5, on_full="write_through")))
    try:
        for i in range(5):
            cache.set(f"k{i}", i)
        cache.set("k5", 5)
        assert ds.data.get("k5") == 5, "on_full='write_through' did not write the store"
        assert cache.get("k5") == 5
        assert cache.pending() == 5
    finally:
        gate.set()
    cache.flush(timeout=10)
    assert ds.data == {f"k{i}": i for i in range(6)}


def test_serialization_error_never_reaches_the_flusher(make_store, autoclose) -> None:
    ds = make_store()
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(max_delay=0.01)))
    with pytest.raises(cw.SerializationError):
        cache.set("bad", object())
    with pytest.raises(cw.SerializationError):
        cache.set_many({"bad2": {1, 2}})
    cache.set("good", 1)
    cache.flush(timeout=10)
    assert ds.data == {"good": 1}
    s = cache.stats()
    assert s.flush_errors == 0
    assert s.dead_letters == 0


# -- deletes ordered with writes -----------------------------------------------------------------


def test_set_delete_set_ends_with_the_last_set(db_path: str, autoclose) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path), policy=cw.WriteBack(max_delay=60)))
    cache.set("a", 1)
    cache.delete("a")
    cache.set("a", 2)
    assert cache.pending() == 1
    cache.flush()
    assert cw.SQLiteStore(db_path).load_many(["a"]) == {"a": 2}


def test_set_set_delete_leaves_the_key_absent(db_path: str, autoclose) -> None:
    cw.SQLiteStore(db_path).save_many({"b": "stored-before"})
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path), policy=cw.WriteBack(max_delay=60)))
    cache.set("b", 1)
    cache.set("b", 2)
    cache.delete("b")
    assert cache.get("b", default="absent") == "absent"
    cache.flush()
    assert cw.SQLiteStore(db_path).load_many(["b"]) == {}
    assert cache.get("b", default="absent") == "absent"


def test_delete_then_set_on_callback_store(make_store, autoclose) -> None:
    ds = make_store({"a": 0, "b": 0})
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(max_delay=60)))
    cache.set("a", 1)
    cache.delete("a")
    cache.set("a", 2)
    cache.set("b", 1)
    cache.delete("b")
    cache.flush()
    assert ds.data == {"a": 2}


# -- hypothesis: the store equals a model of the last writes -------------------------------------

KEYS = st.sampled_from(["a", "b", "c", "d"])
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, st.integers(-1000, 1000)),
        st.tuples(st.just("delete"), KEYS, st.just(0)),
        st.tuples(st.just("incr"), KEYS, st.integers(-50, 50)),
        st.tuples(st.just("flush"), st.just(""), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(ops=OPS, add_many=st.booleans(), max_delay=st.sampled_from([0.001, 60.0]),
       max_entries=st.sampled_from([None, 2]))
def test_writeback_store_equals_model_of_last_writes(ops, add_many: bool,
                                                     max_delay: float,
                                                     max_entries: int | None) -> None:
    # max_entries=2: the memory copy of a staged or dirty write is often evicted, so
    # reads must find it in the dirty table.
    ds = DictStore(add_many=add_many)
    model: dict[str, int] = {}
    cache = cw.Cache(store=ds.store, backend=cw.MemoryBackend(max_entries=max_entries),
                     policy=cw.WriteBack(max_delay=max_delay))
    writes = sum(1 for op, _, _ in ops if op != "flush")
    try:
        for op, key, arg in ops:
            if op == "set":
                cache.set(key, arg)
                model[key] = arg
            elif op == "delete":
                cache.delete(key)
                model.pop(key, None)
            elif op == "incr":
                expected = model.get(key, 0) + arg
                assert cache.incr(key, arg) == expected
                model[key] = expected
            else:
                cache.flush(timeout=10)
                assert ds.data == model
            if key:
                assert cache.get(key, default=None) == model.get(key)
        assert cache.stats().writes == writes
        cache.flush(timeout=10)
        assert ds.data == model
        assert cache.pending() == 0
        assert cache.get_many(["a", "b", "c", "d"]) == model
    finally:
        cache.close()


@pytest.mark.parametrize("max_entries", [None, 3])
def test_guarantee1_read_your_writes_while_the_flusher_drains(make_store, autoclose,
                                                               max_entries: int | None) -> None:
    # Four writers, each on its own keys, against a flusher that keeps taking small
    # batches: every read returns the thread's own last write, and the store ends with
    # each key's last write.
    ds = make_store()
    cache = autoclose(cw.Cache(
        store=ds.store, backend=cw.MemoryBackend(max_entries=max_entries),
        policy=cw.WriteBack(max_delay=0.001, batch_size=7),
    ))
    errors: list[str] = []

    def writer(t: int) -> None:
        for i in range(1500):
            cache.set(f"t{t}:{i % 5}", i)
            # the write before last, whose memory copy other writes may have evicted
            j = max(0, i - 2)
            got = cache.get(f"t{t}:{j % 5}")
            if got != j:
                errors.append(f"t{t}:{j % 5}: wrote {j}, read {got!r}")
                return

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors[:5]
    cache.flush(timeout=30)
    assert ds.data == {f"t{t}:{j}": 1495 + j for t in range(4) for j in range(5)}
    assert cache.stats().writes == 4 * 1500


def test_a_write_the_store_can_never_take_is_dead_lettered_at_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Retry(attempts=None) retries a failing store forever, but not a write whose content
    # the store refuses (here a counter over a value another process made a string):
    # that goes to on_dead_letter at once, and flush() returns.
    store = cw.SQLiteStore(str(tmp_path / "app.db"))
    dead: list[tuple[str, object, BaseException]] = []
    cache = cw.Cache(store=store, policy=cw.WriteBack(
        max_delay=3600, on_dead_letter=lambda k, v, e: dead.append((k, v, e))))
    cache.incr("c", 5)
    cache.set("other", 1)
    store.save_many({"c": "text"})  # another writer, behind the cache's back
    cache.flush(timeout=30)
    assert [(k, v) for k, v, _ in dead] == [("c", 5)]
    assert isinstance(dead[0][2], cw.InvalidWriteError)
    assert store.load("other") == 1, "the rest of the batch landed"
    assert cache.stats().dead_letters == 1
    cache.close()
    store.close()


def test_a_counter_acked_under_a_newer_staged_set_keeps_the_set(make_store, autoclose) -> None:
    # The store's total for a counter replaces the cached copy when its batch is acked,
    # unless a newer write of the key is pending, also one still staged by set().
    ds = make_store({"n": 100}, add_many=True)
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(max_delay=60)))
    assert cache.incr("n", 5) == 105
    ds.write_gate = threading.Event()
    flusher = threading.Thread(target=cache.flush, kwargs={"timeout": 10})
    flusher.start()
    assert ds.write_entered.wait(10), "the counter's batch never reached the store"
    cache.set("n", "text")  # accepted while the counter's batch is in flight
    ds.write_gate.set()
    flusher.join(10)
    assert cache.get("n") == "text"
    cache.flush(timeout=10)
    assert ds.data["n"] == "text"
    assert cache.get("n") == "text"
