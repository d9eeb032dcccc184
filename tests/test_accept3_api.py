"""Acceptance tests (round 3) of the thread-front ``cw.Cache`` API v2, written as a new user
would, from DESIGN.md and the docs only: ``@cache.cached`` argument forms, ``get_or_set``,
typed namespaces, value fidelity across backends and stores, ``expire=`` vs ``ttl=``,
``invalidate``, the ``Stats`` fields, retries and dead letters, ``on_full``,
``flush``/``close`` timeouts, and the Prometheus / OpenTelemetry exporters."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import decimal
import enum
import inspect
import sqlite3
import threading
import time
import typing
import uuid
from typing import Any

import msgspec
import pydantic
import pytest

import cacheway as cw
import cacheway.metrics
from conftest import DictStore, wait_until
from services import POSTGRES_DSN, REDIS_URL, require, unique


def sqlite_cache(path: Any, policy: Any = None, **kw: Any) -> cw.Cache:
    return cw.Cache(store=cw.SQLiteStore(str(path)), policy=policy or cw.WriteThrough(), **kw)


POLICIES = {
    "write-through": lambda: cw.WriteThrough(),
    "write-back": lambda: cw.WriteBack(max_delay=0.05),
    "write-around": lambda: cw.WriteAround(),
}


# -- @cache.cached: argument forms, key=, invalidate, the wrapper ---------------------------

def test_cached_all_call_forms_of_one_bound_call_share_one_result(tmp_path: Any) -> None:
    calls: list[tuple[Any, ...]] = []
    with sqlite_cache(tmp_path / "a.db") as cache:
        @cache.cached(ttl=60)
        def f(a: int, b: int = 2, *rest: int, c: str = "x", **kw: int) -> list[Any]:
            calls.append((a, b, rest, c, kw))
            return [a, b, list(rest), c, kw]

        first = f(1)
        assert f(1, 2) == first
        assert f(a=1) == first
        assert f(1, b=2) == first
        assert f(1, c="x") == first
        assert f(b=2, a=1, c="x") == first
        assert len(calls) == 1
        # **kwargs in any order are one call
        r1 = f(1, y=2, z=3)
        assert f(1, z=3, y=2) == r1
        assert len(calls) == 2
        # different arguments are different calls
        f(1, 3)
        f(1, 2, 5)
        f(1, c="y")
        assert len(calls) == 5
        # invalidate with another form of the same call drops it
        f.invalidate(a=1, b=2, c="x")
        f(1)
        assert len(calls) == 6
        f.invalidate(1, z=3, y=2)
        assert f(1, y=2, z=3) == r1
        assert len(calls) == 7


def test_cached_wrapper_keeps_name_doc_qualname_and_type_hints(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db") as cache:
        def price(sku: str, region: str = "eu") -> float:
            """The price of a sku."""
            return 1.0

        wrapped = cache.cached(ttl=60)(price)
        assert wrapped.__wrapped__ is price
        assert wrapped.__doc__ == price.__doc__
        assert wrapped.__qualname__ == price.__qualname__  # type: ignore[attr-defined]
        assert wrapped.__module__ == price.__module__
        assert typing.get_type_hints(wrapped) == typing.get_type_hints(price)
        got = inspect.signature(wrapped).return_annotation
        assert got == inspect.signature(price).return_annotation


def test_cached_key_function_receives_the_call_as_called(tmp_path: Any) -> None:
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def key(*args: Any, **kwargs: Any) -> str:
        seen.append((args, kwargs))
        return "k:" + str(args[0] if args else kwargs["sku"])

    with sqlite_cache(tmp_path / "a.db") as cache:
        @cache.cached(ttl=60, key=key)
        def price(sku: str, region: str = "eu") -> str:
            return f"{sku}/{region}"

        assert price("a", region="us") == "a/us"
        assert seen[-1] == (("a",), {"region": "us"})
        assert price(sku="a") == "a/us"                   # same key -> same result
        assert seen[-1] == ((), {"sku": "a"})
        price.invalidate(sku="a")
        assert seen[-1] == ((), {"sku": "a"})
        assert price("a") == "a/eu"


def test_cached_method_with_key_function(tmp_path: Any) -> None:
    calls: list[int] = []
    with sqlite_cache(tmp_path / "a.db") as cache:
        class Repo:
            def __init__(self, name: str) -> None:
                self.name = name

            @cache.cached(ttl=60, key=lambda self, n: f"{self.name}:{n}")
            def load(self, n: int) -> int:
                calls.append(n)
                return n * 10 + len(self.name)

        a, b = Repo("a"), Repo("bb")
        assert a.load(1) == 11
        assert a.load(1) == 11
        assert b.load(1) == 12
        assert Repo("a").load(1) == 11           # same key from another instance
        assert calls == [1, 1]
        Repo.load.invalidate(a, 1)
        assert a.load(1) == 11
        assert calls == [1, 1, 1]


def test_cached_method_without_key_is_refused_clearly(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db") as cache:
        class Repo:
            @cache.cached(ttl=60)
            def load(self, n: int) -> int:
                return n

        with pytest.raises(cw.SerializationError, match="self"):
            Repo().load(1)


def test_cached_keys_enums_and_uuids_by_their_value(tmp_path: Any) -> None:
    class Color(enum.Enum):
        RED = "red"

    calls: list[Any] = []
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    with sqlite_cache(tmp_path / "a.db") as cache:
        @cache.cached(ttl=60)
        def f(x: Any) -> str:
            calls.append(x)
            return str(x)

        f(Color.RED)
        f(Color.RED)
        f(u)
        f(u)
        assert len(calls) == 2
        with pytest.raises(cw.SerializationError, match="x"):
            f(object())


def test_cached_none_result_is_cached(tmp_path: Any) -> None:
    calls: list[int] = []
    with sqlite_cache(tmp_path / "a.db") as cache:
        @cache.cached(ttl=60)
        def find(x: int) -> int | None:
            calls.append(x)
            return None

        assert find(1) is None
        assert find(1) is None
        assert calls == [1]


def test_cached_exception_is_not_cached_and_every_waiter_gets_it(tmp_path: Any) -> None:
    calls: list[int] = []
    gate = threading.Event()
    with sqlite_cache(tmp_path / "a.db") as cache:
        @cache.cached(ttl=60)
        def boom(x: int) -> int:
            calls.append(x)
            gate.wait(5)
            if len(calls) == 1:
                raise ValueError("first call fails")
            return 7

        errors: list[BaseException] = []

        def run() -> None:
            try:
                boom(1)
            except ValueError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(6)]
        for t in threads:
            t.start()
        assert wait_until(lambda: len(calls) >= 1)
        time.sleep(0.1)
        gate.set()
        for t in threads:
            t.join(10)
        assert len(calls) == 1
        assert len(errors) == 6
        assert boom(1) == 7
        assert len(calls) == 2


def test_cached_recursive_function_does_not_deadlock(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db") as cache:
        @cache.cached(ttl=60)
        def fib(n: int) -> int:
            return n if n < 2 else fib(n - 1) + fib(n - 2)

        out: list[int] = []
        t = threading.Thread(target=lambda: out.append(fib(30)), daemon=True)
        t.start()
        t.join(20)
        assert out == [832040]


def test_cached_under_write_back_invalidate_drops_a_pending_result(tmp_path: Any) -> None:
    calls: list[int] = []
    with sqlite_cache(tmp_path / "a.db", cw.WriteBack(max_delay=60)) as cache:
        @cache.cached(ttl=60)
        def f(x: int) -> int:
            calls.append(x)
            return len(calls)

        assert f(1) == 1
        f.invalidate(1)
        assert f(1) == 2
        cache.flush()
    with sqlite_cache(tmp_path / "a.db") as again:
        @again.cached(ttl=60)
        def f(x: int) -> int:
            calls.append(x)
            return 99

        assert f(1) == 2
        assert len(calls) == 2


@pytest.mark.parametrize("policy", list(POLICIES))
def test_cached_through_a_namespace_view_takes_its_policy(tmp_path: Any, policy: str) -> None:
    calls: list[int] = []
    with sqlite_cache(tmp_path / "a.db") as cache:
        ns = cache.namespace("memo", policy=POLICIES[policy]())

        @ns.cached(ttl=60)
        def f(x: int) -> dict[str, int]:
            calls.append(x)
            return {"x": x}

        assert f(2) == {"x": 2}
        assert f(2) == {"x": 2}
        assert calls == [2]
        cache.flush()
        assert cache.pending() == 0


# -- get_or_set ----------------------------------------------------------------------------

def test_get_or_set_keeps_a_stored_none_and_falsy_values(tmp_path: Any) -> None:
    calls: list[int] = []

    def load() -> str:
        calls.append(1)
        return "computed"

    with sqlite_cache(tmp_path / "a.db") as cache:
        for key, value in [("none", None), ("zero", 0), ("empty", ""), ("false", False),
                           ("list", [])]:
            cache.set(key, value)
            assert cache.get_or_set(key, load) == value, key
        assert calls == []


def test_get_or_set_loader_exception_reaches_every_waiter_and_stores_nothing(tmp_path: Any) -> None:
    calls: list[int] = []
    gate = threading.Event()

    def load() -> int:
        calls.append(1)
        gate.wait(5)
        raise KeyError("nope")

    with sqlite_cache(tmp_path / "a.db") as cache:
        errors: list[BaseException] = []

        def run() -> None:
            try:
                cache.get_or_set("k", load)
            except KeyError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(5)]
        for t in threads:
            t.start()
        assert wait_until(lambda: len(calls) >= 1)
        time.sleep(0.1)
        gate.set()
        for t in threads:
            t.join(10)
        assert len(calls) == 1
        assert len(errors) == 5
        assert cache.get("k", "absent") == "absent"


@pytest.mark.parametrize("policy", list(POLICIES))
def test_get_or_set_result_is_written_by_the_policy(tmp_path: Any, policy: str) -> None:
    with sqlite_cache(tmp_path / "a.db", POLICIES[policy]()) as cache:
        if policy == "write-back":
            cache = cache
        assert cache.get_or_set("k", lambda: {"v": [1, 2]}) == {"v": [1, 2]}
        assert cache.get_or_set("k", lambda: "other") == {"v": [1, 2]}
        assert cache.stats().writes == 1
        if policy == "write-back":
            assert cache.pending() == 1
        else:
            assert cache.pending() == 0
    with sqlite_cache(tmp_path / "a.db") as again:
        assert again.get("k") == {"v": [1, 2]}


def test_get_or_set_loads_the_store_before_calling_the_default(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db") as cache:
        cache.set("k", "stored")
    calls: list[int] = []
    with sqlite_cache(tmp_path / "a.db") as cache:
        assert cache.get_or_set("k", lambda: calls.append(1) or "new") == "stored"
        assert calls == []


def test_get_or_set_with_ttl_ends_the_cached_copy_only(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db") as cache:
        assert cache.get_or_set("k", lambda: 5, ttl=0.3) == 5
        time.sleep(0.5)
        loads = cache.stats().loads
        assert cache.get_or_set("k", lambda: 6) == 5          # the row outlives the copy
        assert cache.stats().loads == loads + 1


# -- typed namespaces ----------------------------------------------------------------------

@dataclasses.dataclass
class Address:
    city: str
    since: datetime.date


@dataclasses.dataclass
class Person:
    name: str
    born: datetime.datetime
    addresses: list[Address]
    scores: dict[str, float] = dataclasses.field(default_factory=dict)
    tags: tuple[str, ...] = ()


class Item(msgspec.Struct):
    sku: str
    price: float
    made: datetime.date
    parts: list[tuple[str, int]] = []


class Order(pydantic.BaseModel):
    id: int
    when: datetime.datetime
    lines: list[dict[str, int]]
    note: str | None = None


class Movie(typing.TypedDict):
    title: str
    year: int


PERSON = Person("Ada", datetime.datetime(1843, 7, 1, 12, 30, tzinfo=datetime.timezone.utc),
                [Address("London", datetime.date(1840, 1, 2))], {"math": 9.5}, ("a", "b"))
ITEM = Item("x1", 9.25, datetime.date(2024, 2, 29), [("bolt", 2)])
ORDER = Order(id=1, when=datetime.datetime(2024, 1, 1, 8, 0, tzinfo=datetime.timezone.utc),
              lines=[{"qty": 2}], note=None)
MOVIE: Movie = {"title": "Metropolis", "year": 1927}
TYPED = [(Person, PERSON), (Item, ITEM), (Order, ORDER), (Movie, MOVIE)]
TYPED_IDS = ["dataclass", "struct", "pydantic", "typeddict"]


@pytest.mark.parametrize(("tp", "value"), TYPED, ids=TYPED_IDS)
@pytest.mark.parametrize("policy", list(POLICIES))
def test_typed_namespace_round_trips_every_type_and_level(tmp_path: Any, tp: Any, value: Any,
                                                         policy: str) -> None:
    with sqlite_cache(tmp_path / "a.db", POLICIES[policy]()) as cache:
        ns = cache.namespace("t", type=tp)
        ns.set("1", value)
        got = ns.get("1")
        assert got == value
        if tp is not Movie:
            assert type(got) is tp
        assert ns.get_many(["1", "2"]) == {"1": value}
        assert ns.get_or_set("3", lambda: value) == value
    with sqlite_cache(tmp_path / "a.db") as again:
        ns = again.namespace("t", type=tp)
        got = ns.get("1")
        assert got == value
        if tp is not Movie:
            assert type(got) is tp
        assert ns.get("3") == value


@pytest.mark.parametrize(("tp", "value"), TYPED[:3], ids=["dataclass", "struct", "pydantic"])
def test_typed_value_mutated_after_set_changes_nothing(tmp_path: Any, tp: Any, value: Any) -> None:
    import copy

    value = copy.deepcopy(value)
    with sqlite_cache(tmp_path / "a.db", cw.WriteBack(max_delay=60)) as cache:
        ns = cache.namespace("t", type=tp)
        ns.set("1", value)
        expected = copy.deepcopy(value)
        if tp is Person:
            value.addresses.append(Address("Paris", datetime.date(1850, 1, 1)))
            value.name = "Bob"
        elif tp is Item:
            value.parts.append(("nut", 1))
            value.sku = "y"
        else:
            value.lines.append({"qty": 9})
            value.id = 2
        assert ns.get("1") == expected


def test_typed_set_refuses_a_value_whose_fields_do_not_fit(tmp_path: Any) -> None:
    # A dataclass does not check its fields; the namespace must (guarantee 7), or the
    # value must come back as it was given.
    bad = Address(city=123, since="not a date")  # type: ignore[arg-type]
    with sqlite_cache(tmp_path / "a.db") as cache:
        ns = cache.namespace("addr", type=Address)
        try:
            ns.set("1", bad)
        except cw.SerializationError:
            assert ns.get("1") is None
            return
    with sqlite_cache(tmp_path / "a.db") as again:
        assert again.namespace("addr", type=Address).get("1") == bad


def test_typeddict_set_refuses_a_dict_missing_a_field(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db") as cache:
        ns = cache.namespace("m", type=Movie)
        with pytest.raises(cw.SerializationError):
            ns.set("1", {"title": "x"})  # type: ignore[typeddict-item]
        with pytest.raises(cw.SerializationError):
            ns.set("2", {"title": "x", "year": "1927"})  # type: ignore[typeddict-item]
        assert ns.get("1") is None
        assert ns.get("2") is None


@pytest.mark.services
@pytest.mark.parametrize(("tp", "value"), TYPED, ids=TYPED_IDS)
def test_typed_namespace_through_redis_and_postgres(pg_table: str, tp: Any, value: Any) -> None:
    require("redis")
    prefix = unique("a3t") + ":"
    make = lambda: cw.Cache(  # noqa: E731
        store=cw.PostgresStore(POSTGRES_DSN, table=pg_table),
        backend=cw.TwoLevelBackend(cw.MemoryBackend(), cw.RedisBackend(REDIS_URL, prefix=prefix),
                                   owns_l2=True),
        policy=cw.WriteBack(max_delay=0.05))
    with make() as cache:
        cache.namespace("t", type=tp).set("1", value)
    with make() as again:                               # from the Redis copy
        got = again.namespace("t", type=tp).get("1")
        assert got == value
        if tp is not Movie:
            assert type(got) is tp
        again.namespace("t", type=tp).invalidate("1")
    with make() as third:                               # from the PostgreSQL row
        got = third.namespace("t", type=tp).get("1")
        assert got == value
        if tp is not Movie:
            assert type(got) is tp
        third.namespace("t", type=tp).delete("1")


# -- value fidelity across backends and stores ---------------------------------------------

FAITHFUL = [
    {"a": [1, 2.5, "x", None, True, False], "b": {"c": {"d": []}}},
    2**63 - 1, -(2**63), 123456789012345678, 1e16, 1.0, 0.1 + 0.2, 5e-324,
    1.7976931348623157e308, -0.5, "snow ☃ \U0001f600 \t\n\"\\", "", [], {}, [[[[{"k": [1]}]]]],
    True, None,
]
FAITHFUL_IDS = [f"v{i}" for i in range(len(FAITHFUL))]
# the whole float 1e16 is checked against PostgreSQL on its own (see the xfail below)
FAITHFUL_PG = [v for v in FAITHFUL if not (isinstance(v, float) and v == 1e16)]


def _assert_same(got: Any, want: Any) -> None:
    assert got == want
    assert type(got) is type(want)
    if isinstance(want, dict):
        for k in want:
            _assert_same(got[k], want[k])
    elif isinstance(want, list):
        for g, w in zip(got, want):
            _assert_same(g, w)


@pytest.mark.parametrize("policy", list(POLICIES))
def test_values_round_trip_with_their_types_from_cache_and_sqlite(tmp_path: Any,
                                                                  policy: str) -> None:
    with sqlite_cache(tmp_path / "a.db", POLICIES[policy]()) as cache:
        for i, v in enumerate(FAITHFUL):
            cache.set(f"k{i}", v)
        for i, v in enumerate(FAITHFUL):
            _assert_same(cache.get(f"k{i}", "<absent>"), v)
    with sqlite_cache(tmp_path / "a.db") as again:
        got = again.get_many([f"k{i}" for i in range(len(FAITHFUL))])
        for i, v in enumerate(FAITHFUL):
            _assert_same(got.get(f"k{i}", "<absent>"), v)


@pytest.mark.services
@pytest.mark.parametrize("backend", ["memory", "redis", "two-level"])
@pytest.mark.parametrize("policy", list(POLICIES))
def test_values_round_trip_with_their_types_from_redis_and_postgres(pg_table: str, backend: str,
                                                                   policy: str) -> None:
    require("redis")
    prefix = unique("a3v") + ":"

    def make_backend() -> Any:
        if backend == "memory":
            return cw.MemoryBackend()
        redis_backend = cw.RedisBackend(REDIS_URL, prefix=prefix)
        if backend == "redis":
            return redis_backend
        return cw.TwoLevelBackend(cw.MemoryBackend(), redis_backend, owns_l2=True)

    backends = []
    try:
        b = make_backend()
        backends.append(b)
        with cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table), backend=b,
                      policy=POLICIES[policy]()) as cache:
            for i, v in enumerate(FAITHFUL_PG):
                cache.set(f"k{i}", v)
            for i, v in enumerate(FAITHFUL_PG):
                _assert_same(cache.get(f"k{i}", "<absent>"), v)
        b2 = make_backend()
        backends.append(b2)
        with cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table), backend=b2) as again:
            for i, v in enumerate(FAITHFUL_PG):       # the shared copy (redis) or the row
                _assert_same(again.get(f"k{i}", "<absent>"), v)
            again.invalidate_many([f"k{i}" for i in range(len(FAITHFUL_PG))])
            for i, v in enumerate(FAITHFUL_PG):       # the PostgreSQL row
                _assert_same(again.get(f"k{i}", "<absent>"), v)
    finally:
        for b in backends:
            if backend != "memory":
                with contextlib.suppress(Exception):
                    b.clear()
            b.close()


@pytest.mark.services
@pytest.mark.parametrize("policy", ["write-through", "write-back"])
def test_whole_large_float_keeps_its_type_through_postgres(pg_table: str, policy: str) -> None:
    with cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table),
                  policy=POLICIES[policy]()) as cache:
        try:
            cache.set("f", 1e16)
            cache.set("nested", {"a": [2.5e17]})
        except cw.SerializationError:
            return                                  # refused at set: also within the contract
    with cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table)) as again:
        _assert_same(again.get("f"), 1e16)
        _assert_same(again.get("nested"), {"a": [2.5e17]})


@pytest.mark.parametrize("policy", list(POLICIES))
def test_mutating_a_value_after_set_changes_nothing(tmp_path: Any, policy: str) -> None:
    with sqlite_cache(tmp_path / "a.db", POLICIES[policy]()) as cache:
        d = {"a": [1, {"b": 2}]}
        cache.set("k", d)
        d["a"].append(3)  # type: ignore[attr-defined]
        d["a"][1]["b"] = 9  # type: ignore[index]
        d["new"] = 1  # type: ignore[assignment]
        assert cache.get("k") == {"a": [1, {"b": 2}]}
        m = {"x": [1]}
        cache.set_many({"m": m})
        m["x"].append(2)
        assert cache.get("m") == {"x": [1]}
        got = cache.get_or_set("g", lambda: m)
        m["x"].append(3)
        assert cache.get("g") == {"x": [1, 2]}
        assert got == {"x": [1, 2]} or got is m


@pytest.mark.parametrize("value", [b"bytes", {1, 2}, float("inf"), -float("inf"), 2**64,
                                   -(2**63) - 1, {"a": (1,)}, [datetime.datetime.now()],
                                   {"k": {1: 2}}, decimal.Decimal("1.5")])
def test_more_values_json_cannot_keep_are_refused_at_set(tmp_path: Any, value: Any) -> None:
    with sqlite_cache(tmp_path / "a.db", cw.WriteBack(max_delay=60)) as cache:
        with pytest.raises(cw.SerializationError):
            cache.set("k", value)
        with pytest.raises(cw.SerializationError):
            cache.set_many({"ok": 1, "k": value})
        assert cache.get("k", "absent") == "absent"
        assert cache.pending() == 0 or cache.get("ok") == 1
        cache.flush()


def test_wide_unsigned_ints_are_refused_or_kept(tmp_path: Any) -> None:
    for i, v in enumerate([2**63, 2**64 - 1]):
        with sqlite_cache(tmp_path / "a.db", cw.WriteBack(max_delay=60)) as cache:
            try:
                cache.set(f"u{i}", v)
            except cw.SerializationError:
                continue
            assert cache.get(f"u{i}") == v
        with sqlite_cache(tmp_path / "a.db") as again:
            _assert_same(again.get(f"u{i}"), v)


def test_incr_past_the_64_bit_range_is_refused_and_keeps_the_value(tmp_path: Any) -> None:
    top = 2**63 - 1
    with sqlite_cache(tmp_path / "a.db") as cache:
        cache.set("n", top)
        try:
            result = cache.incr("n")
        except (cw.CachewayError, OverflowError):
            _assert_same(cache.get("n"), top)
        else:
            _assert_same(result, top + 1)
            _assert_same(cache.get("n"), top + 1)
    with sqlite_cache(tmp_path / "a.db") as again:
        got = again.get("n")
        assert type(got) is int
        assert got in (top, top + 1)


# -- expire= vs ttl= -----------------------------------------------------------------------

def _sqlite_rows(path: Any) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(str(path))
    try:
        return con.execute("SELECT namespace, key FROM cacheway").fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("policy", list(POLICIES))
def test_expire_ends_copies_with_a_longer_ttl_and_purges_the_rows(tmp_path: Any,
                                                                  policy: str) -> None:
    with sqlite_cache(tmp_path / "a.db", POLICIES[policy]()) as cache:
        sessions = cache.namespace("sessions", expire=0.8, ttl=3600)
        sessions.set("s1", {"u": 1})
        sessions.set_many({"s2": 2, "s3": 3})
        cache.namespace("keep", ttl=3600).set("s1", "kept")
        assert sessions.get("s1") == {"u": 1}
        cache.flush()
        stored = {r[1] for r in _sqlite_rows(tmp_path / "a.db") if r[0] == "sessions"}
        assert stored == {"s1", "s2", "s3"}
        time.sleep(1.1)
        assert sessions.get("s1", "ended") == "ended"
        assert sessions.get_many(["s1", "s2", "s3"]) == {}
        assert sessions.get_or_set("s2", lambda: "fresh") == "fresh"
        assert wait_until(lambda: not {r[1] for r in _sqlite_rows(tmp_path / "a.db")
                                       if r[0] == "sessions"} - {"s2"}, timeout=15)
        assert cache.namespace("keep").get("s1") == "kept"
        assert ("keep", "s1") in _sqlite_rows(tmp_path / "a.db")


def test_expire_slides_with_each_write_and_counters_restart(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db", cw.WriteBack(max_delay=0.05)) as cache:
        ns = cache.namespace("s", expire=1.0)
        ns.set("k", 1)
        assert ns.incr("n") == 1
        for i in range(3):
            time.sleep(0.5)
            ns.set("k", i + 2)                      # each write starts its life again
            assert ns.get("k") == i + 2
        assert ns.get("n", "gone") == "gone"        # 1.5 s since its last write
        assert ns.incr("n") == 1
        time.sleep(1.3)
        assert ns.get("k", "gone") == "gone"


def test_ttl_is_the_cached_copy_only(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db", cw.WriteBack(max_delay=0.05)) as cache:
        ns = cache.namespace("c", ttl=0.3)
        ns.set("k", "v")
        cache.flush()
        time.sleep(0.5)
        loads = ns.stats().loads
        assert ns.get("k") == "v"
        assert ns.stats().loads == loads + 1


def test_expire_is_refused_on_a_row_mode_store_with_config_error(tmp_path: Any) -> None:
    con = sqlite3.connect(str(tmp_path / "a.db"))
    con.execute("CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT)")
    con.commit()
    con.close()
    store = cw.SQLiteStore(str(tmp_path / "a.db"), table="users", key_column="id", columns=["name"])
    with cw.Cache(store=store) as cache, pytest.raises(cw.ConfigError):
        cache.namespace("s", expire=60)


# -- invalidate / invalidate_many ----------------------------------------------------------

def test_invalidate_drops_a_stale_copy_and_the_store_keeps_the_row(tmp_path: Any) -> None:
    a = sqlite_cache(tmp_path / "a.db")
    b = sqlite_cache(tmp_path / "a.db")            # its own process memory: no shared copy
    try:
        a.set_many({"x": 1, "y": 1, "z": 1})
        assert a.get_many(["x", "y", "z"]) == {"x": 1, "y": 1, "z": 1}
        b.set_many({"x": 2, "y": 2, "z": 2})       # behind a's back
        assert a.get("x") == 1                     # a's stale copy
        a.invalidate("x")
        a.invalidate_many(["y", "missing"])
        assert a.get_many(["x", "y", "z"]) == {"x": 2, "y": 2, "z": 1}
        a.invalidate("nope")
    finally:
        a.close()
        b.close()


def test_invalidate_keeps_a_pending_write_back_write(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db", cw.WriteBack(max_delay=60)) as cache:
        cache.set("k", "pending")
        cache.invalidate("k")
        cache.invalidate_many(["k"])
        assert cache.get("k") == "pending"
        assert cache.pending() == 1
        cache.flush()
    with sqlite_cache(tmp_path / "a.db") as again:
        assert again.get("k") == "pending"


def test_invalidate_on_a_namespace_leaves_other_namespaces(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db") as cache:
        a, b = cache.namespace("a"), cache.namespace("b")
        a.set("k", 1)
        b.set("k", 2)
        a.get("k")
        b.get("k")
        loads = cache.stats().loads
        a.invalidate("k")
        assert b.get("k") == 2
        assert cache.stats().loads == loads
        assert a.get("k") == 1
        assert cache.stats().loads == loads + 1


@pytest.mark.services
def test_invalidate_clears_both_levels_of_a_two_level_backend(pg_table: str) -> None:
    require("redis")
    prefix = unique("a3i") + ":"
    l2 = cw.RedisBackend(REDIS_URL, prefix=prefix)
    try:
        with cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table),
                      backend=cw.TwoLevelBackend(cw.MemoryBackend(), l2)) as cache:
            cache.set("k", "v1")
            assert cache.get("k") == "v1"
            with cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table)) as behind:
                behind.set("k", "v2")           # the store changes; no backend hears of it
            assert cache.get("k") == "v1"
            cache.invalidate("k")
            assert cache.get("k") == "v2"       # neither L1 nor L2 kept v1
    finally:
        l2.clear()
        l2.close()


# -- Stats: each field counts what the table says ------------------------------------------

def test_stats_hits_misses_loads_writes_and_store_writes(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db") as cache:
        cache.set_many({f"k{i}": i for i in range(5)})   # 5 writes, 5 store rows
        s = cache.stats()
        assert (s.writes, s.store_writes) == (5, 5)
        cache.delete("k0")                                 # 1 write, 1 row deleted
        cache.delete_many(["k1", "k2"])                    # 2 writes, 2 rows deleted
        cache.incr("n")                                    # 1 write, 1 row
        s = cache.stats()
        assert (s.writes, s.store_writes) == (9, 9)
        h, m = s.hits, s.misses
        cache.get("k3")
        cache.get("k4")                                    # written through: cached
        s = cache.stats()
        assert (s.hits, s.misses) == (h + 2, m)
    with sqlite_cache(tmp_path / "a.db") as cold:
        cold.get_many([f"k{i}" for i in range(5)] + [f"absent{i}" for i in range(95)])
        s = cold.stats()
        assert s.loads == 1                                # a load_many of 100 keys is one
        assert s.misses == 100
        assert s.hits == 0
        cold.get("k3")
        s = cold.stats()
        assert (s.hits, s.misses, s.loads) == (1, 100, 1)
        assert (s.writes, s.store_writes) == (0, 0)


def test_stats_write_back_coalesced_flushes_dirty_and_store_writes(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db", cw.WriteBack(max_delay=60)) as cache:
        for i in range(5):
            cache.set(f"k{i}", i)
        cache.set("k0", "again")
        cache.incr("n")
        cache.incr("n", 4)
        cache.delete("k1")
        s = cache.stats()
        assert s.writes == 9
        assert s.coalesced == 3                 # k0 again, n again, k1 deleted after its set
        assert s.dirty == 6
        assert s.store_writes == 0
        assert s.flushes == 0
        assert cache.get("k0") == "again"       # read from the dirty table / backend: a hit
        assert cache.stats().hits == s.hits + 1
        cache.flush()
        s = cache.stats()
        assert s.dirty == 0
        assert s.store_writes == 6
        assert s.flushes == 1
        assert s.flush_seconds_count == s.flushes
    with sqlite_cache(tmp_path / "b.db", cw.WriteBack(max_delay=60, batch_size=2)) as cache:
        cache.set_many({f"k{i}": i for i in range(6)})
        cache.flush()
        s = cache.stats()
        assert s.store_writes == 6
        assert s.flushes >= 3                   # 6 entries in batches of at most 2
        assert s.flush_seconds_count == s.flushes


def test_stats_evictions_for_room_and_ttl(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db", backend=cw.MemoryBackend(max_entries=2)) as cache:
        for i in range(5):
            cache.set(f"k{i}", i)
        assert cache.stats().evictions == 3
        cache.set("t", 1, ttl=0.2)
        before = cache.stats().evictions
        time.sleep(0.4)
        assert cache.get("t") == 1              # the copy expired; the store still has it
        assert cache.stats().evictions >= before + 1


def test_stats_journal_bytes_and_syncs(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "always.db", cw.WriteBack(
            max_delay=60, journal=str(tmp_path / "a.wal"), fsync="always")) as cache:
        syncs0 = cache.stats().journal_syncs
        for i in range(3):
            cache.set(f"k{i}", i)
        s = cache.stats()
        assert s.journal_syncs >= syncs0 + 3        # one thread: no sync to share
        assert s.journal_bytes > 0
    with sqlite_cache(tmp_path / "never.db", cw.WriteBack(
            max_delay=60, journal=str(tmp_path / "n.wal"), fsync="never")) as cache:
        cache.set("k", 0)
        syncs0 = cache.stats().journal_syncs               # opening the journal may sync
        for i in range(3):
            cache.set(f"k{i}", i)
        s = cache.stats()
        assert s.journal_bytes > 0
        assert s.journal_syncs == syncs0                   # no sync per write
    with sqlite_cache(tmp_path / "none.db", cw.WriteBack(max_delay=60)) as cache:
        cache.set("k", 1)
        assert (cache.stats().journal_bytes, cache.stats().journal_syncs) == (0, 0)


def test_stats_of_the_cache_sum_its_namespaces(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db", cw.WriteBack(max_delay=60)) as cache:
        a, b = cache.namespace("a"), cache.namespace("b", policy=cw.WriteThrough())
        a.set("k", 1)
        a.set("k", 2)
        b.set("k", 1)
        cache.set("k", 1)
        assert (a.stats().writes, a.stats().coalesced, a.stats().dirty) == (2, 1, 1)
        assert (b.stats().writes, b.stats().store_writes, b.stats().dirty) == (1, 1, 0)
        s = cache.stats()
        assert (s.writes, s.coalesced, s.dirty, s.store_writes) == (4, 1, 2, 1)


# -- Retry, dead letters, on_full, flush/close timeouts ------------------------------------

def test_dead_letter_entries_stay_readable_until_the_callback_returns() -> None:
    store = DictStore()
    store.failing = True
    seen: list[tuple[str, Any, str, Any]] = []
    holder: dict[str, cw.Cache] = {}

    def on_dead(key: str, value: Any, exc: BaseException) -> None:
        seen.append((key, value, type(exc).__name__, holder["c"].get(key, "<gone>")))

    cache = cw.Cache(store=store.store, policy=cw.WriteBack(
        max_delay=0.01, retry=cw.Retry(attempts=2, base_delay=0.01, max_delay=0.02),
        on_dead_letter=on_dead))
    holder["c"] = cache
    try:
        cache.set("a", {"v": 1})
        cache.set("b", 2)
        assert wait_until(lambda: len(seen) == 2, timeout=15)
        assert sorted((k, v, val) for k, v, _, val in seen) == [("a", {"v": 1}, {"v": 1}),
                                                                ("b", 2, 2)]
        assert wait_until(lambda: cache.stats().dead_letters == 2)
        s = cache.stats()
        assert s.flush_errors >= 2
        assert s.retries >= 1
        assert s.dirty == 0
        assert cache.pending() == 0
        cache.flush(timeout=5)                      # nothing left to flush
    finally:
        store.failing = False
        cache.close(timeout=5)


def test_a_poison_entry_is_dead_lettered_alone() -> None:
    store = DictStore()
    store.poison = "bad"
    dead: list[str] = []
    with cw.Cache(store=store.store, policy=cw.WriteBack(
            max_delay=60, retry=cw.Retry(attempts=2, base_delay=0.01, max_delay=0.02),
            on_dead_letter=lambda k, v, e: dead.append(k))) as cache:
        cache.set_many({f"k{i}": i for i in range(6)})
        cache.set("bad", "x")
        cache.set_many({f"j{i}": i for i in range(6)})
        cache.flush(timeout=15)
        assert dead == ["bad"]
        assert dict(store.data) == {**{f"k{i}": i for i in range(6)},
                                                          **{f"j{i}": i for i in range(6)}}
        assert cache.stats().dead_letters == 1


def test_flush_timeout_raises_store_error_saying_how_many_are_left() -> None:
    store = DictStore()
    store.failing = True
    cache = cw.Cache(store=store.store, policy=cw.WriteBack(
        max_delay=0.01, retry=cw.Retry(base_delay=0.01, max_delay=0.05)))
    try:
        cache.set_many({"a": 1, "b": 2, "c": 3})
        with pytest.raises(cw.StoreError, match=r"\b3\b"):
            cache.flush(timeout=0.5)
        assert cache.pending() == 3
        assert cache.get_many(["a", "b", "c"]) == {"a": 1, "b": 2, "c": 3}
        assert cache.stats().last_error is not None
        store.failing = False
        cache.flush(timeout=15)                   # the retry fixes it: no raise
        assert store.data == {"a": 1, "b": 2, "c": 3}
    finally:
        store.failing = False
        cache.close(timeout=5)


def test_close_timeout_raises_and_the_journal_keeps_the_rest(tmp_path: Any) -> None:
    wal = str(tmp_path / "j.wal")
    down = DictStore()
    down.failing = True
    cache = cw.Cache(store=down.store, policy=cw.WriteBack(
        max_delay=0.01, journal=wal, fsync="always",
        retry=cw.Retry(base_delay=0.01, max_delay=0.05)))
    cache.set("a", 1)
    cache.set("b", [2])
    with pytest.raises(cw.StoreError, match=r"\b2\b"):
        cache.close(timeout=0.5)
    with pytest.raises(cw.ClosedError):
        cache.set("c", 3)
    up = DictStore()
    with cw.Cache(store=up.store, policy=cw.WriteBack(max_delay=0.01, journal=wal)) as again:
        again.flush(timeout=15)
        assert again.get("a") == 1
    assert up.data == {"a": 1, "b": [2]}


def _gated_store() -> tuple[DictStore, threading.Event]:
    store = DictStore()
    gate = threading.Event()
    store.write_gate = gate
    return store, gate


def test_on_full_raise_refuses_new_keys_and_keeps_old_values() -> None:
    store = DictStore({"c": "old"})
    with cw.Cache(store=store.store, policy=cw.WriteBack(max_delay=60, max_dirty=2,
                                                         on_full="raise")) as cache:
        cache.set("a", 1)
        cache.set("b", 2)
        with pytest.raises(cw.Backpressure):
            cache.set("c", 3)
        assert cache.get("c") == "old"
        assert cache.pending() == 2
        cache.set("a", 10)                          # an already-dirty key takes no room
        assert cache.get("a") == 10
        cache.flush()
        cache.set("c", 3)
    assert store.data == {"a": 10, "b": 2, "c": 3}


def test_on_full_block_raises_backpressure_after_block_timeout() -> None:
    store, gate = _gated_store()
    cache = cw.Cache(store=store.store, policy=cw.WriteBack(
        max_delay=0.01, max_dirty=2, on_full="block", block_timeout=0.3))
    try:
        cache.set("a", 1)
        assert wait_until(store.write_entered.is_set)      # the flusher holds "a" in hand
        cache.set("b", 2)                                  # 2 dirty: "a" (in flight) and "b"
        with pytest.raises(cw.Backpressure):
            cache.set("d", 4)
        assert cache.get("d", "absent") == "absent"
        assert cache.pending() == 2
        # a blocked writer goes on once the store drains the table
        done: list[Any] = []
        t = threading.Thread(target=lambda: done.append(cache.set("e", 5)))
        t2 = threading.Thread(target=gate.set)
        t.start()
        time.sleep(0.05)
        t2.start()
        t.join(10)
        assert done == [None]
        cache.flush(timeout=15)
        assert store.data == {"a": 1, "b": 2, "e": 5}
    finally:
        gate.set()
        cache.close(timeout=5)


def test_on_full_write_through_writes_the_store_at_once() -> None:
    store, gate = _gated_store()
    store.gate_threads = lambda: threading.current_thread() is not main
    main = threading.current_thread()
    cache = cw.Cache(store=store.store, policy=cw.WriteBack(
        max_delay=0.01, max_dirty=2, on_full="write_through"))
    try:
        cache.set("a", 1)
        assert wait_until(store.write_entered.is_set)
        cache.set("b", 2)
        cache.set("d", 4)                         # the table is full: through to the store
        assert store.data.get("d") == 4
        assert cache.get("d") == 4
        assert "a" not in store.data              # the flusher's batch still waits
    finally:
        gate.set()
        cache.close(timeout=10)
    assert store.data == {"a": 1, "b": 2, "d": 4}


# -- metrics -------------------------------------------------------------------------------

def test_prometheus_collector_exports_stats_per_namespace(tmp_path: Any) -> None:
    import prometheus_client

    with sqlite_cache(tmp_path / "a.db", cw.WriteBack(max_delay=60)) as cache:
        views = cache.namespace("views")
        cache.set("k", 1)
        cache.get("k")
        cache.get("absent")
        views.set("v", 1)
        views.set("w", 2)
        registry = prometheus_client.CollectorRegistry()
        registry.register(cw.metrics.PrometheusCollector(cache))

        def sample(name: str, ns: str = "default") -> float | None:
            return registry.get_sample_value(name, {"namespace": ns})

        assert sample("cacheway_hits_total") == 1
        assert sample("cacheway_misses_total") == 1
        assert sample("cacheway_writes_total", "views") == 2
        assert sample("cacheway_dirty", "views") == 2
        assert sample("cacheway_dirty") == 1
        cache.flush()
        assert sample("cacheway_dirty", "views") == 0
        assert sample("cacheway_flushes_total", "views") >= 1
        assert sample("cacheway_flush_seconds_count", "views") >= 1
        assert sample("cacheway_flush_seconds_bucket", "views") is None  # needs le
        assert registry.get_sample_value("cacheway_flush_seconds_bucket",
                                         {"namespace": "views", "le": "+Inf"}) >= 1
        assert sample("cacheway_store_errors_total", "views") == 0
        text = prometheus_client.generate_latest(registry).decode()
        assert "# TYPE cacheway_flush_seconds histogram" in text
        assert ("# TYPE cacheway_hits_total counter" in text
                or "# TYPE cacheway_hits counter" in text)


def test_prometheus_store_errors_count_failed_batches() -> None:
    import prometheus_client

    store = DictStore()
    store.fail_writes = 2
    with cw.Cache(store=store.store, policy=cw.WriteBack(
            max_delay=0.01, retry=cw.Retry(base_delay=0.01, max_delay=0.02))) as cache:
        registry = prometheus_client.CollectorRegistry()
        registry.register(cw.metrics.PrometheusCollector(cache))
        cache.set("k", 1)
        cache.flush(timeout=15)
        assert registry.get_sample_value("cacheway_store_errors_total",
                                         {"namespace": "default"}) == cache.stats().flush_errors
        assert cache.stats().flush_errors >= 2


def test_opentelemetry_instrument_reads_stats_at_collection(tmp_path: Any) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    meter = provider.get_meter("acc3a")
    try:
        with sqlite_cache(tmp_path / "a.db", cw.WriteBack(max_delay=60)) as cache:
            views = cache.namespace("views")
            instruments = cw.metrics.instrument(cache, meter)
            assert instruments
            cache.set("k", 1)
            cache.get("k")
            cache.get("absent")
            views.set("v", 1)

            def points() -> dict[str, dict[tuple[Any, ...], float]]:
                out: dict[str, dict[tuple[Any, ...], float]] = {}
                data = reader.get_metrics_data()
                for rm in data.resource_metrics:
                    for sm in rm.scope_metrics:
                        for m in sm.metrics:
                            for p in m.data.data_points:
                                attrs = tuple(sorted(dict(p.attributes or {}).items()))
                                out.setdefault(m.name, {})[attrs] = p.value
                return out

            got = points()
            assert got["cacheway_hits_total"][(("namespace", "default"),)] == 1
            assert got["cacheway_misses_total"][(("namespace", "default"),)] == 1
            assert got["cacheway_dirty"][(("namespace", "views"),)] == 1
            cache.flush()
            got = points()
            assert got["cacheway_dirty"][(("namespace", "views"),)] == 0
            assert got["cacheway_flush_seconds_count"][(("namespace", "views"),)] >= 1
            assert any(dict(k).get("le") in ("+Inf", "inf", float("inf"))
                       for k in got["cacheway_flush_seconds_bucket"])
            assert (("namespace", "default"),) in got["cacheway_store_errors_total"]
    finally:
        provider.shutdown()


# -- round 2: edges ------------------------------------------------------------------------

def test_cached_dict_arguments_key_by_content_not_order(tmp_path: Any) -> None:
    calls: list[Any] = []
    with sqlite_cache(tmp_path / "a.db") as cache:
        @cache.cached(ttl=60)
        def f(q: dict[str, Any], items: list[int]) -> int:
            calls.append(q)
            return len(calls)

        assert f({"b": 1, "a": {"y": 2, "x": 1}}, [1, 2]) == 1
        assert f({"a": {"x": 1, "y": 2}, "b": 1}, (1, 2)) == 1   # tuples keyed as lists
        assert f({"a": {"x": 1, "y": 2}, "b": 2}, [1, 2]) == 2
        f.invalidate({"a": {"y": 2, "x": 1}, "b": 1}, items=(1, 2))
        assert f({"b": 1, "a": {"y": 2, "x": 1}}, [1, 2]) == 3


def test_cached_ttl_none_keeps_the_result(tmp_path: Any) -> None:
    calls: list[int] = []
    with sqlite_cache(tmp_path / "a.db") as cache:
        @cache.cached()
        def f(x: int) -> int:
            calls.append(x)
            return x

        f(1)
        time.sleep(0.2)
        f(1)
        assert calls == [1]


def test_flush_without_timeout_waits_for_the_store_to_come_back() -> None:
    store = DictStore()
    store.failing = True
    with cw.Cache(store=store.store, policy=cw.WriteBack(
            max_delay=0.01, retry=cw.Retry(base_delay=0.01, max_delay=0.05))) as cache:
        cache.set("k", 1)
        assert wait_until(lambda: store.failed_writes >= 2)
        s = cache.stats()
        assert s.store_down_since is not None
        assert s.last_error is not None
        assert s.last_error_at is not None
        threading.Timer(0.3, lambda: setattr(store, "failing", False)).start()
        cache.flush()
        assert store.data == {"k": 1}
        assert cache.stats().store_down_since is None


def test_on_full_write_through_with_a_failing_store_raises_and_keeps_nothing() -> None:
    store, gate = _gated_store()
    main = threading.current_thread()
    store.gate_threads = lambda: threading.current_thread() is not main
    cache = cw.Cache(store=store.store, policy=cw.WriteBack(
        max_delay=0.01, max_dirty=2, on_full="write_through"))
    try:
        cache.set("a", 1)
        assert wait_until(store.write_entered.is_set)
        cache.set("b", 2)
        store.failing = True
        with pytest.raises(cw.StoreError):
            cache.set("d", 4)
        assert cache.get("d", "absent") == "absent"
    finally:
        store.failing = False
        gate.set()
        cache.close(timeout=10)
    assert "d" not in store.data


def test_write_through_store_failure_leaves_the_old_value() -> None:
    store = DictStore({"k": "old"})
    with cw.Cache(store=store.store) as cache:
        assert cache.get("k") == "old"
        store.failing = True
        with pytest.raises(cw.StoreError):
            cache.set("k", "new")
        with pytest.raises(cw.StoreError):
            cache.set_many({"k": "new2", "j": 1})
        store.failing = False
        assert cache.get("k") == "old"
        assert cache.get("j", "absent") == "absent"


def test_typed_row_that_no_longer_fits_raises_store_error_naming_the_field(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db") as cache:
        cache.namespace("addr").set("1", {"town": "London", "since": "1840-01-02"})
    with sqlite_cache(tmp_path / "a.db") as again:
        ns = again.namespace("addr", type=Address)
        with pytest.raises(cw.StoreError, match="city"):
            ns.get("1")


def test_typed_get_or_set_refuses_a_loader_result_of_another_type(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db") as cache:
        ns = cache.namespace("addr", type=Address)
        with pytest.raises(cw.SerializationError, match="Address"):
            ns.get_or_set("1", lambda: {"city": "x"})
        assert ns.get("1") is None
        with pytest.raises(cw.SerializationError):
            ns.set_many({"2": Address("x", datetime.date(2000, 1, 1)), "3": "nope"})
        assert ns.get("3") is None


def test_expire_replay_keeps_the_writes_own_end(tmp_path: Any) -> None:
    import subprocess
    import sys

    from accept_support import child_env

    db, wal = str(tmp_path / "a.db"), str(tmp_path / "s.wal")
    code = (
        "import os, cacheway as cw\n"
        f"c = cw.Cache(store=cw.SQLiteStore({db!r}), policy=cw.WriteBack(max_delay=60, "
        f"journal={wal!r}, fsync='always'))\n"
        "s = c.namespace('s', expire=1.0)\n"
        "s.set('short', 1)\n"
        "c.namespace('keep').set('long', 2)\n"
        "os._exit(0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(), timeout=60,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    time.sleep(1.3)
    with sqlite_cache(db, cw.WriteBack(max_delay=60, journal=wal, fsync="always")) as cache:
        cache.flush()
        assert cache.namespace("keep").get("long") == 2
        assert cache.namespace("s", expire=1.0).get("short", "ended") == "ended"


@pytest.mark.services
def test_expire_ends_shared_redis_copies_and_fills_in_another_process(pg_table: str) -> None:
    require("redis")
    prefix = unique("a3e") + ":"
    backends = [cw.RedisBackend(REDIS_URL, prefix=prefix) for _ in range(2)]
    writer = cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table),
                      backend=cw.TwoLevelBackend(cw.MemoryBackend(), backends[0]))
    reader = cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table),
                      backend=cw.TwoLevelBackend(cw.MemoryBackend(), backends[1]))
    try:
        w = writer.namespace("s", expire=1.0, ttl=3600)
        r = reader.namespace("s", expire=1.0, ttl=3600)
        w.set("k", "v")
        assert r.get("k") == "v"                # copies of a 1 s datum
        r.invalidate("k")
        assert r.get("k") == "v"                # a fill from the row
        time.sleep(1.3)
        assert r.get("k", "ended") == "ended"
        assert w.get("k", "ended") == "ended"
    finally:
        writer.close()
        reader.close()
        backends[0].clear()
        for b in backends:
            b.close()


@pytest.mark.services
def test_damaged_redis_copy_is_a_miss_counted_in_decode_errors(pg_table: str) -> None:
    require("redis")
    import redis

    prefix = unique("a3d") + ":"
    backend = cw.RedisBackend(REDIS_URL, prefix=prefix)
    raw = redis.Redis.from_url(REDIS_URL)
    try:
        with cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table),
                      backend=backend) as cache:
            cache.set("k", {"v": 1})
            names = [n for n in raw.scan_iter(match=prefix + "*") if raw.type(n) == b"string"]
            assert names
            for n in names:
                raw.set(n, b"\xff\x00garbage")
            assert cache.get("k") == {"v": 1}
            assert cache.stats().decode_errors >= 1
    finally:
        backend.clear()
        backend.close()
        raw.close()


def test_prometheus_store_down_gauge_and_unlabelled_evictions() -> None:
    import prometheus_client

    store = DictStore()
    store.failing = True
    cache = cw.Cache(store=store.store, backend=cw.MemoryBackend(max_entries=1),
                     policy=cw.WriteBack(max_delay=0.01,
                                         retry=cw.Retry(base_delay=0.01, max_delay=0.05)))
    try:
        registry = prometheus_client.CollectorRegistry()
        registry.register(cw.metrics.PrometheusCollector(cache))
        cache.set("a", 1)
        cache.set("b", 2)
        assert wait_until(lambda: registry.get_sample_value(
            "cacheway_store_down", {"namespace": "default"}) == 1)
        assert registry.get_sample_value("cacheway_evictions_total") == cache.stats().evictions
        assert cache.stats().evictions >= 1
        store.failing = False
        cache.flush(timeout=15)
        assert registry.get_sample_value("cacheway_store_down", {"namespace": "default"}) == 0
    finally:
        store.failing = False
        cache.close(timeout=5)


def test_get_or_set_writes_a_none_result_once(tmp_path: Any) -> None:
    calls: list[int] = []
    with sqlite_cache(tmp_path / "a.db") as cache:
        assert cache.get_or_set("k", lambda: calls.append(1)) is None
        assert cache.get_or_set("k", lambda: calls.append(1)) is None
        assert calls == [1]


def test_stats_dirty_table_reads_are_hits_after_eviction(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db", cw.WriteBack(max_delay=60),
                      backend=cw.MemoryBackend(max_entries=1)) as cache:
        cache.set("a", 1)
        cache.set("b", 2)                      # "a" leaves the memory backend, still dirty
        s = cache.stats()
        assert cache.get("a") == 1
        t = cache.stats()
        assert (t.hits, t.misses, t.loads) == (s.hits + 1, s.misses, s.loads)


def test_stats_refused_writes_are_not_counted(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db", cw.WriteBack(max_delay=60, max_dirty=1,
                                                      on_full="raise")) as cache:
        cache.set("a", 1)
        with pytest.raises(cw.SerializationError):
            cache.set("b", object())
        with pytest.raises(cw.Backpressure):
            cache.set("c", 1)
        assert cache.stats().writes == 1


def test_namespace_inherits_ttl_unless_given_even_none(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db", ttl=0.3) as cache:
        inherit = cache.namespace("i")
        forever = cache.namespace("f", ttl=None)
        inherit.set("k", 1)
        forever.set("k", 1)
        time.sleep(0.5)
        li, lf = inherit.stats().loads, forever.stats().loads
        assert inherit.get("k") == 1
        assert forever.get("k") == 1
        assert inherit.stats().loads == li + 1
        assert forever.stats().loads == lf


def test_flush_and_close_cover_a_namespace_with_its_own_store(tmp_path: Any) -> None:
    cache = sqlite_cache(tmp_path / "a.db", cw.WriteBack(max_delay=60))
    other = cache.namespace("o", store=cw.SQLiteStore(str(tmp_path / "b.db")))
    other.set("k", "v")
    cache.set("k", "root")
    assert cache.pending() == 2
    cache.flush()
    assert cache.pending() == 0
    other.set("k", "v2")
    cache.close()
    with sqlite_cache(tmp_path / "b.db") as b:
        assert b.namespace("o").get("k") == "v2"
    with sqlite_cache(tmp_path / "a.db") as a:
        assert a.namespace("o").get("k", "absent") == "absent"


def test_cached_ttl_uses_the_write_time_across_restarts(tmp_path: Any) -> None:
    now = [1_000_000.0]
    calls: list[int] = []

    def make(cache: cw.Cache, ttl: float) -> Any:
        @cache.cached(ttl=ttl, clock=lambda: now[0], namespace="memo")
        def f(x: int) -> int:
            calls.append(x)
            return len(calls)
        return f

    with sqlite_cache(tmp_path / "a.db") as cache:
        assert make(cache, 100)(1) == 1
    now[0] += 50
    with sqlite_cache(tmp_path / "a.db") as cache:
        assert make(cache, 100)(1) == 1          # 50 s old, ttl 100: still fresh
        assert make(cache, 10)(1) == 2           # a shorter ttl applies to stored results
    now[0] += 5
    with sqlite_cache(tmp_path / "a.db") as cache:
        assert make(cache, 100)(1) == 2


@pytest.mark.services
@pytest.mark.parametrize("policy", list(POLICIES))
def test_postgres_key_the_store_cannot_take_is_refused_at_set(pg_table: str, policy: str) -> None:
    with cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table),
                  policy=POLICIES[policy]()) as cache:
        for key in ["a\x00b", "x" * 10_000]:
            try:
                cache.set(key, 1)
            except (cw.CachewayError, ValueError):
                continue
            cache.flush(timeout=10)
            assert cache.get(key) == 1
        cache.set("ok", 1)
        cache.flush(timeout=10)
    with cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table)) as again:
        assert again.get("ok") == 1
        assert again.stats().flush_errors == 0


# -- typed namespaces: valid values of the type that set() refuses -------------------------

class AliasedUser(pydantic.BaseModel):
    user_name: str = pydantic.Field(alias="userName")


class Strict(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    a: int

    @pydantic.computed_field  # type: ignore[prop-decorator]
    @property
    def double(self) -> int:
        return self.a * 2


@dataclasses.dataclass
class IntKeyed:
    names: dict[int, str]


def _typed_round_trip(tmp_path: Any, tp: Any, value: Any) -> None:
    with sqlite_cache(tmp_path / "a.db", cw.WriteBack(max_delay=60)) as cache:
        ns = cache.namespace("t", type=tp)
        ns.set("k", value)                       # an instance of the namespace's type
        assert ns.get("k") == value
    with sqlite_cache(tmp_path / "a.db") as again:
        assert again.namespace("t", type=tp).get("k") == value


def test_typed_pydantic_model_with_an_alias(tmp_path: Any) -> None:
    _typed_round_trip(tmp_path, AliasedUser, AliasedUser(userName="ada"))


def test_typed_pydantic_model_with_a_computed_field(tmp_path: Any) -> None:
    _typed_round_trip(tmp_path, Strict, Strict(a=2))


def test_typed_dataclass_with_int_keys(tmp_path: Any) -> None:
    _typed_round_trip(tmp_path, IntKeyed, IntKeyed({1: "a", 2: "b"}))


# -- stampedes on every backend, flush under load, retry counting --------------------------

@pytest.mark.services
@pytest.mark.parametrize("backend", ["memory", "redis", "two-level"])
@pytest.mark.parametrize("policy", list(POLICIES))
def test_get_or_set_and_cached_stampede_compute_once(pg_table: str, backend: str,
                                                     policy: str) -> None:
    require("redis")
    prefix = unique("a3s") + ":"
    if backend == "memory":
        b: Any = cw.MemoryBackend()
    elif backend == "redis":
        b = cw.RedisBackend(REDIS_URL, prefix=prefix)
    else:
        b = cw.TwoLevelBackend(cw.MemoryBackend(), cw.RedisBackend(REDIS_URL, prefix=prefix),
                               owns_l2=True)
    calls: list[str] = []
    lock = threading.Lock()

    def slow(tag: str) -> dict[str, str]:
        with lock:
            calls.append(tag)
        time.sleep(0.2)
        return {"t": tag}

    try:
        with cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table), backend=b,
                      policy=POLICIES[policy]()) as cache:
            @cache.cached(ttl=60)
            def memo(x: int) -> dict[str, str]:
                return slow("memo")

            results: list[Any] = []
            start = threading.Barrier(16)

            def run(i: int) -> None:
                start.wait(10)
                if i % 2:
                    results.append(cache.get_or_set("k", lambda: slow("gos")))
                else:
                    results.append(memo(1))

            threads = [threading.Thread(target=run, args=(i,)) for i in range(16)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(20)
            assert sorted(calls) == ["gos", "memo"]
            assert results.count({"t": "gos"}) == 8
            assert results.count({"t": "memo"}) == 8
            cache.flush(timeout=10)
    finally:
        if backend != "memory":
            b.clear()
        b.close()


def test_flush_returns_while_other_threads_keep_writing() -> None:
    store = DictStore()
    stop = threading.Event()
    with cw.Cache(store=store.store, policy=cw.WriteBack(max_delay=0.02, batch_size=50)) as cache:
        def writer() -> None:
            i = 0
            while not stop.is_set():
                cache.set(f"hot{i % 20}", i)
                cache.incr("n")
                i += 1

        threads = [threading.Thread(target=writer) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.1)
            cache.set("marker", 1)
            cache.flush(timeout=20)                 # covers writes before the call only
            assert store.data.get("marker") == 1
        finally:
            stop.set()
            for t in threads:
                t.join(10)


def test_retry_attempts_is_the_number_of_tries_before_the_dead_letter() -> None:
    store = DictStore()
    store.failing = True
    dead: list[str] = []
    cache = cw.Cache(store=store.store, policy=cw.WriteBack(
        max_delay=0.01, retry=cw.Retry(attempts=3, base_delay=0.01, max_delay=0.02,
                                       jitter=False),
        on_dead_letter=lambda k, v, e: dead.append(k)))
    try:
        cache.set("only", 1)
        assert wait_until(lambda: dead == ["only"], timeout=15)
        assert store.write_attempts == 3
        s = cache.stats()
        assert (s.flush_errors, s.retries, s.dead_letters, s.flushes) == (3, 2, 1, 0)
    finally:
        store.failing = False
        cache.close(timeout=5)


# -- metrics: namespaces made later, evictions, journal bytes; purge_expired ----------------

def test_prometheus_sees_namespaces_created_after_registration(tmp_path: Any) -> None:
    import prometheus_client

    with sqlite_cache(tmp_path / "a.db", cw.WriteBack(max_delay=60,
                                                      journal=str(tmp_path / "j.wal")),
                      backend=cw.MemoryBackend(max_entries=1)) as cache:
        registry = prometheus_client.CollectorRegistry()
        registry.register(cw.metrics.PrometheusCollector(cache))
        late = cache.namespace("late")
        late.set("a", 1)
        late.set("b", 2)
        assert registry.get_sample_value("cacheway_writes_total", {"namespace": "late"}) == 2
        assert registry.get_sample_value("cacheway_evictions_total") == cache.stats().evictions
        assert registry.get_sample_value("cacheway_journal_bytes",
                                         {"namespace": "late"}) is not None
        total = sum(registry.get_sample_value("cacheway_journal_bytes", {"namespace": n}) or 0
                    for n in ("default", "late"))
        assert total == cache.stats().journal_bytes > 0


def test_opentelemetry_sees_namespaces_created_after_instrument(tmp_path: Any) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        with sqlite_cache(tmp_path / "a.db", cw.WriteBack(max_delay=60),
                          backend=cw.MemoryBackend(max_entries=1)) as cache:
            cw.metrics.instrument(cache, provider.get_meter("acc3a"))
            late = cache.namespace("late")
            late.set("a", 1)
            late.set("b", 2)
            found: dict[str, dict[tuple[Any, ...], float]] = {}
            for rm in reader.get_metrics_data().resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        for p in m.data.data_points:
                            found.setdefault(m.name, {})[
                                tuple(sorted(dict(p.attributes or {}).items()))] = p.value
            assert found["cacheway_writes_total"][(("namespace", "late"),)] == 2
            assert found["cacheway_evictions_total"] == {(): cache.stats().evictions}
    finally:
        provider.shutdown()


def test_purge_expired_deletes_the_expired_rows_now(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db") as cache:
        s = cache.namespace("s", expire=0.5)
        s.set_many({f"k{i}": i for i in range(5)})
        s.set("late", 1)
        cache.namespace("keep").set("k0", 0)
        time.sleep(0.7)
        s.set("fresh", 1)
        cache.purge_expired()
        rows = _sqlite_rows(tmp_path / "a.db")
        assert sorted(k for n, k in rows if n == "s") == ["fresh"]
        assert ("keep", "k0") in rows


@pytest.mark.services
def test_cached_invalidate_reaches_another_caches_l1(pg_table: str) -> None:
    require("redis")
    prefix = unique("a3c") + ":"
    l2s = [cw.RedisBackend(REDIS_URL, prefix=prefix) for _ in range(2)]
    caches = [cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table),
                       backend=cw.TwoLevelBackend(cw.MemoryBackend(), l2)) for l2 in l2s]
    calls: list[int] = []
    try:
        def make(cache: cw.Cache) -> Any:
            @cache.cached(ttl=600, namespace="memo")
            def f(x: int) -> int:
                calls.append(x)
                return len(calls)
            return f

        fa, fb = make(caches[0]), make(caches[1])
        assert fa(1) == 1
        assert fb(1) == 1                   # from the shared copy
        assert calls == [1]
        fa.invalidate(1)
        assert wait_until(lambda: fb.namespace.get(fb.cache_key(1)) is None)
        assert fb(1) == 2
    finally:
        for c in caches:
            c.close()
        l2s[0].clear()
        for b in l2s:
            b.close()


def test_flush_timeout_counts_the_entries_left_in_every_namespace() -> None:
    store = DictStore()
    store.failing = True
    cache = cw.Cache(store=store.store, policy=cw.WriteBack(
        max_delay=0.01, retry=cw.Retry(base_delay=0.01, max_delay=0.05)))
    try:
        cache.namespace("a").set_many({"x": 1, "y": 2})
        cache.namespace("b").set_many({"x": 1, "y": 2, "z": 3})
        assert cache.pending() == 5
        with pytest.raises(cw.StoreError) as info:
            cache.flush(timeout=0.5)
        assert cache.pending() == 5
        assert "5" in str(info.value).replace("0.5", "")
    finally:
        store.failing = False
        cache.close(timeout=10)


# -- pending deletes and store-side values under write-back --------------------------------

def test_pending_delete_survives_invalidate_and_get_or_set_computes(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db", cw.WriteBack(max_delay=60)) as cache:
        cache.set_many({"k": "old", "j": "old"})
        cache.flush()
        cache.delete("k")
        cache.delete("j")
        cache.invalidate("k")
        cache.invalidate_many(["j"])
        assert cache.get("k", "absent") == "absent"
        assert cache.get_many(["k", "j"]) == {}
        assert cache.get_or_set("j", lambda: "new") == "new"
        cache.flush()
    with sqlite_cache(tmp_path / "a.db") as again:
        assert again.get("k", "absent") == "absent"
        assert again.get("j") == "new"


def test_cached_invalidate_after_flush_recomputes(tmp_path: Any) -> None:
    calls: list[int] = []
    with sqlite_cache(tmp_path / "a.db", cw.WriteBack(max_delay=60)) as cache:
        @cache.cached(ttl=60)
        def f(x: int) -> int:
            calls.append(x)
            return len(calls)

        assert f(1) == 1
        cache.flush()
        f.invalidate(1)
        assert f(1) == 2
        f.invalidate(1)
        cache.flush()
        assert f(1) == 3


@pytest.mark.parametrize("policy", ["write-back", "write-through"])
def test_incr_starts_from_the_stores_value(tmp_path: Any, policy: str) -> None:
    with sqlite_cache(tmp_path / "a.db") as cache:
        cache.set("n", 10)
    with sqlite_cache(tmp_path / "a.db", POLICIES[policy]()) as cache:
        assert cache.incr("n") == 11
        assert cache.incr("n", 5) == 16
        assert cache.get("n") == 16
    with sqlite_cache(tmp_path / "a.db") as again:
        assert again.get("n") == 16


def test_cached_functions_sharing_a_namespace_keep_their_own_results(tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db") as cache:
        @cache.cached(ttl=60, namespace="memo")
        def price(sku: int) -> str:
            return "price"

        @cache.cached(ttl=60, namespace="memo")
        def stock(sku: int) -> str:
            return "stock"

        assert price(1) == "price"
        assert stock(1) == "stock"


def test_cached_functions_decorated_through_one_view_keep_their_own_results(
        tmp_path: Any) -> None:
    with sqlite_cache(tmp_path / "a.db") as cache:
        view = cache.namespace("memo", policy=cw.WriteBack(max_delay=60))

        @view.cached(ttl=60)
        def price(sku: int) -> str:
            return "price"

        @view.cached(ttl=60)
        def stock(sku: int) -> str:
            return "stock"

        assert price(1) == "price"
        assert stock(1) == "stock"
        assert cache.pending() == 2                  # the view's write-back policy


def test_flush_latency_histogram_is_cumulative(tmp_path: Any) -> None:
    import prometheus_client

    with sqlite_cache(tmp_path / "a.db", cw.WriteBack(max_delay=60, batch_size=1)) as cache:
        cache.set_many({f"k{i}": i for i in range(4)})
        cache.flush()
        s = cache.stats()
        counts = [c for _, c in s.flush_seconds_buckets]
        assert counts == sorted(counts)
        assert counts[-1] <= s.flush_seconds_count == s.flushes >= 4
        assert s.flush_seconds_sum > 0
        registry = prometheus_client.CollectorRegistry()
        registry.register(cw.metrics.PrometheusCollector(cache))
        inf = registry.get_sample_value("cacheway_flush_seconds_bucket",
                                        {"namespace": "default", "le": "+Inf"})
        assert inf == s.flush_seconds_count
        assert registry.get_sample_value("cacheway_flush_seconds_sum",
                                         {"namespace": "default"}) == pytest.approx(
                                             s.flush_seconds_sum)


@pytest.mark.services
@pytest.mark.parametrize("kind", ["msgpack", "pickle"])
@pytest.mark.parametrize("policy", ["write-through", "write-back"])
def test_other_serializers_keep_their_values_through_redis_and_postgres(
        pg_table: str, kind: str, policy: str) -> None:
    require("redis")
    if kind == "msgpack":
        ser: Any = cw.MsgpackSerializer()
        values: list[Any] = [b"\xff\x00", {1: "a", 2: [b"x"]}, -(2**63), 1e16]
        refused: list[Any] = [{"t": (1, 2)}, bytearray(b"x"), 2**64]
    else:
        ser = cw.PickleSerializer(key=b"acceptance-secret")
        values = [(1, 2), {1, 2}, datetime.datetime(2020, 1, 1),
                  Address("x", datetime.date(2020, 1, 2)), 2**100, frozenset({1})]
        refused = []
    prefix = unique("a3p") + ":"
    redis_backend = cw.RedisBackend(REDIS_URL, prefix=prefix, serializer=ser)
    try:
        with cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table, serializer=ser),
                      backend=redis_backend, serializer=ser, policy=POLICIES[policy]()) as cache:
            for i, v in enumerate(values):
                cache.set(f"k{i}", v)
                _assert_same(cache.get(f"k{i}"), v)
            for v in refused:
                with pytest.raises(cw.SerializationError):
                    cache.set("bad", v)
            assert cache.get("bad", "absent") == "absent"
        with cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table, serializer=ser),
                      serializer=ser) as again:
            for i, v in enumerate(values):
                _assert_same(again.get(f"k{i}"), v)
    finally:
        redis_backend.clear()
        redis_backend.close()


# -- typed namespaces: set() accepts values that get() gives back changed ------------------

@dataclasses.dataclass
class Employee(Address):
    badge: int = 0


class VipOrder(Order):
    vip_level: int = 0


class BigItem(Item):
    weight: float = 0.0


SUBCLASSED = [
    (Address, Employee("London", datetime.date(2000, 1, 1), badge=7)),
    (Order, VipOrder(id=1, when=ORDER.when, lines=[], vip_level=3)),
    (Item, BigItem("x", 1.5, datetime.date(2000, 1, 1), [], weight=2.5)),
]


@pytest.mark.parametrize(("tp", "value"), SUBCLASSED, ids=["dataclass", "pydantic", "struct"])
def test_typed_set_of_a_subclass_instance_is_refused_or_kept(tmp_path: Any, tp: Any,
                                                             value: Any) -> None:
    with sqlite_cache(tmp_path / "a.db") as cache:
        ns = cache.namespace("t", type=tp)
        try:
            ns.set("k", value)
        except cw.SerializationError:
            assert ns.get("k") is None
            return
        assert ns.get("k") == value
        assert type(ns.get("k")) is type(value)


def test_typeddict_set_with_an_undeclared_key_is_refused_or_kept(tmp_path: Any) -> None:
    value = {"title": "x", "year": 1, "extra": 5}
    with sqlite_cache(tmp_path / "a.db") as cache:
        ns = cache.namespace("m", type=Movie)
        try:
            ns.set("k", value)  # type: ignore[arg-type]
        except cw.SerializationError:
            assert ns.get("k") is None
            return
        assert ns.get("k") == value
    with sqlite_cache(tmp_path / "a.db") as again:
        assert again.namespace("m", type=Movie).get("k") == value


@pytest.mark.parametrize("policy", list(POLICIES))
def test_expire_caps_a_per_call_ttl(tmp_path: Any, policy: str) -> None:
    with sqlite_cache(tmp_path / "a.db", POLICIES[policy]()) as cache:
        s = cache.namespace("s", expire=0.6)
        s.set("a", 1, ttl=3600)
        s.set_many({"b": 2}, ttl=3600)
        assert s.get_or_set("c", lambda: 3, ttl=3600) == 3
        assert s.incr("n", 5) == 5
        assert s.get_many(["a", "b", "c", "n"]) == {"a": 1, "b": 2, "c": 3, "n": 5}
        time.sleep(0.9)
        assert s.get_many(["a", "b", "c", "n"]) == {}
        assert s.get("a", "ended") == "ended"
        assert s.get_or_set("c", lambda: "again") == "again"


def test_flush_timeout_counts_entries_in_flight_to_a_slow_store() -> None:
    store, gate = _gated_store()
    cache = cw.Cache(store=store.store, policy=cw.WriteBack(max_delay=0.01))
    try:
        cache.set_many({"a": 1, "b": 2, "c": 3})
        assert wait_until(store.write_entered.is_set)      # the batch is in the store's hands
        cache.set("d", 4)
        with pytest.raises(cw.StoreError, match=r"\b4\b"):
            cache.flush(timeout=0.3)
        assert cache.get_many(["a", "d"]) == {"a": 1, "d": 4}
        gate.set()
        cache.flush(timeout=15)
        assert store.data == {"a": 1, "b": 2, "c": 3, "d": 4}
    finally:
        gate.set()
        cache.close(timeout=10)


@pytest.mark.services
def test_invalidate_many_reaches_another_caches_l1(pg_table: str) -> None:
    require("redis")
    prefix = unique("a3m") + ":"
    l2s = [cw.RedisBackend(REDIS_URL, prefix=prefix) for _ in range(2)]
    a, b = (cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table),
                     backend=cw.TwoLevelBackend(cw.MemoryBackend(), l2)) for l2 in l2s)
    try:
        a.set_many({"k": "v1", "j": "v1", "other": "v1"})
        assert b.get_many(["k", "j", "other"]) == {"k": "v1", "j": "v1", "other": "v1"}
        with cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table)) as behind:
            behind.set_many({"k": "v2", "j": "v2", "other": "v2"})
        assert b.get("k") == "v1"                      # b's copy: nobody told it
        a.invalidate_many(["k", "j"])
        assert wait_until(lambda: b.get_many(["k", "j"]) == {"k": "v2", "j": "v2"})
        assert a.get_many(["k", "j"]) == {"k": "v2", "j": "v2"}
        assert b.get("other") == "v1"                  # not invalidated
    finally:
        a.close()
        b.close()
        l2s[0].clear()
        for x in l2s:
            x.close()


@pytest.mark.parametrize("tp", ["typed", "cached"])
def test_journal_replay_of_typed_values_and_cached_results(tmp_path: Any, tp: str) -> None:
    import subprocess
    import sys

    from accept_support import child_env

    db, wal = str(tmp_path / "a.db"), str(tmp_path / "j.wal")
    code = (
        "import os, datetime, dataclasses, cacheway as cw\n"
        "@dataclasses.dataclass\n"
        "class Address:\n"
        "    city: str\n"
        "    since: datetime.date\n"
        f"c = cw.Cache(store=cw.SQLiteStore({db!r}), policy=cw.WriteBack(max_delay=60, "
        f"journal={wal!r}, fsync='always'))\n"
        "c.namespace('t', type=Address).set('k', Address('x', datetime.date(2001, 2, 3)))\n"
        "@c.cached(ttl=600, namespace='memo', key=lambda n: str(n))\n"
        "def f(n):\n"
        "    return [n, 'computed']\n"
        "f(1)\n"
        "os._exit(0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(), timeout=60,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    with sqlite_cache(db, cw.WriteBack(max_delay=60, journal=wal)) as cache:
        # the namespace's journal (PATH.<name>) is replayed when the namespace is opened
        if tp == "typed":
            cache.namespace("t", type=Address)
        else:
            cache.namespace("memo")
        cache.flush()
    with sqlite_cache(db) as again:
        if tp == "typed":
            got = again.namespace("t", type=Address).get("k")
            assert got == Address("x", datetime.date(2001, 2, 3))
        else:
            # (the same key=: a default key names the function, whose qualname differs)
            @again.cached(ttl=600, namespace="memo", key=lambda n: str(n))
            def f(n: int) -> list[Any]:
                return [n, "recomputed"]

            assert f(1) == [1, "computed"]


def test_reopening_the_cache_replays_every_namespaces_journal(tmp_path: Any) -> None:
    import subprocess
    import sys

    from accept_support import child_env

    db, wal = str(tmp_path / "a.db"), str(tmp_path / "j.wal")
    code = (
        "import os, cacheway as cw\n"
        f"c = cw.Cache(store=cw.SQLiteStore({db!r}), policy=cw.WriteBack(max_delay=60, "
        f"journal={wal!r}, fsync='always'))\n"
        "c.set('root', 1)\n"
        "c.namespace('views').set('k', 2)\n"
        "os._exit(0)\n"                      # acknowledged, fsync'ed, never flushed
    )
    proc = subprocess.run([sys.executable, "-c", code], env=child_env(), timeout=60,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    with sqlite_cache(db, cw.WriteBack(max_delay=60, journal=wal)) as cache:
        cache.flush()                          # reopening the cache replays its journal
    with sqlite_cache(db) as again:
        assert again.get("root") == 1
        assert again.namespace("views").get("k") == 2


def test_cached_positional_only_and_keyword_only_parameters(tmp_path: Any) -> None:
    calls: list[Any] = []
    with sqlite_cache(tmp_path / "a.db") as cache:
        @cache.cached(ttl=60)
        def f(a: int, /, b: int = 2, *, c: int = 3) -> int:
            calls.append((a, b, c))
            return a + b + c

        assert f(1) == 6
        assert f(1, 2) == 6
        assert f(1, b=2) == 6
        assert f(1, c=3) == 6
        assert f(1, b=2, c=3) == 6
        assert len(calls) == 1
        assert f(1, c=4) == 7
        with pytest.raises(TypeError):
            f(a=1)  # type: ignore[call-arg]
        f.invalidate(1, b=2)
        assert f(1) == 6
        assert len(calls) == 3


def test_get_or_set_stampede_makes_one_store_load(tmp_path: Any) -> None:
    store = DictStore()
    store.load_delay = 0.2
    with cw.Cache(store=store.store, policy=cw.WriteBack(max_delay=60)) as cache:
        barrier = threading.Barrier(8)
        out: list[Any] = []

        def run() -> None:
            barrier.wait(10)
            out.append(cache.get_or_set("k", lambda: {"v": 1}))

        threads = [threading.Thread(target=run) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
        assert out == [{"v": 1}] * 8
        assert len(store.load_calls) == 1
        s = cache.stats()
        assert s.loads == 1
        assert s.writes == 1
        assert s.dirty == 1
