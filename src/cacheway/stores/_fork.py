"""Stores after ``os.fork()``: the child must not use the connections it inherited.

A SQLite connection carried across a fork can corrupt the database (its POSIX locks belong
to the parent), a psycopg connection is one socket that parent and child would talk over
at once, and the threads of a pool or a watchdog do not exist in the child. Each built-in
store registers here; in the child, :func:`reopen_in_child` gives each its own
connections. The inherited ones are kept referenced and never closed: closing would tell
the server (or SQLite's locks) on the parent's behalf that they are gone.
"""

from __future__ import annotations

import os
import weakref
from typing import Any, Protocol

__all__ = ["ForkAware", "reopen_in_child", "track"]


class ForkAware(Protocol):
    def after_fork_in_child(self) -> None: ...


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
    for store in list(_STORES):
        store.after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=reopen_in_child)
