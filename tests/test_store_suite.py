"""The generic store suites of ``cacheway.testing`` on every store here: the key/value
stores (SQLite, PostgreSQL, SQLAlchemy on MariaDB, PostgreSQL and SQLite, CallbackStore)
and the row stores (SQLite, PostgreSQL, SQLAlchemy on SQLite and MariaDB). A store on a
server that is down skips (or, with CACHEWAY_REQUIRE_SERVICES set, fails) only its own
class. Every test gets its own table, dropped at teardown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import pytest

import cacheway as cw
from cacheway.testing import KeyValueStoreSuite, StoreSuite
from pairs import KV_STORES, StoreMaker, drop_tables, pg_sa_url

__all__ = ["STORES", "Harness", "drop_tables", "pg_sa_url"]  # other modules import these


class Harness:
    """Stores of one kind for one test (test_store_versions.py parametrises over them)."""

    def __init__(self, kind: str, request: pytest.FixtureRequest) -> None:
        self.kind = kind
        self.request = request
        self.maker = StoreMaker(kind, request.getfixturevalue("tmp_path"))
        self.table = self.maker.table
        self.data = self.maker.data  # the CallbackStore's dict

    def fixture(self, name: str) -> Any:
        return self.request.getfixturevalue(name)

    def store(self, table: str | None = None) -> Any:
        """A store on this test's table (or ``table``); closed at teardown."""
        return self.maker.make(table)

    @property
    def has_tables(self) -> bool:
        return self.kind != "callback"

    def cleanup(self) -> None:
        self.maker.cleanup()


STORES: dict[str, Callable[[Harness, str], Any]] = {
    kind: (lambda h, table: h.store(table)) for kind in KV_STORES
}
# test_store_versions.py disposes these at its end; drop_tables keeps no engines now.
_ENGINES: dict[str, Any] = {}


class _Kind:
    kind: ClassVar[str]
    _maker: StoreMaker | None = None

    def maker(self) -> StoreMaker:
        if self._maker is None or self._maker.table != self.table:  # type: ignore[attr-defined]
            self._maker = StoreMaker(self.kind, self.tmp_path, self.table)  # type: ignore[attr-defined]
        return self._maker

    def make_store(self, table: str) -> Any:
        return self.maker().make(table)

    def drop_tables(self, table: str) -> None:
        self.maker().cleanup()

    def value(self, i: int) -> Any:
        return self.maker().value(i)


class TestSQLiteStore(_Kind, KeyValueStoreSuite):
    kind = "sqlite"


class TestPostgresStore(_Kind, KeyValueStoreSuite):
    kind = "postgres"
    key_limits = (None, 2000)  # text: the btree entry limit only


class TestSQLAlchemyMariaDB(_Kind, KeyValueStoreSuite):
    kind = "sqlalchemy-mariadb"
    key_limits = (255, None)  # VARCHAR(255) utf8mb4


class TestSQLAlchemyPostgreSQL(_Kind, KeyValueStoreSuite):
    kind = "sqlalchemy-postgresql"
    key_limits = (255, 2000)  # VARCHAR(255), and the btree entry limit


class TestSQLAlchemySQLite(_Kind, KeyValueStoreSuite):
    kind = "sqlalchemy-sqlite"
    key_limits = (255, None)  # SQLite does not enforce it; the store does


class TestCallbackStore(_Kind, KeyValueStoreSuite):
    kind = "callback"
    has_tables = False
    records_marks = False
    refuses_lone_surrogates = False  # a callback store's dict takes any str

    def test_namespaces_reach_the_callbacks_as_prefixes(self, store: Any) -> None:
        store.save_many({"k": "default"})
        store.save_many({"only": 1}, namespace="views")
        assert self.maker().data == {"k": "default", "views:only": 1}


class TestSQLiteRowStore(_Kind, StoreSuite):
    kind = "sqlite-rows"
    rows = True


class TestPostgresRowStore(_Kind, StoreSuite):
    kind = "postgres-rows"
    rows = True


class TestSQLAlchemySQLiteRowStore(_Kind, StoreSuite):
    kind = "sqlalchemy-sqlite-rows"
    rows = True


class TestSQLAlchemyMariaDBRowStore(_Kind, StoreSuite):
    kind = "sqlalchemy-mariadb-rows"
    rows = True


def test_validate_identifier_takes_the_whole_string() -> None:
    # issue 10 item 15
    from cacheway.stores.base import validate_identifier

    assert validate_identifier("Blog_Users") == "Blog_Users"
    for bad in ("users\n", "users\n\n", "\nusers", "us\ners", "x" * 64):
        with pytest.raises(cw.ConfigError, match="not a valid identifier"):
            validate_identifier(bad)


# -- stores and backends from URLs (cw.open) ----------------------------------------------
@pytest.mark.parametrize("url", [
    "postgresql://[::1/test",                      # an unclosed IPv6 bracket
    "postgresql://postgres:s3cret@[::1/test",
    "postgresql://postgres@127.0.0.1/test\x00",    # libpq would cut the DSN at the NUL
    "mysql+pymysql://root:s3cret@127.0.0.1:xx/test",  # a port that is not a number
    "mysql+pymysql://root@[::1/test",
])
def test_a_malformed_store_url_is_a_config_error(url: str) -> None:
    # issue 10 item 15: these raised a bare ValueError (or opened a default database)
    with pytest.raises(cw.ConfigError) as info:
        cw.open(store=url)
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:xx/0",
    "redis://[::1/0",
    "redis+l1://127.0.0.1:6379/0?l1_ttl=soon",
])
def test_a_malformed_backend_url_is_a_config_error(url: str, tmp_path: Any) -> None:
    # issue 10 item 15
    with pytest.raises(cw.ConfigError):
        cw.open(store=f"sqlite:///{tmp_path / 'x.db'}", backend=url)
