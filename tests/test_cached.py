"""@cache.cached (issue 14 item 2): results kept per bound arguments in a namespace of the
function's own, computed once per stampede, living ``ttl`` seconds in the cache and the
store alike."""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw
from cacheway.memoize import MAX_KEY_BYTES, namespace_for
from conftest import wait_until
from services import REDIS_URL, require, unique
from test_get_or_set import run_stampede

WRITE_POLICIES: dict[str, Callable[[], Any]] = {
    "write-through": lambda: cw.WriteThrough(),
    "write-back": lambda: cw.WriteBack(max_delay=0.05),
}


class Clock:
    """Unix time that only moves when a test says so."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


class Boom(Exception):
    pass


@pytest.fixture
def cache(tmp_path: Path, autoclose: Callable[[Any], Any]) -> cw.Cache:
    c: cw.Cache = autoclose(cw.Cache(store=cw.SQLiteStore(tmp_path / "a.db")))
    return c


def test_cached_wrapper_keeps_the_functions_name_doc_and_signature(cache: cw.Cache) -> None:
    # issue 14 item 2
    def price(sku: str, region: str = "eu") -> int:
        """The price of sku."""
        return 1

    wrapped = cache.cached(ttl=60)(price)
    assert wrapped.__wrapped__ is price
    for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
        assert getattr(wrapped, attr) == getattr(price, attr), attr
    assert inspect.signature(wrapped) == inspect.signature(price)


@pytest.mark.slow  # runs mypy, ~6 s
def test_cached_keeps_the_functions_types_for_mypy(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # issue 14 item 2: ParamSpec carries the wrapped function's parameters and result
    api = pytest.importorskip("mypy.api")
    src = Path(cw.__file__).parent.parent
    module = tmp_path / "typed_use.py"
    module.write_text(
        "import cacheway as cw\n"
        "cache = cw.Cache(store=cw.SQLiteStore(':memory:'))\n"
        "class Price: ...\n"
        "@cache.cached(ttl=60)\n"
        "def price(sku: str, region: str = 'eu') -> Price:\n"
        "    return Price()\n"
        "reveal_type(price('a'))\n"
        "reveal_type(price.invalidate)\n"
        "reveal_type(price.__name__)\n"
        "price(1)\n"
        "class Shop:\n"
        "    @cache.cached(key=lambda self, sku: sku)\n"
        "    def total(self, sku: str) -> int:\n"
        "        return 1\n"
        "reveal_type(Shop().total('x'))\n"
        "Shop().total.invalidate(3)\n"
    )
    monkeypatch.setenv("MYPYPATH", str(src))
    out, err, _ = api.run([
        "--strict", "--no-error-summary", "--follow-imports=silent",
        "--cache-dir", str(tmp_path / ".mypy_cache"), str(module)])
    lines = [line.split(": ", 1)[1] for line in out.splitlines() if "typed_use.py" in line]
    assert lines == [
        'note: Revealed type is "typed_use.Price"',
        'note: Revealed type is "def (sku: str, region: str =)"',
        'note: Revealed type is "str"',
        'error: Argument 1 to "__call__" of "Cached" has incompatible type "int"; '
        'expected "str"  [arg-type]',
        'note: Revealed type is "int"',
        'error: Argument 1 to "invalidate" of "BoundCached" has incompatible type "int"; '
        'expected "str"  [arg-type]',
    ], out + err


def test_cached_computes_once_per_arguments_with_defaults_applied(cache: cw.Cache) -> None:
    # issue 14 item 2: f(1), f(1, region="eu") and f(sku=1) are one call when "eu" is
    # the default
    calls: list[tuple[int, str]] = []

    @cache.cached(ttl=60)
    def price(sku: int, region: str = "eu") -> dict[str, Any]:
        calls.append((sku, region))
        return {"sku": sku, "region": region}

    assert price(1) == {"sku": 1, "region": "eu"}
    assert price(1, region="eu") == {"sku": 1, "region": "eu"}
    assert price(sku=1) == {"sku": 1, "region": "eu"}
    assert price(1, "eu") == {"sku": 1, "region": "eu"}
    assert price(1, "us") == {"sku": 1, "region": "us"}
    assert calls == [(1, "eu"), (1, "us")]
    assert price.cache_key(1) == price.cache_key(region="eu", sku=1)


def test_cached_keys_var_arguments_stably(cache: cw.Cache) -> None:
    # issue 14 item 2: **kwargs sorted, nested dicts sorted, tuples as lists
    calls: list[Any] = []

    @cache.cached()
    def f(*args: Any, **kwargs: Any) -> int:
        calls.append((args, kwargs))
        return len(calls)

    assert f(1, (2, 3), a=1, b={"y": 1, "x": 2}) == 1
    assert f(1, [2, 3], b={"x": 2, "y": 1}, a=1) == 1
    assert f(1, 2) == 2
    assert len(calls) == 2


def test_cached_result_none_is_a_hit(cache: cw.Cache) -> None:
    # issue 14 item 2
    calls: list[int] = []

    @cache.cached()
    def nothing(x: int) -> None:
        calls.append(x)

    assert nothing(1) is None
    assert nothing(1) is None
    assert calls == [1]


def test_cached_functions_get_namespaces_of_their_own(tmp_path: Path,
                                                      autoclose: Callable[[Any], Any]) -> None:
    # issue 14 item 2
    store = cw.SQLiteStore(tmp_path / "a.db")
    cache = autoclose(cw.Cache(store=store))

    @cache.cached()
    def double(x: int) -> int:
        return 2 * x

    @cache.cached()
    def square(x: int) -> int:
        return x * x

    assert (double(3), square(3)) == (6, 9)
    assert double.namespace.name != square.namespace.name
    assert double.namespace.name == namespace_for(double.__wrapped__)
    key = double.cache_key(3)
    assert store.load(key, namespace=double.namespace.name)["v"] == 6
    assert store.load(key, namespace=square.namespace.name)["v"] == 9


def test_namespace_for_makes_valid_names_from_any_qualname() -> None:
    # issue 14 item 2: <locals> and over-long names become valid, distinct namespace names
    def make(qualname: str, module: str = "app.prices") -> Callable[[], None]:
        def f() -> None:
            pass
        f.__qualname__ = qualname
        f.__module__ = module
        return f

    assert namespace_for(make("price")) == "app.prices.price"
    local = namespace_for(make("outer.<locals>.price"))
    long_a = namespace_for(make("C" * 80 + ".a"))
    long_b = namespace_for(make("D" + "C" * 79 + ".a"))
    unicode = namespace_for(make("prix_é"))
    for name in (local, long_a, long_b, unicode):
        assert len(name) <= 64
        cw.Cache(store=cw.SQLiteStore(":memory:")).namespace(name)  # a valid name
    assert local.startswith("app.prices.outer._locals_.price-")
    assert long_a != long_b
    assert namespace_for(make("outer._locals_.price")) != local


def test_cached_key_receives_the_call_as_made(cache: cw.Cache) -> None:
    # issue 14 item 2
    seen: list[tuple[Any, Any]] = []

    def key(*args: Any, **kwargs: Any) -> str:
        seen.append((args, kwargs))
        return f"sku:{args[0] if args else kwargs['sku']}"

    calls: list[str] = []

    @cache.cached(key=key)
    def price(sku: str, region: str = "eu") -> str:
        calls.append(sku)
        return sku.upper()

    assert price("a") == "A"
    assert price("a", region="us") == "A", "key= decides what is the same call"
    assert price(sku="a") == "A"
    assert seen == [(("a",), {}), (("a",), {"region": "us"}), ((), {"sku": "a"})]
    assert calls == ["a"]
    assert price.namespace.get("sku:a")["v"] == "A"


def test_cached_invalidate_drops_the_result_from_cache_and_store(
        tmp_path: Path, autoclose: Callable[[Any], Any]) -> None:
    # issue 14 item 2
    store = cw.SQLiteStore(tmp_path / "a.db")
    cache = autoclose(cw.Cache(store=store))
    calls: list[str] = []

    @cache.cached(ttl=60)
    def price(sku: str, region: str = "eu") -> int:
        calls.append(sku)
        return len(calls)

    assert price("a") == 1
    assert price("b") == 2
    ns = price.namespace.name
    price.invalidate("a", region="eu")
    assert store.load(price.cache_key("a"), "gone", namespace=ns) == "gone"
    assert price("a") == 3
    assert price("b") == 2, "only that call's result is dropped"


def test_cached_ttl_is_the_results_lifetime_in_cache_and_store(
        tmp_path: Path, autoclose: Callable[[Any], Any]) -> None:
    # issue 14 item 2: an expired result is not served, even when loaded from the store
    clock = Clock()
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(tmp_path / "a.db")))
    calls: list[int] = []

    @cache.cached(ttl=60, clock=clock)
    def f(x: int) -> int:
        calls.append(x)
        return len(calls)

    assert f(1) == 1
    clock.now += 59
    assert f(1) == 1
    f.namespace.invalidate(f.cache_key(1))  # drop the cached copy: the store's is read
    assert f(1) == 1
    assert calls == [1]
    clock.now += 1
    f.namespace.invalidate(f.cache_key(1))
    assert f(1) == 2, "a result older than ttl read from the store is a miss"
    clock.now += 61
    assert f(1) == 3, "a result older than ttl in the cache is a miss"
    assert f(1) == 3


@pytest.mark.parametrize("policy", list(WRITE_POLICIES))
def test_cached_results_outlive_a_restart_but_not_ttl(tmp_path: Path, policy: str) -> None:
    # issue 14 item 2: "stored results outlive restarts, not ttl"
    path = tmp_path / "a.db"
    clock = Clock()
    calls: list[str] = []

    def run() -> int:
        with cw.Cache(store=cw.SQLiteStore(path), policy=WRITE_POLICIES[policy]()) as cache:
            @cache.cached(ttl=60, clock=clock)
            def price(sku: str) -> int:
                calls.append(sku)
                return len(calls)

            return price("a")

    assert run() == 1
    clock.now += 30
    assert run() == 1, "a new Cache on the same file returns the stored result"
    assert calls == ["a"]
    clock.now += 30
    assert run() == 2, "after ttl the function is called again"
    assert run() == 2
    assert calls == ["a", "a"]


def test_cached_ttl_changed_between_restarts_applies_to_stored_results(tmp_path: Path) -> None:
    # issue 14 item 2: results keep their write time, so a shorter ttl ends them sooner
    path = tmp_path / "a.db"
    clock = Clock()
    calls: list[int] = []

    def run(ttl: float) -> int:
        with cw.Cache(store=cw.SQLiteStore(path)) as cache:
            @cache.cached(ttl=ttl, clock=clock)
            def f() -> int:
                calls.append(1)
                return len(calls)

            return f()

    assert run(3600) == 1
    clock.now += 120
    assert run(3600) == 1
    assert run(60) == 2


@pytest.mark.parametrize("policy", ["write-through", "write-back", "write-around"])
def test_cached_results_are_written_by_the_namespace_policy(
        tmp_path: Path, policy: str, autoclose: Callable[[Any], Any]) -> None:
    # issue 14 item 2
    policies = {**WRITE_POLICIES, "write-around": lambda: cw.WriteAround()}
    store = cw.SQLiteStore(tmp_path / "a.db")
    cache = autoclose(cw.Cache(store=store, policy=policies[policy]()))
    calls: list[int] = []

    @cache.cached()
    def f(x: int) -> list[int]:
        calls.append(x)
        return [x, x]

    assert f(2) == [2, 2]
    assert f(2) == [2, 2]
    assert calls == [2]
    assert f.namespace.policy == cache.policy
    cache.flush()
    assert store.load(f.cache_key(2), namespace=f.namespace.name)["v"] == [2, 2]


def test_cached_through_a_namespace_view_takes_its_policy(
        tmp_path: Path, autoclose: Callable[[Any], Any]) -> None:
    # issue 14 item 2
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(tmp_path / "a.db")))
    views = cache.namespace("views", policy=cw.WriteBack(max_delay=3600), ttl=30)

    @views.cached()
    def f(x: int) -> int:
        return x

    assert f(1) == 1
    assert f.namespace.policy == views.policy
    assert f.namespace.ttl == 30
    assert f.namespace.pending() == 1


def test_cached_computes_once_per_stampede(tmp_path: Path,
                                           autoclose: Callable[[Any], Any]) -> None:
    # issue 14 item 2
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(tmp_path / "a.db")))
    release = threading.Event()
    calls: list[int] = []

    @cache.cached(ttl=60)
    def slow(x: int) -> int:
        calls.append(x)
        assert release.wait(30)
        return x * 10

    n = 8
    results: list[int] = []
    run_stampede(n, lambda: results.append(slow(4)), slow._flights.waiting, release)
    assert calls == [4]
    assert results == [40] * n


def test_cached_raises_the_functions_error_in_every_waiter_and_stores_nothing(
        tmp_path: Path, autoclose: Callable[[Any], Any]) -> None:
    # issue 14 item 2
    store = cw.SQLiteStore(tmp_path / "a.db")
    cache = autoclose(cw.Cache(store=store))
    release = threading.Event()
    calls: list[int] = []

    @cache.cached()
    def failing(x: int) -> int:
        calls.append(x)
        assert release.wait(30)
        raise Boom(x)

    n = 4
    errors: list[BaseException] = []

    def call() -> None:
        try:
            failing(1)
        except Boom as exc:
            errors.append(exc)

    run_stampede(n, call, failing._flights.waiting, release)
    assert calls == [1]
    assert len(errors) == n
    ns = failing.namespace.name
    assert store.load(failing.cache_key(1), "absent", namespace=ns) == "absent"


def test_cached_refuses_arguments_it_cannot_key_naming_them(cache: cw.Cache) -> None:
    # issue 14 item 2
    @cache.cached()
    def f(x: Any, opts: Any = None) -> int:
        return 1

    with pytest.raises(cw.SerializationError, match=r"argument 'x' of .*f\(\) is of type set"):
        f({1, 2})
    with pytest.raises(cw.SerializationError, match=r"'opts' of .*\['a'\]\[1\] is the float nan"):
        f(1, opts={"a": [0, float("nan")]})
    with pytest.raises(cw.SerializationError, match="beyond 64 bits"):
        f(2**70)
    with pytest.raises(cw.SerializationError, match="not a str"):
        f({1: 2})
    with pytest.raises(TypeError, match="argument"):
        f()  # what calling f would raise


def test_cached_method_without_key_names_self(cache: cw.Cache) -> None:
    # issue 14 item 2: methods need key= (self is rarely a stable key)
    class Shop:
        @cache.cached()
        def total(self, sku: str) -> int:
            return 1

    with pytest.raises(cw.SerializationError, match=r"argument 'self' .* pass key="):
        Shop().total("a")


def test_cached_method_with_key_binds_self(cache: cw.Cache) -> None:
    # issue 14 item 2
    calls: list[str] = []

    class Shop:
        def __init__(self, name: str) -> None:
            self.name = name

        @cache.cached(key=lambda self, sku: f"{self.name}:{sku}")
        def total(self, sku: str) -> str:
            calls.append(sku)
            return f"{self.name}/{sku}"

    a, b = Shop("a"), Shop("b")
    assert (a.total("x"), a.total("x"), b.total("x")) == ("a/x", "a/x", "b/x")
    assert calls == ["x", "x"]
    a.total.invalidate("x")
    assert a.total("x") == "a/x"
    assert calls == ["x", "x", "x"]
    assert Shop.total(b, "x") == "b/x"


def test_cached_hashes_long_keys(cache: cw.Cache) -> None:
    # issue 14 item 2: stores limit key length
    calls: list[int] = []

    @cache.cached()
    def f(text: str) -> int:
        calls.append(1)
        return len(text)

    long = "é" * MAX_KEY_BYTES
    key = f.cache_key(long)
    assert len(key) == 64
    assert set(key) <= set("0123456789abcdef")
    assert f.cache_key("short") == '["short"]'
    assert f(long) == MAX_KEY_BYTES
    assert f(long) == MAX_KEY_BYTES
    assert calls == [1]


def test_cached_lets_a_refused_result_raise_and_stores_nothing(cache: cw.Cache) -> None:
    # issue 14 item 2: results must be values the serializer keeps faithfully
    @cache.cached()
    def pair(x: int) -> tuple[int, int]:
        return (x, x)

    with pytest.raises(cw.SerializationError):
        pair(1)
    assert pair.namespace.get(pair.cache_key(1), "absent") == "absent"


def test_cached_recomputes_over_a_value_it_did_not_write(cache: cw.Cache) -> None:
    # issue 14 item 2
    @cache.cached()
    def f(x: int) -> int:
        return x + 1

    f.namespace.set(f.cache_key(1), "written by hand")
    assert f(1) == 2
    assert f(1) == 2


def test_cached_refuses_bad_options(cache: cw.Cache) -> None:
    # issue 14 item 2
    def f(x: int) -> int:
        return x

    async def g(x: int) -> int:
        return x

    with pytest.raises(cw.ConfigError, match="parentheses"):
        cache.cached(f)  # type: ignore[arg-type]
    with pytest.raises(cw.ConfigError, match="ttl"):
        cache.cached(ttl=0)
    with pytest.raises(cw.ConfigError, match="key="):
        cache.cached(key="k")  # type: ignore[arg-type]
    with pytest.raises(cw.ConfigError, match="AsyncCache"):
        cache.cached()(g)
    with pytest.raises(cw.ConfigError, match="namespace name"):
        cache.cached(namespace="a b")(f)


def test_cached_namespace_option_names_the_results_namespace(cache: cw.Cache) -> None:
    # issue 14 item 2: a name that survives renames and `python app.py` (__main__)
    @cache.cached(namespace="prices")
    def f(x: int) -> int:
        return x

    assert f(1) == 1
    assert f.namespace is cache.namespace("prices")


def test_cached_serves_results_across_processes_sharing_the_store(tmp_path: Path) -> None:
    # issue 14 item 2: the namespace and key do not depend on the process
    path = tmp_path / "a.db"
    code = (
        "import sys, cacheway as cw\n"
        "calls = []\n"
        "with cw.Cache(store=cw.SQLiteStore(sys.argv[1])) as cache:\n"
        "    @cache.cached(namespace='shared')\n"
        "    def f(x, y=2):\n"
        "        calls.append(x)\n"
        "        return x * y\n"
        "    print(f(3), len(calls))\n"
    )
    import subprocess
    import sys

    env = {**os.environ, "PYTHONHASHSEED": "random"}
    first = subprocess.run([sys.executable, "-c", code, str(path)], env=env,
                           capture_output=True, text=True, timeout=60, check=True)
    second = subprocess.run([sys.executable, "-c", code, str(path)], env=env,
                            capture_output=True, text=True, timeout=60, check=True)
    assert (first.stdout, second.stdout) == ("6 1\n", "6 0\n")


def test_cached_keyword_calls_key_as_inspect_binds_them(cache: cw.Cache) -> None:
    # issue 14 item 2: the quick binding of plain signatures agrees with inspect's
    @cache.cached()
    def f(a: int, b: int = 2, c: str = "x") -> int:
        return a

    key = f.cache_key(1, 2, "x")
    for args, kwargs in [((1,), {}), ((1,), {"c": "x"}), ((), {"a": 1, "b": 2}),
                         ((1, 2), {"c": "x"}), ((), {"c": "x", "a": 1})]:
        assert f.cache_key(*args, **kwargs) == key, (args, kwargs)
    with pytest.raises(TypeError, match="'d'"):
        f(1, d=3)
    with pytest.raises(TypeError, match="multiple values"):
        f(1, a=1)
    with pytest.raises(TypeError, match="'a'"):
        f(b=1)


def test_cached_keys_enums_uuids_and_subclasses_as_their_values(cache: cw.Cache) -> None:
    # issue 14 item 2
    import enum
    import uuid

    class Region(enum.Enum):
        EU = "eu"

    class Name(str):
        pass

    @cache.cached()
    def f(x: Any, y: Any = None) -> int:
        return 1

    u = uuid.UUID(int=7)
    assert f.cache_key(Region.EU) == f.cache_key("eu") == '["eu",null]'
    assert f.cache_key(u) == f.cache_key(str(u))
    assert f.cache_key(Name("n")) == f.cache_key("n")
    assert f.cache_key([u, Region.EU]) == f.cache_key([str(u), "eu"])
    assert f.cache_key("null") == '["null",null]', "null in a string is no nan"
    with pytest.raises(cw.SerializationError, match="the float inf"):
        f(1, float("inf"))
    with pytest.raises(cw.SerializationError, match="the float nan"):
        f(float("nan"), 1)


@pytest.mark.services
@pytest.mark.parametrize("two_level", [False, True])
def test_cached_results_and_invalidate_reach_every_cache_sharing_redis(
        tmp_path: Path, two_level: bool) -> None:
    # issue 14 item 2: a result computed by one process is a hit in another; invalidate
    # drops it everywhere
    require("redis")
    prefix = unique("cwmemo") + ":"
    path = tmp_path / "a.db"
    calls: list[str] = []

    def open_cache() -> cw.Cache:
        l2 = cw.RedisBackend(REDIS_URL, prefix=prefix)
        backend = cw.TwoLevelBackend(cw.MemoryBackend(), l2) if two_level else l2
        cache = cw.Cache(store=cw.SQLiteStore(path), backend=backend)
        ready = getattr(cache.backend, "wait_ready", None)
        if ready is not None:
            assert ready(10)
        return cache

    a, b = open_cache(), open_cache()
    try:
        def make(cache: cw.Cache, who: str) -> Any:
            @cache.cached(ttl=3600)
            def price(sku: str) -> str:
                calls.append(who)
                return f"{sku}@{len(calls)}"
            return price

        pa, pb = make(a, "a"), make(b, "b")
        assert pa("x") == "x@1"
        assert pb("x") == "x@1", "b reads a's result"
        assert calls == ["a"]
        pa.invalidate("x")
        assert wait_until(lambda: pb("x") == "x@2"), "b still serves the dropped result"
        assert calls == ["a", "b"]
        assert pa("x") == "x@2"
    finally:
        a.close()
        b.close()
