"""Journal marks, the part every store shares (see :class:`~cacheway.stores.base.JournalMark`).

A store records, in the transaction of each batch, the journal's low water and, per key,
the last journal seq folded into the batch; each database writes them with its own SQL
(``sqlite/marks.py``, ``postgres/sql.py``, ``sqlalchemy/marks.py``). What they share is
here: the check of a mark against its batch, the last seq of each key, and how often the
rows at or under the low water are trimmed.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import ConfigError, StaleMarkError
from .base import JournalMark, Op

__all__ = ["TRIM_EVERY", "Trim", "check_fence", "check_mark", "last_seqs"]

#: Every this many marked batches of a store, the rows at or under the low water (which
#: say nothing a replay needs) are deleted in the batch's transaction.
TRIM_EVERY = 64


def check_mark(ops: Sequence[Op], mark: JournalMark) -> None:
    """ConfigError unless ``mark`` has one seq per op of the batch, or none (a mark of the
    low water alone: see ``StoreBase.low_water_marks``)."""
    if mark.seqs and len(mark.seqs) != len(ops):
        raise ConfigError(
            f"journal mark has {len(mark.seqs)} seqs for a batch of {len(ops)} ops")


def check_fence(mark: JournalMark, stored: int | None) -> None:
    """StaleMarkError if the store holds a low water above ``mark.after`` (``stored``:
    the low water read, locked, in the batch's transaction; None: no row yet).

    >>> check_fence(JournalMark("q:p0", 9, (), after=5), 5)
    >>> check_fence(JournalMark("q:p0", 9, (), after=5), 9)
    Traceback (most recent call last):
    ...
    cacheway.errors.StaleMarkError: journal 'q:p0': the store's low water is 9, past ...
    """
    if mark.after is not None and stored is not None and stored > mark.after:
        raise StaleMarkError(
            f"journal {mark.journal_id!r}: the store's low water is {stored}, past the "
            f"{mark.after} this batch follows (another writer applied it)")


def last_seqs(ops: Sequence[Op], mark: JournalMark) -> dict[tuple[str, str], int]:
    """{(namespace, key): the highest seq of the key in the batch}: one row per key
    (an upsert cannot touch a row twice).

    >>> from cacheway.stores.base import SET
    >>> last_seqs([Op("", "a", SET), Op("", "a", SET)], JournalMark("j", 0, [4, 5]))
    {('', 'a'): 5}
    """
    last: dict[tuple[str, str], int] = {}
    for op, seq in zip(ops, mark.seqs):
        k = (op.namespace, op.key)
        last[k] = max(seq, last.get(k, seq))
    return last


class Trim:
    """Counts a store's marked batches: :meth:`due` is True every :data:`TRIM_EVERY`th.

    >>> trim = Trim()
    >>> [trim.due() for _ in range(TRIM_EVERY)].count(True)
    1
    """

    __slots__ = ("_batches",)

    def __init__(self) -> None:
        self._batches = 0

    def due(self) -> bool:
        self._batches += 1
        return self._batches % TRIM_EVERY == 0
