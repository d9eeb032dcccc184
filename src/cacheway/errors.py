"""The exception hierarchy: every error cacheway raises is a :class:`CachewayError`.

Some errors also subclass the built-in a Python user would reach for first
(``TypeError`` for a key that is not a ``str``, ``ValueError`` for bad
configuration), so ``except TypeError`` keeps working next to
``except cw.CachewayError``.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "Backpressure",
    "CachewayError",
    "ClosedError",
    "ConfigError",
    "InvalidKeyError",
    "InvalidWriteError",
    "JournalError",
    "SerializationError",
    "StaleMarkError",
    "StoreError",
]


class CachewayError(Exception):
    """Base class of every error raised by cacheway."""


class StoreError(CachewayError):
    """The store (the system of record) failed or did not answer in time."""


class InvalidWriteError(StoreError):
    """The store refuses what a write holds (a counter over a non-integer, a row with an
    unknown column): repeating it cannot help, so a write-back flusher hands the entry to
    ``on_dead_letter`` at once instead of retrying it."""


class StaleMarkError(StoreError):
    """The store refused a batch whose journal mark follows a low water the store has
    passed (``JournalMark.after``): another writer applied those entries already (a
    queue partition taken over from a consumer that was paused longer than
    ``claim_after``). Nothing of the batch was written; re-read ``applied_state``."""


class BackendError(CachewayError):
    """The backend (where cached copies live) failed."""


class SerializationError(CachewayError, TypeError):
    """A value the serializer refuses; raised by ``set`` itself, never later."""


class Backpressure(CachewayError):
    """A write-back cache holds ``max_dirty`` entries and could not take more."""


class ConfigError(CachewayError, ValueError):
    """A bad option, URL, identifier or argument."""


class InvalidKeyError(CachewayError, TypeError):
    """A key that is not a ``str``, or that no store or backend can keep (a lone
    surrogate cannot be encoded)."""


class ClosedError(CachewayError, RuntimeError):
    """The cache (or namespace) was used after ``close()``."""


class JournalError(CachewayError):
    """The write-back journal is damaged, locked by another process or failed to sync."""
