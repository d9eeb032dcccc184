"""AsyncCache acceptance: @acache.cached, namespaces, open_async, async callbacks, bad input.

Part of the AsyncCache acceptance tests: see ``aio_acceptance.py``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import pytest

import cacheway as cw
from aio_acceptance import (
    BAD_KEYS,
    DownStore,
    Env,
    acache_for,
    env_fixture,  # noqa: F401 - the env fixture
    run,
)


# -- @acache.cached ----------------------------------------------------------------------------
def make_square(ac: cw.AsyncCache, calls: list[int], **kw: Any) -> Any:
    @ac.cached(ttl=60, **kw)
    async def square(x: int, plus: int = 0) -> int:
        """Square x."""
        calls.append(x)
        await asyncio.sleep(0.01)
        return x * x + plus

    return square


def test_cached_async_function(env: Env, make_policy: Callable[[], Any]) -> None:
    calls: list[int] = []

    async def main() -> None:
        async with acache_for(env, make_policy()) as ac:
            square = make_square(ac, calls)
            assert await square(3) == 9
            assert await square(x=3) == 9
            assert await square(3, plus=0) == 9  # defaults applied: one call
            assert calls == [3]
            assert await square(3, 1) == 10
            assert calls == [3, 3]
            # the wrapper keeps the function's identity
            assert square.__name__ == "square"
            assert square.__doc__ == "Square x."
            assert inspect.iscoroutinefunction(square.__wrapped__)
            assert list(inspect.signature(square).parameters) == ["x", "plus"]
            # invalidate drops that call's result only
            await square.invalidate(3)
            assert await square(3) == 9
            assert await square(3, 1) == 10
            assert calls == [3, 3, 3]
            await square.invalidate(x=3, plus=0)
            assert await square(3) == 9
            assert calls == [3, 3, 3, 3]
            # one computation per stampede of tasks
            got = await asyncio.gather(*(square(7) for _ in range(30)))
            assert got == [49] * 30
            assert calls.count(7) == 1
            await ac.flush()
        # stored results outlive the cache (a restart): another cache does not recompute
        async with acache_for(env, make_policy()) as again:
            square2 = make_square(again, calls)
            assert await square2(7) == 49
            assert calls.count(7) == 1

    run(main())


def test_cached_with_key_and_ttl_by_clock(env: Env) -> None:
    now = [1_000_000.0]
    calls: list[str] = []

    async def main() -> None:
        async with acache_for(env, cw.WriteThrough()) as ac:
            @ac.cached(ttl=10, key=lambda sku, region="eu": f"price:{sku}:{region}",
                       clock=lambda: now[0])
            async def price(sku: str, region: str = "eu") -> float:
                calls.append(sku)
                return 9.5

            assert await price("a") == 9.5
            assert await price("a") == 9.5
            assert calls == ["a"]
            now[0] += 11  # older than ttl: computed again
            assert await price("a") == 9.5
            assert calls == ["a", "a"]
            await price.invalidate("a")
            assert await price("a") == 9.5
            assert calls == ["a", "a", "a"]

    run(main())


def test_cached_errors_are_shared_and_not_kept(env: Env) -> None:
    calls = 0

    async def main() -> None:
        nonlocal calls
        async with acache_for(env, cw.WriteBack(max_delay=0.05)) as ac:
            @ac.cached(ttl=60)
            async def boom(x: int) -> int:
                nonlocal calls
                calls += 1
                await asyncio.sleep(0.05)
                raise KeyError(x)

            results = await asyncio.gather(*(boom(1) for _ in range(20)),
                                           return_exceptions=True)
            assert all(isinstance(r, KeyError) for r in results)
            assert calls == 1
            with pytest.raises(KeyError):
                await boom(1)
            assert calls == 2  # an exception is not cached

            @ac.cached(ttl=60)
            async def pair(x: int) -> Any:
                return (x, x)

            with pytest.raises(cw.SerializationError):
                await pair(1)  # a result JSON cannot keep is refused from the call
            with pytest.raises(cw.SerializationError):
                await pair(object())  # an argument the default key cannot take

    run(main())


# -- namespaces and open_async ---------------------------------------------------------------
def test_namespaces_with_their_own_policy_and_flush_covering_them(env: Env) -> None:
    async def main() -> None:
        ac = acache_for(env, cw.WriteThrough())
        async with ac:
            views = ac.namespace("views", policy=cw.WriteBack(max_delay=30.0))
            around = ac.namespace("around", policy=cw.WriteAround())
            assert isinstance(views, cw.AsyncNamespace)
            await views.set("a", 1)
            assert await views.incr("hits", 2) == 2
            assert await views.get("a") == 1
            assert await ac.get("a", "other slice") == "other slice"
            assert env.peek("a", namespace="views") is None  # write-back: not yet
            await around.set("a", 3)
            assert env.peek("a", namespace="around") == 3  # write-around: store first
            await ac.set("a", 2)
            assert env.peek("a") == 2
            await ac.flush()  # covers every namespace
            assert env.peek("a", namespace="views") == 1
            assert env.peek("hits", namespace="views") == 2
            assert await ac.namespace("views").get("a") == 1  # the same view again
            await views.set("b", "on close")
        assert env.peek("b", namespace="views") == "on close"  # close flushed it

    run(main())


def test_open_async_from_urls(env: Env, make_policy: Callable[[], Any]) -> None:
    name = type(make_policy()).__name__
    policy = {"WriteThrough": "write-through", "WriteBack": "write-back",
              "WriteAround": "write-around"}[name]
    options = {"max_delay": 0.05} if policy == "write-back" else {}

    async def main() -> None:
        ac = await cw.open_async(store=env.store_url(), backend=env.backend_url(),
                                 policy=policy, **options)
        assert isinstance(ac, cw.AsyncCache)
        async with ac:
            await ac.set("u", {"url": True})
            assert await ac.get("u") == {"url": True}
            assert await ac.incr("n") == 1
        assert env.peek("u") == {"url": True}
        assert env.peek("n") == 1
        with pytest.raises(cw.ConfigError):
            await cw.open_async(store=env.store_url(), policy=policy, bogus_option=1)
        with pytest.raises(cw.ConfigError) as err:
            await cw.open_async(store="nosuchdb://user:sekrit@host/db")
        assert "sekrit" not in str(err.value)

    run(main())


# -- callback stores with async def callbacks -------------------------------------------------
@pytest.mark.parametrize("store_class", [cw.CallbackStore, cw.AsyncCallbackStore])
def test_async_def_callbacks(store_class: Any, make_policy: Callable[[], Any]) -> None:
    data: dict[str, Any] = {"pre": "loaded"}
    saves: list[list[tuple[str, Any]]] = []
    deletes: list[list[str]] = []
    loops: set[int] = set()

    async def load_many(keys: list[str]) -> dict[str, Any]:
        loops.add(id(asyncio.get_running_loop()))
        await asyncio.sleep(0)
        return {k: data[k] for k in keys if k in data}

    async def save_many(items: list[tuple[str, Any]]) -> None:
        loops.add(id(asyncio.get_running_loop()))
        await asyncio.sleep(0)
        saves.append(list(items))
        data.update(items)

    async def delete_many(keys: list[str]) -> None:
        loops.add(id(asyncio.get_running_loop()))
        deletes.append(list(keys))
        for k in keys:
            data.pop(k, None)

    async def main() -> None:
        store = store_class(load_many=load_many, save_many=save_many,
                            delete_many=delete_many)
        async with cw.AsyncCache(store=store, policy=make_policy()) as ac:
            assert await ac.get("pre") == "loaded"
            await ac.set("a", 1)
            await ac.set("b", 1)
            await ac.set("a", 2)
            await ac.set("c", [1])
            assert await ac.incr("n", 2) == 2
            assert await ac.incr("n", 3) == 5
            await ac.delete("pre")
            await ac.flush()
            assert loops == {id(asyncio.get_running_loop())}  # run on the cache's loop
        assert data == {"a": 2, "b": 1, "c": [1], "n": 5}
        flat = [kv for call in saves for kv in call]
        for call in saves:
            assert len({k for k, _ in call}) == len(call)  # each key at most once a call
        if isinstance(make_policy(), cw.WriteBack):
            # each dirty key once, in the order of each key's last accepted write
            assert flat == [("b", 1), ("a", 2), ("c", [1]), ("n", 5)]
        else:
            assert flat == [("a", 1), ("b", 1), ("a", 2), ("c", [1]), ("n", 2), ("n", 5)]
        assert [k for call in deletes for k in call] == ["pre"]

    run(main())


def test_a_failing_async_store_keeps_write_back_entries() -> None:
    # Guarantee 6 over async def callbacks: retries, entries readable, flush raises on a
    # timeout saying how many are left, and succeeds when the store is back.
    flaky = DownStore()

    async def main() -> None:
        store = flaky.store()
        policy = cw.WriteBack(max_delay=0.02, retry=cw.Retry(base_delay=0.01, max_delay=0.05))
        async with cw.AsyncCache(store=store, policy=policy) as ac:
            await ac.set_many({"a": 1, "b": 2})
            with pytest.raises(cw.StoreError, match="2"):
                await ac.flush(timeout=0.5)
            assert await ac.get_many(["a", "b"]) == {"a": 1, "b": 2}
            assert ac.stats().flush_errors >= 1
            flaky.down = False
            await ac.flush(timeout=10)
            assert flaky.data == {"a": 1, "b": 2}

    run(main())


# -- bad input --------------------------------------------------------------------------------
def test_bad_input_raises_at_the_call_and_damages_nothing(
    env: Env, make_policy: Callable[[], Any]
) -> None:
    errors = (TypeError, ValueError, cw.CachewayError)

    async def main() -> None:
        async with acache_for(env, make_policy()) as ac:
            await ac.set("good", "kept")
            assert await ac.incr("n", 1) == 1
            await ac.set("text", "not a number")
            for bad in BAD_KEYS:
                with pytest.raises(errors):
                    await ac.set(bad, 1)
                with pytest.raises(errors):
                    await ac.get(bad)
                with pytest.raises(errors):
                    await ac.delete(bad)
                with pytest.raises(errors):
                    await ac.incr(bad)
                with pytest.raises(errors):
                    await ac.set_many({bad: 1})
                with pytest.raises(errors):
                    await ac.get_many([bad])
                with pytest.raises(errors):
                    await ac.invalidate(bad)
            for delta in (1.5, "2", None):
                with pytest.raises(errors):
                    await ac.incr("n", delta)
            with pytest.raises(errors):
                await ac.incr("text")  # not a counter
            with pytest.raises(errors):
                await ac.set("k", 1, ttl="soon")
            # nothing else was damaged
            assert await ac.get("good") == "kept"
            assert await ac.get("n") == 1
            assert await ac.get("text") == "not a number"
            await ac.set("after", "works")
            await ac.flush()
            assert ac.stats().flush_errors == 0
        assert env.peek("good") == "kept"
        assert env.peek("n") == 1
        assert env.peek("text") == "not a number"
        assert env.peek("after") == "works"

    run(main())


def test_incr_of_a_stored_non_counter_raises_at_the_call(
    env: Env, make_policy: Callable[[], Any]
) -> None:
    # The row is in the store only (not cached): incr must still refuse it at the call
    # (guarantee 7), not accept it and fail later.
    env.store().save_many({"text": "not a number"})

    async def main() -> None:
        async with acache_for(env, make_policy()) as ac:
            with pytest.raises((TypeError, ValueError, cw.CachewayError)):
                await ac.incr("text")
            await ac.flush(timeout=5)
            assert ac.stats().flush_errors == 0
            assert await ac.get("text") == "not a number"
        assert env.peek("text") == "not a number"

    run(main())


def test_set_many_with_one_refused_value_applies_nothing(
    env: Env, make_policy: Callable[[], Any]
) -> None:
    async def main() -> None:
        async with acache_for(env, make_policy()) as ac:
            await ac.set("a", "old")
            with pytest.raises(cw.SerializationError):
                await ac.set_many({"a": "new", "b": (1, 2)})
            assert await ac.get("a") == "old"
            await ac.flush()
        assert env.peek("a") == "old"
        assert env.peek("b") is None

    run(main())


@pytest.mark.parametrize("case", ["nul-in-key", "nul-in-value", "long-key"])
def test_what_the_store_cannot_take_is_refused_at_set(
    env: Env, make_policy: Callable[[], Any], case: str
) -> None:
    # Guarantee 7: "a key or value the store can never take is refused at set under every
    # policy". Either set refuses it, or the store takes it and gives it back.
    key, value = {"nul-in-key": ("a\x00b", 1), "nul-in-value": ("k", "a\x00b"),
                  "long-key": ("x" * 10_000, 1)}[case]

    async def main() -> None:
        async with acache_for(env, make_policy()) as ac:
            try:
                await ac.set(key, value)
            except (TypeError, ValueError, cw.CachewayError):
                refused = True
            else:
                refused = False
            await ac.set("other", "fine")
            await ac.flush(timeout=5)
            assert ac.stats().flush_errors == 0
        if refused:
            assert env.peek("other") == "fine"
            return
        async with acache_for(env, make_policy()) as fresh:
            await fresh.invalidate(key)
            assert await fresh.get(key) == value

    run(main())


def test_a_cached_result_the_serializer_refuses_names_the_function(env: Env) -> None:
    async def main() -> None:
        async with acache_for(env, cw.WriteThrough()) as ac:
            @ac.cached(ttl=60)
            async def pair(x: int) -> Any:
                return (x, x)

            with pytest.raises(cw.SerializationError, match=r"pair\(\) returned a result"):
                await pair(1)

    run(main())
