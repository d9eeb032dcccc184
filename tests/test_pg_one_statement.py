"""PostgresStore's versioned write in one statement (``vset_raise``: the write-through
set's store write, on both fronts): the set-if-newer upsert, then the table sequence's
raise under its advisory lock, in that order (the transactional batch's order: a lock
taken before the rows would deadlock against it)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import cacheway as cw
from cacheway.stores.base import SET, Applied, Op
from cacheway.stores.postgres.versions import SEQ_LOCK_CLASS
from services import POSTGRES_DSN

pytestmark = pytest.mark.services


def _sequence(table: str) -> int:
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        row = conn.execute(f'SELECT last_value FROM "{table}_version_seq"').fetchone()
        assert row is not None
        return int(row[0])


def _sync_apply(store: cw.PostgresStore) -> Callable[[list[Op]], list[Applied]]:
    return store.apply


def _async_apply(store: cw.PostgresStore) -> Callable[[list[Op]], list[Applied]]:
    def apply(ops: list[Op]) -> list[Applied]:
        path = store.async_path()  # a path (and pool) of its own per call and loop
        assert path is not None

        async def main() -> list[Applied]:
            try:
                return await path.aapply(ops)
            finally:
                await path.aclose()

        return asyncio.run(main())

    return apply


FRONTS = {"sync": _sync_apply, "async": _async_apply}


@pytest.fixture(params=sorted(FRONTS))
def store_apply(request: pytest.FixtureRequest, pg_table: str
                ) -> Iterator[tuple[cw.PostgresStore, Callable[[list[Op]], list[Applied]]]]:
    store = cw.PostgresStore(POSTGRES_DSN, table=pg_table)
    try:
        yield store, FRONTS[request.param](store)
    finally:
        store.close()


def test_a_versioned_write_raises_the_sequence_and_reports_what_landed(
        store_apply: tuple[cw.PostgresStore, Callable[[list[Op]], list[Applied]]],
        pg_table: str) -> None:
    store, apply = store_apply
    base = _sequence(pg_table) + 1000
    got = apply([Op("", "a", SET, b"1", version=base + 5),
                 Op("", "b", SET, b"2", version=base + 9)])
    assert [(a.version, a.applied) for a in got] == [(base + 5, True), (base + 9, True)]
    assert _sequence(pg_table) >= base + 9  # a store-stamped write lands above them
    older = apply([Op("", "a", SET, b"3", version=base + 1)])
    assert [(a.version, a.applied) for a in older] == [(base + 5, False)]
    assert store.fetch("", ["a"])["a"].payload == b"1"
    stamped = store.apply([Op("", "c", SET, b"4", version=None)])
    assert stamped[0].version is not None
    assert stamped[0].version > base + 9


@pytest.mark.parametrize("keys", [["k"], ["j", "k"]], ids=["one-op", "two-ops"])
def test_rows_are_locked_before_the_sequence(
        store_apply: tuple[cw.PostgresStore, Callable[[list[Op]], list[Applied]]],
        pg_table: str, keys: list[str]) -> None:
    """While another transaction holds the sequence's advisory lock, the write waits for
    it with the row already locked (rows first, as the transactional batch: the other
    order deadlocks against it)."""
    _, apply = store_apply
    apply([Op("", k, SET, b"1", version=1) for k in keys])
    top = _sequence(pg_table) + 1000
    holder = psycopg.connect(POSTGRES_DSN)
    outcome: list[Any] = []
    try:
        holder.execute("SELECT pg_advisory_xact_lock(%s::int, hashtext(current_schema() "
                       "|| '.' || %s::text))", (SEQ_LOCK_CLASS, f"{pg_table}_version_seq"))
        writer = threading.Thread(
            target=lambda: outcome.append(apply([Op("", k, SET, b"2", version=top)
                                                 for k in keys])))
        writer.start()
        deadline = time.monotonic() + 20
        while not _waits_for_an_advisory_lock(holder):
            assert time.monotonic() < deadline, "the write never waited for the lock"
            assert writer.is_alive(), f"the write ended without the lock: {outcome}"
            time.sleep(0.01)
        with pytest.raises(psycopg.errors.LockNotAvailable):
            holder.execute(f'SELECT 1 FROM "{pg_table}" WHERE key = %s FOR UPDATE NOWAIT',
                           ("k",))
        holder.rollback()  # releases the advisory lock: the write goes on
        writer.join(20)
        assert not writer.is_alive()
    finally:
        holder.close()
    assert [(a.version, a.applied) for a in outcome[0]] == [(top, True)] * len(keys)
    assert _sequence(pg_table) >= top


def _waits_for_an_advisory_lock(holder: psycopg.Connection[Any]) -> bool:
    with psycopg.connect(POSTGRES_DSN, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                           "AND NOT granted AND pid <> %s", (holder.info.backend_pid,)
                           ).fetchone()
    return row is not None and row[0] > 0
