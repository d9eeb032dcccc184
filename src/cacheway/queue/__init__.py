"""Distributed write-behind on Redis Streams (``WriteBack(queue="redis://...")``).

:class:`QueueWriteBackEngine` (:mod:`.engine`) accepts writes into partitioned streams;
:class:`Consumer` (:mod:`.consumer`) applies them to the store, in an app process
(``flush_in_process=True``) or in ``cacheway worker``. :mod:`.layout` names the Redis
keys, :mod:`.scripts` holds the Lua, :mod:`.status` reads each partition's depth and lag.
"""

from __future__ import annotations

from .consumer import Consumer
from .engine import QueueWriteBackEngine
from .layout import Names
from .status import PartitionStatus, queue_status

__all__ = ["Consumer", "Names", "PartitionStatus", "QueueWriteBackEngine", "queue_status"]
