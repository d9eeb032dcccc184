"""Hypothesis: a crash at any point of a journalled write-back cache loses nothing acknowledged.

Random sequences of ``set``/``delete``/``incr`` on a few keys, with ``flush()`` calls
interleaved, go through a write-back cache with ``fsync="always"``. Then a crash is
simulated: the journal directory and a consistent copy of the SQLite store are taken
while the cache is still open (its flusher may be half way through a batch), a new cache
is opened on the copies (the journal is replayed on open) and closed, and the copied
store must equal the model of every acknowledged write. A second open/close of the same
copies (a replay after a replay) must leave the store unchanged.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cacheway as cw

COUNTER_KEYS = ("a", "b", "c")  # int values: set, delete and incr all apply
VALUE_KEY = "v"  # any JSON value: set and delete only (an incr would be bad input)
ALL_KEYS = (*COUNTER_KEYS, VALUE_KEY)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)

Op = tuple[Any, ...]
ops_strategy = st.lists(
    st.one_of(
        st.tuples(st.just("set"), st.sampled_from(COUNTER_KEYS), st.integers(-1000, 1000)),
        st.tuples(st.just("set"), st.just(VALUE_KEY), json_values),
        st.tuples(st.just("delete"), st.sampled_from(ALL_KEYS)),
        st.tuples(st.just("incr"), st.sampled_from(COUNTER_KEYS), st.integers(-50, 50)),
        st.tuples(st.just("flush")),
    ),
    max_size=30,
)


def apply_op(cache: cw.Cache, model: dict[str, Any], op: Op) -> None:
    """Run ``op`` on the cache; once it returns it is acknowledged, so the model takes it."""
    name = op[0]
    if name == "set":
        cache.set(op[1], op[2])
        model[op[1]] = op[2]
    elif name == "delete":
        cache.delete(op[1])
        model.pop(op[1], None)
    elif name == "incr":
        got = cache.incr(op[1], op[2])
        model[op[1]] = model.get(op[1], 0) + op[2]
        assert got == model[op[1]], f"incr{op[1:]} returned {got}, model says {model[op[1]]}"
    else:
        cache.flush()


def snapshot(cache: cw.Cache, db: Path, wal: Path, crash: Path) -> tuple[Path, Path]:
    """What a crash right now would leave on disk: the journal's files and the store.

    A crash freezes every file at one instant; copying them one by one does not. Holding
    the journal's checkpoint lock keeps the journal itself still (no checkpoint rewrite,
    no segment deletion) while it is copied and while the store is backed up; the flusher
    may still commit a batch to the store in between. That pair is a real crash state:
    "store committed, journal not yet checkpointed" (no appends happen: this thread is
    the only writer and it is here).
    """
    journal = cache._journals[0]
    crash_db, crash_wal = crash / "app.db", crash / "app.wal"
    crash_wal.mkdir()
    with journal._checkpoint_lock:
        for file in sorted(wal.iterdir()):
            shutil.copyfile(file, crash_wal / file.name)
        src, dst = sqlite3.connect(db), sqlite3.connect(crash_db)
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
    return crash_db, crash_wal


def reopen(db: Path, wal: Path, batch_size: int) -> dict[str, Any]:
    """Open a new cache on ``db`` and ``wal`` (replaying the journal), close it, and
    return the store's contents."""
    store = cw.SQLiteStore(db)
    try:
        policy = cw.WriteBack(
            journal=str(wal), fsync="always", max_delay=3600, batch_size=batch_size
        )
        cw.Cache(store=store, policy=policy).close()
        return store.load_many(ALL_KEYS)
    finally:
        store.close()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    ops=ops_strategy,
    batch_size=st.integers(1, 4),
    crash_at=st.integers(0, 30),
)
def test_crash_and_replay_keep_every_acknowledged_write(
    ops: list[Op], batch_size: int, crash_at: int
) -> None:
    acked = ops[: min(crash_at, len(ops))]
    with tempfile.TemporaryDirectory(prefix="cacheway-replay-") as tmp:
        root = Path(tmp)
        db, wal, crash = root / "app.db", root / "app.wal", root / "crash"
        crash.mkdir()
        store = cw.SQLiteStore(db)
        policy = cw.WriteBack(
            journal=str(wal),
            fsync="always",
            max_delay=3600,
            batch_size=batch_size,
            max_dirty=10_000,
        )
        cache = cw.Cache(store=store, policy=policy)
        model: dict[str, Any] = {}
        try:
            for op in acked:
                apply_op(cache, model, op)
            crash_db, crash_wal = snapshot(cache, db, wal, crash)
        finally:
            cache.close()
            store.close()

        after_replay = reopen(crash_db, crash_wal, batch_size)
        assert after_replay == model, f"replay after crash lost or changed writes of {acked}"
        assert reopen(crash_db, crash_wal, batch_size) == model, (
            f"a second replay changed the store after {acked}"
        )
        # The cache that did not crash: close() flushed everything.
        assert reopen(db, wal, batch_size) == model
