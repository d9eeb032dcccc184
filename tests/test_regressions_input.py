"""Bad input is refused at the call that makes it (issue 10 items 3 and 15)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw
from conftest import DictStore


def _limited_store(limit: int) -> DictStore:
    dict_store = DictStore()
    dict_store.store.max_key_bytes = limit  # type: ignore[attr-defined]
    return dict_store


@pytest.mark.parametrize("write", [
    lambda c, k: c.set(k, 1),
    lambda c, k: c.set_many({"ok": 1, k: 1}),
    lambda c, k: c.delete(k),
    lambda c, k: c.delete_many(["ok", k]),
    lambda c, k: c.incr(k),
])
def test_a_key_longer_than_the_store_takes_is_refused_at_the_call(
        make_policy: Callable[[], Any], write: Callable[[Any, str], None]) -> None:
    # issue 10 item 3: write-back accepted a key the store could never take, then retried
    # it forever (and held the process's exit).
    dict_store = _limited_store(8)
    with cw.Cache(store=dict_store.store, policy=make_policy()) as cache:
        with pytest.raises(cw.InvalidWriteError, match="at most 8"):
            write(cache, "k" * 9)
        with pytest.raises(cw.InvalidWriteError, match="at most 8"):
            write(cache, "é" * 5)  # 5 characters, 10 bytes
        assert cache.pending() == 0
        cache.set("k" * 8, "fits")
        cache.flush()
        assert dict_store.data == {"k" * 8: "fits"}


@pytest.mark.parametrize("key", ["\ud800", "a\udfffb"])
def test_a_key_with_a_lone_surrogate_is_refused(make_policy: Callable[[], Any], key: str,
                                                tmp_path: Path) -> None:
    # issue 10 item 15: such a key was accepted; the store could never encode it.
    with cw.Cache(store=cw.SQLiteStore(tmp_path / "a.db"), policy=make_policy()) as cache:
        with pytest.raises(cw.InvalidKeyError, match="lone surrogate"):
            cache.set(key, 1)
        with pytest.raises(cw.InvalidKeyError, match="lone surrogate"):
            cache.get(key)
        assert cache.pending() == 0


@pytest.mark.parametrize("name", ["views\n", "a b", "", "x" * 65])
def test_a_bad_namespace_name_is_refused(tmp_path: Path, name: str) -> None:
    # issue 10 item 15: a trailing newline passed the check ("$" matches before it).
    with cw.Cache(store=cw.SQLiteStore(tmp_path / "a.db")) as cache, \
            pytest.raises(cw.ConfigError, match="namespace name"):
        cache.namespace(name)


def test_the_exit_flush_is_bounded_and_says_what_was_left(tmp_path: Path) -> None:
    # issue 10 item 3: with a store that never takes the writes, the exit hook held the
    # process for 30 s and said nothing useful.
    child = textwrap.dedent("""
        import cacheway as cw
        import cacheway.cache
        cacheway.cache.EXIT_FLUSH_TIMEOUT = 0.5
        def save(items):
            raise ConnectionError("down")
        store = cw.CallbackStore(load_many=lambda keys: {}, save_many=save,
                                 delete_many=save)
        cache = cw.Cache(store=store, policy=cw.WriteBack(max_delay=0.01))
        cache.set("a", 1)
        cache.set("b", 2)
        print("exiting", flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "exiting" in proc.stdout
    assert "could not flush within 0.5 s" in proc.stderr
    assert "2 entries are still dirty" in proc.stderr
    assert "they are lost (no journal)" in proc.stderr
