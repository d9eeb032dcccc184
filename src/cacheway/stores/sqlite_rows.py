"""Kept for imports written before row mode moved: :mod:`cacheway.stores.rows` (RowSpec)
and :mod:`cacheway.stores.sqlite.rows` (SQLiteRows)."""

from .rows import RowSpec, canonical_int
from .sqlite.rows import SQLiteRows

__all__ = ["RowSpec", "SQLiteRows", "canonical_int"]
