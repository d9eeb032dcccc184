"""PostgresStore: PostgreSQL as the store, on psycopg 3 and psycopg_pool. ``store.py``
holds the store, ``run.py`` the pool and deadlines, ``kv.py`` and ``rows.py`` the two
mappings of keys to SQL (imported once the driver was found), ``sql.py`` their
queries, ``versions.py`` versioned writes, ``helpers.py`` the small pieces.

>>> store = PostgresStore("postgresql://postgres@127.0.0.1/test", table="doctest_kv")
... # doctest: +SKIP
>>> store.save_many({"a": {"n": 1}}); store.load("a")  # doctest: +SKIP
{'n': 1}
"""

from .store import LOCK_CLASS, PgMapping, PostgresStore

__all__ = ["LOCK_CLASS", "PgMapping", "PostgresStore"]
