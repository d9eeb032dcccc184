"""Helpers of test_accept3_queue.py: real ``cacheway worker`` processes and app processes
that write through a ``WriteBack(queue=...)`` policy, written from DESIGN.md and the queue
guide only."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from accept_support import child_env

CLI = [sys.executable, "-c", "import sys; from cacheway.cli import main; sys.exit(main())"]


class Worker:
    """``cacheway worker ...`` as a subprocess; stderr goes to a file (never blocks)."""

    def __init__(self, queue: str, qname: str, store: str, log: Path, *, partitions: int = 4,
                 claim_after: float = 30.0, processes: int | None = None,
                 batch_size: int | None = None, status_every: float = 0) -> None:
        args = ["worker", "--queue", queue, "--queue-name", qname, "--store", store,
                "--partitions", str(partitions), "--claim-after", str(claim_after),
                "--status-every", str(status_every)]
        if processes is not None:
            args += ["--processes", str(processes)]
        if batch_size is not None:
            args += ["--batch-size", str(batch_size)]
        self.log = log
        self._err = open(log, "w")  # noqa: SIM115 - closed in stop()/kill()
        self.proc = subprocess.Popen([*CLI, *args], stdout=subprocess.DEVNULL,
                                     stderr=self._err, env=child_env(), start_new_session=True)

    def stderr(self) -> str:
        return self.log.read_text()

    def terminate(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            self._err.close()
        return rc

    def kill9(self) -> None:
        """kill -9 the worker and every process it started (its session)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._err.close()

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.kill9()
        elif not self._err.closed:
            self._err.close()


_APP = textwrap.dedent(
    """
    import json, os, sys, time
    import cacheway as cw
    cfg = json.loads(sys.argv[1])
    policy = cw.WriteBack(queue=cfg["queue"], queue_name=cfg["qname"],
                          partitions=cfg["partitions"],
                          flush_in_process=cfg["flush_in_process"],
                          claim_after=cfg.get("claim_after", 30.0))
    cache = cw.open(store=cfg["store"], policy=policy)
    for line in sys.stdin:
        if line.strip() == "go":
            break
    for op, key, arg in cfg["ops"]:
        if op == "set":
            cache.set(key, arg)
        elif op == "incr":
            cache.incr(key, arg)
        elif op == "delete":
            cache.delete(key)
    print("acked", flush=True)
    mode = cfg["mode"]
    if mode == "flush":
        cache.flush(timeout=60)
        cache.close()
        print("flushed", flush=True)
    elif mode == "exit":
        os._exit(0)             # leave without flushing: the writes are in Redis only
    else:                       # "hang": wait to be killed
        time.sleep(600)
    """
)


class App:
    """An app process: opens its own cache on the queue, waits for ``go``, runs ``ops``
    (``[op, key, arg]``), prints ``acked``, then flushes, exits at once or hangs."""

    def __init__(self, queue: str, qname: str, store: str, ops: list[list[Any]], *,
                 partitions: int = 4, flush_in_process: bool = False,
                 mode: str = "flush", claim_after: float = 30.0) -> None:
        cfg = {"queue": queue, "qname": qname, "store": store, "ops": ops,
               "partitions": partitions, "flush_in_process": flush_in_process,
               "mode": mode, "claim_after": claim_after}
        self.proc = subprocess.Popen([sys.executable, "-c", _APP, json.dumps(cfg)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=child_env())

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def wait_line(self, expected: str, timeout: float = 60.0) -> None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()   # bounded by the child's own timeouts
        if line != expected:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=timeout)
            raise AssertionError(f"app said {line!r}, not {expected!r}: {err[-2000:]}")

    def wait(self, timeout: float = 60.0) -> tuple[int, str]:
        _, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, err

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.communicate(timeout=30)

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.kill9()


def sqlite_rows(path: str, table: str) -> dict[str, Any]:
    """``{key: value}`` of a key/value table on SQLite, read behind the cache (all
    namespaces; values decoded from JSON; rows whose data ended left out)."""
    with sqlite3.connect(path) as db:
        rows = db.execute(f'SELECT key, value FROM "{table}" '
                          "WHERE expires_at IS NULL OR expires_at > ?", (time.time(),)).fetchall()
    out: dict[str, Any] = {}
    for key, value in rows:
        if value is None:                      # a tombstone: reads treat it as absent
            continue
        if isinstance(value, bytes):
            value = value.decode()
        out[key] = json.loads(value) if isinstance(value, str) else value
    return out


def pg_live_rows(dsn: str, table: str) -> dict[str, Any]:
    """``{key: value}`` of a key/value table on PostgreSQL, tombstones (NULL) left out."""
    from accept_support import pg_rows

    return {k: v for k, v in pg_rows(dsn, table).items() if v is not None}


def poll(predicate: Callable[[], bool], timeout: float = 30.0, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())
