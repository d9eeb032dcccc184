"""Shared helpers of the cacheway benchmarks: timing, alternation, ratios, tables.

A comparison runs "ours" and a baseline in alternating rounds (the side that goes first
swaps every round, so drift in the machine's speed hits both alike). Each round returns
per-op times in nanoseconds, one per timed batch (a batch's time divided by its ops),
and the round's own per-op mean. The headline number is the median over rounds of
``ours / baseline`` per-op time; the percentiles are over the pooled batch means.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Comparison",
    "RoundResult",
    "clear_backend",
    "distinct_mix",
    "environment",
    "fmt_ns",
    "percentile",
    "plain_table",
    "print_detail",
    "print_table",
    "run_alternating",
    "set_mix",
    "show_table",
    "time_batches",
]

perf_ns = time.perf_counter_ns


@dataclass
class RoundResult:
    """One round of one side: per-op ns of each timed batch, and of the whole round."""

    batches: list[float]
    per_op: float
    notes: dict[str, float] = field(default_factory=dict)


@dataclass
class Comparison:
    """Both sides of one comparison, round by round."""

    name: str
    ours_label: str
    base_label: str
    target: float
    unit: str  # what one "op" is, for the detail lines
    ours: list[RoundResult] = field(default_factory=list)
    base: list[RoundResult] = field(default_factory=list)
    ops_per_round: int = 0
    batch: int = 0

    @property
    def ratios(self) -> list[float]:
        return [o.per_op / b.per_op for o, b in zip(self.ours, self.base)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    def pooled(self, side: str) -> list[float]:
        rounds = self.ours if side == "ours" else self.base
        return [x for r in rounds for x in r.batches]

    def summary(self, side: str) -> dict[str, float]:
        xs = self.pooled(side)
        return {
            "median": statistics.median(xs),
            "p90": percentile(xs, 90),
            "p99": percentile(xs, 99),
            "max": max(xs),
        }

    @property
    def passed(self) -> bool:
        return self.ratio <= self.target


def set_mix(rng: random.Random, nops: int, window: int) -> list[tuple[str, Any]]:
    """70% writes of new keys, 30% rewrites of one of the last ``window`` keys;
    values ``{"n": i}``."""
    out: list[tuple[str, Any]] = []
    fresh = 0
    for i in range(nops):
        if fresh and rng.random() < 0.3:
            k = f"item:{rng.randrange(max(0, fresh - window), fresh)}"
        else:
            k = f"item:{fresh}"
            fresh += 1
        out.append((k, {"n": i}))
    return out


def distinct_mix(rng: random.Random, n: int,
                 value: Callable[[int], Any] = lambda i: {"n": i}) -> list[tuple[str, Any]]:
    """``n`` distinct keys ``row:<i>`` in a shuffled order, with ``value(i)``."""
    order = list(range(n))
    rng.shuffle(order)
    return [(f"row:{i}", value(i)) for i in order]


def clear_backend(backend: Any) -> None:
    """``backend.clear()`` of a ``RedisBackend``, and the version clock it keeps
    (``<prefix>~clock``: kept for a prefix that lives on; a benchmark's does not)."""
    backend.clear()
    backend.client.unlink(backend.prefix + "~clock")


def percentile(xs: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (no interpolation: every value reported was measured)."""
    s = sorted(xs)
    k = max(0, math.ceil(p / 100 * len(s)) - 1)
    return s[k]


def time_batches(op: Callable[[Any], object], items: Sequence[Any], batch: int) -> RoundResult:
    """Call ``op(item)`` for every item, timing each ``batch`` items as one block.

    The loop is the same for both sides of a comparison, so its own cost (a few tens of
    ns per item) lands on both; per-call timers would cost more than a memory hit.
    """
    out: list[float] = []
    total = 0
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        t0 = perf_ns()
        for item in chunk:
            op(item)
        dt = perf_ns() - t0
        total += dt
        out.append(dt / len(chunk))
    return RoundResult(out, total / len(items))


def time_batches2(
    op: Callable[[Any, Any], object], items: Sequence[tuple[Any, Any]], batch: int
) -> RoundResult:
    """:func:`time_batches` for two-argument ops (``set(key, value)``)."""
    out: list[float] = []
    total = 0
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        t0 = perf_ns()
        for a, b in chunk:
            op(a, b)
        dt = perf_ns() - t0
        total += dt
        out.append(dt / len(chunk))
    return RoundResult(out, total / len(items))


def run_alternating(
    comp: Comparison,
    ours: Callable[[], RoundResult],
    base: Callable[[], RoundResult],
    rounds: int,
    warmup: int = 1,
    progress: Callable[[str], None] | None = None,
) -> Comparison:
    """Run ``warmup`` untimed rounds of each side, then ``rounds`` interleaved rounds.

    The garbage collector is collected before and disabled during each round (as
    ``timeit`` does), so a collection triggered by one side's garbage is not charged to
    the other.
    """
    for _ in range(warmup):
        _round(ours)
        _round(base)
    for r in range(rounds):
        pair = [("ours", ours), ("base", base)]
        if r % 2:
            pair.reverse()
        for side, fn in pair:
            res = _round(fn)
            (comp.ours if side == "ours" else comp.base).append(res)
        if progress is not None:
            progress(f"  round {r + 1}/{rounds}: ratio {comp.ratios[-1]:.2f}")
    return comp


def _round(fn: Callable[[], RoundResult]) -> RoundResult:
    gc.collect()
    gc.disable()
    try:
        return fn()
    finally:
        gc.enable()


def fmt_ns(ns: float) -> str:
    if ns < 1_000:
        return f"{ns:.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:.2f} µs"
    if ns < 1_000_000_000:
        return f"{ns / 1_000_000:.2f} ms"
    return f"{ns / 1_000_000_000:.2f} s"


def environment(extra: Iterable[tuple[str, str]] = ()) -> list[str]:
    """Lines describing the run: versions and core count, never paths or host names."""
    import os

    lines = [
        f"python {platform.python_version()} ({platform.python_implementation()}), "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores",
        f"sqlite {sqlite3.sqlite_version}",
    ]
    lines += [f"{k}: {v}" for k, v in extra]
    return lines


def print_detail(comp: Comparison, out: Callable[[str], None] = print) -> None:
    out(f"{comp.name}: {comp.ours_label}  vs  {comp.base_label}")
    out(
        f"  {comp.ops_per_round} {comp.unit}/round, per-op time from means of batches of "
        f"{comp.batch}, {len(comp.ratios)} rounds"
    )
    for side, label in (("ours", "ours"), ("base", "baseline")):
        s = comp.summary(side)
        out(
            f"  {label:<9} median {fmt_ns(s['median']):>10}  p90 {fmt_ns(s['p90']):>10}  "
            f"p99 {fmt_ns(s['p99']):>10}  max {fmt_ns(s['max']):>10}"
        )
        notes = _mean_notes(comp.ours if side == "ours" else comp.base)
        if notes:
            out("            " + ", ".join(f"{k} {fmt_ns(v)}" for k, v in notes.items()))
    ratios = " ".join(f"{r:.2f}" for r in comp.ratios)
    verdict = "PASS" if comp.passed else "MISS"
    out(
        f"  ratio ours/baseline per round: {ratios}  -> median {comp.ratio:.2f}x "
        f"(target <= {comp.target:g}x) {verdict}"
    )
    out("")


def _mean_notes(rounds: list[RoundResult]) -> dict[str, float]:
    keys: list[str] = []
    for r in rounds:
        keys += [k for k in r.notes if k not in keys]
    return {k: statistics.median(r.notes[k] for r in rounds if k in r.notes) for k in keys}


def print_table(comps: list[Comparison],
                title: str = "cacheway embedded benchmarks") -> None:
    """The final table: with ``rich`` when installed, plain text otherwise; ``title``
    names the script's benchmarks (the ratio note is added)."""
    header = ["comparison", "ours median", "baseline median", "median ratio", "target", "verdict"]
    rows = [
        [
            c.name,
            fmt_ns(c.summary("ours")["median"]),
            fmt_ns(c.summary("base")["median"]),
            f"{c.ratio:.2f}x",
            f"<= {c.target:g}x",
            "PASS" if c.passed else "MISS",
        ]
        for c in comps
    ]
    show_table(f"{title} (time per op; ratio = ours / baseline)", header, rows)


def plain_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell, a rule under the header."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)))


def show_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A results table whose last column is a verdict (PASS green, MISS red): with
    ``rich`` when installed, plain text otherwise; nothing when there are no rows
    (``--only`` chose none of them)."""
    if not rows:
        return
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        plain_table(header, rows)
        return
    table = Table(title=title)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i == 0 else "right")
    for r in rows:
        style = {"PASS": "green", "MISS": "red"}.get(r[-1], "")
        table.add_row(*r[:-1], f"[{style}]{r[-1]}[/{style}]" if style else r[-1])
    # Piped into a file, rich would fall back to 80 columns and wrap the table.
    console = Console() if sys.stdout.isatty() else Console(width=120, no_color=True)
    console.print(table)


class Scratch:
    """A temporary directory for one run; every database file is created inside it."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="cacheway-bench-")
        self._n = 0

    def path(self, stem: str) -> str:
        self._n += 1
        return os.path.join(self.root, f"{stem}-{self._n}.db")

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def source_revision() -> str:
    """The git commit of the cacheway being measured (``+dirty`` with local edits)."""
    import subprocess

    import cacheway as cw

    here = os.path.dirname(os.path.abspath(cw.__file__))
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here,
                             capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "."], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (rev + ("+dirty" if dirty else "")) if rev else "unknown"


def bench_args(doc: str | None, choices: Iterable[str], seed: int,
               argv: list[str] | None) -> argparse.Namespace:
    """The options every benchmark script takes: --quick, --rounds, --seed, --only, -q."""
    ap = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer ops, for smoke runs")
    ap.add_argument("--rounds", type=int, default=7, help="timed rounds per side (default 7)")
    ap.add_argument("--seed", type=int, default=seed, help="seed of the operation mixes")
    ap.add_argument("--only", choices=sorted(choices), action="append",
                    help="run only these comparisons (repeatable)")
    ap.add_argument("-q", "--quiet", action="store_true", help="no per-round progress lines")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    return args
