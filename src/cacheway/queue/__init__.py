"""Distributed write-behind on Redis Streams (``WriteBack(queue="redis://...")``).

Not built yet: opening a cache with ``queue=`` raises :class:`~cacheway.ConfigError`.
"""

from __future__ import annotations

from typing import Any

from ..engine.read import Engine
from ..errors import ConfigError

__all__ = ["QueueWriteBackEngine"]


class QueueWriteBackEngine(Engine):
    """Placeholder until the queue engine lands: refuses at construction."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise ConfigError("WriteBack(queue=...) (distributed write-behind) is not "
                          "available yet in this version of cacheway")
