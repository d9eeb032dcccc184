"""Every Redis call takes a bounded time (issue 10, item 11), through a stalling proxy.

``StallProxy`` forwards loopback TCP to the real Redis; ``stall()`` makes every open and
every new connection hold its bytes (accepted, never answered: what a hung server or a
lost network path looks like), ``resume_new()`` lets new connections through again while
the stalled ones stay stalled (half-open sockets of a server that went away).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis

import cacheway as cw
from cacheway.backends.base import MISS
from cacheway.backends.memory import MemoryBackend
from cacheway.backends.redis import RedisBackend
from cacheway.backends.two_level import TwoLevelBackend
from conftest import wait_until
from services import unique


class StallProxy:
    """A loopback TCP proxy to ``target`` that can stop forwarding without closing."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.accepted = 0
        self._lock = threading.Lock()
        self._gates: list[threading.Event] = []  # one per connection: set = forwarding
        self._socks: list[socket.socket] = []
        self._new_flow = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            gate = threading.Event()
            with self._lock:
                self.accepted += 1
                if self._new_flow:
                    gate.set()
                self._gates.append(gate)
                self._socks += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst, gate), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, gate: threading.Event) -> None:
        try:
            while data := src.recv(65536):
                gate.wait()  # stalled: the bytes are held, the socket stays open
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            s.close()

    def stall(self) -> None:
        with self._lock:
            self._new_flow = False
            for gate in self._gates:
                gate.clear()

    def resume_new(self) -> None:
        with self._lock:
            self._new_flow = True

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for gate in self._gates:
                gate.set()
            for s in self._socks:
                s.close()


@pytest.fixture
def proxy(redis_url: str) -> Iterator[StallProxy]:
    parts = urlsplit(redis_url)
    p = StallProxy((parts.hostname or "127.0.0.1", parts.port or 6379))
    yield p
    p.close()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    p = f"{unique('to')}:"
    yield p
    raw = redis.Redis.from_url(redis_url)
    names = list(raw.scan_iter(match=p + "*", count=1000))
    if names:
        raw.unlink(*names)
    raw.close()


def finishes(call: Callable[[], Any], deadline: float = 30.0) -> BaseException | None:
    """Run ``call`` in a thread; the exception it raised (None if it returned), or fail
    the test if it is still running after a generous ``deadline``."""
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            outcome.append(None)
        except BaseException as exc:  # handed to the test
            outcome.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(deadline)
    assert outcome, f"still blocked after {deadline} s"
    return outcome[0]


def test_a_stalled_call_fails_with_backend_error_after_one_timeout(
    proxy: StallProxy, prefix: str,
) -> None:
    # issue 10 item 11: not retried on timeout (one stalled connection, not three)
    b = RedisBackend(f"redis://127.0.0.1:{proxy.port}/0", prefix=prefix, timeout=0.2)
    b.set("k", 1, None, None)
    assert b.get("k") == 1
    proxy.stall()
    calls: dict[str, Callable[[], Any]] = {
        "get": lambda: b.get("k"),
        "get_many": lambda: b.get_many(["k", "j"]),
        "set": lambda: b.set("k", 2, None, None),
        "set-versioned": lambda: b.set("k", 2, None, None, version=9),
        "set_many": lambda: b.set_many([("k", 2, None, None)], None),
        "delete": lambda: b.delete("k", version=9),
        "lease_get": lambda: b.lease_get("j", b"tok"),
    }
    for name, call in calls.items():
        accepted = proxy.accepted
        exc = finishes(call)
        assert isinstance(exc, cw.BackendError), f"{name}: {exc!r}"
        assert proxy.accepted <= accepted + 1, f"{name} was retried after its timeout"
    proxy.resume_new()  # the stalled sockets are dropped, fresh ones get through
    b.set("k", 3, None, None)
    assert b.get("k") == 3
    b.close()


def test_timeouts_default_to_five_seconds_and_the_url_wins(redis_url: str) -> None:
    # issue 10 item 11
    b = RedisBackend(redis_url)
    kw = b.client.connection_pool.connection_kwargs
    assert (kw["socket_timeout"], kw["socket_connect_timeout"]) == (5.0, 5.0)
    b.close()
    b = RedisBackend(redis_url, timeout=0.5)
    kw = b.client.connection_pool.connection_kwargs
    assert (kw["socket_timeout"], kw["socket_connect_timeout"]) == (0.5, 0.5)
    b.close()
    b = RedisBackend(redis_url + "?socket_timeout=2", timeout=0.5)
    kw = b.client.connection_pool.connection_kwargs
    assert (kw["socket_timeout"], kw["socket_connect_timeout"]) == (2.0, 0.5)
    b.close()
    with pytest.raises(cw.ConfigError, match="timeout"):
        RedisBackend(redis_url, timeout=0)


def test_a_client_passed_in_keeps_its_own_timeouts(redis_url: str) -> None:
    # issue 10 item 11
    client = redis.Redis.from_url(redis_url)
    b = RedisBackend(client)
    assert client.connection_pool.connection_kwargs.get("socket_timeout") is None
    b.close()
    assert client.ping()
    client.close()


def test_a_stalled_invalidation_connection_clears_and_bypasses_the_l1(
    proxy: StallProxy, prefix: str, redis_url: str,
) -> None:
    # issue 10 item 11 (a guard: the health PING that finds the stall predates the issue)
    l2 = RedisBackend(f"redis://127.0.0.1:{proxy.port}/0", prefix=prefix, timeout=0.5)
    two = TwoLevelBackend(MemoryBackend(max_entries=10), l2,
                          health_interval=0.05, health_timeout=0.1)
    assert two.wait_ready(10)
    two.set("k", "v", None, None)
    # (the invalidation of our own write may drop the first copy: read until one stays)
    assert wait_until(lambda: (two.get("k"), two.l1.get("k")) == ("v", "v"), timeout=30)
    proxy.stall()
    assert wait_until(lambda: not two.trusted, timeout=30)
    assert two.l1.get("k") is MISS
    # While it is away, a write by another process must not be missed: reads go to Redis.
    other = RedisBackend(redis_url, prefix=prefix)
    other.set("k", "w", None, None)
    proxy.resume_new()
    assert wait_until(lambda: two.trusted, timeout=30)
    # The L2's pooled connection stalled for good: its next call times out, once.
    assert isinstance(finishes(lambda: two.get("k")), (cw.BackendError, type(None)))
    assert two.get("k") == "w"
    other.close()
    two.close()
    l2.close()


def test_a_stalled_handshake_of_the_invalidation_connection_is_retried(
    proxy: StallProxy, prefix: str, redis_url: str,
) -> None:
    # issue 10 item 11: the caller's client waits for ever, our subscriber connection not
    client = redis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=None,
                         socket_connect_timeout=None)
    proxy.stall()
    two = TwoLevelBackend(MemoryBackend(max_entries=10), RedisBackend(client, prefix=prefix),
                          health_interval=0.05, health_timeout=0.1, ready_timeout=0,
                          reconnect_delay=(0.01, 0.05))
    assert not two.trusted
    proxy.resume_new()  # the first handshake stays stalled for good
    assert two.wait_ready(30), "the subscriber never gave up its stalled handshake"
    two.close()
    client.close()
