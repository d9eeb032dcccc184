"""``cacheway demo`` (memory + SQLite in a temp dir) and ``cacheway bench`` (your store and
backend URLs): the same workloads, a progress bar, then the tables of :mod:`.demo.report`."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ._common import UsageError, check_output, console

if TYPE_CHECKING:
    from .demo.runner import Row, RunConfig

__all__ = ["bench", "demo"]


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

    from .demo.report import print_tables, to_json, write_json, write_plot
    from .demo.runner import run

    out = console()
    steps = len(cfg.workloads) * len(cfg.strategies) * (2 if cfg.crash else 1)
    started = time.perf_counter()
    with Progress(TextColumn("{task.description:<48}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console(stderr=True), transient=True
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


def demo(args: argparse.Namespace) -> int:
    """``cacheway demo``: every strategy on MemoryBackend + SQLiteStore in ``--path``."""
    from .demo.runner import RunConfig

    check_output(args.json, "--json")
    check_output(args.plot, "--plot")
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


def bench(args: argparse.Namespace) -> int:
    """``cacheway bench``: the demo's workloads on ``--store`` and ``--backend``."""
    from cacheway._urls import backend_from_url, store_from_url

    from .demo.runner import STRATEGIES, RunConfig, sqlite_path_of

    check_output(args.json, "--json")
    check_output(args.plot, "--plot")
    store_from_url(args.store).close()  # a bad URL fails here, before any work
    backend_from_url(args.backend).close()
    strategies = list(args.policies)
    if sqlite_path_of(args.store) is None:
        strategies = [s for s in strategies if STRATEGIES[s].textbook is None]
        if not strategies:
            raise UsageError("textbook baselines need a sqlite:///file store URL")
    directory = tempfile.mkdtemp(prefix="cacheway-bench-")
    cfg = RunConfig(workloads=args.workload, strategies=strategies, ops=args.ops,
                    seed=args.seed, directory=directory, store_url=args.store,
                    backend_url=args.backend, processes=args.processes, crash=False)
    try:
        return _execute(cfg, "cacheway bench", args.json, args.plot)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
