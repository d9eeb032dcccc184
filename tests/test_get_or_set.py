"""get_or_set (issue 14 item 1): the stored value, else ``default`` (``default()`` once per
stampede) written by the policy and returned."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw
from cacheway import _single_flight
from cacheway._single_flight import MISSING, SingleFlight
from conftest import wait_until


class Boom(Exception):
    pass


def run_stampede(n: int, call: Callable[[], Any], waiting: Callable[[], int],
                 release: threading.Event) -> None:
    """``call`` in ``n`` threads at once; ``release`` is set once ``n - 1`` of them wait
    for the first one's computation (or, failing that, to end the test)."""
    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    try:
        assert wait_until(lambda: waiting() == n - 1, timeout=30), (
            f"{waiting()} of {n - 1} callers wait for the first one's computation")
    finally:
        release.set()
        for t in threads:
            t.join(30)


def test_get_or_set_returns_a_stored_value_without_calling_default(
        tmp_path: Path, autoclose: Callable[[Any], Any]) -> None:
    # issue 14 item 1
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(tmp_path / "a.db")))
    cache.set("k", {"n": 1})
    cache.set("none", None)

    def never() -> Any:
        raise AssertionError("default must not be called on a hit")

    assert cache.get_or_set("k", never) == {"n": 1}
    assert cache.get_or_set("none", never) is None, "a stored None is a hit"


def test_get_or_set_writes_the_default_through_the_policy(
        tmp_path: Path, make_policy: Callable[[], Any],
        autoclose: Callable[[Any], Any]) -> None:
    # issue 14 item 1
    store = cw.SQLiteStore(tmp_path / "a.db")
    cache = autoclose(cw.Cache(store=store, policy=make_policy()))
    calls: list[int] = []

    def compute() -> list[int]:
        calls.append(1)
        return [1, 2]

    assert cache.get_or_set("k", compute) == [1, 2]
    assert cache.get_or_set("k", compute) == [1, 2]
    assert calls == [1]
    assert cache.get_or_set("plain", "v") == "v"
    cache.flush()
    assert store.load("k") == [1, 2]
    assert store.load("plain") == "v"


def test_get_or_set_on_a_namespace_writes_there(
        tmp_path: Path, autoclose: Callable[[Any], Any]) -> None:
    # issue 14 item 1
    store = cw.SQLiteStore(tmp_path / "a.db")
    cache = autoclose(cw.Cache(store=store, policy=cw.WriteBack(max_delay=3600)))
    views = cache.namespace("views")
    assert views.get_or_set("k", lambda: 7) == 7
    assert cache.get("k") is None
    cache.flush()
    assert store.load("k", namespace="views") == 7


def test_get_or_set_ttl_is_the_cached_copys(tmp_path: Path,
                                            autoclose: Callable[[Any], Any]) -> None:
    # issue 14 item 1: ttl= as in set(); the store keeps the row
    now = [0.0]
    store = cw.SQLiteStore(tmp_path / "a.db")
    cache = autoclose(cw.Cache(store=store, backend=cw.MemoryBackend(timer=lambda: now[0])))
    cache.get_or_set("k", lambda: 1, ttl=5)
    loads = cache.stats().loads
    now[0] = 4.0
    assert cache.get("k") == 1
    assert cache.stats().loads == loads, "a copy younger than ttl is served from memory"
    now[0] = 6.0
    assert cache.get("k") == 1
    assert cache.stats().loads == loads + 1, "the expired copy is loaded again"


def test_get_or_set_calls_default_once_per_stampede(
        tmp_path: Path, make_policy: Callable[[], Any],
        autoclose: Callable[[Any], Any]) -> None:
    # issue 14 item 1
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(tmp_path / "a.db"), policy=make_policy()))
    n = 8
    release = threading.Event()
    calls: list[str] = []

    def slow() -> dict[str, int]:
        calls.append(threading.current_thread().name)
        assert release.wait(30)
        return {"answer": 42}

    results: list[Any] = []
    run_stampede(n, lambda: results.append(cache.get_or_set("k", slow)),
                 _single_flight._FLIGHTS.waiting, release)
    assert len(calls) == 1
    assert results == [{"answer": 42}] * n
    assert cache.get("k") == {"answer": 42}


def test_get_or_set_raises_the_defaults_error_in_every_waiter_and_writes_nothing(
        tmp_path: Path, autoclose: Callable[[Any], Any]) -> None:
    # issue 14 item 1
    store = cw.SQLiteStore(tmp_path / "a.db")
    cache = autoclose(cw.Cache(store=store))
    n = 5
    release = threading.Event()
    calls: list[int] = []

    def failing() -> int:
        calls.append(1)
        assert release.wait(30)
        raise Boom("no value")

    errors: list[BaseException] = []

    def call() -> None:
        try:
            cache.get_or_set("k", failing)
        except Boom as exc:
            errors.append(exc)

    run_stampede(n, call, _single_flight._FLIGHTS.waiting, release)
    assert len(calls) == 1
    assert len(errors) == n
    assert cache.get("k", "absent") == "absent"
    assert store.load("k", "absent") == "absent"
    assert cache.get_or_set("k", lambda: 3) == 3, "a later miss calls default again"


def test_get_or_set_lets_a_refused_value_raise_and_writes_nothing(
        tmp_path: Path, autoclose: Callable[[Any], Any]) -> None:
    # issue 14 item 1
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(tmp_path / "a.db")))
    with pytest.raises(cw.SerializationError):
        cache.get_or_set("k", lambda: (1, 2))
    assert cache.get("k", "absent") == "absent"


def test_single_flight_looks_again_when_a_flight_ended_during_the_lookup() -> None:
    # issue 14 item 1: a caller that missed just before the leader's write and arrives
    # after the flight ended must read that write, not compute a second time
    flight = SingleFlight()
    seen = flight.epoch("k")  # read before this caller's (missing) lookup
    assert flight.run("k", flight.epoch("k"), lambda: MISSING, lambda: 1) == 1

    def compute_again() -> int:
        raise AssertionError("computed twice in one stampede")

    assert flight.run("k", seen, lambda: 1, compute_again) == 1


def test_single_flight_leads_again_when_the_lookup_still_misses() -> None:
    # issue 14 item 1: the flight that ended failed: the next caller computes
    flight = SingleFlight()
    seen = flight.epoch("k")

    def fail() -> int:
        raise Boom

    with pytest.raises(Boom):
        flight.run("k", seen, lambda: MISSING, fail)
    assert flight.run("k", seen, lambda: MISSING, lambda: 2) == 2
    assert flight.waiting() == 0
