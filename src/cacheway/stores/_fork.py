"""Stores after ``os.fork()``: the child must not use the connections it inherited, nor
a C library's lock that a parent's thread held at the fork.

A SQLite connection carried across a fork can corrupt the database (its POSIX locks belong
to the parent), a psycopg connection is one socket that parent and child would talk over
at once, and the threads of a pool or a watchdog do not exist in the child. Each built-in
store registers here; in the child, :func:`reopen_in_child` gives each its own
connections. The inherited ones are kept referenced and never closed: closing would tell
the server (or SQLite's locks) on the parent's behalf that they are gone.

A fork copies the memory of every thread but runs only the forking one: a mutex another
thread held inside SQLite (its allocator's, its file locks') stays held in the child for
good, and the child's first SQLite call waits forever. :data:`GATE` closes that window:
stores make their driver calls inside ``with GATE:``, and the fork waits until no such
call is under way (and lets none start) before it copies the process.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Any, Protocol

__all__ = ["GATE", "ForkAware", "ForkGate", "reopen_in_child", "track"]

log = logging.getLogger("cacheway")


class ForkAware(Protocol):
    def after_fork_in_child(self) -> None: ...


class ForkGate:
    """Driver calls under way, and a fork waiting for them to end.

    ``with GATE:`` around a call into a driver; a thread already inside may enter again.
    :meth:`close` (before a fork) waits up to ``patience`` seconds for the calls under
    way and holds new ones back until :meth:`open` (after it, in the parent); the child
    gets a fresh gate (:meth:`reset`), since the threads inside are not there."""

    def __init__(self, patience: float = 60.0) -> None:
        self.patience = patience
        self._cond = threading.Condition(threading.Lock())
        self._inside = 0
        self._closed = False
        self._depth = threading.local()

    def __enter__(self) -> None:
        depth = getattr(self._depth, "n", 0)
        if depth == 0:
            with self._cond:
                while self._closed:
                    self._cond.wait()
                self._inside += 1
        self._depth.n = depth + 1

    def __exit__(self, *exc: object) -> None:
        depth = self._depth.n - 1
        self._depth.n = depth
        if depth == 0:
            with self._cond:
                self._inside -= 1
                if self._closed and not self._inside:
                    self._cond.notify_all()

    @property
    def inside(self) -> int:
        """How many threads are inside a driver call now."""
        return self._inside

    def close(self) -> None:
        """Before a fork: wait for the calls under way to end, let none start."""
        deadline = time.monotonic() + self.patience
        mine = 1 if getattr(self._depth, "n", 0) else 0  # a fork from inside a call
        with self._cond:
            self._closed = True
            while self._inside > mine:
                left = deadline - time.monotonic()
                if left <= 0:  # never a parent stuck for good: fork, and say why
                    log.error("cacheway: %d store calls still under way after %g s at "
                              "os.fork(): the child may hang on a lock they hold",
                              self._inside, self.patience)
                    return
                self._cond.wait(left)

    def open(self) -> None:
        """After the fork, in the parent: calls go on."""
        with self._cond:
            self._closed = False
            self._cond.notify_all()

    def reset(self) -> None:
        """In the child: no other thread is inside (they were not copied); the forking
        thread is, if it forked from inside a call."""
        depth = getattr(self._depth, "n", 0)
        self._cond = threading.Condition(threading.Lock())
        self._inside = 1 if depth else 0
        self._closed = False
        self._depth = threading.local()
        self._depth.n = depth


GATE = ForkGate()

_STORES: weakref.WeakSet[Any] = weakref.WeakSet()
_DONE_IN: list[int] = [os.getpid()]  # the process whose stores are already its own


def track(store: ForkAware) -> None:
    """Reopen ``store``'s connections in each child forked from now on."""
    _STORES.add(store)


def reopen_in_child() -> None:
    """Called in the child after a fork (once, whoever calls first: the cache's fork
    hook calls it before it restarts flushers, and it is an at-fork hook of its own)."""
    pid = os.getpid()
    if _DONE_IN[0] == pid:
        return
    _DONE_IN[0] = pid
    GATE.reset()
    for store in list(_STORES):
        store.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    # Registered before the caches' hooks (cacheway._lifecycle imports this module
    # first), so the gate closes after they took their table locks: a store call never
    # waits for a cache's lock, while a thread holding one may call a store.
    os.register_at_fork(before=GATE.close, after_in_parent=GATE.open,
                        after_in_child=reopen_in_child)
