"""Journal benchmarks: what durability costs a write-back cache, and what group commit buys.

    python bench/journal.py             # full run (about 2 minutes)
    python bench/journal.py --quick     # smoke run, a few seconds
    python bench/journal.py --rounds 9 --seconds 1.5 --dir /mnt/ssd

Three comparisons, each measured in interleaved rounds (the order of the sides rotates
every round, so drift in the machine's speed hits all alike); every figure is a median
over rounds, and every ratio is the median of the per-round ratios:

a. durable writes/s: ``cw.Cache(store=cw.SQLiteStore(...), policy=cw.WriteBack(journal=...,
   fsync="always", max_delay=0.2, batch_size=1000, max_dirty=10**6))`` driven by 8 threads
   against 1 thread for a fixed time. Every counted ``set`` had its journal record on disk
   when it returned; concurrent writers share one fdatasync (group commit).
   Target: 8 threads >= 3x one thread.
b. write-back ``set`` throughput (one thread, a fixed number of sets) with a journal
   under ``fsync="everysec"`` and ``fsync="never"`` against no journal, and an A/A row
   (no journal against a second no-journal side: the noise of the method).
c. the same durability two ways, 1 and 8 threads: journalled write-back
   (``fsync="always"``) against write-through on ``cw.SQLiteStore(synchronous="FULL")``.
   Both make a ``set`` durable before it returns.

Durable figures depend on the disk's fsync latency (noisy on shared VMs: quote medians of
several rounds). Run on the disk the journal will live on (``--dir``); on a tmpfs every
fsync is free and (a) and (c) mean nothing.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cacheway as cw

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import (  # the helpers live next to this script
    environment,
    fmt_ns,
    percentile,
    show_table,
)

perf_ns = time.perf_counter_ns
Factory = Callable[[Path], cw.Cache]


@dataclass(frozen=True)
class Sizes:
    rounds: int
    seconds: float  # per side per round, durable throughput (a, c)
    set_ops: int  # sets per side per round (b)
    keys: int  # distinct keys per thread (b: per round)


FULL = Sizes(rounds=9, seconds=1.5, set_ops=25_000, keys=10_000)
QUICK = Sizes(rounds=2, seconds=0.2, set_ops=2_000, keys=1_000)


@dataclass
class Round:
    """One side of one round."""

    writes: int
    seconds: float
    latencies_ns: list[int] = field(default_factory=list)  # per call (threaded runs only)
    syncs: int = 0  # journal syncs during the timed part

    @property
    def per_s(self) -> float:
        return self.writes / self.seconds


@dataclass
class Side:
    label: str
    rounds: list[Round] = field(default_factory=list)

    @property
    def per_s(self) -> float:
        return statistics.median(r.per_s for r in self.rounds)

    def latency(self, p: float) -> float | None:
        pooled = [x for r in self.rounds for x in r.latencies_ns]
        return percentile(pooled, p) if pooled else None

    @property
    def writes_per_sync(self) -> float | None:
        syncs = sum(r.syncs for r in self.rounds)
        return sum(r.writes for r in self.rounds) / syncs if syncs else None


@dataclass
class Result:
    """ours against baseline: the median over rounds of their throughput ratio."""

    name: str
    ours: Side
    base: Side
    target: float | None  # minimum ratio ours/base, None: reported only

    @property
    def ratios(self) -> list[float]:
        return [o.per_s / b.per_s for o, b in zip(self.ours.rounds, self.base.rounds)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def verdict(self) -> str:
        if self.target is None:
            return "info"
        return "PASS" if self.ratio >= self.target else "MISS"


# -- caches under test ------------------------------------------------------------------


def write_back(fsync: str | None) -> Factory:
    """A write-back cache over SQLite; ``fsync=None``: no journal."""

    def make(root: Path) -> cw.Cache:
        journal = None if fsync is None else str(root / "app.wal")
        policy = cw.WriteBack(
            journal=journal,
            fsync=fsync or "everysec",
            max_delay=0.2,
            batch_size=1000,
            max_dirty=10**6,
        )
        return cw.Cache(store=cw.SQLiteStore(root / "app.db"), policy=policy)

    return make


def write_through_full(root: Path) -> cw.Cache:
    store = cw.SQLiteStore(root / "app.db", synchronous="FULL")
    return cw.Cache(store=store, policy=cw.WriteThrough())


def journal_syncs(cache: cw.Cache) -> int:
    return cache.stats().journal_syncs


# -- one side of one round --------------------------------------------------------------


def durable_round(
    make: Factory, threads: int, seconds: float, workdir: str, values: Sequence[Any]
) -> Round:
    """``threads`` writers call ``set`` on distinct keys for ``seconds``; each call is
    timed. The cache is opened before and closed (flushed) after the timed part."""
    with tempfile.TemporaryDirectory(dir=workdir, prefix="cacheway-bench-") as tmp:
        cache = make(Path(tmp))
        try:
            stop = threading.Event()
            barrier = threading.Barrier(threads + 1)
            counts = [0] * threads
            lats: list[list[int]] = [[] for _ in range(threads)]
            nvalues = len(values)

            def writer(slot: int) -> None:
                mine = lats[slot]
                put = cache.set
                barrier.wait()
                i = 0
                while not stop.is_set():
                    t0 = perf_ns()
                    put(f"t{slot}:{i}", values[i % nvalues])
                    mine.append(perf_ns() - t0)
                    i += 1
                counts[slot] = i

            workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
            for w in workers:
                w.start()
            syncs0 = journal_syncs(cache)
            barrier.wait()
            t0 = perf_ns()
            stop.wait(seconds)
            stop.set()
            for w in workers:
                w.join()
            elapsed = (perf_ns() - t0) / 1e9
            syncs = journal_syncs(cache) - syncs0
        finally:
            cache.close()
    return Round(sum(counts), elapsed, [x for per in lats for x in per], syncs)


def set_round(make: Factory, ops: int, keys: int, workdir: str, values: Sequence[Any]) -> Round:
    """One thread does ``ops`` sets over ``keys`` keys, timed as one block (a timer per
    call would cost a visible share of a memory-speed set)."""
    items = [(f"k{i % keys}", values[i % len(values)]) for i in range(ops)]
    with tempfile.TemporaryDirectory(dir=workdir, prefix="cacheway-bench-") as tmp:
        cache = make(Path(tmp))
        try:
            put = cache.set
            t0 = perf_ns()
            for key, value in items:
                put(key, value)
            elapsed = (perf_ns() - t0) / 1e9
        finally:
            cache.close()
    return Round(ops, elapsed)


def interleave(
    sides: dict[str, Callable[[], Round]], rounds: int, log: Callable[[str], None]
) -> dict[str, Side]:
    """One warm-up round of each side, then ``rounds`` rounds; the order rotates so each
    side goes first, second, ... equally often."""
    out = {name: Side(name) for name in sides}
    names = list(sides)
    for name in names:
        sides[name]()
    for r in range(rounds):
        shift = r % len(names)
        order = names[shift:] + names[:shift]
        for name in order:
            out[name].rounds.append(sides[name]())
        figures = ", ".join(f"{n} {out[n].rounds[-1].per_s:,.0f}/s" for n in names)
        log(f"  round {r + 1}/{rounds}: {figures}")
    return out


# -- report -----------------------------------------------------------------------------


def fmt_rate(per_s: float) -> str:
    return f"{per_s:,.0f}/s"


def print_detail(res: Result) -> None:
    print(f"{res.name}: {res.ours.label}  vs  {res.base.label}")
    for tag, side in (("ours", res.ours), ("baseline", res.base)):
        line = f"  {tag:<9} {fmt_rate(side.per_s):>12} (median of rounds)"
        p50, p99 = side.latency(50), side.latency(99)
        if p50 is not None and p99 is not None:
            line += f"  set latency p50 {fmt_ns(p50):>9}  p99 {fmt_ns(p99):>9}"
        wps = side.writes_per_sync
        if wps is not None:
            line += f"  writes/sync {wps:.1f}"
        print(line)
    ratios = " ".join(f"{r:.2f}" for r in res.ratios)
    target = "reported only" if res.target is None else f"target >= {res.target:g}x"
    print(
        f"  ratio ours/baseline per round: {ratios}  -> median {res.ratio:.2f}x "
        f"({target}) {res.verdict}"
    )
    print()


def print_table(results: list[Result]) -> None:
    header = ["comparison", "ours", "baseline", "median ratio", "target", "verdict"]
    rows = [
        [
            r.name,
            fmt_rate(r.ours.per_s),
            fmt_rate(r.base.per_s),
            f"{r.ratio:.2f}x",
            "-" if r.target is None else f">= {r.target:g}x",
            r.verdict,
        ]
        for r in results
    ]
    show_table("cacheway journal benchmarks (writes/s; ratio = ours / baseline)", header,
               rows)


def source_tree() -> str:
    """The commit measured (and whether the tree had uncommitted changes)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "../src"],
            cwd=here,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "unknown"
    if not rev:
        return "unknown"
    return f"{rev} + uncommitted changes in src" if dirty else rev


# -- main -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny sizes")
    parser.add_argument("--rounds", type=int, help="timed rounds per comparison")
    parser.add_argument("--seconds", type=float, help="seconds per side per durable round")
    parser.add_argument("--ops", type=int, help="sets per side per round in (b)")
    parser.add_argument("--threads", type=int, default=8, help="writers of the threaded runs")
    parser.add_argument("--seed", type=int, default=1, help="seed of the values written")
    parser.add_argument("--dir", default=".", help="where the journals and databases go")
    args = parser.parse_args(argv)
    for name in ("rounds", "seconds", "ops", "threads"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name} must be > 0")
    sizes = QUICK if args.quick else FULL
    rounds = args.rounds or sizes.rounds
    seconds = args.seconds or sizes.seconds
    ops = args.ops or sizes.set_ops
    n = args.threads
    workdir = args.dir

    rng = random.Random(args.seed)
    values = [
        {
            "id": i,
            "name": f"user-{rng.randrange(10**6)}",
            "score": rng.random(),
            "tags": rng.sample(["a", "b", "c", "d", "e"], 2),
        }
        for i in range(256)
    ]

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.perf_counter()
    print(f"# python bench/journal.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"# {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    for line in environment(
        [
            ("cacheway", f"{getattr(cw, '__version__', 'dev')} (git {source_tree()})"),
            (
                "sizes",
                f"{rounds} rounds, {seconds:g} s per durable side, {ops} sets per "
                f"side in (b), {n} threads, seed {args.seed}",
            ),
        ]
    ):
        print(f"# {line}")
    print()

    log(
        f"(a, c) durable set: write-back+journal fsync=always vs write-through FULL, "
        f"1 and {n} threads"
    )
    durable = interleave(
        {
            "wb1": lambda: durable_round(write_back("always"), 1, seconds, workdir, values),
            "wbN": lambda: durable_round(write_back("always"), n, seconds, workdir, values),
            "wt1": lambda: durable_round(write_through_full, 1, seconds, workdir, values),
            "wtN": lambda: durable_round(write_through_full, n, seconds, workdir, values),
        },
        rounds,
        log,
    )
    log("(b) write-back set: journal fsync=everysec / never vs no journal")
    # (b) rounds are short; more of them cost little and steady the median.
    sets = interleave(
        {
            "none": lambda: set_round(write_back(None), ops, sizes.keys, workdir, values),
            "everysec": lambda: set_round(write_back("everysec"), ops, sizes.keys, workdir, values),
            "never": lambda: set_round(write_back("never"), ops, sizes.keys, workdir, values),
            "none2": lambda: set_round(write_back(None), ops, sizes.keys, workdir, values),
        },
        rounds,
        log,
    )

    def side(group: dict[str, Side], name: str, label: str) -> Side:
        group[name].label = label
        return group[name]

    wb1 = side(durable, "wb1", "write-back+journal fsync=always, 1 thread")
    wbn = side(durable, "wbN", f"write-back+journal fsync=always, {n} threads")
    wt1 = side(durable, "wt1", "write-through SQLite synchronous=FULL, 1 thread")
    wtn = side(durable, "wtN", f"write-through SQLite synchronous=FULL, {n} threads")
    none = side(sets, "none", "write-back set, no journal")
    results = [
        Result(f"(a) durable, fsync=always: {n} threads vs 1 thread", wbn, wb1, 3.0),
        Result(
            "(b) set: journal fsync=everysec vs no journal",
            side(sets, "everysec", "write-back set, journal fsync=everysec"),
            none,
            None,
        ),
        Result(
            "(b) set: journal fsync=never vs no journal",
            side(sets, "never", "write-back set, journal fsync=never"),
            none,
            None,
        ),
        Result(
            "(b) A/A: no journal vs no journal",
            side(sets, "none2", "write-back set, no journal (a second side)"),
            none,
            None,
        ),
        Result("(c) durable, 1 thread: WB+journal vs WT FULL", wb1, wt1, None),
        Result(f"(c) durable, {n} threads: WB+journal vs WT FULL", wbn, wtn, None),
    ]
    for res in results:
        print_detail(res)
    print_table(results)
    print(f"\n# total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
