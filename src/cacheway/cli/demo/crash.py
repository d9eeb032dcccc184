"""The "writes lost after a crash" column: ``kill -9`` a child mid-workload, then count.

A child (:mod:`.child`) runs the workload on its own SQLite file and prints every
acknowledged write. After a random delay the parent sends SIGKILL, reopens the store
(for journalled strategies: reopens the cache, which replays the journal) and counts the
keys whose latest acknowledged value the store does not have. Values carry increasing
sequence numbers, so a store holding a *later* value (written, not yet acknowledged when
the kill landed) is not a loss.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from cacheway import open as cw_open

from . import workloads as wl
from .runner import STRATEGIES, Row, Strategy, Target

if TYPE_CHECKING:
    from .runner import RunConfig

__all__ = ["crash_trial", "crash_trials"]

_READY_TIMEOUT = 30.0  # a cold interpreter on a loaded CI box can be slow to import


def _parse_acks(data: bytes) -> tuple[dict[str, int], int]:
    """Latest acknowledged seq per key, and the number of acknowledged writes."""
    acked: dict[str, int] = {}
    count = 0
    lines = data.split(b"\n")[:-1]  # the last piece has no newline: never fully written
    for line in lines:
        key, sep, seq = line.decode().partition("\t")
        if not sep or key == "skip":
            continue
        acked[key] = int(seq)
        count += 1
    return acked, count


def _verify(strategy: Strategy, target: Target, acked: dict[str, int]) -> int:
    """Reopen what the child left (replaying a journal) and count lost keys."""
    if strategy.fsync is not None:
        cache = cw_open(store=target.store_url, backend="memory://", policy="write-back",
                        journal=target.journal, fsync=strategy.fsync)
        cache.close()
    from cacheway.stores.sqlite import SQLiteStore

    assert target.sqlite_path is not None
    store = SQLiteStore(target.sqlite_path)
    try:
        found = store.load_many(list(acked))
    finally:
        store.close()
    lost = 0
    for key, seq in acked.items():
        have = wl.seq_of(found.get(key))
        if have is None or have < seq:
            lost += 1
    return lost


def crash_trial(strategy: Strategy, workload: str, seed: int, directory: str, delay: float,
                max_ops: int = 200_000) -> dict[str, Any]:
    """Run, kill -9 after ``delay`` seconds of workload, count. Returns crash_* metrics."""
    base = os.path.join(directory, f"crash-{workload}-{strategy.name}")
    db = f"{base}.db"
    capacity = wl.spec(workload).capacity
    journal = f"{base}.wal" if strategy.fsync else None
    target = Target(f"sqlite:///{db}", f"memory://?max_entries={capacity}", journal, db)
    job = {"strategy": strategy.name, "workload": workload, "seed": seed,
           "target": dataclasses.asdict(target), "max_ops": max_ops, "max_seconds": 20.0}
    out_path, err_path = f"{base}.acks", f"{base}.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        child = subprocess.Popen(
            [sys.executable, "-m", "cacheway.cli.demo.child", "crash", json.dumps(job)],
            stdout=out, stderr=err,
        )
    try:
        deadline = time.monotonic() + _READY_TIMEOUT
        while True:
            with open(out_path, "rb") as f:
                head = f.read(64)
            if head.startswith((b"ready\n", b"skip\t")) or child.poll() is not None:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("crash child did not start in time")
            time.sleep(0.005)
        if head.startswith(b"skip\t"):
            return {"crash_note": head[5:].decode().strip()}
        if child.poll() is not None:
            with open(err_path, "rb") as f:
                tail = f.read().decode(errors="replace").strip().splitlines()
            return {"crash_note": f"child failed: {tail[-1] if tail else child.returncode}"}
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    with open(out_path, "rb") as f:
        acked, count = _parse_acks(f.read())
    lost = _verify(strategy, target, acked)
    return {"lost_writes": lost, "crash_acked_keys": len(acked), "crash_acked_writes": count,
            "crash_after_s": delay}


def crash_trials(cfg: RunConfig, rows: Sequence[Row], advance: Callable[[str], None]) -> None:
    """Fill the crash column of ``rows``, two children at a time."""
    rng = random.Random(cfg.seed)
    jobs = [(row, rng.uniform(*cfg.crash_seconds)) for row in rows]

    def one(job: tuple[Row, float]) -> dict[str, Any]:
        row, delay = job
        try:
            return crash_trial(STRATEGIES[row.strategy], row.workload, cfg.seed,
                               cfg.directory, delay)
        except Exception as exc:  # noqa: BLE001 - one failed trial is reported in its row
            return {"crash_note": f"crash trial failed: {exc}"}

    workers = min(2, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for (row, _), result in zip(jobs, pool.map(one, jobs)):
            advance(f"crash: {row.workload}: {row.strategy}")
            row.metrics.update(result)
