"""SQLiteStore: the embedded default store (stdlib ``sqlite3``, WAL mode, durable on
return). ``store.py`` holds the connections, ``kv.py`` and ``rows.py`` the two mappings
of keys to SQL, ``marks.py`` the journal marks, ``tx.py`` the transaction wrapper."""

from .store import SQLiteMapping, SQLiteStore

__all__ = ["SQLiteMapping", "SQLiteStore"]
