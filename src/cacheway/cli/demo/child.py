"""Child process of ``cacheway demo``/``bench``: ``python -m cacheway.cli.demo.child MODE JOB``.

``measure``: run one workload and print the :class:`~cacheway.cli.demo.runner.Measured` as JSON (one
of ``bench --processes N``'s clients). ``crash``: run a workload stream and write one line
``key<TAB>seq`` to stdout after each acknowledged write, until the parent ``kill -9``s
it. Each line is a single ``write(2)`` on fd 1, so a line the parent reads was
acknowledged before the kill; the child never closes its cache (closing would flush).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any

from . import workloads as wl
from .runner import STRATEGIES, Skip, Target, measure_target, open_prepared


def _measure(job: dict[str, Any]) -> int:
    target = Target(**job["target"])
    try:
        m = measure_target(STRATEGIES[job["strategy"]], job["workload"], job["ops"],
                           job["seed"], target)
    except Skip as exc:
        print(json.dumps({"skip": str(exc)}))
        return 0
    print(json.dumps(dataclasses.asdict(m)))
    return 0


def _crash(job: dict[str, Any]) -> int:
    target = Target(**job["target"])
    strategy = STRATEGIES[job["strategy"]]
    workload = job["workload"]
    try:
        subject = open_prepared(strategy, workload, target)
    except Skip as exc:
        os.write(1, f"skip\t{exc}\n".encode())
        return 3
    write = os.write
    write(1, b"ready\n")
    deadline = time.monotonic() + float(job["max_seconds"])
    max_ops = int(job["max_ops"])
    get, set_, incr = subject.get, subject.set, subject.incr
    for i, op in enumerate(wl.stream(workload, int(job["seed"]), target.prefix)):
        if i >= max_ops or (i % 256 == 0 and time.monotonic() > deadline):
            break
        if op.kind == "get":
            get(op.key)
        elif op.kind == "set":
            set_(op.key, wl.value_for(op.seq))
            write(1, f"{op.key}\t{op.seq}\n".encode())
        else:
            n = incr(op.key)
            write(1, f"{op.key}\t{n}\n".encode())
    write(1, b"done\n")
    # wait for the kill; exiting normally would run atexit, which flushes
    time.sleep(max(0.0, deadline - time.monotonic()) + 5.0)
    os._exit(0)


def main(argv: list[str]) -> int:
    mode, job = argv[0], json.loads(argv[1])
    if mode == "measure":
        return _measure(job)
    if mode == "crash":
        return _crash(job)
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
