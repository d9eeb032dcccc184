"""The 30-line write-through and write-back that blog posts show, as demo baselines.

They are written the way the posts write them (a dict in front of the database, for
write-back a ``queue.Queue`` drained row by row by a thread) with two concessions so the
comparison is fair: the dict is an LRU bounded like the real cache's backend, and rows go
into the same SQLite table and pragmas as ``cw.SQLiteStore`` so the same reader checks
them. Nothing here is meant to be correct under crashes or concurrency: the demo measures
what these toys lose.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
import time
from collections import OrderedDict
from typing import Any

from .pollution import Residency

__all__ = ["TextbookWriteBack", "TextbookWriteThrough"]

_UPSERT = (
    "INSERT INTO cacheway (namespace, key, value, version, updated_at) VALUES ('', ?, ?, ?, ?) "
    "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, "
    "version = excluded.version, updated_at = excluded.updated_at"
)


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


class _Textbook:
    def __init__(self, path: str, capacity: int) -> None:
        self.db = _connect(path)
        self.data: OrderedDict[str, Any] = OrderedDict()
        self.capacity = capacity
        self.hits = self.misses = self.writes = self.store_writes = 0
        self.version = 0
        self.residency = Residency()  # the demo's pollution bookkeeping, not the toy's

    def _put(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.data.move_to_end(key)
        self.residency.admit(key)
        if len(self.data) > self.capacity:
            evicted, _ = self.data.popitem(last=False)
            self.residency.leave(evicted, evicted=True)

    def _save(self, conn: sqlite3.Connection, key: str, value: Any) -> None:
        self.version += 1
        conn.execute(_UPSERT, (key, json.dumps(value).encode(), self.version, time.time()))
        self.store_writes += 1

    def set(self, key: str, value: Any) -> None:
        raise NotImplementedError

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.data:
            self.hits += 1
            self.data.move_to_end(key)
            return self.data[key]
        self.misses += 1
        row = self.db.execute(
            "SELECT value FROM cacheway WHERE namespace = '' AND key = ?", (key,)
        ).fetchone()
        if row is None or row[0] is None:
            return default
        value = json.loads(row[0])
        self._put(key, value)
        return value

    def incr(self, key: str, delta: int = 1) -> int:
        value = int(self.get(key, 0)) + delta
        self.set(key, value)
        return value

    def close(self) -> None:
        self.db.close()


class TextbookWriteThrough(_Textbook):
    """Write the row (autocommit), then the dict."""

    def set(self, key: str, value: Any) -> None:
        self.writes += 1
        self._save(self.db, key, value)
        self._put(key, value)

    def pending(self) -> int:
        return 0

    def flush(self) -> None:
        return None


class TextbookWriteBack(_Textbook):
    """Write the dict, queue the row; a thread writes queued rows one by one."""

    def __init__(self, path: str, capacity: int) -> None:
        super().__init__(path, capacity)
        self.queue: queue.Queue[tuple[str, Any] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._drain, args=(_connect(path),), daemon=True)
        self.thread.start()

    def _drain(self, conn: sqlite3.Connection) -> None:
        while (item := self.queue.get()) is not None:
            self._save(conn, *item)
            self.queue.task_done()
        self.queue.task_done()
        conn.close()

    def set(self, key: str, value: Any) -> None:
        self.writes += 1
        self._put(key, value)
        self.queue.put((key, value))

    def pending(self) -> int:
        return self.queue.qsize()

    def flush(self) -> None:
        self.queue.join()

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        super().close()
