"""A client-side deadline for calls on a database socket.

A server (or a network path) that accepts a query and never answers leaves a driver
waiting in ``select``/``poll`` forever: ``statement_timeout`` is of no help when the
server never got the query, and TCP keepalives are answered by whatever holds the
connection open. :class:`Watchdog` bounds such calls: past a call's deadline it shuts
the connection's socket down (``shutdown(SHUT_RDWR)`` on a duplicate of its file
descriptor), so the driver's wait wakes on end-of-file and fails with its own "server
closed the connection" error. The driver then knows the connection is broken, and its
pool discards it. :meth:`Watchdog.guard` tells the caller whether the deadline fired,
to report a timeout rather than a lost connection.

One thread per watchdog, started at the first call and stopped by :meth:`close`; a
call costs a lock, a dict entry and two system calls (``dup`` and ``close``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator

__all__ = ["Deadline", "Watchdog"]


class Deadline:
    """One guarded call: ``fired`` is True once the watchdog shut its socket down."""

    __slots__ = ("at", "fd", "fired")

    def __init__(self, fd: int, at: float) -> None:
        self.fd = fd  # our duplicate: valid even after the driver closed its own
        self.at = at
        self.fired = False


class Watchdog:
    """Shuts down the sockets of calls that outlive their deadline."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._cond = threading.Condition(threading.Lock())
        self._calls: dict[int, Deadline] = {}
        self._thread: threading.Thread | None = None
        self._wake_at: float | None = None  # when the thread wakes next (None: idle)
        self._closed = False

    @contextlib.contextmanager
    def guard(self, fileno: int, seconds: float) -> Iterator[Deadline]:
        """Run the body with a deadline ``seconds`` from now on socket ``fileno``."""
        call = Deadline(os.dup(fileno), time.monotonic() + seconds)
        with self._cond:
            self._calls[id(call)] = call
            thread = self._thread
            if thread is None or not thread.is_alive():  # first call, or after fork()
                self._closed = False
                self._thread = thread = threading.Thread(
                    target=self._watch, daemon=True, name=f"cacheway-deadline-{self._name}")
                thread.start()
            elif self._wake_at is None or call.at < self._wake_at:
                self._cond.notify()
        try:
            yield call
        finally:
            with self._cond:
                # Under the lock: once this returns, the watchdog never touches the fd.
                self._calls.pop(id(call), None)
                os.close(call.fd)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _watch(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                for call in [c for c in self._calls.values() if c.at <= now]:
                    call.fired = True
                    del self._calls[id(call)]
                    self._shut(call)
                self._wake_at = min((c.at for c in self._calls.values()), default=None)
                self._cond.wait(None if self._wake_at is None else self._wake_at - now)
            self._wake_at = None

    @staticmethod
    def _shut(call: Deadline) -> None:
        # fileno= wraps our duplicate; detach() leaves it to guard() to close.
        try:
            sock = socket.socket(fileno=call.fd)
        except OSError:
            return  # not a socket (any more): nothing to wake
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed by the peer: the call fails on its own
        finally:
            sock.detach()
