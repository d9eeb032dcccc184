"""Kept for imports written before row mode moved: :mod:`cacheway.stores.sqlalchemy.rows`."""

from .sqlalchemy.rows import SQLAlchemyRows

__all__ = ["SQLAlchemyRows"]
