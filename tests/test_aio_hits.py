"""AsyncCache (issue 12): hits answered on the loop (memory views, Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import cacheway as cw
from cacheway.backends.base import MISS
from services import unique
from test_aio_support import run


# -- the inline hit path ----------------------------------------------------------------
def test_inline_hits_keep_lru_order_and_count_as_hits(make_store: Any) -> None:
    # issue 12 item 8: a hit answered on the loop moves the key up as the thread front's does
    store = make_store()

    async def main() -> None:
        async with cw.AsyncCache(store=store.store,
                                 backend=cw.MemoryBackend(max_entries=2)) as acache:
            await acache.set("a", 1)
            await acache.set("b", 2)
            before = acache.stats().hits
            assert await acache.get("a") == 1  # a is now the most recent
            assert acache.stats().hits == before + 1
            await acache.set("c", 3)  # evicts b, not a
            loads = len(store.load_calls)
            assert await acache.get("a") == 1
            assert len(store.load_calls) == loads
            assert await acache.get("b") == 2
            assert len(store.load_calls) == loads + 1

    run(main())


def test_inline_hits_see_writes_made_through_the_thread_front(
        make_policy: Callable[[], Any], make_store: Any) -> None:
    # issue 12 item 8: the live memory copy is the newest value under every policy
    store = make_store()

    async def main() -> None:
        async with cw.AsyncCache(store=store.store, policy=make_policy()) as acache:
            ns = acache.namespace("ns")
            await ns.set("k", 1)
            assert await ns.get("k") == 1
            cache = acache.cache
            assert cache is not None
            for i in range(50):
                await asyncio.to_thread(cache.namespace("ns").set, "k", i)
                assert await ns.get("k") == i
            await asyncio.to_thread(cache.namespace("ns").delete, "k")
            assert await ns.get("k") is None

    run(main())


def test_expired_copies_are_not_answered_inline(make_store: Any) -> None:
    # issue 12 item 8
    now = [1000.0]
    backend = cw.MemoryBackend(timer=lambda: now[0])
    store = make_store({"k": "store"})

    async def main() -> None:
        async with cw.AsyncCache(store=store.store, backend=backend, ttl=10) as acache:
            assert await acache.get("k") == "store"
            store.data["k"] = "new"
            assert await acache.get("k") == "store"
            now[0] += 11
            assert await acache.get("k") == "new"

    run(main())


# -- Redis hits on the loop ------------------------------------------------------------
class NoThreads:
    """Stands in for an AsyncCache's pool.submit: counts (and refuses while ``refuse``)."""

    def __init__(self, submit: Callable[..., Any]) -> None:
        self.submit = submit
        self.calls = 0
        self.refuse = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.refuse:
            raise AssertionError("a worker thread was asked for a call")
        return self.submit(*args, **kwargs)


def _watch(acache: cw.AsyncCache, monkeypatch: pytest.MonkeyPatch) -> NoThreads:
    pool = acache._pool  # the test watches the worker threads
    watch = NoThreads(pool.submit)
    monkeypatch.setattr(pool, "submit", watch)
    return watch


VALUES: dict[str, Any] = {
    "dict": {"a": [1, 2.5, None, True], "b": {"c": "é😀"}},
    "list": [1, "two", [3.0]], "str": "v", "int": 2**40, "neg": -3, "float": 0.1,
    "true": True, "false": False, "none": None, "empty": "", "zero": 0,
}


@pytest.fixture
def redis_prefix(raw: Any) -> Iterator[str]:
    p = unique("aiohit") + ":"
    yield p
    names = list(raw.scan_iter(match=p + "*", count=1000))
    if names:
        raw.unlink(*names)


@pytest.mark.services
@pytest.mark.parametrize("backend_kind", ["redis", "two-level"])
@pytest.mark.parametrize("policy", ["write-through", "write-around", "write-back"])
def test_redis_hits_are_read_on_the_loop_with_the_thread_fronts_values(
        redis_url: str, redis_prefix: str, make_store: Any, policy: str, backend_kind: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = make_store()
    pol = {"write-through": cw.WriteThrough(), "write-around": cw.WriteAround(),
           "write-back": cw.WriteBack(max_delay=0.01)}[policy]
    rb = cw.RedisBackend(redis_url, prefix=redis_prefix)
    backend: Any = rb if backend_kind == "redis" else cw.TwoLevelBackend(cw.MemoryBackend(), rb)
    sync_backend = cw.RedisBackend(redis_url, prefix=redis_prefix)
    thread = cw.Cache(store=store.store, backend=sync_backend, policy=pol)
    thread.set_many(VALUES)
    thread.flush()
    expected = {k: thread.get(k, "DEFAULT") for k in VALUES}  # fills the copies
    assert expected == VALUES

    async def main() -> None:
        async with cw.AsyncCache(store=store.store, backend=backend, policy=pol) as acache:
            watch = _watch(acache, monkeypatch)
            watch.refuse = True
            hits = acache.stats().hits
            got = {k: await acache.get(k, "DEFAULT") for k in VALUES}
            assert got == expected
            assert [type(v) for v in got.values()] == [type(v) for v in expected.values()]
            assert acache.stats().hits == hits + len(VALUES)
            watch.refuse = False
            # a miss, a key with no copy, goes to a worker thread (the store load)
            assert await acache.get("nothing", "dflt") == "dflt"
            assert watch.calls >= 1

    try:
        asyncio.run(main())
    finally:
        thread.close()
        backend.close()
        sync_backend.close()


@pytest.mark.services
def test_markers_damage_and_pending_writes_take_the_thread_path(
        redis_url: str, redis_prefix: str, raw: Any, make_store: Any,
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = make_store({"lease": 1, "tomb": 2, "bad": 3, "undecodable": 4})
    store.failing = False
    backend = cw.RedisBackend(redis_url, prefix=redis_prefix, lease_ttl=0.2)

    async def main() -> None:
        async with cw.AsyncCache(store=store.store, backend=backend) as acache:
            watch = _watch(acache, monkeypatch)
            ns = acache.namespace("wb", policy=cw.WriteBack(max_delay=60))
            header = bytes(8)
            raw.set(redis_prefix + ":lease", header + b"\x02token", px=60_000)
            raw.set(redis_prefix + ":tomb", header + b"\x01", px=60_000)
            raw.set(redis_prefix + ":bad", b"\x07short")
            raw.set(redis_prefix + ":undecodable", header + b"\x00{not json")
            before = watch.calls
            # each goes to a worker thread, which answers as Cache.get does
            assert await acache.get("lease") == 1  # another's lease: waits, then loads
            assert await acache.get("tomb") == 2
            assert await acache.get("bad") == 3
            assert await acache.get("undecodable") == 4
            assert watch.calls >= before + 4
            assert acache.stats().decode_errors >= 1
            # a pending write-back write answers before any copy in Redis
            await ns.set("p", "pending")
            raw.set(redis_prefix + "wb:p", header + b'"stale copy"')
            before = watch.calls
            assert await ns.get("p") == "pending"
            assert watch.calls > before
            await ns.delete("p")
            raw.set(redis_prefix + "wb:p", header + b'"stale copy"')
            assert await ns.get("p", "dflt") == "dflt"

    try:
        asyncio.run(main())
    finally:
        backend.close()


def test_the_loop_client_carries_every_connection_setting_or_is_not_built() -> None:
    # building a RedisBackend opens no connection: no server needed here
    from cacheway._aio_redis import LoopReader

    plain = cw.RedisBackend("redis://u:pw@127.0.0.1:6379/3?socket_timeout=2", prefix="x:")
    reader = LoopReader.build(plain, cw.JSONSerializer())
    assert reader is not None

    async def settings() -> dict[str, Any]:
        assert reader is not None
        client = reader.client(asyncio.get_running_loop())
        kw = dict(client.connection_pool.connection_kwargs)
        await reader.aclose()
        return kw

    kw = run(settings())
    assert {k: kw[k] for k in ("host", "port", "db", "username", "password",
                               "socket_timeout")} == {
        "host": "127.0.0.1", "port": 6379, "db": 3, "username": "u", "password": "pw",
        "socket_timeout": 2.0}
    # a setting redis.asyncio would not honour the same way: the thread path reads
    ocsp = cw.RedisBackend("rediss://127.0.0.1:6379/0", ssl_validate_ocsp=True)
    assert LoopReader.build(ocsp, cw.JSONSerializer()) is None
    assert LoopReader.build(cw.MemoryBackend(), cw.JSONSerializer()) is None
    for b in (plain, ocsp):
        b.close()


@pytest.mark.services
def test_two_level_l1_hits_are_answered_on_the_loop_without_redis(
        tmp_path: Any, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An L1 hit costs a dict lookup: it must not take a Redis round trip (nor a thread).
    from cacheway import _aio_redis

    remote_reads: list[str] = []
    get_for = _aio_redis.LoopReader.get_for

    def counting_get_for(self: Any, engine: Any) -> Any:
        read = get_for(self, engine)
        if read is None:
            return None

        async def counted(key: str) -> Any:
            remote_reads.append(key)
            return await read(key)

        return counted

    monkeypatch.setattr(_aio_redis.LoopReader, "get_for", counting_get_for)
    l2 = cw.RedisBackend(redis_url, prefix=redis_prefix)
    two = cw.TwoLevelBackend(cw.MemoryBackend(max_entries=100), l2)
    assert two.wait_ready(5)

    async def main() -> None:
        async with cw.AsyncCache(store=cw.SQLiteStore(str(tmp_path / "a.db")),
                                 backend=two) as acache:
            await acache.set("k", {"n": 1})
            cache = acache.cache
            assert cache is not None
            for _ in range(50):  # Redis's late invalidation of the set may drop the L1 copy
                await asyncio.to_thread(cache.get, "k")  # fills the L1
                await asyncio.sleep(0.05)
                if two.l1.get(":k") is not MISS:
                    break
            remote_reads.clear()
            watch = _watch(acache, monkeypatch)
            watch.refuse = True
            hits = acache.stats().hits
            for _ in range(20):
                assert await acache.get("k") == {"n": 1}
            assert acache.stats().hits >= hits + 20
            assert watch.calls == 0
            assert remote_reads == []  # every one answered by the L1, none by Redis
            watch.refuse = False  # close() runs in a worker thread

    try:
        run(main())
    finally:
        two.close()
        l2.close()
