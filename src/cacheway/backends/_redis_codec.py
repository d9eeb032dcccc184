"""Values to RedisBackend entries and back (the header layout is in ``redis_format``).

>>> codec = Codec("cw:", None)
>>> raw = codec.entry([1, 2], None, 5)
>>> codec.decode("k", raw), codec.decode("k", codec.entry("v", None, None))
([1, 2], 'v')
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ..serializers import JSONSerializer, Serializer
from .base import MISS
from .redis_format import HLEN, LEASE, NOT_FOUND, TOMBSTONE, VALUE, VALUE0, header

__all__ = ["Codec", "loads_of"]

log = logging.getLogger("cacheway")


def loads_of(serializer: Serializer) -> Callable[[bytes], Any]:
    """The decoder to call per value."""
    # Every decoder failure is caught here anyway, so the stock JSON serializer's
    # wrapper (which only converts orjson's errors) can be skipped: a Python call per
    # value is a visible share of an MGET of small values.
    if type(serializer) is JSONSerializer and getattr(serializer, "_orjson", False):
        import orjson  # present: the serializer uses it

        return orjson.loads
    return serializer.loads


class Codec:
    """The serializer of one RedisBackend (``serializer``, or JSON until the cache binds
    its own) and its count of entries that were not ours or failed to decode."""

    def __init__(self, prefix: str, serializer: Serializer | None) -> None:
        self._prefix = prefix
        self.serializer: Serializer = serializer if serializer is not None else JSONSerializer()
        self._fixed = serializer is not None
        self.loads = loads_of(self.serializer)
        self.decode_errors = 0
        self._lock = threading.Lock()

    def bind(self, serializer: Serializer) -> None:
        """Use the cache's serializer, unless one was given to the constructor."""
        if not self._fixed:
            self.serializer = serializer
            self.loads = loads_of(serializer)

    def bad_entry(self, key: str, why: str) -> Any:
        """Count (and log the first) entry that cannot be decoded; it reads as MISS."""
        with self._lock:
            self.decode_errors += 1
            first = self.decode_errors == 1
        if first:  # once per backend: garbage tends to come in floods
            log.warning(
                "cacheway: Redis key %r holds an entry that cannot be decoded (%s); "
                "treating it as a miss (further decode errors are only counted)",
                self._prefix + key, why,
            )
        return MISS

    def decode(self, key: str, raw: bytes) -> Any:
        """The value ``raw`` holds, or MISS (a marker, or something that is not ours)."""
        if len(raw) < HLEN:
            return self.bad_entry(key, "shorter than the header")
        flag = raw[8]
        if flag == VALUE:
            try:
                return self.loads(raw[HLEN:])
            except Exception as exc:  # noqa: BLE001 - any decoder failure is a miss, never a crash
                return self.bad_entry(key, f"{type(exc).__name__}: {exc}"[:200])
        if (flag == TOMBSTONE and len(raw) == HLEN) or flag in (LEASE, NOT_FOUND):
            return MISS
        return self.bad_entry(key, f"unknown header flag {flag}")

    def entry(self, value: Any, payload: bytes | None, version: int | None) -> bytes:
        """The bytes to store for ``value`` (``payload``: its serialized form, if known)."""
        if payload is None:
            payload = self.serializer.dumps(value)
        if not version:
            return VALUE0 + payload
        return header(version, VALUE) + payload
