"""Open caches across fork (gunicorn --preload, multiprocessing, Celery prefork): the
hooks ``os.register_at_fork`` runs, and the exit hook of multiprocessing's children."""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from .stores import reopen_in_child

if TYPE_CHECKING:
    from .cache import Cache

__all__ = ["OPEN"]

log = logging.getLogger("cacheway")

# Strong references: a cache dropped without close() still has dirty writes that its
# flusher thread holds, and the atexit hook must be able to reach them.
OPEN: set[Cache] = set()


def close_forgotten() -> None:
    """The exit flush of caches never closed (``cacheway.cache``'s atexit hook)."""
    from .cache import _close_forgotten

    _close_forgotten()


# -- fork: gunicorn --preload, multiprocessing, Celery prefork ---------------------------
_FORKING: list[Cache] = []  # the open caches as of the last before-fork hook


class _ExitHook:
    """Registered with multiprocessing's (and billiard's, Celery's) after-fork hooks: their
    children end with os._exit(), which skips atexit, and they clear the finalizers
    inherited from the parent before running these."""

    def __init__(self) -> None:
        self.registered: set[str] = set()

    def __call__(self, _: object) -> None:
        for name in self.registered:
            sys.modules[name].Finalize(None, close_forgotten, exitpriority=100)

    def register(self) -> None:
        for name in ("multiprocessing.util", "billiard.util"):
            util: Any = sys.modules.get(name)
            if util is not None and name not in self.registered:
                self.registered.add(name)
                util.register_after_fork(self, _EXIT_HOOK)


_EXIT_HOOK = _ExitHook()


def _before_fork() -> None:
    if OPEN:
        _EXIT_HOOK.register()
    _FORKING[:] = list(OPEN)
    for cache in _FORKING:
        for engine in cache.engines():
            engine.before_fork()


def _after_fork_in_parent() -> None:
    for cache in _FORKING:
        for engine in cache.engines():
            engine.after_fork_in_parent()
    _FORKING.clear()


def _after_fork_in_child() -> None:
    reopen_in_child()  # stores first: the flushers restarted below write to them at once
    for cache in _FORKING:
        # Every cache, whatever another raised: each engine holds its table lock from
        # _before_fork until its own after_fork_in_child releases it (a journal that
        # cannot follow the fork left the next caches locked: the child hung).
        try:
            cache.after_fork_in_child()
        except Exception as exc:  # noqa: BLE001 - a hook cannot raise to anyone
            log.error("cacheway: %r after the fork: %r (its writes in this process raise)",
                      cache, exc)
    _FORKING.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                        after_in_child=_after_fork_in_child)
