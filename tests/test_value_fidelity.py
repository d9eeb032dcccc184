"""Value fidelity through the cache (issue 10 item 4): what ``get`` returns is equal, with
the same types, from the cached copy, the dirty table and the store; a value that would
come back changed is refused at ``set`` and stores nothing; mutating an object after
``set`` changes nothing."""

from __future__ import annotations

import datetime
import math
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw

REFUSED: list[Any] = [
    (1, 2), {"t": (1, 2)}, {1: "a"}, 2**70, [2**70], datetime.date(2024, 1, 1),
    uuid.UUID(int=1), math.nan, [math.inf], "\ud800", {"s": "a\udfffb"}, {1, 2},
    object(),
]


def _type_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return ("dict", {k: _type_tree(v) for k, v in value.items()})
    if isinstance(value, list):
        return ("list", [_type_tree(v) for v in value])
    return (type(value).__name__, value)


@pytest.mark.parametrize("value", REFUSED, ids=[repr(v)[:20] for v in REFUSED])
def test_a_value_that_would_come_back_changed_is_refused_at_set(
        tmp_path: Path, make_policy: Callable[[], Any], value: Any) -> None:
    store = cw.SQLiteStore(tmp_path / "a.db")
    with cw.Cache(store=store, policy=make_policy()) as cache:
        cache.set("k", "before")
        with pytest.raises(cw.SerializationError):
            cache.set("k", value)
        with pytest.raises(cw.SerializationError):
            cache.set_many({"ok": 1, "k": value})
        assert cache.get("k") == "before"
        assert cache.get("ok") is None, "set_many kept part of a refused call"
        cache.flush()
        assert store.load("k") == "before"


VALUES: list[Any] = [
    {"a": [1, 2.0, True, None, "x"], "b": {"c": -0.0}}, [1, [2, [3]]], 2**63 - 1, 1.5,
    "héllo 𝄞", {"": {}}, [],
]


@pytest.mark.parametrize("value", VALUES, ids=[repr(v)[:20] for v in VALUES])
def test_reads_are_the_same_from_the_copy_the_dirty_table_and_the_store(
        tmp_path: Path, make_policy: Callable[[], Any], value: Any) -> None:
    store = cw.SQLiteStore(tmp_path / "a.db")
    backend = cw.MemoryBackend(max_entries=1)
    with cw.Cache(store=store, backend=backend, policy=make_policy()) as cache:
        cache.set("k", value)
        from_copy = cache.get("k")
        cache.set("other", 1)  # evicts k's copy: a pending write answers from the table
        from_table = cache.get("k")
        cache.flush()
        backend.clear()
        from_store = cache.get("k")
        expected = _type_tree(value)
        assert _type_tree(from_copy) == expected
        assert _type_tree(from_table) == expected
        assert _type_tree(from_store) == expected
        assert _type_tree(store.load("k")) == expected


def test_changing_an_object_after_set_changes_nothing(
        tmp_path: Path, make_policy: Callable[[], Any]) -> None:
    store = cw.SQLiteStore(tmp_path / "a.db")
    with cw.Cache(store=store, policy=make_policy()) as cache:
        row = {"tags": ["a"], "n": 1}
        cache.set("k", row)
        row["tags"].append("b")
        row["n"] = 2
        assert cache.get("k") == {"tags": ["a"], "n": 1}
        cache.flush()
        assert store.load("k") == {"tags": ["a"], "n": 1}
