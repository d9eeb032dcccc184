"""The read-through path every policy uses, and the per-key machinery under it.

An engine serves one namespace. Reads go backend -> store (on a miss), with:

* single flight (:class:`~cacheway.core.fills.Flights`): concurrent misses of one key
  share one store load (waiters share a "not found" answer too); across processes that
  share Redis, a lease (:mod:`.leases`);
* fill tokens (:class:`~cacheway.core.fills.FillTokens`): each write bumps its key's
  stripe generation under the stripe's lock; a fill whose generation moved (a write
  happened after its load started) is dropped instead of putting an old value back.

Which ``get`` runs is chosen in one place (:func:`.fastpaths.choose_get`); each
policy's writes are a module of their own (:mod:`.write_through`, :mod:`.write_back`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .._refresh import ReadOptions
from ..backends.base import MISS, Backend, backend_capabilities
from ..core.dirty import Entry
from ..core.fills import MASK, STRIPES, FillTokens, Flights
from ..core.keys import check_key, check_keys, check_ttl
from ..errors import BackendError, ClosedError, SerializationError, StoreError
from ..serializers import Serializer, checked_encoder, encoder
from ..stats import Counters
from ..stores.base import DELETE, NOTSET, Loaded, Store, store_capabilities
from ..stores.capabilities import PayloadCheck
from ..typed import Codec, typed_encoder
from . import fastpaths
from .expiry import Expiry
from .leases import Leases
from .refresh import Refresher
from .undropped import UndroppedCopies
from .write_checks import WriteChecks

__all__ = ["Engine", "check_key", "check_ttl"]

log = logging.getLogger("cacheway")


class Engine(WriteChecks):
    """One namespace's read-through reads, key stripes and fill tokens; the policy
    engines (:mod:`.write_through`, :mod:`.write_back`) add the writes."""

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
        codec: Codec[Any] | None = None,
        expire: float | None = None,
    ) -> None:
        self.namespace = namespace
        self.store = store
        self.backend = backend
        self.serializer = serializer
        # (payload, copy) of a value, or SerializationError when it would not come back
        # the same (value fidelity: the copy is what reads answer with).
        self.encode = encoder(serializer)
        #: a typed namespace's codec: writes check and keep the plain form, reads of the
        #: store answer with the type (see cacheway.typed)
        self.codec = codec
        if codec is not None:
            self.encode = typed_encoder(self.encode, codec)
        if isinstance(store, PayloadCheck):  # a payload the store can never keep: refused
            check = store.payload_check(serializer)
            if check is not None:
                self.encode = checked_encoder(self.encode, check)
        #: ``expire=``: writes are stamped, copies never outlive the data (engine/expiry.py)
        self.expiry = Expiry(expire) if expire is not None else None
        if self.expiry is not None:
            ttl = self.expiry.cap(ttl)
        self.ttl = ttl
        # A namespace ttl shorter than the policy's fill_ttl wins: copies never outlive it.
        self.fill_ttl = ttl if fill_ttl is None else fill_ttl if ttl is None else min(ttl, fill_ttl)
        self.counters = counters
        self.prefix = f"{namespace}:"
        self.closed = False
        self.locks = [threading.RLock() for _ in range(STRIPES)]
        self.tokens = FillTokens()
        self.gens = self.tokens.gens
        self.flights = Flights()
        self.flight_lock = threading.Lock()
        #: a write-back engine's lookup of a key's newest pending write (reads answer
        #: from it before the backend); None for policies that write before returning
        self.pending_entry: Callable[[str], Entry | None] | None = None
        #: what the backend can do beyond Backend, read once
        self.backend_caps = caps = backend_capabilities(backend)
        self.read_options = read if read is not None else ReadOptions()
        self._jitter = self.read_options.ttl_jitter
        self._rand = self.read_options.rand
        self.refresher = Refresher(self, caps, self.read_options)
        self._backend_get = backend.get
        #: what the store declares it can do, read once
        self.store_caps = scaps = store_capabilities(store)
        # A store may refuse a write at the call that makes it (a dict with an unknown
        # column, a key too long for its table) rather than later in a flusher.
        self.validate: Callable[[str, str, Any, int], Any] | None = scaps.validate
        # Keys the store can never keep (too long, a NUL) are refused by every write. An
        # ASCII key of at most max_key characters without NUL needs no look (hot paths).
        self.max_key: int | None = scaps.max_key
        self.nul_ok: bool = scaps.keys_take_nul
        self._store_keys = scaps.limits_keys
        # A shared backend's clock (RedisBackend.versions) versions writes that reach the
        # store first, so stores apply them set-if-newer in the order they were accepted.
        self._clock: Callable[[int], list[int]] | None = (
            caps.clock.versions if caps.clock is not None and not caps.local
            and scaps.versioned else None)
        self.leases = Leases(self, caps.leases, caps.lease_ttl) if caps.leases else None
        #: copies a failed drop left in the backend: read from the store until dropped
        self.undropped = UndroppedCopies(backend.delete, lambda: self.closed)
        self._backend_logged = 0.0
        self.bind_get()

    def bind_get(self) -> None:
        """Choose this namespace's ``get`` (see :func:`fastpaths.choose_get`)."""
        self.get = fastpaths.choose_get(self)  # type: ignore[method-assign,assignment]

    # -- helpers ----------------------------------------------------------------------
    def closed_error(self) -> ClosedError:
        name = self.namespace or "default"
        return ClosedError(f"cache namespace {name!r} is closed")

    @staticmethod
    def stripe(bkey: str) -> int:
        return hash(bkey) & MASK

    def dumps(self, value: Any) -> bytes:
        try:
            return self.serializer.dumps(value)
        except SerializationError:
            raise
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(f"cannot serialize value: {exc}") from exc

    def decode(self, row: Loaded) -> tuple[Any, bytes | None]:
        value = row.value
        if value is NOTSET:
            assert row.payload is not None
            value = self.serializer.loads(row.payload)
        if self.codec is not None:
            value = self.codec.from_plain(value)
        return value, row.payload

    def can_fill(self, bkey: str, stripe: int, gen: int) -> bool:
        """May a fill of ``bkey`` that took token ``gen`` land (under :meth:`fill_lock`)?"""
        return self.gens[stripe] == gen

    def fill_lock(self, stripe: int) -> Any:
        """The lock a fill of a key of ``stripe`` checks its token under."""
        return self.locks[stripe]

    # -- reads ------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        """The general read: pending write, else the backend's copy, else the store."""
        if key.__class__ is not str:
            check_key(key)
        if self.closed:
            raise self.closed_error()
        if self.pending_entry is not None:
            entry = self.pending_entry(key)
            if entry is not None:
                self.counters.hits += 1
                return default if entry.kind == DELETE or self.ended(entry) else entry.value
        return self.read_backend(key, self.prefix + key, default)

    def cached(self, bkey: str) -> Any:
        """The backend's copy (counted as a hit), or MISS; a failing backend reads as a
        miss (the store still has the truth)."""
        undropped = self.undropped
        if undropped and bkey in undropped:
            return MISS  # the copy may be older than the store (see engine.undropped)
        try:
            value = self._backend_get(bkey)
        except BackendError as exc:
            return self.backend_down(exc)
        if value is not MISS:
            self.counters.hits += 1
        return value

    def read_backend(self, key: str, bkey: str, default: Any) -> Any:
        """The backend's answer, else the store's (read-through)."""
        if not key.isascii():
            check_key(key)  # a key no store can keep is refused, not "not found"
        value = self.cached(bkey)
        return value if value is not MISS else self.miss(key, bkey, default)

    def backend_down(self, exc: BackendError) -> Any:
        """A backend that fails a read makes it a miss: the store still has the truth."""
        now = time.monotonic()
        if now - self._backend_logged > 5.0:
            self._backend_logged = now
            log.warning("cacheway: backend read failed, reading the store instead: %s", exc)
        return MISS

    def miss(self, key: str, bkey: str, default: Any) -> Any:
        stripe = self.stripe(bkey)
        with self.flight_lock:
            gen = self.gens[stripe]
            flight, leader = self.flights.join(bkey, gen, threading.Event)
        self.counters.misses += 1
        if not leader:
            flight.waiter.wait()
            if flight.error is not None:
                raise StoreError(f"load of {key!r} failed: {flight.error}") from flight.error
            return flight.value if flight.found else default
        try:
            try:
                if self.leases is not None:
                    flight.found, flight.value = self.leases.load(key, bkey, stripe, gen)
                else:
                    flight.found, flight.value = self.load(key, bkey, stripe, gen, fill=True)
            except Exception as exc:
                stale = self.refresher.stale(key, bkey, exc)
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
            with self.flight_lock:
                self.flights.land(bkey, flight)
            flight.waiter.set()
        return flight.value if flight.found else default

    def fetch(self, key: str) -> Loaded | None:
        """The store's row of ``key`` (a load, counted)."""
        self.counters.loads += 1
        return self.fetch_rows([key]).get(key)

    def fetch_rows(self, keys: list[str]) -> dict[str, Loaded]:
        """The store's rows of ``keys`` (that exist) for a read; engines that know of
        writes the store has not seen yet leave out the rows those replaced."""
        return self.store.fetch(self.namespace, keys)

    def load(self, key: str, bkey: str, stripe: int, gen: int, *, fill: bool
             ) -> tuple[bool, Any]:
        started = time.monotonic()
        row = self.fetch(key)
        if row is None:
            return False, None
        value, payload = self.decode(row)
        if fill:
            self.fill(bkey, stripe, gen, value, payload, row.version,
                      time.monotonic() - started, row.expires_at)
        return True, value

    def fill(
        self, bkey: str, stripe: int, gen: int, value: Any, payload: bytes | None,
        version: int | None, delta: float = 0.0, expires_at: float | None = None,
    ) -> None:
        """Fill the copy of a loaded row (``expires_at``: when the row's data ends)."""
        ttl = self.fill_ttl_for(expires_at)
        if ttl is not None and ttl <= 0:
            return  # the row ended since it was read
        with self.fill_lock(stripe):
            if self.can_fill(bkey, stripe, gen):
                self.backend_set(bkey, value, payload, ttl, version, delta)

    def fill_ttl_for(self, expires_at: float | None) -> float | None:
        """The ttl of a fill of a row whose data ends at ``expires_at``."""
        if expires_at is None or self.expiry is None:
            return self.fill_ttl
        return self.expiry.left(self.fill_ttl, expires_at)

    def ended(self, entry: Entry) -> bool:
        """Whether a pending write's data has ended (expire=): it reads as absent."""
        return self.expiry is not None and self.expiry.ended(entry.expires_at)

    def expires_at(self) -> float | None:
        """The expiry stamp of a write accepted now (None: the namespace never expires)."""
        return None if self.expiry is None else self.expiry.stamp()

    def backend_set(
        self, bkey: str, value: Any, payload: bytes | None, ttl: float | None,
        version: int | None, delta: float = 0.0,
    ) -> None:
        """Set a cached copy; a failing backend loses the copy, never the write."""
        if self._jitter and ttl is not None:
            ttl *= 1.0 - self._jitter * self._rand()
        try:
            if self.refresher.meta:
                self.backend.set(bkey, value, payload, ttl, version,
                                 delta=delta)  # type: ignore[call-arg]
            else:
                self.backend.set(bkey, value, payload, ttl, version)
        except Exception as exc:  # noqa: BLE001 - any backend failure: drop the copy, keep the write
            log.warning("cacheway: backend set of %r failed (%r); dropping the copy", bkey, exc)
            self.backend_drop(bkey)

    def backend_drop(self, bkey: str, version: int | None = None) -> None:
        try:
            self.backend.delete(bkey, version)
        except Exception as exc:  # noqa: BLE001 - the copy may be stale: retried until dropped
            log.error("cacheway: backend delete of %r failed (%r); retrying it until the "
                      "backend takes it", bkey, exc)
            self.undropped.add(bkey, version)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        keys = check_keys(keys)
        if self.closed:
            raise self.closed_error()
        out: dict[str, Any] = {}
        prefix = self.prefix
        pending = self.pending_entry
        ask: list[str] = []  # not pending: the backend answers them in one call
        hits = 0
        for key in keys:
            if key.__class__ is not str:
                check_key(key)
            if pending is not None:
                entry = pending(key)
                if entry is not None:
                    hits += 1
                    if entry.kind != DELETE and not self.ended(entry):
                        out[key] = entry.value
                    continue
            ask.append(key)
        if ask:
            ask = list(dict.fromkeys(ask))
            bkeys = [prefix + k for k in ask]
            try:
                cached = self.backend.get_many(bkeys)
            except BackendError as exc:
                self.backend_down(exc)
                cached = {}
            undropped = self.undropped
            if undropped:  # copies that may be older than the store: load those
                cached = {b: v for b, v in cached.items() if b not in undropped}
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
        gens = {k: self.gens[self.stripe(prefix + k)] for k in missing}
        self.counters.misses += len(missing)
        self.counters.loads += 1
        try:
            rows = self.fetch_rows(missing)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"load of {len(missing)} keys failed: {exc!r}") from exc
        for key, row in rows.items():
            value, payload = self.decode(row)
            out[key] = value
            bkey = prefix + key
            self.fill(bkey, self.stripe(bkey), gens[key], value, payload, row.version,
                      0.0, row.expires_at)

    # -- fork -----------------------------------------------------------------------------
    def before_fork(self) -> None:
        """Called in the parent just before ``os.fork()`` (see cache.py)."""

    def after_fork_in_parent(self) -> None:
        """Called in the parent just after ``os.fork()``."""

    def after_fork_in_child(self) -> None:
        """Called in the child: the parent's other threads are gone, so nothing they held
        or were doing (stripe locks, single flights, refreshes) may be waited for."""
        self.locks = [threading.RLock() for _ in range(STRIPES)]
        self.flight_lock = threading.Lock()
        self.flights = Flights()
        self.refresher.after_fork_in_child()
        self.undropped.forget()  # the parent retries its own

    # -- invalidation ---------------------------------------------------------------------
    def invalidate(self, key: str) -> None:
        self.invalidate_many([key])

    def invalidate_many(self, keys: Iterable[str]) -> None:
        """Drop the cached copies of ``keys`` (the store keeps its rows): every level of
        the backend, and every process sharing it. A fill that loaded before the call
        stands down, so it cannot put back a copy read before the store changed."""
        bkeys = list(dict.fromkeys([self.prefix + check_key(k) for k in check_keys(keys)]))
        if self.closed:
            raise self.closed_error()
        if not bkeys:
            return
        for bkey in bkeys:
            stripe = self.stripe(bkey)
            with self.fill_lock(stripe):
                self.gens[stripe] += 1
        self.backend.delete_many(bkeys)

    # -- writes (the policy engines define them) ------------------------------------------
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
        self.refresher.stop()
