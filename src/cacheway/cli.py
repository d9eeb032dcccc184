"""The ``cacheway`` command: ``demo``, ``bench``, ``check`` and ``journal inspect|replay``.

``cacheway demo`` measures the write-policy comparison table on an embedded cache
(memory + SQLite in a temp dir); ``cacheway bench`` runs the same workloads on the
store and backend URLs you give it. A bad option or URL prints one line
``cacheway: error: ...`` and exits 2.

>>> main(["demo", "--ops", "0"])  # stderr: cacheway: error: argument --ops: must be ...
2
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, NoReturn

from .errors import CachewayError

if TYPE_CHECKING:
    from rich.console import Console

    from ._demo import Row, RunConfig

__all__ = ["main"]

# all four take 30-50 s on 2 busy cores (fsync-bound rows dominate); two keep the first
# run well under a minute, and `--workload all` is one option away
_DEFAULT_WORKLOADS = "read-heavy,counters"


class _UsageError(Exception):
    """A bad command line: one line on stderr, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, not {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, not {text!r}")
    return value


def _namespace(text: str) -> str:
    if text in ("", "default"):
        return ""
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a namespace name: 1-64 letters, digits, '_', '-' or '.' "
            "('' or default for the default namespace)")
    return text


def _workloads(text: str) -> list[str]:
    from ._demo_workloads import WORKLOADS

    names = list(WORKLOADS) if text.strip() == "all" else [
        t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in WORKLOADS]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown workload {', '.join(map(repr, bad)) or repr(text)}: use all or a comma "
            f"list of {', '.join(WORKLOADS)}"
        )
    return list(dict.fromkeys(names))


_ALIASES = {
    "write-behind": "write-back",
    "journal-always": "write-back+journal-always",
    "journal-everysec": "write-back+journal-everysec",
    "always": "write-back+journal-always",
    "everysec": "write-back+journal-everysec",
    "textbook": "textbook-write-through,textbook-write-back",
    "ours": "write-through,write-back,write-around,write-back+journal-always,"
            "write-back+journal-everysec",
}


def _policies(text: str) -> list[str]:
    from ._demo import STRATEGIES

    names: list[str] = []
    for part in text.split(","):
        name = part.strip().lower().replace("_", "-")
        if not name:
            continue
        names.extend(_ALIASES.get(name, name).split(","))
    if text.strip() == "all":
        names = list(STRATEGIES)
    bad = [n for n in names if n not in STRATEGIES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f"unknown policy {', '.join(map(repr, bad)) or repr(text)}: use all, ours, "
            f"textbook or a comma list of {', '.join(STRATEGIES)}"
        )
    return list(dict.fromkeys(names))


def _add_run_options(p: argparse.ArgumentParser, ops: int) -> None:
    p.add_argument("--workload", type=_workloads, default=_workloads(_DEFAULT_WORKLOADS),
                   metavar="NAMES",
                   help="all, or a comma list of read-heavy (90%% Zipf reads / 10%% writes), "
                        "write-heavy (10/90), counters (incr on 16 hot keys), bulk (write "
                        "once, rarely read); default: read-heavy,counters")
    p.add_argument("--ops", type=_positive_int, default=ops, metavar="N",
                   help=f"operations per workload and strategy (default {ops})")
    p.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    p.add_argument("--policies", type=_policies, default=_policies("all"), metavar="LIST",
                   help="comma list of write-through, write-back, write-around, "
                        "write-back+journal-always, write-back+journal-everysec, "
                        "textbook-write-through, textbook-write-back (or all, ours, "
                        "textbook); default: all")
    p.add_argument("--json", metavar="FILE", help="also write every number to FILE as JSON")
    p.add_argument("--plot", metavar="FILE",
                   help="also write a PNG of latency distributions and bar charts (matplotlib)")


def _parser() -> _Parser:
    from . import __version__

    parser = _Parser(
        prog="cacheway",
        description="Measure and operate cacheway caches: write-through, write-back and "
                    "write-around in front of a database.",
    )
    parser.add_argument("--version", action="version", version=f"cacheway {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    demo = sub.add_parser(
        "demo", help="measure every write policy on an embedded cache (memory + SQLite)",
        description="Run seeded workloads under every write policy and two textbook "
                    "baselines on MemoryBackend + SQLiteStore, and print a table per "
                    "workload of what was measured, including writes lost when a child "
                    "running the workload is killed with kill -9.",
    )
    _add_run_options(demo, ops=2000)
    demo.add_argument("--path", metavar="DIR",
                      help="keep the SQLite files and journals in DIR (default: a temp dir, "
                           "removed afterwards)")
    demo.add_argument("--no-crash", action="store_true",
                      help="skip the kill -9 column (saves a few seconds)")

    bench = sub.add_parser(
        "bench", help="run the demo workloads on your own store and backend URLs",
        description="Run the demo workloads on any store/backend URL cacheway.open accepts "
                    "(sqlite:///app.db, sqlite://:memory:, memory://...). Keys get a unique "
                    "prefix per run, so existing rows are left alone.",
    )
    bench.add_argument("--store", required=True, metavar="URL",
                       help="store URL, e.g. sqlite:///bench.db")
    bench.add_argument("--backend", default="memory://?max_entries=250", metavar="URL",
                       help="backend URL (default memory://?max_entries=250)")
    bench.add_argument("--processes", type=_positive_int, default=1, metavar="N",
                       help="concurrent client processes, each on its own keys (default 1)")
    _add_run_options(bench, ops=2000)

    check = sub.add_parser(
        "check", help="count cached entries that disagree with the store",
        description="Sample keys cached in the backend (and rows of the store), compare each "
                    "cached value with the store's, re-check disagreeing ones after a quiet "
                    "period, and report \"N nines consistent within M seconds\". Exits 0 "
                    "when every sampled entry agrees, 1 when some disagree.",
    )
    check.add_argument("--store", required=True, metavar="URL",
                       help="store URL, e.g. postgresql://user@host/db?table=cacheway")
    check.add_argument("--backend", required=True, metavar="URL",
                       help="backend URL, e.g. redis://127.0.0.1:6379/0?prefix=cw:")
    check.add_argument("--namespace", dest="namespaces", action="append", type=_namespace,
                       metavar="NAME",
                       help="namespace to check, repeatable (default: the default namespace)")
    check.add_argument("--sample", type=_positive_int, default=1000, metavar="N",
                       help="keys to sample (default 1000)")
    check.add_argument("--quiet", type=_seconds, default=1.0, metavar="S",
                       help="seconds a disagreement may take to settle (default 1.0; above a "
                            "write-back max_delay)")
    check.add_argument("--rounds", type=int, default=3, metavar="N",
                       help="re-checks of disagreeing entries (default 3)")
    check.add_argument("--seed", type=int, default=None, help="sampling seed")
    check.add_argument("--json", metavar="FILE", help="also write the report to FILE as JSON")

    journal = sub.add_parser("journal", help="look into or replay a write-back journal",
                             description="Inspect or replay a write-back journal directory.")
    jsub = journal.add_subparsers(dest="journal_command", metavar="ACTION",
                                  parser_class=_Parser)
    jsub.required = True
    inspect = jsub.add_parser(
        "inspect", help="describe a journal without changing it",
        description="Print a journal's id, segments, records waiting for replay, "
                    "checkpoint and damage. Exits 1 when damage is found.",
    )
    inspect.add_argument("path", metavar="PATH", help="the journal directory (e.g. app.wal)")
    replay = jsub.add_parser(
        "replay", help="apply a journal's unacknowledged writes to a store",
        description="Open the journal, apply the records the store has not applied yet "
                    "(idempotent: applied records are skipped) and checkpoint it.",
    )
    replay.add_argument("path", metavar="PATH", help="the journal directory (e.g. app.wal)")
    replay.add_argument("--store", required=True, metavar="URL",
                        help="store URL the journal's cache wrote to, e.g. sqlite:///app.db")
    return parser


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 160
    return Console(file=stream, width=width, highlight=False)


@contextmanager
def _quiet_replays() -> Iterator[None]:
    # the crash column reopens journals on purpose; their "replayed N writes" warnings
    # would interleave with the progress bar
    log = logging.getLogger("cacheway")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _execute(cfg: RunConfig, command: str, json_path: str | None, plot_path: str | None
             ) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ._demo import run
    from ._demo_report import print_tables, to_json, write_json, write_plot

    out = _console()
    steps = len(cfg.workloads) * len(cfg.strategies) * (2 if cfg.crash else 1)
    started = time.perf_counter()
    with Progress(TextColumn("{task.description:<48}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=_console(stderr=True), transient=True
                  ) as progress, _quiet_replays():
        task = progress.add_task("starting", total=steps)

        def advance(what: str) -> None:
            progress.update(task, advance=1, description=what)

        rows: list[Row] = run(cfg, advance)
        progress.update(task, completed=steps)
    elapsed = time.perf_counter() - started
    print_tables(out, rows, cfg)
    out.print(f"[dim]{command}: {elapsed:.1f} s[/]")
    if json_path:
        write_json(json_path, to_json(rows, cfg, command, elapsed))
        out.print(f"wrote {json_path}")
    if plot_path:
        write_plot(plot_path, rows, cfg)
        out.print(f"wrote {plot_path}")
    return 0


def _check_output(path: str | None, option: str) -> None:
    if path is None:
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise _UsageError(f"{option} {path!r}: directory {parent!r} does not exist")


def _demo(args: argparse.Namespace) -> int:
    from ._demo import RunConfig

    _check_output(args.json, "--json")
    _check_output(args.plot, "--plot")
    if args.path is not None:
        os.makedirs(args.path, exist_ok=True)
        directory, remove = args.path, False
    else:
        directory, remove = tempfile.mkdtemp(prefix="cacheway-demo-"), True
    cfg = RunConfig(workloads=args.workload, strategies=args.policies, ops=args.ops,
                    seed=args.seed, directory=directory, crash=not args.no_crash)
    try:
        return _execute(cfg, "cacheway demo", args.json, args.plot)
    finally:
        if remove:
            shutil.rmtree(directory, ignore_errors=True)


def _bench(args: argparse.Namespace) -> int:
    from ._demo import STRATEGIES, RunConfig, sqlite_path_of
    from ._urls import backend_from_url, store_from_url

    _check_output(args.json, "--json")
    _check_output(args.plot, "--plot")
    store_from_url(args.store).close()  # a bad URL fails here, before any work
    backend_from_url(args.backend).close()
    strategies = list(args.policies)
    if sqlite_path_of(args.store) is None:
        strategies = [s for s in strategies if STRATEGIES[s].textbook is None]
        if not strategies:
            raise _UsageError("textbook baselines need a sqlite:///file store URL")
    directory = tempfile.mkdtemp(prefix="cacheway-bench-")
    cfg = RunConfig(workloads=args.workload, strategies=strategies, ops=args.ops,
                    seed=args.seed, directory=directory, store_url=args.store,
                    backend_url=args.backend, processes=args.processes, crash=False)
    try:
        return _execute(cfg, "cacheway bench", args.json, args.plot)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _check(args: argparse.Namespace) -> int:
    import json

    from rich.markup import escape
    from rich.table import Table

    from ._urls import _redact, backend_from_url, store_from_url
    from .check import check

    _check_output(args.json, "--json")
    if args.rounds < 0:
        raise _UsageError(f"argument --rounds: must be an int >= 0, not {args.rounds}")
    namespaces = list(dict.fromkeys(args.namespaces or [""]))
    store = store_from_url(args.store)
    closing: list[Callable[[], None]] = [store.close]
    try:
        backend = backend_from_url(args.backend)
        closing[:0] = [backend.close]
        l2 = getattr(backend, "_owned_l2", None)
        if l2 is not None:
            closing.append(l2.close)
        report = check(store, backend, namespaces=namespaces, sample=args.sample,
                       quiet=args.quiet, rounds=args.rounds, seed=args.seed)
    finally:
        for close in closing:
            close()
    out = _console()
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


def _journal_inspect(args: argparse.Namespace) -> int:
    from rich.table import Table

    from .writeback.journal import inspect

    report = inspect(args.path)
    out = _console()
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


def _journal_replay(args: argparse.Namespace) -> int:
    from rich.table import Table

    from ._urls import store_from_url
    from .writeback.journal import Journal, inspect
    from .writeback.recovery import replay

    if not os.path.isdir(args.path):
        raise _UsageError(f"no journal at {args.path!r} (a journal is a directory)")
    found = inspect(args.path)
    if found.id is None and not found.segments:
        # opening would turn any directory into an empty journal: refuse instead
        raise _UsageError(f"no journal at {args.path!r} (the directory holds no journal)")
    store = store_from_url(args.store)
    try:
        with Journal(args.path) as journal:
            report = replay(journal, store)
    finally:
        store.close()
    table = Table(title=f"replayed {args.path} into {args.store}", title_justify="left",
                  show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", justify="right")
    table.add_row("records read", f"{report.records:,}")
    table.add_row("skipped (already applied)", f"{report.skipped:,}")
    table.add_row("writes applied", f"{report.applied:,}")
    table.add_row("batches", f"{report.batches:,}")
    _console().print(table)
    return 0


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": _demo,
    "bench": _bench,
    "check": _check,
    "journal inspect": _journal_inspect,
    "journal replay": _journal_replay,
}


def main(argv: list[str] | None = None) -> int:
    """Run the ``cacheway`` command with ``argv`` (default ``sys.argv[1:]``); the exit code."""
    try:
        args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
        name = args.command
        if name == "journal":
            name = f"journal {args.journal_command}"
        return _COMMANDS[name](args)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except (_UsageError, CachewayError) as exc:
        print(f"cacheway: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"cacheway: error: {exc}; install the CLI extra: pip install 'cacheway[cli]'",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cacheway: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
