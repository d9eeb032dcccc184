"""Acceptance round 4b, as a new user meets the project: the ``cacheway`` CLI run as a
subprocess (help of every command, ``journal`` on real journals, ``check`` on SQLite,
PostgreSQL and Redis with wrong URLs, ``worker`` argument errors, ``top`` without a TTY),
the docs' Python blocks run as promises, the metrics exporters, and ``cacheway.testing``
on a user's own store. Written from README, DESIGN.md and docs/ only.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw
from accept4b_support import close_caches, doc_block, run_block, suite_module
from accept_support import child_env, cli, no_traceback
from conftest import wait_until
from services import POSTGRES_DSN, REDIS_URL, require, unique

SECRET = "hunter2"


def _fails_cleanly(out: subprocess.CompletedProcess[str], *words: str) -> None:
    """A refused command: non-zero exit, no traceback, the words that say what was wrong,
    and never the password of a URL it was given."""
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert no_traceback(out), text[-600:]
    for word in words:
        assert word in text, (word, text)
    assert SECRET not in text, text


# == 1. the CLI ============================================================================

# Each command and the options its docs (DESIGN.md, docs/operations/*, guides) name.
_DOCUMENTED = {
    ("demo",): ["--workload", "--json", "--plot"],
    ("bench",): ["--store", "--backend"],
    ("check",): ["--store", "--backend", "--namespace", "--sample", "--quiet", "--rounds",
                 "--seed", "--json"],
    ("journal",): ["inspect", "replay"],
    ("journal", "inspect"): ["PATH"],
    ("journal", "replay"): ["--store"],
    ("worker",): ["--queue", "--queue-name", "--store", "--processes", "--claim-after",
                  "--partitions", "--status-every"],
    ("top",): ["--metrics", "--backend", "--store", "--interval", "--once"],
}


@pytest.mark.parametrize("command", list(_DOCUMENTED), ids=" ".join)
def test_every_command_has_help_listing_its_documented_options(command: tuple[str, ...]) -> None:
    # `cacheway CMD --help` is where a user looks first: exit 0, a usage line, and every
    # option the docs use for that command.
    out = cli(*command, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: cacheway " + " ".join(command))
    for option in _DOCUMENTED[command]:
        assert option in out.stdout, (command, option)


@pytest.mark.parametrize("args", [(), ("journal",), ("nosuchcommand",), ("journal", "fix")])
def test_a_missing_or_unknown_command_is_a_usage_error(args: tuple[str, ...]) -> None:
    # No command, or one that does not exist: argparse's usage error (exit 2), naming the
    # choices, not a traceback.
    out = cli(*args)
    assert out.returncode == 2
    assert no_traceback(out)
    assert "usage:" in out.stderr or "error:" in out.stderr


# -- cacheway journal ----------------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import os, sys
    import cacheway as cw
    cache = cw.Cache(store=cw.SQLiteStore(sys.argv[1]),
                     policy=cw.WriteBack(max_delay=3600, journal=sys.argv[2], fsync="always"))
    cache.set("a", 1)
    cache.set("b", {"x": [1, 2]})
    cache.incr("n", 3)
    cache.delete("a")
    cache.namespace("views").set("home", 7)
    print("written", flush=True)
    if sys.argv[3] == "crash":
        os._exit(0)                     # no flush: the journals hold the writes
    sys.stdin.readline()                # "hold": keep the journals open until told
    os._exit(0)
    """
)


def _crashed_writer(tmp_path: Path) -> tuple[str, str]:
    db, wal = str(tmp_path / "app.db"), str(tmp_path / "app.wal")
    subprocess.run([sys.executable, "-c", _WRITER, db, wal, "crash"], check=True,
                   env=child_env(), timeout=60, capture_output=True)
    return db, wal


@pytest.fixture(scope="module")
def crashed(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """One journal left by a killed cache, for the tests that must not change it."""
    return _crashed_writer(tmp_path_factory.mktemp("crashed"))


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


def test_journal_inspect_shows_what_a_killed_cache_left_and_changes_nothing(
        tmp_path: Path) -> None:
    # journal.md: "Look at a journal without changing it": the records to replay of the
    # cache's journal (4 writes) and of the namespace's own journal PATH.views (1 write).
    db, wal = _crashed_writer(tmp_path)
    before = _tree(tmp_path)
    main = cli("journal", "inspect", wal)
    assert main.returncode == 0, main.stderr
    rows = dict(re.split(r"\s*│\s*", line.strip("│ "), maxsplit=1)
                for line in main.stdout.splitlines() if line.count("│") == 3)
    assert rows["records to replay"] == "4"
    assert rows["last seq"] == "4"
    assert rows["damage"] == "none"
    views = cli("journal", "inspect", wal + ".views")
    assert views.returncode == 0, views.stderr
    assert "records to replay   │ 1 " in views.stdout
    assert _tree(tmp_path) == before                     # nothing written, nothing moved
    with sqlite3.connect(db) as conn:                    # and nothing applied
        assert conn.execute("SELECT count(*) FROM cacheway WHERE value IS NOT NULL"
                            ).fetchone() == (0,)


def test_journal_replay_of_a_namespace_journal_lands_in_its_namespace(tmp_path: Path) -> None:
    # A namespace's journal (PATH.<name>) replayed by hand puts its writes under that
    # namespace, and replaying the cache's own journal applies set, incr and delete.
    db, wal = _crashed_writer(tmp_path)
    for path in (wal, wal + ".views"):
        out = cli("journal", "replay", path, "--store", f"sqlite:///{db}")
        assert out.returncode == 0, out.stdout + out.stderr
    with cw.Cache(store=cw.SQLiteStore(db)) as cache:
        assert cache.get_many(["a", "b", "n"]) == {"b": {"x": [1, 2]}, "n": 3}
        assert cache.namespace("views").get("home") == 7
        assert cache.get("home") is None                  # not in the default namespace
    again = cli("journal", "inspect", wal)
    assert "records to replay   │ 0 " in again.stdout, again.stdout


@pytest.mark.parametrize("kind", ["missing", "a file", "an empty directory"])
def test_journal_inspect_of_no_journal_is_an_actionable_error(tmp_path: Path, kind: str) -> None:
    # A path with no journal: say which path and that a journal is a directory; exit 2.
    path = tmp_path / "typo.wal"
    if kind == "a file":
        path.write_text("not a journal")
    elif kind == "an empty directory":
        path.mkdir()
    for args in (("inspect", str(path)), ("replay", str(path), "--store",
                                          f"sqlite:///{tmp_path}/x.db")):
        out = cli("journal", *args)
        _fails_cleanly(out, "typo.wal")
        assert "directory" in out.stderr
    assert not (tmp_path / "x.db").exists()              # a refused replay made no store


def test_journal_replay_of_a_journal_in_use_names_its_process(tmp_path: Path) -> None:
    # One journal, one writer (journal.md): inspecting a live cache's journal works, a
    # replay is refused naming the pid that holds it, and the live cache is unharmed.
    db, wal = str(tmp_path / "app.db"), str(tmp_path / "app.wal")
    holder = subprocess.Popen([sys.executable, "-c", _WRITER, db, wal, "hold"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=child_env())
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "written"
        look = cli("journal", "inspect", wal)
        assert look.returncode == 0, look.stderr
        out = cli("journal", "replay", wal, "--store", f"sqlite:///{db}")
        _fails_cleanly(out, str(holder.pid), "in use")
    finally:
        holder.communicate("go\n", timeout=30)
    assert holder.returncode == 0
    # The refused replay applied nothing: the store is still empty.
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM cacheway WHERE value IS NOT NULL"
                            ).fetchone() == (0,)


@pytest.mark.parametrize(("store", "words"), [
    (f"postgresql://postgres:{SECRET}@127.0.0.1:1/test", ["127.0.0.1", "PostgreSQL"]),
    (f"postgresql://postgres:{SECRET}@127.0.0.1:5432/nosuchdb_cw", ["nosuchdb_cw"]),
    ("sqlite:///{tmp}/app.db?table=bad-name", ["bad-name"]),
])
def test_journal_replay_into_a_wrong_store_keeps_the_journal(crashed: tuple[str, str],
                                                             tmp_path: Path, store: str,
                                                             words: list[str]) -> None:
    # A replay that cannot reach its store says why, hides the password, and leaves every
    # record in the journal for the next try (one crashed journal serves every case: none
    # of them may change it).
    require("postgresql")
    _, wal = crashed
    out = cli("journal", "replay", wal, "--store", store.format(tmp=tmp_path))
    _fails_cleanly(out, *words)
    assert "records to replay   │ 4 " in cli("journal", "inspect", wal).stdout


# -- cacheway check ------------------------------------------------------------------------

@pytest.fixture
def pg_check_table() -> Iterator[str]:
    import psycopg

    require("postgresql")
    name = unique("cw4b")
    yield name
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{name}", "{name}_meta", "{name}_applied" CASCADE'
                     .encode())
        conn.execute(f'DROP SEQUENCE IF EXISTS "{name}_version_seq"'.encode())


def test_check_on_postgres_and_redis_reports_agreement_then_a_planted_disagreement(
        tmp_path: Path, pg_check_table: str, prefix: str) -> None:
    # check.md on real servers: exit 0 and "N of N sampled entries agree" with a JSON
    # report; after a row changes behind the cache's back, exit 1 naming the key.
    store = f"{POSTGRES_DSN}?table={pg_check_table}"
    backend = f"{REDIS_URL}?prefix={prefix}"
    with cw.open(store=store, backend=backend) as cache:
        for i in range(12):
            cache.set(f"k{i}", {"i": i})
    report = tmp_path / "check.json"
    ok = cli("check", "--store", store, "--backend", backend, "--quiet", "0.1",
             "--json", str(report))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "12 of 12 sampled entries agree" in ok.stdout
    assert json.loads(report.read_text())
    with cw.Cache(store=cw.PostgresStore(POSTGRES_DSN, table=pg_check_table)) as behind:
        behind.set("k5", "changed behind the cache")   # no shared backend: Redis keeps {"i": 5}
    bad = cli("check", "--store", store, "--backend", backend, "--quiet", "0.1",
              "--rounds", "1")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "k5" in bad.stdout
    assert "11 of 12" in bad.stdout


@pytest.mark.parametrize(("store", "backend", "words"), [
    (f"postgresql://postgres:{SECRET}@127.0.0.1:1/test", REDIS_URL, ["PostgreSQL", "127.0.0.1:1"]),
    (f"postgresql://postgres:{SECRET}@127.0.0.1:5432/nosuchdb_cw", REDIS_URL, ["nosuchdb_cw"]),
    ("sqlite:///{tmp}/app.db", f"redis://:{SECRET}@127.0.0.1:1/0", ["127.0.0.1:1"]),
    ("sqlite:///{tmp}/app.db", "redis://127.0.0.1:6379/99", ["99"]),
    ("sqlite:///{tmp}/app.db", "rediz://127.0.0.1:6379/0", ["rediz"]),
    ("sqlite:///{tmp}/app.db", REDIS_URL + "?prefix=a:&bogus=1", ["bogus"]),
])
def test_check_with_a_wrong_url_exits_apart_from_disagree(tmp_path: Path, store: str,
                                                          backend: str,
                                                          words: list[str]) -> None:
    # check.md: 0 agree, 1 disagree "from cron or CI": a check that could not run at all
    # must not look like either, must say what was wrong, and never print the password.
    require("redis")
    db = tmp_path / "app.db"
    with cw.Cache(store=cw.SQLiteStore(str(db))) as cache:   # a real store file
        cache.set("k", 1)
    out = cli("check", "--store", store.format(tmp=tmp_path), "--backend", backend,
              "--quiet", "0")
    _fails_cleanly(out, *words)
    assert out.returncode not in (0, 1)


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_check_of_a_mistyped_table_fails_and_creates_nothing(tmp_path: Path, kind: str,
                                                             pg_check_table: str,
                                                             prefix: str) -> None:
    db = tmp_path / "app.db"
    with cw.Cache(store=cw.SQLiteStore(str(db))) as cache:
        cache.set("k", 1)
    typo = pg_check_table                               # a table nobody created
    store = (f"sqlite:///{db}?table={typo}" if kind == "sqlite"
             else f"{POSTGRES_DSN}?table={typo}")
    out = cli("check", "--store", store, "--backend", f"{REDIS_URL}?prefix={prefix}",
              "--quiet", "0")
    if kind == "sqlite":
        with sqlite3.connect(db) as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    else:
        import psycopg

        with psycopg.connect(POSTGRES_DSN) as conn:
            tables = {r[0] for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE tablename LIKE %s", (typo + "%",))}
    assert not {t for t in tables if t.startswith(typo)}, tables
    assert out.returncode not in (0, 1)
    assert typo in out.stderr


# -- cacheway worker / top -----------------------------------------------------------------

@pytest.mark.parametrize(("args", "words"), [
    (["--queue", REDIS_URL, "--queue-name", "q"], ["--store"]),
    (["--queue-name", "q", "--store", "sqlite:///w.db"], ["--queue"]),
    (["--queue", REDIS_URL, "--queue-name", "q", "--store", "sqlite:///w.db",
      "--processes", "0"], ["--processes"]),
    (["--queue", REDIS_URL, "--queue-name", "q", "--store", "sqlite:///w.db",
      "--claim-after", "-1"], ["--claim-after"]),
    (["--queue", REDIS_URL, "--queue-name", "q",
      "--store", f"postgresql://postgres:{SECRET}@127.0.0.1:1/test"], ["127.0.0.1"]),
    (["--queue", f"redis://:{SECRET}@127.0.0.1:1/0", "--queue-name", "q",
      "--store", "sqlite:///w.db"], ["127.0.0.1:1"]),
])
def test_worker_argument_errors_say_which_argument(tmp_path: Path, args: list[str],
                                                   words: list[str]) -> None:
    # cacheway worker refuses what it cannot run with, at once, naming the argument (or the
    # unreachable server) and hiding passwords; it never sits there consuming nothing.
    out = cli("worker", *args, "--status-every", "0", cwd=str(tmp_path), timeout=60)
    _fails_cleanly(out, *words)


def test_top_without_a_tty_runs_once_and_reads_the_store(tmp_path: Path) -> None:
    # metrics.md: `--once` prints one table and exits; run with pipes (no TTY), pointed
    # only at a store, it times a read of it and exits 0 without escape-code redraws.
    db = tmp_path / "app.db"
    with cw.Cache(store=cw.SQLiteStore(str(db))) as cache:
        cache.set("k", 1)
    out = cli("top", "--once", "--interval", "0.1", "--store", f"sqlite:///{db}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert no_traceback(out)
    assert "\x1b[2J" not in out.stdout
    assert "\x1b[H" not in out.stdout


@pytest.mark.parametrize("args", [
    ["--metrics", "notaurl"],
    ["--backend", f"redis://:{SECRET}@127.0.0.1:1/0"],
])
def test_top_once_with_a_bad_endpoint_fails_without_a_traceback(args: list[str]) -> None:
    out = cli("top", "--once", "--interval", "0.1", *args)
    _fails_cleanly(out)
    assert out.returncode == 1


# == 2. the docs as executable promises ====================================================

@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A namespace to run a doc block in, with the working directory a fresh tmp dir (the
    blocks use relative paths: app.db, app.wal); caches it leaves open are closed."""
    monkeypatch.chdir(tmp_path)
    ns: dict[str, Any] = {"__name__": "docblock"}
    yield ns
    close_caches(ns)


def _run_script(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=str(cwd), env=child_env(), timeout=60)


def test_readme_quickstart_runs_and_its_writes_reach_the_store(tmp_path: Path) -> None:
    # The README's one block, as copied: afterwards (the `with` closed the cache) the
    # store holds the write-back set, the counter and the write-through session.
    block = doc_block("README.md", "cw.Cache(")
    check = textwrap.dedent(
        """
        with cw.Cache(store=cw.SQLiteStore("app.db", table="cacheway")) as again:
            assert again.get("user:1") == {"name": "Ada"}, again.get("user:1")
            assert again.get("views:home") == 1, again.get("views:home")
            assert again.namespace("sessions").get("s1") == {"user": 1}
        assert price.__wrapped__("x") == 9.5     # (the cache, and price's results, closed)
        print("ok")
        """
    )
    out = _run_script(block + check, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")
    assert (tmp_path / "app.wal").is_dir()              # the journal it asked for


def test_getting_started_first_cache_prints_stats_after_flushing(tmp_path: Path) -> None:
    # "cache.flush()  # every write accepted so far is in the store": the rows are in the
    # SQLite file while the block still runs, and stats() prints as a Stats.
    block = doc_block("docs/getting-started.md", "print(cache.stats())")
    block = block.replace("    print(cache.stats())", textwrap.indent(textwrap.dedent(
        """
        import sqlite3
        with sqlite3.connect("app.db") as conn:
            rows = conn.execute("SELECT namespace, key FROM cacheway").fetchall()
        assert sorted(rows) == [("", "user:1"), ("", "views:home"), ("sessions", "s1")], rows
        print(cache.stats())
        """), "    "))
    out = _run_script(block, tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Stats(" in out.stdout
    assert "writes=3" in out.stdout.replace(" ", "")  # set, incr, sessions.set


def test_getting_started_url_form_is_a_write_back_cache(in_tmp: dict[str, Any]) -> None:
    # "The same cache from URLs": policy="write-back" with max_delay=0.5.
    run_block("import cacheway as cw\n" + doc_block("docs/getting-started.md", "cw.open("),
              in_tmp)
    cache = in_tmp["cache"]
    cache.set("k", {"v": 1})
    assert cache.get("k") == {"v": 1}
    cache.flush()
    assert cache.pending() == 0
    assert cw.SQLiteStore("app.db").load("k") == {"v": 1}


def test_getting_started_more_of_the_api_does_what_its_comments_say(
        in_tmp: dict[str, Any]) -> None:
    # The block's `cache` and `load_user` come from the page's earlier block and prose.
    calls: list[int] = []

    def load_user() -> dict[str, Any]:
        calls.append(1)
        return {"name": "Ada"}

    in_tmp.update(cw=cw, load_user=load_user,
                  cache=cw.Cache(store=cw.SQLiteStore("app.db")))
    run_block(doc_block("docs/getting-started.md", "cache.get_many("), in_tmp)
    cache = in_tmp["cache"]
    assert cache.get_many(["a", "b", "k"]) == {"b": 2}   # a and k deleted, b kept
    assert cache.get("user:1") == {"name": "Ada"}
    assert cache.get_or_set("user:1", load_user) == {"name": "Ada"}
    assert calls == [1]                                   # loaded once, by the block
    assert cache.pending() == 0                           # write-through: nothing pending


def test_policies_mix_per_namespace(in_tmp: dict[str, Any]) -> None:
    # policies.md: views writes back with its own journal, imports writes around (the
    # cached copy is dropped: the first read after a write goes to the store).
    run_block(doc_block("docs/policies.md", 'namespace("imports"'), in_tmp)
    views, imports, cache = in_tmp["views"], in_tmp["imports"], in_tmp["cache"]
    views.set("v", 1)
    assert views.pending() == 1                         # write-back: not in the store yet
    imports.set("i", 1)
    misses = imports.stats().misses
    assert imports.get("i") == 1
    assert imports.stats().misses == misses + 1
    cache.flush()
    with cw.Cache(store=cw.SQLiteStore("app.db")) as fresh:
        assert fresh.namespace("views").get("v") == 1
        assert fresh.namespace("imports").get("i") == 1


_NS_JOURNAL = textwrap.dedent(
    """
    import os, sys
    import cacheway as cw
    cache = cw.Cache(store=cw.SQLiteStore("app.db"), policy=cw.WriteThrough())
    views = cache.namespace("views", policy=cw.WriteBack(journal="views.wal", fsync="always",
                                                         max_delay=3600))
    views.set("v", 1)
    os._exit(0)
    """
)


def test_a_namespace_journal_path_is_where_the_user_put_it(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-c", _NS_JOURNAL], check=True, cwd=str(tmp_path),
                   env=child_env(), timeout=60, capture_output=True)
    out = cli("journal", "inspect", "views.wal", cwd=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "records to replay   │ 1 " in out.stdout


def test_counters_guide_block_returns_what_its_comments_say(in_tmp: dict[str, Any]) -> None:
    # counters.md: incr -> 1, incr 10 -> 11, get -> 11, then a reset is a plain write.
    checked = run_block(doc_block("docs/guides/counters.md", 'views.incr("page:home")'), in_tmp)
    assert len(checked) == 3, checked
    in_tmp["cache"].flush()
    with cw.Cache(store=cw.SQLiteStore("app.db")) as fresh:
        assert fresh.namespace("views").get("page:home") == 0


def test_counters_reach_a_callback_store_with_add_many_as_deltas(in_tmp: dict[str, Any]) -> None:
    # counters.md Limits: with add_many a CallbackStore gets (key, delta) pairs to add.
    data: dict[str, Any] = {"n": 100}
    adds: list[list[tuple[str, int]]] = []

    def add_many(items: list[tuple[str, int]]) -> dict[str, Any]:
        adds.append(list(items))
        for k, d in items:
            data[k] = data.get(k, 0) + d
        return {k: data[k] for k, _ in items}

    store = cw.CallbackStore(load_many=lambda ks: {k: data[k] for k in ks if k in data},
                             save_many=lambda items: data.update(items),
                             delete_many=lambda ks: [data.pop(k, None) for k in ks],
                             add_many=add_many)
    with cw.Cache(store=store, policy=cw.WriteBack(max_delay=3600)) as cache:
        for _ in range(5):
            cache.incr("n", 2)
        cache.flush()
    assert data["n"] == 110
    assert sum(d for batch in adds for k, d in batch if k == "n") == 10


def test_sessions_guide_block_saves_loads_and_ends(in_tmp: dict[str, Any]) -> None:
    # sessions.md, as written (expire=1800): a saved session loads back, end_session
    # removes it everywhere.
    run_block(doc_block("docs/guides/sessions.md", "def load_session"), in_tmp)
    save, load, end = in_tmp["save_session"], in_tmp["load_session"], in_tmp["end_session"]
    save("s1", {"user": 1})
    assert load("s1") == {"user": 1}
    end("s1")
    assert load("s1") is None
    save("s2", {"user": 2})
    in_tmp["cache"].flush()
    with sqlite3.connect("app.db") as conn:
        (expires_at,) = conn.execute(
            "SELECT expires_at FROM cacheway WHERE namespace='sessions' AND key='s2'").fetchone()
    import time
    assert 1700 < expires_at - time.time() <= 1800      # stamped now + 1800 s


def test_sessions_end_after_expire_in_cache_and_store(in_tmp: dict[str, Any]) -> None:
    # The same block with expire shortened to 1 s (the only change): "reads after that
    # return the default from every level" and "a background thread deletes the store's
    # expired rows".
    block = doc_block("docs/guides/sessions.md", "def load_session").replace(
        "expire=1800", "expire=1")
    run_block(block, in_tmp)
    in_tmp["save_session"]("s1", {"user": 1})
    in_tmp["cache"].flush()
    assert wait_until(lambda: in_tmp["load_session"]("s1") is None, timeout=15)

    def rows() -> int:
        with sqlite3.connect("app.db") as conn:
            return int(conn.execute("SELECT count(*) FROM cacheway WHERE namespace='sessions'"
                                    ).fetchone()[0])

    assert wait_until(lambda: rows() == 0, timeout=15)


def test_typed_guide_block_round_trips_and_refuses_a_dict(in_tmp: dict[str, Any]) -> None:
    # typed.md: get -> the User the comment shows; set of a dict -> SerializationError; the
    # row holds the plain JSON form the page prints; incr and a second type are refused.
    checked = run_block(doc_block("docs/guides/typed.md", "class User"), in_tmp)
    assert len(checked) == 2, checked
    cache, users = in_tmp["cache"], in_tmp["users"]
    cache.flush()
    with sqlite3.connect("app.db") as conn:
        (raw,) = conn.execute(
            "SELECT value FROM cacheway WHERE namespace='users' AND key='1'").fetchone()
    assert json.loads(raw) == {"name": "Ada", "joined": "1843-07-01", "tags": ["math"]}
    with pytest.raises(cw.ConfigError):
        users.incr("n")
    with pytest.raises(cw.ConfigError):
        cache.namespace("users", type=dict)
    with cw.Cache(store=cw.SQLiteStore("app.db")) as fresh:   # from the store row
        assert fresh.namespace("users", type=in_tmp["User"]).get("1") == users.get("1")


def test_migrating_from_cachetools_block(in_tmp: dict[str, Any]) -> None:
    # migrating.md, the "after" half: __wrapped__ is the function, invalidate exists, and
    # price("a") and price("a", region="eu") are one call.
    block = doc_block("docs/guides/migrating.md", "from cachetools")
    run_block(block.split("# after", 1)[1], in_tmp)
    cache, price = in_tmp["cache"], in_tmp["price"]
    assert price.__wrapped__.__name__ == "price"
    price.invalidate("sku1")
    calls: list[tuple[str, str]] = []

    @cache.cached(ttl=60)
    def cost(sku: str, region: str = "eu") -> float:
        calls.append((sku, region))
        return 9.5

    assert cost("a") == cost("a", region="eu") == 9.5
    assert calls == [("a", "eu")]


def test_migrating_from_django_block_on_servers(pg_check_table: str, prefix: str) -> None:
    # migrating.md's Django "after" block with loopback servers: get_or_set calls the
    # loader once and keeps its result; incr of a missing key counts from 0, and a
    # negative delta is Django's decr.
    block = doc_block("docs/guides/migrating.md", "from django.core.cache import cache")
    block = (block.split("# after", 1)[1]
             .replace("postgresql://app@db/app", f"{POSTGRES_DSN}?table={pg_check_table}")
             .replace("redis://cache:6379/0", f"{REDIS_URL}?prefix={prefix}"))
    calls: list[int] = []

    def load_user() -> dict[str, Any]:
        calls.append(1)
        return {"name": "Ada"}

    ns: dict[str, Any] = {"load_user": load_user}
    run_block(block, ns)
    try:
        cache = ns["cache"]
        assert cache.get_or_set("user:1", load_user, ttl=300) == {"name": "Ada"}
        assert calls == [1]
        assert cache.incr("hits", -3) == -3
        assert cache.incr("hits", 5) == 2
        cache.invalidate("user:1")                      # copies only: the store keeps it
        assert cache.get("user:1") == {"name": "Ada"}
        assert calls == [1]
    finally:
        close_caches(ns)


def test_memoized_invalidate_drops_the_stored_result_too(tmp_path: Path) -> None:
    # migrating.md (dogpile table): fn.invalidate(*args) "also drops the stored result":
    # a cache opened later on the same store computes again.
    db = str(tmp_path / "app.db")
    calls: list[str] = []

    def make(cache: cw.Cache) -> Any:
        @cache.cached(ttl=3600, namespace="prices")
        def price(sku: str) -> float:
            calls.append(sku)
            return 9.5
        return price

    with cw.Cache(store=cw.SQLiteStore(db)) as first:
        price = make(first)
        price("a")
        price("b")
    with cw.Cache(store=cw.SQLiteStore(db)) as second:   # the results outlive the cache
        price = make(second)
        price("a")
        price("b")
        assert calls == ["a", "b"]
        price.invalidate("a")
    with cw.Cache(store=cw.SQLiteStore(db)) as third:
        price = make(third)
        price("a")
        price("b")
    assert calls == ["a", "b", "a"]


_FASTAPI_CLIENT = textwrap.dedent(
    """
    import json, sqlite3, warnings
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient
    with TestClient(app) as client:          # runs the lifespan: close() at the end
        answers = [client.get("/products/a").json(), client.get("/products/a").json(),
                   client.put("/products/a/price", params={"price": 3.5}).json()]
    rows = sqlite3.connect("app.db").execute("SELECT namespace, key, value FROM cacheway")
    print(json.dumps({"answers": answers,
                      "rows": sorted([n, k, json.loads(v)] for n, k, v in rows)}))
    """
)


def test_fastapi_module_level_cache_block_over_http(tmp_path: Path) -> None:
    # fastapi.md's module-level AsyncCache app, driven over HTTP: the memoized product,
    # the views counter and the price write reach the store when the lifespan closes the
    # cache; the invalidated call's result is not in the store.
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    block = doc_block("docs/guides/fastapi.md", "@acache.cached(ttl=60)")
    out = _run_script(block + _FASTAPI_CLIENT, tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["answers"] == [{"sku": "a", "price": 9.5}] * 2 + [{"ok": True}]
    assert got["rows"] == [["", "price:a", 3.5], ["views", "product:a", 2]]


def test_workers_journal_slots_block_replays_a_dead_workers_slot(tmp_path: Path) -> None:
    # workers.md: open_cache() takes the first journal slot no live worker holds; "whoever
    # takes the slot of a dead worker replays what it left". A worker writes and dies
    # without closing; the next open_cache() takes slot 0 again and the store has the write.
    block = doc_block("docs/guides/workers.md", "def open_cache")
    crash = block + textwrap.dedent(
        """
        import os
        cache.set("k", {"from": "dead worker"})
        os._exit(0)
        """
    )
    out = _run_script(crash, tmp_path)
    assert out.returncode == 0, out.stderr
    script = block + textwrap.dedent(
        """
        other = open_cache()                    # slot 0 is held by `cache` now
        assert other.get("k") == {"from": "dead worker"}
        print(sorted(p for p in os.listdir(".") if p.startswith("app.wal")))
        store = cw.SQLiteStore("app.db")
        assert store.load("k") == {"from": "dead worker"}, "replayed at open"
        other.close(); cache.close()
        """
    )
    out = _run_script("import os\n" + script, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['app.wal.0', 'app.wal.1']"


def test_plain_asyncio_block_prints_the_value(tmp_path: Path) -> None:
    # fastapi.md "Plain asyncio", as copied: prints 1 and exits 0.
    out = _run_script(doc_block("docs/guides/fastapi.md", "asyncio.run(main())"), tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"


def test_urls_page_errors_hide_the_password_and_refuse_options_with_an_object(
        tmp_path: Path) -> None:
    # urls.md Errors: a malformed URL / unknown option is a ConfigError with the password
    # replaced by ***; options need a policy name.
    with pytest.raises(cw.ConfigError) as info:
        cw.open(store=f"postgresql://app:{SECRET}@db/app?table=bad-name")
    assert SECRET not in str(info.value)
    with pytest.raises(cw.ConfigError) as info:
        cw.open(store=f"sqlite:///{tmp_path}/a.db", backend=f"redis+l1://:{SECRET}@h:1/0?x=1")
    assert SECRET not in str(info.value)
    assert "x" in str(info.value)
    with pytest.raises(cw.ConfigError):
        cw.open(store=f"sqlite:///{tmp_path}/a.db", policy="write-back", max_dealy=0.5)
    with pytest.raises(cw.ConfigError):
        cw.open(store=f"sqlite:///{tmp_path}/a.db", policy=cw.WriteBack(), max_delay=0.5)


def test_servers_block_on_postgres_and_redis(pg_check_table: str, prefix: str) -> None:
    # servers.md's block with loopback servers: a write-through set is in PostgreSQL and in
    # Redis when it returns; "a\x00b" is refused at the call under write-back too.
    block = doc_block("docs/guides/servers.md", "cw.PostgresStore(")
    block = (block.replace("postgresql://app@db/app", POSTGRES_DSN)
             .replace('table="cacheway"', f'table="{pg_check_table}"')
             .replace("redis://cache:6379/0", REDIS_URL)
             .replace('prefix="cw:"', f'prefix="{prefix}"')
             .splitlines())
    block = "\n".join(line for line in block if not line.startswith("cw.open("))
    ns: dict[str, Any] = {}
    run_block(block, ns)
    try:
        cache = ns["cache"]
        cache.set("user:1", {"name": "Ada"})
        store = cw.PostgresStore(POSTGRES_DSN, table=pg_check_table)
        assert store.load("user:1") == {"name": "Ada"}
        store.close()
        with pytest.raises(cw.InvalidWriteError):
            cache.set("bad", "a\x00b")
        wb = cache.namespace("wb", policy=cw.WriteBack(max_delay=3600))
        with pytest.raises(cw.InvalidWriteError):
            wb.set("bad", "a\x00b")
        assert wb.pending() == 0
    finally:
        close_caches(ns)


# == 3. metrics ============================================================================

_FAMILIES = ["cacheway_hits_total", "cacheway_misses_total", "cacheway_loads_total",
             "cacheway_writes_total", "cacheway_store_writes_total", "cacheway_coalesced_total",
             "cacheway_flushes_total", "cacheway_retries_total", "cacheway_dead_letters_total",
             "cacheway_journal_syncs_total", "cacheway_store_errors_total", "cacheway_dirty",
             "cacheway_journal_bytes", "cacheway_store_down"]


def _sample(registry: Any, name: str, namespace: str = "default") -> float:
    value = registry.get_sample_value(name, {"namespace": namespace})
    assert value is not None, (name, namespace)
    return float(value)


def test_prometheus_collector_of_a_cache_moves_with_reads_writes_and_flushes(
        tmp_path: Path) -> None:
    # metrics.md's table, in a fresh registry: every family with label namespace ("default"
    # for the unnamed one), counts that follow hits, misses, writes, coalescing, dirty and
    # flushes, and the flush histogram.
    prometheus_client = pytest.importorskip("prometheus_client")
    import cacheway.metrics

    registry = prometheus_client.CollectorRegistry()
    with cw.Cache(store=cw.SQLiteStore(str(tmp_path / "m.db")),
                  policy=cw.WriteBack(max_delay=3600)) as cache:
        registry.register(cacheway.metrics.PrometheusCollector(cache))
        views = cache.namespace("views")
        for name in _FAMILIES:
            assert _sample(registry, name) == 0, name
            assert _sample(registry, name, "views") == 0, name
        assert registry.get_sample_value("cacheway_evictions_total") == 0
        cache.set("a", 1)
        cache.get("a")
        cache.get("missing")
        views.set("x", 1)
        views.set("x", 2)
        assert _sample(registry, "cacheway_hits_total") == 1
        assert _sample(registry, "cacheway_misses_total") == 1
        assert _sample(registry, "cacheway_writes_total") == 1
        assert _sample(registry, "cacheway_writes_total", "views") == 2
        assert _sample(registry, "cacheway_coalesced_total", "views") == 1
        assert _sample(registry, "cacheway_dirty", "views") == 1
        cache.flush()
        assert _sample(registry, "cacheway_dirty") == 0
        assert _sample(registry, "cacheway_dirty", "views") == 0
        assert _sample(registry, "cacheway_flushes_total", "views") >= 1
        assert _sample(registry, "cacheway_store_writes_total", "views") == 1
        assert _sample(registry, "cacheway_flush_seconds_count", "views") >= 1
        text = prometheus_client.generate_latest(registry).decode()
        assert "# TYPE cacheway_flush_seconds histogram" in text


def test_prometheus_collector_of_an_async_cache_uses_one_default_label(tmp_path: Path) -> None:
    # metrics.md "AsyncCache": accepted by the collector, numbers under namespace="default"
    # with every namespace summed.
    prometheus_client = pytest.importorskip("prometheus_client")
    import cacheway.metrics

    async def main() -> None:
        async with cw.AsyncCache(store=cw.SQLiteStore(str(tmp_path / "a.db")),
                                 policy=cw.WriteBack(max_delay=3600)) as acache:
            registry = prometheus_client.CollectorRegistry()
            registry.register(cacheway.metrics.PrometheusCollector(acache))
            await acache.set("k", 1)
            await acache.namespace("views").set("x", 1)
            assert await acache.get("k") == 1
            assert await acache.get("nope") is None
            assert _sample(registry, "cacheway_writes_total") == 2
            assert _sample(registry, "cacheway_hits_total") == 1
            assert _sample(registry, "cacheway_misses_total") == 1
            assert _sample(registry, "cacheway_dirty") == 2
            assert registry.get_sample_value("cacheway_writes_total",
                                             {"namespace": "views"}) is None
            await acache.flush()
            assert _sample(registry, "cacheway_dirty") == 0
            assert _sample(registry, "cacheway_flushes_total") >= 1
            # "for one label per namespace pass the thread-front cache underneath"
            per_namespace = prometheus_client.CollectorRegistry()
            per_namespace.register(cacheway.metrics.PrometheusCollector(acache.cache))
            assert _sample(per_namespace, "cacheway_writes_total", "views") == 1
            assert _sample(per_namespace, "cacheway_writes_total") == 1

    asyncio.run(main())


def test_opentelemetry_instruments_read_the_stats_at_each_collection(tmp_path: Path) -> None:
    # metrics.md OpenTelemetry: the same names, attribute namespace, flush latency as
    # _count/_sum/_bucket counters (attribute le); instrument() returns the instruments.
    pytest.importorskip("opentelemetry.sdk.metrics", reason="opentelemetry-sdk not installed")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    import cacheway.metrics

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])

    def points() -> dict[str, list[tuple[dict[str, Any], Any]]]:
        out: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        data = reader.get_metrics_data()
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    out[metric.name] = [(dict(p.attributes), p.value)
                                        for p in metric.data.data_points]
        return out

    try:
        with cw.Cache(store=cw.SQLiteStore(str(tmp_path / "o.db")),
                      policy=cw.WriteBack(max_delay=3600)) as cache:
            instruments = cacheway.metrics.instrument(cache, provider.get_meter("t"))
            assert instruments
            views = cache.namespace("views")
            views.set("a", 1)
            views.get("a")
            cache.get("nope")
            got = points()
            for name in [*_FAMILIES, "cacheway_flush_seconds_count",
                         "cacheway_flush_seconds_sum", "cacheway_flush_seconds_bucket"]:
                assert name in got, name
            assert ({"namespace": "views"}, 1) in got["cacheway_hits_total"]
            assert ({"namespace": "default"}, 1) in got["cacheway_misses_total"]
            assert ({"namespace": "views"}, 1) in got["cacheway_dirty"]
            assert all("le" in attrs for attrs, _ in got["cacheway_flush_seconds_bucket"])
            cache.flush()
            after = points()
            assert ({"namespace": "views"}, 0) in after["cacheway_dirty"]
            assert next(v for a, v in after["cacheway_flush_seconds_count"]
                        if a == {"namespace": "views"}) >= 1
    finally:
        provider.shutdown()


# == 4. cacheway.testing on a user's own store ============================================

def _pytest(tmp_path: Path, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_my_store.py").write_text(module)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "no:randomly", "-m", "not slow", "test_my_store.py", *args],
                          capture_output=True, text=True, cwd=str(tmp_path), env=child_env(),
                          timeout=120)


@pytest.mark.slow  # a pytest run of both suites, ~7 s
def test_guarantee_suites_pass_for_a_correct_callback_store(tmp_path: Path) -> None:
    # testing.md: MyPair + GuaranteeSuite and AsyncGuaranteeSuite on a CallbackStore over a
    # dict and a MemoryBackend, run by pytest in a module of the user's: all pass.
    out = _pytest(tmp_path, suite_module(["GuaranteeSuite", "AsyncGuaranteeSuite"]))
    assert out.returncode == 0, out.stdout[-3000:]
    assert " passed" in out.stdout
    assert "failed" not in out.stdout


def test_suites_fail_for_a_store_that_drops_every_third_save(tmp_path: Path) -> None:
    # The point of the suites: a store that acknowledges saves it does not keep fails them
    # (guarantee 1 and 3 tests among the failures).
    out = _pytest(tmp_path, suite_module(["GuaranteeSuite", "KeyValueStoreSuite"],
                                         drop_every=3),
                  "-k", "guarantee3_the_last or round_trip or many_keys")
    assert out.returncode == 1, out.stdout[-3000:]
    assert "failed" in out.stdout
    assert "test_guarantee3" in out.stdout
    assert "TestMyStore::test_round_trip" in out.stdout


def test_key_value_store_suite_passes_for_a_correct_callback_store(tmp_path: Path) -> None:
    # testing.md: a CallbackStore declares records_marks, has_tables and
    # refuses_lone_surrogates False; the suite then passes on a correct one.
    out = _pytest(tmp_path, suite_module(["KeyValueStoreSuite"]),
                  "-k", "journal_marks or table_name or keys_the_store or round_trip")
    assert out.returncode == 0, out.stdout[-3000:]


def test_the_testing_guides_dict_store_passes_the_key_value_store_suite(
        tmp_path: Path) -> None:
    # The guide's TestDictStore block as written, run by pytest: every test passes or skips.
    block = doc_block("docs/guides/testing.md", "class TestDictStore")
    out = _pytest(tmp_path, block)
    assert out.returncode == 0, out.stdout[-3000:]
    assert " passed" in out.stdout
    assert "failed" not in out.stdout
