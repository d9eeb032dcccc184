"""Versions drawn from Redis when a write is accepted: ``publish`` (issue 10, item 7).

Write-back processes sharing Redis must agree on the order of their writes before any
of them reaches the store: the version comes from a per-prefix hybrid clock in Redis
(max(last + 1, TIME in microseconds)), and stores and later backend sets are
set-if-newer against it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

import cacheway as cw
from cacheway.backends.base import MISS
from cacheway.backends.memory import MemoryBackend
from cacheway.backends.redis import RedisBackend
from cacheway.backends.two_level import TwoLevelBackend
from conftest import wait_until

SET, DELETE, ADD = 0, 1, 2


@pytest.fixture
def pair(redis_url: str, prefix: str) -> Iterator[tuple[RedisBackend, RedisBackend]]:
    """Two backends on one prefix with their own connection pools: two processes."""
    a, b = RedisBackend(redis_url, prefix=prefix), RedisBackend(redis_url, prefix=prefix)
    yield a, b
    a.close()
    b.close()


def micros(raw: redis.Redis) -> int:
    seconds, us = raw.time()
    return int(seconds) * 1_000_000 + int(us)


def test_two_clients_publishing_one_key_get_increasing_versions(
    pair: tuple[RedisBackend, RedisBackend], raw: redis.Redis,
) -> None:
    # issue 10 item 7
    a, b = pair
    before = micros(raw)
    seen: list[int] = []
    for i in range(50):
        writer = (a, b)[i % 2]
        seen += writer.publish([(":k", SET, i, None)], None)
    after = micros(raw)
    assert seen == sorted(seen)
    assert len(set(seen)) == 50
    assert seen[0] >= before  # above Redis TIME in microseconds when it was drawn
    assert seen[-1] <= after + 50  # and near it: at most one tick per version ahead
    assert a.get(":k") == 49


def test_a_store_stamped_set_older_than_the_published_version_is_refused(
    pair: tuple[RedisBackend, RedisBackend],
) -> None:
    # issue 10 item 7: A's write (v1) is stamped after B's later one (v2) landed
    a, b = pair
    (v1,) = a.publish([(":k", SET, "A", None)], None)
    (v2,) = b.publish([(":k", SET, "B", None)], None)
    assert v1 < v2
    assert a.set(":k", "A", None, None, version=v1) is False
    assert a.get(":k") == "B"
    assert b.set(":k", "B", None, None, version=v2) is False  # the same write: left alone
    assert b.set(":k", "C", None, None, version=v2 + 1) is True
    assert a.get(":k") == "C"


def test_a_batch_draws_one_version_per_item_in_order(
    pair: tuple[RedisBackend, RedisBackend], raw: redis.Redis, prefix: str,
) -> None:
    # issue 10 item 7
    a, _ = pair
    versions = a.publish([(":x", SET, {"n": 1}, None), (":y", DELETE, None, None),
                          (":z", ADD, 7, b"8"), (":x", SET, "last", None)], 60)
    assert len(versions) == 4
    assert versions == sorted(versions)
    assert len(set(versions)) == 4
    assert a.get_many([":x", ":y", ":z"]) == {":x": "last", ":z": 8}  # the payload wins
    assert 0 < raw.pttl(prefix + ":x") <= 60_000
    assert raw.pttl(prefix + ":y") > 0  # the tombstone expires too
    # The tombstone refuses an older fill, and takes a newer one.
    assert a.set(":y", "stale", None, None, version=versions[1] - 1) is False
    assert a.set(":y", "fresh", None, None, version=versions[1] + 1) is True


def test_versions_rise_above_what_the_key_holds_and_past_a_lost_clock(
    pair: tuple[RedisBackend, RedisBackend], raw: redis.Redis, prefix: str,
) -> None:
    # issue 10 item 7: an evicted clock key (or a clock step back) cannot reorder writes
    a, _ = pair
    (v1,) = a.publish([(":k", SET, 1, None)], None)
    future = v1 + 5_000_000  # as if written while TIME ran 5 s ahead
    assert a.set(":k", 2, None, None, version=future)
    raw.delete(prefix + "~clock")
    (v3,) = a.publish([(":k", SET, 3, None)], None)
    assert v3 > future
    raw.set(prefix + "~clock", b"garbage")
    (v4,) = a.publish([(":k", SET, 4, None)], None)
    assert v4 > v3
    raw.set(prefix + "~clock", str(2**60).encode())  # damaged: far beyond TIME
    (v5,) = a.publish([(":j", SET, 5, None)], None)
    assert v5 < 2**53


def test_clear_keeps_the_clock(pair: tuple[RedisBackend, RedisBackend], raw: redis.Redis,
                               prefix: str) -> None:
    # issue 10 item 7
    a, _ = pair
    (v1,) = a.publish([(":k", SET, 1, None)], None)
    a.clear()
    assert raw.get(prefix + ":k") is None
    (v2,) = a.publish([(":k", SET, 2, None)], None)
    assert v2 > v1


def test_publish_refuses_bad_kinds_and_keys(pair: tuple[RedisBackend, RedisBackend]) -> None:
    # issue 10 item 7
    a, _ = pair
    with pytest.raises(cw.ConfigError, match="kind"):
        a.publish([(":k", 3, 1, None)], None)
    with pytest.raises(cw.InvalidKeyError, match="surrogate"):
        a.publish([(":\ud800", SET, 1, None)], None)
    assert a.publish([], None) == []


def test_two_level_publish_updates_this_l1_and_invalidates_the_others(
    redis_url: str, prefix: str,
) -> None:
    # issue 10 item 7
    l2a, l2b = RedisBackend(redis_url, prefix=prefix), RedisBackend(redis_url, prefix=prefix)
    a = TwoLevelBackend(MemoryBackend(max_entries=10), l2a)
    b = TwoLevelBackend(MemoryBackend(max_entries=10), l2b)
    assert a.wait_ready(10)
    assert b.wait_ready(10)
    (v1,) = a.publish([(":k", SET, "one", None)], None)
    assert wait_until(lambda: (b.get(":k"), b.l1.get(":k")) == ("one", "one"))
    (v2,) = a.publish([(":k", SET, "two", None)], None)
    assert v2 > v1
    assert wait_until(lambda: b.l1.get(":k") != "one")  # Redis invalidated b's copy
    assert b.get(":k") == "two"
    assert b.set(":k", "one", None, None, version=v1) is False
    a.publish([(":k", DELETE, None, None)], None)
    assert wait_until(lambda: b.get(":k") is MISS)
    assert a.get(":k") is MISS
    for two in (a, b):
        two.close()
    l2a.close()
    l2b.close()
