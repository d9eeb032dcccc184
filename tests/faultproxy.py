"""A loopback TCP proxy in front of a real server, for fault tests (stdlib only).

``FaultProxy(port)`` listens on 127.0.0.1 (its own ``port``) and forwards each
connection to ``127.0.0.1:port``. Its mode switches at runtime:

``forward``
    bytes flow both ways (connections made during a stall reach the server now).
``down``
    every open connection is reset, and each new one is accepted and reset at once:
    the server is gone.
``stall``
    connections stay open, new ones are accepted, and nothing moves in either
    direction: the server (or the network) hangs. TCP still acknowledges what the
    client sends, so only a client-side deadline notices.

>>> with FaultProxy(5432) as proxy:               # doctest: +SKIP
...     store = PostgresStore(f"postgresql://postgres@127.0.0.1:{proxy.port}/test")
...     proxy.stall()
...     store.load("a")                             # raises StoreError after its timeout
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from typing import Any

__all__ = ["MODES", "FaultProxy"]

MODES = ("forward", "down", "stall")
_TICK = 0.05  # how often an idle connection looks at the mode
_LINGER_RESET = struct.pack("ii", 1, 0)  # close() sends RST, not FIN


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` with a TCP reset (what a dead server's host answers)."""
    with contextlib.suppress(OSError):  # already shut down: a plain close will do
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    sock.close()


class _Pair:
    """One client connection and, once forwarding, its connection to the server."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.server: socket.socket | None = None
        self.closed = False

    def sockets(self) -> list[socket.socket]:
        return [self.client] if self.server is None else [self.client, self.server]

    def shut(self) -> None:
        """Wake its thread (select sees EOF); the thread closes the sockets."""
        for sock in self.sockets():
            with contextlib.suppress(OSError):  # not connected any more
                sock.shutdown(socket.SHUT_RDWR)


class FaultProxy:
    """A TCP proxy on 127.0.0.1 to ``127.0.0.1:target_port`` whose mode tests switch.

    Use it as a context manager (or call :meth:`start` and :meth:`close`). Switching to
    ``down`` returns once every open connection was shut down.
    """

    def __init__(self, target_port: int, target_host: str = "127.0.0.1",
                 mode: str = "forward") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        self.target = (target_host, target_port)
        self._mode = mode
        self._cond = threading.Condition()
        self._pairs: set[_Pair] = set()
        self._threads: list[threading.Thread] = []
        self._closed = False
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self.accepted = 0  # connections accepted so far, in any mode

    # -- modes ------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        with self._cond:
            self._mode = mode
            pairs = list(self._pairs) if mode == "down" else []
            self._cond.notify_all()
        for pair in pairs:
            pair.shut()
        if pairs:
            with self._cond:  # every thread of a shut pair closes it promptly
                self._cond.wait_for(lambda: all(p.closed for p in pairs), timeout=10)

    def forward(self) -> None:
        self.set_mode("forward")

    def down(self) -> None:
        self.set_mode("down")

    def stall(self) -> None:
        self.set_mode("stall")

    # -- life cycle -------------------------------------------------------------------
    def start(self) -> FaultProxy:
        self._spawn(self._accept_loop)
        return self

    def close(self) -> None:
        with self._cond:
            if self._closed:
                return
            self._closed = True
            pairs = list(self._pairs)
            self._cond.notify_all()
        self._listener.close()
        for pair in pairs:
            pair.shut()
        for thread in self._threads:
            thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FaultProxy(127.0.0.1:{self.port} -> {self.target[0]}:{self.target[1]}, " \
               f"{self._mode})"

    # -- threads ----------------------------------------------------------------------
    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True,
                                  name=f"faultproxy-{self.port}")
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                ready, _, _ = select.select([self._listener], [], [], _TICK)
                if not ready:
                    continue
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            with self._cond:
                self.accepted += 1
                if self._mode == "down" or self._closed:
                    _reset(client)
                    continue
                pair = _Pair(client)
                self._pairs.add(pair)
            self._spawn(self._serve, pair)

    def _serve(self, pair: _Pair) -> None:
        try:
            self._pump(pair)
        except OSError:
            pass  # a side closed or reset: the pair ends, as a real connection would
        finally:
            for sock in pair.sockets():
                _reset(sock)
            with self._cond:
                pair.closed = True
                self._pairs.discard(pair)
                self._cond.notify_all()

    def _wait_while_stalled(self) -> str:
        with self._cond:
            while self._mode == "stall" and not self._closed:
                self._cond.wait(_TICK)
            return "closed" if self._closed else self._mode

    def _pump(self, pair: _Pair) -> None:
        while True:
            mode = self._wait_while_stalled()
            if mode in ("down", "closed"):
                return
            if pair.server is None:
                pair.server = socket.create_connection(self.target, timeout=10)
                pair.server.settimeout(None)
            ready, _, _ = select.select(pair.sockets(), [], [], _TICK)
            if not ready or self._mode != "forward":
                continue  # a stall that began during select moves nothing
            for sock in ready:
                data = sock.recv(65536)
                if not data:
                    return
                other = pair.server if sock is pair.client else pair.client
                assert other is not None
                other.sendall(data)
