"""The methods a cache and each of its namespaces share (thread front)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, ParamSpec, TypeVar, overload

from . import memoize
from ._single_flight import get_or_set
from .engine.read import Engine
from .errors import ConfigError
from .typed import Codec

__all__ = ["Front"]

_UNSET: Any = object()
_P = ParamSpec("_P")
_R = TypeVar("_R")
V = TypeVar("V")
D = TypeVar("D")


class Front(Generic[V]):
    """The methods a cache and each namespace share, bound straight to one engine so the
    hot path costs no extra call."""

    _engine: Engine

    def _bind(self, engine: Engine) -> None:
        self._engine = engine
        self.get = engine.get  # type: ignore[method-assign]
        self.get_many = engine.get_many  # type: ignore[method-assign]
        self.set = engine.set  # type: ignore[method-assign]
        self.set_many = engine.set_many  # type: ignore[method-assign]
        self.delete = engine.delete  # type: ignore[method-assign]
        self.delete_many = engine.delete_many  # type: ignore[method-assign]
        self.incr = engine.incr  # type: ignore[method-assign]
        self.invalidate = engine.invalidate  # type: ignore[method-assign]
        self.invalidate_many = engine.invalidate_many  # type: ignore[method-assign]
        codec = engine.codec
        if codec is not None:
            self.incr = _no_incr(codec)  # type: ignore[method-assign]
            if not engine.backend_caps.local:  # a shared backend answers the plain form
                self.get = _typed_get(engine, codec)  # type: ignore[method-assign]
                self.get_many = _typed_get_many(engine, codec)  # type: ignore[method-assign]

    @overload
    def get(self, key: str) -> V | None: ...

    @overload
    def get(self, key: str, default: D) -> V | D: ...

    def get(self, key: str, default: Any = None) -> Any:
        """Read-through: the cached value, else the store's (filling the cache), else
        ``default``. Concurrent misses of one key share one store load."""
        return self._engine.get(key, default)

    def get_many(self, keys: Iterable[str]) -> dict[str, V]:
        """Values of ``keys`` that exist (cache first, one store load for the rest)."""
        return self._engine.get_many(keys)

    def set(self, key: str, value: V, ttl: float | None = None) -> None:
        """Write ``value`` under ``key`` as the policy says (``ttl``: of the cached copy)."""
        self._engine.set(key, value, ttl)

    def set_many(self, mapping: Mapping[str, V], ttl: float | None = None) -> None:
        """``set`` for each item; write-through/around apply them in one store transaction."""
        self._engine.set_many(mapping, ttl)

    def delete(self, key: str) -> None:
        """Delete ``key`` from the store and the cache."""
        self._engine.delete(key)

    def delete_many(self, keys: Iterable[str]) -> None:
        """``delete`` for each key."""
        self._engine.delete_many(keys)

    def incr(self, key: str, delta: int = 1) -> int:
        """Add ``delta`` to the int under ``key`` (missing counts as 0); the new value.
        Write-back sums the deltas until the flush; stores add them atomically."""
        return self._engine.incr(key, delta)

    def invalidate(self, key: str) -> None:
        """Drop the cached copies of ``key`` (every level, every process sharing the
        backend); the store keeps the row, and the next read loads it. For rows changed
        in the database behind the cache's back. A pending write-back write stays."""
        self._engine.invalidate(key)

    def invalidate_many(self, keys: Iterable[str]) -> None:
        """``invalidate`` for each key, in one backend call."""
        self._engine.invalidate_many(keys)

    def get_or_set(self, key: str, default: Any, ttl: float | None = None) -> Any:
        """The value under ``key``; on a miss ``default`` (``default()`` when callable,
        called once per stampede: concurrent misses share its result or exception),
        written by the policy as ``set(key, value, ttl)`` and returned."""
        return get_or_set(self, key, default, ttl)

    def cached(
        self, ttl: float | None = None, *, key: Callable[..., str] | None = None,
        namespace: str | None = None, clock: Callable[[], float] = time.time,
    ) -> Callable[[Callable[_P, _R]], memoize.Cached[_P, _R]]:
        """Decorator keeping a function's results in their own namespace (``module.qualname``
        unless ``namespace=``), keyed by the call's bound arguments (see
        :mod:`cacheway.memoize`) or by ``key(*args, **kwargs)``. ``ttl``: each result's
        lifetime (``clock``: unix time), in the cache and the store alike."""
        return memoize.cached(self, ttl, key=key, namespace=namespace, clock=clock)

    def __contains__(self, key: str) -> bool:
        return self.get(key, _UNSET) is not _UNSET

    def __getitem__(self, key: str) -> V:
        value = self.get(key, _UNSET)
        if value is _UNSET:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: V) -> None:
        self._engine.set(key, value)

    def __delitem__(self, key: str) -> None:
        self._engine.delete(key)


def _typed_get(engine: Engine, codec: Codec[Any]) -> Callable[..., Any]:
    """``get`` of a typed namespace on a shared backend: its copies come back plain."""
    get, is_kind, from_plain = engine.get, codec.is_kind, codec.from_plain

    def typed_get(key: str, default: Any = None) -> Any:
        value = get(key, _UNSET)
        if value is _UNSET:
            return default
        return value if is_kind(value) else from_plain(value)

    return typed_get


def _typed_get_many(engine: Engine, codec: Codec[Any]) -> Callable[..., dict[str, Any]]:
    get_many, is_kind, from_plain = engine.get_many, codec.is_kind, codec.from_plain

    def typed_get_many(keys: Iterable[str]) -> dict[str, Any]:
        return {k: v if is_kind(v) else from_plain(v) for k, v in get_many(keys).items()}

    return typed_get_many


def _no_incr(codec: Codec[Any]) -> Callable[..., int]:
    def incr(key: str, delta: int = 1) -> int:
        raise ConfigError(f"incr needs an untyped namespace: this one keeps "
                          f"{codec.kind.__name__} values")

    return incr
