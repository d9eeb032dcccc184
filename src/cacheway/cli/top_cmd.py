"""``cacheway top``: a live view of running caches, refreshed every ``--interval`` seconds.

What a running cache knows is in its own process, so ``top`` reads what the processes
export: the Prometheus endpoints of ``cw.metrics.PrometheusCollector`` (``--metrics
URL``, repeatable: one per process; their counters are summed per namespace and shown
as rates between refreshes), plus what the shared pieces say for themselves: the number
of cached copies under a Redis backend's prefix (``--backend``) and how fast the store
answers a read (``--store``).
"""

from __future__ import annotations

import argparse
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ._common import UsageError, console

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["Sample", "scrape", "top"]

#: counters shown as rates (per second), and the gauges shown as they are
RATES = ("hits", "misses", "loads", "writes", "store_writes", "coalesced", "flushes")
_SHORT = {"store_writes": "st.writes", "coalesced": "coalesc", "store_errors": "st.errors",
          "dead_letters": "dead", "store_down": "store"}
TOTALS = ("store_errors", "retries", "dead_letters")
GAUGES = ("dirty", "store_down")
FAILING = "[red]failing: "  # how a probe that failed starts
_BACKEND_SCAN_LIMIT = 100_000  # keys counted under a prefix at most (SCAN), per refresh


@dataclass
class Sample:
    """Counters and gauges by namespace, summed over every endpoint, at ``at``."""

    at: float
    values: dict[str, dict[str, float]] = field(default_factory=dict)
    flush_sum: dict[str, float] = field(default_factory=dict)
    flush_count: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def scrape(urls: Iterable[str], timeout: float = 2.0) -> Sample:
    """One reading of every ``/metrics`` endpoint (a failing one is listed in ``errors``)."""
    from prometheus_client.parser import text_string_to_metric_families

    sample = Sample(time.monotonic())
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - the user's URL
                text = resp.read().decode()
            families = list(text_string_to_metric_families(text))
        except (OSError, ValueError) as exc:  # ValueError: not a URL, not Prometheus text
            sample.errors.append(f"{url}: {exc}")
            continue
        for family in families:
            for s in family.samples:
                if not s.name.startswith("cacheway_"):
                    continue
                ns = s.labels.get("namespace", "default")
                name = s.name[len("cacheway_"):]
                if name == "flush_seconds_sum":
                    sample.flush_sum[ns] = sample.flush_sum.get(ns, 0.0) + s.value
                elif name == "flush_seconds_count":
                    sample.flush_count[ns] = sample.flush_count.get(ns, 0.0) + s.value
                else:
                    name = name.removesuffix("_total")
                    row = sample.values.setdefault(ns, {})
                    row[name] = row.get(name, 0.0) + s.value
    return sample


def _rate(now: Sample, before: Sample | None, ns: str, name: str) -> float | None:
    if before is None or now.at <= before.at:
        return None
    old = before.values.get(ns, {}).get(name, 0.0)
    return max(0.0, now.values.get(ns, {}).get(name, 0.0) - old) / (now.at - before.at)


def _flush_ms(now: Sample, before: Sample | None, ns: str) -> str:
    count = now.flush_count.get(ns, 0.0) - (before.flush_count.get(ns, 0.0) if before else 0.0)
    total = now.flush_sum.get(ns, 0.0) - (before.flush_sum.get(ns, 0.0) if before else 0.0)
    return f"{1000 * total / count:.1f}" if count > 0 else "-"


def render(now: Sample, before: Sample | None, extra: list[tuple[str, str]]) -> Table:
    """The table of one refresh: a row per namespace, then the shared pieces."""
    from rich.table import Table

    per = "/s" if before is not None else " (total)"
    table = Table(title="cacheway top", title_justify="left")
    table.add_column("namespace", no_wrap=True)
    for name in RATES:
        table.add_column(_SHORT.get(name, name) + per, justify="right")
    table.add_column("hit %", justify="right")
    table.add_column("flush ms", justify="right")
    for name in (*TOTALS, *GAUGES):
        table.add_column(_SHORT.get(name, name), justify="right")
    for ns in sorted(now.values):
        row = now.values[ns]
        cells = []
        for name in RATES:
            rate = _rate(now, before, ns, name)
            cells.append(f"{rate:,.0f}" if rate is not None else f"{row.get(name, 0):,.0f}")
        reads = row.get("hits", 0.0) + row.get("misses", 0.0)
        cells.append(f"{100 * row.get('hits', 0.0) / reads:.1f}" if reads else "-")
        cells.append(_flush_ms(now, before, ns))
        for name in TOTALS:
            cells.append(f"{row.get(name, 0):,.0f}")
        cells.append(f"{row.get('dirty', 0):,.0f}")
        cells.append("[red]down[/]" if row.get("store_down", 0) else "up")
        table.add_row(ns, *cells)
    for label, value in extra:
        table.caption = ((table.caption + "\n") if table.caption else "") + f"{label}: {value}"
    for err in now.errors:
        table.caption = ((table.caption + "\n") if table.caption else "") + f"[red]{err}[/]"
    return table


Probe = Callable[[], tuple[str, str]]  # (label, what it shows); "failing: ..." when it failed


def _probes(args: argparse.Namespace) -> tuple[list[Probe], list[Callable[[], None]]]:
    """What ``top`` asks the store and the backend each refresh, and how to close them."""
    from cacheway._urls import backend_from_url, store_from_url
    from cacheway.backends.redis import RedisBackend
    from cacheway.backends.two_level import TwoLevelBackend

    probes: list[Probe] = []
    closing: list[Callable[[], None]] = []
    if args.store:
        store = store_from_url(args.store)
        closing.append(store.close)

        def store_probe() -> tuple[str, str]:
            started = time.perf_counter()
            try:
                store.fetch("", ["cacheway-top-probe"])
            except Exception as exc:  # noqa: BLE001 - shown, and tried again next refresh
                return "store", f"{FAILING}{_hide_password(str(exc), args.store)}[/]"
            return "store read", f"{1000 * (time.perf_counter() - started):.1f} ms"

        probes.append(store_probe)
    if args.backend:
        backend: Any = backend_from_url(args.backend)
        closing.append(backend.close)
        redis_level = backend.l2 if isinstance(backend, TwoLevelBackend) else backend
        if isinstance(redis_level, RedisBackend):
            client, prefix = redis_level.client, redis_level.prefix

            def backend_probe() -> tuple[str, str]:
                from redis.exceptions import RedisError

                n = 0
                cut = len(prefix)
                try:
                    for name in client.scan_iter(match=prefix.replace("*", r"\*") + "*",
                                                 count=1000):
                        if name[cut:cut + 1] == b"~":
                            continue  # the prefix's own bookkeeping (its version clock)
                        n += 1
                        if n >= _BACKEND_SCAN_LIMIT:
                            return "cached copies", f">= {n:,}"
                except RedisError as exc:  # shown, and tried again next refresh
                    return "backend", f"{FAILING}{_hide_password(str(exc), args.backend)}[/]"
                return "cached copies", f"{n:,}"

            probes.append(backend_probe)
    return probes, closing


def _hide_password(text: str, url: str) -> str:
    """``text`` without the password of ``url`` (a driver's message may quote it)."""
    from cacheway.backends.redis_client import scrub

    try:
        password = urlsplit(url).password
    except ValueError:
        return text
    return scrub(text, password)


def top(args: argparse.Namespace) -> int:
    """``cacheway top``: refresh until Ctrl-C (``--once``: print one table and exit)."""
    if not (args.metrics or args.store or args.backend):
        raise UsageError("nothing to watch: give --metrics URL (a process's /metrics), "
                         "--store URL and/or --backend URL")
    if args.interval <= 0:
        raise UsageError(f"argument --interval: must be > 0, not {args.interval}")
    probes, closing = _probes(args)
    out = console()
    try:
        before = None
        now = scrape(args.metrics or [])
        if args.once:
            if args.metrics:  # rates need two readings
                time.sleep(args.interval)
                before, now = now, scrape(args.metrics)
            shown = [p() for p in probes]
            out.print(render(now, before, shown))
            failed = now.errors or any(v.startswith(FAILING) for _, v in shown)
            return 1 if failed else 0
        from rich.live import Live

        with Live(render(now, None, [p() for p in probes]), console=out,
                  refresh_per_second=4) as live:
            while True:
                time.sleep(args.interval)
                before, now = now, scrape(args.metrics or [])
                live.update(render(now, before, [p() for p in probes]))
    except KeyboardInterrupt:
        return 0
    finally:
        for close in closing:
            close()
