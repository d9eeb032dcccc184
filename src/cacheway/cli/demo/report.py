"""What ``cacheway demo``/``bench`` show: rich tables, the JSON document and the PNG plot."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import workloads as wl

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from .runner import Row, RunConfig

__all__ = ["print_tables", "to_json", "write_json", "write_plot"]

_CRASH_NOTE = (
    "lost after kill -9: keys whose last acknowledged write is missing from the store after "
    "the child was killed and the store (and journal) reopened, of all keys acknowledged. "
    "kill -9 stops the process, not the machine: bytes the OS already holds survive it, so "
    "fsync=everysec loses nothing here but may lose ~1 s of writes on power loss."
)


def _us(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 10:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def _pair(m: dict[str, Any], name: str) -> str:
    return f"{_us(m.get(f'{name}_p50_us'))} / {_us(m.get(f'{name}_p99_us'))}"


def _ratio(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _lost(m: dict[str, Any]) -> str:
    if "lost_writes" in m:
        lost, keys = m["lost_writes"], m["crash_acked_keys"]
        style = "green" if lost == 0 else "red"
        return f"[{style}]{lost:,}[/] / {keys:,}"
    if "crash_note" in m:
        return "[dim]n/a[/]"
    return "-"


def _pollution(m: dict[str, Any]) -> str:
    share, inserts = m.get("cache_pollution"), m.get("cache_inserts")
    if share is None or inserts is None:
        return "-"
    return f"{share:.0%} of {inserts:,}"


def table_for(workload: str, rows: Sequence[Row], cfg: RunConfig) -> Table:
    from rich.table import Table

    spec = wl.spec(workload)
    table = Table(
        title=f"[b]{workload}[/b]: {spec.description} ({cfg.ops:,} ops, seed {cfg.seed})",
        title_justify="left",
    )
    table.add_column("strategy", no_wrap=True)
    table.add_column("write µs\np50 / p99", justify="right")
    table.add_column("read µs\np50 / p99", justify="right")
    table.add_column("read-after-\nwrite µs p50", justify="right")
    table.add_column("hit\nratio", justify="right")
    table.add_column("store writes\n/ app write", justify="right")
    table.add_column("durable\nafter ms", justify="right")
    table.add_column("stale\nreads", justify="right")
    table.add_column("pending\nat end", justify="right")
    table.add_column("lost after\nkill -9", justify="right")
    table.add_column("cache\npollution", justify="right")
    notes: list[str] = []
    for row in rows:
        m = row.metrics
        if row.note is not None:
            # the reason goes under the table: in a cell it would wrap over many lines
            table.add_row(row.strategy, "[dim]skipped[/]", *[""] * 9)
            notes.append(f"{row.strategy}: skipped: {row.note}")
            continue
        stale = m["stale_reads"]
        table.add_row(
            row.strategy,
            _pair(m, "write"),
            _pair(m, "read"),
            _us(m.get("read_after_write_p50_us")),
            _ratio(m.get("hit_ratio"), ".0%"),
            _ratio(m.get("store_writes_per_write"), ".3f"),
            f"{m['durable_after_ms']:,.1f}",
            f"[red]{stale:,}[/]" if stale else "0",
            f"{m['pending_before_flush']:,}",
            _lost(m),
            _pollution(m),
        )
        if "crash_note" in m:
            notes.append(f"{row.strategy}: {m['crash_note']}")
    table.caption = "\n".join(notes) or None
    return table


def print_tables(console: Console, rows: Sequence[Row], cfg: RunConfig) -> None:
    for workload in cfg.workloads:
        console.print(table_for(workload, [r for r in rows if r.workload == workload], cfg))
        console.print()
    if cfg.crash:
        console.print(f"[dim]{_CRASH_NOTE}[/]")
    else:
        console.print("[dim]lost after kill -9: measured by `cacheway demo` only.[/]")
    console.print(
        "[dim]durable after: time flush() took after the workload; stale reads: reads that "
        "returned something other than the last acknowledged write; pending: entries not "
        "yet in the store when the workload ended; pollution: share of the entries put in "
        "the cache (by a write or a read-fill) that no read found there before they were "
        "evicted, invalidated or the run ended.[/]"
    )


def to_json(rows: Sequence[Row], cfg: RunConfig, command: str, elapsed_s: float
            ) -> dict[str, Any]:
    from cacheway import __version__

    workloads: dict[str, Any] = {}
    for workload in cfg.workloads:
        strategies: dict[str, Any] = {}
        for row in rows:
            if row.workload == workload:
                strategies[row.strategy] = (
                    {"skipped": row.note} if row.note is not None else dict(row.metrics)
                )
        workloads[workload] = {"description": wl.spec(workload).description,
                               "strategies": strategies}
    return {
        "cacheway": __version__,
        "command": command,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0],
                    "cpus": os.cpu_count()},
        "config": {"ops": cfg.ops, "seed": cfg.seed, "workloads": cfg.workloads,
                   "strategies": cfg.strategies, "processes": cfg.processes,
                   "store": cfg.store_url, "backend": cfg.backend_url, "crash": cfg.crash},
        "elapsed_s": elapsed_s,
        "units": {"*_us": "microseconds", "durable_after_ms": "milliseconds",
                  "workload_s": "seconds",
                  "hit_ratio, store_writes_per_write, cache_pollution": "ratios (0-1)",
                  "cache_*": "cache entries (one stay of a key in the cache)"},
        "workloads": workloads,
    }


def write_json(path: str, document: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=2)
        f.write("\n")


# Plot layout: per workload a block of two rows of three panels. Fixed margins instead of
# tight_layout, which measures every tick label and took seconds per workload.
_PANEL_W, _PANEL_H, _HEAD_IN = 6.2, 3.5, 1.4  # inches
_ECDF_POINTS = 400  # a distribution drawn through 400 quantiles looks the same, draws fast


def _ecdf(samples_ns: Sequence[int]) -> tuple[list[float], list[float]]:
    """(latency µs, share of calls ≤ it), thinned to at most ``_ECDF_POINTS`` steps."""
    ordered = sorted(samples_ns)
    n = len(ordered)
    if n == 0:
        return [], []
    step = max(1, n // _ECDF_POINTS)
    idx = list(range(step - 1, n, step))
    if idx[-1] != n - 1:
        idx.append(n - 1)
    return [ordered[i] / 1000.0 for i in idx], [(i + 1) / n for i in idx]


def _hbars(ax: Any, labels: Sequence[str], values: Sequence[float | None],
           texts: Sequence[str], colors: Sequence[Any], xmax: float, xlabel: str,
           title: str) -> None:
    """One horizontal bar per strategy, first strategy on top, each bar labelled."""
    ys = list(range(len(labels)))
    ax.barh(ys, [v or 0.0 for v in values], color=colors, height=0.7)
    for y, text in zip(ys, texts):
        value = values[y] or 0.0
        ax.text(value + xmax * 0.015, y, text, va="center", fontsize=8)
    ax.set_yticks(ys, labels, fontsize=8)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xlim(0, xmax * 1.3)  # room for the value labels
    if xmax == 100:  # a percentage: no ticks past 100 %
        ax.set_xticks([0, 20, 40, 60, 80, 100])
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)


def write_plot(path: str, rows: Sequence[Row], cfg: RunConfig) -> None:
    """Per workload: write and read latency distributions (ECDF, log µs), hit ratio,
    store writes per app write, lost writes and stale reads, and cache pollution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    names = list(cfg.strategies)
    palette = plt.get_cmap("tab10")
    colors = {n: palette(i % 10) for i, n in enumerate(names)}
    n = len(cfg.workloads)
    height = _HEAD_IN + n * 2 * _PANEL_H + (n - 1) * 0.5
    fig, axes = plt.subplots(2 * n, 3, figsize=(3 * _PANEL_W, height), squeeze=False)
    for w, workload in enumerate(cfg.workloads):
        done = [row for row in rows if row.workload == workload and row.note is None]
        labels = [row.strategy for row in done]
        bar_colors = [colors[s] for s in labels]
        top, bottom = axes[2 * w], axes[2 * w + 1]
        for ax, kind in ((top[0], "write"), (top[1], "read")):
            for row in done:
                xs, ys = _ecdf(row.samples.get(kind, []))
                if xs:
                    ax.plot(xs, ys, drawstyle="steps-post", color=colors[row.strategy],
                            linewidth=1.4)
            ax.set_xscale("log")
            ax.set_ylim(0, 1.02)
            ax.set_xlabel(f"{kind} latency (µs, log scale)", fontsize=9)
            ax.set_ylabel("share of calls ≤ x", fontsize=9)
            ax.set_title(f"{workload} · {kind} latency distribution", fontsize=10)
            ax.grid(True, alpha=0.3)

        hit = [row.metrics.get("hit_ratio") for row in done]
        _hbars(top[2], labels, [None if v is None else 100 * v for v in hit],
               ["-" if v is None else f"{v:.0%}" for v in hit], bar_colors, 100,
               "hit ratio (% of reads answered by the cache)",
               f"{workload} · hit ratio (higher is better)")

        per = [row.metrics.get("store_writes_per_write") for row in done]
        _hbars(bottom[0], labels, per, ["-" if v is None else f"{v:.3f}" for v in per],
               bar_colors, max([1.0, *(v or 0.0 for v in per)]),
               "store writes per application write",
               f"{workload} · store load (lower = coalesced)")

        ax = bottom[1]
        ys = list(range(len(done)))
        lost_pct: list[float] = []
        stale_pct: list[float] = []
        for row in done:
            m = row.metrics
            acked = m.get("crash_acked_keys") or 0
            lost_pct.append(100 * m["lost_writes"] / acked if acked else 0.0)
            reads = m.get("read_count") or 0
            stale_pct.append(100 * m.get("stale_reads", 0) / reads if reads else 0.0)
        ax.barh([y - 0.19 for y in ys], lost_pct, height=0.38, color="tab:red",
                label="last acknowledged write lost after kill -9 (% of keys written)")
        ax.barh([y + 0.19 for y in ys], stale_pct, height=0.38, color="tab:orange",
                label="stale reads (% of reads)")
        for y, row in enumerate(done):
            m = row.metrics
            if "lost_writes" in m:
                lost = f"{m['lost_writes']:,} of {m['crash_acked_keys']:,} keys"
            else:
                lost = "n/a" if "crash_note" in m else "not measured"
            ax.text(lost_pct[y] + 2, y - 0.19, lost, va="center", fontsize=7)
            ax.text(stale_pct[y] + 2, y + 0.19, f"{m.get('stale_reads', 0):,} reads",
                    va="center", fontsize=7)
        ax.set_yticks(ys, labels, fontsize=8)
        ax.set_ylim(len(done) - 0.5, -2.4)  # the top is left empty for the legend
        ax.set_xlim(0, 135)
        ax.set_xticks([0, 20, 40, 60, 80, 100])
        ax.set_xlabel("% (0 is correct)", fontsize=9)
        ax.set_title(f"{workload} · lost writes and stale reads", fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="upper right", framealpha=0.95)

        share = [row.metrics.get("cache_pollution") for row in done]
        texts = ["not tracked (memory backends only)" if v is None
                 else f"{v:.0%} of {row.metrics['cache_inserts']:,}"
                 for v, row in zip(share, done)]
        _hbars(bottom[2], labels, [None if v is None else 100 * v for v in share], texts,
               bar_colors, 100, "% of entries cached that no read found (of N entries)",
               f"{workload} · cache pollution (lower is better)")

    handles = [Line2D([], [], color=colors[s], linewidth=3) for s in names]
    fig.legend(handles, names, loc="upper center", ncol=min(len(names), 4), fontsize=9,
               frameon=False, bbox_to_anchor=(0.5, 1 - 0.45 / height))
    if cfg.store_url is None:
        where = "memory backend + SQLite store"
    else:
        from cacheway._urls import _redact

        where = f"store {_redact(cfg.store_url)}, backend {_redact(cfg.backend_url or '')}"
    fig.suptitle(
        f"cacheway write policies, measured: {cfg.ops:,} ops per workload and strategy, "
        f"seed {cfg.seed}; {where}",
        fontsize=13, y=1 - 0.12 / height,
    )
    fig.subplots_adjust(left=0.12, right=0.985, top=1 - _HEAD_IN / height,
                        bottom=0.7 / height, wspace=0.55, hspace=0.55)
    fig.savefig(path, dpi=90)
    plt.close(fig)
