"""The workload runner behind ``cacheway demo`` and ``cacheway bench``.

Every strategy of a run faces the same seeded operations (:mod:`.workloads`); the
runner times each call, keeps a model of the last acknowledged value of every key (so a
read that returns anything else counts as stale), and reads the cache's own counters.
The crash column comes from :mod:`.crash`. Nothing shown is typed in: every number
is computed from the run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from cacheway import open as cw_open
from cacheway._urls import backend_from_url
from cacheway.backends.memory import MemoryBackend
from cacheway.stores.base import StoreBase

from . import workloads as wl
from .pollution import Residency, TrackingMemoryBackend
from .textbook import TextbookWriteBack, TextbookWriteThrough

__all__ = [
    "STRATEGIES",
    "Measured",
    "Row",
    "RunConfig",
    "Skip",
    "Strategy",
    "Target",
    "measure",
    "percentile",
    "run",
]


@dataclass(frozen=True)
class Strategy:
    """One row of the table: a cacheway policy or a textbook baseline."""

    name: str
    policy: str | None  # cacheway policy name; None for a textbook baseline
    fsync: str | None = None  # write-back journal fsync mode; None: no journal
    textbook: str | None = None  # "write-through" / "write-back"

    @property
    def ours(self) -> bool:
        return self.policy is not None


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("write-through", "write-through"),
        Strategy("write-back", "write-back"),
        Strategy("write-around", "write-around"),
        Strategy("write-back+journal-always", "write-back", fsync="always"),
        Strategy("write-back+journal-everysec", "write-back", fsync="everysec"),
        Strategy("textbook-write-through", None, textbook="write-through"),
        Strategy("textbook-write-back", None, textbook="write-back"),
    )
}


class Skip(Exception):
    """A strategy cannot run here (e.g. the journal module is missing)."""


@dataclass(frozen=True)
class Target:
    """Where one strategy's run keeps its data."""

    store_url: str
    backend_url: str
    journal: str | None  # journal path for journalled strategies
    sqlite_path: str | None  # the SQLite file textbook baselines write (None: not SQLite)
    prefix: str = ""  # prepended to every key (bench runs share a store)


class Subject(Protocol):
    """What the runner drives: a cw.Cache or a textbook baseline."""

    def get(self, key: str, /) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...

    def incr(self, key: str, delta: int = 1) -> int: ...

    def pending(self) -> int: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


def sqlite_path_of(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme.lower() != "sqlite":
        return None
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path or path == ":memory:" or parts.netloc == ":memory:":
        return None
    return path


def _capacity(backend_url: str, default: int) -> int:
    parts = urlsplit(backend_url)
    if parts.scheme.lower() == "memory":
        value = dict(parse_qsl(parts.query)).get("max_entries")
        return int(value) if value else 10**9
    return default


def open_subject(strategy: Strategy, target: Target, capacity: int) -> Subject:
    """A fresh cache (or baseline) for ``strategy`` on ``target``; raises :class:`Skip`."""
    if strategy.textbook is not None:
        if target.sqlite_path is None:
            raise Skip("textbook baselines write SQLite only")
        cap = _capacity(target.backend_url, capacity)
        if strategy.textbook == "write-through":
            return TextbookWriteThrough(target.sqlite_path, cap)
        return TextbookWriteBack(target.sqlite_path, cap)
    assert strategy.policy is not None
    options: dict[str, Any] = {}
    if strategy.fsync is not None:
        assert target.journal is not None
        options = {"journal": target.journal, "fsync": strategy.fsync}
    backend: Any = target.backend_url
    if urlsplit(backend).scheme.lower() == "memory":
        # the same LRU, plus the bookkeeping the pollution column needs
        plain = backend_from_url(backend)
        assert isinstance(plain, MemoryBackend)
        backend = TrackingMemoryBackend(plain.max_entries, plain.max_bytes)
    try:
        return cw_open(
            store=target.store_url, backend=backend, policy=strategy.policy, **options,
        )
    except (ImportError, ModuleNotFoundError) as exc:
        raise Skip(f"journal not available: {exc}") from exc


def residency_of(subject: Subject) -> Residency | None:
    """The pollution bookkeeping of ``subject``; None when its backend is not tracked."""
    owner = getattr(subject, "backend", subject)
    residency = getattr(owner, "residency", None)
    return residency if isinstance(residency, Residency) else None


def counts_of(subject: Subject) -> tuple[int, int, int, int]:
    """(hits, misses, app writes, store writes) from the cache's stats or the baseline."""
    stats = getattr(subject, "stats", None)
    if stats is not None:
        s = stats()
        return s.hits, s.misses, s.writes, s.store_writes
    t: Any = subject
    return t.hits, t.misses, t.writes, t.store_writes


def prepare(workload: str, target: Target, subject: Subject | None) -> None:
    """Preload the store for ``workload``: through the cache's own store when given (so
    ``sqlite://:memory:`` works), else the SQLite file a textbook baseline writes."""
    data = wl.preload(workload, target.prefix)
    store: Any = getattr(subject, "store", None)
    if store is not None:
        if data and isinstance(store, StoreBase):
            store.save_many(data)
        return
    from cacheway.stores.sqlite import SQLiteStore

    assert target.sqlite_path is not None
    with SQLiteStore(target.sqlite_path) as sqlite:  # also creates the table
        if data:
            sqlite.save_many(data)


def open_prepared(strategy: Strategy, workload: str, target: Target) -> Subject:
    """:func:`open_subject` with the store preloaded for ``workload`` (raises Skip)."""
    capacity = wl.spec(workload).capacity
    if strategy.textbook is not None:
        if target.sqlite_path is None:
            raise Skip("textbook baselines write SQLite only")
        prepare(workload, target, None)
        return open_subject(strategy, target, capacity)
    subject = open_subject(strategy, target, capacity)
    try:
        prepare(workload, target, subject)
    except BaseException:
        subject.close()
        raise
    return subject


@dataclass
class Measured:
    """Raw outcome of one strategy on one workload (latencies in ns)."""

    write_ns: list[int] = field(default_factory=list)
    read_ns: list[int] = field(default_factory=list)
    raw_ns: list[int] = field(default_factory=list)  # first read of a key after its write
    hits: int = 0
    misses: int = 0
    writes: int = 0
    store_writes: int = 0
    stale_reads: int = 0
    pending: int = 0
    durable_s: float = 0.0
    wall_s: float = 0.0
    # cache pollution (see pollution.py); all None when the backend is not tracked
    cache_inserts: int | None = None
    cache_entries_read: int | None = None
    cache_evicted_unread: int | None = None
    cache_dropped_unread: int | None = None
    cache_unread_at_end: int | None = None

    def merge(self, other: Measured) -> Measured:
        """Results of concurrent processes as one (times: the slowest)."""

        def add(a: int | None, b: int | None) -> int | None:
            return None if a is None or b is None else a + b

        return Measured(
            self.write_ns + other.write_ns, self.read_ns + other.read_ns,
            self.raw_ns + other.raw_ns, self.hits + other.hits, self.misses + other.misses,
            self.writes + other.writes, self.store_writes + other.store_writes,
            self.stale_reads + other.stale_reads, self.pending + other.pending,
            max(self.durable_s, other.durable_s), max(self.wall_s, other.wall_s),
            *(add(getattr(self, f), getattr(other, f)) for f in _POLLUTION_FIELDS),
        )

    def pollution(self) -> float | None:
        """Share of cache entries never read while cached (None: not tracked)."""
        if self.cache_inserts is None or not self.cache_inserts:
            return None
        unread = sum(getattr(self, f) or 0 for f in _POLLUTION_FIELDS[2:])
        return unread / self.cache_inserts


_POLLUTION_FIELDS = ("cache_inserts", "cache_entries_read", "cache_evicted_unread",
                     "cache_dropped_unread", "cache_unread_at_end")


def measure(subject: Subject, ops: Sequence[wl.Op], preloaded: dict[str, Any]) -> Measured:
    """Run ``ops`` on ``subject``, timing each call; then time the flush."""
    m = Measured()
    clock = time.perf_counter_ns
    model: dict[str, int | None] = {k: wl.seq_of(v) for k, v in preloaded.items()}
    unread: set[str] = set()
    get, set_, incr = subject.get, subject.set, subject.incr
    residency = residency_of(subject)
    touch = residency.touch if residency is not None else None
    seq_of, value_for = wl.seq_of, wl.value_for
    start = time.perf_counter()
    for op in ops:
        key = op.key
        if op.kind == "get":
            if touch is not None:
                touch(key)  # untimed: is this read served by a cached entry?
            t0 = clock()
            value = get(key)
            dt = clock() - t0
            m.read_ns.append(dt)
            if key in unread:
                m.raw_ns.append(dt)
                unread.discard(key)
            if seq_of(value) != model.get(key):
                m.stale_reads += 1
        elif op.kind == "set":
            value = value_for(op.seq)
            t0 = clock()
            set_(key, value)
            m.write_ns.append(clock() - t0)
            model[key] = op.seq
            unread.add(key)
        else:
            t0 = clock()
            incr(key)
            m.write_ns.append(clock() - t0)
            model[key] = (model.get(key) or 0) + 1
            unread.add(key)
    m.wall_s = time.perf_counter() - start
    m.pending = subject.pending()
    t0 = clock()
    subject.flush()
    m.durable_s = (clock() - t0) / 1e9
    m.hits, m.misses, m.writes, m.store_writes = counts_of(subject)
    if residency is not None:
        for name, value in residency.summary().items():
            if name in _POLLUTION_FIELDS:
                setattr(m, name, value)
    return m


def measure_target(strategy: Strategy, workload: str, ops: int, seed: int, target: Target
                   ) -> Measured:
    """Prepare ``target``, open the subject, run the workload, close (raises Skip)."""
    subject = open_prepared(strategy, workload, target)
    try:
        return measure(subject, wl.generate(workload, ops, seed, target.prefix),
                       wl.preload(workload, target.prefix))
    finally:
        subject.close()


def percentile(samples: Sequence[int], q: float) -> float | None:
    """Nearest-rank percentile of ``samples`` (ns) in µs; None without samples.

    >>> percentile([1000, 2000, 3000, 4000], 50)
    2.0
    """
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1] / 1000.0


@dataclass
class Row:
    """One strategy on one workload: the numbers the table, JSON and plot show."""

    workload: str
    strategy: str
    note: str | None = None  # why the row is missing, when it is
    metrics: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, list[int]] = field(default_factory=dict)  # ns, for the plot


def summarize(m: Measured) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, samples in (("write", m.write_ns), ("read", m.read_ns),
                          ("read_after_write", m.raw_ns)):
        for q in (50, 90, 99, 100):
            label = "max" if q == 100 else f"p{q}"
            out[f"{name}_{label}_us"] = percentile(samples, q)
        out[f"{name}_count"] = len(samples)
    reads = m.hits + m.misses
    out.update(
        hit_ratio=m.hits / reads if reads else None,
        hits=m.hits, misses=m.misses, app_writes=m.writes, store_writes=m.store_writes,
        store_writes_per_write=m.store_writes / m.writes if m.writes else None,
        stale_reads=m.stale_reads, pending_before_flush=m.pending,
        cache_pollution=m.pollution(),
        **{name: getattr(m, name) for name in _POLLUTION_FIELDS},
        durable_after_ms=m.durable_s * 1000.0, workload_s=m.wall_s,
        ops_per_s=(len(m.write_ns) + len(m.read_ns)) / m.wall_s if m.wall_s else None,
    )
    return out


@dataclass
class RunConfig:
    """What ``cacheway demo``/``bench`` asked for."""

    workloads: list[str]
    strategies: list[str]
    ops: int
    seed: int
    directory: str
    store_url: str | None = None  # bench: the user's store; demo: one SQLite file per row
    backend_url: str | None = None
    processes: int = 1
    crash: bool = True
    crash_seconds: tuple[float, float] = (0.1, 0.4)  # kill -9 after a random delay in here


def target_for(cfg: RunConfig, workload: str, strategy: Strategy, run_id: str, proc: int = 0
               ) -> Target:
    base = os.path.join(cfg.directory, f"{workload}-{strategy.name}")
    journal = f"{base}-{proc}.wal" if strategy.fsync else None
    if cfg.store_url is None:
        path = f"{base}.db"
        capacity = wl.spec(workload).capacity
        return Target(f"sqlite:///{path}", f"memory://?max_entries={capacity}", journal, path)
    assert cfg.backend_url is not None
    prefix = f"{run_id}:{workload}:{strategy.name}:{proc}:"
    return Target(cfg.store_url, cfg.backend_url, journal, sqlite_path_of(cfg.store_url), prefix)


def _measure_processes(cfg: RunConfig, workload: str, strategy: Strategy, run_id: str
                       ) -> Measured:
    """``--processes N``: N children run the workload at once on their own keys."""
    children = []
    for proc in range(cfg.processes):
        target = target_for(cfg, workload, strategy, run_id, proc)
        job = {"strategy": strategy.name, "workload": workload, "ops": cfg.ops,
               "seed": cfg.seed + proc, "target": dataclasses.asdict(target)}
        children.append(subprocess.Popen(
            [sys.executable, "-m", "cacheway.cli.demo.child", "measure", json.dumps(job)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    total: Measured | None = None
    errors: list[str] = []
    for child in children:
        out, err = child.communicate()
        if child.returncode != 0:
            lines = err.strip().splitlines()
            errors.append(lines[-1] if lines else f"exit {child.returncode}")
            continue
        answer = json.loads(out)
        if "skip" in answer:
            raise Skip(answer["skip"])
        part = Measured(**answer)
        total = part if total is None else total.merge(part)
    if errors or total is None:
        raise RuntimeError(f"bench process failed: {errors[0] if errors else 'no result'}")
    return total


def run(cfg: RunConfig, advance: Callable[[str], None] = lambda _: None) -> list[Row]:
    """Measure every strategy on every workload, then the crash column."""
    from .crash import crash_trials

    run_id = uuid.uuid4().hex[:8]
    rows: list[Row] = []
    for workload in cfg.workloads:
        for name in cfg.strategies:
            strategy = STRATEGIES[name]
            row = Row(workload, name)
            rows.append(row)
            try:
                if cfg.processes > 1:
                    m = _measure_processes(cfg, workload, strategy, run_id)
                else:
                    m = measure_target(strategy, workload, cfg.ops, cfg.seed,
                                       target_for(cfg, workload, strategy, run_id))
            except Skip as exc:
                row.note = str(exc)
                advance(f"{workload}: {name} (skipped)")
                continue
            row.metrics = summarize(m)
            row.samples = {"write": m.write_ns, "read": m.read_ns}
            advance(f"{workload}: {name}")
    if cfg.crash:
        crash_trials(cfg, [r for r in rows if r.note is None], advance)
    return rows
