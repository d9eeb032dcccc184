"""What ``cacheway demo``/``bench`` show: rich tables, the JSON document and the PNG plot."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import _demo_workloads as wl

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from ._demo import Row, RunConfig

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
    notes: list[str] = []
    for row in rows:
        m = row.metrics
        if row.note is not None:
            table.add_row(row.strategy, f"[dim]skipped: {row.note}[/]", *[""] * 8)
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
        "yet in the store when the workload ended.[/]"
    )


def to_json(rows: Sequence[Row], cfg: RunConfig, command: str, elapsed_s: float
            ) -> dict[str, Any]:
    from . import __version__

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
                  "workload_s": "seconds"},
        "workloads": workloads,
    }


def write_json(path: str, document: dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=2)
        f.write("\n")


def write_plot(path: str, rows: Sequence[Row], cfg: RunConfig) -> None:
    """Per workload: write and read latency distributions (ECDF, log µs), store writes per
    app write, and stale reads / lost writes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(cfg.strategies)
    colors = {n: plt.get_cmap("tab10")(i % 10) for i, n in enumerate(names)}
    n = len(cfg.workloads)
    fig, axes = plt.subplots(n, 4, figsize=(22, 4.4 * n + 1.0), squeeze=False)
    for r, workload in enumerate(cfg.workloads):
        done = [row for row in rows if row.workload == workload and row.note is None]
        for c, (kind, label) in enumerate((("write", "write"), ("read", "read"))):
            ax = axes[r][c]
            for row in done:
                xs = sorted(v / 1000.0 for v in row.samples.get(kind, []))
                if xs:
                    ys = [(i + 1) / len(xs) for i in range(len(xs))]
                    ax.step(xs, ys, where="post", color=colors[row.strategy],
                            label=row.strategy)
            ax.set_xscale("log")
            ax.set_xlabel(f"{label} latency (µs, log scale)")
            ax.set_ylabel("share of calls ≤ x")
            ax.set_title(f"{workload}: {label} latency distribution")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7, loc="lower right")
        labels = [row.strategy for row in done]
        xs_bar = list(range(len(done)))
        ax = axes[r][2]
        values = [row.metrics.get("store_writes_per_write") or 0.0 for row in done]
        bars = ax.bar(xs_bar, values, color=[colors[s] for s in labels])
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
        ax.set_xticks(xs_bar, labels, rotation=35, ha="right", fontsize=7)
        ax.set_ylabel("store writes per app write")
        ax.set_title(f"{workload}: store writes per application write (lower = coalesced)")
        ax.grid(True, axis="y", alpha=0.3)
        ax = axes[r][3]
        width = 0.4
        stale = [row.metrics.get("stale_reads", 0) for row in done]
        lost = [row.metrics.get("lost_writes", 0) for row in done]
        bars = ax.bar([x - width / 2 for x in xs_bar], stale, width, label="stale reads",
                      color="tab:orange")
        ax.bar_label(bars, fontsize=7)
        bars = ax.bar([x + width / 2 for x in xs_bar], lost, width,
                      label="keys whose last acked write was lost after kill -9", color="tab:red")
        ax.bar_label(bars, fontsize=7)
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(0, max([1, *stale, *lost]) * 6)  # room for the labels and the legend
        ax.set_xticks(xs_bar, labels, rotation=35, ha="right", fontsize=7)
        ax.set_ylabel("count (keys / reads)")
        ax.set_title(f"{workload}: stale reads and lost writes (0 is correct)")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"cacheway write policies, measured ({cfg.ops:,} ops per workload, seed {cfg.seed})",
        fontsize=14,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(path, dpi=90)
    plt.close(fig)
