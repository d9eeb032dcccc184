"""The connection that tells a TwoLevelBackend which keys changed in Redis.

One dedicated connection per backend runs ``CLIENT TRACKING ON REDIRECT <itself> BCAST
PREFIX <prefix>`` and is subscribed to ``__redis__:invalidate`` (RESP2), so Redis tells
it every key under the prefix that changes.

Why tracking rather than a PUBLISH from each writer: Redis sends the invalidation itself,
so it cannot be lost to a writer that dies between its SET and its PUBLISH, it covers
writers that are not cacheway (a plain ``RedisBackend``, ``redis-cli``), expiries,
evictions and ``FLUSHDB``, and a write costs no extra round trip. Why RESP2 with a
redirect to the connection itself: it is one connection (the tracking state dies with it,
so "the connection is up" is exactly "invalidations flow"), the messages are ordinary
pub/sub replies that every redis-py parser returns as they are, whereas RESP3 push
messages go through redis-py hooks that changed between releases.

A :class:`Subscriber` runs it on a thread of its own: connect, subscribe, listen, PING
when silent, and on any drop reconnect with a doubling delay. It decides nothing about
the L1; it calls its owner back:

- ``subscribed(client_id)`` once the subscription is up (nothing is missed from then
  on); raising there refuses it (the owner is closing);
- ``invalidated(names)`` for each message: the changed Redis key names, or None when
  everything changed (``FLUSHDB``/``FLUSHALL``);
- ``dropped()`` after the connection failed or was closed, before the next attempt.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError

__all__ = ["CHANNEL", "Subscriber"]

log = logging.getLogger("cacheway")

CHANNEL = b"__redis__:invalidate"


class Subscriber:
    """The invalidation connection of one backend and the thread that reads it.

    ``client`` is the L2's ``redis.Redis``: the connection is made with its pool's class
    and options (RESP2, no retries of redis-py's own, named ``cacheway-l1-<name>``).
    ``describe`` names the server in log messages.
    """

    def __init__(
        self,
        client: Any,
        *,
        name: str,
        prefix: str,
        describe: object,
        health_interval: float,
        health_timeout: float,
        reconnect_delay: tuple[float, float],
        sleep: Callable[[float], object] | None,
        subscribed: Callable[[int], None],
        invalidated: Callable[[list[bytes] | None], None],
        dropped: Callable[[], None],
    ) -> None:
        for what, v in (("health_interval", health_interval),
                        ("health_timeout", health_timeout)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise ConfigError(f"{what} must be a number of seconds >= 0, not {v!r}")
        lo, hi = reconnect_delay
        if not 0 < lo <= hi:
            raise ConfigError(f"reconnect_delay must be (min, max) with 0 < min <= max, "
                              f"not {reconnect_delay!r}")
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        self._redis_errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._refused: type[BaseException] = redis.ResponseError
        self._name = name
        self._prefix = prefix
        self._describe = describe
        self._health_interval = health_interval = float(health_interval)
        self._health_timeout = health_timeout = float(health_timeout)
        self._delays = (float(lo), float(hi))
        self._subscribed = subscribed
        self._invalidated = invalidated
        self._dropped = dropped
        self.stopping = threading.Event()
        self.ready = threading.Event()  # set while subscribed (see wait_ready)
        self._sleep: Callable[[float], object] = sleep if sleep is not None else self.stopping.wait
        # a redis.connection.AbstractConnection (untyped in redis-py, so Any here)
        self._conn: Any = None
        self.client_id: int | None = None
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        # Our loop does the reconnecting (and must see every drop); RESP2 keeps the
        # invalidations ordinary pub/sub replies.
        kwargs.update(retry=Retry(NoBackoff(), 0), protocol=2, health_check_interval=0,
                      client_name=f"cacheway-l1-{name}")
        # The connection is ours, so it is bounded even when the caller's client waits
        # for ever: a handshake on a stalled or half-open socket (a server that vanished)
        # times out and the loop reconnects, instead of leaving the L1 bypassed for good.
        bound = max(health_interval + health_timeout, 0.5)
        for option in ("socket_timeout", "socket_connect_timeout"):
            kwargs[option] = kwargs.get(option) or bound
        self._conn_class: Any = pool.connection_class
        self._conn_kwargs = kwargs
        self._thread = self._new_thread()

    def _new_thread(self) -> threading.Thread:
        return threading.Thread(target=self._run, name=f"cacheway-l1-{self._name}", daemon=True)

    @property
    def alive(self) -> bool:
        """True while the thread runs (from :meth:`start` until :meth:`stop` returns)."""
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def restart_in_child(self) -> None:
        """In a forked child: a thread of its own (the inherited connection is the
        parent's socket: left untouched, never closed)."""
        self._conn = None
        self.client_id = None
        self.ready = threading.Event()
        self._thread = self._new_thread()
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread (waking it from its poll) and let it close the connection."""
        self.stopping.set()
        sock = getattr(self._conn, "_sock", None)
        if sock is not None:  # wake the thread from its poll at once
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self.ready.clear()

    # -- the thread ---------------------------------------------------------------------
    def _run(self) -> None:
        delay = self._delays[0]
        logged = False  # one warning per outage, not one per reconnection attempt
        while not self.stopping.is_set():
            try:
                conn = self._connect()
                delay, logged = self._delays[0], False
                self._listen(conn)
            except self._redis_errors as exc:
                if not self.stopping.is_set() and not logged:
                    logged = True
                    log.warning("cacheway: L1 invalidation connection to %s is down (%s: %s); "
                                "the L1 is bypassed until it is back",
                                self._describe, type(exc).__name__, exc)
            except Exception:  # a bug must not leave a stale L1 in use
                log.exception("cacheway: L1 invalidation thread failed; bypassing the L1")
            finally:
                self._dropped()
                self.ready.clear()
                conn, self._conn, self.client_id = self._conn, None, None
                if conn is not None:  # also one that failed half way through _connect
                    conn.disconnect()
            if not self.stopping.is_set():
                self._sleep(delay)
                delay = min(delay * 2, self._delays[1])

    def _connect(self) -> Any:
        conn = self._conn_class(**self._conn_kwargs)
        self._conn = conn
        conn.connect()
        conn.send_command("CLIENT", "ID")
        cid = int(conn.read_response())
        args: list[Any] = ["CLIENT", "TRACKING", "ON", "REDIRECT", cid, "BCAST"]
        if self._prefix:
            args += ["PREFIX", self._prefix]
        conn.send_command(*args)
        try:
            conn.read_response()
        except self._refused as exc:  # a server (or proxy) without tracking
            log.error("cacheway: Redis refused CLIENT TRACKING (%s); TwoLevelBackend "
                      "needs Redis >= 6 and keeps bypassing its L1", exc)
            raise
        conn.send_command("SUBSCRIBE", CHANNEL)
        conn.read_response()  # the subscribe confirmation: from here nothing is missed
        self.client_id = cid
        self._subscribed(cid)
        self.ready.set()
        log.debug("cacheway: L1 invalidations flowing (client id %d)", cid)
        return conn

    def _listen(self, conn: Any) -> None:
        poll = min(0.5, max(self._health_interval, 0.01))
        last = time.monotonic()
        pinged: float | None = None
        while not self.stopping.is_set():
            if conn.can_read(timeout=poll):
                reply = conn.read_response()
                last, pinged = time.monotonic(), None
                if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                    self._invalidated(reply[2])
                continue
            now = time.monotonic()
            if pinged is None and now - last >= self._health_interval:
                conn.send_command("PING")
                pinged = now
            elif pinged is not None and now - pinged > self._health_timeout:
                raise TimeoutError(f"no answer to PING in {self._health_timeout:g}s")
