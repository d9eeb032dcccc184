"""Property tests of the write-back dirty table's coalescing rules (pure, no I/O)."""

from __future__ import annotations

from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from cacheway.core.dirty import DirtyTable, Entry
from cacheway.stores.base import ADD, DELETE, SET

KEYS = ["a", "b", "c", "d"]

write = st.tuples(st.sampled_from(["set", "delete", "incr"]), st.sampled_from(KEYS),
                  st.integers(-5, 5))
step = st.one_of(
    write.map(lambda w: ("write", *w)),
    # a set() on the hot path: staged, folded in later by whatever needs it
    st.tuples(st.just("stage"), st.sampled_from(KEYS), st.integers(-5, 5)),
    st.tuples(st.just("take"), st.integers(1, 4)),
    st.tuples(st.just("ack"), st.booleans()),
    st.tuples(st.just("fail"), st.booleans()),
    st.tuples(st.just("read"), st.booleans()),
)


def _apply_to_store(store: dict[str, Any], entry: Entry) -> None:
    if entry.kind == SET:
        store[entry.key] = entry.value
    elif entry.kind == DELETE:
        store.pop(entry.key, None)
    else:
        assert entry.kind == ADD
        store[entry.key] = store.get(entry.key, 0) + entry.delta


@settings(max_examples=300, deadline=None)
@given(st.lists(step, max_size=60))
# issue 10 item 1: a partial fill() with a parked entry: drain(limit) calls put(), which
# drains the rest of the staged writes first, so a=2 is folded before a=1 and a=1 wins
@example([
    ("write", "set", "b", 0), ("take", 1), ("fail", False),  # b parked
    ("stage", "a", 1), ("stage", "a", 2),
    ("take", 1),  # fill(1) folds only the first staged write
    ("read", True),
])
def test_coalescing_keeps_last_write_and_sums_deltas(steps: list[tuple[Any, ...]]) -> None:
    table = DirtyTable()
    model: dict[str, Any] = {}  # what a reader must see: the last accepted writes
    store: dict[str, Any] = {}
    seq = 0
    batch: list[Entry] = []
    acked_seqs: set[int] = set()
    written_seqs: dict[str, list[int]] = {}
    seq_seen = 0
    for s in steps:
        # issue 10 item 1: the last accepted write's number never goes backwards
        assert table.seq >= seq_seen, f"table.seq went back from {seq_seen} to {table.seq}"
        seq_seen = table.seq
        if s[0] == "stage":
            _, key, n = s
            table.staged.extend((key, n, b"", None))
            model[key] = n
        elif s[0] == "write":
            _, op, key, n = s
            table.drain()  # staged writes come first (the engine's general path does this)
            seq = table.seq = table.seq + 1
            written_seqs.setdefault(key, []).append(seq)
            if op == "set":
                model[key] = n
                table.put(key, SET, n, b"", 0, None, seq, 0.0)
            elif op == "delete":
                model.pop(key, None)
                table.put(key, DELETE, None, None, 0, None, seq, 0.0)
            else:
                # incr computes the absolute value from what a reader sees now
                new = (model.get(key) or 0) + n
                model[key] = new
                table.put(key, ADD, new, b"", n, None, seq, 0.0)
            view = table.pending(key)
            assert view is not None
            assert (view.kind == DELETE) == (key not in model)
            if key in model:
                assert view.value == model[key]
        elif s[0] == "take" and not batch:
            table.fill(s[1])  # as the flusher does: only what the batch needs
            batch = table.take(s[1], 0.0)
            keys = [e.key for e in batch]
            assert len(keys) == len(set(keys)), "a key twice in one batch"
            assert [e.last_seq for e in batch] == sorted(e.last_seq for e in batch)
        elif s[0] == "ack" and batch:
            for entry in batch:
                _apply_to_store(store, entry)
                table.ack(entry)
            batch = []
        elif s[0] == "fail" and batch:
            for entry in batch:
                table.park(entry, 0.0)
            batch = []
        if s[0] != "read":
            continue
        # reads see the newest pending write of every key; a key with none is in the store
        for key in KEYS:
            entry = table.pending(key)
            if entry is not None:
                assert (entry.kind == DELETE) == (key not in model)
                if key in model:
                    assert entry.value == model[key]
            else:
                assert store.get(key) == model.get(key), f"{key} clean but the store lags"
    # drain: ack what is in flight, then everything else
    for entry in batch:
        _apply_to_store(store, entry)
        table.ack(entry)
    seq = table.seq if table.staged == [] else table.seq + len(table.staged) // 4
    while len(table):
        low_before = table.low_water(seq + 1)
        for entry in table.take(3, 0.0):
            _apply_to_store(store, entry)
            table.ack(entry)
        assert table.low_water(seq + 1) >= low_before
        acked_seqs.add(low_before)
    assert table.low_water(seq + 1) == seq
    assert not table.held
    assert not table.dirty
    assert store == model


def test_take_is_linear_on_a_long_backlog() -> None:
    # Popping the first key of a dict one at a time rescans deleted slots; a backlog of
    # 200k entries taken in batches must not go quadratic (this would take minutes).
    table = DirtyTable()
    for i in range(200_000):
        table.put(f"k{i}", SET, i, b"", 0, None, i + 1, 0.0)
    taken = 0
    while table.dirty:
        batch = table.take(1000, 0.0)
        for entry in batch:
            table.ack(entry)
        taken += len(batch)
    assert taken == 200_000
