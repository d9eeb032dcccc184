"""RedisBackend under a real Cache (SQLite store, real Redis), for every policy.

Round trips are counted by a redis-py ``Connection`` subclass that records each socket
send and the commands packed into it, so "one MGET" means one send with one command.
Each test uses its own key prefix and removes its keys.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import pytest
import redis

import cacheway as cw
from cacheway.backends.base import MISS
from cacheway.backends.redis import RedisBackend
from conftest import wait_until
from services import unique

# -- helpers ------------------------------------------------------------------------------


class Sends(list[list[str]]):
    """One entry per socket send: the command names packed into it."""

    def names(self) -> list[str]:
        return [n for send in self for n in send]


def counting_client(url: str, **kwargs: Any) -> tuple[redis.Redis, Sends]:
    sends = Sends()

    class Counting(redis.Connection):
        _names: list[str] | None = None

        def send_command(self, *args: Any, **kw: Any) -> None:
            self._names = [_name(args[0])]
            super().send_command(*args, **kw)

        def pack_commands(self, commands: Any) -> Any:
            commands = list(commands)
            self._names = [_name(c[0]) for c in commands]
            return super().pack_commands(commands)

        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            sends.append(self._names or ["?"])
            self._names = None
            super().send_packed_command(command, check_health)

    pool = redis.ConnectionPool.from_url(url, connection_class=Counting, **kwargs)
    client = redis.Redis(connection_pool=pool)
    client.ping()  # the connection handshake is not what the tests count
    sends.clear()
    return client, sends


def _name(x: Any) -> str:
    return (x.decode() if isinstance(x, bytes) else str(x)).upper()


@pytest.fixture
def make_cache(
    redis_url: str, prefix: str, db_path: str, autoclose: Callable[[Any], Any],
    make_policy: Callable[[], Any],
) -> Callable[..., Any]:
    """``make_cache(**backend_kwargs)`` -> a Cache over SQLite + Redis, for each policy."""

    def make(store: Any = None, policy: Any = None, **kw: Any) -> Any:
        backend = RedisBackend(kw.pop("url", redis_url), prefix=prefix, **kw)
        return autoclose(cw.Cache(
            store=store if store is not None else cw.SQLiteStore(db_path),
            backend=backend,
            policy=policy if policy is not None else make_policy(),
        ))

    return make


# -- through the Cache, every policy --------------------------------------------------------
def test_read_your_writes(make_cache: Callable[..., Any]) -> None:
    cache = make_cache()
    cache.set("a", {"n": 1})
    assert cache.get("a") == {"n": 1}
    cache.set_many({"b": [1], "c": "x"})
    assert cache.get_many(["a", "b", "c", "zz"]) == {"a": {"n": 1}, "b": [1], "c": "x"}
    assert cache.incr("n", 2) == 2
    assert cache.incr("n", 3) == 5
    cache.delete("a")
    assert cache.get("a") is None
    cache.delete_many(["b", "zz"])
    assert cache.get_many(["a", "b", "c"]) == {"c": "x"}
    cache.flush()
    assert cache.get("n") == 5


def test_another_cache_sharing_redis_sees_the_writes(
    make_cache: Callable[..., Any], raw: redis.Redis, prefix: str,
) -> None:
    writer = make_cache()
    reader = make_cache(policy=cw.WriteThrough())  # a second "process": own engines
    writer.set("k", "v1")
    writer.flush()
    assert reader.get("k") == "v1"
    writer.set("k", "v2")
    writer.flush()
    assert reader.get("k") == "v2"
    writer.delete("k")
    writer.flush()
    assert reader.get("k") is None
    entry = raw.get(prefix + ":k")
    # gone, a tombstone, or the "not found" answer the reader's lease holder shared
    assert entry is None or entry[8:] in (b"\x01", b"\x03")


def test_namespaces_keep_their_own_keys(
    make_cache: Callable[..., Any], raw: redis.Redis, prefix: str,
) -> None:
    cache = make_cache()
    views = cache.namespace("views", ttl=60)
    cache.set("a", "default")
    views.set("a", "views")
    cache.flush()
    assert cache.get("a") == "default"
    assert views.get("a") == "views"
    assert raw.get(prefix + ":a")[9:] == b'"default"'
    assert raw.get(prefix + "views:a")[9:] == b'"views"'
    assert 0 < raw.pttl(prefix + "views:a") <= 300_000  # ttl, or write-around's fill_ttl


def test_write_through_stamps_the_store_version(
    redis_url: str, prefix: str, db_path: str, raw: redis.Redis, autoclose: Any,
) -> None:
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path),
                               backend=RedisBackend(redis_url, prefix=prefix)))
    cache.set("k", 1)
    first = int.from_bytes(raw.get(prefix + ":k")[1:8], "big")  # after the check byte
    cache.set("k", 2)
    entry = raw.get(prefix + ":k")
    assert int.from_bytes(entry[1:8], "big") > first > 0
    assert entry[8:] == b"\x002"


def test_write_around_fill_is_not_blocked_by_its_own_invalidation(
    redis_url: str, prefix: str, db_path: str, autoclose: Any,
) -> None:
    store = cw.SQLiteStore(db_path)
    cache = autoclose(cw.Cache(store=store, backend=RedisBackend(redis_url, prefix=prefix),
                               policy=cw.WriteAround()))
    cache.set("k", "v")  # leaves a tombstone carrying the new row's version
    assert cache.get("k") == "v"  # loads and fills
    loads = cache.stats().loads
    assert cache.get("k") == "v"
    assert cache.stats().loads == loads, "the fill of the current row was refused"


def test_a_slow_fill_from_another_cache_cannot_land_after_a_write(
    redis_url: str, prefix: str, db_path: str, autoclose: Any,
) -> None:
    class HookedStore(cw.SQLiteStore):
        hook: Callable[[], None] | None = None

        def fetch(self, namespace: str, keys: Any) -> Any:
            rows = super().fetch(namespace, keys)
            hook, self.hook = self.hook, None
            if hook is not None:
                hook()  # another process writes between this load and its fill
            return rows

    a = autoclose(cw.Cache(store=cw.SQLiteStore(db_path),
                           backend=RedisBackend(redis_url, prefix=prefix)))
    slow = HookedStore(db_path)
    b = autoclose(cw.Cache(store=slow, backend=RedisBackend(redis_url, prefix=prefix)))
    a.set("k", "old")
    a.backend.delete(":k")  # not cached: b must load
    slow.hook = lambda: a.set("k", "new")
    assert b.get("k") == "old"  # b's load began before a's write: fine to answer
    assert b.get("k") == "new"  # but its fill did not replace the newer copy
    assert b.backend.get(":k") == "new"

    slow.hook = lambda: a.delete("k")
    b.backend.delete(":k")
    assert b.get("k") == "new"
    assert b.get("k") is None  # the tombstone kept the old fill out


def test_write_back_copy_agrees_with_the_store_after_flush(
    redis_url: str, prefix: str, db_path: str, autoclose: Any,
) -> None:
    writer = autoclose(cw.Cache(store=cw.SQLiteStore(db_path),
                                backend=RedisBackend(redis_url, prefix=prefix),
                                policy=cw.WriteBack(max_delay=0.05)))
    reader = autoclose(cw.Cache(store=cw.SQLiteStore(db_path),
                                backend=RedisBackend(redis_url, prefix=prefix)))
    for i in range(20):
        writer.set("k", i)
        reader.get("k")
    writer.flush()
    assert reader.get("k") == 19
    assert reader.backend.get(":k") == 19


# -- round trips -----------------------------------------------------------------------------
def test_backend_batches_are_one_round_trip(redis_url: str, prefix: str) -> None:
    client, sends = counting_client(redis_url)
    b = RedisBackend(client, prefix=prefix)
    b.set_many([(f"k{i}", i, None, i + 1 if i % 2 else None) for i in range(100)], 60)
    assert len(sends) == 1
    assert sorted(set(sends[0])) == ["EVALSHA", "SET"]
    sends.clear()
    assert len(b.get_many([f"k{i}" for i in range(100)])) == 100
    assert sends == [["MGET"]]
    sends.clear()
    b.delete_many([f"k{i}" for i in range(50)])
    assert sends == [["DEL"]]
    sends.clear()
    b.delete_many([f"k{i}" for i in range(50, 100)], versions=list(range(50)))
    assert len(sends) == 1
    sends.clear()
    assert b.get("k1") is MISS
    assert sends == [["GET"]]
    b.clear()
    client.close()


def test_cache_get_many_is_one_mget(
    redis_url: str, prefix: str, db_path: str, autoclose: Any,
) -> None:
    client, sends = counting_client(redis_url)
    cache = autoclose(cw.Cache(store=cw.SQLiteStore(db_path),
                               backend=RedisBackend(client, prefix=prefix)))
    cache.set_many({f"k{i}": i for i in range(100)})
    sends.clear()
    assert cache.get_many([f"k{i}" for i in range(100)]) == {f"k{i}": i for i in range(100)}
    assert sends == [["MGET"]]
    client.close()


# -- bad bytes in Redis ---------------------------------------------------------------------
class _Exploit:
    def __reduce__(self) -> Any:
        return (os.system, (f"touch {os.environ.get('CW_EXPLOIT_MARK', '/nonexistent')}",))


@pytest.mark.parametrize("garbage", ["short", "no-header", "bad-flag", "pickle", "bad-json"])
def test_corrupted_payload_is_a_miss_then_a_store_load(
    make_cache: Callable[..., Any], raw: redis.Redis, prefix: str, garbage: str,
    caplog: pytest.LogCaptureFixture, tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    mark = tmp_path / "pwned"
    monkeypatch.setenv("CW_EXPLOIT_MARK", str(mark))
    body = {
        "short": b"xx",
        "no-header": b'{"json": "written by someone else"}',
        "bad-flag": b"\x00" * 8 + b"\x07" + b'"v"',
        "pickle": b"\x00" * 8 + b"\x00" + pickle.dumps(_Exploit()),
        "bad-json": b"\x00" * 8 + b"\x00" + b"{not json",
    }[garbage]
    cache = make_cache()
    cache.set("k", "good")
    cache.flush()
    raw.set(prefix + ":k", body)
    caplog.set_level(logging.WARNING, logger="cacheway")
    assert cache.get("k") == "good"
    assert cache.backend.decode_errors == 1
    assert not mark.exists()
    assert sum("cannot be decoded" in r.getMessage() for r in caplog.records) == 1
    assert cache.get("k") == "good"  # the fill replaced the garbage
    assert cache.backend.decode_errors == 1
    raw.set(prefix + ":k", body)
    cache.get("k")
    assert cache.backend.decode_errors == 2
    assert sum("cannot be decoded" in r.getMessage() for r in caplog.records) == 1  # once


def test_get_many_skips_corrupted_entries(redis_url: str, prefix: str, raw: redis.Redis) -> None:
    b = RedisBackend(redis_url, prefix=prefix)
    b.set("a", 1, None, None)
    raw.set(prefix + "b", b"garbage")
    assert b.get_many(["a", "b", "c"]) == {"a": 1}
    assert b.decode_errors == 1
    b.close()


def test_a_foreign_type_at_the_key_is_overwritten_by_a_versioned_set(
    redis_url: str, prefix: str, raw: redis.Redis,
) -> None:
    b = RedisBackend(redis_url, prefix=prefix)
    raw.hset(prefix + "h", "f", "v")
    assert b.set("h", 1, None, None, version=3) is True
    assert b.get("h") == 1
    # issue 10 item 14: bytes that only look like a tombstone (version 2**64-1, no check
    # byte, no expiry) are damage, not a floor that would refuse every write for good
    raw.set(prefix + "g", b"\xff" * 8 + b"\x01")
    assert b.set("g", 1, None, None, version=3) is True
    assert b.delete("g", version=2**53 - 1)  # a well-formed tombstone is respected
    assert b.set("g", 2, None, None, version=4) is False
    b.close()


# -- connections -----------------------------------------------------------------------------
def _connections(raw: redis.Redis, name: str) -> list[dict[str, Any]]:
    return [c for c in raw.client_list() if c.get("name") == name]


def test_a_client_passed_in_stays_open(
    redis_url: str, prefix: str, db_path: str, raw: redis.Redis,
) -> None:
    name = unique("cwtest")
    client = redis.Redis.from_url(redis_url, client_name=name)
    cache = cw.Cache(store=cw.SQLiteStore(db_path), backend=RedisBackend(client, prefix=prefix))
    cache.set("k", 1)
    assert cache.get("k") == 1
    cache.close()
    assert _connections(raw, name), "the caller's connection was closed"
    assert client.ping()
    client.close()


def test_a_backend_built_from_a_url_closes_its_pool(
    redis_url: str, prefix: str, raw: redis.Redis,
) -> None:
    name = unique("cwtest")
    b = RedisBackend(redis_url, prefix=prefix, client_name=name)
    b.set("k", 1, None, None)
    assert _connections(raw, name)
    b.close()
    assert wait_until(lambda: not _connections(raw, name), timeout=5.0)
    b.close()  # twice is fine


def test_client_kill_then_the_next_operations_work(
    make_cache: Callable[..., Any], raw: redis.Redis, prefix: str,
) -> None:
    name = unique("cwtest")
    cache = make_cache(client_name=name)
    cache.set("k", "before")
    cache.flush()
    assert cache.get("k") == "before"
    assert cache.get_many(["k"]) == {"k": "before"}

    def kill() -> None:
        ids = {c["id"] for c in _connections(raw, name)}
        assert ids
        for cid in ids:  # CLIENT KILL TYPE normal, narrowed to this test's connections
            raw.execute_command("CLIENT", "KILL", "ID", cid, "TYPE", "normal")
        # issue 10 item 16: only the killed connections must be gone. A write-back
        # flusher stamps versions on Redis after flush() returned, and may open a fresh
        # connection between the kill and this check (it failed 1 run in a full suite).
        assert not ids & {c["id"] for c in _connections(raw, name)}

    kill()
    cache.set("k", "after")  # the first command on the dead socket reconnects
    cache.flush()
    assert cache.get("k") == "after"
    assert cache.backend.get(":k") == "after", "Redis kept a stale copy"
    kill()
    assert cache.get("k") == "after"
    kill()
    cache.set_many({"k": "many", "j": 1})
    cache.flush()
    kill()
    assert cache.get_many(["k", "j"]) == {"k": "many", "j": 1}
    assert cache.backend.get_many([":k", ":j"]) == {":k": "many", ":j": 1}
    kill()
    cache.delete("k")
    cache.flush()
    assert cache.get("k") is None
    assert cache.backend.get(":k") is MISS


def test_unreachable_redis_degrades_to_the_store(
    make_cache: Callable[..., Any], caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="cacheway")
    cache = make_cache(url="redis://:hunter2@127.0.0.1:1/0", socket_timeout=0.5)
    cache.set("k", "v")  # the store has it; the backend copy is dropped (and logged)
    cache.flush()
    assert cache.get("k") == "v"
    assert cache.get_many(["k"]) == {"k": "v"}
    with pytest.raises(cw.BackendError, match=r"127\.0\.0\.1:1\b") as info:
        cache.backend.get("k")
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in caplog.text


# -- configuration -----------------------------------------------------------------------------
def test_rediss_url_with_user_password_and_tls_options() -> None:
    b = RedisBackend("rediss://alice:s3cr%40t@redis.example:6380/2", prefix="p:",
                     ssl_ca_certs="/etc/ca.pem", ssl_cert_reqs="required")
    try:
        assert "s3cr" not in repr(b)
        assert repr(b) == "RedisBackend('rediss://alice:***@redis.example:6380/2', prefix='p:')"
        pool = b.client.connection_pool
        assert pool.connection_class is redis.SSLConnection
        kw = pool.connection_kwargs
        assert (kw["username"], kw["password"], kw["host"], kw["port"], kw["db"]) == (
            "alice", "s3cr@t", "redis.example", 6380, 2
        )
        assert kw["ssl_ca_certs"] == "/etc/ca.pem"
    finally:
        b.close()


def test_unix_socket_url() -> None:
    b = RedisBackend("unix:///run/redis.sock?db=3")
    assert b.client.connection_pool.connection_kwargs["path"] == "/run/redis.sock"
    b.close()


@pytest.mark.parametrize(
    ("url", "kwargs", "match"),
    [
        ("http://u:pw1234@h/0", {}, "schemes"),
        ("redis://u:pw1234@h:notaport/0", {}, "Port"),
        ("redis://u:pw1234@h/0", {"no_such_option": 1}, "no_such_option"),
        ("redis://u:pw1234@h/0", {"ssl_ca_certs": "/ca.pem"}, "rediss://"),
        ("redis://u:pw1234@h/0", {"decode_responses": True}, "decode_responses"),
    ],
)
def test_bad_urls_and_options_are_config_errors(url: str, kwargs: Any, match: str) -> None:
    with pytest.raises(cw.ConfigError, match=match) as info:
        RedisBackend(url, **kwargs)
    assert "pw1234" not in str(info.value)


def test_other_bad_arguments() -> None:
    with pytest.raises(cw.ConfigError, match=r"URL or a redis\.Redis"):
        RedisBackend(6379)  # type: ignore[arg-type]
    with pytest.raises(cw.ConfigError, match="prefix"):
        RedisBackend("redis://h", prefix=None)  # type: ignore[arg-type]
    with pytest.raises(cw.ConfigError, match="tombstone_ttl"):
        RedisBackend("redis://h", tombstone_ttl=0)
    client = redis.Redis(decode_responses=True)
    with pytest.raises(cw.ConfigError, match="decode_responses"):
        RedisBackend(client)
    with pytest.raises(cw.ConfigError, match="need a URL"):
        RedisBackend(redis.Redis(), socket_timeout=1, max_connections=3)


def test_serializer_binding(redis_url: str, prefix: str) -> None:
    fixed = RedisBackend(redis_url, prefix=prefix, serializer=cw.JSONSerializer())
    fixed.bind_serializer(cw.PickleSerializer(key=b"secret-key"))  # ignored: one was given
    fixed.set("k", [1], None, None)
    assert fixed.get("k") == [1]
    signed = RedisBackend(redis_url, prefix=prefix)
    signed.bind_serializer(cw.PickleSerializer(key=b"secret-key"))
    signed.set("s", {1, 2}, None, None)
    assert signed.get("s") == {1, 2}
    assert fixed.get("s") is MISS  # pickle bytes are not JSON: a miss, never unpickled
    assert fixed.decode_errors == 1
    fixed.close()
    signed.close()


def test_missing_redis_py_names_the_extra() -> None:
    code = textwrap.dedent("""
        import sys
        sys.modules["redis"] = None  # what "not installed" looks like to import
        import cacheway as cw
        from cacheway.backends.redis import RedisBackend
        try:
            RedisBackend("redis://127.0.0.1:6379/0")
        except cw.ConfigError as exc:
            print("ConfigError:", exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert "ConfigError: RedisBackend needs redis-py: pip install 'cacheway[redis]'" in out.stdout
