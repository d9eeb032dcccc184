"""What every write path of an engine checks before it accepts a write: the key (can the
store ever keep it?), the value (the store's validation, the serializer's fidelity), the
ttl (never longer than ``expire=``), a counter's delta and current value; and the
versions a shared backend's clock gives writes. A base of :class:`~.read.Engine`, which
sets the attributes declared here."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..core.keys import check_key, check_ttl
from ..errors import BackendError, ClosedError, ConfigError
from ..stores.base import ADD, SET, Op, StoreCapabilities
from ..stores.base import check_key as check_store_key
from .expiry import Expiry

__all__ = ["WriteChecks"]


class WriteChecks:
    """The checks of :mod:`this module <cacheway.engine.write_checks>`; an engine's."""

    namespace: str
    closed: bool
    ttl: float | None
    expiry: Expiry | None
    max_key: int | None
    nul_ok: bool
    store_caps: StoreCapabilities
    locks: list[threading.RLock]
    validate: Callable[[str, str, Any, int], Any] | None
    encode: Callable[[Any], tuple[bytes, Any]]
    _store_keys: bool
    _clock: Callable[[int], list[int]] | None

    def closed_error(self) -> ClosedError:
        raise NotImplementedError

    def backend_down(self, exc: BackendError) -> Any:
        raise NotImplementedError

    @staticmethod
    def stripe(bkey: str) -> int:
        raise NotImplementedError

    # -- what every write path checks -----------------------------------------------------
    def prepare(self, key: object, value: Any, ttl: object
                ) -> tuple[str, Any, bytes, float | None]:
        """What a write of ``value`` under ``key`` takes: the key checked (an ASCII key of
        at most ``max_key`` characters without NUL needs no closer look), the payload,
        the copy reads will answer with (value fidelity) and the ttl."""
        if key.__class__ is not str or not key.isascii() or (
                self.max_key is not None and len(key) > self.max_key) or (
                not self.nul_ok and "\x00" in key):
            self.check_write_key(key)
        if self.closed:
            raise self.closed_error()
        ttl_ = self.ttl if ttl is None else check_ttl(ttl)
        if self.expiry is not None:
            ttl_ = self.expiry.cap(ttl_)
        if self.validate is not None:
            value = self.validate(self.namespace, key, value, SET)  # type: ignore[arg-type]
        payload, copy = self.encode(value)
        return key, copy, payload, ttl_  # type: ignore[return-value]

    def versioned(self, ops: list[Op]) -> list[Op]:
        """``ops`` with versions from the shared backend's clock, when it has one (else
        as they are: the store stamps its own, and with Redis down order across
        processes is the store's)."""
        if self._clock is None or not ops:
            return ops
        try:
            versions = self._clock(len(ops))
        except BackendError as exc:
            self.backend_down(exc)
            return ops
        return [op._replace(version=v) for op, v in zip(ops, versions)]

    def check_write_key(self, key: object) -> str:
        """``key`` checked for a write: a str the store can keep (else InvalidKeyError,
        or InvalidWriteError for one this store cannot)."""
        k = check_key(key)
        if self._store_keys:
            check_store_key(self.store_caps, self.namespace, k)
        return k

    def check_delta(self, key: str, delta: object) -> int:
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise ConfigError(f"incr delta must be an int, not {delta!r}")
        if self.validate is not None:
            self.validate(self.namespace, key, delta, ADD)
        return delta

    @staticmethod
    def as_counter(key: str, current: Any) -> int:
        if current is None:
            return 0
        if isinstance(current, bool) or not isinstance(current, int):
            raise ConfigError(
                f"cannot incr {key!r}: its value {current!r:.60} is not an int"
            )
        return current

    def locks_for(self, bkeys: Sequence[str]) -> list[threading.RLock]:
        stripes = sorted({self.stripe(b) for b in bkeys})
        return [self.locks[s] for s in stripes]
