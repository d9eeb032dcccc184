"""The sans-I/O flush schedule (cacheway.core.schedule), driven with no store, thread
or clock: which batch goes next, how a failing batch is walked, what a failure means."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cacheway.core.dirty import DirtyTable, Entry
from cacheway.core.schedule import (
    PROBE_EVERY,
    BatchAttempt,
    next_step,
    permanent,
    verdict,
)
from cacheway.errors import InvalidWriteError, StoreError
from cacheway.policies import Retry, WriteBack
from cacheway.stores.base import SET


def _entries(n: int) -> list[Entry]:
    return [Entry(f"k{i}", SET, i, b"%d" % i, 0, None, i + 1, 0.0) for i in range(n)]


def _walk(batch: list[Entry], fails: object, seed: int = 0
          ) -> tuple[BatchAttempt, list[list[Entry]]]:
    """Drive an attempt; ``fails(part)`` is the store: the error a part gets, or None."""
    attempt = BatchAttempt(list(batch), random.Random(seed))
    tried: list[list[Entry]] = []
    while (part := attempt.next()) is not None:
        tried.append(part)
        attempt.outcome(part, fails(part))  # type: ignore[operator]
    return attempt, tried


def test_a_batch_that_goes_through_is_tried_once() -> None:
    attempt, tried = _walk(_entries(5), lambda part: None)
    assert len(tried) == 1
    assert not attempt.failures
    assert not attempt.store_down


def test_a_single_entry_that_fails_for_now_means_the_store_is_down() -> None:
    batch = _entries(1)
    exc = StoreError("down")
    attempt, _ = _walk(batch, lambda part: exc)
    assert attempt.store_down
    assert attempt.failures == [(batch, exc, True)]


def test_a_single_entry_refused_for_good_is_not_an_outage() -> None:
    batch = _entries(1)
    exc = InvalidWriteError("too long")
    attempt, _ = _walk(batch, lambda part: exc)
    assert not attempt.store_down
    assert attempt.failures == [(batch, exc, True)]


def test_a_store_that_is_down_gets_three_probes_and_the_batch_waits() -> None:
    batch = _entries(10)
    attempt, tried = _walk(batch, lambda part: StoreError("down"))
    assert attempt.store_down
    assert len(tried) == 1 + 3
    assert all(len(p) == 1 for p in tried[1:])
    [(rest, _, alone)] = attempt.failures
    assert not alone
    assert sorted(e.key for e in rest) == sorted(e.key for e in batch)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(2, 40), data=st.data(), seed=st.integers(0, 2**16),
       poison_error=st.sampled_from(["invalid", "value"]))
def test_an_up_store_dead_letters_only_the_refused_entries_and_writes_the_rest_once(
        n: int, data: st.DataObject, seed: int, poison_error: str) -> None:
    batch = _entries(n)
    poison = set(data.draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=n - 1)))
    bad = {batch[i].key for i in poison}

    def store(part: list[Entry]) -> Exception | None:
        if any(e.key in bad for e in part):
            return (InvalidWriteError("refused") if poison_error == "invalid"
                    else ValueError("refused"))
        return None

    attempt, tried = _walk(batch, store, seed)
    written = [e.key for p in tried if store(p) is None for e in p]
    assert len(written) == len(set(written))
    assert not set(written) & bad
    failed = [e.key for entries, _, _ in attempt.failures for e in entries]
    assert sorted(failed + written) == sorted(e.key for e in batch)  # none lost
    if not attempt.store_down:
        # every refused entry was isolated on its own, every good one written
        assert sorted(failed) == sorted(bad)
        assert all(alone and len(entries) == 1 for entries, _, alone in attempt.failures)
    else:
        # every probe hit a refused entry: the rest waits for a retry, none dead-lettered
        # with it (retried alone later, the good ones go through)
        assert n > 3 or set(failed) == bad
        assert all(not alone for entries, _, alone in attempt.failures if len(entries) > 1)


def test_permanent_looks_through_wrapping_errors() -> None:
    outer = StoreError("wrapped")
    outer.__cause__ = InvalidWriteError("bad")
    assert permanent(outer)
    assert not permanent(StoreError("down"))


def test_verdict_parks_with_backoff_then_dead_letters_when_retries_are_spent() -> None:
    retry = Retry(attempts=2, base_delay=1.0, jitter=False)
    [entry] = _entries(1)
    dead, not_before = verdict([entry], StoreError("down"), True, retry, 100.0, lambda: 0.5)
    assert dead == []
    assert not_before == pytest.approx(101.0)
    assert entry.attempts == 1
    dead, _ = verdict([entry], StoreError("down"), True, retry, 101.0, lambda: 0.5)
    assert dead == [entry]


def test_verdict_dead_letters_an_entry_refused_alone_at_once() -> None:
    [entry] = _entries(1)
    dead, _ = verdict([entry], InvalidWriteError("no"), True, Retry(), 0.0, lambda: 0.5)
    assert dead == [entry]
    two = _entries(2)
    dead, _ = verdict(two, InvalidWriteError("no"), False, Retry(), 0.0, lambda: 0.5)
    assert dead == []  # refused with others: not proven to be these


def _table_with(n: int, born: float) -> DirtyTable:
    table = DirtyTable()
    for i in range(n):
        table.put(f"k{i}", SET, i, b"1", 0, None, i + 1, born)
    return table


def test_next_step_waits_for_max_delay_then_takes_a_batch() -> None:
    cfg = WriteBack(max_delay=1.0, batch_size=10)
    table = _table_with(3, born=5.0)
    step = next_step(table, cfg, 5.25, hurry=False, stopping=False, probe_at=0.0)
    assert step.batch is None
    assert step.wait == pytest.approx(0.75)
    step = next_step(table, cfg, 6.0, hurry=False, stopping=False, probe_at=0.0)
    assert step.batch is not None
    assert [e.key for e in step.batch] == ["k0", "k1", "k2"]


def test_next_step_goes_at_once_for_a_full_batch_or_a_waiter() -> None:
    cfg = WriteBack(max_delay=60.0, batch_size=2)
    full = next_step(_table_with(2, 0.0), cfg, 0.0, hurry=False, stopping=False, probe_at=0.0)
    assert full.batch is not None
    assert len(full.batch) == 2
    hurried = next_step(_table_with(1, 0.0), cfg, 0.0, hurry=True, stopping=False,
                        probe_at=0.0)
    assert hurried.batch is not None


def test_next_step_on_an_empty_table_waits_to_be_woken_or_stops() -> None:
    cfg = WriteBack()
    assert next_step(DirtyTable(), cfg, 0.0, hurry=False, stopping=False,
                     probe_at=0.0).wait is None
    assert next_step(DirtyTable(), cfg, 0.0, hurry=False, stopping=True, probe_at=0.0).stop


def test_next_step_probes_with_one_parked_entry_while_backing_off() -> None:
    cfg = WriteBack(max_delay=0.1, batch_size=10)
    table = _table_with(3, born=0.0)
    batch = table.take(10, 0.0)
    for entry in batch:
        table.park(entry, 30.0)  # backed off for 30 s
    step = next_step(table, cfg, 1.0, hurry=False, stopping=False, probe_at=0.5)
    assert step.probe
    assert step.batch is not None
    assert len(step.batch) == 1
    table.park(step.batch[0], 30.0)
    later = next_step(table, cfg, 1.0, hurry=False, stopping=False, probe_at=1.0 + PROBE_EVERY)
    assert later.batch is None
    assert later.wait == pytest.approx(PROBE_EVERY)
