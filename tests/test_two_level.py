"""TwoLevelBackend against a real Redis, with real threads and a real second process.

Every test uses a fresh key prefix. Waiting for an invalidation polls with a generous
deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import cacheway as cw
from cacheway.backends.base import MISS, Backend, backend_capabilities
from cacheway.backends.two_level import TwoLevelBackend
from conftest import wait_until
from services import unique

pytestmark = pytest.mark.services

S = cw.JSONSerializer()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Env:
    """Backends on one prefix; everything made is closed and the prefix removed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.prefix = f"{unique('two')}:"
        self.made: list[tuple[TwoLevelBackend, cw.RedisBackend]] = []

    def new(self, l1: cw.MemoryBackend | None = None, **kw: Any) -> TwoLevelBackend:
        l2 = cw.RedisBackend(self.url, prefix=self.prefix)
        l2.bind_serializer(S)
        b = TwoLevelBackend(l1 if l1 is not None else cw.MemoryBackend(), l2, **kw)
        self.made.append((b, l2))
        return b

    def raw(self) -> cw.RedisBackend:
        """A plain RedisBackend on the prefix: writes "directly in L2"."""
        l2 = cw.RedisBackend(self.url, prefix=self.prefix)
        l2.bind_serializer(S)
        self.made.append((None, l2))  # type: ignore[arg-type]
        return l2

    def close(self) -> None:
        for b, _ in reversed(self.made):
            if b is not None:
                b.close()
        if self.made:
            self.made[0][1].clear()
        for _, l2 in self.made:
            l2.close()


@pytest.fixture
def env(redis_url: str) -> Iterator[Env]:
    e = Env(redis_url)
    yield e
    e.close()


@pytest.fixture
def two(env: Env) -> TwoLevelBackend:
    b = env.new()
    assert b.wait_ready(10)
    return b


def put(b: Any, key: str, value: Any, ttl: float | None = None, version: int | None = None):
    return b.set(key, value, S.dumps(value), ttl, version)


def in_l1(b: TwoLevelBackend, key: str) -> Any:
    return b.l1.get(key)


def warm(b: TwoLevelBackend, key: str, value: Any) -> None:
    """Read until ``key`` sits in the L1 with ``value`` (own writes come back as
    invalidations and may drop the first copies)."""
    assert wait_until(lambda: b.get(key) == value and in_l1(b, key) == value)


# -- the protocol, generic checks ------------------------------------------------------------
def test_is_a_backend(two: TwoLevelBackend) -> None:
    assert isinstance(two, Backend)
    assert two.local is False
    assert two.evictions == 0
    assert two.decode_errors == 0
    assert two.trusted
    assert isinstance(two.subscriber_id, int)


def test_get_set_delete(two: TwoLevelBackend) -> None:
    assert two.get("a") is MISS
    assert put(two, "a", {"x": [1, 2]}) is True
    assert two.get("a") == {"x": [1, 2]}
    put(two, "a", "second")
    assert two.get("a") == "second"
    warm(two, "a", "second")
    two.delete("a")
    assert two.get("a") is MISS
    assert in_l1(two, "a") is MISS
    assert two.l2.get("a") is MISS
    two.delete("a")


@pytest.mark.parametrize("value", [None, 0, "", [], {}, False, "ü€", 2**62, 1.5])
def test_falsy_values_round_trip(two: TwoLevelBackend, value: Any) -> None:
    put(two, "v", value)
    warm(two, "v", value)
    assert two.get("v") == value
    assert two.get("v") is not MISS


def test_get_many_found_only_and_fills_l1(two: TwoLevelBackend, env: Env) -> None:
    raw = env.raw()
    for i in range(5):
        put(raw, f"k{i}", i)
    want = {f"k{i}": i for i in range(5)}
    assert wait_until(lambda: two.get_many([f"k{i}" for i in range(8)]) == want
                      and len(two.l1) == 5)
    assert two.l1.get_many([f"k{i}" for i in range(8)]) == want
    assert two.get_many([]) == {}


def test_set_many_and_delete_many(two: TwoLevelBackend, env: Env) -> None:
    two.set_many([(f"m{i}", i, S.dumps(i), None) for i in range(20)], None)
    assert two.get_many([f"m{i}" for i in range(20)]) == {f"m{i}": i for i in range(20)}
    two.delete_many([f"m{i}" for i in range(0, 20, 2)] + ["never-set"])
    odd = {f"m{i}": i for i in range(1, 20, 2)}
    assert two.get_many([f"m{i}" for i in range(20)]) == odd
    assert env.raw().get_many([f"m{i}" for i in range(20)]) == odd
    assert all(in_l1(two, f"m{i}") is MISS for i in range(0, 20, 2))
    two.set_many([], None)
    two.delete_many([])


def test_versioned_batches_pass_through(two: TwoLevelBackend) -> None:
    put(two, "a", "a9", version=9)
    two.set_many([("a", "a3", S.dumps("a3"), 3), ("b", "b4", S.dumps("b4"), 4)], 60)
    assert two.get_many(["a", "b"]) == {"a": "a9", "b": "b4"}
    two.delete_many(["a", "b"], versions=[5, 5])  # a9 is newer than the tombstone
    assert two.get_many(["a", "b"]) == {"a": "a9"}
    assert put(two, "b", "b3", version=3) is False  # behind b's tombstone


def test_refused_versioned_set_leaves_no_old_value_in_l1(two: TwoLevelBackend) -> None:
    assert put(two, "k", "v5", version=5) is True
    assert put(two, "k", "v3", version=3) is False
    assert in_l1(two, "k") is MISS  # never the refused value
    warm(two, "k", "v5")
    assert put(two, "k", "v4", version=4) is False
    assert in_l1(two, "k") in ("v5", MISS)
    assert two.get("k") == "v5"


def test_ttl_expires_in_both_levels(env: Env) -> None:
    clock = Clock()
    two = env.new(cw.MemoryBackend(timer=clock))
    assert two.wait_ready(10)
    put(two, "short", 1, ttl=0.3)
    put(two, "long", 2, ttl=600)
    assert two.get("short") == 1
    assert wait_until(lambda: two.get("short") is MISS)  # Redis expired it ...
    clock.now += 1.0
    assert in_l1(two, "short") is MISS  # ... and the L1 copy had no longer to live
    assert two.get("long") == 2


def test_l1_copies_live_no_longer_than_l2(env: Env) -> None:
    clock = Clock()
    two = env.new(cw.MemoryBackend(timer=clock))
    assert two.wait_ready(10)
    put(env.raw(), "k", "v", ttl=30)  # written elsewhere: the TTL is only known to Redis
    warm(two, "k", "v")
    left = two.l1.get_meta("k")[1]  # seconds the L1 copy has left
    assert 0 < left <= 30
    clock.now += 30.001
    assert in_l1(two, "k") is MISS


def test_l1_ttl_caps_copies(env: Env) -> None:
    clock = Clock()
    two = env.new(cw.MemoryBackend(timer=clock), l1_ttl=5)
    assert two.wait_ready(10)
    put(env.raw(), "k", "v")  # no TTL in Redis
    warm(two, "k", "v")
    clock.now += 5.001
    assert in_l1(two, "k") is MISS
    assert two.get("k") == "v"


def test_clear_empties_both_levels(two: TwoLevelBackend) -> None:
    put(two, "a", 1)
    warm(two, "a", 1)
    two.clear()
    assert len(two.l1) == 0
    assert two.get("a") is MISS


def test_config_errors(env: Env) -> None:
    l2 = env.raw()
    with pytest.raises(cw.ConfigError, match="l1 must be"):
        TwoLevelBackend(l2, l2)  # type: ignore[arg-type]
    with pytest.raises(cw.ConfigError, match="l2 must be"):
        TwoLevelBackend(cw.MemoryBackend(), cw.MemoryBackend())  # type: ignore[arg-type]
    with pytest.raises(cw.ConfigError, match="l1_ttl"):
        TwoLevelBackend(cw.MemoryBackend(), l2, l1_ttl=-1)
    with pytest.raises(cw.ConfigError, match="reconnect_delay"):
        TwoLevelBackend(cw.MemoryBackend(), l2, reconnect_delay=(1.0, 0.5))


def test_close_stops_the_thread_and_leaves_both_levels_open(env: Env) -> None:
    l1 = cw.MemoryBackend()
    two = env.new(l1)
    assert two.wait_ready(10)
    sub = two.subscriber_id
    put(two, "k", 1)
    warm(two, "k", 1)
    two.close()
    assert not two.listening
    assert len(l1) == 0
    assert not two.trusted
    # our connection is gone (Redis notices the close a moment later: poll for it)
    deadline = time.monotonic() + 10
    while any(int(c["id"]) == sub for c in two.l2.client.client_list()):
        assert time.monotonic() < deadline, "the subscriber connection stayed open"
        time.sleep(0.01)
    assert two.l2.get("k") == 1  # the caller's L2 still works ...
    assert two.get("k") == 1  # ... and a closed two-level backend reads through it


# -- through the Cache: read your writes, every policy --------------------------------------
def test_read_your_writes_every_policy(
    env: Env, db_path: str, make_policy: Callable[[], Any], autoclose: Callable[[Any], Any]
) -> None:
    two = env.new()
    assert two.wait_ready(10)
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path), backend=two, policy=make_policy()))
    for i in range(20):
        cache.set("k", i)
        assert cache.get("k") == i
    cache.set_many({"a": 1, "b": [2]})
    assert cache.get_many(["a", "b", "c"]) == {"a": 1, "b": [2]}
    cache.delete("a")
    assert cache.get("a") is None
    cache.delete_many(["b"])
    assert cache.get_many(["a", "b"]) == {}
    assert cache.incr("n", 5) == 5
    assert cache.get("n") == 5
    cache.flush()
    assert cache.get("k") == 19
    assert cache.get("k") == 19  # an L1 hit by now, or a fill from Redis: same answer


# -- across backends and processes ------------------------------------------------------------
def test_two_backends_on_one_prefix_behave_like_two_processes(env: Env) -> None:
    a, b = env.new(), env.new()
    assert a.wait_ready(10)
    assert b.wait_ready(10)
    put(a, "k", "v1")
    warm(b, "k", "v1")
    for i in range(2, 30):
        put(a, "k", f"v{i}")
        assert wait_until(lambda i=i: b.get("k") == f"v{i}"), f"B never saw v{i}"
    a.delete("k")
    assert wait_until(lambda: b.get("k") is MISS)
    assert in_l1(b, "k") is MISS


def test_writes_by_a_plain_redis_backend_invalidate_too(env: Env, two: TwoLevelBackend) -> None:
    raw = env.raw()
    put(raw, "k", 1)
    warm(two, "k", 1)
    put(raw, "k", 2)
    assert wait_until(lambda: in_l1(two, "k") is MISS)
    assert two.get("k") == 2


def test_on_invalidate_hook_sees_keys_without_prefix(env: Env) -> None:
    seen: list[list[str] | None] = []
    b = env.new(on_invalidate=seen.append)
    assert b.wait_ready(10)
    put(env.raw(), "hooked", 1)
    assert wait_until(lambda: ["hooked"] in seen)


def _child_writer(url: str, prefix: str, db: str, go: Any, done: Any, rounds: int) -> None:
    l2 = cw.RedisBackend(url, prefix=prefix)
    two = TwoLevelBackend(cw.MemoryBackend(), l2)
    cache = cw.Cache(store=cw.SQLiteStore(db), backend=two)
    try:
        for i in range(1, rounds + 1):
            if not go.wait(30):
                return
            go.clear()
            cache.set("k", f"child{i}")
            done.set()
    finally:
        cache.close()
        two.close()
        l2.close()


def test_a_second_process_write_reaches_this_l1(env: Env, db_path: str,
                                                autoclose: Callable[[Any], Any]) -> None:
    two = env.new()
    assert two.wait_ready(10)
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path), backend=two))
    cache.set("k", "parent")
    assert wait_until(lambda: cache.get("k") == "parent" and in_l1(two, ":k") == "parent")
    ctx = mp.get_context("spawn")
    go, done = ctx.Event(), ctx.Event()
    rounds = 10
    proc = ctx.Process(target=_child_writer,
                       args=(env.url, env.prefix, db_path, go, done, rounds), daemon=True)
    proc.start()
    stop = threading.Event()
    reads = [0]

    def reader() -> None:  # reads hammer the L1 while the child writes
        while not stop.is_set():
            cache.get("k")
            reads[0] += 1

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        for i in range(1, rounds + 1):
            done.clear()
            go.set()
            assert done.wait(60), "the child did not write"
            assert wait_until(lambda i=i: cache.get("k") == f"child{i}"), f"stale after {i}"
            # and it is served from this process's L1 again once refilled
            assert wait_until(lambda i=i: in_l1(two, ":k") == f"child{i}")
    finally:
        stop.set()
        t.join(10)
        proc.join(30)
    assert proc.exitcode == 0
    assert reads[0] > 0


# -- the invalidation connection drops ----------------------------------------------------------
def test_killed_connection_clears_and_bypasses_the_l1_until_it_is_back(env: Env) -> None:
    gate = threading.Event()
    b = env.new(sleep=lambda _: gate.wait(30))  # reconnection waits for the test
    assert b.wait_ready(10)
    raw = env.raw()
    put(raw, "k", "old")
    warm(b, "k", "old")
    killed = b.subscriber_id
    try:
        assert raw.client.client_kill_filter(_id=killed) == 1
        assert wait_until(lambda: not b.trusted)
        assert len(b.l1) == 0  # cleared at once
        assert b.disconnects == 1
        # Written while nobody listens for b: its invalidation is lost. b must not serve
        # "old" from an L1; it reads Redis.
        put(raw, "k", "new")
        assert b.get("k") == "new"
        assert b.get_many(["k"]) == {"k": "new"}
        assert len(b.l1) == 0  # and fills nothing while bypassed
    finally:
        gate.set()
    assert b.wait_ready(10)
    assert b.subscriber_id not in (None, killed)
    warm(b, "k", "new")  # the L1 is used again ...
    put(raw, "k", "newer")  # ... and kept fresh again
    assert wait_until(lambda: b.get("k") == "newer")


def test_redis_side_flush_clears_the_l1(env: Env, two: TwoLevelBackend) -> None:
    put(two, "k", 1)
    warm(two, "k", 1)
    epoch = two._guard.epoch
    two._invalidate(None)  # what FLUSHDB sends; not sent for real: it would hit other tests
    assert len(two.l1) == 0
    assert two._guard.epoch == epoch + 1


# -- an invalidation racing a fill ------------------------------------------------------------
def test_invalidation_between_l2_read_and_l1_fill_wins(env: Env,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    reader, writer = env.new(), env.new()
    assert reader.wait_ready(10)
    assert writer.wait_ready(10)
    put(writer, "k", "old")
    assert wait_until(lambda: reader.invalidations > 0)
    real_read = reader.l2.get_many_ttl
    raced = []

    def read_then_write(keys: list[str], **kw: Any) -> Any:
        found = real_read(keys, **kw)  # "old", read from Redis ...
        if not raced:
            raced.append(True)
            n = reader.invalidations
            put(writer, "k", "new")  # ... then another process writes, and its
            assert wait_until(lambda: reader.invalidations > n)  # invalidation lands
        return found

    monkeypatch.setattr(reader.l2, "get_many_ttl", read_then_write)
    assert reader.get("k") == "old"  # this read started before the write: fine
    assert in_l1(reader, "k") is MISS  # but its fill stood down
    monkeypatch.undo()
    assert reader.get("k") == "new"


def test_own_write_between_l2_read_and_l1_fill_wins(env: Env,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    two = env.new()
    assert two.wait_ready(10)
    put(env.raw(), "k", "old")  # not in the L1: the read below must go to Redis
    assert wait_until(lambda: two.invalidations > 0)
    real_read = two.l2.get_many_ttl

    def read_then_write(keys: list[str], **kw: Any) -> Any:
        found = real_read(keys, **kw)
        monkeypatch.setattr(two.l2, "get_many_ttl", real_read)
        put(two, "k", "new")  # a write in this process, before the slow fill lands
        return found

    monkeypatch.setattr(two.l2, "get_many_ttl", read_then_write)
    assert two.get("k") == "old"
    assert in_l1(two, "k") in ("new", MISS)
    assert two.get("k") == "new"


def test_token_voided_by_reconnection(two: TwoLevelBackend) -> None:
    guard = two._guard
    token = guard.token("k")
    two._invalidate([b""])  # unrelated message: keys outside the prefix are ignored
    with guard.lock:
        assert guard.valid("k", token)
    guard.epoch += 1  # what a reconnection does
    with guard.lock:
        assert not guard.valid("k", token)


# -- the declared fast view, capabilities and ownership of the L2 -----------------------------
def test_fast_view_is_the_l1_behind_the_gate(env: Env) -> None:
    two = env.new(cw.MemoryBackend(max_entries=100))
    assert two.wait_ready(10)
    view = two.fast_view("ns")
    assert view is not None
    assert view.gate is not None
    assert view.ordered
    assert not view.namespaced
    assert view.gate.open is two.trusted is True
    put(two, "ns:k", "v")
    warm(two, "ns:k", "v")
    assert view.data["ns:k"][0] == "v"  # the L1's own dict
    two.close()
    assert view.gate.open is False  # closed: hits must not come from the L1
    assert len(view.data) == 0


def test_no_fast_view_for_an_unbounded_l1(env: Env) -> None:
    two = env.new(cw.MemoryBackend())
    assert two.fast_view("ns") is None
    assert two.l1.fast_view("ns") is not None  # the L1 alone would have one


def test_capabilities_of_two_level_and_redis(env: Env) -> None:
    two = env.new(cw.MemoryBackend(max_entries=10))
    caps = backend_capabilities(two)
    assert caps.local is False
    for name in ("leases", "publish", "clock", "serializer", "versioned_deletes", "fork",
                 "decode_errors", "fast"):
        assert getattr(caps, name) is two, name
    for name in ("meta", "stale", "peek", "ttl_reads"):
        assert getattr(caps, name) is None, name
    caps = backend_capabilities(two.l2)
    assert caps.ttl_reads is two.l2
    assert caps.leases is two.l2
    assert caps.fast is None
    assert caps.lease_ttl == 10.0
    no_leases = cw.RedisBackend(env.url, prefix=env.prefix, leases=False, lease_ttl=3)
    env.made.append((None, no_leases))  # type: ignore[arg-type]
    caps = backend_capabilities(no_leases)
    assert caps.leases is None  # offered, but switched off
    assert caps.lease_ttl == 3.0


def test_owns_l2_closes_it_with_the_backend(env: Env) -> None:
    kept, owned = env.new(), env.new(owns_l2=True)
    assert not kept.owns_l2
    assert owned.owns_l2
    for b in (kept, owned):
        put(b, "k", 1)
    ids = [b.l2.client.client_id() for b in (kept, owned)]  # their pooled connections
    kept.close()
    owned.close()
    assert kept.l2.get("k") == 1  # still usable: the caller's

    def connected() -> set[int]:
        return {int(c["id"]) for c in kept.l2.client.client_list()}

    # the owned L2 closed its pool (Redis notices a moment later: poll for it)
    assert wait_until(lambda: ids[1] not in connected())
    assert ids[0] in connected()
