"""Factories of one store shared by several caches (or processes) of a test: each test
gets a fresh SQLite file or a fresh table on the machine's PostgreSQL / MariaDB, and
every call of the factory opens another store on it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import cacheway as cw
from services import MARIADB_URL, POSTGRES_DSN, require, unique

__all__ = ["SHARED_STORES"]


def _sqlite(tmp_path: Path) -> Callable[[], Any]:
    path = tmp_path / "shared.db"
    return lambda: cw.SQLiteStore(path)


def _postgres(tmp_path: Path) -> Callable[[], Any]:
    require("postgresql")
    table = unique("cwx")
    return lambda: cw.PostgresStore(POSTGRES_DSN, table=table)


def _mariadb(tmp_path: Path) -> Callable[[], Any]:
    require("mariadb")
    table = unique("cwx")
    return lambda: cw.SQLAlchemyStore(MARIADB_URL, table=table)


#: name -> (tmp_path -> a factory of stores on one database)
SHARED_STORES: dict[str, Callable[[Path], Callable[[], Any]]] = {
    "sqlite": _sqlite, "postgres": _postgres, "mariadb": _mariadb}
