"""Write-through on the event loop: an AsyncCache over a store with an async path
(:mod:`cacheway._aio_path`, e.g. ``PostgresStore``) and a RedisBackend or a
process-local backend (MemoryBackend) writes without a worker thread.

A ``set`` does what :class:`cacheway.engine.write_through.WriteThroughEngine` does, in
the same order and with the engine's own pieces (``prepare`` checks and encodes at the
call, the key's stripe lock, fill tokens, counters):

1. versions from the Redis clock (the ``VERSIONS`` script of ``RedisBackend.versions``,
   with redis.asyncio; a Redis error makes the write unversioned, as in the engine);
2. the store write on the loop (``AsyncStorePath.aapply``: set-if-newer);
3. the copy: Redis's ``SET_IF_NEWER`` script with the store's version (or, on a local
   backend, ``Engine.backend_set`` inline: no I/O), after the stripe's fill token moved.
   A store failure drops the copies (outcome unknown); a failed copy is dropped.

Per-key order and fills: the write holds an asyncio lock of its stripe (tasks of this
front writing one stripe queue in call order) and the engine's threading stripe lock,
taken without blocking: when a worker thread holds it (a call that went the thread way,
a fill), the write goes the thread way too (``Cache.set`` in a worker thread), so no
thread ever waits for the loop and the loop never waits for a thread. A write runs to
its end once started, even when the awaiting task is cancelled (as a thread offload).

Also on the loop: read misses (:meth:`LoopWrites.load`; not with Redis leases),
``get_many`` (one MGET, one store load), and on a local backend deletes and write-around.
Not on the loop (the thread path, as before): deletes and write-around on Redis (a
versioned delete's tombstone lifetime is not public on RedisBackend), a two-level
backend, early refresh, counters.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._aio_path import AsyncStorePath, async_path_of, seen
from ._aio_redis import RedisWrites
from .backends.base import MISS
from .backends.redis import RedisBackend
from .backends.redis_format import HLEN, LEASE, NOT_FOUND, TOMBSTONE, VALUE, VALUE0, header
from .engine.write_through import WriteAroundEngine, WriteThroughEngine
from .errors import BackendError, StoreError
from .stores._aio_deadline import still_running
from .stores.base import DELETE, SET, Applied, Op

if TYPE_CHECKING:
    from ._aio_redis import LoopReader
    from .engine.read import Engine

__all__ = ["LoopWrites"]

log = logging.getLogger("cacheway")

Fallback = Callable[[], Awaitable[None]]
_Prepared = tuple[str, Any, "bytes | None", "float | None"]  # key, copy, payload, ttl


class LoopWrites:
    """Write-through ``set``/``set_many`` of one engine on the loop (see the module)."""

    def __init__(self, engine: Engine, path: AsyncStorePath, redis: RedisWrites | None
                 ) -> None:
        self.engine = engine
        self.path = path
        self._redis = redis
        caps = engine.backend_caps
        self._clock = redis is not None and caps.clock is not None and not caps.local
        self._locks: dict[int, asyncio.Lock] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inflight: set[asyncio.Future[None]] = set()  # writes under way
        #: write-around: a write drops the copy (local backends only, see build)
        self.drops = isinstance(engine, WriteAroundEngine)
        #: deletes run here too: on a local backend (on Redis a delete leaves a
        #: tombstone whose lifetime RedisBackend does not make public)
        self.deletes = redis is None
        #: misses load on the loop too (:meth:`load`): not with Redis leases (their
        #: markers' lifetimes are not public on RedisBackend) nor stale_if_error (its
        #: stale read is the backend's, synchronous)
        self.loads = engine.leases is None and engine.read_options.stale_if_error is None

    @classmethod
    def build(cls, engine: Engine, reader: LoopReader | None,
              path_of: Callable[[Any], AsyncStorePath | None] = async_path_of
              ) -> LoopWrites | None:
        """The loop writes of ``engine``, or None when its writes take the thread path.
        ``path_of(store)``: the store's async path (the AsyncCache asks once per store)."""
        if type(engine) not in (WriteThroughEngine, WriteAroundEngine) or engine.refresher.meta:
            return None
        if type(engine) is WriteAroundEngine and not engine.backend_caps.local:
            return None  # write-around on Redis drops copies with tombstones (see deletes)
        if not engine.store_caps.versioned or engine.expiry is not None:
            return None  # (expire=: stamped writes, fills that live what is left: threads)
        path = path_of(engine.store)
        if path is None:
            return None
        backend = engine.backend
        if engine.backend_caps.local:
            return cls(engine, path, None)
        if type(backend) is RedisBackend and reader is not None and reader.backend is backend:
            return cls(engine, path, RedisWrites(reader))
        return None  # a two-level backend, another shared backend: the thread path

    def after_fork_in_child(self) -> None:
        """In a forked child: the writes under way and the stripe locks at the fork were
        the parent loop's."""
        self._inflight = set()
        self._locks, self._loop = {}, None

    def _lock(self, stripe: int) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._locks, self._loop = {}, loop  # asyncio locks belong to one loop
        lock = self._locks.get(stripe)
        if lock is None:
            lock = self._locks[stripe] = asyncio.Lock()
        return lock

    async def drain(self) -> None:
        """Return when every write under way has ended (the AsyncCache closes after)."""
        while self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    async def set(self, key: str, value: Any, ttl: float | None, fallback: Fallback) -> None:
        """``Engine.set`` on the loop (``fallback``: the same call in a worker thread)."""
        prepared: list[_Prepared] = [self.engine.prepare(key, value, ttl)]  # bad input raises
        await self._shielded(SET, prepared, fallback)

    async def set_many(self, mapping: Mapping[str, Any], ttl: float | None,
                       fallback: Fallback) -> None:
        """``Engine.set_many`` on the loop: one store transaction, pipelined copies."""
        prepared: list[_Prepared] = [self.engine.prepare(k, v, ttl) for k, v in mapping.items()]
        if prepared:
            await self._shielded(SET, prepared, fallback)

    async def delete_many(self, keys: list[Any], fallback: Fallback) -> None:
        """``Engine.delete_many`` on the loop (only over a local backend: see
        :attr:`deletes`)."""
        engine = self.engine
        ks = list(dict.fromkeys(engine.check_write_key(k) for k in keys))  # raises here
        if engine.closed:
            raise engine.closed_error()
        if ks:
            await self._shielded(DELETE, [(k, None, None, None) for k in ks], fallback)

    async def _shielded(self, kind: int, prepared: list[_Prepared], fallback: Fallback
                        ) -> None:
        # Once started a write runs to its end (a cancelled caller must not leave the
        # store written and an older copy in the backend).
        task = asyncio.ensure_future(self._write(kind, prepared, fallback))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(seen)  # the caller left: nobody else looks
            raise

    async def _write(self, kind: int, prepared: list[_Prepared], fallback: Fallback
                     ) -> None:
        engine = self.engine
        bkeys = [engine.prefix + k for k, _, _, _ in prepared]
        stripes = sorted({engine.stripe(b) for b in bkeys})
        alocks = [self._lock(s) for s in stripes]
        for alock in alocks:
            await alock.acquire()
        taken: list[Any] = []
        try:
            for s in stripes:
                rlock = engine.locks[s]
                if not rlock.acquire(blocking=False):
                    break  # a worker thread holds it: the thread way, after it
                taken.append(rlock)
            if len(taken) < len(stripes):
                for rlock in reversed(taken):
                    rlock.release()
                taken = []
                await fallback()
                return
            try:
                await self._write_locked(kind, prepared, bkeys)
            except BaseException as exc:
                running = still_running(exc)
                if running is not None:
                    # The store call timed out and still ends in the background (its
                    # write may yet land): the keys stay locked until it has ended, so
                    # no later write of them can be overtaken by it.
                    held, taken, alocks = (taken, alocks), [], []
                    running.add_done_callback(lambda _: _release(*held))
                raise
        finally:
            _release(taken, alocks)

    async def _write_locked(self, kind: int, prepared: list[_Prepared], bkeys: list[str]
                            ) -> None:
        engine = self.engine
        ns = engine.namespace
        ops = [Op(ns, k, kind, p, 0, v) for k, v, p, _ in prepared]
        if self._clock:
            assert self._redis is not None
            try:
                versions = await self._redis.versions(len(ops))
                ops = [op._replace(version=v) for op, v in zip(ops, versions)]
            except BackendError as exc:
                engine.backend_down(exc)  # unversioned: the store stamps them
        results = await self._apply(ops, bkeys)
        engine.counters.writes += len(ops)
        await self._publish(kind, prepared, bkeys, results)

    async def _apply(self, ops: list[Op], bkeys: list[str]) -> list[Applied]:
        engine = self.engine
        try:
            if self.path.takes(ops):
                results = await self.path.aapply(ops)
            else:  # a batch the path does not take (never for these sets)
                results = await asyncio.to_thread(engine.store.apply, ops)
        except Exception as exc:
            # The outcome is unknown: whatever the store did, no stale copy may stay.
            for bkey in bkeys:
                engine.gens[engine.stripe(bkey)] += 1
            await self._drop(bkeys)
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"store write failed: {exc!r}") from exc
        engine.counters.store_writes += len(ops)
        return results

    async def _publish(self, kind: int, prepared: list[_Prepared], bkeys: list[str],
                       results: list[Applied]) -> None:
        engine = self.engine
        items: list[tuple[str, bytes | None, float | None, int | None]] = []
        for (_, value, payload, ttl), bkey, res in zip(prepared, bkeys, results):
            if not res.applied:
                continue  # the store kept a newer write (another process's): so does Redis
            engine.gens[engine.stripe(bkey)] += 1
            if self._redis is None:  # local: no I/O
                if kind == DELETE or self.drops:
                    engine.backend_drop(bkey, res.version)
                else:
                    engine.backend_set(bkey, value, payload, ttl, res.version)
                continue
            items.append((bkey, payload, ttl, res.version))
        if items:
            await self._copies(items)

    async def _copies(self, copies: list[tuple[str, bytes | None, float | None, int | None]]
                      ) -> None:
        """Redis copies ``(bkey, payload, ttl, version)``, as ``Engine.backend_set``
        makes them (ttl jitter; a failed set drops the copies)."""
        assert self._redis is not None
        opts = self.engine.read_options
        items: list[tuple[str, bytes, bytes, float | None]] = []
        for bkey, payload, ttl, version in copies:
            if opts.ttl_jitter and ttl is not None:
                ttl *= 1.0 - opts.ttl_jitter * opts.rand()
            assert payload is not None  # the engine's encoding, or the store's bytes
            items.append((bkey, header(version, VALUE) if version else VALUE0, payload, ttl))
        try:
            await self._redis.set_many(items)
        except BackendError as exc:
            log.warning("cacheway: backend set of %d keys failed (%r); dropping the copies",
                        len(items), exc)
            await self._drop([it[0] for it in items])

    async def load(self, key: str) -> Any:
        """The store's value of ``key`` after a backend miss, filled into the backend
        as ``Engine.miss`` fills it (fill token taken before the load), or MISS when
        the store has none. Tasks share one call per key (``AsyncFront.get``)."""
        engine = self.engine
        bkey = engine.prefix + key
        stripe = engine.stripe(bkey)
        gen = engine.gens[stripe]  # a write from now on bumps it: the fill stands down
        engine.counters.misses += 1
        engine.counters.loads += 1
        try:
            row = (await self.path.afetch(engine.namespace, [key])).get(key)
            if row is None:
                return MISS
            value, payload = engine.decode(row)
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"load of {key!r} failed: {exc!r}") from exc
        lock = engine.fill_lock(stripe)
        if not lock.acquire(blocking=False):
            return value  # a worker thread writes this stripe: no fill (always safe)
        try:
            if not engine.can_fill(bkey, stripe, gen):
                return value
            if self._redis is None:  # local: no I/O
                engine.backend_set(bkey, value, payload, engine.fill_ttl, row.version)
                return value
        finally:
            lock.release()
        # Set-if-newer with the row's version: a write that lands meanwhile is newer.
        await self._copies([(bkey, payload, engine.fill_ttl, row.version)])
        return value

    async def get_many(self, keys: list[str]) -> dict[str, Any] | None:
        """``Engine.get_many`` on the loop (one MGET, one store load for the misses,
        filled as the engine fills a load of many keys), or None when the call needs the
        thread path: a key to check, a closed namespace, an entry that is not a plain
        value or a marker (the thread path counts it). No leases, as in the engine."""
        engine = self.engine
        if engine.closed or any(
                k.__class__ is not str or not k.isascii() for k in keys):
            return None
        ask = list(dict.fromkeys(keys))
        bkeys = [engine.prefix + k for k in ask]
        if self._redis is None:  # local: no I/O
            cached = engine.backend.get_many(bkeys)
        else:
            try:
                raws = await self._redis.mget(bkeys)
            except BackendError as exc:
                engine.backend_down(exc)
                raws = [None] * len(bkeys)
            cached = {}
            loads, codec = self._redis.loads, engine.codec
            for bkey, raw in zip(bkeys, raws):
                if raw is None or (len(raw) == HLEN and raw[8] == TOMBSTONE) or (
                        len(raw) >= HLEN and raw[8] in (LEASE, NOT_FOUND)):
                    continue
                if len(raw) <= HLEN or raw[8] != VALUE:
                    return None
                try:
                    value = loads(raw[HLEN:])
                    cached[bkey] = value if codec is None else codec.from_plain(value)
                except Exception:  # noqa: BLE001 - the thread path counts and logs bad bytes
                    return None
        undropped = engine.undropped
        out: dict[str, Any] = {}
        missing: list[str] = []
        for key, bkey in zip(ask, bkeys):
            # a copy a failed drop left may be older than the store (engine.undropped)
            value = MISS if undropped and bkey in undropped else cached.get(bkey, MISS)
            if value is MISS:
                missing.append(key)
            else:
                out[key] = value
        engine.counters.hits += len(out)
        if missing:
            await self._load_many(missing, out)
        return out

    async def _load_many(self, missing: list[str], out: dict[str, Any]) -> None:
        engine = self.engine
        prefix = engine.prefix
        # Fill tokens first: a write from now on makes the fill of its key stand down.
        gens = {k: engine.gens[engine.stripe(prefix + k)] for k in missing}
        engine.counters.misses += len(missing)
        engine.counters.loads += 1
        try:
            rows = await self.path.afetch(engine.namespace, missing)
            decoded = {k: (*engine.decode(row), row.version) for k, row in rows.items()}
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"load of {len(missing)} keys failed: {exc!r}") from exc
        copies: list[tuple[str, bytes | None, float | None, int | None]] = []
        for key, (value, payload, version) in decoded.items():
            out[key] = value
            bkey = prefix + key
            stripe = engine.stripe(bkey)
            lock = engine.fill_lock(stripe)
            if not lock.acquire(blocking=False):
                continue  # a worker thread writes this stripe: no fill (always safe)
            try:
                if not engine.can_fill(bkey, stripe, gens[key]):
                    continue
                if self._redis is None:  # local: no I/O
                    engine.backend_set(bkey, value, payload, engine.fill_ttl, version)
                else:
                    copies.append((bkey, payload, engine.fill_ttl, version))
            finally:
                lock.release()
        if copies:  # set-if-newer with the rows' versions: a write meanwhile is newer
            await self._copies(copies)

    async def _drop(self, bkeys: list[str]) -> None:
        if self._redis is None:
            for bkey in bkeys:
                self.engine.backend_drop(bkey)  # local: no I/O
        elif not await self._redis.drop(bkeys):
            for bkey in bkeys:
                self.engine.undropped.add(bkey, None)


def _release(rlocks: list[Any], alocks: list[asyncio.Lock]) -> None:
    for rlock in reversed(rlocks):
        rlock.release()
    for alock in reversed(alocks):
        alock.release()


