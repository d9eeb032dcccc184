"""The ``cacheway`` command: ``demo``, ``bench``, ``check``, ``top`` and ``journal
inspect|replay``.

``cacheway demo`` measures the write-policy comparison table on an embedded cache
(memory + SQLite in a temp dir); ``cacheway bench`` runs the same workloads on the
store and backend URLs you give it. A bad option or URL prints one line
``cacheway: error: ...`` and exits 2. This module parses the command line; the commands
are in :mod:`.run_cmd`, :mod:`.check_cmd` and :mod:`.journal_cmd`.

>>> main(["demo", "--ops", "0"])  # stderr: cacheway: error: argument --ops: must be ...
2
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from typing import NoReturn

from cacheway.errors import CachewayError

from . import check_cmd, journal_cmd, run_cmd, top_cmd, worker_cmd
from ._common import UsageError, positive_int, seconds

__all__ = ["main"]

# all four take 30-50 s on 2 busy cores (fsync-bound rows dominate); two keep the first
# run well under a minute, and `--workload all` is one option away
_DEFAULT_WORKLOADS = "read-heavy,counters"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _namespace(text: str) -> str:
    if text in ("", "default"):
        return ""
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,64}", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a namespace name: 1-64 letters, digits, '_', '-' or '.' "
            "('' or default for the default namespace)")
    return text


def _workloads(text: str) -> list[str]:
    from .demo.workloads import WORKLOADS

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
    from .demo.runner import STRATEGIES

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
    p.add_argument("--ops", type=positive_int, default=ops, metavar="N",
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
    from cacheway import __version__

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
    bench.add_argument("--processes", type=positive_int, default=1, metavar="N",
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
    check.add_argument("--sample", type=positive_int, default=1000, metavar="N",
                       help="keys to sample (default 1000)")
    check.add_argument("--quiet", type=seconds, default=1.0, metavar="S",
                       help="seconds a disagreement may take to settle (default 1.0; above a "
                            "write-back max_delay)")
    check.add_argument("--rounds", type=int, default=3, metavar="N",
                       help="re-checks of disagreeing entries (default 3)")
    check.add_argument("--seed", type=int, default=None, help="sampling seed")
    check.add_argument("--json", metavar="FILE", help="also write the report to FILE as JSON")

    top = sub.add_parser(
        "top", help="a live view of running caches (their /metrics, the store, the backend)",
        description="Refresh a table of each namespace's rates (hits, misses, loads, writes, "
                    "store writes per second), hit ratio, flush time, dirty entries and "
                    "store errors, summed over the Prometheus endpoints given (one per "
                    "process: cw.metrics.PrometheusCollector), with the store's read time "
                    "and the number of copies under the backend's prefix. Ctrl-C stops it.",
    )
    top.add_argument("--metrics", action="append", metavar="URL",
                     help="a process's metrics endpoint, e.g. http://127.0.0.1:9100/metrics "
                          "(repeatable)")
    top.add_argument("--store", metavar="URL", help="store URL to time a read of")
    top.add_argument("--backend", metavar="URL",
                     help="backend URL whose cached copies to count, e.g. "
                          "redis://127.0.0.1:6379/0?prefix=cw:")
    top.add_argument("--interval", type=float, default=1.0, metavar="S",
                     help="seconds between refreshes (default 1)")
    top.add_argument("--once", action="store_true",
                     help="print one table (rates over one interval) and exit")

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
    replay.add_argument("--backend", metavar="URL",
                        help="the shared backend of that cache (redis://...?prefix=cw:): "
                             "the copies of every replayed key are dropped from it")
    worker_cmd.add_parser(sub)
    return parser


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": run_cmd.demo,
    "bench": run_cmd.bench,
    "check": check_cmd.check,
    "journal inspect": journal_cmd.inspect,
    "journal replay": journal_cmd.replay,
    "top": top_cmd.top,
    "worker": worker_cmd.worker,
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
    except (UsageError, CachewayError) as exc:
        print(f"cacheway: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        print(f"cacheway: error: {exc}; install the CLI extra: pip install 'cacheway[cli]'",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cacheway: interrupted", file=sys.stderr)
        return 130
