"""What a key and a ttl must be, checked at the call that passes them (pure).

>>> check_key("user:1"), check_ttl(5)
('user:1', 5.0)
>>> check_key(b"user:1")
Traceback (most recent call last):
...
cacheway.errors.InvalidKeyError: keys must be str, not bytes (b'user:1')
"""

from __future__ import annotations

from ..errors import ConfigError, InvalidKeyError

__all__ = ["check_key", "check_ttl"]


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


def check_ttl(ttl: object) -> float | None:
    """``ttl`` as seconds (a number > 0), or None (no expiry)."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise ConfigError(f"ttl must be a number of seconds > 0 or None, not {ttl!r}")
    return float(ttl)
