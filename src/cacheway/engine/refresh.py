"""Read options that change what a hit or a failed load does: early refresh (XFetch, see
:mod:`cacheway._refresh`) and stale-if-error."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .._refresh import ReadOptions, should_refresh
from ..backends.base import MISS, BackendCapabilities
from ..core.keys import check_key
from ..errors import BackendError, ConfigError
from ..stores.base import DELETE

if TYPE_CHECKING:
    from .read import Engine

__all__ = ["Refresher"]

log = logging.getLogger("cacheway")


class Refresher:
    """Early refresh and stale copies for one engine."""

    def __init__(self, engine: Engine, caps: BackendCapabilities, opts: ReadOptions) -> None:
        self._engine = engine
        self._opts = opts
        self._refreshing: set[str] = set()
        self._pool: ThreadPoolExecutor | None = None
        #: fills record their load time (early refresh needs it)
        self.meta = opts.early_refresh is not None
        self._meta = caps.meta
        self._stale = caps.stale
        backend = engine.backend
        if opts.early_refresh is not None and caps.meta is None:
            raise ConfigError(
                f"early_refresh needs a backend that keeps entry ages ({backend!r} "
                "does not): use cw.MemoryBackend"
            )
        if opts.stale_if_error is not None:
            if caps.stale is None:
                raise ConfigError(
                    f"stale_if_error needs a backend that can keep expired entries "
                    f"({backend!r} cannot): use cw.MemoryBackend"
                )
            caps.stale.keep_stale(opts.stale_if_error)

    def early_get(self) -> Callable[[str, Any], Any]:
        """``get`` with XFetch: a hit that should_refresh() picks reloads in the
        background while this (and every other) reader still gets the cached value."""
        engine, opts = self._engine, self._opts
        beta = opts.early_refresh
        assert beta is not None
        assert self._meta is not None
        meta_of, rand, counters = self._meta.get_meta, opts.rand, engine.counters

        def get(key: str, default: Any = None) -> Any:
            if key.__class__ is not str:
                check_key(key)
            if engine.closed:
                raise engine.closed_error()
            bkey = engine.prefix + key
            if engine.pending_entry is not None:
                entry = engine.pending_entry(key)
                if entry is not None:
                    counters.hits += 1
                    return default if entry.kind == DELETE else entry.value
            try:
                meta = meta_of(bkey)
            except BackendError as exc:
                meta = engine.backend_down(exc)
            if meta is MISS:
                return engine.miss(key, bkey, default)
            value, left, delta = meta
            counters.hits += 1
            if left is not None and delta > 0 and should_refresh(left, delta, beta, rand):
                self._later(key, bkey)
            return value

        return get

    def _later(self, key: str, bkey: str) -> None:
        engine = self._engine
        with engine.flight_lock:
            if bkey in self._refreshing or engine.closed:
                return
            self._refreshing.add(bkey)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=2, thread_name_prefix="cacheway-refresh")
            pool = self._pool
        pool.submit(self._refresh, key, bkey)

    def _refresh(self, key: str, bkey: str) -> None:
        engine = self._engine
        try:
            stripe = engine.stripe(bkey)
            engine.load(key, bkey, stripe, engine.gens[stripe], fill=True)
        except Exception as exc:  # noqa: BLE001 - the old copy keeps serving; say why
            log.warning("cacheway: early refresh of %r failed: %r", bkey, exc)
        finally:
            with engine.flight_lock:
                self._refreshing.discard(bkey)

    def stale(self, key: str, bkey: str, exc: BaseException) -> Any:
        """The expired copy of ``bkey`` a failing store lets us serve (stale_if_error)."""
        max_age = self._opts.stale_if_error
        if max_age is None or self._stale is None:
            return MISS
        value = self._stale.get_stale(bkey, max_age)
        if value is not MISS:
            log.warning("cacheway: store failed (%s); serving the stale copy of %r", exc, key)
        return value

    def stop(self) -> None:
        with self._engine.flight_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def after_fork_in_child(self) -> None:
        self._refreshing = set()
        self._pool = None
