"""cacheway: write-through, write-back and write-around caching in front of a database.

>>> import cacheway as cw
>>> cache = cw.Cache(store=cw.SQLiteStore(":memory:"), policy=cw.WriteBack(max_delay=0.1))
>>> cache.set("k", [1, 2]); cache.get("k")
[1, 2]
>>> cache.close()
"""

from __future__ import annotations

from . import metrics as metrics  # cw.metrics.PrometheusCollector (no extra imported)
from ._urls import open
from .aio import AsyncCache, AsyncCallbackStore, AsyncNamespace, open_async
from .backends.memory import MemoryBackend
from .backends.redis import RedisBackend
from .backends.two_level import TwoLevelBackend
from .cache import Cache, Namespace
from .errors import (
    BackendError,
    Backpressure,
    CachewayError,
    ClosedError,
    ConfigError,
    InvalidKeyError,
    InvalidWriteError,
    JournalError,
    SerializationError,
    StaleMarkError,
    StoreError,
)
from .policies import Policy, Retry, WriteAround, WriteBack, WriteThrough
from .serializers import JSONSerializer, MsgpackSerializer, PickleSerializer, Serializer
from .stats import Stats
from .stores.callback import CallbackStore
from .stores.postgres import PostgresStore
from .stores.sqlalchemy import SQLAlchemyStore
from .stores.sqlite import SQLiteStore
from .writeback.journal_files import JournalInUse

__version__ = "0.1.0"

__all__ = [
    "AsyncCache",
    "AsyncCallbackStore",
    "AsyncNamespace",
    "BackendError",
    "Backpressure",
    "Cache",
    "CachewayError",
    "CallbackStore",
    "ClosedError",
    "ConfigError",
    "InvalidKeyError",
    "InvalidWriteError",
    "JSONSerializer",
    "JournalError",
    "JournalInUse",
    "MemoryBackend",
    "MsgpackSerializer",
    "Namespace",
    "PickleSerializer",
    "Policy",
    "PostgresStore",
    "RedisBackend",
    "Retry",
    "SQLAlchemyStore",
    "SQLiteStore",
    "SerializationError",
    "Serializer",
    "StaleMarkError",
    "Stats",
    "StoreError",
    "TwoLevelBackend",
    "WriteAround",
    "WriteBack",
    "WriteThrough",
    "open",
    "open_async",
]
