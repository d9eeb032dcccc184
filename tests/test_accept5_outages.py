"""Acceptance round 5: outages under load, as users hit them in production.

PostgreSQL and Redis sit behind ``tests/faultproxy.py`` (a loopback proxy that forwards,
goes ``down``: every connection reset, or ``stall``s: connections open, nothing moves),
and the cache is driven only through the public names of DESIGN.md and the docs while
the proxy switches. What is checked is what those promise:

- write-back over a failing store keeps every acknowledged write, serves it meanwhile,
  shows the failure in ``stats()`` and ``flush(timeout)`` (guarantee 6), and the store
  ends with each key's last acknowledged write (guarantee 3);
- with ``journal=..., fsync="always"`` a ``kill -9`` during the outage loses nothing once
  the journal is reopened into the recovered store (guarantee 2);
- write-through raises ``cw.StoreError`` at the call and leaves no copy of the refused
  value (DESIGN "Policies"); afterwards the cache agrees with the store (guarantee 4);
- a Redis backend that is down or stalled: calls end within their timeouts
  (``RedisBackend(timeout=)``), nothing acknowledged is lost;
- the distributed queue: a write is acknowledged (and applied later) or refused with
  ``BackendError`` at the call; a consumer keeps the entries while its store is down;
- ``AsyncCache`` during a stall of PostgreSQL keeps its event loop running (guarantee 8).

Every call that could hang runs with a generous bound (``HANG``): a hang fails the test
instead of holding the run; no timing is asserted except the one loop-lag check.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw
from aio_acceptance import Ticker
from conftest import wait_until
from faultproxy import FaultProxy
from services import POSTGRES_DSN, REDIS_URL, unique
from test_store_faults import outcome

pytestmark = pytest.mark.services

HANG = 60.0          # a call still running after this long counts as hung
STORE_TIMEOUT = 1.0  # PostgresStore(timeout=) behind the proxy
REDIS_TIMEOUT = 1.0  # RedisBackend(timeout=) behind the proxy
LOOP_BOUND = 0.15    # the one loop-lag check (AsyncCache during a stall)
FAST_RETRY = cw.Retry(base_delay=0.05, max_delay=0.3)


# -- helpers ----------------------------------------------------------------------------
def pg_via(proxy: FaultProxy) -> str:
    """The test PostgreSQL DSN, through ``proxy``."""
    return POSTGRES_DSN.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")


def redis_via(proxy: FaultProxy) -> str:
    return REDIS_URL.replace("127.0.0.1:6379", f"127.0.0.1:{proxy.port}")


def store_rows(table: str, keys: list[str], namespace: str | None = None) -> dict[str, Any]:
    """What PostgreSQL holds for ``keys`` (read by a cache of its own, without the proxy)."""
    with cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=table)) as reader:
        view = reader if namespace is None else reader.namespace(namespace)
        return view.get_many(keys)


@pytest.fixture
def pg_proxy(postgres_dsn: str) -> Iterator[FaultProxy]:
    with FaultProxy(5432) as proxy:
        yield proxy
        proxy.forward()


@pytest.fixture
def redis_proxy(redis_url: str) -> Iterator[FaultProxy]:
    with FaultProxy(6379) as proxy:
        yield proxy
        proxy.forward()


@pytest.fixture
def redis_prefix(raw: Any) -> Iterator[str]:
    """A RedisBackend prefix of this test; its keys (clock included) go afterwards."""
    p = f"{unique('a5')}:"
    yield p
    names = list(raw.scan_iter(match=p + "*", count=1000))
    if names:
        raw.unlink(*names)


def store_answers(dsn: str, table: str) -> bool:
    """Poll: PostgreSQL answers again at ``dsn`` (a fresh store)."""
    def probe() -> bool:
        store = cw.PostgresStore(dsn, table=table, timeout=STORE_TIMEOUT)
        try:
            store.load("probe")
            return True
        finally:
            store.close()
    return outcome(probe) is True


class Writers:
    """``n`` threads, each writing its own keys in a loop until stopped; every call's
    outcome is recorded in order (thread ``i`` writes ``w{i}-{n % keys}``)."""

    def __init__(self, cache: Any, n: int = 4, keys: int = 6, pause: float = 0.002) -> None:
        self.cache = cache
        self.keys = keys
        self.pause = pause
        self.stop = threading.Event()
        self.log: list[list[tuple[str, Any, BaseException | None]]] = [[] for _ in range(n)]
        self.read_mismatch: list[tuple[str, Any, Any]] = []
        self.unexpected: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                        for i in range(n)]

    def _run(self, i: int) -> None:
        n = 0
        while not self.stop.is_set():
            key, value = f"w{i}-{n % self.keys}", {"t": i, "n": n}
            try:
                self.cache.set(key, value)
            except cw.CachewayError as exc:
                self.log[i].append((key, value, exc))
            except BaseException as exc:  # not a cacheway error: the test fails on it
                self.unexpected.append(exc)
                return
            else:
                self.log[i].append((key, value, None))
                got = self.cache.get(key)      # read your writes, outage or not
                if got != value:
                    self.read_mismatch.append((key, value, got))
            n += 1
            time.sleep(self.pause)

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(HANG)
            assert not t.is_alive(), "a writer hangs"

    def acked(self) -> int:
        return sum(1 for log in self.log for *_, err in log if err is None)

    def last_acked(self) -> dict[str, Any]:
        last: dict[str, Any] = {}
        for log in self.log:
            for key, value, err in log:
                if err is None:
                    last[key] = value
        return last

    def allowed_final(self) -> dict[str, list[Any]]:
        """Per key: the last acknowledged value, or a refused write after it (a write
        refused as "not acknowledged" may still have been queued, once)."""
        allowed: dict[str, list[Any]] = {}
        for log in self.log:
            for key, value, err in log:
                if err is None:
                    allowed[key] = [value]
                else:
                    allowed.setdefault(key, [None]).append(value)
        return allowed


# -- write-back over a PostgreSQL outage --------------------------------------------------
@pytest.mark.parametrize(("mode", "writers_n", "outage"), [
    ("down", 4, 1.0),
    pytest.param("stall", 4, 1.0, marks=pytest.mark.slow),  # (the default run: ~10 min)
    pytest.param("down", 8, 8.0, marks=pytest.mark.slow, id="down-long"),
    pytest.param("stall", 8, 8.0, marks=pytest.mark.slow, id="stall-long"),
])
def test_guarantee_6_a_failing_store_never_loses_dirty_data_under_concurrent_writers(
        pg_proxy: FaultProxy, pg_table: str, mode: str, writers_n: int,
        outage: float) -> None:
    store = cw.PostgresStore(pg_via(pg_proxy), table=pg_table, timeout=STORE_TIMEOUT)
    cache = cw.Cache(store=store, policy=cw.WriteBack(max_delay=0.05, retry=FAST_RETRY))
    try:
        cache.set("warm", 0)
        cache.flush(timeout=30)
        with Writers(cache, n=writers_n) as writers:
            assert wait_until(lambda: writers.acked() >= 40)
            pg_proxy.set_mode(mode)
            before = writers.acked()
            # the outage is seen: errors in stats(), flush(timeout) raises saying how many
            assert wait_until(lambda: cache.stats().flush_errors > 0, timeout=30)
            err = outcome(lambda: cache.flush(timeout=0.5))
            assert isinstance(err, cw.StoreError), err
            assert any(ch.isdigit() for ch in str(err)), f"no count of entries left: {err}"
            assert cache.pending() > 0
            assert wait_until(lambda: cache.stats().store_down_since is not None, timeout=30)
            stats = cache.stats()
            assert stats.dirty > 0
            assert stats.last_error is not None
            # writers go on being acknowledged (and read their writes) during the outage
            assert wait_until(lambda: writers.acked() >= before + 200, timeout=30)
            time.sleep(outage)
            pg_proxy.forward()
            assert wait_until(lambda: writers.acked() >= before + 400, timeout=30)
        assert not writers.unexpected, writers.unexpected
        refused = [err for log in writers.log for *_, err in log if err is not None]
        assert not refused, refused[:3]                 # write-back accepts during an outage
        assert not writers.read_mismatch, writers.read_mismatch[:3]
        assert outcome(lambda: cache.flush(timeout=HANG / 2)) is None
        stats = cache.stats()
        assert stats.dirty == 0
        assert cache.pending() == 0
        assert stats.store_down_since is None
        last = writers.last_acked()
        assert store_rows(pg_table, sorted(last)) == last
    finally:
        pg_proxy.forward()
        cache.close(timeout=30)
        store.close()


CHILD = textwrap.dedent("""
    import sys, threading
    import cacheway as cw

    dsn, table, journal, n_threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    store = cw.PostgresStore(dsn, table=table, timeout=1.0)
    cache = cw.Cache(store=store, policy=cw.WriteBack(
        max_delay=0.05, journal=journal, fsync="always",
        retry=cw.Retry(base_delay=0.05, max_delay=0.3)))
    out = threading.Lock()

    def op(i, n):
        if n % 3 == 0:
            return ("incr", f"c{i}", None)
        if n % 11 == 5:
            return ("delete", f"w{i}-{n % 7}", None)
        return ("set", f"w{i}-{n % 7}", {"t": i, "n": n})

    def write(i):
        n = 0
        while True:
            kind, key, value = op(i, n)
            if kind == "incr":
                cache.incr(key)
            elif kind == "delete":
                cache.delete(key)
            else:
                cache.set(key, value)
            with out:                       # acknowledged: say so
                sys.stdout.write(f"{i} {n}\\n")
                sys.stdout.flush()
            n += 1

    for i in range(n_threads):
        threading.Thread(target=write, args=(i,), daemon=True).start()
    threading.Event().wait()
""")


def child_op(i: int, n: int) -> tuple[str, str, Any]:
    """The ``n``-th write of thread ``i`` of :data:`CHILD`."""
    if n % 3 == 0:
        return ("incr", f"c{i}", None)
    if n % 11 == 5:
        return ("delete", f"w{i}-{n % 7}", None)
    return ("set", f"w{i}-{n % 7}", {"t": i, "n": n})


def child_state(i: int, count: int) -> dict[str, Any]:
    """What the store holds for thread ``i``'s keys after its first ``count`` writes."""
    state: dict[str, Any] = {}
    for n in range(count):
        kind, key, value = child_op(i, n)
        if kind == "incr":
            state[key] = state.get(key, 0) + 1
        elif kind == "delete":
            state.pop(key, None)
        else:
            state[key] = value
    return state


def test_guarantee_2_journal_always_kill9_during_a_store_outage_replays_every_write(
        pg_proxy: FaultProxy, pg_table: str, tmp_path: Path) -> None:
    threads = 3
    journal = str(tmp_path / "app.wal")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(cw.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, pg_via(pg_proxy), pg_table, journal, str(threads)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    acked = [0] * threads
    lock = threading.Lock()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not line.endswith(b"\n"):
                break
            i, n = map(int, line.split())
            with lock:
                assert n == acked[i], (i, n, acked[i])
                acked[i] = n + 1

    def total() -> int:
        with lock:
            return sum(acked)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert wait_until(lambda: total() >= 90, timeout=30), "the child never wrote"
        pg_proxy.down()
        during = total()
        assert wait_until(lambda: total() >= during + 150, timeout=30), \
            "writes with fsync=always stopped being acknowledged during the outage"
        time.sleep(1.0)                    # the child's flusher fails and retries meanwhile
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(HANG)
        reader.join(HANG)
    pg_proxy.forward()
    final = list(acked)
    assert proc.returncode == -signal.SIGKILL
    # reopen on the same journal, the store reachable again: the replay applies the rest
    store = cw.PostgresStore(POSTGRES_DSN, table=pg_table)
    try:
        reopened = outcome(lambda: cw.Cache(store=store, policy=cw.WriteBack(
            journal=journal, fsync="always")))
        assert isinstance(reopened, cw.Cache), reopened
        assert outcome(lambda: reopened.close(timeout=30)) is None
    finally:
        store.close()
    for i in range(threads):
        keys = sorted(set(child_state(i, final[i] + 1)) | set(child_state(i, final[i]))
                      | {f"w{i}-{k}" for k in range(7)} | {f"c{i}"})
        got = store_rows(pg_table, keys)
        # the write in flight when killed may have been acknowledged before its line
        # was printed: the store holds the printed ones, or those and that one
        assert got in (child_state(i, final[i]), child_state(i, final[i] + 1)), \
            (i, final[i], got, child_state(i, final[i]))


# -- write-through over a PostgreSQL outage -----------------------------------------------
@pytest.mark.parametrize("mode", ["down", pytest.param("stall", marks=pytest.mark.slow)])
def test_guarantee_2_write_through_refuses_with_store_error_and_keeps_no_stale_copy(
        pg_proxy: FaultProxy, pg_table: str, redis_prefix: str, mode: str) -> None:
    store = cw.PostgresStore(pg_via(pg_proxy), table=pg_table, timeout=STORE_TIMEOUT)
    backend = cw.RedisBackend(REDIS_URL, prefix=redis_prefix)
    other_store = cw.PostgresStore(pg_via(pg_proxy), table=pg_table, timeout=STORE_TIMEOUT)
    other_backend = cw.RedisBackend(REDIS_URL, prefix=redis_prefix)
    cache = cw.Cache(store=store, backend=backend, policy=cw.WriteThrough())
    other = cw.Cache(store=other_store, backend=other_backend)   # another process, say
    try:
        cache.set_many({"k": "v1", "j": "j1"})
        assert cache.get("k") == "v1"
        assert other.get("k") == "v1"
        pg_proxy.set_mode(mode)
        for call in (lambda: cache.set("k", "v2"), lambda: cache.set_many({"j": "j2"})):
            err = outcome(call)
            assert isinstance(err, cw.StoreError), err
            assert not isinstance(err, cw.InvalidWriteError), err
        # no cached copy of the refused values: a read gives the old value or fails
        for c in (cache, other):
            for key, old in (("k", "v1"), ("j", "j1")):
                got = outcome(lambda c=c, key=key: c.get(key))
                assert got == old or isinstance(got, cw.StoreError), (key, got)
        pg_proxy.forward()
        assert wait_until(lambda: store_answers(pg_via(pg_proxy), pg_table), timeout=30)
        # whether a stalled write landed is unknown; the caches say what the store says
        truth = store_rows(pg_table, ["k", "j"])
        assert truth.get("k") in ("v1", "v2"), truth
        assert truth.get("j") in ("j1", "j2"), truth
        if mode == "down":
            assert truth == {"k": "v1", "j": "j1"}
        for c in (cache, other):      # (its pool may take a moment to reconnect)
            wait_until(lambda c=c: outcome(lambda: c.get_many(["k", "j"])) == truth, 30)
            assert outcome(lambda c=c: c.get_many(["k", "j"])) == truth
        cache.set("k", "v3")
        assert cache.get("k") == other.get("k") == store_rows(pg_table, ["k"])["k"] == "v3"
    finally:
        pg_proxy.forward()
        for c in (cache, other):
            c.close(timeout=10)
        for b in (backend, other_backend):
            b.close()
        for s in (store, other_store):
            s.close()


# -- a Redis backend that is down or stalled ----------------------------------------------
POLICIES: dict[str, Callable[[], Any]] = {
    "write-through": lambda: cw.WriteThrough(),
    "write-back": lambda: cw.WriteBack(max_delay=0.05, retry=FAST_RETRY),
}


@pytest.mark.parametrize(("policy", "mode"), [
    ("write-through", "down"),
    ("write-back", "down"),
    pytest.param("write-through", "stall", marks=pytest.mark.slow),  # ~15 s of timeouts
    pytest.param("write-back", "stall", marks=pytest.mark.slow),
])
def test_guarantee_2_a_redis_backend_outage_loses_no_acknowledged_write(
        redis_proxy: FaultProxy, pg_table: str, redis_prefix: str, policy: str,
        mode: str) -> None:
    # RedisBackend docs: connection errors raise BackendError, every call bounded by
    # timeout; DESIGN: a backend failure after a store success does not fail the write.
    # So each call ends (returns, or raises a cacheway error), and every write that
    # returned is in the store once flushed.
    store = cw.PostgresStore(POSTGRES_DSN, table=pg_table)
    backend = cw.RedisBackend(redis_via(redis_proxy), prefix=redis_prefix,
                              timeout=REDIS_TIMEOUT)
    cache = cw.Cache(store=store, backend=backend, policy=POLICIES[policy]())
    try:
        cache.set_many({"a": 0, "b": 0})
        cache.flush(timeout=30)
        redis_proxy.set_mode(mode)
        acked: dict[str, Any] = {}
        for key, value in (("a", 1), ("c", 1)):
            got = outcome(lambda key=key, value=value: cache.set(key, value))
            assert got is None or isinstance(got, cw.BackendError), got
            if got is None:
                acked[key] = value
        assert acked, "no write was acknowledged while Redis was unreachable"
        for key, value in acked.items():         # degraded reads: dirty table or store
            got = outcome(lambda key=key: cache.get(key))
            assert got == value or isinstance(got, cw.BackendError), (key, got)
        assert outcome(lambda: cache.flush(timeout=30)) is None
        assert store_rows(pg_table, sorted(acked)) == acked
        redis_proxy.forward()
        cache.set("after", 2)
        cache.flush(timeout=30)
        assert store_rows(pg_table, ["after"]) == {"after": 2}
    finally:
        redis_proxy.forward()
        cache.close(timeout=10)
        backend.close()
        store.close()


# Found by this round: a write while Redis was unreachable left the old copy there for
# ever (its drop failed and was never retried). Fixed: engine.undropped reads those keys
# from the store here and retries the drops, so other processes see the store's value too.


@pytest.mark.parametrize(("policy", "mode"), [
    ("write-through", "down"), ("write-back", "down"), ("write-through", "stall")])
def test_guarantee_4_after_a_redis_outage_the_cache_agrees_with_the_store(
        redis_proxy: FaultProxy, pg_table: str, redis_prefix: str, policy: str,
        mode: str) -> None:
    store = cw.PostgresStore(POSTGRES_DSN, table=pg_table)
    backend = cw.RedisBackend(redis_via(redis_proxy), prefix=redis_prefix,
                              timeout=REDIS_TIMEOUT)
    cache = cw.Cache(store=store, backend=backend, policy=POLICIES[policy]())
    try:
        cache.set("k", "v1")
        cache.flush(timeout=30)
        assert cache.get("k") == "v1"
        redis_proxy.set_mode(mode)
        assert outcome(lambda: cache.set("k", "v2")) is None   # the store takes it
        assert outcome(lambda: cache.flush(timeout=30)) is None
        assert store_rows(pg_table, ["k"]) == {"k": "v2"}
        redis_proxy.forward()
        assert cache.get("k") == "v2"
        # another cache sharing the Redis (it only reads what is there) gets the store's
        # value once the writer's retry dropped the old copy
        other_backend = cw.RedisBackend(REDIS_URL, prefix=redis_prefix)
        other_store = cw.PostgresStore(POSTGRES_DSN, table=pg_table)
        with cw.Cache(store=other_store, backend=other_backend,
                      policy=cw.WriteThrough()) as other:
            assert wait_until(lambda: other.get("k") == "v2", timeout=30), other.get("k")
        other_store.close()  # (a Cache leaves what it was given open)
        other_backend.close()
    finally:
        redis_proxy.forward()
        cache.close(timeout=10)
        backend.close()
        store.close()



@pytest.mark.parametrize("mode", ["down", "stall"])
def test_guarantee_4_after_a_redis_outage_an_async_cache_agrees_with_the_store(
        redis_proxy: FaultProxy, pg_table: str, redis_prefix: str, mode: str) -> None:
    # The same on AsyncCache's loop path (redis.asyncio, psycopg's async pool): a set
    # the store took while Redis was unreachable leaves no old copy to read afterwards.
    async def scenario() -> None:
        backend = cw.RedisBackend(redis_via(redis_proxy), prefix=redis_prefix,
                                  timeout=REDIS_TIMEOUT)
        store = cw.PostgresStore(POSTGRES_DSN, table=pg_table)
        async with cw.AsyncCache(store=store, backend=backend,
                                 policy=cw.WriteThrough()) as acache:
            await acache.set("k", "v1")
            assert await acache.get("k") == "v1"
            redis_proxy.set_mode(mode)
            await acache.set("k", "v2")   # the store takes it; the copy cannot change
            assert store_rows(pg_table, ["k"]) == {"k": "v2"}
            redis_proxy.forward()
            assert await acache.get("k") == "v2"
            assert await acache.get_many(["k"]) == {"k": "v2"}
        backend.close()
        store.close()

    try:
        asyncio.run(asyncio.wait_for(scenario(), HANG))
    finally:
        redis_proxy.forward()


# -- the distributed queue ----------------------------------------------------------------
@pytest.mark.parametrize("mode", ["down", "stall"])
def test_guarantee_3_queue_redis_outage_a_write_is_acknowledged_and_applied_or_refused(
        redis_proxy: FaultProxy, pg_table: str, qname: str, mode: str) -> None:
    store = cw.PostgresStore(POSTGRES_DSN, table=pg_table)
    policy = cw.WriteBack(queue=redis_via(redis_proxy), queue_name=qname, partitions=4,
                          retry=FAST_RETRY)
    cache = cw.Cache(store=store, policy=policy)
    try:
        cache.set("warm", 0)
        with Writers(cache, n=3, keys=5, pause=0.005) as writers:
            assert wait_until(lambda: writers.acked() >= 30)
            redis_proxy.set_mode(mode)
            time.sleep(1.5)
            redis_proxy.forward()
            back = writers.acked()
            assert wait_until(lambda: writers.acked() >= back + 30, timeout=30)
        assert not writers.unexpected, writers.unexpected
        refused = [err for log in writers.log for *_, err in log if err is not None]
        if mode == "down":
            assert refused, "no write was refused while the queue's Redis was down"
        assert all(isinstance(e, cw.BackendError) for e in refused), refused[:3]
        assert not writers.read_mismatch, writers.read_mismatch[:3]
        assert outcome(lambda: cache.flush(timeout=HANG / 2)) is None
        allowed = writers.allowed_final()
        got = store_rows(pg_table, sorted(allowed))
        wrong = {k: (got.get(k), v) for k, v in allowed.items() if got.get(k) not in v}
        assert not wrong, wrong
    finally:
        redis_proxy.forward()
        cache.close(timeout=30)
        store.close()


def test_guarantee_4_queue_and_redis_backend_down_a_refused_write_leaves_no_copy(
        redis_proxy: FaultProxy, pg_table: str, qname: str, redis_prefix: str) -> None:
    # The queue guide's setup: RedisBackend and queue on one Redis. A write is the copy and
    # the stream entry in one step, so a write refused while Redis is down leaves neither,
    # and once Redis is back every cache reads what the store ends with.
    url = redis_via(redis_proxy)
    made: list[Any] = []

    def open_cache(backend_url: str) -> cw.Cache:
        store = cw.PostgresStore(POSTGRES_DSN, table=pg_table)
        backend = cw.RedisBackend(backend_url, prefix=redis_prefix, timeout=REDIS_TIMEOUT)
        made.extend([backend, store])
        policy = cw.WriteBack(queue=backend_url, queue_name=qname, partitions=2,
                              retry=FAST_RETRY)
        return cw.Cache(store=store, backend=backend, policy=policy)

    cache = open_cache(url)
    other = open_cache(REDIS_URL)                # another process, Redis reachable
    try:
        cache.set_many({"k": "v1", "n": 0})
        cache.flush(timeout=30)
        assert other.get("k") == "v1"
        redis_proxy.down()
        for call in (lambda: cache.set("k", "v2"), lambda: cache.delete("n")):
            err = outcome(call)
            assert isinstance(err, cw.BackendError), err
        assert other.get_many(["k", "n"]) == {"k": "v1", "n": 0}
        redis_proxy.forward()
        assert outcome(lambda: cache.flush(timeout=HANG / 2)) is None
        truth = store_rows(pg_table, ["k", "n"])
        assert truth == {"k": "v1", "n": 0}
        assert cache.get_many(["k", "n"]) == other.get_many(["k", "n"]) == truth
        cache.set("k", "v3")
        cache.flush(timeout=30)
        assert other.get("k") == store_rows(pg_table, ["k"])["k"] == "v3"
    finally:
        redis_proxy.forward()
        cache.close(timeout=30)
        other.close(timeout=30)
        for thing in made:
            thing.close()


def test_guarantee_6_queue_consumer_keeps_entries_while_its_store_is_down(
        pg_proxy: FaultProxy, pg_table: str, qname: str) -> None:
    store = cw.PostgresStore(pg_via(pg_proxy), table=pg_table, timeout=STORE_TIMEOUT)
    policy = cw.WriteBack(queue=REDIS_URL, queue_name=qname, partitions=4, retry=FAST_RETRY)
    cache = cw.Cache(store=store, policy=policy)
    try:
        cache.set("warm", 0)
        cache.incr("n")              # read once: incr adds to the value it read (counters guide)
        cache.flush(timeout=30)
        pg_proxy.down()
        for round_ in range(3):
            cache.set_many({f"k{i}": {"i": i, "r": round_} for i in range(20)})
            cache.incr("n")
        cache.delete("k0")
        err = outcome(lambda: cache.flush(timeout=1.0))
        assert isinstance(err, cw.StoreError), err
        assert cache.get("k5") == {"i": 5, "r": 2}          # readable meanwhile
        assert cache.get("k0") is None
        depth = sum(p.depth for p in cache.stats(wait=5).queue)
        assert depth > 0, cache.stats().queue
        pg_proxy.forward()
        assert outcome(lambda: cache.flush(timeout=HANG / 2)) is None
        want = {f"k{i}": {"i": i, "r": 2} for i in range(1, 20)} | {"n": 4, "warm": 0}
        assert store_rows(pg_table, [*want, "k0"]) == want
        assert wait_until(lambda: sum(p.depth for p in cache.stats(wait=5).queue) == 0,
                          timeout=30), cache.stats().queue
    finally:
        pg_proxy.forward()
        cache.close(timeout=30)
        store.close()


# -- AsyncCache during a PostgreSQL stall -------------------------------------------------
async def raised(awaitable: Any) -> BaseException | None:
    try:
        await awaitable
    except cw.CachewayError as exc:
        return exc
    return None


def test_guarantee_8_async_cache_during_a_postgres_stall_keeps_the_loop_running(
        pg_proxy: FaultProxy, pg_table: str) -> None:
    store = cw.PostgresStore(pg_via(pg_proxy), table=pg_table, timeout=STORE_TIMEOUT)

    async def main() -> None:
        ac = cw.AsyncCache(store=store, policy=cw.WriteThrough())
        try:
            views = ac.namespace("views", policy=cw.WriteBack(max_delay=0.05,
                                                              retry=FAST_RETRY))
            await ac.set("a", 1)
            await views.set("v", 0)
            await views.incr("hits")     # read once: incr adds to the value it read
            await ac.flush(timeout=30)
            async with Ticker() as ticker:
                pg_proxy.stall()
                results = await asyncio.gather(
                    raised(ac.set("b", 2)),                 # write-through: StoreError
                    raised(ac.get("missing")),              # read-through: StoreError
                    *(raised(views.set(f"v{i}", i)) for i in range(20)),   # accepted
                    raised(views.incr("hits", 5)),
                )
                assert isinstance(results[0], cw.StoreError), results[0]
                assert isinstance(results[1], cw.StoreError), results[1]
                assert results[2:] == [None] * 21, results[2:]
                assert await ac.get("a") == 1                # cached copy
                assert await views.get("v7") == 7            # dirty table
                assert await views.get("hits") == 6
                err = await raised(views.flush(timeout=1.0))
                assert isinstance(err, cw.StoreError), err
                pg_proxy.forward()
            assert ticker.worst < LOOP_BOUND, f"the loop was held {ticker.worst:.3f} s"
            await ac.flush(timeout=30)
            await ac.set("b", 3)
            assert await ac.get("b") == 3
        finally:
            pg_proxy.forward()
            await ac.close(timeout=30)

    try:
        asyncio.run(asyncio.wait_for(main(), HANG))
    finally:
        pg_proxy.forward()
        store.close()
    assert store_rows(pg_table, ["a", "b"]) == {"a": 1, "b": 3}
    views = store_rows(pg_table, [f"v{i}" for i in range(20)] + ["hits", "v"], "views")
    assert views == {f"v{i}": i for i in range(20)} | {"hits": 6, "v": 0}
