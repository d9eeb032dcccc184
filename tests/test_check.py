"""The consistency checker (cacheway.check) and `cacheway check`, on real Redis and
PostgreSQL/SQLite: it finds planted disagreements, reports none on a consistent setup, and
lets writes in flight settle before it counts them."""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis

import cacheway as cw
from cacheway.check import CheckReport, check
from cacheway.cli import main
from services import unique

pytestmark = pytest.mark.services

HEADER = struct.Struct(">QB")  # RedisBackend's entry header: version, flag


def plant(client: redis.Redis, name: str, value: Any, version: int = 10**12, flag: int = 0
          ) -> None:
    """Write an entry straight into Redis with a valid header, behind the cache's back."""
    payload = b"" if flag == 1 else json.dumps(value).encode()
    client.set(name, HEADER.pack(version, flag) + payload)


def drop_table(dsn: str, table: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}", "{table}_meta", "{table}_applied" CASCADE')
        conn.execute(f'DROP SEQUENCE IF EXISTS "{table}_version_seq"')


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def prefix(client: redis.Redis) -> Iterator[str]:
    p = unique("cwchk") + ":"
    yield p
    for name in client.scan_iter(match=p + "*"):
        client.delete(name)


@pytest.fixture
def pg_store(postgres_dsn: str) -> Iterator[cw.PostgresStore]:
    table = unique("cwchk")
    store = cw.PostgresStore(postgres_dsn, table=table)
    yield store
    store.close()
    drop_table(postgres_dsn, table)


@pytest.fixture
def backend(redis_url: str, prefix: str) -> Iterator[cw.RedisBackend]:
    b = cw.RedisBackend(redis_url, prefix=prefix)
    yield b
    b.close()


def fill(store: Any, backend: Any, n: int = 50, namespace: str | None = None) -> None:
    with cw.Cache(store=store, backend=backend) as cache:
        target: Any = cache if namespace is None else cache.namespace(namespace)
        target.set_many({f"k{i}": {"i": i} for i in range(n)})


def no_sleep(seconds: float) -> None:
    return None


def test_a_consistent_setup_reports_no_disagreement(pg_store: cw.PostgresStore,
                                                    backend: cw.RedisBackend) -> None:
    fill(pg_store, backend)
    report = check(pg_store, backend, quiet=0.0, sleep=no_sleep)
    assert (report.checked, report.disagreeing, report.examples) == (50, 0, [])
    assert str(report) == ("50 of 50 sampled entries agree: at least 1.7 nines consistent "
                           "within 0 s")


def test_the_checker_finds_planted_disagreements(pg_store: cw.PostgresStore,
                                                 backend: cw.RedisBackend,
                                                 client: redis.Redis, prefix: str) -> None:
    fill(pg_store, backend, n=990)
    plant(client, prefix + ":k7", {"i": "stale"})  # differs from the store's {"i": 7}
    plant(client, prefix + ":ghost", "no row")  # cached, but the store has no such key
    # Markers are not values: a tombstone, a lease, a not-found answer never disagree.
    plant(client, prefix + ":k1", None, flag=1)
    plant(client, prefix + ":k2", None, flag=2)
    plant(client, prefix + ":gone", None, flag=3)
    report = check(pg_store, backend, quiet=1.0, sleep=no_sleep, seed=1)
    assert report.checked == 989  # 990 values - k1, k2 + ghost
    assert report.disagreeing == 2
    found = {e.key: e for e in report.examples}
    assert set(found) == {"k7", "ghost"}
    assert (found["k7"].cached, found["k7"].stored, found["k7"].stored_found) == (
        {"i": "stale"}, {"i": 7}, True)
    assert found["k7"].cached_version == 10**12
    assert (found["ghost"].cached, found["ghost"].stored_found) == ("no row", False)
    assert str(report).startswith("987 of 989 sampled entries agree: 2.7 nines consistent "
                                  "within 1.0 s")


def test_a_write_in_flight_is_not_an_inconsistency(pg_store: cw.PostgresStore,
                                                   backend: cw.RedisBackend,
                                                   client: redis.Redis, prefix: str) -> None:
    fill(pg_store, backend, n=10)
    plant(client, prefix + ":k3", {"i": "new"})  # as if the store write were still coming
    looks: list[float] = []

    def sleep(seconds: float) -> None:
        looks.append(seconds)
        pg_store.save_many({"k3": {"i": "new"}})  # ...and now it has landed

    report = check(pg_store, backend, quiet=0.5, sleep=sleep)
    assert (report.checked, report.disagreeing, looks) == (10, 0, [0.5])


def test_a_disagreement_that_keeps_moving_still_counts(pg_store: cw.PostgresStore,
                                                       backend: cw.RedisBackend,
                                                       client: redis.Redis, prefix: str
                                                       ) -> None:
    fill(pg_store, backend, n=10)
    plant(client, prefix + ":k3", 0)
    looks: list[float] = []

    def sleep(seconds: float) -> None:  # a different wrong value at every look
        looks.append(seconds)
        plant(client, prefix + ":k3", len(looks))

    report = check(pg_store, backend, quiet=0.25, rounds=4, sleep=sleep)
    assert (report.disagreeing, report.rounds, looks) == (1, 4, [0.25] * 4)
    assert report.examples[0].cached == 4


def test_namespaces_are_checked_separately(pg_store: cw.PostgresStore,
                                           backend: cw.RedisBackend,
                                           client: redis.Redis, prefix: str) -> None:
    fill(pg_store, backend, n=5, namespace="views")
    fill(pg_store, backend, n=5)
    plant(client, prefix + "views:k1", "wrong")
    assert check(pg_store, backend, sleep=no_sleep).disagreeing == 0
    report = check(pg_store, backend, namespaces=["", "views"], sleep=no_sleep)
    assert (report.checked, report.disagreeing) == (10, 1)
    assert (report.examples[0].namespace, report.examples[0].key) == ("views", "k1")


def test_store_rows_top_up_the_sample(pg_store: cw.PostgresStore,
                                      backend: cw.RedisBackend) -> None:
    pg_store.save_many({f"row{i}": i for i in range(20)})  # stored, never cached
    fill(pg_store, backend, n=5)
    report = check(pg_store, backend, sample=15, sleep=no_sleep)
    assert (report.sampled, report.checked, report.disagreeing) == (15, 5, 0)


def test_memory_and_two_level_backends(tmp_path: Path, redis_url: str, prefix: str,
                                       client: redis.Redis) -> None:
    store = cw.SQLiteStore(tmp_path / "app.db")
    memory = cw.MemoryBackend()
    fill(store, memory, n=5)
    memory.set(":k2", [1, 2], None, None)
    store.save_many({"k2": [1, 2]})
    assert check(store, memory, sleep=no_sleep).disagreeing == 0
    memory.set(":k4", "stale", None, None)
    report = check(store, memory, sleep=no_sleep)
    assert (report.checked, report.disagreeing, report.examples[0].level) == (5, 1, "memory")

    l2 = cw.RedisBackend(redis_url, prefix=prefix)
    two = cw.TwoLevelBackend(cw.MemoryBackend(), l2)
    try:
        assert two.wait_ready(5)
        with cw.Cache(store=store, backend=two) as cache:
            assert cache.get("k0") == {"i": 0}  # fills Redis, then (next read) the L1
            assert cache.get("k0") == {"i": 0}
            # Redis's invalidation of the fills above reaches the L1 asynchronously: on a
            # loaded machine it can drop the stale copy planted here; plant it again.
            for _ in range(100):
                two.l1.set(":k0", "stale in L1", None, None)
                report = check(store, two, sleep=no_sleep)
                if report.checked == 2:
                    break
                time.sleep(0.05)
            assert report.checked == 2  # k0 in the L1 and in Redis
            assert [(e.level, e.cached) for e in report.examples] == [("L1", "stale in L1")]
    finally:
        two.close()
        l2.close()
        store.close()


def test_bad_arguments_are_config_errors(tmp_path: Path) -> None:
    store = cw.SQLiteStore(tmp_path / "app.db")
    for kwargs in ({"sample": 0}, {"quiet": -1}, {"rounds": -1}, {"namespaces": ["a:b"]}):
        with pytest.raises(cw.ConfigError):
            check(store, cw.MemoryBackend(), **kwargs)
    with pytest.raises(cw.ConfigError, match="RedisBackend"):
        check(store, object())
    store.close()


def test_report_sentence_and_nines() -> None:
    assert str(CheckReport(1000, 1, nines=3.0, within_seconds=1.0)) == (
        "999 of 1000 sampled entries agree: 3 nines consistent within 1.0 s")
    assert "nothing to compare" in str(CheckReport(0, 0, sampled=7))


# -- the command, in-process --------------------------------------------------------------
@pytest.fixture
def urls(tmp_path: Path, redis_url: str, prefix: str) -> tuple[str, str, Path]:
    db = tmp_path / "app.db"
    store_url = f"sqlite:///{db}?table=kv"
    backend_url = f"{redis_url}?prefix={prefix}"
    with cw.open(store=store_url, backend=backend_url) as cache:
        cache.set_many({f"k{i}": i for i in range(30)})
    return store_url, backend_url, tmp_path


def test_cli_reports_agreement_with_exit_0(urls: tuple[str, str, Path],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    store_url, backend_url, tmp = urls
    out_json = tmp / "report.json"
    code = main(["check", "--store", store_url, "--backend", backend_url, "--quiet", "0",
                 "--json", str(out_json)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "30 of 30 sampled entries agree: at least 1.5 nines consistent within 0 s" in out
    data = json.loads(out_json.read_text())
    assert (data["checked"], data["disagreeing"], data["examples"]) == (30, 0, [])


def test_cli_reports_disagreement_with_exit_1(urls: tuple[str, str, Path], prefix: str,
                                              client: redis.Redis,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    store_url, backend_url, _ = urls
    plant(client, prefix + ":k5", "wrong")
    code = main(["check", "--store", store_url, "--backend", backend_url, "--quiet", "0.05",
                 "--namespace", "default", "--sample", "100"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "29 of 30 sampled entries agree: 1.5 nines consistent within 0.05 s" in out
    assert "'wrong'" in out
    assert "k5" in out


@pytest.mark.parametrize("argv", [
    ["--store", "bogus://x", "--backend", "memory://"],
    ["--store", "sqlite:///x.db", "--backend", "nope://"],
    ["--store", "sqlite:///x.db", "--backend", "memory://", "--quiet", "-1"],
    ["--store", "sqlite:///x.db", "--backend", "memory://", "--namespace", "a:b"],
    ["--backend", "memory://"],
])
def test_cli_bad_input_is_one_line_and_exit_2(argv: list[str], tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    code = main(["check", *argv])
    captured = capsys.readouterr()
    assert code == 2
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("cacheway: error: "), captured.err
    assert captured.out == ""


def test_row_mode_stores_are_sampled_too(tmp_path: Path) -> None:
    # Row mode has no namespace column: the checker samples the table's keys through
    # the store's sample_keys, and finds a row changed behind the cache's back.
    import sqlite3

    path = tmp_path / "rows.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id TEXT PRIMARY KEY, name TEXT)")
    store = cw.SQLiteStore(path, table="users", key_column="id", columns=["name"])
    memory = cw.MemoryBackend()
    with cw.Cache(store=store, backend=memory) as cache:
        cache.set_many({f"u{i}": {"name": str(i)} for i in range(10)})
        report = check(store, memory, sleep=no_sleep)
        assert (report.checked, report.disagreeing) == (10, 0)
        with sqlite3.connect(path) as conn:
            conn.execute("UPDATE users SET name = 'changed' WHERE id = 'u3'")
        report = check(store, memory, sleep=no_sleep)
        assert report.disagreeing == 1
        assert report.examples[0].key == "u3"
        assert report.examples[0].stored == {"name": "changed"}
    store.close()


def test_a_callback_store_is_checked_on_cached_keys_only() -> None:
    data: dict[str, Any] = {}
    store = cw.CallbackStore(load_many=lambda ks: {k: data[k] for k in ks if k in data},
                             save_many=lambda items: data.update(items),
                             delete_many=lambda ks: [data.pop(k, None) for k in ks])
    memory = cw.MemoryBackend()
    data["only-stored"] = 1
    with cw.Cache(store=store, backend=memory) as cache:
        cache.set("a", 1)
        report = check(store, memory, sleep=no_sleep)
    assert (report.sampled, report.checked, report.disagreeing) == (1, 1, 0)
