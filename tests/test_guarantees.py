"""Guarantees 1-7 of DESIGN.md, each with a test that can fail (embedded setup only:
MemoryBackend + SQLiteStore / CallbackStore, one process)."""

from __future__ import annotations

import random
import threading

import pytest

import cacheway as cw
from conftest import POLICIES, wait_until

ALL_POLICIES = list(POLICIES)


def new_policy(name: str):
    return POLICIES[name]()


# -- 1. read your writes ---------------------------------------------------------------------


def test_guarantee1_read_your_writes(db_path: str, make_policy, autoclose) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path), policy=make_policy()))
    for i in range(50):
        cache.set("k", i)
        assert cache.get("k") == i
    cache.set_many({"a": "A", "b": "B"})
    assert cache.get_many(["a", "b"]) == {"a": "A", "b": "B"}
    assert cache.incr("n", 3) == 3
    assert cache.get("n") == 3
    cache.delete("a")
    assert cache.get("a", default="gone") == "gone"


def test_guarantee1_read_your_writes_after_eviction_while_dirty(
    db_path: str, make_policy, autoclose
) -> None:
    cw.SQLiteStore(db_path).save_many({f"other{i}": i for i in range(30)})
    backend = cw.MemoryBackend(max_entries=10)
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path), backend=backend,
                               policy=make_policy()))
    for i in range(100):
        cache.set(f"k{i}", {"v": i})
    cache.flush()  # every policy has put (some of) them in the backend by now
    for i in range(100):
        cache.set(f"k{i}", {"v": i, "round": 2})
    cache.incr("counter", 7)
    for i in range(30):  # read-fills of other keys churn the backend while k* are dirty
        assert cache.get(f"other{i}") == i
    for i in range(100):
        assert cache.get(f"k{i}") == {"v": i, "round": 2}, f"k{i} lost after eviction"
    assert cache.get("counter") == 7
    assert cache.stats().evictions > 0


def test_guarantee1_dirty_entries_readable_while_the_backend_evicts_them(
    make_store, autoclose
) -> None:
    ds = make_store()
    cache = autoclose(cw.Cache(store=ds.store, backend=cw.MemoryBackend(max_entries=10),
                               policy=cw.WriteBack(max_delay=60)))
    for i in range(100):
        cache.set(f"k{i}", i)
    for i in range(100):
        cache.incr(f"c{i % 5}")
    assert cache.pending() == 105
    assert cache.stats().evictions >= 90
    assert cache.get_many([f"k{i}" for i in range(100)]) == {f"k{i}": i for i in range(100)}
    assert [cache.get(f"c{j}") for j in range(5)] == [20] * 5
    assert ds.save_calls == []


def test_guarantee1_read_your_writes_while_a_flush_is_in_flight(make_store, autoclose) -> None:
    ds = make_store()
    gate = threading.Event()
    ds.write_gate = gate
    cache = autoclose(cw.Cache(store=ds.store, backend=cw.MemoryBackend(max_entries=5),
                               policy=cw.WriteBack(max_delay=0.01)))
    try:
        for i in range(20):
            cache.set(f"k{i}", i)
        assert ds.write_entered.wait(10), "the flusher never started a batch"
        for i in range(20):
            cache.set(f"k{i}", i + 100)  # newer writes while the first batch is stuck
        assert {f"k{i}": i + 100 for i in range(20)} == cache.get_many(
            [f"k{i}" for i in range(20)]
        )
    finally:
        gate.set()
    cache.flush(timeout=10)
    assert ds.data == {f"k{i}": i + 100 for i in range(20)}


# -- 2. no lost acknowledged write (write-through part) ---------------------------------------


def test_guarantee2_write_through_store_has_value_when_set_returns(db_path: str,
                                                                   autoclose) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path), policy=cw.WriteThrough()))
    reader = cw.SQLiteStore(db_path)  # a separate connection
    for i in range(20):
        cache.set("k", i)
        assert reader.load("k") == i
    cache.set_many({"a": 1, "b": 2})
    assert reader.load_many(["a", "b"]) == {"a": 1, "b": 2}
    assert cache.incr("n", 5) == 5
    assert reader.load("n") == 5
    cache.delete("a")
    assert reader.load_many(["a"]) == {}
    cache.namespace("ns").set("x", "y")
    assert reader.load("x", namespace="ns") == "y"


def test_guarantee2_write_through_callback_store_has_value_when_set_returns(
    make_store, autoclose
) -> None:
    ds = make_store()
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteThrough()))
    cache.set("k", {"x": 1})
    assert ds.data == {"k": {"x": 1}}
    cache.delete("k")
    assert ds.data == {}


# -- 3. per-key order ------------------------------------------------------------------------


def _check_save_calls(save_calls: list[list[tuple[str, object]]]) -> None:
    for call in save_calls:
        keys = [k for k, _ in call]
        assert len(keys) == len(set(keys)), f"a key appears twice in one save_many: {keys}"


@pytest.mark.parametrize("policy_name", ALL_POLICIES)
def test_guarantee3_per_key_order_one_thread(make_store, autoclose, policy_name: str) -> None:
    ds = make_store()
    policy = (cw.WriteBack(max_delay=0.002, batch_size=7) if policy_name == "write-back"
              else new_policy(policy_name))
    cache = autoclose(cw.Cache(store=ds.store, policy=policy))
    rng = random.Random(3)
    keys = [f"k{i}" for i in range(10)]
    accepted: list[tuple[str, int]] = []  # (key, value) in accepted order; values unique
    last: dict[str, int] = {}
    for seq in range(2000):
        key = rng.choice(keys)
        cache.set(key, seq)
        accepted.append((key, seq))
        last[key] = seq
    cache.flush(timeout=20)
    position = {v: i for i, (_, v) in enumerate(accepted)}
    _check_save_calls(ds.save_calls)
    for call in ds.save_calls:
        positions = [position[v] for _, v in call]
        assert positions == sorted(positions), (
            "save_many not in the order of each key's last accepted write"
        )
    per_key: dict[str, list[int]] = {}
    for call in ds.save_calls:
        for k, v in call:
            per_key.setdefault(k, []).append(v)
    for k, values in per_key.items():
        assert values == sorted(values), f"{k} reached the store out of order"
        assert values[-1] == last[k]
    assert ds.data == last


@pytest.mark.parametrize("policy_name", ALL_POLICIES)
def test_guarantee3_per_key_order_many_threads(make_store, autoclose, policy_name: str) -> None:
    ds = make_store()
    policy = (cw.WriteBack(max_delay=0.002, batch_size=5) if policy_name == "write-back"
              else new_policy(policy_name))
    cache = autoclose(cw.Cache(store=ds.store, policy=policy))
    n_threads, n_writes = 6, 400
    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            barrier.wait(10)
            for i in range(n_writes):
                cache.set(f"t{t}", i)  # one key per thread: its order is defined
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert not errors, errors
    cache.flush(timeout=20)
    _check_save_calls(ds.save_calls)
    per_key: dict[str, list[int]] = {}
    for call in ds.save_calls:
        for k, v in call:
            per_key.setdefault(k, []).append(v)
    assert set(per_key) == {f"t{t}" for t in range(n_threads)}
    for k, values in per_key.items():
        assert values == sorted(values), f"{k} reached the store out of order: {values[:20]}"
        assert len(values) == len(set(values))
        assert values[-1] == n_writes - 1
    assert ds.data == {f"t{t}": n_writes - 1 for t in range(n_threads)}


def test_guarantee3_per_key_order_with_deletes(db_path: str, autoclose) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path),
                               policy=cw.WriteBack(max_delay=0.002, batch_size=3)))
    rng = random.Random(11)
    model: dict[str, int] = {}
    for seq in range(1500):
        key = f"k{rng.randrange(6)}"
        if rng.random() < 0.3:
            cache.delete(key)
            model.pop(key, None)
        else:
            cache.set(key, seq)
            model[key] = seq
    cache.flush(timeout=20)
    store = cw.SQLiteStore(db_path)
    assert store.load_many([f"k{i}" for i in range(6)]) == model


# -- 4. concurrent writers and read-fills ----------------------------------------------------


def _hammer(cache, keys: list[str], n_threads: int, n_ops: int, seed: int) -> None:
    """n_threads threads doing random set/delete/get, plus readers that keep filling until
    the last write is done (a stale fill then has nothing after it to hide it)."""
    barrier = threading.Barrier(n_threads + 2)
    writers_done = threading.Event()
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        rng = random.Random(seed * 100 + t)
        try:
            barrier.wait(10)
            for i in range(n_ops):
                key = rng.choice(keys)
                r = rng.random()
                if r < 0.45:
                    cache.set(key, t * 100_000 + i)
                elif r < 0.6:
                    cache.delete(key)
                else:
                    cache.get(key)
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            barrier.wait(10)
            while not writers_done.is_set():
                for key in keys:
                    cache.get(key)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for th in threads + readers:
        th.start()
    for th in threads:
        th.join(60)
    writers_done.set()
    for th in readers:
        th.join(60)
    assert not errors, errors


@pytest.mark.parametrize("policy_name", ALL_POLICIES)
def test_guarantee4_concurrent_writers_backend_agrees_with_store(
    db_path: str, autoclose, policy_name: str
) -> None:
    keys = [f"k{i}" for i in range(7)]
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path, synchronous="NORMAL"),
                               backend=cw.MemoryBackend(), policy=new_policy(policy_name)))
    _hammer(cache, keys, n_threads=8, n_ops=300, seed=4)
    cache.flush(timeout=20)
    assert cache.pending() == 0
    fresh = cw.SQLiteStore(db_path).load_many(keys)
    cached = {k: v for k in keys if (v := cache.get(k, default=KeyError)) is not KeyError}
    assert cached == fresh, "the backend disagrees with the store after flush"
    assert cache.get_many(keys) == fresh
    second = autoclose(cw.Cache(store=cw.SQLiteStore(db_path), policy=new_policy(policy_name)))
    assert second.get_many(keys) == fresh


@pytest.mark.parametrize("policy_name", ALL_POLICIES)
def test_guarantee4_concurrent_writers_callback_store(make_store, autoclose,
                                                      policy_name: str) -> None:
    keys = [f"k{i}" for i in range(7)]
    ds = make_store()
    ds.load_delay = 0.0005  # widen the window between a fill's store read and its landing
    cache = autoclose(cw.Cache(store=ds.store, policy=new_policy(policy_name)))
    _hammer(cache, keys, n_threads=8, n_ops=300, seed=5)
    cache.flush(timeout=20)
    cached = cache.get_many(keys)
    assert cached == {k: v for k, v in ds.data.items() if k in keys}


class _HeldFill:
    """A load_many hook that holds the first fill of ``key`` between the store read and the
    cache fill until released."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.loaded = threading.Event()
        self.release = threading.Event()
        self._first = True
        self._lock = threading.Lock()

    def __call__(self, keys: list[str]) -> None:
        with self._lock:
            hold = self._first and self.key in keys
            if hold:
                self._first = False
        if hold:
            self.loaded.set()
            self.release.wait(10)


def _race_fill_against(ds, cache, write) -> object:
    """Start a read-fill of "k" that loaded the old value, do ``write`` meanwhile, then let
    the fill land. Returns what the racing get returned."""
    hook = _HeldFill("k")
    ds.load_hook = hook
    result: dict[str, object] = {}
    reader = threading.Thread(target=lambda: result.setdefault("get", cache.get("k")))
    reader.start()
    assert hook.loaded.wait(10), "the read-fill never reached the store"
    writer = threading.Thread(target=write)
    writer.start()
    # the write may wait for the fill or not; give it a chance to finish first
    writer.join(0.5)
    hook.release.set()
    writer.join(10)
    reader.join(10)
    assert not writer.is_alive(), "deadlock between fill and write"
    assert not reader.is_alive(), "deadlock between fill and write"
    return result.get("get")


@pytest.mark.parametrize("policy_name", ALL_POLICIES)
def test_guarantee4_read_fill_racing_a_write_does_not_land_after_it(
    make_store, autoclose, policy_name: str
) -> None:
    ds = make_store({"k": "old"})
    cache = autoclose(cw.Cache(store=ds.store, policy=new_policy(policy_name)))
    got = _race_fill_against(ds, cache, lambda: cache.set("k", "new"))
    assert got in ("old", "new")
    assert cache.get("k") == "new", "a fill that loaded before the write landed after it"
    cache.flush(timeout=10)
    assert cache.get("k") == "new"
    assert ds.data["k"] == "new"


def test_guarantee4_read_fill_racing_a_flushed_write_back_does_not_land_after_it(
    make_store, autoclose
) -> None:
    # The write is accepted *and acknowledged by the store* while the fill is held: the
    # key is clean again when the fill lands, so only the fill token can stop it.
    ds = make_store({"k": "old"})
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(max_delay=60)))

    def write_and_flush() -> None:
        cache.set("k", "new")
        cache.flush(timeout=10)

    got = _race_fill_against(ds, cache, write_and_flush)
    assert got in ("old", "new")
    assert ds.data["k"] == "new"
    assert cache.get("k") == "new", "a fill that loaded before a flushed write landed after it"


@pytest.mark.parametrize("policy_name", ALL_POLICIES)
def test_guarantee4_read_fill_racing_a_delete_does_not_resurrect(
    make_store, autoclose, policy_name: str
) -> None:
    ds = make_store({"k": "old"})
    cache = autoclose(cw.Cache(store=ds.store, policy=new_policy(policy_name)))
    _race_fill_against(ds, cache, lambda: cache.delete("k"))
    assert cache.get("k", default="absent") == "absent", "a stale fill resurrected a delete"
    cache.flush(timeout=10)
    assert "k" not in ds.data
    assert cache.get("k", default="absent") == "absent"


def test_guarantee4_read_fill_racing_a_write_around_on_sqlite(db_path: str, autoclose) -> None:
    # Against a versioned store we cannot hold a fill, so race many fills against writes
    # and check that no fill of an older version lands after the last write.
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path, synchronous="NORMAL"),
                               backend=cw.MemoryBackend(), policy=cw.WriteAround()))
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                cache.get("k")
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for th in readers:
        th.start()
    for i in range(300):
        cache.set("k", i)
    stop.set()
    for th in readers:
        th.join(10)
    assert not errors, errors
    assert cache.get("k") == 299
    assert cw.SQLiteStore(db_path).load("k") == 299


# -- 5. stampede -------------------------------------------------------------------------------


@pytest.mark.parametrize("stored", [True, False], ids=["found", "not-found"])
def test_guarantee5_stampede_causes_one_store_load(make_store, autoclose, stored: bool) -> None:
    ds = make_store({"hot": {"v": 1}} if stored else {})
    ds.load_delay = 0.2
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteThrough()))
    n = 20
    barrier = threading.Barrier(n)
    results: list[object] = []
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            barrier.wait(10)
            results.append(cache.get("hot", default="missing"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert not errors, errors
    expected = {"v": 1} if stored else "missing"
    assert results == [expected] * n
    assert len(ds.load_calls) == 1, f"{len(ds.load_calls)} store loads for one stampede"
    assert cache.stats().loads == 1


# -- 6. failing store --------------------------------------------------------------------------

FAST_RETRY = {"attempts": None, "base_delay": 0.01, "max_delay": 0.05}


def test_guarantee6_failing_store_entries_stay_readable_and_errors_surface(
    make_store, autoclose
) -> None:
    ds = make_store()
    ds.failing = True
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(
        max_delay=0.01, retry=cw.Retry(**FAST_RETRY))))
    values = {f"k{i}": {"i": i} for i in range(5)}
    cache.set_many(values)
    assert wait_until(lambda: cache.stats().flush_errors >= 3), "no failed flush recorded"
    assert wait_until(lambda: cache.stats().retries >= 1)
    assert cache.get_many(list(values)) == values
    assert cache.pending() == 5
    assert cache.stats().dirty == 5
    ds.failing = False
    cache.flush(timeout=10)
    assert ds.data == values
    assert cache.pending() == 0
    assert cache.get_many(list(values)) == values


def test_guarantee6_store_failing_n_times_then_flush_succeeds(make_store, autoclose) -> None:
    ds = make_store()
    ds.fail_writes = 4
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(
        max_delay=0.01, retry=cw.Retry(**FAST_RETRY))))
    values = {f"k{i}": i for i in range(10)}
    cache.set_many(values)
    cache.flush()  # timeout=None with attempts=None waits for the store to come back
    assert ds.data == values
    s = cache.stats()
    assert s.flush_errors > 0
    assert s.retries > 0
    assert s.dirty == 0
    assert ds.failed_writes == 4


def test_guarantee6_flush_waits_through_failures_without_raising(make_store, autoclose) -> None:
    ds = make_store()
    ds.fail_writes = 3
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(
        max_delay=60, retry=cw.Retry(**FAST_RETRY))))
    cache.set("a", 1)
    cache.flush(timeout=10)  # failures a retry fixes do not make flush raise
    assert ds.data == {"a": 1}
    assert cache.stats().flush_errors >= 3


def test_guarantee6_dead_letter_gets_key_value_exc_and_value_stays_readable(
    make_store, autoclose
) -> None:
    ds = make_store()
    ds.failing = True
    in_callback = threading.Event()
    done_reading = threading.Event()
    calls: list[tuple[object, object, object]] = []

    def on_dead_letter(key, value, exc) -> None:
        calls.append((key, value, exc))
        in_callback.set()
        done_reading.wait(10)

    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(
        max_delay=0.01,
        retry=cw.Retry(attempts=2, base_delay=0.01, max_delay=0.05),
        on_dead_letter=on_dead_letter,
    )))
    cache.set("k", {"v": 1})
    assert in_callback.wait(10), "on_dead_letter never called"
    try:
        assert cache.get("k") == {"v": 1}, "entry not readable during on_dead_letter"
    finally:
        done_reading.set()
    assert wait_until(lambda: cache.stats().dead_letters == 1)
    assert len(calls) == 1
    key, value, exc = calls[0]
    assert key == "k"
    assert value == {"v": 1}
    assert isinstance(exc, Exception)
    assert wait_until(lambda: cache.pending() == 0)
    assert ds.data == {}


def test_guarantee6_dead_letter_for_every_entry(make_store, autoclose) -> None:
    ds = make_store()
    ds.failing = True
    seen: dict[str, object] = {}
    lock = threading.Lock()

    def on_dead_letter(key, value, exc) -> None:
        with lock:
            seen[key] = value

    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(
        max_delay=0.01, retry=cw.Retry(attempts=2, base_delay=0.01, max_delay=0.02),
        on_dead_letter=on_dead_letter)))
    values = {f"k{i}": i for i in range(6)}
    cache.set_many(values)
    assert wait_until(lambda: len(seen) == 6)
    assert seen == values
    assert wait_until(lambda: cache.stats().dead_letters == 6)
    cache.flush(timeout=5)


def test_guarantee6_poison_entry_does_not_block_other_keys(make_store, autoclose) -> None:
    ds = make_store()
    ds.poison = "poison"
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(
        max_delay=0.01, batch_size=500, retry=cw.Retry(**FAST_RETRY))))
    good = {f"k{i}": i for i in range(19)}
    cache.set("k0", -1)
    cache.set("poison", "bad")
    cache.set_many(good)
    assert wait_until(lambda: all(ds.data.get(k) == v for k, v in good.items()), timeout=15), (
        f"a poison entry blocked the other keys; store has {len(ds.data)} of 19"
    )
    assert wait_until(lambda: cache.pending() == 1)
    assert cache.get("poison") == "bad"
    ds.poison = None
    cache.flush(timeout=10)
    assert ds.data == {**good, "poison": "bad"}


def test_guarantee6_flush_raises_store_error_when_timeout_passes(make_store, autoclose) -> None:
    ds = make_store()
    ds.failing = True
    cache = autoclose(cw.Cache(store=ds.store, policy=cw.WriteBack(
        max_delay=0.01, retry=cw.Retry(**FAST_RETRY))))
    cache.set_many({"a": 1, "b": 2, "c": 3})
    with pytest.raises(cw.StoreError, match="3"):
        cache.flush(timeout=0.3)
    assert cache.get_many(["a", "b", "c"]) == {"a": 1, "b": 2, "c": 3}
    ds.failing = False
    cache.flush(timeout=10)
    assert ds.data == {"a": 1, "b": 2, "c": 3}


# -- 7. bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_key", [1, b"k", None, ("t",)])
def test_guarantee7_non_str_key_raises_type_error(db_path: str, make_policy, autoclose,
                                                  bad_key) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path), policy=make_policy()))
    cache.set("ok", 1)
    calls = [
        lambda: cache.set(bad_key, 1),
        lambda: cache.get(bad_key),
        lambda: cache.delete(bad_key),
        lambda: cache.incr(bad_key),
        lambda: cache.get_many(["ok", bad_key]),
        lambda: cache.set_many({bad_key: 1}),
        lambda: cache.delete_many([bad_key]),
    ]
    for call in calls:
        with pytest.raises(TypeError) as info:
            call()
        assert isinstance(info.value, cw.CachewayError)
    assert cache.get("ok") == 1
    cache.flush(timeout=5)
    assert cw.SQLiteStore(db_path).load_many(["ok"]) == {"ok": 1}


def test_guarantee7_non_serializable_value_raises_from_set_and_damages_nothing(
    db_path: str, make_policy, autoclose
) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path), policy=make_policy()))
    cache.set("k", "old")
    cache.set("other", [1])
    cache.flush(timeout=5)
    pending = cache.pending()
    writes = cache.stats().writes
    for bad in (object(), {1, 2}, {"nested": object()}):
        with pytest.raises(cw.SerializationError):
            cache.set("k", bad)
        with pytest.raises(cw.SerializationError):
            cache.set("new", bad)
    assert issubclass(cw.SerializationError, cw.CachewayError)
    assert cache.pending() == pending
    assert cache.stats().writes == writes
    assert cache.get("k") == "old"
    assert cache.get("new", default="absent") == "absent"
    assert cache.get("other") == [1]
    cache.set("after", 2)
    cache.flush(timeout=5)
    store = cw.SQLiteStore(db_path)
    assert store.load_many(["k", "new", "other", "after"]) == {
        "k": "old", "other": [1], "after": 2,
    }
    assert cache.stats().flush_errors == 0


def test_guarantee7_non_serializable_value_in_set_many(db_path: str, make_policy,
                                                       autoclose) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path), policy=make_policy()))
    cache.set("k", "old")
    with pytest.raises(cw.SerializationError):
        cache.set_many({"k": object(), "x": 1})
    assert cache.get("k") == "old"
    cache.flush(timeout=5)
    assert cw.SQLiteStore(db_path).load("k") == "old"


@pytest.mark.parametrize("table", ["x;y", "1abc", "a b", 'a"b', "", "drop table x", "t-1"])
def test_guarantee7_bad_table_name_raises_config_error(db_path: str, table: str) -> None:
    with pytest.raises(cw.ConfigError) as info:
        cw.SQLiteStore(db_path, table=table)
    if table:
        assert table in str(info.value), "the error should name the bad table name"


def test_guarantee7_use_after_close_raises_closed_error(db_path: str, make_policy) -> None:
    cache = cw.Cache(store=cw.SQLiteStore(db_path), policy=make_policy())
    views = cache.namespace("views")
    cache.set("a", 1)
    cache.close()
    for call in (
        lambda: cache.get("a"),
        lambda: cache.set("a", 2),
        lambda: cache.delete("a"),
        lambda: cache.incr("n"),
        lambda: cache.get_many(["a"]),
        lambda: cache.set_many({"a": 3}),
        lambda: views.set("x", 1),
        lambda: views.get("x"),
    ):
        with pytest.raises(cw.ClosedError):
            call()
    assert issubclass(cw.ClosedError, cw.CachewayError)
    assert cw.SQLiteStore(db_path).load("a") == 1


def test_guarantee7_unknown_policy_string_in_open(db_path: str) -> None:
    with pytest.raises(cw.ConfigError):
        cw.open(f"sqlite:///{db_path}", backend="memory://", policy="write-sideways")


def test_guarantee7_bad_urls_in_open(db_path: str) -> None:
    with pytest.raises(cw.ConfigError):
        cw.open("nosuchscheme:///x", backend="memory://", policy="write-back")
    with pytest.raises(cw.ConfigError):
        cw.open(f"sqlite:///{db_path}", backend="nosuchbackend://", policy="write-back")


def test_guarantee7_negative_ttl_and_max_delay_raise_config_error(db_path: str,
                                                                  autoclose) -> None:
    with pytest.raises(cw.ConfigError):
        cw.WriteBack(max_delay=-1)
    with pytest.raises(cw.ConfigError):
        cw.Cache(store=cw.SQLiteStore(db_path), ttl=-1)
    with pytest.raises(cw.ConfigError):
        cw.WriteAround(fill_ttl=-5)
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path)))
    with pytest.raises(cw.ConfigError):
        cache.set("k", 1, ttl=-1)
    with pytest.raises(cw.ConfigError):
        cache.namespace("n", ttl=-3)
    assert cache.get("k", default="absent") == "absent"
    assert cw.SQLiteStore(db_path).load_many(["k"]) == {}


def test_guarantee7_bad_policy_options_raise_config_error() -> None:
    with pytest.raises(cw.ConfigError):
        cw.WriteBack(on_full="explode")
    with pytest.raises(cw.ConfigError):
        cw.WriteBack(batch_size=0)
    with pytest.raises(cw.ConfigError):
        cw.WriteBack(max_dirty=0)
    with pytest.raises(cw.ConfigError):
        cw.WriteBack(fsync="sometimes")
    with pytest.raises(cw.ConfigError):
        cw.MemoryBackend(max_entries=-1)
    with pytest.raises((cw.ConfigError, TypeError)):
        cw.WriteBack(no_such_option=1)
