"""Guarantees 1-8 of DESIGN.md.

``cacheway.testing.GuaranteeSuite`` (1-7, and 8 on AsyncCache) runs on every backend x
store pair here (``tests/pairs.py``: memory, Redis, two-level x SQLite, PostgreSQL, MariaDB
via SQLAlchemy, callbacks, and the row modes of SQLite, PostgreSQL and SQLAlchemy on
MariaDB): one class per pair, ``Test_<backend>__<store>``. The cheap pairs (memory + a store
in this process) run every test under every policy by default; the other pairs run one or
two tests of each guarantee (DEFAULT_TESTS) under one policy, chosen so that every backend
and every store meets every policy (a Latin square); the slow run runs everything.
Guarantee 2 under kill -9 and 8 across fork: ``test_guarantees_processes.py``.

Below the classes: what only a recording CallbackStore can see (the order and shape of
the store calls) and configuration errors (guarantee 7) that involve no pair.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest

import cacheway as cw
from cacheway.testing import POLICY_NAMES, GuaranteeSuite
from conftest import POLICIES, wait_until
from pairs import BACKENDS, PAIR_STORES, pair_class

ALL_POLICIES = list(POLICIES)
FAST_RETRY = {"attempts": None, "base_delay": 0.01, "max_delay": 0.05}
CHEAP = {"memory+sqlite", "memory+callback", "memory+sqlite-rows"}

# Library bugs for the lead: {pair: {(test, policy or None): what fails}}, xfail(strict)
# (FLAKY: a race that does not show on every run, xfail(strict=False)).
KNOWN_FAILURES: dict[str, dict[tuple[str, str | None], str]] = {}
FLAKY_FAILURES: dict[str, dict[tuple[str, str | None], str]] = {}


def new_policy(name: str) -> Any:
    return POLICIES[name]()


# What every pair runs in the default run: one test (or two) of each guarantee. The cheap
# pairs run everything; the slow run runs everything everywhere.
DEFAULT_TESTS = {
    "test_guarantee1_read_your_writes",
    "test_guarantee2_write_through_store_has_value_when_set_returns",
    "test_guarantee3_the_last_accepted_write_wins",
    "test_guarantee3_last_write_wins_across_caches_sharing_the_backend",
    "test_guarantee4_concurrent_writers_backend_agrees_with_store",
    "test_guarantee4_a_fill_in_another_cache_does_not_undo_an_accepted_delete",
    "test_guarantee4_read_fill_racing_a_write_does_not_land_after_it",
    "test_guarantee5_stampede_causes_one_store_load",
    "test_guarantee6_failing_store_entries_stay_readable_and_errors_surface",
    "test_guarantee7_a_value_no_store_takes_is_refused_at_set",
    "test_guarantee7_a_key_the_store_can_never_take_is_refused_at_set",
    "test_guarantee8_async_cache_reads_its_writes_and_flushes",
}


# Three reader threads spinning in Python starve the writer of the GIL: 15-28 s per
# write-through case on the SQLite pairs, the heaviest tests of the default run.
_SLOW_ON_SQLITE = "test_guarantee4_fills_racing_writes_never_land_after_the_last"


class DefaultRun:
    """Which tests of a pair the default run keeps (:meth:`marks` marks the rest slow)."""

    pair_name: str
    latin: int  # the index of the policy this pair runs by default

    def marks(self, test: str, policy: str | None) -> list[Any]:
        if (test, policy) == (_SLOW_ON_SQLITE, "write-through") and "sqlite" in self.pair_name:
            return [pytest.mark.slow]  # memory+callback runs it by default
        if self.pair_name in CHEAP:
            return []
        if policy is None:
            return [] if test in DEFAULT_TESTS else [pytest.mark.slow]
        return [] if policy == POLICY_NAMES[self.latin] else [pytest.mark.slow]


for _b, _backend in enumerate(BACKENDS):
    for _s, _store in enumerate(PAIR_STORES):
        _pair = f"{_backend}+{_store}"
        _cls = pair_class(type("Suite", (DefaultRun, GuaranteeSuite), {}), _pair,
                          latin=(_b + _s) % len(POLICY_NAMES),
                          known_failures=KNOWN_FAILURES.get(_pair, {}),
                          flaky_failures=FLAKY_FAILURES.get(_pair, {}))
        globals()[_cls.__name__] = _cls


# -- 3. per-key order: the calls a CallbackStore receives --------------------------------------


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



# -- 6. failing store: one poison entry ------------------------------------------------------


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


# -- 7. bad input that involves no pair ------------------------------------------------------


@pytest.mark.parametrize("table", ["x;y", "1abc", "a b", 'a"b', "", "drop table x", "t-1"])
def test_guarantee7_bad_table_name_raises_config_error(db_path: str, table: str) -> None:
    with pytest.raises(cw.ConfigError) as info:
        cw.SQLiteStore(db_path, table=table)
    if table:
        assert table in str(info.value), "the error should name the bad table name"


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
