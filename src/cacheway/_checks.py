"""What ``Cache`` and ``Cache.namespace`` check in their arguments before they build
anything: a store, a backend, and whether ``expire=`` can be kept."""

from __future__ import annotations

from .errors import ConfigError
from .stores.base import Store, store_capabilities

__all__ = ["check_backend", "check_expires", "check_store"]


def check_store(store: object) -> None:
    for name in ("fetch", "apply", "serializer"):
        if not hasattr(store, name):
            raise ConfigError(
                f"store must be a cacheway store (cw.SQLiteStore, cw.PostgresStore, "
                f"cw.SQLAlchemyStore, cw.CallbackStore), not {store!r}"
            )
    if store_capabilities(store).async_callbacks and not hasattr(store, "bind_loop"):
        raise ConfigError(
            "this CallbackStore has async def callbacks: use it with cw.AsyncCache (which "
            "runs them on its event loop), or give cw.Cache plain functions")


def check_expires(store: Store) -> None:
    """``expire=`` needs a store that keeps expiry (every policy stamps writes)."""
    if not store_capabilities(store).expires:
        raise ConfigError(
            f"expire= needs a store with an expiry column (the key/value tables of "
            f"SQLiteStore, PostgresStore, SQLAlchemyStore); {store!r} has none (row mode "
            "and CallbackStore keep no expiry): use ttl= for the cached copy only")


def check_backend(backend: object) -> None:
    for name in ("get", "set", "delete", "local"):
        if not hasattr(backend, name):
            raise ConfigError(
                f"backend must be a cacheway backend (cw.MemoryBackend, cw.RedisBackend, "
                f"cw.TwoLevelBackend), not {backend!r}"
            )
