"""AsyncCache acceptance: every method, get_or_set, stampedes, values, ttl= and expire=.

Part of the AsyncCache acceptance tests: see ``aio_acceptance.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw
from aio_acceptance import (
    FAITHFUL,
    UNFAITHFUL,
    Env,
    acache_for,
    env_fixture,  # noqa: F401 - the env fixture
    run,
    same,
    wait_for_value,
)


# -- every method ------------------------------------------------------------------------
def test_every_method_reads_its_writes_and_reaches_the_store(
    env: Env, make_policy: Callable[[], Any]
) -> None:
    async def main() -> None:
        async with acache_for(env, make_policy()) as ac:
            await ac.set("a", {"x": [1, 2.5, "s", None, True]})
            assert await ac.get("a") == {"x": [1, 2.5, "s", None, True]}
            assert await ac.get("missing") is None
            assert await ac.get("missing", "dflt") == "dflt"
            await ac.set_many({"b": 1, "c": "three"})
            assert await ac.get_many(["a", "b", "c", "zz"]) == {
                "a": {"x": [1, 2.5, "s", None, True]}, "b": 1, "c": "three"}
            await ac.delete("b")
            assert await ac.get("b", "gone") == "gone"
            await ac.delete_many(["c", "never"])
            assert await ac.get_many(["b", "c"]) == {}
            assert await ac.incr("n") == 1
            assert await ac.incr("n", 4) == 5
            assert await ac.incr("n", -2) == 3
            assert await ac.get("n") == 3
            await ac.invalidate("a")
            assert await ac.get("a") == {"x": [1, 2.5, "s", None, True]}
            await ac.invalidate_many(["a", "n"])
            assert await ac.get_many(["a", "n"]) == {"a": {"x": [1, 2.5, "s", None, True]},
                                                     "n": 3}
            await ac.flush()
            assert await ac.pending() == 0
            st = ac.stats()
            assert isinstance(st, cw.Stats)
            assert st.dirty == 0
            # set a, set_many b c, delete b, delete_many c never, incr x3
            assert st.writes == 9
        assert env.peek("a") == {"x": [1, 2.5, "s", None, True]}
        assert env.peek("b") is None
        assert env.peek("c") is None
        assert env.peek("n") == 3

    run(main())


def test_write_through_and_around_have_the_store_when_set_returns(env: Env) -> None:
    # Guarantee 2 (write-through part) and WriteAround: "store first".
    async def main() -> None:
        for policy in (cw.WriteThrough(), cw.WriteAround()):
            async with acache_for(env, policy) as ac:
                name = type(policy).__name__
                await ac.set(f"k-{name}", [name])
                assert env.peek(f"k-{name}") == [name]
                await ac.set_many({f"m-{name}": 1})
                assert env.peek(f"m-{name}") == 1
                assert await ac.incr(f"n-{name}", 2) == 2
                assert env.peek(f"n-{name}") == 2
                await ac.delete(f"k-{name}")
                assert env.peek(f"k-{name}") is None

    run(main())


def test_write_back_store_lags_until_flush_and_close_flushes(env: Env) -> None:
    async def main() -> None:
        ac = acache_for(env, cw.WriteBack(max_delay=30.0))
        async with ac:
            for i in range(5):
                await ac.set("k", i)
            assert await ac.get("k") == 4
            assert await ac.pending() == 1
            st = ac.stats()
            assert st.coalesced == 4
            assert st.dirty == 1
            assert env.peek("k") is None  # only the store lags
            await ac.flush()
            assert env.peek("k") == 4
            assert ac.stats().flushes >= 1
            assert ac.stats().store_writes >= 1
            await ac.set("late", "x")
        # leaving `async with` flushed it
        assert env.peek("late") == "x"
        with pytest.raises(cw.ClosedError):
            await ac.get("k")
        with pytest.raises(cw.ClosedError):
            await ac.set("k", 1)
        await ac.close()  # closing twice is harmless

    run(main())


def test_read_your_writes_when_the_memory_backend_evicted_dirty_entries(
    tmp_path: Path, make_policy: Callable[[], Any]
) -> None:
    # Guarantee 1, "also when the memory backend has evicted it while dirty".
    async def main() -> None:
        store = cw.SQLiteStore(str(tmp_path / "app.db"))
        policy = make_policy()
        if isinstance(policy, cw.WriteBack):
            policy = cw.WriteBack(max_delay=30.0)
        async with cw.AsyncCache(store=store, backend=cw.MemoryBackend(max_entries=2),
                                 policy=policy) as ac:
            for i in range(20):
                await ac.set(f"e{i}", [i])
            assert [await ac.get(f"e{i}") for i in range(20)] == [[i] for i in range(20)]
            assert ac.stats().evictions > 0
        store.close()

    run(main())


def test_stats_count_hits_misses_and_loads(env: Env, make_policy: Callable[[], Any]) -> None:
    async def main() -> None:
        async with acache_for(env, make_policy()) as ac:
            await ac.set("a", 1)
            await ac.get("a")  # write-around: a miss that fills
            before = ac.stats()
            assert await ac.get("a") == 1
            after_hit = ac.stats()
            assert after_hit.hits == before.hits + 1
            assert await ac.get("nope") is None
            after_miss = ac.stats()
            assert after_miss.misses == after_hit.misses + 1
            assert after_miss.loads == after_hit.loads + 1

    run(main())


# -- get_or_set ----------------------------------------------------------------------------
def test_get_or_set_with_value_sync_and_async_callables(
    env: Env, make_policy: Callable[[], Any]
) -> None:
    calls: list[str] = []

    def sync_load() -> str:
        calls.append("sync")
        return "from-sync"

    async def async_load() -> dict[str, int]:
        calls.append("async")
        await asyncio.sleep(0.01)
        return {"a": 1}

    async def main() -> None:
        async with acache_for(env, make_policy()) as ac:
            assert await ac.get_or_set("v", 5) == 5
            assert await ac.get_or_set("v", 6) == 5
            assert await ac.get_or_set("s", sync_load) == "from-sync"
            assert await ac.get_or_set("s", sync_load) == "from-sync"
            assert await ac.get_or_set("as", async_load, ttl=60) == {"a": 1}
            assert await ac.get_or_set("as", async_load, ttl=60) == {"a": 1}
            assert calls == ["sync", "async"]
            await ac.set("present", "here")
            assert await ac.get_or_set("present", sync_load) == "here"
            assert calls == ["sync", "async"]  # called on a miss only
            await ac.flush()
        assert env.peek("v") == 5
        assert env.peek("s") == "from-sync"
        assert env.peek("as") == {"a": 1}

    run(main())


def test_get_or_set_one_call_per_stampede_of_tasks(
    env: Env, make_policy: Callable[[], Any]
) -> None:
    calls = 0

    async def slow() -> list[int]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.1)
        return [1, 2]

    failures = 0

    async def failing() -> int:
        nonlocal failures
        failures += 1
        await asyncio.sleep(0.1)
        raise ValueError("no value today")

    async def main() -> None:
        async with acache_for(env, make_policy()) as ac:
            got = await asyncio.gather(*(ac.get_or_set("hot", slow) for _ in range(40)))
            assert got == [[1, 2]] * 40
            assert calls == 1
            results = await asyncio.gather(*(ac.get_or_set("bad", failing) for _ in range(40)),
                                           return_exceptions=True)
            assert all(isinstance(r, ValueError) for r in results), results
            assert failures == 1
            assert await ac.get("bad", "absent") == "absent"
            await ac.flush()
        assert env.peek("hot") == [1, 2]
        assert env.peek("bad") is None

    run(main())


def test_get_or_set_refuses_an_unfaithful_result(env: Env) -> None:
    async def main() -> None:
        async with acache_for(env, cw.WriteBack(max_delay=0.05)) as ac:
            with pytest.raises(cw.SerializationError):
                await ac.get_or_set("t", lambda: (1, 2))
            assert await ac.get("t", "absent") == "absent"
            await ac.flush()
        assert env.peek("t") is None

    run(main())


# -- stampedes -----------------------------------------------------------------------------
def test_a_stampede_of_misses_makes_one_store_load(
    env: Env, make_policy: Callable[[], Any]
) -> None:
    seed = env.store()
    seed.save_many({"hot": {"big": list(range(50))}})

    async def main() -> None:
        async with acache_for(env, make_policy()) as ac:
            loads0 = ac.stats().loads
            got = await asyncio.gather(*(ac.get("hot") for _ in range(50)))
            assert all(g == {"big": list(range(50))} for g in got)
            assert ac.stats().loads - loads0 == 1
            loads1 = ac.stats().loads
            got = await asyncio.gather(*(ac.get("absent", "d") for _ in range(50)))
            assert got == ["d"] * 50
            assert ac.stats().loads - loads1 == 1  # "not found" is shared too

    run(main())


def test_a_stampede_on_an_async_callback_store_makes_one_load() -> None:
    loads: list[list[str]] = []

    async def load_many(keys: list[str]) -> dict[str, Any]:
        loads.append(list(keys))
        await asyncio.sleep(0.1)
        return {k: f"v-{k}" for k in keys}

    async def save_many(items: list[tuple[str, Any]]) -> None:
        return None

    async def delete_many(keys: list[str]) -> None:
        return None

    async def main() -> None:
        store = cw.CallbackStore(load_many=load_many, save_many=save_many,
                                 delete_many=delete_many)
        async with cw.AsyncCache(store=store) as ac:
            got = await asyncio.gather(*(ac.get("k") for _ in range(50)))
            assert got == ["v-k"] * 50
            assert loads == [["k"]]

    run(main())


# -- value fidelity and typed values -----------------------------------------------------------
def test_values_come_back_with_the_same_types_from_every_level(
    env: Env, make_policy: Callable[[], Any]
) -> None:
    async def main() -> None:
        async with acache_for(env, make_policy()) as ac:
            await ac.set_many(FAITHFUL)
            for k, v in FAITHFUL.items():
                assert same(await ac.get(k), v), (k, "first read")
            await ac.flush()
            await ac.invalidate_many(list(FAITHFUL))
            for k, v in FAITHFUL.items():
                assert same(await ac.get(k), v), (k, "from the store")
                assert same(env.peek(k), v), (k, "the store's row")
        async with acache_for(env, make_policy()) as other:  # another cache, same data
            got = await other.get_many(list(FAITHFUL))
            for k, v in FAITHFUL.items():
                assert same(got[k], v), (k, "another cache")

    run(main())


def test_mutating_after_set_changes_nothing(env: Env, make_policy: Callable[[], Any]) -> None:
    async def main() -> None:
        async with acache_for(env, make_policy()) as ac:
            d = {"l": [1]}
            await ac.set("m", d)
            d["l"].append(2)
            d["new"] = True
            assert await ac.get("m") == {"l": [1]}
            await ac.flush()
        assert env.peek("m") == {"l": [1]}

    run(main())


@pytest.mark.parametrize("what", list(UNFAITHFUL))
def test_unfaithful_values_are_refused_at_set_and_damage_nothing(
    env: Env, what: str
) -> None:
    async def main() -> None:
        for policy in (cw.WriteThrough(), cw.WriteBack(max_delay=0.05), cw.WriteAround()):
            async with acache_for(env, policy) as ac:
                await ac.set("keep", "old")
                with pytest.raises(cw.SerializationError):
                    await ac.set("keep", UNFAITHFUL[what])
                with pytest.raises(cw.SerializationError):
                    await ac.set("new", UNFAITHFUL[what])
                with pytest.raises(cw.SerializationError):
                    await ac.set_many({"new": UNFAITHFUL[what]})
                assert await ac.get("keep") == "old"
                assert await ac.get("new", "absent") == "absent"
                await ac.flush()
                assert ac.stats().flush_errors == 0
            assert env.peek("keep") == "old"
            assert env.peek("new") is None

    run(main())


@dataclasses.dataclass
class User:
    name: str
    joined: datetime.date
    tags: tuple[str, ...] = ()


def test_typed_namespace_decodes_from_every_level(
    env: Env, make_policy: Callable[[], Any]
) -> None:
    ada = User("Ada", datetime.date(1843, 7, 1), ("math", "engines"))

    async def main() -> None:
        async with acache_for(env, make_policy()) as ac:
            users = ac.namespace("users", type=User)
            await users.set("1", ada)
            got = await users.get("1")
            assert got == ada
            assert isinstance(got, User)
            assert isinstance(got.tags, tuple)
            with pytest.raises(cw.SerializationError):
                await users.set("2", {"name": "Bob"})
            with pytest.raises(cw.ConfigError):
                await users.incr("n")
            with pytest.raises(cw.ConfigError):
                ac.namespace("users", type=dict)
            await ac.flush()
            await users.invalidate("1")
            got = await users.get("1")
            assert got == ada
            assert isinstance(got, User)
            assert await users.get("2") is None
        async with acache_for(env, make_policy()) as other:
            got = await other.namespace("users", type=User).get("1")
            assert got == ada
            assert isinstance(got.joined, datetime.date)

    run(main())


# -- ttl= and expire= ------------------------------------------------------------------------
def test_ttl_is_the_cached_copys_lifetime_only(env: Env) -> None:
    async def main() -> None:
        async with acache_for(env, cw.WriteThrough()) as ac:
            await ac.set("k", 1, ttl=0.5)
            await ac.set_many({"m": 1}, ttl=0.5)
            behind = env.store()
            behind.save_many({"k": 2, "m": 2})  # the database changes behind the cache
            assert await ac.get("k") == 1  # the cached copy
            assert await wait_for_value(ac, "k", 2)  # the copy ended, the row is read
            assert await wait_for_value(ac, "m", 2)
            assert env.peek("k") == 2

    run(main())


def test_expire_ends_the_data_in_the_cache_and_the_store(
    env: Env, make_policy: Callable[[], Any]
) -> None:
    async def main() -> None:
        async with acache_for(env, make_policy()) as ac:
            sessions = ac.namespace("sessions", expire=0.6)
            await sessions.set("s1", {"user": 1})
            assert await sessions.incr("c", 3) == 3
            assert await sessions.get("s1") == {"user": 1}
            await ac.flush()
            assert env.peek("s1", namespace="sessions") == {"user": 1}
            await asyncio.sleep(0.8)
            assert await sessions.get("s1", "ended") == "ended"
            assert await sessions.get("c", "ended") == "ended"
            assert env.peek("s1", namespace="sessions") is None  # stores never return it
            assert await sessions.incr("c") == 1  # a counter starts again from 0
        async with acache_for(env, make_policy()) as other:
            assert await other.namespace("sessions", expire=0.6).get("s1", "ended") == "ended"

    run(main())


def test_expire_on_a_callback_store_is_a_config_error() -> None:
    async def load_many(keys: list[str]) -> dict[str, Any]:
        return {}

    async def main() -> None:
        store = cw.CallbackStore(load_many=load_many, save_many=print, delete_many=print)
        async with cw.AsyncCache(store=store) as ac:
            with pytest.raises(cw.ConfigError):
                ac.namespace("sessions", expire=60)

    run(main())


def test_many_calls_refuse_a_single_str_and_set_many_a_non_mapping(env: Env) -> None:
    """Regression (guarantee 7): delete_many("user") deleted the keys u, s, e and r."""

    async def main() -> None:
        async with acache_for(env, cw.WriteThrough()) as ac:
            await ac.set_many({"u": 1, "user": 2})
            for call in (ac.delete_many, ac.get_many, ac.invalidate_many):
                with pytest.raises(cw.InvalidKeyError, match="not a str"):
                    await call("user")
            with pytest.raises(cw.InvalidKeyError, match="mapping"):
                await ac.set_many([("x", 1)])  # type: ignore[arg-type]
            assert await ac.get_many(["u", "user", "x"]) == {"u": 1, "user": 2}
        assert env.peek("u") == 1

    run(main())
