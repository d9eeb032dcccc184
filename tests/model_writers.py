"""Three writer threads for tests/test_model_writeback.py: each writes its own keys (so
each key's last accepted write is well defined) and two shared counters, reads its own
writes back, and one of them takes the store down and up as it goes."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import cacheway as cw
from model_harness import ABSENT, is_subsequence, same

FLUSH_TIMEOUT = 10.0

COUNTERS = ["ctr1", "ctrn"]  # ctr1: every incr adds 1; ctrn: random deltas


class Writer(threading.Thread):
    """Writes its own keys (so their last accepted write is well defined) and the shared
    counters; checks it reads its own writes."""

    def __init__(self, cache: cw.Cache, n: int, ops: int, seed: int) -> None:
        super().__init__(name=f"writer-{n}")
        self.cache, self.ops, self.rng = cache, ops, random.Random(seed)
        self.keys = [f"w{n}k{i}" for i in range(4)]
        self.model: dict[str, Any] = {}
        self.history: dict[str, list[Any]] = {k: [ABSENT] for k in self.keys}
        self.ones: list[int] = []  # what each incr of ctr1 returned
        self.added = 0  # sum of deltas added to ctrn
        self.deltas = 0  # how many incr of ctrn
        self.error: BaseException | None = None
        self.outages: Any = None  # a test store to take down and up (see outage())
        self.failed_before = 0

    def accepted(self, key: str, state: Any) -> None:
        if state is ABSENT:
            self.model.pop(key, None)
        else:
            self.model[key] = state
        self.history[key].append(state)

    def run(self) -> None:
        try:
            for i in range(self.ops):
                self.step(i)
        except BaseException as exc:
            self.error = exc

    def outage(self, i: int) -> None:
        """Down at every 97th step; up again from 40 steps later, once a write failed."""
        if i % 97 == 0 and not self.outages.down:
            self.failed_before = self.cache.stats().flush_errors
            self.outages.down = True
        elif i % 97 >= 40 and self.outages.down and (
                self.cache.stats().flush_errors > self.failed_before):
            self.outages.down = False

    def step(self, i: int) -> None:
        rng, cache = self.rng, self.cache
        if self.outages is not None:
            self.outage(i)
        key = rng.choice(self.keys)
        op = rng.random()
        if op < 0.25:
            value = rng.choice([i, f"s{i}", {"i": i}, [i]])
            cache.set(key, value)
            self.accepted(key, value)
        elif op < 0.35:
            for n in range(rng.randint(2, 8)):  # a burst: no read between the sets
                k = rng.choice(self.keys)
                cache.set(k, i * 10 + n)
                self.accepted(k, i * 10 + n)
        elif op < 0.45:
            items = dict.fromkeys(rng.sample(self.keys, 2), i)
            cache.set_many(items)
            for k, v in items.items():
                self.accepted(k, v)
        elif op < 0.55:
            cache.delete(key)
            self.accepted(key, ABSENT)
        elif op < 0.7:
            current = self.model.get(key, 0)
            if type(current) is int:
                got = cache.incr(key, 2)
                assert got == current + 2, (
                    f"{self.name}: incr({key!r}, 2) = {got!r}, last accepted write {current!r}")
                self.accepted(key, current + 2)
        elif op < 0.8:
            self.ones.append(cache.incr("ctr1"))
        elif op < 0.9:
            delta = rng.randint(-3, 7)
            cache.incr("ctrn", delta)
            self.added += delta
            self.deltas += 1
        missing = object()
        got = cache.get(key, missing)
        want = self.model.get(key, missing)
        assert got is want if want is missing else same(got, want), (
            f"{self.name}: get({key!r}) = {got!r}, last accepted write {want!r}")


def writers_through_outages(cache: cw.Cache, ts: Any, all_keys: list[str], seed: int,
                             ops: int) -> None:
    writers = [Writer(cache, n, ops, seed * 10 + n) for n in range(3)]
    writers[0].outages = ts  # it takes the store down and up as it goes
    for w in writers:
        w.start()
    # A generous bound (the point is a deadlock, not speed): during an outage a read that
    # meets a fill lease left by a failed load waits out the lease (10 s) before it loads
    # itself, so a long run on Redis can take minutes on a busy machine.
    deadline = time.monotonic() + 240
    for w in writers:
        w.join(max(0.0, deadline - time.monotonic()))
        assert not w.is_alive(), f"{w.name} is stuck"
        if w.error is not None:
            raise w.error
    ts.down = False
    cache.flush(timeout=FLUSH_TIMEOUT)
    assert cache.pending() == 0
    want: dict[str, Any] = {}
    for w in writers:
        want.update(w.model)
    ones = sorted(x for w in writers for x in w.ones)
    assert ones == list(range(1, len(ones) + 1)), "incr('ctr1') answers are not 1..N"
    if ones:
        want["ctr1"] = len(ones)
    if any(w.deltas for w in writers):
        want["ctrn"] = sum(w.added for w in writers)
    content = ts.content(all_keys)
    for key in all_keys:
        got, expected = content.get(key, ABSENT), want.get(key, ABSENT)
        assert same(got, expected), f"store {key} = {got!r}, expected {expected!r}"
        missing = object()
        read = cache.get(key, missing)
        assert (read is missing) if expected is ABSENT else same(read, expected), (
            f"get({key!r}) = {read!r} after flush, store has {got!r}")
    with ts.lock:
        received = {k: list(v) for k, v in ts.received.items()}
    for w in writers:
        for key in w.keys:
            assert is_subsequence(received.get(key, []), w.history[key]), (
                f"store got {key}'s writes out of order: received {received.get(key)}, "
                f"accepted {w.history[key]}")
