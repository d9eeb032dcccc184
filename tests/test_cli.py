"""The ``cacheway`` command, driven in-process through ``cacheway.cli.main``."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw
from cacheway.cli import main
from cacheway.cli.demo import runner

OURS = [
    "write-through",
    "write-back",
    "write-around",
    "write-back+journal-always",
    "write-back+journal-everysec",
]
ALL = [*OURS, "textbook-write-through", "textbook-write-back"]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One demo with the crash column, JSON and plot, shared by the tests that read it."""
    out = tmp_path_factory.mktemp("demo")
    json_path, png_path = out / "out.json", out / "out.png"
    # capsys is function-scoped: a module fixture captures by hand
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main([
            "demo", "--ops", "200", "--workload", "read-heavy,counters", "--seed", "3",
            "--path", str(out / "data"), "--json", str(json_path), "--plot", str(png_path),
        ])
    return {"code": code, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(),
            "json": json.loads(json_path.read_text()), "png": png_path}


def test_demo_prints_a_table_with_every_strategy(demo_run: dict[str, Any]) -> None:
    assert demo_run["code"] == 0
    text = demo_run["stdout"]
    for workload in ("read-heavy", "counters"):
        assert workload in text
    for name in ALL:
        assert text.count(name) >= 2, name  # one row per workload table
    assert "Traceback" not in demo_run["stderr"]


def test_demo_json_means_what_it_says(demo_run: dict[str, Any]) -> None:
    doc = demo_run["json"]
    assert doc["config"]["ops"] == 200
    assert set(doc["workloads"]) == {"read-heavy", "counters"}
    for workload, entry in doc["workloads"].items():
        rows = entry["strategies"]
        assert set(rows) == set(ALL)
        for name in ("write-through", "write-back+journal-always"):
            # guarantee 2: no acknowledged write is lost under kill -9
            assert rows[name]["crash_acked_keys"] > 0, (workload, name, rows[name])
            assert rows[name]["lost_writes"] == 0, (workload, name, rows[name])
        # the textbook write-back queues rows in memory: a kill -9 loses them
        assert rows["textbook-write-back"]["lost_writes"] > 0, workload
        for name in OURS:
            assert rows[name]["stale_reads"] == 0, (workload, name)
            assert rows[name]["write_count"] + rows[name]["read_count"] == 200
            assert rows[name]["app_writes"] == rows[name]["write_count"]
        for name in ALL:
            m = rows[name]
            assert m["write_p50_us"] <= m["write_p99_us"] <= m["write_max_us"]
            assert 0.0 <= m["hit_ratio"] <= 1.0
        # write-through and write-around are durable on return: nothing pending
        assert rows["write-through"]["pending_before_flush"] == 0
        assert rows["write-through"]["store_writes_per_write"] == 1.0
    counters = doc["workloads"]["counters"]["strategies"]
    # write-back coalesces incr deltas: far fewer store writes than app writes
    assert counters["write-back"]["store_writes_per_write"] < 1
    assert counters["textbook-write-back"]["store_writes_per_write"] == 1.0


POLLUTION_PARTS = ("cache_evicted_unread", "cache_dropped_unread", "cache_unread_at_end")


def test_demo_pollution_column(demo_run: dict[str, Any]) -> None:
    assert "pollution" in demo_run["stdout"]
    doc = demo_run["json"]
    for workload, entry in doc["workloads"].items():
        for name, m in entry["strategies"].items():
            assert m["cache_inserts"] > 0, (workload, name)
            assert 0.0 <= m["cache_pollution"] <= 1.0, (workload, name)
            unread = sum(m[part] for part in POLLUTION_PARTS)
            assert m["cache_entries_read"] + unread == m["cache_inserts"], (workload, name)
            assert m["cache_pollution"] == pytest.approx(unread / m["cache_inserts"])
    read_heavy = doc["workloads"]["read-heavy"]["strategies"]
    for name in ALL:
        # the runner found cached entries under the backend's key names
        assert read_heavy[name]["cache_entries_read"] > 0, name
    counters = doc["workloads"]["counters"]["strategies"]
    # write-around: an incr drops the copy a read filled, often before anyone reads it
    around, through = counters["write-around"], counters["write-through"]
    assert around["cache_dropped_unread"] > 0
    assert around["cache_pollution"] > through["cache_pollution"]


def test_demo_pollution_on_bulk_import(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Pollution depends only on the seeded operations and the LRU, not on timing."""
    out_json = tmp_path / "bulk.json"
    code = main(["demo", "--ops", "600", "--workload", "bulk", "--policies",
                 "write-through,write-around,textbook-write-through", "--no-crash",
                 "--json", str(out_json)])
    assert code == 0
    rows = json.loads(out_json.read_text())["workloads"]["bulk"]["strategies"]
    through, around = rows["write-through"], rows["write-around"]
    # write-through caches every imported row; the 250-entry LRU evicts most unread
    assert through["cache_evicted_unread"] > 0
    # write-around caches only what is read: a far smaller share of the cache is wasted
    # (the *share* of unread entries is about the same, ~96% in both: don't compare it)
    assert around["cache_evicted_unread"] == 0
    unread = {name: sum(rows[name][part] for part in POLLUTION_PARTS) for name in rows}
    assert unread["write-around"] * 10 < unread["write-through"]
    # the real MemoryBackend and the textbook's dict LRU see the same entries come and go
    textbook = rows["textbook-write-through"]
    for field in ("cache_inserts", "cache_entries_read", *POLLUTION_PARTS):
        assert textbook[field] == through[field], field


def test_demo_plot_is_a_png(demo_run: dict[str, Any]) -> None:
    data = Path(demo_run["png"]).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000


def test_demo_policies_and_workload_select_rows(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--ops", "100", "--workload", "bulk", "--policies",
                 "write-back,textbook", "--no-crash"])
    out = capsys.readouterr().out
    assert code == 0
    assert "bulk" in out
    assert "read-heavy" not in out
    assert "write-back" in out
    assert "textbook-write-back" in out
    assert "write-around" not in out
    assert "journal" not in out.split("lost after")[0]


def test_demo_skips_journal_rows_when_the_journal_module_is_missing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_open = runner.cw_open

    def fake_open(**kwargs: Any) -> Any:
        if "journal" in kwargs:
            raise ModuleNotFoundError("No module named 'cacheway.writeback.journal'")
        return real_open(**kwargs)

    monkeypatch.setattr(runner, "cw_open", fake_open)
    code = main(["demo", "--ops", "50", "--workload", "counters", "--policies",
                 "write-back,always", "--no-crash"])
    out = capsys.readouterr().out
    assert code == 0
    assert "skipped: journal not available" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["demo", "--ops", "x"], "--ops"),
        (["demo", "--ops", "0"], "--ops"),
        (["demo", "--workload", "nope"], "unknown workload"),
        (["demo", "--policies", "write-sideways"], "unknown policy"),
        (["demo", "--frobnicate"], "unrecognized arguments"),
        (["teleport"], "invalid choice"),
        ([], "required"),
        (["bench", "--store", "redis://localhost:6379/0"], "redis://localhost"),
        (["bench", "--store", "postgresql://u@localhost/db"], "postgresql://"),
        (["bench", "--store", "sqlite:///x.db", "--backend",
          "redis://localhost:6379/0?frobnicate=1"], "frobnicate"),
        (["bench", "--store", "nosuch://x"], "unknown store URL"),
        (["bench", "--store", "sqlite:///x.db", "--processes", "-1"], "--processes"),
        (["demo", "--json", "/no/such/dir/out.json"], "does not exist"),
        (["journal", "inspect", "/no/such/journal.wal"], "no journal"),
        (["journal", "replay", "/no/such/journal.wal", "--store", "sqlite:///x.db"],
         "no journal"),
        (["journal", "replay", "x.wal"], "--store"),
        (["journal", "replay", ".", "--store", "sqlite:///x.db"], "holds no journal"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str],
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("cacheway: error: ")
    assert needle in lines[0]
    assert "Traceback" not in captured.err
    assert captured.out == ""


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "demo" in capsys.readouterr().out
    assert main(["demo", "--help"]) == 0
    assert "--policies" in capsys.readouterr().out


def test_python_dash_m_cacheway_is_the_cacheway_command() -> None:
    out = subprocess.run([sys.executable, "-m", "cacheway", "journal", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: cacheway journal")


def test_bench_on_a_sqlite_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "bench.db"
    out_json = tmp_path / "bench.json"
    code = main(["bench", "--store", f"sqlite:///{db}", "--backend", "memory://",
                 "--ops", "200", "--workload", "counters", "--policies",
                 "write-back,write-through,textbook-write-back", "--json", str(out_json)])
    assert code == 0
    out = capsys.readouterr().out
    assert "counters" in out
    assert "textbook-write-back" in out
    rows = json.loads(out_json.read_text())["workloads"]["counters"]["strategies"]
    assert rows["write-back"]["store_writes_per_write"] < 1
    assert rows["write-through"]["stale_reads"] == 0
    assert "lost_writes" not in rows["write-through"]  # the crash column is demo-only


def test_bench_processes_merge_their_results(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out_json = tmp_path / "bench.json"
    code = main(["bench", "--store", f"sqlite:///{tmp_path / 'b.db'}", "--processes", "2",
                 "--ops", "100", "--workload", "read-heavy", "--policies", "write-back",
                 "--json", str(out_json)])
    assert code == 0
    row = json.loads(out_json.read_text())["workloads"]["read-heavy"]["strategies"]["write-back"]
    assert row["write_count"] + row["read_count"] == 200
    assert row["stale_reads"] == 0


def test_bench_memory_store_leaves_out_textbook_baselines(
    capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["bench", "--store", "sqlite://:memory:", "--ops", "50", "--workload",
                 "read-heavy", "--policies", "write-through,textbook"])
    out = capsys.readouterr().out
    assert code == 0
    assert "write-through" in out
    assert "textbook" not in out


def test_journal_inspect_on_a_journal_written_by_a_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wal = tmp_path / "app.wal"
    policy = cw.WriteBack(journal=str(wal), fsync="always", max_delay=60)
    with cw.Cache(store=cw.SQLiteStore(str(tmp_path / "app.db")), policy=policy) as cache:
        for i in range(5):
            cache.set(f"k{i}", i)
        assert main(["journal", "inspect", str(wal)]) == 0
        out = capsys.readouterr().out
    assert "records to replay" in out
    assert "damage" in out
    assert "none" in out
    line = next(x for x in out.splitlines() if "records to replay" in x)
    assert line.split()[-2] == "5"  # the row reads "│ records to replay │ 5 │"
    # after close the store has everything: nothing left to replay
    assert main(["journal", "inspect", str(wal)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "records to replay" in x)
    assert line.split()[-2] == "0"


def test_journal_replay_applies_what_a_killed_cache_left(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wal, db = tmp_path / "app.wal", tmp_path / "app.db"
    script = textwrap.dedent(f"""
        import os, cacheway as cw
        cache = cw.Cache(store=cw.SQLiteStore({str(db)!r}),
                         policy=cw.WriteBack(journal={str(wal)!r}, fsync="always",
                                             max_delay=60))
        for i in range(7):
            cache.set(f"k{{i}}", {{"n": i}})
        cache.incr("hits", 3)
        os._exit(0)  # no flush, no atexit: like a crash
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    with cw.SQLiteStore(str(db)) as store:
        assert store.load_many([f"k{i}" for i in range(7)]) == {}
    assert main(["journal", "replay", str(wal), "--store", f"sqlite:///{db}"]) == 0
    out = capsys.readouterr().out
    assert "writes applied" in out
    with cw.SQLiteStore(str(db)) as store:
        assert store.load("k6") == {"n": 6}
        assert store.load("hits") == 3
    # replaying again applies nothing
    assert main(["journal", "replay", str(wal), "--store", f"sqlite:///{db}"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "writes applied" in x)
    assert line.split()[-2] == "0"


def test_journal_replay_with_a_backend_drops_its_stale_copies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], redis_url: str, prefix: str
) -> None:
    # The journal's cache died with its writes in Redis but not in the store: after a
    # replay from the command line, Redis must not keep serving copies the replay may
    # have changed (an older copy, a counter's partial sum).
    wal, db = tmp_path / "app.wal", tmp_path / "app.db"
    script = textwrap.dedent(f"""
        import os, cacheway as cw
        cache = cw.Cache(store=cw.SQLiteStore({str(db)!r}),
                         backend=cw.RedisBackend({redis_url!r}, prefix={prefix!r}),
                         policy=cw.WriteBack(journal={str(wal)!r}, fsync="always",
                                             max_delay=60))
        cache.set("k", {{"n": 1}})
        cache.incr("hits", 3)
        os._exit(0)  # no flush, no atexit: like a crash
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    stale = cw.RedisBackend(redis_url, prefix=prefix)
    stale.set(":k", {"n": 0}, None, None)  # what another process left there meanwhile
    assert stale.get(":k") == {"n": 0}
    url = f"{redis_url}?prefix={prefix}"
    assert main(["journal", "replay", str(wal), "--store", f"sqlite:///{db}",
                 "--backend", url]) == 0
    out = capsys.readouterr().out
    assert "shared copies dropped" in out
    from cacheway.backends.base import MISS
    assert stale.get(":k") is MISS
    assert stale.get(":hits") is MISS
    with cw.Cache(store=cw.SQLiteStore(str(db)), backend=stale) as cache:
        assert cache.get("k") == {"n": 1}
        assert cache.get("hits") == 3


def test_check_of_a_mistyped_sqlite_path_fails_and_creates_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``cacheway check`` opened the mistyped path as a new, empty database and exited 0
    ("nothing to compare"), leaving the empty file behind."""
    missing = tmp_path / "typo.db"
    code = main(["check", "--store", f"sqlite:///{missing}", "--backend", "memory://"])
    assert code == 2
    assert "no SQLite database" in capsys.readouterr().err
    assert not missing.exists()
