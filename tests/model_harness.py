"""Stores and backends for the model-based write-back tests (tests/test_model_writeback.py).

Every store here can be taken down (its writes raise while ``down`` is true; reads keep
working) and records, per key, the states it received in order (``received``), so a test
can check the store never got a key's writes out of order. ``content(keys)`` reads what
the store holds, bypassing any cache.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import redis

import cacheway as cw
from cacheway.stores.base import ADD, DELETE, NOTSET, SET, Applied, JournalMark, Loaded, Op
from services import REDIS_URL, unique

#: What ``received`` and the models record for a key that is not there.
ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "ABSENT"})()


#: A value the proxied stores refuse when a batch brings it (a permanent error).
REFUSED = "REFUSED"
#: A value the proxied stores refuse at the call that writes it (``validate``).
INVALID = "INVALID"


class StoreDown(ConnectionError):
    """Raised by a test store's writes while it is down (a transient fault)."""


class Recorder:
    """Per-key log of the states a store was given, in the order it applied them.

    Writes run under ``gate``; setting ``down`` takes it too, so once ``down = True``
    returns no write is still going through (one that began before has finished)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.gate = threading.Lock()
        self.received: dict[str, list[Any]] = {}
        self._down = False

    @property
    def down(self) -> bool:
        return self._down

    @down.setter
    def down(self, value: bool) -> None:
        with self.gate:
            self._down = value

    def record(self, key: str, state: Any) -> None:
        with self.lock:
            self.received.setdefault(key, []).append(state)

    def clear(self) -> None:
        with self.lock:
            self.received.clear()


class DictCallbackStore(Recorder):
    """A ``cw.CallbackStore`` over a dict whose callbacks raise while it is down.

    Without ``add_many`` counters reach it as absolute values (``save_many``). It
    refuses no value (a callback's error is retried: it cannot say "never")."""

    refuses = False
    validates = False

    def __init__(self, *, add_many: bool = False) -> None:
        super().__init__()
        self.data: dict[str, Any] = {}
        self.store = cw.CallbackStore(
            load_many=self._load_many,
            save_many=self._save_many,
            delete_many=self._delete_many,
            add_many=self._add_many if add_many else None,
        )

    def _load_many(self, keys: list[str]) -> dict[str, Any]:
        with self.lock:
            return {k: self.data[k] for k in keys if k in self.data}

    def _check_up(self, n: int) -> None:
        if self._down:
            raise StoreDown(f"store is down (write of {n} keys)")

    def _save_many(self, items: list[tuple[str, Any]]) -> None:
        keys = [k for k, _ in items]
        assert len(keys) == len(set(keys)), f"save_many got a key twice: {keys}"
        with self.gate, self.lock:
            self._check_up(len(items))
            for k, v in items:
                self.data[k] = v
                self.received.setdefault(k, []).append(v)

    def _delete_many(self, keys: list[str]) -> None:
        with self.gate, self.lock:
            self._check_up(len(keys))
            for k in keys:
                self.data.pop(k, None)
                self.received.setdefault(k, []).append(ABSENT)

    def _add_many(self, items: list[tuple[str, int]]) -> dict[str, Any]:
        with self.gate, self.lock:
            self._check_up(len(items))
            for k, d in items:
                self.data[k] = self.data.get(k, 0) + d
                self.received.setdefault(k, []).append(self.data[k])
            return {k: self.data[k] for k, _ in items}

    def content(self, keys: Sequence[str], namespace: str = "") -> dict[str, Any]:
        with self.lock:
            return {k: self.data[k] for k in keys if k in self.data}

    def reset(self, keys: Sequence[str], namespace: str = "") -> None:
        with self.lock:
            self.data.clear()
            self.received.clear()

    def close(self) -> None:
        return None


class FaultyStore(Recorder):
    """A Store-protocol proxy in front of a real store (SQLite, PostgreSQL): ``apply``
    raises :class:`StoreDown` while down, ``cw.InvalidWriteError`` for a batch that
    sets :data:`REFUSED`, and records what each applied op set; everything else is
    delegated."""

    refuses = True
    validates = False

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner
        self.serializer = inner.serializer
        self.versioned = inner.versioned
        self.store = self  # what a Cache is given

    @property
    def atomic_add(self) -> bool:
        return bool(getattr(self.inner, "atomic_add", True))

    def fetch(self, namespace: str, keys: Sequence[str]) -> dict[str, Loaded]:
        found: dict[str, Loaded] = self.inner.fetch(namespace, keys)
        return found

    def apply(self, ops: Sequence[Op], *, journal: JournalMark | None = None) -> list[Applied]:
        with self.gate:
            if self._down:
                raise StoreDown(f"store is down (batch of {len(ops)} ops)")
            refused = [op.key for op in ops if op.kind == SET and self._state(op) == REFUSED]
            if refused:
                raise cw.InvalidWriteError(f"the store refuses the value of {refused}")
            results: list[Applied] = self.inner.apply(ops, journal=journal)
            self._record(ops)
        return results

    def _state(self, op: Op) -> Any:
        if op.kind == SET:
            return self.serializer.loads(op.payload) if op.payload is not None else op.value
        if op.kind == DELETE:
            return ABSENT
        assert op.kind == ADD
        return op.value

    def _record(self, ops: Sequence[Op]) -> None:
        for op in ops:
            self.record(op.key, self._state(op))

    def applied_state(self, journal_id: str) -> tuple[int, dict[tuple[str, str], int]]:
        state: tuple[int, dict[tuple[str, str], int]] = self.inner.applied_state(journal_id)
        return state

    def close(self) -> None:
        return None  # the test closes the inner store once, at the end

    @property
    def expires(self) -> bool:  # keeps data expiry where the store does (expire=)
        return bool(getattr(self.inner, "expires", False))

    def purge_expired(self, limit: int = 1000) -> int:
        return int(self.inner.purge_expired(limit))

    def content(self, keys: Sequence[str], namespace: str = "") -> dict[str, Any]:
        found: dict[str, Any] = self.inner.load_many(keys, namespace=namespace)
        return found

    def reset(self, keys: Sequence[str], namespace: str = "") -> None:
        self.inner.delete_many(keys, namespace=namespace)
        self.clear()


class ValidatingStore(FaultyStore):
    """A :class:`FaultyStore` whose ``validate`` refuses :data:`INVALID` at the call.
    (A store with ``validate`` makes the engine check each ``set``: plain sets are not
    staged, so the model runs one store kind each way.)"""

    validates = True

    def validate(self, namespace: str, key: str, value: Any, kind: int) -> Any:
        if value == INVALID:
            raise cw.InvalidWriteError(f"the store can never take the value of {key!r}")
        return value


# -- backends -------------------------------------------------------------------------------

BACKENDS = ["memory", "memory-2", "redis", "two-level"]
STORES = ["callback", "sqlite", "postgresql"]


class Backends:
    """Makes the backend of one model run; deletes its Redis keys at the end."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.prefixes: list[str] = []
        self.made: list[Any] = []
        self._client: redis.Redis | None = None

    def make(self) -> Any:
        if self.kind == "memory":
            return cw.MemoryBackend()
        if self.kind == "memory-2":
            return cw.MemoryBackend(max_entries=2)
        prefix = unique("model") + ":"
        self.prefixes.append(prefix)
        l2 = cw.RedisBackend(REDIS_URL, prefix=prefix)
        backend: Any = l2
        if self.kind == "two-level":
            backend = cw.TwoLevelBackend(cw.MemoryBackend(max_entries=2), l2)
        else:
            assert self.kind == "redis", self.kind
        self.made.append(backend)
        return backend

    def release(self, backend: Any) -> None:
        """Close a backend this made (a Cache leaves backends passed in open)."""
        if backend in self.made:
            self.made.remove(backend)
            backend.close()

    def cleanup(self) -> None:
        for backend in self.made:
            backend.close()
        self.made.clear()
        if not self.prefixes:
            return
        client = redis.Redis.from_url(REDIS_URL)
        try:
            for prefix in self.prefixes:
                batch = list(client.scan_iter(match=prefix + "*", count=500))
                if batch:
                    client.delete(*batch)
        finally:
            client.close()
        self.prefixes.clear()


@contextlib.contextmanager
def store_factory(kind: str, tmp_dir: str, postgres_dsn: str | None
                  ) -> Iterator[Callable[[], Any]]:
    """Yields ``make()`` -> a fresh, empty test store: a DictCallbackStore, a FaultyStore
    over SQLite, a ValidatingStore over PostgreSQL. Real stores are opened once per test
    and emptied of the model's keys per run."""
    if kind == "callback":
        yield lambda: DictCallbackStore()
        return
    if kind == "sqlite":
        inner: Any = cw.SQLiteStore(f"{tmp_dir}/model.db", table=unique("model"))
    else:
        assert kind == "postgresql", kind
        assert postgres_dsn is not None
        inner = cw.PostgresStore(postgres_dsn, table=unique("model"))
    table = inner.table
    proxy = FaultyStore if kind == "sqlite" else ValidatingStore
    try:
        yield lambda: proxy(inner)
    finally:
        inner.close()
        if kind == "postgresql":
            _drop_pg_table(postgres_dsn, table)


def _drop_pg_table(dsn: str | None, table: str) -> None:
    import psycopg

    assert dsn is not None
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f'DROP TABLE IF EXISTS "{table}", "{table}_meta", "{table}_applied", '
            f'"{table}_cw_meta", "{table}_cw_applied" CASCADE'
        )
        conn.execute(f'DROP SEQUENCE IF EXISTS "{table}_version_seq"')


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types (JSON values: no 1 == 1.0 == True)."""
    if a is ABSENT or b is ABSENT:
        return a is b
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def is_subsequence(received: Sequence[Any], accepted: Sequence[Any]) -> bool:
    """True when ``received`` appears in ``accepted`` in order (gaps allowed)."""
    it = iter(accepted)
    return all(any(same(r, a) for a in it) for r in received)


__all__ = [
    "ABSENT",
    "BACKENDS",
    "INVALID",
    "NOTSET",
    "REFUSED",
    "STORES",
    "Backends",
    "DictCallbackStore",
    "FaultyStore",
    "StoreDown",
    "ValidatingStore",
    "is_subsequence",
    "same",
    "store_factory",
]
