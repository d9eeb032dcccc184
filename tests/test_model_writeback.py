"""A model of the whole write-back engine, through the public API only (issue 10, "How to
prove it").

Hypothesis drives set / set_many / delete / delete_many / incr / get_many / flush on a
few keys while the store goes down and comes back and a tiny memory backend evicts,
with the real flusher thread running. After every step each key reads as a plain-dict
model of the accepted writes says (read your writes; ``incr`` counts a missing key as
0); after a ``flush()`` with the store up the store holds the model, and every key's
writes reached the store in the order they were accepted (the states it received are a
subsequence of the key's accepted states). Runs for every backend (memory, memory with
``max_entries=2``, Redis, two-level) against a dict ``CallbackStore``, SQLite and
PostgreSQL. The default run is derandomized (tests/conftest.py); the ``slow`` run
explores with fresh random examples.

A second test does the same with three threads writing at once (a seeded random
workload, not hypothesis) while the store goes down and up.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import cacheway as cw
from model_harness import (
    ABSENT,
    BACKENDS,
    STORES,
    Backends,
    is_subsequence,
    store_factory,
)
from services import POSTGRES_DSN, require

KEYS = ["k0", "k1", "k2", "k3", "k4"]
FAST_RETRY = cw.Retry(attempts=None, base_delay=0.001, max_delay=0.01)
FLUSH_TIMEOUT = 30.0

keys = st.sampled_from(KEYS)
values = st.one_of(
    st.integers(-3, 3),
    st.sampled_from(["x", "yy", ""]),
    st.dictionaries(st.sampled_from(["p", "q"]), st.integers(0, 2), max_size=2),
    st.lists(st.integers(0, 2), max_size=2),
)
key_sets = st.lists(keys, min_size=1, max_size=3, unique=True)


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same types (JSON values: no 1 == 1.0 == True)."""
    if a is ABSENT or b is ABSENT:
        return a is b
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


class WriteBackModel(RuleBasedStateMachine):
    """One write-back cache against a model; the subclass made by :func:`_run` says
    which backend and store."""

    backends: ClassVar[Backends]
    make_store: ClassVar[Callable[[], Any]]

    def __init__(self) -> None:
        super().__init__()
        self.cache: cw.Cache | None = None
        self.ts: Any = None
        self.backend: Any = None
        self.model: dict[str, Any] = {}
        # every state each key was left in by an accepted write, in order
        self.history: dict[str, list[Any]] = {k: [ABSENT] for k in KEYS}
        self.writes = 0

    @initialize(batch_size=st.integers(1, 3), max_delay=st.sampled_from([0.001, 0.02]))
    def open(self, batch_size: int, max_delay: float) -> None:
        self.ts = type(self).make_store()
        self.ts.reset(KEYS)
        self.backend = self.backends.make()
        self.cache = cw.Cache(
            store=self.ts.store, backend=self.backend,
            policy=cw.WriteBack(max_delay=max_delay, batch_size=batch_size, retry=FAST_RETRY),
        )

    @property
    def c(self) -> cw.Cache:
        assert self.cache is not None
        return self.cache

    def _accepted(self, key: str, state: Any) -> None:
        if state is ABSENT:
            self.model.pop(key, None)
        else:
            self.model[key] = state
        self.history[key].append(state)
        self.writes += 1

    # -- writes ---------------------------------------------------------------------------

    @rule(key=keys, value=values)
    def set(self, key: str, value: Any) -> None:
        self.c.set(key, value)
        self._accepted(key, value)

    @rule(items=st.dictionaries(keys, values, min_size=1, max_size=3))
    def set_many(self, items: dict[str, Any]) -> None:
        self.c.set_many(items)
        for key, value in items.items():
            self._accepted(key, value)

    @rule(key=keys)
    def delete(self, key: str) -> None:
        self.c.delete(key)
        self._accepted(key, ABSENT)

    @rule(ks=key_sets)
    def delete_many(self, ks: list[str]) -> None:
        self.c.delete_many(ks)
        for key in ks:
            self._accepted(key, ABSENT)

    @rule(key=keys, delta=st.integers(-3, 3))
    def incr(self, key: str, delta: int) -> None:
        current = self.model.get(key, 0)  # a missing key counts as 0
        if type(current) is not int:
            with pytest.raises(cw.CachewayError):
                self.c.incr(key, delta)
            return
        assert self.c.incr(key, delta) == current + delta
        self._accepted(key, current + delta)

    # -- reads, flushes, faults -----------------------------------------------------------

    @rule(ks=key_sets)
    def get_many(self, ks: list[str]) -> None:
        got = self.c.get_many(ks)
        want = {k: self.model[k] for k in ks if k in self.model}
        assert got.keys() == want.keys(), f"get_many({ks}): {got} != model {want}"
        for k in got:
            assert _same(got[k], want[k]), f"get_many: {k} = {got[k]!r}, model {want[k]!r}"

    @rule()
    def store_down(self) -> None:
        self.ts.down = True

    @rule()
    def store_up(self) -> None:
        self.ts.down = False

    @precondition(lambda self: self.ts is not None and self.ts.down)
    @rule()
    def flush_while_down(self) -> None:
        # A flush that returns has put every accepted write in the store (a batch that
        # was being written when the store went down may have made it); one that times
        # out raises StoreError, and only when something was pending.
        before = self.c.pending()
        try:
            self.c.flush(timeout=0.02)
        except cw.StoreError:
            assert before > 0, "flush() raised with nothing pending"
            return
        self.check_flushed()

    @rule()
    def flush(self) -> None:
        self.ts.down = False
        self.c.flush(timeout=FLUSH_TIMEOUT)
        self.check_flushed()

    def check_flushed(self) -> None:
        assert self.c.pending() == 0
        stats = self.c.stats()
        assert stats.dirty == 0, stats
        assert stats.writes == self.writes, f"stats().writes {stats.writes} != {self.writes}"
        content = self.ts.content(KEYS)
        assert content.keys() == self.model.keys(), (
            f"store holds {sorted(content)}, model {sorted(self.model)}: "
            f"store {content} model {self.model}")
        for k in content:
            assert _same(content[k], self.model[k]), (
                f"store {k} = {content[k]!r}, last accepted write {self.model[k]!r} "
                f"(accepted states {self.history[k]}, store got {self.ts.received.get(k)})")
        self.check_order()

    def check_order(self) -> None:
        with self.ts.lock:
            received = {k: list(v) for k, v in self.ts.received.items()}
        for k, got in received.items():
            assert is_subsequence(got, self.history[k]), (
                f"store got {k}'s writes out of order: received {got}, "
                f"accepted {self.history[k]}")

    @invariant()
    def reads_see_the_model(self) -> None:
        if self.cache is None:
            return
        missing = object()
        for k in KEYS:
            got = self.cache.get(k, missing)
            if k not in self.model:
                assert got is missing, f"get({k!r}) = {got!r}, but it was deleted / never set"
            else:
                assert _same(got, self.model[k]), (
                    f"get({k!r}) = {got!r}, last accepted write {self.model[k]!r}")

    def teardown(self) -> None:
        if self.cache is None:
            return
        try:
            self.flush()
        finally:
            try:
                self.cache.close(timeout=5)
            finally:
                self.backends.release(self.backend)


def _run(backend_kind: str, store_kind: str, tmp_path: Any, how: settings) -> None:
    if backend_kind in ("redis", "two-level"):
        require("redis")
    dsn = None
    if store_kind == "postgresql":
        require("postgresql")
        dsn = POSTGRES_DSN
    backends = Backends(backend_kind)
    try:
        with store_factory(store_kind, str(tmp_path), dsn) as make_store:
            machine = type(
                f"Model_{backend_kind}_{store_kind}".replace("-", "_"), (WriteBackModel,),
                {"backends": backends, "make_store": staticmethod(make_store)},
            )
            run_state_machine_as_test(machine, settings=how)
    finally:
        backends.cleanup()


HEALTH = [HealthCheck.too_slow, HealthCheck.filter_too_much]


@pytest.mark.parametrize("store_kind", STORES)
@pytest.mark.parametrize("backend_kind", BACKENDS)
def test_write_back_matches_a_model(backend_kind: str, store_kind: str, tmp_path: Any) -> None:
    # issue 10 "How to prove it": reads, store content and per-key order follow the model
    _run(backend_kind, store_kind, tmp_path, settings(
        max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=HEALTH))


@pytest.mark.slow
@pytest.mark.parametrize("store_kind", STORES)
@pytest.mark.parametrize("backend_kind", BACKENDS)
def test_write_back_matches_a_model_long_random_run(backend_kind: str, store_kind: str,
                                                    tmp_path: Any) -> None:
    # issue 10 "How to prove it": the same model, fresh random examples on every run
    _run(backend_kind, store_kind, tmp_path, settings(
        derandomize=False, max_examples=300, stateful_step_count=60, deadline=None,
        suppress_health_check=HEALTH))


# -- three writer threads through outages (a seeded random workload) ------------------------

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
        self.outages: Any = None  # a test store to take down for 40 of every 97 steps

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

    def step(self, i: int) -> None:
        rng, cache = self.rng, self.cache
        if self.outages is not None and i % 97 in (0, 40):
            self.outages.down = i % 97 == 0
        key = rng.choice(self.keys)
        op = rng.random()
        if op < 0.35:
            value = rng.choice([i, f"s{i}", {"i": i}, [i]])
            cache.set(key, value)
            self.accepted(key, value)
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
                assert cache.incr(key, 2) == current + 2
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
        assert got is want if want is missing else _same(got, want), (
            f"{self.name}: get({key!r}) = {got!r}, last accepted write {want!r}")


THREAD_RUNS = [("memory-2", "callback"), ("memory", "sqlite"), ("memory-2", "postgresql"),
               ("redis", "sqlite"), ("two-level", "postgresql"), ("two-level", "callback")]


def _run_writers(backend_kind: str, store_kind: str, tmp_path: Any, seed: int, ops: int
                 ) -> None:
    if backend_kind in ("redis", "two-level"):
        require("redis")
    dsn = None
    if store_kind == "postgresql":
        require("postgresql")
        dsn = POSTGRES_DSN
    backends = Backends(backend_kind)
    try:
        with store_factory(store_kind, str(tmp_path), dsn) as make_store:
            ts = make_store()
            all_keys = [f"w{n}k{i}" for n in range(3) for i in range(4)] + COUNTERS
            ts.reset(all_keys)
            backend = backends.make()
            cache = cw.Cache(store=ts.store, backend=backend, policy=cw.WriteBack(
                max_delay=0.001, batch_size=2, retry=FAST_RETRY))
            try:
                _writers_through_outages(cache, ts, all_keys, seed, ops)
            finally:
                ts.down = False
                cache.close(timeout=10)
                backends.release(backend)
    finally:
        backends.cleanup()


def _writers_through_outages(cache: cw.Cache, ts: Any, all_keys: list[str], seed: int,
                             ops: int) -> None:
    writers = [Writer(cache, n, ops, seed * 10 + n) for n in range(3)]
    writers[0].outages = ts  # it takes the store down and up as it goes
    for w in writers:
        w.start()
    for w in writers:
        w.join(60)
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
        assert _same(got, expected), f"store {key} = {got!r}, expected {expected!r}"
        missing = object()
        read = cache.get(key, missing)
        assert (read is missing) if expected is ABSENT else _same(read, expected), (
            f"get({key!r}) = {read!r} after flush, store has {got!r}")
    with ts.lock:
        received = {k: list(v) for k, v in ts.received.items()}
    for w in writers:
        for key in w.keys:
            assert is_subsequence(received.get(key, []), w.history[key]), (
                f"store got {key}'s writes out of order: received {received.get(key)}, "
                f"accepted {w.history[key]}")


@pytest.mark.parametrize(("backend_kind", "store_kind"), THREAD_RUNS)
def test_three_writers_through_outages(backend_kind: str, store_kind: str,
                                       tmp_path: Any) -> None:
    # issue 10 "How to prove it": last accepted write per key, counters summed, in order
    _run_writers(backend_kind, store_kind, tmp_path, seed=1, ops=1500)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 7))
@pytest.mark.parametrize("store_kind", STORES)
@pytest.mark.parametrize("backend_kind", BACKENDS)
def test_three_writers_through_outages_long(backend_kind: str, store_kind: str,
                                            seed: int, tmp_path: Any) -> None:
    # issue 10 "How to prove it": the same, more seeds, more writes, more outages
    _run_writers(backend_kind, store_kind, tmp_path, seed=seed, ops=6000)
