"""A journal opened before ``os.fork()``: the child writes its own journal (never the
parent's), and whoever reopens the parent's path replays the journals of dead children."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import cacheway as cw
from cacheway.errors import ConfigError, JournalError
from cacheway.writeback.journal import (
    ADD,
    SET,
    Journal,
    JournalInUse,
    abandoned_children,
)
from cacheway.writeback.recovery import replay

SRC = str(Path(__file__).resolve().parents[1] / "src")


Fork = Callable[[Callable[[int], None]], tuple[int, int]]


@pytest.fixture
def fork_and_run() -> Iterator[Fork]:
    """``fork_and_run(body)`` runs ``body(write_fd)`` in a forked child and returns (pid,
    read_fd). The child exits 0 when ``body`` returned, 1 (with the traceback on the pipe)
    when it raised. A child still running when the test ends is killed."""
    children: list[int] = []

    def run(body: Callable[[int], None]) -> tuple[int, int]:
        pid, fd = _fork(body)
        children.append(pid)
        return pid, fd

    yield run
    for pid in children:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG) == (0, 0):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)


def _fork(body: Callable[[int], None]) -> tuple[int, int]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child; its result comes back by exit code
        os.close(r)
        code = 0
        try:
            body(w)
        except BaseException:
            os.write(w, traceback.format_exc().encode())
            code = 1
        os._exit(code)
    os.close(w)
    return pid, r


def read_line(fd: int) -> str:
    out = b""
    while not out.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            break
        out += chunk
    return out.decode()


def finish(pid: int, fd: int) -> str:
    with os.fdopen(fd, "rb") as pipe:
        rest = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, rest
    return rest


def test_a_forked_child_writes_its_own_journal_and_the_parents_stays_intact(
    tmp_path: Path, fork_and_run: Fork
) -> None:
    # issue 10 item 6
    wal = tmp_path / "app.wal"
    journal = Journal(wal, fsync="always")
    journal.wait(journal.append("", "p", SET, b"1"))

    def child(w: int) -> None:
        mine = journal.for_child()
        assert mine.path.parent == wal.parent
        assert mine.path.name.startswith(f"app.wal@{os.getpid()}-")
        with pytest.raises(JournalError, match="closed"):
            journal.append("", "x", SET, b"0")  # the parent's journal is not the child's
        with pytest.raises(ConfigError, match="for_child"):
            journal.for_child()
        with pytest.raises(JournalInUse):
            Journal(wal)  # the parent still holds its lock
        mine.wait(mine.append("", "c", SET, b"2"))
        mine.wait(mine.append("", "n", ADD, b"", 5))
        os.write(w, f"{mine.path}\n".encode())
        mine.close()  # records not in the store yet: the directory stays

    pid, fd = fork_and_run(child)
    child_path = Path(read_line(fd).strip())
    finish(pid, fd)
    journal.wait(journal.append("", "p", SET, b"3"))  # the parent writes on after the fork
    journal.wait(journal.append("", "n", ADD, b"", 1))
    journal.close()
    with Journal(wal) as reopened:
        assert [(r.seq, r.key) for r in reopened.records()] == [(1, "p"), (2, "p"), (3, "n")]
    with Journal(child_path) as theirs:
        assert [r.key for r in theirs.records()] == ["c", "n"]
    assert abandoned_children(wal) == [child_path]

    store = cw.SQLiteStore(tmp_path / "app.db")
    with Journal(wal) as reopened:
        report = replay(reopened, store)
    assert report.children == 1
    assert store.load_many(["p", "c", "n"]) == {"p": 3, "c": 2, "n": 6}
    assert not child_path.exists(), "a replayed child journal is removed"
    with Journal(wal) as reopened:
        assert replay(reopened, store).applied == 0
    assert store.load("n") == 6
    store.close()


def test_a_child_never_holds_the_parents_lock_and_removes_its_journal_when_done(
    tmp_path: Path, fork_and_run: Fork
) -> None:
    # issue 10 item 6: the lock belongs to the open file description the parent keeps
    wal = tmp_path / "app.wal"
    journal = Journal(wal, fsync="everysec")
    go_r, go_w = os.pipe()

    def child(w: int) -> None:
        mine = journal.for_child()
        os.write(w, b"ready\n")
        os.read(go_r, 1)  # until the parent has closed and reopened its journal
        mine.wait(mine.append("", "k", SET, b"1"))
        mine.checkpoint(mine.last_seq)  # as the flusher does once the store has it
        mine.close()

    pid, fd = fork_and_run(child)
    assert read_line(fd) == "ready\n"
    journal.close()
    with Journal(wal) as reopened:  # the child, alive, does not keep it locked
        reopened.wait(reopened.append("", "p", SET, b"1"))
        assert abandoned_children(wal) == []  # the child's journal: its process lives
    os.write(go_w, b"x")
    finish(pid, fd)
    os.close(go_r)
    os.close(go_w)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.wal"]


CHAIN = """
import os, sys, time
from cacheway.writeback.journal import ADD, SET, Journal

wal, depth = sys.argv[1], int(sys.argv[2])
journal = Journal(wal, fsync="always")
tag = "p"
for level in range(depth):
    if os.fork() != 0:
        break  # the parent writes on
    journal = journal.for_child()  # the child: its own journal, then maybe its own child
    tag = "c" * (level + 1)
i = 0
while True:
    i += 1
    journal.wait(journal.append("", tag, SET, str(i).encode()))
    journal.wait(journal.append("", "n", ADD, b"", 1))
    sys.stdout.write(f"{tag} {i} {os.getpid()}\\n")
    sys.stdout.flush()
"""


@pytest.mark.parametrize("depth", [1, 2])
def test_reopening_replays_the_journals_of_killed_children(tmp_path: Path, depth: int) -> None:
    # issue 10 item 6: fsync="always" writes of a child (and grandchild) killed with
    # kill -9 with their parent; reopening the parent's path replays them all
    wal, db = tmp_path / "app.wal", tmp_path / "app.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHAIN, str(wal), str(depth)], stdout=subprocess.PIPE,
        text=True, env={**os.environ, "PYTHONPATH": SRC}, start_new_session=True,
    )
    assert proc.stdout is not None
    acked: dict[str, int] = {}
    pids: set[int] = set()
    while len(acked) < depth + 1 or min(acked.values()) < 20:
        line = proc.stdout.readline()
        assert line, "the writers stopped"
        tag, i, pid = line.split()
        acked[tag] = int(i)
        pids.add(int(pid))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    rest = proc.stdout.read()
    lines = rest.splitlines()
    if lines and not rest.endswith("\n"):
        lines.pop()  # a line cut by the kill
    for line in lines:
        tag, i, _ = line.split()
        acked[tag] = int(i)  # acknowledged before the kill landed
    proc.stdout.close()
    assert len(pids) == depth + 1

    store = cw.SQLiteStore(db)
    with cw.Cache(store=store, policy=cw.WriteBack(journal=str(wal))) as cache:
        for tag, i in acked.items():
            # the last acknowledged value, or the write in flight when the kill came
            assert store.load(tag) in (i, i + 1), tag
            assert cache.get(tag) == store.load(tag)
        total = store.load("n")
        assert sum(acked.values()) <= total <= sum(acked.values()) + depth + 1
    assert sorted(p.name for p in tmp_path.glob("app.wal*")) == ["app.wal"]
    store.close()


def test_for_child_in_the_process_that_opened_the_journal_is_refused(tmp_path: Path) -> None:
    # issue 10 item 6
    with Journal(tmp_path / "app.wal") as journal:
        with pytest.raises(ConfigError, match="this is that process"):
            journal.for_child()
        journal.wait(journal.append("", "k", SET, b"1"))  # and nothing was closed


def test_an_abandoned_child_journal_is_found_only_when_its_process_is_gone(
    tmp_path: Path,
) -> None:
    # issue 10 item 6: names a namespace's journal (PATH.NAME) can never take
    wal = tmp_path / "app.wal"
    Journal(wal).close()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    for name in [f"app.wal@{dead_pid}-0123abcd", f"app.wal@{os.getpid()}-0123abcd",
                 f"app.wal.views@{dead_pid}-0123abcd", f"app.wal@{dead_pid}-xyz",
                 f"app.wal@{dead_pid}-0123abcd@{dead_pid}-89abcdef",
                 f"app.walx@{dead_pid}-0123abcd"]:
        (tmp_path / name).mkdir()
    assert [p.name for p in abandoned_children(wal)] == [
        f"app.wal@{dead_pid}-0123abcd", f"app.wal@{dead_pid}-0123abcd@{dead_pid}-89abcdef"]
    assert [p.name for p in abandoned_children(tmp_path / "app.wal.views")] == [
        f"app.wal.views@{dead_pid}-0123abcd"]
    store = cw.SQLiteStore(tmp_path / "app.db")
    with Journal(wal) as journal:
        assert replay(journal, store).children == 2  # empty ones: just removed
    assert abandoned_children(wal) == []
    assert (tmp_path / f"app.wal@{os.getpid()}-0123abcd").is_dir()  # alive: left alone
    store.close()
