"""Cache: the facade users hold. It routes each namespace to its policy's engine.

>>> import tempfile, os, cacheway as cw
>>> path = os.path.join(tempfile.mkdtemp(), "app.db")
>>> with cw.Cache(store=cw.SQLiteStore(path), policy=cw.WriteBack(max_delay=0.1)) as cache:
...     cache.set("user:1", {"name": "Ada"})
...     cache.get("user:1")
{'name': 'Ada'}
"""

from __future__ import annotations

import atexit
import builtins
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from typing import Any, overload

from ._checks import check_backend, check_expires, check_store
from ._front import Front, V
from ._lifecycle import OPEN
from ._refresh import ReadOptions
from ._snapshot import snapshot
from .backends.base import Backend, backend_capabilities
from .backends.memory import MemoryBackend
from .core.keys import check_ttl
from .engine.expiry import Purger, check_expire
from .engine.read import Engine
from .engine.write_through import WriteAroundEngine, WriteThroughEngine
from .errors import CachewayError, ClosedError, ConfigError, StoreError
from .policies import Policy, WriteAround, WriteBack, WriteThrough
from .serializers import Serializer
from .stats import Counters, Stats
from .stores.base import Store
from .typed import Codec, codec_for

__all__ = ["Cache", "Namespace"]

log = logging.getLogger("cacheway")

_NS_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_UNSET: Any = object()


class Namespace(Front[V]):
    """A named slice of a cache's keys with its own policy and ttl (and maybe store)."""

    def __init__(self, cache: Cache, name: str, engine: Engine, policy: Policy,
                 ttl: float | None, store: Store) -> None:
        self.cache = cache
        self.name = name
        self.policy = policy
        self.ttl = ttl
        self.store = store
        #: seconds the data lives after its last write (``namespace(name, expire=...)``),
        #: in the cache and the store; None: it never ends
        self.expire = None if engine.expiry is None else engine.expiry.seconds
        #: the type a typed namespace keeps (``namespace(name, type=...)``), else None
        self.type = engine.codec.kind if engine.codec is not None else None
        self._bind(engine)

    def __repr__(self) -> str:
        return f"<cacheway.Namespace {self.name!r} policy={self.policy.name}>"

    def after_fork_in_child(self, engine: Engine) -> None:
        """In the child of a fork: serve from the engine the child has now."""
        self._bind(engine)

    def flush(self, timeout: float | None = None) -> None:
        """Write this namespace's dirty entries to the store (see ``Cache.flush``)."""
        self._engine.flush(timeout)

    def pending(self) -> int:
        """Dirty entries of this namespace not yet in the store."""
        return self._engine.pending()

    def stats(self, *, wait: float | None = None) -> Stats:
        """Counters of this namespace alone (``wait``: see :meth:`Cache.stats`)."""
        return snapshot([self._engine], self.cache.backend, wait)

    def namespace(self, name: str, **kwargs: Any) -> Namespace[Any]:
        """Namespaces are flat: ``ns.namespace(x)`` is ``cache.namespace(x)``."""
        return self.cache.namespace(name, **kwargs)

    def close(self, timeout: float | None = None) -> None:
        """Flush and stop this namespace; the cache's other namespaces go on."""
        self._engine.close(timeout)

    def __enter__(self) -> Namespace[V]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Cache(Front[Any]):
    """A cache in front of ``store`` with ``backend`` copies and a write ``policy``.

    ``ttl`` is the default lifetime (seconds) of cached copies. ``serializer`` turns
    values into the bytes the store, journal and shared backends keep (JSON by default:
    the store's own). ``timer`` (``time.monotonic``) drives write-back deadlines.

    Read-through options (every namespace): ``early_refresh=beta`` reloads hot entries
    in the background shortly before they expire (XFetch; 1.0 is the usual beta),
    ``stale_if_error=seconds`` serves a copy that expired less than that long ago when
    the store fails, ``ttl_jitter=fraction`` shortens each copy's ttl by a random share
    up to it so that copies written together do not expire together. ``random``
    (``random.random``) is injectable for tests. The first two need a MemoryBackend.
    """

    def __init__(
        self,
        store: Store,
        backend: Backend | None = None,
        policy: Policy | None = None,
        ttl: float | None = None,
        *,
        serializer: Serializer | None = None,
        timer: Callable[[], float] = time.monotonic,
        early_refresh: float | None = None,
        stale_if_error: float | None = None,
        ttl_jitter: float = 0.0,
        random: Callable[[], float] | None = None,
    ) -> None:
        check_store(store)
        if backend is None:
            backend = MemoryBackend()
        check_backend(backend)
        if policy is None:
            policy = WriteThrough()
        if not isinstance(policy, Policy):
            raise ConfigError(
                f"policy must be cw.WriteThrough(), cw.WriteBack() or cw.WriteAround(), "
                f"not {policy!r}"
            )
        self.store = store
        self.backend = backend
        self.policy = policy
        self.ttl = check_ttl(ttl)
        self.serializer: Serializer = serializer if serializer is not None else store.serializer
        caps = backend_capabilities(backend)
        if caps.serializer is not None:  # a remote backend keeps the same bytes as the store
            caps.serializer.bind_serializer(self.serializer)
        self._timer = timer
        self._read = ReadOptions(early_refresh, stale_if_error, ttl_jitter,
                                 *(() if random is None else (random,)))
        self._lock = threading.Lock()
        self._closed = False
        self._owned: list[Any] = []  # what open() built from URLs; closed with the cache
        #: deletes the expired rows of namespaces with expire= (started by the first)
        self._purger = Purger(interval=60.0)
        self._journals: list[Any] = []
        self._engines: dict[str, Engine] = {}
        self._namespaces: dict[str, Namespace[Any]] = {}
        self._counters: list[Counters] = []
        self._bind(self._engine_for("", policy, self.ttl, store))
        OPEN.add(self)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<cacheway.Cache {self.policy.name} store={self.store!r} ({state})>"

    # -- engines ----------------------------------------------------------------------
    def _engine_for(self, name: str, policy: Policy, ttl: float | None, store: Store,
                    codec: Codec[Any] | None = None, expire: float | None = None) -> Engine:
        counters = Counters()
        engine: Engine
        if expire is not None:
            check_expires(store)
        if isinstance(policy, WriteBack) and policy.queue is not None:
            from .queue import QueueWriteBackEngine  # distributed write-behind (Streams)

            engine = QueueWriteBackEngine(
                name, store, self.backend, self.serializer, ttl, counters, policy,
                timer=self._timer, read=self._read, codec=codec, expire=expire,
            )
        elif isinstance(policy, WriteBack):
            journal = self._open_journal(name, policy, store)
            from .engine.write_back import WriteBackEngine

            engine = WriteBackEngine(
                name, store, self.backend, self.serializer, ttl, counters, policy,
                journal=journal, timer=self._timer, read=self._read, codec=codec,
                expire=expire,
            )
        elif isinstance(policy, WriteAround):
            engine = WriteAroundEngine(
                name, store, self.backend, self.serializer, ttl, counters,
                fill_ttl=policy.fill_ttl, read=self._read, codec=codec, expire=expire,
            )
        elif isinstance(policy, WriteThrough):
            engine = WriteThroughEngine(name, store, self.backend, self.serializer, ttl, counters,
                                        read=self._read, codec=codec, expire=expire)
        else:
            raise ConfigError(f"unknown policy {policy!r}")
        self._engines[name] = engine
        self._counters.append(counters)
        if expire is not None:
            self._purger.add(store, expire)
        return engine

    def _open_journal(self, name: str, policy: WriteBack, store: Store) -> Any:
        path, fsync = policy.journal, policy.fsync
        wb = self.policy if isinstance(self.policy, WriteBack) else None
        shared = None if wb is None or wb.journal is None else os.fspath(wb.journal)
        if wb is not None and shared is not None and name and (
                path is None or os.fspath(path) == shared):
            # A journalled cache journals each write-back namespace to PATH.<name>.
            fsync = wb.fsync if path is None else fsync
            path = f"{shared}.{name}"
        if path is None:
            return None
        from .writeback.recovery import open_replayed

        journal = open_replayed(os.fspath(path), fsync, store, namespace=name,
                                cache_store=store is self.store, batch_size=policy.batch_size,
                                on_dead_letter=policy.on_dead_letter, backend=self.backend)
        self._journals.append(journal)
        return journal

    # -- namespaces ---------------------------------------------------------------------
    @overload
    def namespace(
        self, name: str, *, policy: Policy | None = None, ttl: float | None = _UNSET,
        store: Store | None = None, expire: float | None = None,
        type: None = None,
    ) -> Namespace[Any]: ...

    @overload
    def namespace(
        self, name: str, *, policy: Policy | None = None, ttl: float | None = _UNSET,
        store: Store | None = None, expire: float | None = None,
        type: builtins.type[V],
    ) -> Namespace[V]: ...

    def namespace(
        self, name: str, *, policy: Policy | None = None, ttl: float | None = _UNSET,
        store: Store | None = None, expire: float | None = None, type: Any = None,
    ) -> Namespace[Any]:
        """A view of the keys under ``name`` with its own policy/ttl (inherited unless
        given) and optionally its own store. Asking again for a name returns the same view.

        ``type=`` (a dataclass, ``msgspec.Struct``, ``TypedDict`` or pydantic model) makes
        it a typed namespace: ``set`` takes only that type, ``get`` returns it from every
        level, and the store keeps its plain form (see :mod:`cacheway.typed`).

        ``expire=seconds`` ends the *data* that long after its last write, in the cache
        and in the store alike (``ttl`` is the cached copy's lifetime only): reads after
        it return the default, a counter starts again from 0, and the store's expired
        rows are deleted in the background. It needs a store with an expiry column (the
        key/value tables of SQLiteStore, PostgresStore and SQLAlchemyStore).

        >>> import cacheway as cw
        >>> cache = cw.Cache(store=cw.CallbackStore(lambda k: {}, print, print))
        >>> views = cache.namespace("views", ttl=60)
        >>> views.set("a", 1)
        [('views:a', 1)]
        """
        if not isinstance(name, str) or not _NS_NAME.fullmatch(name):
            raise ConfigError(
                f"namespace name {name!r} must be 1-64 letters, digits, '_', '-' or '.'"
            )
        if policy is not None and not isinstance(policy, Policy):
            raise ConfigError(f"policy must be a write policy, not {policy!r}")
        if store is not None:
            check_store(store)
        expire_ = None if expire is None else check_expire(expire)
        codec = codec_for(type) if type is not None else None
        with self._lock:
            if self._closed:
                raise ClosedError("cache is closed")
            existing = self._namespaces.get(name)
            if existing is not None:
                if (policy is not None and policy != existing.policy) or (
                    ttl is not _UNSET and ttl != existing.ttl) or (
                    store is not None and store is not existing.store) or (
                    type is not None and type is not existing.type) or (
                    expire_ is not None and expire_ != existing.expire):
                    raise ConfigError(
                        f"namespace {name!r} already exists with policy "
                        f"{existing.policy!r}, ttl={existing.ttl}, expire={existing.expire}; "
                        "open it without options"
                    )
                return existing
            pol = policy if policy is not None else self.policy
            ttl_ = self.ttl if ttl is _UNSET else check_ttl(ttl)
            st = store if store is not None else self.store
            engine = self._engine_for(name, pol, ttl_, st, codec, expire_)
            view: Namespace[Any] = Namespace(self, name, engine, pol, ttl_, st)
            self._namespaces[name] = view
            return view

    def namespaces(self) -> dict[str, Namespace[Any]]:
        """Every namespace's view by name, the default namespace first under ``""``: a
        view of its own, whose ``stats()`` count the default namespace alone (where
        ``cache.stats()`` counts them all). For exporters such as ``cacheway.metrics``.

        >>> import cacheway as cw
        >>> cache = cw.Cache(store=cw.SQLiteStore(":memory:"))
        >>> views = cache.namespace("views")
        >>> sorted(cache.namespaces()), cache.namespaces()["views"] is views
        (['', 'views'], True)
        >>> cache.close()
        """
        with self._lock:
            named = dict(self._namespaces)
        default: Namespace[Any] = Namespace(self, "", self._engines[""], self.policy, self.ttl,
                                            self.store)
        return {"": default, **named}

    # -- whole-cache operations -----------------------------------------------------------
    def flush(self, timeout: float | None = None) -> None:
        """Return when every write accepted before the call (in every namespace) is in the
        store. Raises :class:`StoreError` saying how many entries are left only when
        ``timeout`` passes first; failed attempts that a retry fixes do not raise."""
        deadline = None if timeout is None else time.monotonic() + timeout
        failed: list[tuple[Engine, StoreError]] = []
        for engine in list(self._engines.values()):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                engine.flush(remaining)
            except StoreError as exc:  # the count must cover every namespace
                failed.append((engine, exc))
        if len(failed) == 1:
            raise failed[0][1]
        if failed:
            left = {e.namespace or "default": e.pending() for e, _ in failed}
            each = ", ".join(f"namespace {n!r}: {c}" for n, c in left.items())
            raise StoreError(f"flush did not finish: {sum(left.values())} entries are still "
                             f"dirty ({each}); first error: {failed[0][1]}") from failed[0][1]

    def pending(self) -> int:
        """Dirty entries (all namespaces) not yet acknowledged by the store."""
        return sum(e.pending() for e in list(self._engines.values()))

    def stats(self, *, wait: float | None = None) -> Stats:
        """A :class:`Stats` snapshot over every namespace (``wait``: seconds at most for a
        queue's depth from Redis, else its last reading)."""
        return snapshot(list(self._engines.values()), self.backend, wait)

    @property
    def read_options(self) -> ReadOptions:
        """The read-through options every namespace uses (early refresh, stale-if-error,
        ttl jitter)."""
        return self._read

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def journalled(self) -> bool:
        """True when every write-back namespace keeps what it accepted outside the process
        (a journal, or a Redis queue), so nothing is lost when a flush cannot finish."""
        return len(self._journals) == sum(
            isinstance(ns.policy, WriteBack) and ns.policy.queue is None
            for ns in self._views())

    def _views(self) -> list[Any]:
        return [self, *self._namespaces.values()]

    def engines(self) -> list[Engine]:
        """The engine of each namespace (the default one first)."""
        return list(self._engines.values())

    def after_fork_in_child(self) -> None:
        """In the child of a fork: each engine gets its own flusher and journal (see
        WriteBackEngine.after_fork_in_child), and the views their new hot paths."""
        self._lock = threading.Lock()
        failed: list[BaseException] = []
        for engine in self.engines():  # every one, whatever another raised: each holds
            try:                       # its table lock from the parent's before-fork hook
                engine.after_fork_in_child()
            except Exception as exc:  # noqa: BLE001 - raised below, once all are done
                failed.append(exc)
        self._bind(self._engines[""])
        for name, view in self._namespaces.items():
            view.after_fork_in_child(self._engines[name])
        self._journals = [j for j in (getattr(e, "journal", None) for e in self.engines())
                          if j is not None]
        if failed:
            raise failed[0]

    def close(self, timeout: float | None = None) -> None:
        """Flush every namespace (``flush(timeout)``), stop the flushers and close what
        this cache built from URLs. On a timeout it raises; the journal keeps the rest."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        OPEN.discard(self)
        self._purger.stop()
        deadline = None if timeout is None else time.monotonic() + timeout
        error: BaseException | None = None
        for engine in list(self._engines.values()):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                engine.close(remaining)
            except Exception as exc:  # noqa: BLE001 - close the rest, then raise the first
                error = error or exc
        for journal in self._journals:
            journal.close()
        for resource in self._owned:
            resource.close()
        if error is not None:
            raise error

    def purge_expired(self) -> int:
        """Delete the expired rows of every namespace with ``expire=`` now (a background
        thread does it too, every ``expire / 4`` seconds, at least 0.5 s and at most 60 s
        apart); how many rows it deleted."""
        if self._closed:
            raise ClosedError("cache is closed")
        return self._purger.purge()

    def close_with(self, *resources: Any) -> None:
        """Close ``resources`` (anything with ``close()``: a pool, a client) when this
        cache closes, after its last flush; ``cw.open`` hands over what it built."""
        self._owned.extend(resources)

    def __enter__(self) -> Cache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: Seconds the exit hook spends flushing caches that were never closed, all together: a
#: store that is down must not hold the process's exit for long.
EXIT_FLUSH_TIMEOUT = 10.0


@atexit.register
def _close_forgotten() -> None:
    """Flush caches the user forgot to close, so write-back data is not lost at exit;
    what is still dirty after EXIT_FLUSH_TIMEOUT seconds is logged (and kept by the
    journal, when there is one)."""
    deadline = time.monotonic() + EXIT_FLUSH_TIMEOUT
    for cache in list(OPEN):
        try:
            cache.close(timeout=max(0.0, deadline - time.monotonic()))
        except CachewayError as exc:
            fate = ("the journal (or the Redis queue) keeps them for the next start or a "
                    "worker" if cache.journalled else "they are lost (no journal)")
            log.error("cacheway: at exit, %r could not flush within %g s: %s; %s",
                      cache, EXIT_FLUSH_TIMEOUT, exc, fate)
