"""``cacheway journal inspect|replay``: look into a write-back journal, or apply its
unacknowledged writes to a store by hand."""

from __future__ import annotations

import argparse
import os
from typing import Any

from ._common import UsageError, console

__all__ = ["inspect", "replay"]


def inspect(args: argparse.Namespace) -> int:
    """``cacheway journal inspect PATH``: exit 1 when the journal is damaged."""
    from rich.table import Table

    report = _existing(args.path)
    out = console()
    table = Table(title=f"journal {report.path}", title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("id", report.id or "-")
    table.add_row("records to replay", f"{report.records:,}")
    table.add_row("first seq to replay", "-" if report.first_seq is None else str(report.first_seq))
    table.add_row("last seq", str(report.last_seq))
    table.add_row("checkpoint seq", str(report.checkpoint_seq))
    table.add_row("bytes", f"{report.bytes:,}")
    table.add_row("segments", "\n".join(f"{name}  {size:,} B" for name, size in report.segments)
                  or "-")
    table.add_row("damage", "\n".join(f"[red]{d}[/]" for d in report.damage) or "[green]none[/]")
    out.print(table)
    return 1 if report.damage else 0


def replay(args: argparse.Namespace) -> int:
    """``cacheway journal replay PATH --store URL [--backend URL]``: apply what the store
    lacks; with a backend, drop its copies of the replayed keys (they may be stale)."""
    from rich.table import Table

    from cacheway._urls import backend_from_url, store_from_url
    from cacheway.writeback.journal import Journal
    from cacheway.writeback.recovery import replay as replay_journal

    _existing(args.path)
    store = store_from_url(args.store)
    backend = backend_from_url(args.backend) if args.backend else None
    dropped = 0

    def invalidate(keys: list[tuple[str, str]]) -> None:
        nonlocal dropped
        assert backend is not None
        backend.delete_many([f"{ns}:{key}" for ns, key in keys])
        dropped += len(keys)

    try:
        with Journal(args.path) as journal:
            report = replay_journal(journal, store,
                                    invalidate=invalidate if backend is not None else None)
    finally:
        store.close()
        if backend is not None:
            backend.close()
    table = Table(title=f"replayed {args.path} into {args.store}", title_justify="left",
                  show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", justify="right")
    table.add_row("records read", f"{report.records:,}")
    table.add_row("skipped (already applied)", f"{report.skipped:,}")
    table.add_row("writes applied", f"{report.applied:,}")
    table.add_row("batches", f"{report.batches:,}")
    if backend is not None:
        table.add_row("shared copies dropped", f"{dropped:,}")
    console().print(table)
    return 0


def _existing(path: str) -> Any:
    """The inspection of the journal at ``path``; UsageError when there is none (opening
    a directory as a journal would turn it into an empty one)."""
    from cacheway.writeback.journal import inspect as inspect_journal

    if not os.path.isdir(path):
        raise UsageError(f"no journal at {path!r} (a journal is a directory)")
    found = inspect_journal(path)
    if found.id is None and not found.segments:
        raise UsageError(f"no journal at {path!r} (the directory holds no journal)")
    return found
