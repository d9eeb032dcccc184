"""Write policies: how a write travels from ``set`` to the store.

A policy object is configuration only (frozen, reusable across namespaces); each
namespace builds its own engine from it. Reads are read-through under every policy.

>>> WriteBack(max_delay=0.5, batch_size=100).batch_size
100
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError

__all__ = ["Policy", "Retry", "WriteAround", "WriteBack", "WriteThrough", "policy_from_name"]

_ON_FULL = ("block", "raise", "write_through")
_FSYNC = ("always", "everysec", "never")


def _positive(name: str, value: object, *, allow_none: bool = False, allow_zero: bool = False
              ) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):  # type: ignore[operator]
        need = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be a number {need}, not {value!r}")


def _count(name: str, value: object, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be an int >= 1, not {value!r}")


@dataclass(frozen=True)
class Retry:
    """How a write-back flusher retries a failing store.

    ``attempts=None`` retries until the store answers; otherwise after ``attempts``
    failed attempts an entry goes to the policy's ``on_dead_letter``. Delays grow
    exponentially from ``base_delay`` up to ``max_delay`` seconds, with jitter.

    >>> Retry(attempts=3).delay(2, rand=lambda: 1.0)
    0.2
    """

    attempts: int | None = None
    base_delay: float = 0.1
    max_delay: float = 30.0
    jitter: bool = True

    def __post_init__(self) -> None:
        _count("Retry.attempts", self.attempts, allow_none=True)
        _positive("Retry.base_delay", self.base_delay, allow_zero=True)
        _positive("Retry.max_delay", self.max_delay, allow_zero=True)
        if self.max_delay < self.base_delay:
            raise ConfigError(
                f"Retry.max_delay ({self.max_delay}) is smaller than base_delay ({self.base_delay})"
            )

    def delay(self, attempt: int, rand: Callable[[], float] | None = None) -> float:
        """Seconds to wait before attempt number ``attempt + 1`` (``attempt`` >= 1 failed)."""
        # The exponent is capped: 2.0 ** 1025 overflows (about 8 hours into an outage).
        d = min(self.max_delay, self.base_delay * (2.0 ** min(64, max(0, attempt - 1))))
        if self.jitter and rand is not None:
            # "equal jitter": never less than half the delay, so a down store is not hammered
            d = d / 2 + (d / 2) * rand()
        return d

    def exhausted(self, attempts: int) -> bool:
        return self.attempts is not None and attempts >= self.attempts


class Policy:
    """Base of the write policies."""

    name = "policy"


@dataclass(frozen=True)
class WriteThrough(Policy):
    """Store first, then backend; ``set`` returns when the store has the value."""

    name = "write-through"


@dataclass(frozen=True)
class WriteAround(Policy):
    """Store first, then the cached copy is invalidated; reads fill with ``fill_ttl``."""

    fill_ttl: float | None = 300.0
    name = "write-around"

    def __post_init__(self) -> None:
        _positive("WriteAround.fill_ttl", self.fill_ttl, allow_none=True)


@dataclass(frozen=True)
class WriteBack(Policy):
    """Cache now, store in batches within ``max_delay`` seconds.

    ``journal="app.wal"`` makes accepted writes survive a crash (``fsync`` = ``"always"``,
    ``"everysec"`` or ``"never"``). ``on_full`` says what a write does when ``max_dirty``
    entries wait: ``"block"`` (up to ``block_timeout``, then :class:`Backpressure`),
    ``"raise"``, or ``"write_through"``.

    ``queue="redis://host:6379/0"`` makes it distributed write-behind: a write is
    acknowledged once Redis has the copy and an entry in one of ``partitions`` streams
    named after ``queue_name``; consumers (one per partition at a time, in this process
    when ``flush_in_process``, or ``cacheway worker``) apply them to the store; a dead
    consumer's entries are reclaimed after ``claim_after`` seconds.
    """

    max_delay: float = 1.0
    batch_size: int = 500
    max_dirty: int = 100_000
    on_full: str = "block"
    block_timeout: float = 10.0
    journal: str | os.PathLike[str] | None = None
    fsync: str = "everysec"
    retry: Retry = field(default_factory=Retry)
    on_dead_letter: Callable[[str, Any, BaseException], object] | None = None
    queue: str | None = None
    queue_name: str = "cacheway"
    partitions: int = 16
    flush_in_process: bool = True
    claim_after: float = 30.0
    name = "write-back"

    def __post_init__(self) -> None:
        _positive("WriteBack.max_delay", self.max_delay, allow_zero=True)
        _count("WriteBack.batch_size", self.batch_size)
        _count("WriteBack.max_dirty", self.max_dirty)
        _positive("WriteBack.block_timeout", self.block_timeout, allow_zero=True)
        if self.on_full not in _ON_FULL:
            raise ConfigError(f"on_full={self.on_full!r} is not one of {', '.join(_ON_FULL)}")
        if self.fsync not in _FSYNC:
            raise ConfigError(f"fsync={self.fsync!r} is not one of {', '.join(_FSYNC)}")
        if not isinstance(self.retry, Retry):
            raise ConfigError(f"retry must be a cw.Retry, not {self.retry!r}")
        if self.on_dead_letter is not None and not callable(self.on_dead_letter):
            raise ConfigError(f"on_dead_letter must be callable, not {self.on_dead_letter!r}")
        if self.journal is not None and not isinstance(self.journal, (str, os.PathLike)):
            raise ConfigError(f"journal must be a path, not {self.journal!r}")
        if self.queue is not None:
            if not isinstance(self.queue, str) or not self.queue.startswith(
                    ("redis://", "rediss://", "unix://")):
                raise ConfigError(f"queue must be a redis:// URL, not {self.queue!r}")
            if self.journal is not None:
                raise ConfigError("a queue= write-back keeps its writes in Redis: it takes "
                                  "no journal=")
        if not isinstance(self.queue_name, str) or not self.queue_name or any(
                c in self.queue_name for c in "{}: \n"):
            raise ConfigError(f"queue_name must be a short name without '{{', '}}', ':' "
                              f"or spaces, not {self.queue_name!r}")
        _count("WriteBack.partitions", self.partitions)
        _positive("WriteBack.claim_after", self.claim_after)
        if not isinstance(self.flush_in_process, bool):
            raise ConfigError(f"flush_in_process must be a bool, not {self.flush_in_process!r}")


_NAMES: dict[str, Callable[[], Policy]] = {
    "write-through": WriteThrough,
    "write-back": WriteBack,
    "write-behind": WriteBack,
    "write-around": WriteAround,
}


def policy_from_name(name: str, **options: Any) -> Policy:
    """``"write-through"``, ``"write-back"`` (or ``"write-behind"``) or ``"write-around"``."""
    key = name.strip().lower().replace("_", "-")
    if key not in _NAMES:
        raise ConfigError(
            f"unknown policy {name!r}: use write-through, write-back or write-around"
        )
    factory: Any = _NAMES[key]
    try:
        return factory(**options)  # type: ignore[no-any-return]
    except TypeError as exc:
        raise ConfigError(f"bad option for policy {name!r}: {exc}") from exc
