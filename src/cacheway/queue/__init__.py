"""Distributed write-behind on Redis Streams (``WriteBack(queue="redis://...")``).

:class:`QueueWriteBackEngine` (:mod:`.engine`) accepts writes into partitioned streams;
:class:`Consumer` (:mod:`.consumer`) applies them to the store, in an app process
(``flush_in_process=True``) or in ``cacheway worker``. :mod:`.layout` names the Redis
keys, :mod:`.scripts` holds the Lua.
"""

from __future__ import annotations

from .consumer import Consumer
from .engine import QueueWriteBackEngine
from .layout import Names

__all__ = ["Consumer", "Names", "QueueWriteBackEngine"]
