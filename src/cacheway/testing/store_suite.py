"""The generic store suite: every store passes the same tests.

Subclass :class:`StoreSuite` (stores that map keys to rows of an existing table) or
:class:`KeyValueStoreSuite` (stores that keep any serializable value, namespaces and
counters: the built-in key/value tables and ``CallbackStore``) and give it
:meth:`~StoreSuite.make_store`::

    from cacheway.testing import KeyValueStoreSuite

    class TestMyStore(KeyValueStoreSuite):
        def make_store(self, table: str) -> Store:
            return MyStore(DSN, table=table)

        def drop_tables(self, table: str) -> None:
            drop_every_table_named_like(table)

Each test gets its own table name (:attr:`StoreSuite.table`, unique across runs: several
people run the suites at once on the same servers), dropped at teardown by
:meth:`~StoreSuite.drop_tables`. A store on a server that is down should skip (or fail)
from :meth:`~StoreSuite.make_store`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

import cacheway as cw
from cacheway.stores.base import DELETE, SET, JournalMark, Op

from .policies import POLICY_NAMES, make_policy
from .support import unique

__all__ = ["StoreSuite"]


class StoreSuite:
    """The contract of every store, on values :meth:`value` makes."""

    #: whether the store records journal marks (``applied_state``); a CallbackStore does not
    records_marks: ClassVar[bool] = True
    #: whether apply() takes ops without a payload (row stores work on the value dicts)
    rows: ClassVar[bool] = False

    table: str
    tmp_path: Path
    _stores: list[Any]

    # -- hooks -----------------------------------------------------------------------------
    def make_store(self, table: str) -> Any:
        """A new store on ``table`` (each call another connection to the same data)."""
        raise NotImplementedError

    def drop_tables(self, table: str) -> None:
        """Remove what the stores of this test left on a server (tables whose name starts
        with ``table``); the default does nothing (files live in ``tmp_path``)."""

    def value(self, i: int) -> Any:
        """A value the store keeps, distinct for each ``i``."""
        return {"i": i, "text": f"v{i}", "list": [i, "é"]}

    # -- fixtures and helpers --------------------------------------------------------------
    def new_store(self, table: str | None = None) -> Any:
        store = self.make_store(self.table if table is None else table)
        self._stores.append(store)
        return store

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Any]:
        self.tmp_path = tmp_path
        self.table = unique("cw")
        self._stores = []
        try:
            yield self.new_store()
        finally:
            try:
                for made in self._stores:
                    made.close()
            finally:
                self.drop_tables(self.table)

    def op(self, key: str, value: Any, namespace: str = "") -> Op:
        payload = None if self.rows else cw.JSONSerializer().dumps(value)
        return Op(namespace, key, SET, payload, 0, value)

    # -- the Python-value methods ----------------------------------------------------------
    def test_round_trip(self, store: Any) -> None:
        items = {k: self.value(i) for i, k in enumerate(["a", "b", "ключ", "🙂 key"])}
        store.save_many(items)
        for key, value in items.items():
            assert store.load(key) == value
        assert store.load_many(list(items)) == items

    def test_save_many_takes_pairs_and_overwrites(self, store: Any) -> None:
        store.save_many([("a", self.value(1)), ("b", self.value(2))])
        store.save_many([("a", self.value(10))])
        assert store.load_many(["a", "b"]) == {"a": self.value(10), "b": self.value(2)}

    def test_load_many_returns_found_keys_only(self, store: Any) -> None:
        store.save_many({"a": self.value(1)})
        assert store.load_many(["a", "x", "y"]) == {"a": self.value(1)}
        assert store.load_many([]) == {}
        assert store.load_many(["x"]) == {}
        assert store.load("x") is None

    def test_load_many_of_many_keys(self, store: Any) -> None:
        items = {f"k{i}": self.value(i) for i in range(1200)}  # past any chunk size of IN lists
        store.save_many(items)
        assert store.load_many([*items, "missing"]) == items

    def test_delete_many(self, store: Any) -> None:
        store.save_many({"a": self.value(1), "b": self.value(2), "c": self.value(3)})
        store.delete_many(["a", "c", "never-there"])
        assert store.load_many(["a", "b", "c"]) == {"b": self.value(2)}
        store.delete_many([])
        assert store.load("b") == self.value(2)

    # -- versions and journal marks (the store protocol) -----------------------------------
    def test_versions_increase_and_survive_deletes(self, store: Any) -> None:
        if not store.versioned:
            assert [a.version for a in store.apply([self.op("a", self.value(1))])] == [None]
            return
        seen: list[int] = []
        for ops in (
            [self.op("a", self.value(1)), self.op("b", self.value(2))],
            [Op("", "a", DELETE)],
            [self.op("a", self.value(3))],
            [self.op("c", self.value(4)), Op("", "b", DELETE)],
        ):
            seen += [r.version for r in store.apply(ops)]
        assert all(isinstance(v, int) for v in seen)
        assert seen == sorted(set(seen)), seen  # strictly increasing
        assert store.fetch("", ["a"])["a"].version == seen[3]
        assert store.fetch("", ["b"]) == {}  # deleted by the fourth batch
        # A second store on the same table (another process) keeps counting upward.
        later = self.new_store().apply([self.op("a", self.value(6))])[0].version
        assert later > seen[-1]

    def test_a_batch_stamps_each_row_with_its_own_version(self, store: Any) -> None:
        # distinct keys (a flusher's batch), then a key twice in one batch: order holds
        for ops in (
            [self.op(k, self.value(i)) for i, k in enumerate("pqrs")],
            [self.op("p", self.value(10)), Op("", "q", DELETE), self.op("p", self.value(11))],
        ):
            results = store.apply(ops)
            assert len(results) == len(ops)
        assert store.load_many(["p", "q", "r", "s"]) == {
            "p": self.value(11), "r": self.value(2), "s": self.value(3)}
        if store.versioned:
            rows = store.fetch("", ["p", "r", "s"])
            assert rows["r"].version < rows["s"].version < rows["p"].version
            assert rows["p"].version == results[2].version

    def test_journal_marks_round_trip(self, store: Any) -> None:
        jid = unique("journal")
        store.apply([self.op("a", self.value(1)), self.op("b", self.value(2))],
                    journal=JournalMark(jid, 3, [4, 5]))
        if not self.records_marks:
            assert store.applied_state(jid) == (0, {})
            return
        assert store.applied_state(jid) == (3, {("", "a"): 4, ("", "b"): 5})
        store.apply([self.op("a", self.value(3))], journal=JournalMark(jid, 4, [7]))
        assert store.applied_state(jid) == (4, {("", "a"): 7, ("", "b"): 5})
        # A lower watermark (an older flusher) never moves it back.
        store.apply([Op("", "c", DELETE)], journal=JournalMark(jid, 2, [6]))
        low, seqs = store.applied_state(jid)
        assert low == 4
        assert seqs[("", "c")] == 6
        # A mark alone (no ops) is recorded too; seqs at or under it are no longer reported.
        store.apply([], journal=JournalMark(jid, 6, []))
        assert store.applied_state(jid) == (6, {("", "a"): 7})
        assert store.applied_state(unique("journal")) == (0, {})
        assert store.load_many(["a", "c"]) == {"a": self.value(3)}

    def test_a_journal_mark_of_the_low_water_alone(self, store: Any) -> None:
        # issue 13: a queue consumer records its partition's low water alone (no row per
        # key) where the store declares low_water_marks
        if not (self.records_marks and getattr(store, "low_water_marks", False)):
            pytest.skip("this store takes no low-water-only journal marks")
        jid = unique("journal")
        store.apply([self.op("a", self.value(1)), self.op("b", self.value(2))],
                    journal=JournalMark(jid, 9, ()))
        assert store.applied_state(jid) == (9, {})
        store.apply([self.op("a", self.value(3))], journal=JournalMark(jid, 7, ()))
        assert store.applied_state(jid) == (9, {})  # never moves back
        assert store.load_many(["a", "b"]) == {"a": self.value(3), "b": self.value(2)}
        with pytest.raises(cw.ConfigError, match="seqs"):
            store.apply([self.op("a", self.value(4))], journal=JournalMark(jid, 10, [1, 2]))

    def test_a_fenced_mark_refuses_a_batch_another_writer_passed(self, store: Any) -> None:
        # issue 13: a queue consumer paused past claim_after applies a batch its successor
        # applied already; the fence (JournalMark.after) refuses it, writing none of it
        if not (self.records_marks and getattr(store, "fenced_marks", False)):
            pytest.skip("this store checks no fences")
        jid = unique("journal")
        store.apply([self.op("n", self.value(5))], journal=JournalMark(jid, 4, (), after=0))
        with pytest.raises(cw.StaleMarkError, match="low water is 4"):
            store.apply([self.op("n", self.value(1)), self.op("x", self.value(1))],
                        journal=JournalMark(jid, 4, (), after=0))  # the paused one
        assert store.applied_state(jid) == (4, {})
        assert store.load_many(["n", "x"]) == {"n": self.value(5)}  # none of it written
        store.apply([self.op("n", self.value(6))], journal=JournalMark(jid, 6, (), after=4))
        assert store.applied_state(jid) == (6, {})
        assert store.load_many(["n"]) == {"n": self.value(6)}
        # a fence on a journal with no row yet: the first batch of a partition
        other = unique("journal")
        store.apply([self.op("y", self.value(2))], journal=JournalMark(other, 1, (), after=0))
        assert store.applied_state(other) == (1, {})

    # -- a whole cache on the store --------------------------------------------------------
    @pytest.mark.parametrize("policy", POLICY_NAMES)
    def test_cache_on_the_store(self, store: Any, policy: str) -> None:
        v = self.value
        with cw.Cache(store=store, policy=make_policy(policy)) as cache:
            cache.set("a", v(1))
            cache.set_many({"b": v(2), "c": v(3)})
            assert cache.get("a") == v(1)  # read your writes
            assert cache.get_many(["a", "b", "c", "missing"]) == {"a": v(1), "b": v(2),
                                                                  "c": v(3)}
            cache.set("gone", v(4))
            cache.delete("gone")
            assert cache.get("gone") is None
            cache.flush(timeout=10)
            assert cache.pending() == 0
            assert store.load_many(["a", "b", "c", "gone"]) == {"a": v(1), "b": v(2),
                                                                 "c": v(3)}
