"""``cacheway check``: how many cached entries disagree with the store (see
:func:`cacheway.check.check`), as a table and optionally JSON."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

from ._common import UsageError, check_output, console

__all__ = ["check"]


def check(args: argparse.Namespace) -> int:
    """``cacheway check``: sample, compare, print the report; exit 1 on disagreement."""
    import json

    from rich.markup import escape
    from rich.table import Table

    from cacheway._urls import _redact, backend_from_url, missing_table, sqlite_path, store_from_url
    from cacheway.backends.two_level import TwoLevelBackend
    from cacheway.check import check as check_consistency

    check_output(args.json, "--json")
    if args.rounds < 0:
        raise UsageError(f"argument --rounds: must be an int >= 0, not {args.rounds}")
    namespaces = list(dict.fromkeys(args.namespaces or [""]))
    backend = backend_from_url(args.backend)
    closing: list[Callable[[], None]] = [backend.close]
    if isinstance(backend, TwoLevelBackend):
        # the URL made its L2 too, and closing a TwoLevelBackend leaves its levels open
        closing.append(backend.l2.close)
    try:
        path = sqlite_path(args.store)
        if path is not None and path != ":memory:" and not os.path.exists(path):
            # Opening it would create an empty database and report nothing to compare.
            raise UsageError(f"argument --store: no SQLite database at {path!r}: check "
                             "the path (relative paths start from the current directory)")
        missing = missing_table(args.store)
        if missing is not None:
            # Opening the store would create it (and report nothing to compare).
            raise UsageError(f"argument --store: the database has no table {missing!r}: "
                             "check ?table= (the default is 'cacheway')")
        store = store_from_url(args.store)
        closing.insert(0, store.close)
        report = check_consistency(store, backend, namespaces=namespaces, sample=args.sample,
                                  quiet=args.quiet, rounds=args.rounds, seed=args.seed)
    finally:
        for close in closing:
            close()
    out = console()
    table = Table(title="cacheway check", title_justify="left", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", justify="right")
    table.add_row("store", escape(_redact(args.store)))
    table.add_row("backend", escape(_redact(args.backend)))
    table.add_row("namespaces", escape(", ".join(ns or "default" for ns in namespaces)))
    table.add_row("keys sampled", f"{report.sampled:,}")
    table.add_row("cached entries compared", f"{report.checked:,}")
    bad = f"{report.disagreeing:,}"
    table.add_row("disagreeing", f"[red]{bad}[/]" if report.disagreeing else f"[green]{bad}[/]")
    table.add_row("nines", f"{report.nines:.2f}")
    table.add_row("quiet period", f"{report.within_seconds:g} s")
    table.add_row("re-check rounds used", str(report.rounds))
    out.print(table)
    if report.examples:
        ex = Table(title="disagreeing entries (first few)", title_justify="left")
        for name in ("level", "namespace", "key", "cached", "version", "stored", "version"):
            ex.add_column(name)
        for e in report.examples:
            stored = repr(e.stored) if e.stored_found else "(no row)"
            ex.add_row(e.level, e.namespace or "default", escape(e.key),
                       escape(repr(e.cached)[:60]), str(e.cached_version),
                       escape(stored[:60]), str(e.stored_version))
        out.print(ex)
    out.print(str(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, indent=2, default=repr)
        out.print(f"wrote {args.json}")
    return 1 if report.disagreeing else 0
