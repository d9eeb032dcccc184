"""Helpers of the acceptance tests of the thread front and the CLI (test_accept_*.py).

Written against the public contract only (DESIGN.md, README, docs/): a CLI runner, and a
reader process that opens its own cache from URLs and answers ``get`` over a pipe.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cacheway as cw


@dataclasses.dataclass
class User:
    """The typed namespace value of the typed guide."""

    name: str
    joined: datetime.date
    tags: tuple[str, ...] = ()


def pg_url(table: str) -> str:
    from services import POSTGRES_DSN

    return f"{POSTGRES_DSN}?table={table}"


SRC = str(Path(__file__).resolve().parents[1] / "src")


def child_env() -> dict[str, str]:
    """The environment of a child process: this checkout's cacheway wins."""
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("COLUMNS", None)
    env["COLUMNS"] = "200"
    return env


def cli(*args: str, timeout: float = 60.0,
        cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``cacheway ARGS`` as a user would, from the console script."""
    exe = shutil.which("cacheway")
    cmd = [exe, *args] if exe else [sys.executable, "-c",
                                    "import sys; from cacheway.cli import main; sys.exit(main())",
                                    *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                          env=child_env(), cwd=cwd)


def no_traceback(proc: subprocess.CompletedProcess[str]) -> bool:
    return "Traceback (most recent call last)" not in proc.stdout + proc.stderr


_READER = textwrap.dedent(
    """
    import json, sys
    import cacheway as cw
    cache = cw.open(store=sys.argv[1], backend=sys.argv[2], policy=sys.argv[3])
    ns = cache.namespace(sys.argv[4]) if sys.argv[4] else cache
    print("ready", flush=True)
    for line in sys.stdin:
        cmd, _, key = line.strip().partition(" ")
        if cmd == "get":
            print(json.dumps(ns.get(key, "<none>")), flush=True)
        elif cmd == "invalidate":
            ns.invalidate(key)
            print("null", flush=True)
        elif cmd == "set":
            k, _, v = key.partition(" ")
            ns.set(k, json.loads(v))
            print("null", flush=True)
    cache.close()
    """
)


class Reader:
    """Another process with its own cache on the same store and backend URLs."""

    def __init__(self, store: str, backend: str, policy: str = "write-through",
                 namespace: str = "") -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _READER, store, backend, policy, namespace],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=child_env())
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().strip()
        if first != "ready":
            self.proc.kill()
            raise RuntimeError(f"reader did not start: {first!r}")

    def _ask(self, line: str) -> Any:
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def get(self, key: str) -> Any:
        return self._ask(f"get {key}")

    def set(self, key: str, value: Any) -> None:
        self._ask(f"set {key} {json.dumps(value)}")

    def invalidate(self, key: str) -> None:
        self._ask(f"invalidate {key}")

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=30)


# Calls that must raise cw.ConfigError naming the word (test_accept_cache.py).
BAD_CONFIG: list[tuple[Callable[[], Any], str]] = [
    (lambda: cw.WriteBack(on_full="explode"), "on_full"),
    (lambda: cw.WriteBack(fsync="sometimes"), "fsync"),
    (lambda: cw.WriteBack(max_delay=-1), "max_delay"),
    (lambda: cw.WriteBack(batch_size=0), "batch_size"),
    (lambda: cw.open(policy="write-sideways"), "write-sideways"),
    (lambda: cw.open(policy="write-back", nonsense=1), "nonsense"),
    (lambda: cw.open(policy=cw.WriteBack(), max_delay=1), "max_delay"),
    (lambda: cw.open(backend="memory://?max_entries=lots"), "max_entries"),
    (lambda: cw.open(backend="memory://?bogus=1"), "bogus"),
    (lambda: cw.open(store="sqlite:///x.db?foo=1"), "foo"),
    (lambda: cw.open(backend="redis+l1://127.0.0.1:6379/0?bogus=1"), "bogus"),
    (lambda: cw.SQLiteStore(":memory:", table="x; DROP TABLE y"), "table"),
]


def pg_rows(dsn: str, table: str) -> dict[str, Any]:
    """``{key: value}`` of a key/value table on PostgreSQL, read behind the cache."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        return dict(conn.execute(f'SELECT key, value FROM "{table}"').fetchall())


def pg_execute(dsn: str, sql: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.encode())


def drop_mariadb_tables(url: str, *tables: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for table in tables:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS `{table}`"))
    engine.dispose()
