"""The shared read-through path every policy uses, and the per-key machinery under it.

An engine serves one namespace. Reads go backend -> store (on a miss), with:

* single flight: concurrent misses of one key share one store load (waiters share a
  "not found" answer too);
* fill tokens: each key stripe has a generation that every write bumps under the
  stripe's lock; a fill whose generation moved (a write happened after its load
  started) is dropped instead of putting an old value back.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ._refresh import ReadOptions, should_refresh
from .backends.base import MISS, Backend
from .backends.memory import MemoryBackend
from .errors import (
    BackendError,
    ClosedError,
    ConfigError,
    InvalidKeyError,
    SerializationError,
    StoreError,
)
from .serializers import Serializer, encoder
from .stats import Counters
from .stores.base import ADD, NOTSET, SET, Loaded, Op, Store
from .stores.base import check_key as check_store_key

__all__ = ["Engine", "check_key", "check_ttl"]

log = logging.getLogger("cacheway")

_STRIPES = 1024  # power of two
# lease_get answers (see RedisBackend.lease_get)
LEASE_VALUE, LEASE_ACQUIRED, LEASE_HELD, LEASE_NOT_FOUND = 0, 1, 2, 3


def check_key(key: object) -> str:
    """``key`` if it is a ``str`` of valid text (no lone surrogate, which no store or
    backend can encode)."""
    if key.__class__ is not str and not isinstance(key, str):
        raise InvalidKeyError(f"keys must be str, not {type(key).__name__} ({key!r:.60})")
    if not key.isascii():
        try:
            key.encode()
        except UnicodeEncodeError as exc:
            raise InvalidKeyError(
                f"key {key!r:.60} is not valid text: {exc.reason} at index {exc.start} "
                "(a lone surrogate cannot be stored)") from None
    return key


def check_ttl(ttl: object) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise ConfigError(f"ttl must be a number of seconds > 0 or None, not {ttl!r}")
    return float(ttl)


class _Flight:
    __slots__ = ("error", "event", "found", "gen", "value")

    def __init__(self, gen: int) -> None:
        self.gen = gen
        self.event = threading.Event()
        self.value: Any = None
        self.found = False
        self.error: BaseException | None = None


class Engine:
    """Read-through reads, key stripes and fill tokens; subclasses add the write path."""

    #: write-back engines answer reads of pending keys from their dirty table
    answers_pending = False

    def __init__(
        self,
        namespace: str,
        store: Store,
        backend: Backend,
        serializer: Serializer,
        ttl: float | None,
        counters: Counters,
        fill_ttl: float | None = None,
        read: ReadOptions | None = None,
    ) -> None:
        self.namespace = namespace
        self.store = store
        self.backend = backend
        self.serializer = serializer
        # (payload, copy) of a value, or SerializationError when it would not come back
        # the same (value fidelity: the copy is what reads answer with).
        self._encode = encoder(serializer)
        self.ttl = ttl
        # A namespace ttl shorter than the policy's fill_ttl wins: copies never outlive it.
        self.fill_ttl = ttl if fill_ttl is None else fill_ttl if ttl is None else min(ttl, fill_ttl)
        self.counters = counters
        self.prefix = f"{namespace}:"
        self.closed = False
        self._locks = [threading.RLock() for _ in range(_STRIPES)]
        self._gens = [0] * _STRIPES
        self._flights: dict[str, _Flight] = {}
        self._flight_lock = threading.Lock()
        self._backend_get = backend.get
        self._read = read if read is not None else ReadOptions()
        self._jitter = self._read.ttl_jitter
        self._meta = False  # fills record their load time (early refresh needs it)
        self._refreshing: set[str] = set()
        self._refresher: ThreadPoolExecutor | None = None
        self._setup_read_options(backend)
        if not self.answers_pending and self._fast_memory():
            self.get = (  # type: ignore[method-assign]
                self._get_memory_space if self._mem_space else self._get_memory)
        elif not self.answers_pending and self._fast_two_level():
            self.get = self._get_two_level  # type: ignore[method-assign]
        # A store may refuse a write at the call that makes it (a dict with an unknown
        # column, a key too long for its table) rather than later in a flusher.
        self._validate: Callable[[str, str, Any, int], Any] | None = getattr(
            store, "validate", None)
        # Keys the store can never keep (too long, a NUL) are refused by every write. An
        # ASCII key of at most _max_key characters without NUL needs no look (hot paths).
        limits = [n for n in (getattr(store, "max_key_bytes", None),
                              getattr(store, "max_key_chars", None)) if n is not None]
        self._max_key: int | None = min(limits) if limits else None
        self._nul_ok: bool = getattr(store, "keys_take_nul", True)
        self._store_keys = bool(limits) or not self._nul_ok
        # A shared backend's clock (RedisBackend.versions) versions writes that reach the
        # store first, so stores apply them set-if-newer in the order they were accepted.
        self._clock: Callable[[int], list[int]] | None = (
            getattr(backend, "versions", None)
            if not backend.local and store.versioned else None)
        # Backends shared across processes offer leases for cross-process single flight.
        self._lease_get: Callable[[str, bytes], tuple[int, Any]] | None = (
            getattr(backend, "lease_get", None) if getattr(backend, "leases", False) else None)
        self._lease_wait = float(getattr(backend, "lease_ttl", 10.0))
        self._backend_logged = 0.0

    # -- helpers ----------------------------------------------------------------------
    def _closed(self) -> ClosedError:
        name = self.namespace or "default"
        return ClosedError(f"cache namespace {name!r} is closed")

    @staticmethod
    def _stripe(bkey: str) -> int:
        return hash(bkey) & (_STRIPES - 1)

    def _dumps(self, value: Any) -> bytes:
        try:
            return self.serializer.dumps(value)
        except SerializationError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(f"cannot serialize value: {exc}") from exc

    def _decode(self, row: Loaded) -> tuple[Any, bytes | None]:
        value = row.value
        if value is NOTSET:
            assert row.payload is not None
            value = self.serializer.loads(row.payload)
        return value, row.payload

    def _lookup_pending(self, key: str) -> Any:
        """Write-back engines answer from their dirty table; MISS means 'not pending'."""
        return MISS

    def _can_fill(self, bkey: str, stripe: int, gen: int) -> bool:
        return self._gens[stripe] == gen

    def _setup_read_options(self, backend: Backend) -> None:
        opts = self._read
        if opts.early_refresh is not None:
            if not hasattr(backend, "get_meta"):
                raise ConfigError(
                    f"early_refresh needs a backend that keeps entry ages ({backend!r} "
                    "does not): use cw.MemoryBackend"
                )
            self._meta = True
            self._backend_meta = backend.get_meta
            self.get = self._get_early  # type: ignore[method-assign]
        if opts.stale_if_error is not None:
            if not hasattr(backend, "get_stale"):
                raise ConfigError(
                    f"stale_if_error needs a backend that can keep expired entries "
                    f"({backend!r} cannot): use cw.MemoryBackend"
                )
            backend.keep_stale(opts.stale_if_error)  # type: ignore[attr-defined]

    # -- reads ------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        if key.__class__ is not str:
            check_key(key)
        if self.closed:
            raise self._closed()
        bkey = self.prefix + key
        return self._read_backend(key, bkey, default)

    def _fast_memory(self) -> bool:
        """Bind the inlined MemoryBackend hit path when the backend is a plain one."""
        backend = self.backend
        # A subclass's get/set would be bypassed: only one that says (in its own class
        # body) that it keeps MemoryBackend's dicts as they are is inlined.
        kind = type(backend)
        if (kind is not MemoryBackend and not kind.__dict__.get("_inline_safe", False)) or (
                self._read.early_refresh is not None):
            return False
        assert isinstance(backend, MemoryBackend)
        # Unbounded: this namespace's own dict, keyed without "ns:"; bounded: the LRU dict.
        self._mem_space = not backend._lru
        self._mem_data: Any = (
            backend._space(self.namespace) if self._mem_space else backend._data)
        self._mem_timer = backend._timer
        return True

    def _cached(self, bkey: str) -> Any:
        """The backend's copy (counted as a hit), or MISS; a failing backend reads as a
        miss (the store still has the truth)."""
        try:
            value = self._backend_get(bkey)
        except BackendError as exc:
            return self._backend_down(exc)
        if value is not MISS:
            self.counters.hits += 1
        return value

    def _read_backend(self, key: str, bkey: str, default: Any) -> Any:
        """The backend's answer, else the store's (read-through)."""
        if not key.isascii():
            check_key(key)  # a key no store can keep is refused, not "not found"
        value = self._cached(bkey)
        return value if value is not MISS else self._miss(key, bkey, default)

    def _fast_two_level(self) -> bool:
        from .backends.two_level import TwoLevelBackend

        backend: Any = self.backend
        if type(backend) is not TwoLevelBackend or self._read.early_refresh is not None:
            return False
        if backend._l1_data is None:
            return False  # an unbounded L1: its own get() splits namespaces
        self._two = backend
        self._mem_data = backend._l1_data
        self._mem_timer = backend._l1_timer
        return True

    def _get_two_level(self, key: str, default: Any = None) -> Any:
        # get() with TwoLevelBackend's L1 hit inlined (while its invalidations flow).
        if key.__class__ is not str:
            check_key(key)
        if self.closed:
            raise self._closed()
        bkey = self.prefix + key
        if self._two._trusted:
            item = self._mem_data.get(bkey)
            if item is not None and (item[1] is None or item[1] > self._mem_timer()):
                try:  # noqa: SIM105 - as in MemoryBackend.get
                    self._mem_data.move_to_end(bkey)
                except KeyError:
                    pass
                self.counters.hits += 1
                return item[0]
        return self._read_backend(key, bkey, default)

    def _get_memory(self, key: str, default: Any = None) -> Any:
        # get() with MemoryBackend.get inlined: the hit path is most of what a cache does.
        # A bounded backend: one LRU dict keyed by the full key.
        if key.__class__ is not str:
            check_key(key)
        if self.closed:
            raise self._closed()
        bkey = self.prefix + key
        item = self._mem_data.get(bkey)
        if item is not None and (item[1] is None or item[1] > self._mem_timer()):
            try:  # noqa: SIM105 - as in MemoryBackend.get
                self._mem_data.move_to_end(bkey)
            except KeyError:
                pass
            self.counters.hits += 1
            return item[0]
        return self._read_backend(key, bkey, default)

    def _get_memory_space(self, key: str, default: Any = None) -> Any:
        # _get_memory for an unbounded backend: this namespace's dict, no LRU order.
        if key.__class__ is not str:
            check_key(key)
        if self.closed:
            raise self._closed()
        item = self._mem_data.get(key)
        if item is not None and (item[1] is None or item[1] > self._mem_timer()):
            self.counters.hits += 1
            return item[0]
        return self._read_backend(key, self.prefix + key, default)

    def _get_early(self, key: str, default: Any = None) -> Any:
        """``get`` with XFetch: a hit that should_refresh() picks reloads in the
        background while this (and every other) reader still gets the cached value."""
        if key.__class__ is not str:
            check_key(key)
        if self.closed:
            raise self._closed()
        bkey = self.prefix + key
        if self.answers_pending:
            value = self._lookup_pending(key)
            if value is not MISS:
                self.counters.hits += 1
                return default if value is _DELETED else value
        try:
            meta = self._backend_meta(bkey)
        except BackendError as exc:
            meta = self._backend_down(exc)
        if meta is MISS:
            return self._miss(key, bkey, default)
        value, left, delta = meta
        self.counters.hits += 1
        opts = self._read
        assert opts.early_refresh is not None
        if left is not None and delta > 0 and should_refresh(
                left, delta, opts.early_refresh, opts.rand):
            self._refresh_later(key, bkey)
        return value

    def _refresh_later(self, key: str, bkey: str) -> None:
        with self._flight_lock:
            if bkey in self._refreshing or self.closed:
                return
            self._refreshing.add(bkey)
            if self._refresher is None:
                self._refresher = ThreadPoolExecutor(
                    max_workers=2, thread_name_prefix="cacheway-refresh")
            refresher = self._refresher
        refresher.submit(self._refresh, key, bkey)

    def _refresh(self, key: str, bkey: str) -> None:
        try:
            stripe = self._stripe(bkey)
            self._load(key, bkey, stripe, self._gens[stripe], fill=True)
        except Exception as exc:  # noqa: BLE001 - the old copy keeps serving; say why
            log.warning("cacheway: early refresh of %r failed: %r", bkey, exc)
        finally:
            with self._flight_lock:
                self._refreshing.discard(bkey)

    def _stale(self, key: str, bkey: str, exc: BaseException) -> Any:
        """The expired copy of ``bkey`` a failing store lets us serve (stale_if_error)."""
        max_age = self._read.stale_if_error
        if max_age is None:
            return MISS
        value = self.backend.get_stale(bkey, max_age)  # type: ignore[attr-defined]
        if value is not MISS:
            log.warning("cacheway: store failed (%s); serving the stale copy of %r", exc, key)
        return value

    def _stop_refresher(self) -> None:
        with self._flight_lock:
            refresher, self._refresher = self._refresher, None
        if refresher is not None:
            refresher.shutdown(wait=True)

    def _backend_down(self, exc: BackendError) -> Any:
        """A backend that fails a read makes it a miss: the store still has the truth."""
        now = time.monotonic()
        if now - self._backend_logged > 5.0:
            self._backend_logged = now
            log.warning("cacheway: backend read failed, reading the store instead: %s", exc)
        return MISS

    def _miss(self, key: str, bkey: str, default: Any) -> Any:
        stripe = self._stripe(bkey)
        with self._flight_lock:
            gen = self._gens[stripe]
            flight = self._flights.get(bkey)
            leader = flight is None or flight.gen != gen
            if leader:
                flight = _Flight(gen)
                self._flights[bkey] = flight
        assert flight is not None
        self.counters.misses += 1
        if not leader:
            flight.event.wait()
            if flight.error is not None:
                raise StoreError(f"load of {key!r} failed: {flight.error}") from flight.error
            return flight.value if flight.found else default
        try:
            try:
                if self._lease_get is not None:
                    flight.found, flight.value = self._leased_load(key, bkey, stripe, gen)
                else:
                    flight.found, flight.value = self._load(key, bkey, stripe, gen, fill=True)
            except Exception as exc:
                stale = self._stale(key, bkey, exc)
                if stale is MISS:
                    raise
                flight.found, flight.value = True, stale
        except BaseException as exc:
            flight.error = exc
            if isinstance(exc, StoreError):
                raise
            if isinstance(exc, Exception):
                raise StoreError(f"load of {key!r} failed: {exc!r}") from exc
            raise
        finally:
            with self._flight_lock:
                if self._flights.get(bkey) is flight:
                    del self._flights[bkey]
            flight.event.set()
        return flight.value if flight.found else default

    def _load(self, key: str, bkey: str, stripe: int, gen: int, *, fill: bool
              ) -> tuple[bool, Any]:
        self.counters.loads += 1
        started = time.monotonic()
        row = self.store.fetch(self.namespace, [key]).get(key)
        if row is None:
            return False, None
        value, payload = self._decode(row)
        if fill:
            self._fill(bkey, stripe, gen, value, payload, row.version,
                       time.monotonic() - started)
        return True, value

    def _leased_load(self, key: str, bkey: str, stripe: int, gen: int) -> tuple[bool, Any]:
        """Cross-process single flight: one lease holder loads and fills; the other
        readers (in any process) poll for its fill, for at most the lease's lifetime,
        then load by themselves (a dead holder's lease expires meanwhile)."""
        assert self._lease_get is not None
        token = os.urandom(12)
        deadline = time.monotonic() + self._lease_wait
        delay = 0.001
        while True:
            try:
                state, value = self._lease_get(bkey, token)
            except BackendError as exc:
                self._backend_down(exc)
                return self._load(key, bkey, stripe, gen, fill=False)
            if state == LEASE_VALUE:
                return True, value
            if state == LEASE_NOT_FOUND:
                return False, None
            if state == LEASE_ACQUIRED:
                return self._fill_lease(key, bkey, stripe, gen, token)
            if time.monotonic() >= deadline:
                # The holder is slow or gone: load, but only a lease holder may fill.
                return self._load(key, bkey, stripe, gen, fill=False)
            time.sleep(delay)
            delay = min(0.02, delay * 1.5)

    def _fill_lease(self, key: str, bkey: str, stripe: int, gen: int, token: bytes
                    ) -> tuple[bool, Any]:
        self.counters.loads += 1
        row = self.store.fetch(self.namespace, [key]).get(key)
        value = payload = version = None
        if row is not None:
            value, payload = self._decode(row)
            version = row.version
        if self._can_fill(bkey, stripe, gen):
            # Any write since the lease was taken replaced it, so this fill then fails.
            try:
                self.backend.lease_fill(  # type: ignore[attr-defined]
                    bkey, token, value, payload,
                    self.fill_ttl if row is not None else None, version,
                    found=row is not None,
                )
            except BackendError as exc:
                self._backend_down(exc)
        return row is not None, value

    def _fill(
        self, bkey: str, stripe: int, gen: int, value: Any, payload: bytes | None,
        version: int | None, delta: float = 0.0,
    ) -> None:
        with self._fill_lock(stripe):
            if self._can_fill(bkey, stripe, gen):
                self._backend_set(bkey, value, payload, self.fill_ttl, version, delta)

    def _backend_set(
        self, bkey: str, value: Any, payload: bytes | None, ttl: float | None,
        version: int | None, delta: float = 0.0,
    ) -> None:
        """Set a cached copy; a failing backend loses the copy, never the write."""
        if self._jitter and ttl is not None:
            ttl *= 1.0 - self._jitter * self._read.rand()
        try:
            if self._meta:
                self.backend.set(bkey, value, payload, ttl, version,
                                 delta=delta)  # type: ignore[call-arg]
            else:
                self.backend.set(bkey, value, payload, ttl, version)
        except Exception as exc:  # noqa: BLE001 - any backend failure: drop the copy, keep the write
            log.warning("cacheway: backend set of %r failed (%r); dropping the copy", bkey, exc)
            self._backend_drop(bkey)

    def _backend_drop(self, bkey: str, version: int | None = None) -> None:
        try:
            self.backend.delete(bkey, version)
        except Exception as exc:  # noqa: BLE001 - logged; the store already has the truth
            log.error("cacheway: backend delete of %r failed: %r", bkey, exc)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        if self.closed:
            raise self._closed()
        out: dict[str, Any] = {}
        prefix = self.prefix
        pending = self.answers_pending
        ask: list[str] = []  # not pending: the backend answers them in one call
        hits = 0
        for key in keys:
            if key.__class__ is not str:
                check_key(key)
            if pending:
                value = self._lookup_pending(key)
                if value is not MISS:
                    hits += 1
                    if value is not _DELETED:
                        out[key] = value
                    continue
            ask.append(key)
        if ask:
            ask = list(dict.fromkeys(ask))
            bkeys = [prefix + k for k in ask]
            try:
                cached = self.backend.get_many(bkeys)
            except BackendError as exc:
                self._backend_down(exc)
                cached = {}
            missing: list[str] = []
            for key, bkey in zip(ask, bkeys):
                value = cached.get(bkey, MISS)
                if value is MISS:
                    missing.append(key)
                else:
                    hits += 1
                    out[key] = value
            if missing:
                self._load_many(missing, out)
        self.counters.hits += hits
        return out

    def _load_many(self, missing: list[str], out: dict[str, Any]) -> None:
        prefix = self.prefix
        # Fill tokens are taken before the store is read: a write after this point
        # makes the fill of its key stand down.
        gens = {k: self._gens[self._stripe(prefix + k)] for k in missing}
        self.counters.misses += len(missing)
        self.counters.loads += 1
        try:
            rows = self.store.fetch(self.namespace, missing)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"load of {len(missing)} keys failed: {exc!r}") from exc
        for key, row in rows.items():
            value, payload = self._decode(row)
            out[key] = value
            bkey = prefix + key
            self._fill(bkey, self._stripe(bkey), gens[key], value, payload, row.version)

    # -- fork -----------------------------------------------------------------------------
    def before_fork(self) -> None:
        """Called in the parent just before ``os.fork()`` (see cache.py)."""

    def after_fork_in_parent(self) -> None:
        """Called in the parent just after ``os.fork()``."""

    def after_fork_in_child(self) -> None:
        """Called in the child: the parent's other threads are gone, so nothing they held
        or were doing (stripe locks, single flights, refreshes) may be waited for."""
        self._locks = [threading.RLock() for _ in range(_STRIPES)]
        self._flight_lock = threading.Lock()
        self._flights = {}
        self._refreshing = set()
        self._refresher = None

    # -- invalidation ---------------------------------------------------------------------
    def invalidate(self, key: str) -> None:
        self.invalidate_many([key])

    def invalidate_many(self, keys: Iterable[str]) -> None:
        """Drop the cached copies of ``keys`` (the store keeps its rows): every level of
        the backend, and every process sharing it. A fill that loaded before the call
        stands down, so it cannot put back a copy read before the store changed."""
        bkeys = [self.prefix + check_key(k) for k in dict.fromkeys(keys)]
        if self.closed:
            raise self._closed()
        if not bkeys:
            return
        for bkey in bkeys:
            stripe = self._stripe(bkey)
            with self._fill_lock(stripe):
                self._gens[stripe] += 1
        self.backend.delete_many(bkeys)

    def _fill_lock(self, stripe: int) -> Any:
        """The lock a fill of a key of ``stripe`` checks its token under."""
        return self._locks[stripe]

    # -- writes (policies override) -----------------------------------------------------
    def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        raise NotImplementedError

    def set_many(self, mapping: Mapping[str, Any], ttl: float | None = None) -> None:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def delete_many(self, keys: Iterable[str]) -> None:
        raise NotImplementedError

    def incr(self, key: str, delta: int = 1) -> int:
        raise NotImplementedError

    def flush(self, timeout: float | None = None) -> None:
        return None

    def pending(self) -> int:
        return 0

    def close(self, timeout: float | None = None) -> None:
        self.closed = True
        self._stop_refresher()

    # -- shared write helpers -------------------------------------------------------------
    def _prepare(self, key: object, value: Any, ttl: object
                 ) -> tuple[str, Any, bytes, float | None]:
        k = self._key(key)
        if self.closed:
            raise self._closed()
        ttl_ = self.ttl if ttl is None else check_ttl(ttl)
        if self._validate is not None:
            value = self._validate(self.namespace, k, value, SET)
        payload, copy = self._encode(value)
        return k, copy, payload, ttl_

    def _versioned(self, ops: list[Op]) -> list[Op]:
        """``ops`` with versions from the shared backend's clock, when it has one (else
        as they are: the store stamps its own, and with Redis down order across
        processes is the store's)."""
        if self._clock is None or not ops:
            return ops
        try:
            versions = self._clock(len(ops))
        except BackendError as exc:
            self._backend_down(exc)
            return ops
        return [op._replace(version=v) for op, v in zip(ops, versions)]

    def _key(self, key: object) -> str:
        """``key`` checked for a write: a str the store can keep (else InvalidKeyError,
        or InvalidWriteError for one this store cannot)."""
        k = check_key(key)
        if self._store_keys:
            check_store_key(self.store, self.namespace, k)
        return k

    def _key_needs_look(self, key: str) -> bool:
        """False when ``key`` passes :meth:`_key` for sure (the cheap test)."""
        return key.__class__ is not str or not key.isascii() or (
            self._max_key is not None and len(key) > self._max_key) or (
            not self._nul_ok and "\x00" in key)

    def _check_delta(self, key: str, delta: object) -> int:
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise ConfigError(f"incr delta must be an int, not {delta!r}")
        if self._validate is not None:
            self._validate(self.namespace, key, delta, ADD)
        return delta

    @staticmethod
    def _as_counter(key: str, current: Any) -> int:
        if current is None:
            return 0
        if isinstance(current, bool) or not isinstance(current, int):
            raise ConfigError(
                f"cannot incr {key!r}: its value {current!r:.60} is not an int"
            )
        return current

    def _locks_for(self, bkeys: Sequence[str]) -> list[threading.RLock]:
        stripes = sorted({self._stripe(b) for b in bkeys})
        return [self._locks[s] for s in stripes]


# A pending delete answers reads as "absent".
_DELETED: Any = type("Deleted", (), {"__repr__": lambda self: "DELETED"})()
