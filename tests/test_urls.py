"""URL scheme registries of ``cacheway.open`` (``cacheway._urls``): built-in schemes, one
line to add a store or backend, and what a URL-built two-level backend owns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import SplitResult

import pytest

import cacheway as cw
from cacheway import _urls
from cacheway._urls import (
    BACKEND_SCHEMES,
    STORE_SCHEMES,
    backend_from_url,
    register_backend_scheme,
    register_store_scheme,
    store_from_url,
)
from cacheway.backends.two_level import TwoLevelBackend
from conftest import wait_until
from services import unique


@pytest.fixture
def registries() -> Iterator[None]:
    """Registrations made by a test are undone after it."""
    stores, backends = dict(STORE_SCHEMES), dict(BACKEND_SCHEMES)
    yield
    STORE_SCHEMES.clear()
    STORE_SCHEMES.update(stores)
    BACKEND_SCHEMES.clear()
    BACKEND_SCHEMES.update(backends)


def test_built_in_schemes() -> None:
    assert {"sqlite", "postgresql", "postgres", "mysql", "mariadb", "+"} <= set(STORE_SCHEMES)
    assert {"memory", "redis", "rediss", "unix", "redis+l1", "rediss+l1"} <= set(
        BACKEND_SCHEMES)


def test_a_new_backend_is_one_registry_line(registries: None) -> None:
    seen: list[tuple[str, SplitResult, dict[str, str]]] = []

    def tiny(url: str, parts: SplitResult, params: dict[str, str]) -> cw.MemoryBackend:
        seen.append((url, parts, dict(params)))
        return cw.MemoryBackend(max_entries=int(params.pop("n")))

    register_backend_scheme("tiny", tiny)
    backend = backend_from_url("TINY://host?n=3")  # schemes are case-insensitive
    assert isinstance(backend, cw.MemoryBackend)
    assert backend.max_entries == 3
    assert seen[0][0] == "TINY://host?n=3"
    assert seen[0][1].netloc == "host"
    assert seen[0][2] == {"n": "3"}
    with pytest.raises(cw.ConfigError, match="'tiny' is taken"):
        register_backend_scheme("tiny", tiny)
    register_backend_scheme("tiny", tiny, replace=True)


def test_a_new_store_is_one_registry_line(registries: None, tmp_path: Any) -> None:
    path = str(tmp_path / "x.db")

    def mine(url: str, parts: SplitResult, params: dict[str, str]) -> cw.SQLiteStore:
        return cw.SQLiteStore(path, table=params.pop("table", "cacheway"))

    register_store_scheme("mine", mine)
    store = store_from_url("mine://anything", table="t1")
    try:
        assert isinstance(store, cw.SQLiteStore)
    finally:
        store.close()
    with cw.open(store="mine://x", policy="write-through") as cache:
        cache.set("k", 1)
        assert cache.get("k") == 1


def test_driver_schemes_fall_back_to_the_plus_entry(registries: None) -> None:
    def fake(url: str, parts: SplitResult, params: dict[str, str]) -> Any:
        raise cw.ConfigError(f"fake got {parts.scheme}")

    register_store_scheme("+", fake, replace=True)
    with pytest.raises(cw.ConfigError, match=r"fake got postgresql\+psycopg"):
        store_from_url("postgresql+psycopg://h/db")
    with pytest.raises(cw.ConfigError, match="unknown store URL"):
        store_from_url("nosuch://x")


def test_unknown_schemes_name_the_registered_ones(registries: None) -> None:
    with pytest.raises(cw.ConfigError, match=r"use memory://, redis://.*\)$"):
        backend_from_url("nosuch://x")
    register_backend_scheme("tiny", lambda url, parts, params: cw.MemoryBackend())
    with pytest.raises(cw.ConfigError, match=r"\), tiny://$"):
        backend_from_url("nosuch://x")


@pytest.mark.parametrize("scheme", ["", "Upper", "1abc", "a b", "a:b"])
def test_bad_schemes_are_refused(registries: None, scheme: str) -> None:
    with pytest.raises(cw.ConfigError, match="scheme must be"):
        register_backend_scheme(scheme, lambda url, parts, params: cw.MemoryBackend())


def test_a_factory_must_be_callable(registries: None) -> None:
    with pytest.raises(cw.ConfigError, match="must be callable"):
        register_store_scheme("x", "not a function")  # type: ignore[arg-type]


@pytest.mark.services
def test_two_level_url_owns_its_l2(redis_url: str) -> None:
    prefix = f"{unique('urls')}:"
    backend = backend_from_url(f"{redis_url.replace('redis://', 'redis+l1://')}"
                               f"?prefix={prefix}&l1_max_entries=10")
    assert isinstance(backend, TwoLevelBackend)
    assert backend.owns_l2
    l2 = backend.l2
    cid = l2.client.client_id()
    watcher = cw.RedisBackend(redis_url, prefix=prefix)
    try:
        backend.close()  # closes the L2 it built, too
        assert wait_until(
            lambda: cid not in {int(c["id"]) for c in watcher.client.client_list()})
    finally:
        watcher.close()


def test_open_closes_what_it_built(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    closed: list[str] = []

    class Recording(cw.MemoryBackend):
        def close(self) -> None:
            closed.append("backend")
            super().close()

    monkeypatch.setitem(BACKEND_SCHEMES, "rec", lambda url, parts, params: Recording())
    with _urls.open(store=f"sqlite:///{tmp_path}/a.db", backend="rec://") as cache:
        cache.set("k", 1)
    assert closed == ["backend"]
