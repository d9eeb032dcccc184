"""Lifecycle: caches left open are flushed at interpreter exit; close covers namespaces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import cacheway as cw


def test_atexit_flushes_a_write_back_cache_left_open(tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    code = (
        "import cacheway as cw\n"
        f"cache = cw.Cache(store=cw.SQLiteStore({str(db)!r}), "
        "policy=cw.WriteBack(max_delay=3600))\n"
        "views = cache.namespace('views')\n"
        "for i in range(100):\n"
        "    cache.set(f'k{i}', i)\n"
        "    views.incr('hits')\n"
        "assert cache.pending() > 0\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    store = cw.SQLiteStore(db)
    assert store.load_many([f"k{i}" for i in range(100)]) == {f"k{i}": i for i in range(100)}
    assert store.load("hits", namespace="views") == 100
    store.close()


def test_close_flushes_every_namespace_and_then_refuses_use(tmp_path: Path) -> None:
    store = cw.SQLiteStore(tmp_path / "app.db")
    cache = cw.Cache(store=store, policy=cw.WriteBack(max_delay=3600))
    views = cache.namespace("views", policy=cw.WriteBack(max_delay=3600), ttl=60)
    cache.set("a", 1)
    views.set("a", 2)
    assert cache.pending() == 2
    cache.close()
    assert store.load("a") == 1
    assert store.load("a", namespace="views") == 2
    with pytest.raises(cw.ClosedError):
        cache.set("a", 3)
    with pytest.raises(cw.ClosedError):
        views.get("a")
    cache.close()  # idempotent
    store.close()


def test_store_passed_in_stays_open_after_close(tmp_path: Path) -> None:
    store = cw.SQLiteStore(tmp_path / "app.db")
    with cw.Cache(store=store) as cache:
        cache.set("a", 1)
    assert store.load("a") == 1  # the caller's store still works
    store.close()


def test_open_closes_what_it_built(tmp_path: Path) -> None:
    cache = cw.open(store=f"sqlite:///{tmp_path / 'app.db'}", policy="write-back",
                    max_delay=0.01)
    cache.set("a", 1)
    store = cache.store
    cache.close()
    with pytest.raises(cw.ClosedError):
        store.load("a")


def test_namespace_asked_twice_is_the_same_view_and_conflicts_are_errors(tmp_path: Path
                                                                         ) -> None:
    with cw.Cache(store=cw.SQLiteStore(tmp_path / "app.db")) as cache:
        views = cache.namespace("views", ttl=60)
        assert cache.namespace("views") is views
        with pytest.raises(cw.ConfigError, match="already exists"):
            cache.namespace("views", ttl=5)
        with pytest.raises(cw.ConfigError, match="namespace name"):
            cache.namespace("bad:name")


def test_atexit_flushes_a_write_back_cache_whose_reference_was_dropped(tmp_path: Path
                                                                        ) -> None:
    db = tmp_path / "app.db"
    code = (
        "import gc, cacheway as cw\n"
        "def work():\n"
        f"    cache = cw.Cache(store=cw.SQLiteStore({str(db)!r}), "
        "policy=cw.WriteBack(max_delay=3600))\n"
        "    cache.set('k', 'v')\n"
        "work()\n"
        "gc.collect()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    store = cw.SQLiteStore(db)
    assert store.load("k") == "v"
    store.close()
