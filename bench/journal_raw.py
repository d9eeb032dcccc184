"""Raw group-commit throughput of the journal alone (no cache, no store).

Each thread does ``append`` + ``wait`` with ``fsync="always"``, so every write it counts is
on disk when counted. With group commit, concurrent writers share each sync, so 8 threads
reach several times one thread's durable writes/s; the table shows writes per sync.

    python bench/journal_raw.py                  # journal in a temporary dir under .
    python bench/journal_raw.py --dir /mnt/ssd --threads 1 8 32 --seconds 3

Results depend on the disk's fsync latency; run on the disk the journal will live on
(a tmpfs makes every fsync free and the comparison meaningless). The last row runs the
first row's thread count again (an A/A: how far two runs of the same thing differ).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cacheway.writeback.journal import SET, Journal


def run(directory: str, threads: int, seconds: float, payload: bytes) -> dict[str, Any]:
    latencies: list[list[float]] = [[] for _ in range(threads)]
    stop = threading.Event()
    path = Path(directory) / f"bench-{threads}-{time.monotonic_ns()}.wal"  # a fresh file
    with Journal(path, fsync="always") as journal:
        start_syncs = journal.syncs
        barrier = threading.Barrier(threads + 1)

        def writer(slot: int) -> None:
            mine = latencies[slot]
            barrier.wait()
            i = 0
            while not stop.is_set():
                t0 = time.perf_counter()
                journal.wait(journal.append("bench", f"{slot}:{i}", SET, payload))
                mine.append(time.perf_counter() - t0)
                i += 1

        workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
        for w in workers:
            w.start()
        barrier.wait()
        began = time.perf_counter()
        stop.wait(seconds)
        stop.set()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - began
        syncs = journal.syncs - start_syncs
    flat = sorted(x for per in latencies for x in per)
    writes = len(flat)

    def pct(p: float) -> float:
        return flat[min(writes - 1, int(p * writes))] * 1000

    return {
        "threads": threads,
        "writes": writes,
        "per_s": writes / elapsed,
        "syncs": syncs,
        "per_sync": writes / max(syncs, 1),
        "p50": statistics.median(flat) * 1000,
        "p90": pct(0.90),
        "p99": pct(0.99),
        "max": flat[-1] * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default=".", help="where to put the journal (default: .)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--payload", type=int, default=100, help="bytes per record")
    args = parser.parse_args()
    if min(args.threads) < 1 or args.seconds <= 0 or args.payload < 0:
        parser.error("--threads must be >= 1, --seconds > 0, --payload >= 0")
    payload = b"x" * args.payload
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="cacheway-bench-") as tmp:
        rows = [run(tmp, n, args.seconds, payload) for n in args.threads]
        # A/A: the first row once more, last (the noise of one run against another)
        again = run(tmp, args.threads[0], args.seconds, payload)
    base = rows[0]["per_s"]
    print(f"fsync='always', {args.payload}-byte records, {args.seconds:g} s per row; "
          f"x base: durable/s against the first row ({args.threads[0]} threads); the last "
          f"row (A/A) runs it again")
    print(
        f"{'threads':>7} {'writes':>8} {'durable/s':>10} {'x base':>7} {'syncs':>7} "
        f"{'writes/sync':>11} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7}"
    )
    for r in [*rows, {**again, "threads": f"A/A {again['threads']}"}]:
        print(
            f"{r['threads']:>7} {r['writes']:>8} {r['per_s']:>10.0f} {r['per_s'] / base:>7.1f} "
            f"{r['syncs']:>7} {r['per_sync']:>11.1f} {r['p50']:>7.2f} {r['p90']:>7.2f} "
            f"{r['p99']:>7.2f} {r['max']:>7.2f}"
        )


if __name__ == "__main__":
    main()
