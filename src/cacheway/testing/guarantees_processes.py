"""Guarantees 2 (kill -9 at any moment, journal replay) and 8 (a forked child) of
DESIGN.md on one backend x store pair. Each trial starts processes: the project runs a
cheap pair by default and the others as slow tests."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

import cacheway as cw

from .pair import PairSuite

#: seconds a forked child may take before it counts as hung (SIGALRM ends it); a child's
#: work takes well under a second
CHILD_DEADLINE = 120


def run_and_kill(argv: list[str], seed: int) -> list[str]:
    """Run the crash child, SIGKILL it at a moment chosen by ``seed``, return its lines."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.Popen([sys.executable, "-m", "cacheway.testing.crash_child", *argv],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first == "ready\n", first
    time.sleep(random.Random(seed).uniform(0.05, 0.4))
    os.kill(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read()
    proc.wait()
    lines = rest.splitlines()
    if lines and not rest.endswith("\n"):
        lines.pop()  # a line cut by the kill was never fully acknowledged
    return lines


def final_states(ops: list[tuple[str, str, int]]) -> dict[str, int | None]:
    """The store a key/value model ends with after ``ops`` (counters count increments)."""
    state: dict[str, int | None] = {}
    for op, key, value in ops:
        if op == "set":
            state[key] = value
        elif op == "del":
            state[key] = None
        else:
            state[key] = (state.get(key) or 0) + 1
    return state


def acknowledged(lines: list[str]) -> tuple[list[tuple[str, str, int]],
                                             list[tuple[str, str, int]]]:
    """The crash child's writes followed by their ack ("ack", or "ack KEY" from tasks
    writing at once, each on keys of its own), and those in flight at the kill (at most
    one per key)."""
    acked: list[tuple[str, str, int]] = []
    in_flight: dict[str, tuple[str, str, int]] = {}
    for line in lines:
        if line == "ack":
            assert len(in_flight) == 1, in_flight
            acked.append(in_flight.popitem()[1])
        elif line.startswith("ack "):
            acked.append(in_flight.pop(line[4:]))
        else:
            op, key, value = line.split()
            assert key not in in_flight, line
            in_flight[key] = (op, key, int(value))
    return acked, list(in_flight.values())


def check_replayed(store: Any, acked: list[tuple[str, str, int]],
                   in_flight: list[tuple[str, str, int]]) -> None:
    """Every acknowledged write is in ``store`` (counters: once each); a write in flight
    when the kill came (at most one per key) may or may not have landed."""
    without = final_states(acked)
    with_last = final_states([*acked, *in_flight])
    for key in set(without) | set(with_last):
        got = store.load(key)
        assert got in (without.get(key), with_last.get(key)), (
            key, got, without.get(key), with_last.get(key))


def crash_keys(tags: list[str]) -> list[str]:
    """The keys a crash child writes with the key tags ``tags`` (see ``crash_child``)."""
    return [f"{t}k{i}" for t in tags for i in range(20)] + [
        f"{t}c{i}" for t in tags for i in range(3)]


def in_children(works: list[Callable[[], object]], deadline: int = CHILD_DEADLINE
                ) -> list[int]:
    """Run each of ``works`` in a forked child, all at once (as the workers of a
    preforking server); their exit codes (0: it returned) once all are done. A child
    still at work after ``deadline`` seconds hung: SIGALRM ends it (-14)."""
    pids = []
    for work in works:
        pid = os.fork()
        if pid == 0:  # the child: report through the exit code only
            code = 1
            try:
                signal.signal(signal.SIGALRM, signal.SIG_DFL)  # (not the parent's handler)
                signal.alarm(deadline)
                work()
                code = 0
            except BaseException as exc:  # noqa: BLE001 - the exit code tells the parent
                print(f"child failed: {exc!r}", file=sys.stderr, flush=True)
            finally:
                os._exit(code)
        pids.append(pid)
    return [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]


def in_child(work: Callable[[], object], deadline: int = CHILD_DEADLINE) -> int:
    """Run ``work`` in a forked child; its exit code (see :func:`in_children`)."""
    return in_children([work], deadline)[0]


def reopen_journal(store_url: str, backend_url: str, wal: str) -> None:
    """Reopen a journalled write-back cache on ``wal`` (it replays) and close it."""
    cw.open(store_url, backend=backend_url, policy="write-back", journal=wal,
            fsync="always").close()


class ProcessPairSuite(PairSuite):
    """Hooks and trials the process suites share (:class:`ProcessGuarantees` on
    ``Cache``, ``AsyncProcessGuarantees`` on ``AsyncCache``)."""

    #: the store's data outlives the process that wrote it (not a dict in memory)
    store_outlives_process: ClassVar[bool] = True
    #: kill -9 trials per test
    crash_trials: ClassVar[int] = 2

    def urls(self) -> tuple[str, str] | None:
        """(store URL, backend URL) of this pair for ``cw.open`` in a child process, or
        None when URLs cannot say it (kill -9 trials are then skipped)."""
        return None

    def kill_9_trials(self, flags: list[str], tags: list[str],
                      reopen: Callable[[str, str, str], None] | None = reopen_journal
                      ) -> None:
        """``crash_trials`` runs of the crash child with ``flags`` (its keys tagged
        ``tags``), each SIGKILLed at a moment of its seed; then ``reopen(store URL,
        backend URL, journal path)`` (None: nothing to replay) and every acknowledged
        write must be in the store."""
        urls = self.urls()
        if urls is None:
            pytest.skip("this pair cannot be opened from URLs in a child process")
        store_url, backend_url = urls
        for trial in range(self.crash_trials):
            wal = str(self.tmp_path / f"trial{trial}.wal")
            seed = 1000 + trial
            argv = [store_url, backend_url, wal, str(seed), *flags]
            if not self.counters:
                argv.append("no-counters")
            acked, in_flight = acknowledged(run_and_kill(argv, seed))
            if reopen is not None:
                reopen(store_url, backend_url, wal)  # replays the journal into the store
            store = self.store()
            check_replayed(store, acked, in_flight)
            # the next trial starts from an empty store (its counters add to nothing)
            store.delete_many(crash_keys(tags))

    def needs_fork(self) -> None:
        if not hasattr(os, "fork"):
            pytest.skip("needs os.fork")
        if not self.store_outlives_process:
            pytest.skip("the store's data lives in this process: a child's writes stay there")


class ProcessGuarantees(ProcessPairSuite):
    # -- 2. kill -9 ------------------------------------------------------------------------
    def test_guarantee2_kill_9_loses_no_acknowledged_write(self) -> None:
        self.kill_9_trials([], [""])

    # -- 8. fork ---------------------------------------------------------------------------
    def test_guarantee8_writes_made_in_forked_children_reach_the_store(self) -> None:
        self.needs_fork()
        cache = self.cache(cw.WriteBack(max_delay=0.05))
        cache.set("p", self.value(0))
        if self.counters:
            cache.incr("n")

        def work(i: int) -> None:
            if self.counters:
                for _ in range(50):
                    cache.incr("n")
            cache.set(f"c{i}", self.value(i + 1))
            assert cache.get(f"c{i}") == self.value(i + 1)
            cache.flush(timeout=30)

        codes = [in_child(lambda i=i: work(i)) for i in range(2)]  # type: ignore[misc]
        assert codes == [0, 0]
        cache.flush(timeout=30)
        expected: dict[str, Any] = {"p": self.value(0), "c0": self.value(1),
                                    "c1": self.value(2)}
        if self.counters:
            expected["n"] = 101
        assert self.store().load_many(list(expected)) == expected

    def test_guarantee8_a_child_never_flushes_the_parents_dirty_entries(self) -> None:
        self.needs_fork()
        cache = self.cache(cw.WriteBack(max_delay=3600))
        cache.set("p", self.value(1))  # dirty in the parent when it forks

        def work() -> None:
            assert cache.pending() == 0  # the parent's entry is the parent's
            cache.set("child", self.value(2))
            cache.flush(timeout=30)

        assert in_child(work) == 0
        assert self.store().load("child") == self.value(2)
        assert self.store().load_many(["p"]) == {}, "the child flushed the parent's entry"
        cache.flush(timeout=30)
        assert self.store().load("p") == self.value(1)
