"""PostgresStore: PostgreSQL as the store, on psycopg 3 and psycopg_pool. ``store.py``
holds the store, ``run.py`` the pool and deadlines, ``kv.py`` and ``rows.py`` the two
mappings of keys to SQL (imported once the driver was found), ``sql.py`` their
queries, ``versions.py`` versioned writes, ``helpers.py`` the small pieces."""

from .store import LOCK_CLASS, PgMapping, PostgresStore

__all__ = ["LOCK_CLASS", "PgMapping", "PostgresStore"]
