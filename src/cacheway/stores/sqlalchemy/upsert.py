"""The one place that knows each dialect's upsert (INSERT merging into an existing row):
``ON DUPLICATE KEY UPDATE`` on MySQL/MariaDB, ``ON CONFLICT`` on PostgreSQL and SQLite,
none elsewhere (callers then update, and insert where nothing matched)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy as sa

__all__ = ["Merge", "dialect_kind", "greatest", "newer", "upsert"]

#: How a column merges: ``merge(old column, new value) -> SQL expression``.
Merge = Callable[[Any, Any], Any]


def dialect_kind(name: str) -> str:
    """"mysql" (MySQL and MariaDB), "postgresql", "sqlite", or "other".

    >>> dialect_kind("mariadb"), dialect_kind("postgresql"), dialect_kind("mssql")
    ('mysql', 'postgresql', 'other')
    """
    if name in ("mysql", "mariadb"):
        return "mysql"
    return name if name in ("postgresql", "sqlite") else "other"


def newer(old: Any, new: Any) -> Any:
    """The merge that takes the inserted value."""
    return new


def greatest(kind: str) -> Merge:
    """The merge that keeps the larger value (SQLite's two-argument ``max``)."""
    import sqlalchemy as sa_

    return sa_.func.max if kind == "sqlite" else sa_.func.greatest


def upsert(kind: str, table: sa.Table, merge: Mapping[str, Merge],
           conflict: Sequence[Any] | None = None) -> Any:
    """An INSERT into ``table`` that merges the columns of ``merge`` into the row it
    conflicts with on ``conflict`` (default: the primary key), or None where the
    dialect ``kind`` has no upsert. With nothing to merge the existing row is kept."""
    target = list(conflict) if conflict is not None else list(table.primary_key.columns)
    if kind == "mysql":
        from sqlalchemy.dialects.mysql import insert as mysql_insert

        ins = mysql_insert(table)
        # With nothing to merge, "key = key" keeps the row as it is.
        sets = ({c: f(table.c[c], ins.inserted[c]) for c, f in merge.items()} if merge
                else {target[0].name: target[0]})
        return ins.on_duplicate_key_update(sets)
    if kind not in ("postgresql", "sqlite"):
        return None
    from sqlalchemy.dialects import postgresql, sqlite

    dialect: Any = postgresql if kind == "postgresql" else sqlite
    conflicting = dialect.insert(table)
    if not merge:
        return conflicting.on_conflict_do_nothing(index_elements=target)
    return conflicting.on_conflict_do_update(
        index_elements=target,
        set_={c: f(table.c[c], conflicting.excluded[c]) for c, f in merge.items()},
    )
