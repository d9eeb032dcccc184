"""``WriteBack(queue=...)`` on a Redis Cluster (issue 13): 3 masters on loopback ports,
started by the fixture (``redis-server --cluster-enabled yes`` + ``redis-cli --cluster
create``) and stopped after.

The queue finds the cluster behind any node's ``redis://`` URL. Each partition's keys
share one slot (``{q:pN}``), and so does the copy of each key the queue keeps there
(``Names.copy``): the cached copy and the stream entry are still written by one script,
and a counter's value still comes from that copy."""

from __future__ import annotations

import json
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
from cacheway.backends.base import MISS
from cacheway.backends.redis import RedisBackend
from cacheway.queue import Consumer, Names, queue_status
from cacheway.queue.connect import connect
from cacheway.queue.copies import read_copies
from queue_child import PARTITIONS
from queue_servers import RedisCluster, need_redis_server
from queue_trials import process_kill_trial
from services import REDIS_URL, unique

SRC = str(Path(__file__).resolve().parent.parent / "src")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    need_redis_server()
    nodes = RedisCluster(tmp_path_factory.mktemp("cluster"))
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()


@pytest.fixture
def client(cluster: RedisCluster) -> Iterator[Any]:
    conn = connect(cluster.url)
    assert conn.cluster
    yield conn.client
    conn.client.close()


def _qname() -> str:
    return unique("qc").replace(":", "_").replace("-", "_")


def _cache(url: str, db: str, qname: str, partitions: int = 8) -> cw.Cache:
    return cw.Cache(store=cw.SQLiteStore(db), policy=cw.WriteBack(
        queue=url, queue_name=qname, partitions=partitions, flush_in_process=False,
        claim_after=1.0))


def _drain(client: Any, qname: str, store: Any, partitions: int = 8,
           timeout: float = 60.0) -> Consumer:
    names = Names(qname, partitions)
    consumer = Consumer(client, names, store, claim_after=1.0)
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while any(s.depth for s in queue_status(client, names)):
            assert time.monotonic() < deadline, "the consumer did not drain the queue"
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(15)
    return consumer


def test_the_partitions_spread_over_the_masters(client: Any) -> None:
    names = Names("spread", 16)
    slots = {client.keyslot(names.stream(n)) for n in range(16)}
    nodes = {client.get_node_from_key(names.stream(n)).port for n in range(16)}
    assert len(slots) == 16
    assert len(nodes) == 3  # the test does exercise several masters
    n = names.partition("", "k")
    assert client.keyslot(names.copy(n, "", "k")) == client.keyslot(names.stream(n))


def test_writes_through_the_cluster_drain_to_the_store(cluster: RedisCluster, client: Any,
                                                       tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    qname = _qname()
    cache = _cache(cluster.url, db, qname)
    other = _cache(cluster.url, db, qname)  # another process's cache, in effect
    store = cw.SQLiteStore(db)
    try:
        cache.set_many({f"k{i}": i for i in range(100)})
        cache.delete("k7")
        for _ in range(30):
            assert cache.incr("n", 2) > 0
            other.incr("n", 1)
        assert other.get("n") == 90  # its own last incr: the total of both
        # The other cache reads the queue's copies before the store has anything.
        assert other.get("k3") == 3
        assert other.get("k7") is None
        assert other.get_many(["k1", "k7", "n"]) == {"k1": 1, "n": 90}
        assert store.load("k3") is None
        assert sum(s.depth for s in cache.engines()[0].queue_stats()) == 161
        consumer = _drain(client, qname, store)
        assert consumer.applied == 161
        assert store.load_many([f"k{i}" for i in range(100)]) == {
            f"k{i}": i for i in range(100) if i != 7}
        assert store.load("n") == 90
        assert other.incr("n", 10) == 100
        cache.flush(timeout=0)  # every write of this cache is applied already
        _drain(client, qname, store)
        assert store.load("n") == 100
    finally:
        store.close()
        other.close()
        cache.close()


_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {src!r})
    import cacheway as cw
    db, qname, tag = sys.argv[1:4]
    cache = cw.Cache(store=cw.SQLiteStore(db), policy=cw.WriteBack(
        queue={url!r}, queue_name=qname, partitions=8, flush_in_process=False,
        claim_after=1.0))
    for i in range(300):
        cache.set(f"k{{i % 10}}", f"{{tag}}-{{i}}")
        cache.incr("total", 1)
    cache.flush(timeout=120)
    cache.close()
""")


def test_two_processes_and_two_workers_per_key_order_and_counters(
        cluster: RedisCluster, client: Any, tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    cw.SQLiteStore(db).close()
    qname = _qname()
    env = dict(os.environ, PYTHONPATH=SRC)
    worker = subprocess.Popen(
        [sys.executable, "-m", "cacheway.cli", "worker", "--queue", cluster.url,
         "--queue-name", qname, "--store", f"sqlite:///{db}", "--partitions", "8",
         "--processes", "2", "--claim-after", "1", "--status-every", "0"],
        env=env, stderr=subprocess.PIPE)
    try:
        code = _WRITER.format(src=SRC, url=cluster.url)
        writers = [subprocess.Popen([sys.executable, "-c", code, db, qname, tag])
                   for tag in ("a", "b")]
        assert [w.wait(180) for w in writers] == [0, 0]  # each flushed: all applied
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err.decode()
        store = cw.SQLiteStore(db)
        reader = _cache(cluster.url, db, qname)
        try:
            assert store.load("total") == 600
            assert reader.get("total") == 600
            for i in range(10):
                # The last accepted write of each key (the queue's copy) is the store's.
                value = store.load(f"k{i}")
                assert value == reader.get(f"k{i}")
                assert value.endswith(f"-{290 + i}")
            names = Names(qname, 8)
            assert all(s.depth == 0 for s in queue_status(client, names))
        finally:
            reader.close()
            store.close()
    finally:
        if worker.poll() is None:
            worker.kill()


def test_a_database_other_than_0_on_a_cluster_is_refused(cluster: RedisCluster) -> None:
    with pytest.raises(cw.ConfigError, match="only database 0"):
        connect(cluster.url[: -len("/0")] + "/1")


def _copy_of(client: Any, qname: str) -> Callable[[str], Any]:
    """The value of the queue's copy of a key of the default namespace, or MISS."""
    names = Names(qname, PARTITIONS)

    def copy_of(key: str) -> Any:
        row = read_copies(client, names, "", [key]).get(key)
        return MISS if row is None else json.loads(row.payload or b"null")

    return copy_of


def test_guarantee2_queue_on_a_cluster_app_and_worker_processes_killed_with_kill_9(
        cluster: RedisCluster, client: Any, tmp_path: Path) -> None:
    qname = _qname()
    process_kill_trial(client, cluster.url, qname, None, _copy_of(client, qname), tmp_path,
                       1, rounds=1)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 5))
def test_guarantee2_queue_on_a_cluster_kill_9_trials(cluster: RedisCluster, client: Any,
                                                     tmp_path: Path, seed: int) -> None:
    qname = _qname()
    process_kill_trial(client, cluster.url, qname, None, _copy_of(client, qname), tmp_path,
                       seed, rounds=3)


class _HeldBackend(RedisBackend):
    """A RedisBackend whose next set first runs ``hold`` (another process's write that
    overtakes this one between its ACCEPT and its copy)."""

    hold: Callable[[], object] | None = None

    def _run_hold(self) -> None:
        hold, self.hold = self.hold, None
        if hold is not None:
            hold()

    def set(self, *args: Any, **kwargs: Any) -> None:
        self._run_hold()
        super().set(*args, **kwargs)

    def delete(self, key: str, version: int | None = None) -> bool:
        self._run_hold()
        return super().delete(key, version)


def test_a_copy_on_another_redis_is_not_overwritten_by_an_older_write(
        cluster: RedisCluster, client: Any, tmp_path: Path, prefix: str) -> None:
    """With the copies on a RedisBackend apart from the queue (here: the queue on the
    cluster, the copies on one server), each copy is set after ACCEPT: a write accepted
    first and copied last must not leave its older value in the copy."""
    db = str(tmp_path / "s.db")
    qname = _qname()
    held = _HeldBackend(REDIS_URL, prefix=prefix)
    first = cw.Cache(store=cw.SQLiteStore(db), backend=held, policy=cw.WriteBack(
        queue=cluster.url, queue_name=qname, partitions=8, flush_in_process=False))
    second = cw.Cache(store=cw.SQLiteStore(db), backend=RedisBackend(REDIS_URL, prefix=prefix),
                      policy=cw.WriteBack(queue=cluster.url, queue_name=qname, partitions=8,
                                          flush_in_process=False))
    store = cw.SQLiteStore(db)
    copies = RedisBackend(REDIS_URL, prefix=prefix)
    try:
        for key, write in (("k", lambda: first.set("k", "older")),
                           ("d", lambda: first.delete("d"))):
            held.hold = lambda key=key: second.set(key, "newer")  # type: ignore[misc]
            write()  # accepted before second's write, copied after it
            assert held.hold is None
            assert copies.get(":" + key) == "newer"  # the default namespace's key
        _drain(client, qname, store)
        assert store.load_many(["k", "d"]) == {"k": "newer", "d": "newer"}
    finally:
        copies.close()
        store.close()
        second.close()
        first.close()


def test_expire_on_a_cluster_the_queue_copy_ends_by_the_stamp(
        cluster: RedisCluster, client: Any, tmp_path: Path) -> None:
    """expire= with the queue's own copies: the copy lives until the write's stamp at
    most, a fill from it lives no longer than the copy, the store's row is stamped."""
    db = str(tmp_path / "s.db")
    qname = _qname()
    names = Names(qname, 8)
    memory = cw.MemoryBackend()
    writer = _cache(cluster.url, db, qname)
    other = cw.Cache(store=cw.SQLiteStore(db), backend=memory, policy=cw.WriteBack(
        queue=cluster.url, queue_name=qname, partitions=8, flush_in_process=False))
    store = cw.SQLiteStore(db)
    try:
        s = writer.namespace("s", expire=100)
        t0 = time.time()
        s.set("k", "v")
        t1 = time.time()
        copy = names.copy(names.partition("s", "k"), "s", "k")
        assert 0 < client.pttl(copy) <= 100_000  # pinned until the stamp, not for good
        # A copy with 5 s left (as its data would have): a fill from it lives as long.
        client.pexpire(copy, 5000)
        o = other.namespace("s", expire=100)
        assert o.get("k") == "v"
        meta = memory.get_meta("s:k")
        assert meta[0] == "v"
        assert 0 < meta[1] <= 5
        _drain(client, qname, store)
        row = store.fetch("s", ["k"])["k"]
        assert row.expires_at is not None
        assert t0 + 100 <= row.expires_at <= t1 + 100
    finally:
        store.close()
        other.close()
        writer.close()
