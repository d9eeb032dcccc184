"""Helpers of test_accept4_async.py (the AsyncCache acceptance round 4), written from
DESIGN.md, the README and docs/ only: where a test's data lives (SQLite or PostgreSQL),
child processes that write through a journal and are killed with kill -9, and a reader of
the store behind the cache."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import cacheway as cw
from accept_support import child_env
from services import POSTGRES_DSN


class Where:
    """One store (SQLite file or PostgreSQL table): fresh store objects and its URL."""

    def __init__(self, kind: str, tmp_path: Path, pg_table: str | None) -> None:
        self.kind = kind
        self.path = str(tmp_path / "app.db")
        self.table = pg_table or "kv_" + tmp_path.name.replace("-", "_")[-20:]
        self._opened: list[Any] = []
        self._reader: Any = None

    def store(self) -> Any:
        if self.kind == "sqlite":
            s: Any = cw.SQLiteStore(self.path, table=self.table)
        else:
            s = cw.PostgresStore(POSTGRES_DSN, table=self.table)
        self._opened.append(s)
        return s

    def url(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.path}?table={self.table}"
        return f"{POSTGRES_DSN}?table={self.table}"

    def peek(self, key: str, namespace: str = "", default: Any = None) -> Any:
        """The store's value of ``key`` as a store object of its own reads it."""
        if self._reader is None:
            self._reader = self.store()
        return self._reader.load(key, default, namespace=namespace)

    def close(self) -> None:
        for s in self._opened:
            with contextlib.suppress(Exception):
                s.close()


# A child process that writes through a write-back journal with fsync="always", printing
# "ack I" after each iteration's calls returned, until it is killed. Each iteration: set
# k{I}, incr n, delete d{I} (a row seeded before), set v{I} in the namespace "views".
JOURNAL_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    import cacheway as cw

    front, store_url, journal = sys.argv[1:4]
    opts = dict(policy="write-back", max_delay=600, batch_size=100000, journal=journal,
                fsync="always")
    if front == "async-queue":          # journal is "REDIS_URL QUEUE_NAME" here
        queue, qname = journal.split()
        opts = dict(policy=cw.WriteBack(queue=queue, queue_name=qname, partitions=4,
                                        claim_after=1.0))

    if front == "sync":
        cache = cw.open(store=store_url, **opts)
        views = cache.namespace("views")
        i = 0
        while True:
            cache.set(f"k{i}", {"i": i, "s": "x" * (i % 7)})
            cache.incr("n")
            cache.delete(f"d{i}")
            views.set(f"v{i}", [i])
            print(f"ack {i}", flush=True)
            i += 1

    async def main():
        acache = await cw.open_async(store=store_url, **opts)
        views = acache.namespace("views")
        i = 0
        while True:
            await acache.set(f"k{i}", {"i": i, "s": "x" * (i % 7)})
            await acache.incr("n")
            await acache.delete(f"d{i}")
            await views.set(f"v{i}", [i])
            print(f"ack {i}", flush=True)
            i += 1

    asyncio.run(main())
    """
)


# The same for typed and expiring namespaces: each iteration sets users/u{I} (a User
# dataclass), sessions/s{I} (expire=600) and flash/f{I} (expire=0.5).
TYPED_CHILD = textwrap.dedent(
    """
    import asyncio, dataclasses, datetime, sys
    import cacheway as cw

    @dataclasses.dataclass
    class User:
        name: str
        joined: datetime.date
        tags: tuple[str, ...] = ()

    front, store_url, journal = sys.argv[1:4]
    opts = dict(policy="write-back", max_delay=600, batch_size=100000, journal=journal,
                fsync="always")

    def user(i):
        day = datetime.date(2000, 1, 1) + datetime.timedelta(days=i)
        return User(f"u{i}", day, ("t",) * (i % 3))

    if front == "sync":
        cache = cw.open(store=store_url, **opts)
        users = cache.namespace("users", type=User)
        sessions = cache.namespace("sessions", expire=600)
        flash = cache.namespace("flash", expire=0.5)
        i = 0
        while True:
            users.set(f"u{i}", user(i))
            sessions.set(f"s{i}", {"i": i})
            flash.set(f"f{i}", i)
            print(f"ack {i}", flush=True)
            i += 1

    async def main():
        acache = await cw.open_async(store=store_url, **opts)
        users = acache.namespace("users", type=User)
        sessions = acache.namespace("sessions", expire=600)
        flash = acache.namespace("flash", expire=0.5)
        i = 0
        while True:
            await users.set(f"u{i}", user(i))
            await sessions.set(f"s{i}", {"i": i})
            await flash.set(f"f{i}", i)
            print(f"ack {i}", flush=True)
            i += 1

    asyncio.run(main())
    """
)


def write_then_kill9(front: str, store_url: str, journal: str, at_least: int,
                     script: str = JOURNAL_CHILD) -> int:
    """Run JOURNAL_CHILD with ``front`` ("sync", "async" or "async-queue", whose
    ``journal`` is "REDIS_URL QUEUE_NAME"), kill -9 it once it has
    acknowledged ``at_least`` iterations, and return how many it acknowledged in all."""
    proc = subprocess.Popen([sys.executable, "-c", script, front, store_url, journal],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env())
    acked = -1
    try:
        assert proc.stdout is not None
        while acked + 1 < at_least:
            line = proc.stdout.readline()
            if not line:                     # the child died on its own: say why
                proc.wait(timeout=30)
                raise AssertionError(f"writer exited early: {proc.stderr.read()[-3000:]}")
            acked = int(line.split()[1])
        proc.kill()                          # SIGKILL: no flush, no exit hook
        out, _ = proc.communicate(timeout=30)
        for line in out.splitlines():        # acks already in the pipe count too
            if line.startswith("ack "):
                acked = int(line.split()[1])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == -9, proc.returncode
    return acked + 1
