"""``cacheway worker``: apply a queue's accepted writes (``WriteBack(queue=...)``) to a store.

``cacheway worker --queue redis://... --queue-name NAME --store URL [--processes N]
[--claim-after S] [--partitions P]`` runs queue consumers until SIGTERM or SIGINT; then
each finishes the batch in hand, acknowledges it, gives its partitions back and the
command exits 0. ``--processes N`` starts N consumer processes (each takes its share of
the partitions) and passes SIGTERM on to them. A status line (entries applied,
partitions held, the queue's depth and largest lag over every partition, dead letters)
goes to stderr every ``--status-every`` seconds (0: never).
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from ._common import positive_int, positive_seconds

__all__ = ["add_parser", "worker"]


def add_parser(sub: Any) -> None:
    """Add ``worker`` to the ``cacheway`` subcommands."""
    p = sub.add_parser(
        "worker", help="apply a Redis queue's write-behind entries to a store",
        description="Run consumers of a WriteBack(queue=...) queue: each takes a share of "
                    "the partitions, applies their entries to the store (exactly once: the "
                    "store records each partition's applied stream id) and reclaims a dead "
                    "consumer's entries after --claim-after seconds. SIGTERM: finish the "
                    "batch in hand, acknowledge it, exit 0.")
    p.add_argument("--queue", required=True, metavar="URL",
                   help="the queue's Redis, e.g. redis://127.0.0.1:6379/0")
    p.add_argument("--queue-name", required=True, metavar="NAME",
                   help="the policy's queue_name")
    p.add_argument("--store", required=True, metavar="URL",
                   help="store URL, e.g. postgresql://user@host/db?table=cacheway")
    p.add_argument("--partitions", type=positive_int, default=16, metavar="P",
                   help="the policy's partitions (default 16)")
    p.add_argument("--processes", type=positive_int, default=1, metavar="N",
                   help="consumer processes (default 1)")
    p.add_argument("--claim-after", type=positive_seconds, default=30.0, metavar="S",
                   help="seconds before a silent consumer's partitions are taken over "
                        "(default 30)")
    # 2000: a 20,000-entry drain to PostgreSQL took 0.92 s against 1.42 s at 500 (the
    # journal mark and the round trips are per batch); see bench/distributed.py
    p.add_argument("--batch-size", type=positive_int, default=2000, metavar="N",
                   help="entries read per partition and store transaction (default 2000)")
    p.add_argument("--status-every", type=float, default=5.0, metavar="S",
                   help="seconds between status lines on stderr (0: none; default 5)")


def _children(args: argparse.Namespace) -> int:
    cmd = [sys.executable, "-m", "cacheway.cli", "worker", "--queue", args.queue,
           "--queue-name", args.queue_name, "--store", args.store,
           "--partitions", str(args.partitions), "--processes", "1",
           "--claim-after", str(args.claim_after), "--batch-size", str(args.batch_size),
           "--status-every", str(args.status_every)]
    # A child ignores SIGTERM until it has installed its own handler (a signal that
    # came while it was importing would kill it mid-start); the parent repeats a
    # forwarded signal until every child has exited.
    procs = [subprocess.Popen(cmd, preexec_fn=_ignore_term) for _ in range(args.processes)]
    stopping: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    sent_at = 0.0
    while any(proc.poll() is None for proc in procs):
        if stopping and time.monotonic() - sent_at > 3.0:
            sent_at = time.monotonic()
            for proc in procs:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
        time.sleep(0.1)
    return max((proc.returncode for proc in procs), key=abs)


def _ignore_term() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def worker(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT; 0 once every consumer finished its batch."""
    if args.processes > 1:
        return _children(args)
    from cacheway import ConfigError
    from cacheway._urls import store_from_url
    from cacheway.queue import Consumer, Names
    from cacheway.queue.connect import connect

    if not args.queue_name or any(c in args.queue_name for c in "{}: \n"):
        raise ConfigError(f"--queue-name must be a short name without '{{', '}}', ':' or "
                          f"spaces, not {args.queue_name!r}")
    # No resend of a read whose reply was lost: its entries would wait unseen.
    client, where, _, _ = connect(args.queue, resend=False)
    store = store_from_url(args.store)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    consumer = Consumer(client, Names(args.queue_name, args.partitions), store,
                        batch_size=args.batch_size, claim_after=args.claim_after)
    status = threading.Thread(target=_status, args=(consumer, client, stop,
                                                    args.status_every), daemon=True)
    if args.status_every > 0:
        status.start()
    print(f"cacheway worker {consumer.name}: queue {args.queue_name!r} on {where}, "
          f"{args.partitions} partitions", file=sys.stderr, flush=True)
    try:
        consumer.run(stop)
    finally:
        store.close()
        client.close()
        # Python restores SIGTERM's default action as it exits: a repeated signal from
        # a parent must not turn this clean exit into a kill.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print(f"cacheway worker {consumer.name}: stopped; {consumer.applied} entries applied",
          file=sys.stderr, flush=True)
    return 0


def _status(consumer: Any, client: Any, stop: threading.Event, every: float) -> None:
    from cacheway.queue.status import queue_status, summary

    started = time.monotonic()
    while not stop.wait(every):
        rate = consumer.applied / max(1e-9, time.monotonic() - started)
        c = consumer.counters
        try:
            queue = summary(queue_status(client, consumer.names))
        except Exception as exc:  # noqa: BLE001 - Redis down: the line says so
            queue = f"queue depth unknown ({type(exc).__name__})"
        print(f"cacheway worker {consumer.name}: {consumer.applied} applied ({rate:,.0f}/s), "
              f"partitions {consumer.held()}, {queue}, {c.flush_errors} store errors",
              file=sys.stderr, flush=True)
