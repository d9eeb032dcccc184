"""Which database errors of a write are permanent: repeating the write cannot help, so
the stores raise :class:`~cacheway.InvalidWriteError` for them (a write-back flusher
hands such an entry to ``on_dead_letter`` instead of retrying it forever).

Permanent: what the write holds does not fit the table. A value too long for its
column, a number out of range, text the column's type cannot parse or the database
cannot encode, a NUL character in PostgreSQL text, an index entry over the btree size
limit, a NOT NULL / CHECK / UNIQUE / FOREIGN KEY violation (row mode). Everything else
stays a plain ``StoreError`` and is retried: lost connections, timeouts, deadlocks and
serialization failures, a missing table, a full disk.
"""

from __future__ import annotations

import sqlite3

__all__ = ["is_permanent", "storable_text"]

# PostgreSQL SQLSTATE classes 22 (data exception) and 23 (integrity constraint
# violation), and 54000 (program limit exceeded: "index row size ... exceeds maximum").
_PG_CLASSES = ("22", "23")
_PG_STATES = frozenset({"54000"})

# MySQL/MariaDB error numbers a retry cannot fix. pymysql maps some of them to
# DataError/IntegrityError; the others (3140, 4025, ...) arrive as OperationalError.
_MYSQL_ERRNOS = frozenset({
    1048,  # ER_BAD_NULL_ERROR: column cannot be null
    1062,  # ER_DUP_ENTRY (a unique key other than the key column, in row mode)
    1264,  # ER_WARN_DATA_OUT_OF_RANGE
    1265,  # WARN_DATA_TRUNCATED
    1292,  # ER_TRUNCATED_WRONG_VALUE
    1364,  # ER_NO_DEFAULT_FOR_FIELD
    1366,  # ER_TRUNCATED_WRONG_VALUE_FOR_FIELD: incorrect string value
    1367,  # ER_ILLEGAL_VALUE_FOR_TYPE
    1406,  # ER_DATA_TOO_LONG
    1451, 1452,  # foreign key constraint fails
    1690,  # ER_DATA_OUT_OF_RANGE (BIGINT value is out of range)
    3140,  # ER_INVALID_JSON_TEXT (MySQL JSON columns)
    4025,  # ER_CONSTRAINT_FAILED (MariaDB CHECK constraints)
})

# PEP 249 classes that always describe the data, never the connection.
_DATA_CLASSES = frozenset({"DataError", "IntegrityError"})


def is_permanent(exc: BaseException) -> bool:
    """Whether ``exc``, a driver's error from a write (psycopg, pymysql, sqlite3, or
    what SQLAlchemy wraps: pass its ``.orig``), is about the data written."""
    if isinstance(exc, (TypeError, ValueError, OverflowError)):
        # A value the driver could not convert: a lone surrogate (UnicodeEncodeError),
        # an int over 64 bits, a str for a DATETIME column (SQLAlchemy's processors).
        return True
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_ERRNOS and (
            type(exc).__module__.split(".")[0] in ("pymysql", "MySQLdb", "mysql", "mariadb")):
        return True
    if isinstance(exc, sqlite3.Error):
        # SQLITE_TOOBIG (18): a string or blob over the database's length limit
        return (isinstance(exc, (sqlite3.DataError, sqlite3.IntegrityError))
                or getattr(exc, "sqlite_errorcode", None) == 18)
    if any(c.__name__ in _DATA_CLASSES for c in type(exc).__mro__):
        return True
    state = getattr(exc, "sqlstate", None)  # psycopg; pymysql has it too
    return isinstance(state, str) and (state[:2] in _PG_CLASSES or state in _PG_STATES)


def storable_text(text: str, nul: bool = True) -> bool:
    """Whether a database can hold ``text`` at all: valid Unicode (no lone surrogate)
    and, when ``nul`` is False (PostgreSQL), no NUL character."""
    if not nul and "\x00" in text:
        return False
    if text.isascii():
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
