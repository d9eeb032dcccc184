"""The version counter and journal marks of SQLAlchemyStore (see
:mod:`cacheway.stores.marks`), shared by its key/value and row modes: ``m`` is the meta
table (name, value), ``a`` the applied table (journal, namespace, key, seq)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ...errors import StoreError
from ..base import JournalMark, Op
from ..marks import check_fence, last_seqs

if TYPE_CHECKING:
    import sqlalchemy as sa

__all__ = ["advance", "merge_max", "read_marks", "write_mark"]

VERSION_ROW = "version"


def advance(conn: sa.Connection, engine: sa.Engine, m: sa.Table, n: int) -> int:
    """Lock the version counter row, advance it by ``n``; the value before."""
    import sqlalchemy as sa_

    is_version = m.c.name == VERSION_ROW
    bump = sa_.update(m).where(is_version).values(value=m.c.value + n)
    # The UPDATE goes first: it takes the row lock (MySQL, PostgreSQL) or the write
    # lock (SQLite, whose driver opens the transaction only at a write), so the value
    # read back is the latest and no other batch can take the same versions.
    top: int | None
    if engine.dialect.update_returning:
        top = conn.execute(bump.returning(m.c.value)).scalar()
    else:
        conn.execute(bump)
        top = conn.execute(sa_.select(m.c.value).where(is_version).with_for_update()).scalar()
    if top is None:
        raise StoreError(
            f"the version counter row of {m.name!r} is missing; reopen the store to "
            "recreate it"
        )
    return int(top) - n


def merge_max(conn: sa.Connection, table: sa.Table, upsert: Any, rows: list[dict[str, Any]],
              column: str) -> None:
    """Insert ``rows``, keeping the larger ``column`` where a row exists: with the
    dialect's ``upsert`` when there is one, else update-or-insert row by row (writers
    are serialized by the version row, so that cannot race)."""
    import sqlalchemy as sa_

    if not rows:
        return
    if upsert is not None:
        conn.execute(upsert, rows)
        return
    col = table.c[column]
    new: Any = sa_.bindparam("new_" + column)
    pk = [c.name for c in table.primary_key.columns]
    match = sa_.and_(*(table.c[name] == sa_.bindparam("pk_" + name) for name in pk))
    stmt = sa_.update(table).where(match).values({column: sa_.case((col > new, col), else_=new)})
    for row in rows:
        params = {"pk_" + name: row[name] for name in pk}
        params["new_" + column] = row[column]
        if conn.execute(stmt, params).rowcount == 0:
            conn.execute(sa_.insert(table), [row])


def write_mark(conn: sa.Connection, m: sa.Table, a: sa.Table, upsert_meta: Any,
               upsert_applied: Any, ops: Sequence[Op], mark: JournalMark, trim: bool) -> None:
    """Record ``mark`` for the batch ``ops``; ``trim`` also drops the rows at or under
    the low water (they say nothing a replay needs)."""
    import sqlalchemy as sa_

    jid = mark.journal_id
    seqs = last_seqs(ops, mark)
    if mark.after is not None:
        # The fence: the low water read with a row lock (MySQL, PostgreSQL; SQLite's
        # write lock is held since the batch's first write), in the batch's transaction.
        stored = conn.execute(sa_.select(m.c.value).where(
            m.c.name == "journal:" + jid).with_for_update()).scalar()
        check_fence(mark, None if stored is None else int(stored))
    merge_max(conn, m, upsert_meta, [{"name": "journal:" + jid, "value": mark.low_water}],
              "value")
    merge_max(conn, a, upsert_applied, [
        {"journal": jid, "namespace": ns, "key": key, "seq": seq}
        for (ns, key), seq in seqs.items()], "seq")
    if trim:
        conn.execute(sa_.delete(a).where(a.c.journal == jid, a.c.seq <= mark.low_water))


def read_marks(conn: sa.Connection, m: sa.Table, a: sa.Table, journal_id: str
               ) -> tuple[int, dict[tuple[str, str], int]]:
    """(low water, {(namespace, key): last applied seq above it}) of a journal."""
    import sqlalchemy as sa_

    low_row = conn.execute(
        sa_.select(m.c.value).where(m.c.name == "journal:" + journal_id)).scalar()
    low = 0 if low_row is None else int(low_row)
    rows = conn.execute(sa_.select(a.c.namespace, a.c.key, a.c.seq).where(
        a.c.journal == journal_id, a.c.seq > low)).all()
    return low, {(ns, key): int(seq) for ns, key, seq in rows}
