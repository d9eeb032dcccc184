"""What a key and a ttl must be, checked at the call that passes them (pure).

>>> check_key("user:1"), check_ttl(5)
('user:1', 5.0)
>>> check_key(b"user:1")
Traceback (most recent call last):
...
cacheway.errors.InvalidKeyError: keys must be str, not bytes (b'user:1')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from ..errors import ConfigError, InvalidKeyError

T = TypeVar("T")

__all__ = ["check_key", "check_keys", "check_mapping", "check_ttl"]


def check_key(key: object) -> str:
    """``key`` if it is a ``str`` of valid text (no lone surrogate, which no store or
    backend can encode)."""
    if key.__class__ is not str and not isinstance(key, str):
        raise InvalidKeyError(f"keys must be str, not {type(key).__name__} ({key!r:.60})")
    if not key.isascii():
        try:
            key.encode()
        except UnicodeEncodeError as exc:
            raise InvalidKeyError(
                f"key {key!r:.60} is not valid text: {exc.reason} at index {exc.start} "
                "(a lone surrogate cannot be stored)") from None
    return key


def check_keys(keys: Iterable[T]) -> Iterable[T]:
    """``keys`` of a ``*_many`` call, unless it is one str (or bytes): iterating it would
    make every character a key (``delete_many("user")`` deleting ``u``, ``s``, ...).

    >>> check_keys("user")
    Traceback (most recent call last):
    ...
    cacheway.errors.InvalidKeyError: keys must be an iterable of keys, not a str ('user'): ...
    """
    if isinstance(keys, (str, bytes)):
        raise InvalidKeyError(f"keys must be an iterable of keys, not a "
                              f"{type(keys).__name__} ({keys!r:.60}): pass a list, e.g. "
                              f"[{keys!r:.60}]")
    return keys


def check_mapping(mapping: Any) -> Mapping[Any, Any]:
    """The ``mapping`` of a ``set_many`` call: a Mapping of keys to values."""
    if not isinstance(mapping, Mapping):
        raise InvalidKeyError(f"set_many takes a mapping of keys to values (a dict), not a "
                              f"{type(mapping).__name__} ({mapping!r:.60}): use "
                              "dict(pairs) for a list of (key, value) pairs")
    return mapping


def check_ttl(ttl: object) -> float | None:
    """``ttl`` as seconds (a number > 0), or None (no expiry)."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise ConfigError(f"ttl must be a number of seconds > 0 or None, not {ttl!r}")
    return float(ttl)
