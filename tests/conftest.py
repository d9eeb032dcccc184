"""Shared fixtures of the contract tests: policies, a recording callback store, polling."""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import settings

import cacheway as cw

# -- hypothesis profiles (issue 10 item 16) -----------------------------------------------
# The default run is deterministic: the same examples every time, no example database
# carried between runs (CI starts fresh, so a stored failure would only show up locally).
# CACHEWAY_HYPOTHESIS=random explores new examples (the long slow runs too); a failure
# prints the blob to reproduce it with @reproduce_failure, and a counterexample found that
# way is pinned with @example.
settings.register_profile(
    "ci", derandomize=True, database=None, deadline=None, print_blob=True
)
settings.register_profile(
    "random", derandomize=False, database=None, deadline=None, print_blob=True
)
HYPOTHESIS_PROFILE = os.environ.get("CACHEWAY_HYPOTHESIS", "ci")
if HYPOTHESIS_PROFILE not in ("ci", "random"):
    raise cw.ConfigError(
        f"CACHEWAY_HYPOTHESIS={HYPOTHESIS_PROFILE!r}: use 'ci' (derandomized, the default) "
        "or 'random'"
    )
settings.load_profile(HYPOTHESIS_PROFILE)

POLICIES: dict[str, Callable[[], Any]] = {
    "write-through": lambda: cw.WriteThrough(),
    "write-back": lambda: cw.WriteBack(max_delay=0.05),
    "write-around": lambda: cw.WriteAround(),
}


@pytest.fixture(params=list(POLICIES))
def make_policy(request: pytest.FixtureRequest) -> Callable[[], Any]:
    """A factory of a fresh policy object, once per policy (write-through/back/around)."""
    return POLICIES[request.param]


@pytest.fixture
def db_path(tmp_path: Any) -> str:
    return str(tmp_path / "app.db")


@pytest.fixture
def autoclose() -> Iterator[Callable[[Any], Any]]:
    """Register caches to close at teardown even when the test failed half way."""
    caches: list[Any] = []

    def register(cache: Any) -> Any:
        caches.append(cache)
        return cache

    yield register
    for cache in reversed(caches):
        try:
            cache.close(timeout=5)
        except cw.CachewayError as exc:
            # Tests that leave a failing store behind end here; say so, don't hide it.
            warnings.warn(f"closing {cache!r} at teardown: {exc}", stacklevel=1)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until it is true or a generous deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return bool(predicate())


@pytest.fixture
def wait_for() -> Callable[..., bool]:
    return wait_until


class DictStore:
    """A ``cw.CallbackStore`` over a dict that records every call it gets.

    Failure and blocking knobs (all off by default):
    ``fail_writes`` raise on the next N write calls; ``failing`` raise while true;
    ``poison`` raise when that key is in a write batch; ``write_gate`` (an Event)
    writes wait for it; ``load_delay`` seconds slept in ``load_many`` after reading;
    ``load_hook(keys)`` called after reading and before returning.
    """

    def __init__(self, data: dict[str, Any] | None = None, *, add_many: bool = False) -> None:
        self.data: dict[str, Any] = dict(data or {})
        self.lock = threading.Lock()
        self.load_calls: list[list[str]] = []
        self.save_calls: list[list[tuple[str, Any]]] = []
        self.delete_calls: list[list[str]] = []
        self.add_calls: list[list[tuple[str, int]]] = []
        self.write_attempts = 0
        self.failed_writes = 0
        self.fail_writes = 0
        self.failing = False
        self.poison: str | None = None
        self.write_gate: threading.Event | None = None
        self.write_entered = threading.Event()  # set when a write call starts
        # which calling threads wait for write_gate (default: all of them)
        self.gate_threads: Callable[[], bool] = lambda: True
        self.load_delay = 0.0
        self.load_hook: Callable[[list[str]], None] | None = None
        self.store = cw.CallbackStore(
            load_many=self._load_many,
            save_many=self._save_many,
            delete_many=self._delete_many,
            add_many=self._add_many if add_many else None,
        )

    def _load_many(self, keys: list[str]) -> dict[str, Any]:
        keys = list(keys)
        with self.lock:
            self.load_calls.append(keys)
            found = {k: self.data[k] for k in keys if k in self.data}
        if self.load_delay:
            time.sleep(self.load_delay)
        if self.load_hook is not None:
            self.load_hook(keys)
        return found

    def _before_write(self, keys: list[str]) -> None:
        self.write_entered.set()
        gate = self.write_gate
        if gate is not None and self.gate_threads():
            gate.wait(10)
        with self.lock:
            self.write_attempts += 1
            fail = self.failing or (self.poison is not None and self.poison in keys)
            if not fail and self.fail_writes > 0:
                self.fail_writes -= 1
                fail = True
            if fail:
                self.failed_writes += 1
        if fail:
            raise ConnectionError(f"store is down (batch of {len(keys)})")

    def _save_many(self, items: list[tuple[str, Any]]) -> None:
        items = [(k, v) for k, v in items]
        self._before_write([k for k, _ in items])
        with self.lock:
            self.save_calls.append(items)
            self.data.update(items)

    def _delete_many(self, keys: list[str]) -> None:
        keys = list(keys)
        self._before_write(keys)
        with self.lock:
            self.delete_calls.append(keys)
            for k in keys:
                self.data.pop(k, None)

    def _add_many(self, items: list[tuple[str, int]]) -> dict[str, Any]:
        items = [(k, d) for k, d in items]
        self._before_write([k for k, _ in items])
        with self.lock:
            self.add_calls.append(items)
            for k, d in items:
                self.data[k] = self.data.get(k, 0) + d
            return {k: self.data[k] for k, _ in items}

    @property
    def saved_rows(self) -> int:
        return sum(len(c) for c in self.save_calls)


@pytest.fixture
def make_store() -> Callable[..., DictStore]:
    """``make_store(data=None, add_many=False)`` -> a recording :class:`DictStore`."""
    return DictStore


# -- real servers (see tests/services.py) -------------------------------------------------
from services import MARIADB_URL, POSTGRES_DSN, REDIS_URL, require, unique  # noqa: E402


@pytest.fixture
def redis_url() -> str:
    require("redis")
    return REDIS_URL


@pytest.fixture
def raw(redis_url: str) -> Iterator[Any]:
    """A plain redis-py client of the test Redis (to look at or damage entries)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix(raw: Any) -> Iterator[str]:
    """A key prefix no other test uses; its keys are removed afterwards."""
    p = f"{unique('rb')}:"
    yield p
    names = list(raw.scan_iter(match=p + "*", count=1000))
    if names:
        raw.unlink(*names)


@pytest.fixture
def qname(raw: Any) -> Iterator[str]:
    """A queue name no other test uses (``WriteBack(queue_name=...)``); its Redis keys
    are removed afterwards."""
    name = unique("q").replace(":", "_").replace("-", "_")
    yield name
    keys = list(raw.scan_iter(match="{" + name + "*", count=1000))
    if keys:
        raw.unlink(*keys)


@pytest.fixture
def pg_table() -> Iterator[str]:
    """A PostgreSQL table name no other test uses; the store's tables and sequence are
    dropped afterwards."""
    import psycopg

    require("postgresql")
    name = unique("cwt")
    yield name
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{name}", "{name}_meta", "{name}_applied", '
                     f'"{name}_cw_meta", "{name}_cw_applied" CASCADE')
        conn.execute(f'DROP SEQUENCE IF EXISTS "{name}_version_seq"')


@pytest.fixture
def redis_backend() -> Iterator[cw.RedisBackend]:
    """A RedisBackend on the machine's Redis under a prefix of its own; its keys and
    clock are removed afterwards."""
    require("redis")
    b = cw.RedisBackend(REDIS_URL, prefix=unique("rbk") + ":")
    yield b
    b.clear()
    b.client.delete(b.prefix + "~clock")
    b.close()


@pytest.fixture
def postgres_dsn() -> str:
    require("postgresql")
    return POSTGRES_DSN


@pytest.fixture
def mariadb_url() -> str:
    require("mariadb")
    return MARIADB_URL
