"""The contract of key/value stores: any serializable value, namespaces, counters, table
name checks and declared key limits (built-in key/value tables and ``CallbackStore``)."""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import pytest

import cacheway as cw
from cacheway.stores.base import ADD, DELETE, SET, JournalMark, Op

from .policies import POLICY_NAMES, make_policy
from .store_suite import StoreSuite
from .support import unique

__all__ = ["KeyValueStoreSuite"]

NESTED = {"list": [1, 2.5, "three", None, True], "obj": {"deep": {"deeper": ["é", "🙂"]}}}


def dumps(value: Any) -> bytes:
    return cw.JSONSerializer().dumps(value)


class KeyValueStoreSuite(StoreSuite):
    """:class:`StoreSuite` plus what key/value stores add.

    A store declares what it is with class attributes of the test class (see the testing
    guide): ``has_tables`` (False for a store without a table name to check, such as a
    ``CallbackStore``), ``key_limits``, ``refuses_lone_surrogates`` (False for a store
    that keeps any ``str`` key, a dict does), and ``StoreSuite.records_marks``."""

    #: whether the store keeps a table (whose name is validated)
    has_tables: ClassVar[bool] = True
    #: the longest keys the store declares: (max_key_chars, max_key_bytes)
    key_limits: ClassVar[tuple[int | None, int | None]] = (None, None)
    #: whether keys with lone surrogates name no row (every SQL store; a dict takes them)
    refuses_lone_surrogates: ClassVar[bool] = True

    def needs_tables(self) -> None:
        if not self.has_tables:
            pytest.skip("this store has no table")

    def test_odd_values_round_trip(self, store: Any) -> None:
        items = {"a": 1, "b": "text", "n": NESTED, "l": [NESTED], "f": 1.25, "t": True}
        store.save_many(items)
        assert store.load_many(list(items)) == items

    def test_keys_are_exact(self, store: Any) -> None:
        # Case and trailing spaces make different keys (MySQL's default collations merge them).
        store.save_many({"a": 1, "A": 2, "a ": 3, "é": 4, "e": 5})
        assert store.load_many(["a", "A", "a ", "é", "e"]) == {
            "a": 1, "A": 2, "a ": 3, "é": 4, "e": 5
        }

    def test_none_value_is_not_a_missing_key(self, store: Any) -> None:
        store.save_many({"n": None})
        assert store.load("n", default="absent") is None
        assert store.load("missing", default="absent") == "absent"
        assert store.load_many(["n", "x"]) == {"n": None}

    def test_namespaces_are_isolated(self, store: Any) -> None:
        store.save_many({"k": "default"})
        store.save_many({"k": "views", "only": 1}, namespace="views")
        assert store.load("k") == "default"
        assert store.load("k", namespace="views") == "views"
        assert store.load("only") is None
        assert store.load_many(["k", "only"], namespace="views") == {"k": "views", "only": 1}
        store.delete_many(["k"], namespace="views")
        assert store.load("k") == "default"
        assert store.load("k", namespace="views") is None

    def test_add_ops_sum(self, store: Any) -> None:
        first = store.apply([Op("", "n", ADD, dumps(5), 5, 5)])
        assert first[0].value == 5
        second = store.apply([Op("", "n", ADD, dumps(8), 3, 8),
                              Op("", "m", ADD, dumps(-2), -2, -2)])
        assert [r.value for r in second] == [8, -2]
        assert store.load_many(["n", "m"]) == {"n": 8, "m": -2}
        store.save_many({"n": 100})
        assert store.apply([Op("", "n", ADD, dumps(101), 1, 101)])[0].value == 101

    def test_add_to_a_non_integer_is_a_store_error(self, store: Any) -> None:
        if not getattr(store, "atomic_add", True):
            pytest.skip("without atomic adds (a CallbackStore without add_many) counters "
                        "reach the store as absolute values: it never adds to a value")
        store.save_many({"s": "text", "f": 1.5, "b": True, "x": 1})
        for key in ("s", "f", "b") if store.versioned else ("s",):
            with pytest.raises(cw.StoreError):
                store.apply([Op("", key, ADD, dumps(1), 1, 1)])
        if store.versioned:
            # The batch is one transaction: nothing of it lands.
            with pytest.raises(cw.StoreError):
                store.apply([Op("", "x", SET, dumps(2), 0, 2), Op("", "s", ADD, dumps(1), 1, 1)])
            assert store.load("x") == 1
        assert store.load("s") == "text"

    def test_concurrent_adds_from_two_stores_sum(self, store: Any) -> None:
        if not store.versioned:
            pytest.skip("a CallbackStore's add_many is as atomic as the user's callback")
        stores = [store, self.new_store()]
        errors: list[BaseException] = []

        def work(s: Any) -> None:
            try:
                for _ in range(15):
                    s.apply([Op("", "hits", ADD, dumps(0), 1, 0)])
            except BaseException as exc:  # noqa: BLE001 - the test thread fails with it
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(s,)) for s in stores for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert store.load("hits") == 60

    def test_journal_marks_name_namespaces(self, store: Any) -> None:
        jid = unique("journal")
        store.apply([Op("views", "b", SET, dumps(2), 0, 2)], journal=JournalMark(jid, 1, [2]))
        expected = (1, {("views", "b"): 2}) if self.records_marks else (0, {})
        assert store.applied_state(jid) == expected

    def test_a_bad_table_name_is_a_config_error(self, store: Any) -> None:
        self.needs_tables()
        for bad in ("x;y", "1abc", "a b", 'a"b', ""):
            with pytest.raises(cw.ConfigError):
                self.new_store(table=bad)

    def test_a_table_name_with_a_trailing_newline_is_refused(self, store: Any) -> None:
        # issue 10 item 15: "$" of re.match also matches before a final "\n"
        self.needs_tables()
        for bad in (self.table + "\n", "\n", self.table + "\r\n"):
            with pytest.raises(cw.ConfigError, match="not a valid identifier"):
                self.new_store(table=bad)

    def test_a_mixed_case_table_name_works_end_to_end(self, store: Any) -> None:
        # issue 10 item 5
        self.needs_tables()
        table = self.table + "_BlogUsers"  # starts with the prefix the teardown drops
        mixed = self.new_store(table=table)
        first = mixed.apply([Op("", "a", SET, dumps(1), 0, 1), Op("", "n", ADD, dumps(2), 2, 2)])
        assert [r.value for r in first] == [None, 2]
        assert mixed.load_many(["a", "n"]) == {"a": 1, "n": 2}
        jid = unique("journal")
        later = mixed.apply([Op("", "a", SET, dumps(3), 0, 3), Op("", "n", DELETE)],
                            journal=JournalMark(jid, 1, [2, 3]))
        assert mixed.applied_state(jid) == (1, {("", "a"): 2, ("", "n"): 3})
        assert mixed.fetch("", ["a"])["a"].version == later[0].version > first[1].version
        # Reopening finds the same table (and its version counter) instead of a new one.
        again = self.new_store(table=table)
        assert again.load_many(["a", "n"]) == {"a": 3}
        assert again.apply([Op("", "b", SET, dumps(4), 0, 4)])[0].version > later[1].version

    def test_keys_the_store_cannot_keep_are_invalid_writes(self, store: Any) -> None:
        # issue 10 item 3: such keys failed at every retry of a write-back flusher
        chars, size = self.key_limits
        assert (store.max_key_chars, store.max_key_bytes) == (chars, size)
        too_long = []
        if chars is not None:
            too_long.append("k" * (chars + 1))
            store.save_many({"é" * chars: "longest"})
            assert store.load("é" * chars) == "longest"
        if size is not None and (chars is None or chars * 4 > size):
            too_long.append("é" * (size // 2) + "k")
            store.save_many({"é" * (size // 2): "longest"})
            assert store.load("é" * (size // 2)) == "longest"
        if self.refuses_lone_surrogates:
            too_long.append("lone \ud800 surrogate")
            assert store.fetch("", ["lone \ud800 surrogate", "ok"]) == {}, "names no row"
        for key in too_long:
            with pytest.raises(cw.InvalidWriteError):
                store.apply([Op("", "ok", SET, dumps(1), 0, 1), Op("", key, SET, dumps(2), 0, 2)])
        assert store.load("ok") is None, "a refused batch wrote nothing"

    @pytest.mark.parametrize("policy", POLICY_NAMES)
    def test_counters_and_namespaces_through_a_cache(self, store: Any, policy: str) -> None:
        with cw.Cache(store=store, policy=make_policy(policy)) as cache:
            cache.set("a", {"x": [1, 2]})
            cache.set("c", None)
            for _ in range(3):
                cache.incr("n")
            assert cache.incr("n", 5) == 8
            views = cache.namespace("views")
            views.set("a", "in views")
            assert views.get("a") == "in views"
            assert cache.get("a") == {"x": [1, 2]}
            cache.flush(timeout=10)
            assert store.load_many(["a", "c", "n"]) == {"a": {"x": [1, 2]}, "c": None, "n": 8}
            assert store.load("a", namespace="views") == "in views"
            assert cache.incr("n", -10) == -2
            cache.flush(timeout=10)
            assert store.load("n") == -2
