"""SQLAlchemyStore: any database SQLAlchemy 2 speaks to (MySQL/MariaDB, PostgreSQL,
SQLite, ...). ``store.py`` holds the store, ``engine.py`` the engine built from a URL,
``kv.py`` and ``rows.py`` the two mappings of keys to SQL, ``upsert.py`` each dialect's
upsert, ``marks.py`` the version counter and journal marks, ``versions.py`` versioned
batches."""

from .store import SAMapping, SQLAlchemyStore

__all__ = ["SAMapping", "SQLAlchemyStore"]
