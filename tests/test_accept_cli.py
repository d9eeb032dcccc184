"""Acceptance tests of the ``cacheway`` CLI, run as subprocesses the way a user runs them,
written from README, DESIGN.md and docs/ only (demo, bench, check, journal, worker, top)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from typing import Any

import pytest

import cacheway as cw
from accept_support import child_env, cli, no_traceback, pg_rows
from services import POSTGRES_DSN, REDIS_URL


def test_help_and_version() -> None:
    out = cli("--help")
    assert out.returncode == 0
    for command in ("demo", "bench", "check", "top", "journal", "worker"):
        assert command in out.stdout
    version = cli("--version")
    assert version.returncode == 0
    assert "cacheway" in version.stdout + version.stderr


def test_demo_measures_the_policies_it_is_asked_for(tmp_path: Any) -> None:
    report = tmp_path / "demo.json"
    out = cli("demo", "--ops", "200", "--no-crash", "--workload", "counters",
              "--policies", "write-back,write-through", "--json", str(report))
    assert out.returncode == 0, out.stderr
    assert "write-back" in out.stdout
    assert "write-through" in out.stdout
    assert "write-around" not in out.stdout
    assert "write-back" in report.read_text()
    json.loads(report.read_text())


def test_demo_refuses_an_unknown_workload_or_policy() -> None:
    for args in (("--workload", "nope"), ("--policies", "write-sideways")):
        out = cli("demo", "--ops", "50", "--no-crash", *args)
        assert out.returncode != 0
        assert args[1] in out.stderr
        assert no_traceback(out)


def test_bench_runs_on_a_store_url(tmp_path: Any) -> None:
    out = cli("bench", "--store", f"sqlite:///{tmp_path}/b.db", "--ops", "100",
              "--workload", "counters", "--policies", "write-back")
    assert out.returncode == 0, out.stderr
    assert "write-back" in out.stdout


@pytest.mark.parametrize(("args", "word"), [
    (("check", "--store", "nosuch://app:hunter2@db/x", "--backend", "memory://"), "nosuch"),
    (("check", "--store", "sqlite:///a.db", "--backend", "memory://?bogus=1"), "bogus"),
    (("bench", "--store", "sqlite:///a.db?foo=1", "--ops", "10"), "foo"),
    (("worker", "--queue", REDIS_URL), "--queue-name"),
    (("journal", "inspect", "no-such.wal"), "no-such.wal"),
    (("journal", "replay", "no-such.wal", "--store", "sqlite:///a.db"), "no-such.wal"),
])
def test_bad_arguments_exit_non_zero_with_an_actionable_message(args: tuple[str, ...], word: str,
                                                                tmp_path: Any) -> None:
    out = cli(*args, cwd=str(tmp_path))
    assert out.returncode != 0
    assert word in out.stderr, out.stderr
    assert "hunter2" not in out.stdout + out.stderr
    assert no_traceback(out)


# -- cacheway check -------------------------------------------------------------------------

def test_check_agrees_then_finds_a_disagreement(tmp_path: Any, prefix: str) -> None:
    store = f"sqlite:///{tmp_path}/app.db"
    backend = f"{REDIS_URL}?prefix={prefix}"
    with cw.open(store=store, backend=backend) as cache:
        for i in range(20):
            cache.set(f"k{i}", {"i": i})
    report = tmp_path / "check.json"
    ok = cli("check", "--store", store, "--backend", backend, "--quiet", "0.1",
             "--json", str(report))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "20 of 20" in ok.stdout
    json.loads(report.read_text())
    # Another program changes the store behind the shared copies.
    with cw.Cache(store=cw.SQLiteStore(str(tmp_path / "app.db"))) as behind:
        behind.set("k3", "changed")
    bad = cli("check", "--store", store, "--backend", backend, "--quiet", "0.1", "--rounds", "1")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "disagree" in bad.stdout


def test_check_of_a_named_namespace(tmp_path: Any, prefix: str) -> None:
    store = f"sqlite:///{tmp_path}/app.db"
    backend = f"{REDIS_URL}?prefix={prefix}"
    with cw.open(store=store, backend=backend) as cache:
        cache.namespace("views").set("a", 1)
        cache.namespace("views").set("b", 2)
    out = cli("check", "--store", store, "--backend", backend, "--namespace", "views",
              "--quiet", "0.1")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 of 2" in out.stdout


# -- cacheway journal -----------------------------------------------------------------------

_CRASH = textwrap.dedent(
    """
    import os, sys
    import cacheway as cw
    cache = cw.Cache(store=cw.SQLiteStore(sys.argv[1]),
                     policy=cw.WriteBack(max_delay=3600, journal=sys.argv[2], fsync="always"))
    for i in range(5):
        cache.set(f"k{i}", i)
    cache.incr("n", 7)
    os._exit(0)          # no flush, no close: the journal holds the writes
    """
)


def test_journal_inspect_and_replay_after_a_crash(tmp_path: Any) -> None:
    db, wal = str(tmp_path / "app.db"), str(tmp_path / "app.wal")
    subprocess.run([sys.executable, "-c", _CRASH, db, wal], check=True, env=child_env(),
                   timeout=60)
    inspect = cli("journal", "inspect", wal)
    assert inspect.returncode == 0, inspect.stderr
    assert "records to replay" in inspect.stdout
    assert "6" in inspect.stdout
    replay = cli("journal", "replay", wal, "--store", f"sqlite:///{db}")
    assert replay.returncode == 0, replay.stderr
    with cw.Cache(store=cw.SQLiteStore(db)) as cache:
        assert cache.get_many([f"k{i}" for i in range(5)] + ["n"]) == {
            "k0": 0, "k1": 1, "k2": 2, "k3": 3, "k4": 4, "n": 7}
    again = cli("journal", "replay", wal, "--store", f"sqlite:///{db}")   # idempotent
    assert again.returncode == 0, again.stderr
    with cw.Cache(store=cw.SQLiteStore(db)) as cache:
        assert cache.get("n") == 7


def test_journal_inspect_reports_damage_with_exit_1(tmp_path: Any) -> None:
    db, wal = str(tmp_path / "app.db"), str(tmp_path / "app.wal")
    subprocess.run([sys.executable, "-c", _CRASH, db, wal], check=True, env=child_env(),
                   timeout=60)
    segments = sorted((tmp_path / "app.wal").glob("*.seg"))
    assert segments
    data = bytearray(segments[0].read_bytes())
    data[len(data) // 3] ^= 0xFF                         # damage in the middle
    segments[0].write_bytes(bytes(data))
    out = cli("journal", "inspect", wal)
    assert out.returncode == 1, out.stdout + out.stderr
    assert segments[0].name in out.stdout + out.stderr
    assert no_traceback(out)


# -- cacheway worker ------------------------------------------------------------------------

def test_worker_applies_the_queue_and_exits_0_on_sigterm(pg_table: str, qname: str,
                                                         redis_backend: cw.RedisBackend) -> None:
    store_url = f"{POSTGRES_DSN}?table={pg_table}"
    # The store's table exists before the worker starts.
    cw.PostgresStore(POSTGRES_DSN, table=pg_table).close()
    worker = subprocess.Popen(
        ["cacheway", "worker", "--queue", REDIS_URL, "--queue-name", qname, "--store", store_url,
         "--partitions", "4", "--claim-after", "5", "--status-every", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        policy = cw.WriteBack(queue=REDIS_URL, queue_name=qname, partitions=4,
                              flush_in_process=False)
        with cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_table),
                      backend=redis_backend, policy=policy) as cache:
            for i in range(50):
                cache.set(f"k{i}", i)
            cache.incr("views", 2)
            cache.incr("views", 3)
            cache.flush(timeout=30)                  # waits for the worker
            rows = pg_rows(POSTGRES_DSN, pg_table)
            assert rows == {**{f"k{i}": i for i in range(50)}, "views": 5}
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert no_traceback(subprocess.CompletedProcess([], 0, "", err))


def test_worker_with_an_unreachable_queue_says_so_without_a_traceback(tmp_path: Any) -> None:
    out = cli("worker", "--queue", "redis://127.0.0.1:1/0", "--queue-name", "nowhere",
              "--store", f"sqlite:///{tmp_path}/w.db", "--status-every", "0")
    assert out.returncode != 0
    assert "127.0.0.1:1" in out.stderr
    assert no_traceback(out), out.stderr[-300:]


# -- cacheway top ---------------------------------------------------------------------------

def test_top_once_exits_1_naming_an_endpoint_that_does_not_answer() -> None:
    out = cli("top", "--once", "--interval", "0.2", "--metrics", "http://127.0.0.1:9/metrics")
    assert out.returncode == 1
    assert "127.0.0.1:9" in out.stdout + out.stderr
    assert no_traceback(out)


def test_top_once_reads_a_live_metrics_endpoint(tmp_path: Any) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    registry = prometheus_client.CollectorRegistry()
    with cw.Cache(store=cw.SQLiteStore(str(tmp_path / "a.db"))) as cache:
        from cacheway.metrics import PrometheusCollector
        registry.register(PrometheusCollector(cache))
        cache.namespace("views").set("a", 1)
        cache.get("a")
        server, thread = prometheus_client.start_http_server(0, addr="127.0.0.1",
                                                             registry=registry)
        try:
            url = f"http://127.0.0.1:{server.server_port}/metrics"
            out = cli("top", "--once", "--interval", "0.2", "--metrics", url)
        finally:
            server.shutdown()
            thread.join(5)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "views" in out.stdout
