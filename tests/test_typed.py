"""Typed namespaces (issue 14): ``cache.namespace(name, type=T)`` answers ``T`` from every
level (memory copy, shared Redis copy, store row) and refuses other values at ``set``."""

from __future__ import annotations

import dataclasses
import datetime
import os
import textwrap
import uuid
from pathlib import Path
from typing import Any, TypedDict

import msgspec
import pydantic
import pytest

import cacheway as cw


@dataclasses.dataclass
class User:
    name: str
    born: datetime.date
    tags: tuple[str, ...] = ()


class Item(msgspec.Struct):
    sku: str
    price: float
    seen: datetime.datetime


class Point(TypedDict):
    x: int
    y: int


class Order(pydantic.BaseModel):
    id: uuid.UUID
    total: float


ADA = User("Ada", datetime.date(1815, 12, 10), ("math",))
WIDGET = Item("w-1", 9.5, datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.timezone.utc))
ORDER = Order(id=uuid.UUID(int=7), total=12.5)
SAMPLES: list[tuple[type, Any]] = [(User, ADA), (Item, WIDGET), (Point, {"x": 1, "y": 2}),
                                   (Order, ORDER)]


@pytest.mark.parametrize(("kind", "value"), SAMPLES, ids=lambda v: getattr(v, "__name__", ""))
@pytest.mark.parametrize("policy", [cw.WriteThrough(), cw.WriteBack(max_delay=0.01),
                                    cw.WriteAround()], ids=lambda p: p.name)
def test_a_typed_namespace_answers_its_type_from_the_cache_and_the_store(
        tmp_path: Path, kind: type, value: Any, policy: cw.Policy) -> None:
    path = str(tmp_path / "t.db")
    with cw.Cache(store=cw.SQLiteStore(path), policy=policy) as cache:
        ns = cache.namespace("things", type=kind)
        ns.set("k", value)
        hit = ns.get("k")
        assert hit == value
        assert type(hit) is type(value)
        assert hit is not value  # the cache keeps its own copy (value fidelity)
        cache.flush()
        ns.invalidate("k")
        loaded = ns.get("k")  # from the store's row
        assert loaded == value
        assert type(loaded) is type(value)
    with cw.Cache(store=cw.SQLiteStore(path)) as again:  # a new process reads the row
        row = again.namespace("things", type=kind).get("k")
        assert row == value
        assert type(row) is type(value)
        plain = again.namespace("plain").get("k")  # another namespace: its own keys
        assert plain is None


def test_a_typed_namespace_on_redis_answers_its_type_from_the_shared_copy(
        tmp_path: Path, redis_url: str, prefix: str) -> None:
    store = cw.SQLiteStore(str(tmp_path / "t.db"))
    with cw.Cache(store=store, backend=cw.RedisBackend(redis_url, prefix=prefix)) as writer:
        writer.namespace("users", type=User).set("ada", ADA)
    # Another process: nothing in its memory, the copy is in Redis (and the row in SQLite).
    store2 = cw.SQLiteStore(str(tmp_path / "t.db"))
    with cw.Cache(store=store2, backend=cw.RedisBackend(redis_url, prefix=prefix)) as reader:
        users = reader.namespace("users", type=User)
        assert reader.stats().loads == 0
        got = users.get("ada")
        assert got == ADA
        assert type(got) is User
        assert users.get_many(["ada"]) == {"ada": ADA}
        assert reader.stats().loads == 0  # both answered by Redis, not the store
        assert users.get_many(["ada", "nobody"]) == {"ada": ADA}
        assert "ada" in users
        assert users["ada"].born == ADA.born


@pytest.mark.parametrize(("kind", "wrong"), [
    (User, {"name": "Ada", "born": "1815-12-10"}),
    (Item, ADA),
    (Point, {"x": "1", "y": 2}),
    (Order, {"id": str(uuid.UUID(int=7)), "total": 1.0}),
], ids=["dict-for-dataclass", "dataclass-for-struct", "bad-typeddict", "dict-for-model"])
def test_set_refuses_a_value_of_another_type_and_writes_nothing(
        tmp_path: Path, kind: type, wrong: Any) -> None:
    with cw.Cache(store=cw.SQLiteStore(str(tmp_path / "t.db"))) as cache:
        ns = cache.namespace("things", type=kind)
        with pytest.raises(cw.SerializationError, match=kind.__name__):
            ns.set("k", wrong)
        with pytest.raises(cw.SerializationError, match=kind.__name__):
            ns.set_many({"a": wrong})
        assert ns.get("k") is None
        assert ns.get("a") is None
        assert cache.stats().store_writes == 0


def test_incr_is_refused_on_a_typed_namespace(tmp_path: Path) -> None:
    with cw.Cache(store=cw.SQLiteStore(str(tmp_path / "t.db"))) as cache:
        users = cache.namespace("users", type=User)
        with pytest.raises(cw.ConfigError, match="untyped"):
            users.incr("n")
        assert users.get("n") is None


def test_a_namespace_keeps_the_type_it_was_opened_with(tmp_path: Path) -> None:
    with cw.Cache(store=cw.SQLiteStore(str(tmp_path / "t.db"))) as cache:
        users = cache.namespace("users", type=User)
        assert cache.namespace("users") is users
        assert cache.namespace("users", type=User) is users
        assert users.type is User
        with pytest.raises(cw.ConfigError, match="already exists"):
            cache.namespace("users", type=Item)


@pytest.mark.parametrize("bad", [int, dict, "User", None.__class__])
def test_a_type_that_cannot_be_a_namespace_type_is_refused(tmp_path: Path, bad: Any) -> None:
    with cw.Cache(store=cw.SQLiteStore(str(tmp_path / "t.db"))) as cache:
        with pytest.raises(cw.ConfigError, match="type="):
            cache.namespace("things", type=bad)
        assert "things" not in cache.namespaces()


def test_a_row_that_no_longer_fits_the_type_is_a_clear_error(tmp_path: Path) -> None:
    path = str(tmp_path / "t.db")
    with cw.Cache(store=cw.SQLiteStore(path)) as cache:
        cache.namespace("users").set("ada", {"name": "Ada"})  # written untyped
    with cw.Cache(store=cw.SQLiteStore(path)) as cache:
        with pytest.raises(cw.StoreError) as info:
            cache.namespace("users", type=User).get("ada")
        assert "User" in str(info.value)


@pytest.mark.slow  # runs mypy, ~6 s
def test_mypy_sees_the_type_a_typed_namespace_returns(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api")
    source = tmp_path / "typed_use.py"
    source.write_text(textwrap.dedent("""
        import dataclasses
        import cacheway as cw

        @dataclasses.dataclass
        class User:
            name: str

        cache = cw.Cache(store=cw.SQLiteStore(":memory:"))
        users = cache.namespace("users", type=User)
        reveal_type(users.get("a"))
        reveal_type(users.get("a", User("x")))
        users.set("a", 1)
    """))
    out, _, _ = api.run([str(source), "--no-incremental", "--cache-dir", os.devnull,
                         "--python-version", "3.11"])
    assert 'Revealed type is "typed_use.User | None"' in out, out
    assert 'Revealed type is "typed_use.User"' in out, out
    assert 'incompatible type "int"; expected "User"' in out, out


@pytest.mark.parametrize("backend_kind", ["memory", "redis"])
def test_a_typed_namespace_on_async_cache_answers_its_type(
        tmp_path: Path, redis_url: str, prefix: str, backend_kind: str) -> None:
    import asyncio

    def backend() -> Any:
        return (cw.MemoryBackend() if backend_kind == "memory"
                else cw.RedisBackend(redis_url, prefix=prefix))

    async def write() -> None:
        async with cw.AsyncCache(store=cw.SQLiteStore(str(tmp_path / "t.db")),
                                 backend=backend()) as acache:
            users = acache.namespace("users", type=User)
            await users.set("ada", ADA)
            got = await users.get("ada")
            assert got == ADA
            assert type(got) is User
            with pytest.raises(cw.SerializationError, match="User"):
                await users.set("bad", {"name": "x"})

    async def read() -> None:  # another process: the copy in Redis, or the store's row
        async with cw.AsyncCache(store=cw.SQLiteStore(str(tmp_path / "t.db")),
                                 backend=backend()) as acache:
            users = acache.namespace("users", type=User)
            for _ in range(2):  # a miss (or a Redis hit on the loop), then a hit
                got = await users.get("ada")
                assert got == ADA
                assert type(got) is User

    asyncio.run(write())
    asyncio.run(read())
