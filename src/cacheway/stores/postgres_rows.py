"""Kept for imports written before row mode moved: :mod:`cacheway.stores.postgres.rows`."""

from .postgres.rows import RowMapper

__all__ = ["RowMapper"]
