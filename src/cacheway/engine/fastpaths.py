"""The only place that inlines a backend's hit or set (and so the one to read first
when a hot path looks wrong).

Each fast path reads and writes the dicts a :class:`~cacheway.backends.memory.MemoryBackend`
(or a two-level backend's L1) declares through its view (``fast_view(namespace)``, a
:class:`MemoryView`): ``data`` maps a key to ``(value, expires_at or None, size charged,
loaded_at)``; ``namespaced`` data holds one namespace keyed without ``"ns:"`` (an
unbounded backend); ``ordered`` data is an LRU ``OrderedDict`` whose hits move to its end;
``gate`` (two-level) says whether the L1 may answer. A backend whose class overrides
``get`` or ``set`` declares no view, and its own methods run.

What each inlining buys, measured with ``python bench/fastpaths.py`` (the same cache with
and without the view, interleaved rounds, A/A 0.99x) on this project's 2-core machine,
2026-12-06:

* memory hit (:func:`memory_get`): 89 ns inlined vs 393 ns through ``Engine.get`` ->
  ``MemoryBackend.get`` (0.22x: a dict lookup and a clock read are the whole hit; the
  calls, the pending check and the "ns:" join were most of its time);
* write-back set (:func:`staged_set`): 1.10 us staged vs 2.58 us through the dirty
  table and ``MemoryBackend.set`` (0.46x: no Entry object, one lock round, see
  core/dirty.py "staged").

Everything else (misses, shared backends, journals, byte-counted backends, early refresh)
runs the general paths in :mod:`.read`, :mod:`.write_through` and :mod:`.write_back`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..backends.base import MISS, MemoryView
from ..core.keys import check_ttl

if TYPE_CHECKING:
    from .read import Engine
    from .write_back import WriteBackEngine

__all__ = ["MemoryView", "choose_get", "local_view", "memory_peek", "staged_set"]

Get = Callable[[str, Any], Any]


def view_of(engine: Engine) -> MemoryView | None:
    """The view ``engine``'s backend declares for its namespace, if any."""
    fast = engine.backend_caps.fast
    return fast.fast_view(engine.namespace) if fast is not None else None


def choose_get(engine: Engine) -> Get:
    """The ``get`` of ``engine``'s namespace: early refresh; an inlined hit of its
    backend's view; else the general :meth:`Engine.get`."""
    if engine.read_options.early_refresh is not None:
        return engine.refresher.early_get()
    view = view_of(engine)
    general: Get = type(engine).get.__get__(engine)
    if view is None:
        return general
    if view.gate is not None:
        return general if engine.pending_entry is not None else _gated_get(engine, view)
    return memory_get(engine, view, general)


def local_view(engine: Engine) -> MemoryView | None:
    """The memory view a write-back engine shares a lock with and stages writes into
    (none under early refresh, whose fills keep load times, or on a two-level L1)."""
    if engine.read_options.early_refresh is not None:
        return None
    view = view_of(engine)
    return view if view is not None and view.gate is None else None


def memory_get(engine: Engine, view: MemoryView, general: Get) -> Get:
    """A hit on the view's dict; anything else goes the general way. Under write-back the
    copy comes first too: every accepted write sets or drops it under the table lock and
    no fill lands while its key is pending, so a live copy is the newest value; a
    pending key without one (evicted, expired, deleted) is answered by ``general``."""
    data: Any = view.data  # an OrderedDict where the view is ordered
    timer, counters, prefix = view.timer, engine.counters, engine.prefix

    if view.namespaced:
        def get(key: str, default: Any = None) -> Any:
            if key.__class__ is str and not engine.closed:
                item = data.get(key)
                if item is not None and (item[1] is None or item[1] > timer()):
                    counters.hits += 1
                    return item[0]
            return general(key, default)

        return get

    def get_lru(key: str, default: Any = None) -> Any:
        if key.__class__ is str and not engine.closed:
            bkey = prefix + key
            item = data.get(bkey)
            if item is not None and (item[1] is None or item[1] > timer()):
                try:  # noqa: SIM105 - evicted since the lookup: still this hit's value
                    data.move_to_end(bkey)
                except KeyError:
                    pass
                counters.hits += 1
                return item[0]
        return general(key, default)

    return get_lru


def _gated_get(engine: Engine, view: MemoryView) -> Get:
    """:func:`memory_get` of a two-level backend's L1, while its invalidations flow."""
    gate = view.gate
    assert gate is not None
    data: Any = view.data  # an OrderedDict where the view is ordered
    timer, counters, prefix = view.timer, engine.counters, engine.prefix
    general: Get = type(engine).get.__get__(engine)

    def get(key: str, default: Any = None) -> Any:
        if key.__class__ is str and not engine.closed and gate.open:
            bkey = prefix + key
            item = data.get(bkey)
            if item is not None and (item[1] is None or item[1] > timer()):
                try:  # noqa: SIM105 - as in memory_get
                    data.move_to_end(bkey)
                except KeyError:
                    pass
                counters.hits += 1
                return item[0]
        return general(key, default)

    return get


def memory_peek(engine: Engine) -> Callable[[str], Any] | None:
    """The asyncio front's hit: ``engine``'s live copy in its memory view (a two-level
    L1 while its gate is open, and then only where no write can be pending), counted as
    a hit, or MISS (the call then goes the general way)."""
    view = view_of(engine)
    if view is None or (view.gate is not None and engine.pending_entry is not None):
        return None
    data: Any = view.data
    timer, counters, gate = view.timer, engine.counters, view.gate
    prefix = "" if view.namespaced else engine.prefix
    ordered = view.ordered

    def hit(key: str) -> Any:
        if key.__class__ is not str or engine.closed or (gate is not None and not gate.open):
            return MISS  # the general path raises the right error, or reads the L2
        bkey = prefix + key
        item = data.get(bkey)
        if item is None or not (item[1] is None or item[1] > timer()):
            return MISS
        if ordered:
            try:  # noqa: SIM105 - as in memory_get
                data.move_to_end(bkey)
            except KeyError:
                pass
        counters.hits += 1
        return item[0]

    return hit


def staged_set(engine: WriteBackEngine, view: MemoryView) -> Callable[..., None]:
    """The hot path of a write-back ``set``: stage the write and set the memory copy,
    under one lock; the staged write reaches the dirty table at its next operation
    (DirtyTable.drain). A closure, because it reads its variables faster than a method
    reads attributes (and acquire/release cost less than ``with``). Only for a view
    without byte accounting, and an engine without a journal or a row-mode store."""
    acquire, release = engine.lock.acquire, engine.lock.release
    cond, table = engine.cond, engine.table
    staged = table.staged
    extend = staged.extend
    encode = engine.encode
    prefix, default_ttl = engine.prefix, engine.ttl
    mem: Any = view.data
    space, mem_timer = view.namespaced, view.timer
    mem_max, evict = view.max_entries, view.evict
    timer, last, unstaged = engine.timer, (engine.config.batch_size - 1) * 4, engine.set_unstaged
    max_key, nul_ok, check = engine.max_key, engine.nul_ok, engine.check_write_key
    flusher = engine.flusher

    def set(key: str, value: Any, ttl: float | None = None) -> None:
        if key.__class__ is not str or not key.isascii() or (
                max_key is not None and len(key) > max_key) or (
                not nul_ok and "\x00" in key):
            check(key)
        # The copy, not the caller's object: what the store would give back, and
        # immune to the caller changing the object later (value fidelity).
        payload, value = encode(value)
        ttl = default_ttl if ttl is None else check_ttl(ttl)
        acquire()
        try:
            n = len(staged)  # four slots per write
            if n < table.stage_cap:
                extend((key, value, payload, ttl))
                # MemoryBackend.set inlined (no max_bytes: sizes are not kept).
                item = (value, None if ttl is None else mem_timer() + ttl, 0, 0.0)
                if space:
                    mem[key] = item
                else:
                    bkey = prefix + key
                    old = mem.get(bkey)
                    mem[bkey] = item
                    if old is not None:
                        mem.move_to_end(bkey)
                    elif mem_max is not None and len(mem) > mem_max:
                        evict()
                if n == 0:
                    table.staged_born = timer()
                    if flusher.idle:
                        cond.notify_all()  # start the max_delay clock
                elif n == last:
                    cond.notify_all()  # a batch is ready
                return
        finally:
            release()
        unstaged(key, value, payload, ttl)

    return set

