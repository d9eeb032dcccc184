"""Typed namespaces: ``cache.namespace("users", type=User)`` keeps values of one type.

The store, the journal and a shared backend keep the serializer's bytes of the value's
plain form (dicts, lists, strings, numbers: what msgspec's ``to_builtins`` gives, so a
``datetime`` field is an ISO string there); reads turn it back into the type, from every
level, and writes check it. Types: dataclasses, ``msgspec.Struct``, ``TypedDict`` (with
msgspec installed: ``pip install 'cacheway[typed]'``) and pydantic models.

>>> import dataclasses
>>> @dataclasses.dataclass
... class User:
...     name: str
...     tags: tuple[str, ...]
>>> codec = codec_for(User)
>>> plain = codec.to_plain(User("Ada", ("math",)))
>>> plain
{'name': 'Ada', 'tags': ['math']}
>>> codec.from_plain(plain)
User(name='Ada', tags=('math',))
>>> codec.to_plain({"name": "Ada"})
Traceback (most recent call last):
...
cacheway.errors.SerializationError: this namespace keeps User values, not dict ({'name': 'Ada'})
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any, Generic, TypeVar, is_typeddict

from .errors import ConfigError, SerializationError
from .serializers import Encoder

__all__ = ["Codec", "codec_for", "typed_encoder"]

T = TypeVar("T")


class Codec(Generic[T]):
    """How values of ``kind`` become their plain form and back."""

    def __init__(self, kind: type[T], to_plain: Callable[[Any], Any],
                 from_plain: Callable[[Any], T], check: Callable[[Any], bool]) -> None:
        self.kind = kind
        self._to_plain = to_plain
        self._from_plain = from_plain
        self._check = check

    def __repr__(self) -> str:
        return f"Codec({self.kind.__name__})"

    def to_plain(self, value: Any) -> Any:
        """``value``'s plain form; SerializationError when it is not a ``kind``."""
        if not self._check(value):
            raise SerializationError(
                f"this namespace keeps {self.kind.__name__} values, not "
                f"{type(value).__name__} ({value!r:.60})")
        try:
            return self._to_plain(value)
        except (TypeError, ValueError) as exc:
            raise SerializationError(
                f"cannot store this {self.kind.__name__}: {exc}") from exc

    def from_plain(self, plain: Any) -> T:
        """The ``kind`` value of a plain form read from a store or a shared backend."""
        try:
            return self._from_plain(plain)
        except (TypeError, ValueError) as exc:  # msgspec.ValidationError is a ValueError
            raise SerializationError(
                f"a stored value does not fit {self.kind.__name__}: {exc}") from exc

    def is_kind(self, value: Any) -> bool:
        """True when ``value`` is already a ``kind`` (no conversion needed)."""
        return value.__class__ is self.kind


def _msgspec() -> Any:
    try:
        return importlib.import_module("msgspec")
    except ImportError:
        raise ConfigError(
            "typed namespaces of dataclasses, msgspec Structs and TypedDicts need msgspec: "
            "pip install 'cacheway[typed]'") from None


def codec_for(kind: Any) -> Codec[Any]:
    """The codec of ``kind``: a dataclass, a msgspec Struct, a TypedDict or a pydantic
    model (ConfigError for anything else)."""
    if not isinstance(kind, type):
        raise ConfigError(f"type= must be a class (a dataclass, msgspec.Struct, TypedDict "
                          f"or pydantic model), not {kind!r}")
    validate = getattr(kind, "model_validate", None)
    if validate is not None and hasattr(kind, "model_dump"):  # pydantic v2
        # By alias (what validation reads), without computed fields (validation would
        # refuse them under extra="forbid"). The class itself: a subclass's own fields
        # would not come back.
        computed = set(getattr(kind, "model_computed_fields", {}) or ())
        return Codec(kind, lambda v: v.model_dump(mode="json", by_alias=True,
                                                  exclude=computed or None),
                     validate, lambda v: v.__class__ is kind)
    if is_typeddict(kind):
        ms = _msgspec()

        td: Any = kind
        keys = td.__required_keys__ | td.__optional_keys__

        def check(value: Any) -> bool:
            if not isinstance(value, dict) or not value.keys() <= keys:
                return False  # (a key it does not declare would not come back)
            try:
                ms.convert(value, kind)
            except ms.ValidationError:
                return False
            return True

        return Codec(kind, _plain_of(ms), lambda p: ms.convert(p, kind), check)
    ms_struct = _struct_base()
    if dataclasses.is_dataclass(kind) or (ms_struct is not None and issubclass(kind, ms_struct)):
        ms = _msgspec()
        # strict=False reads back what JSON turned into text (dict[int, str] keys); the
        # plain form is ours, made from a value of the type.
        return Codec(kind, _plain_of(ms), lambda p: ms.convert(p, kind, strict=False),
                     lambda v: v.__class__ is kind)
    raise ConfigError(
        f"type={kind.__name__} is not a dataclass, msgspec.Struct, TypedDict or pydantic "
        "model")


def _plain_of(ms: Any) -> Callable[[Any], Any]:
    """msgspec's JSON form, read back: tuples become lists, dates ISO strings, bytes
    base64 (what every serializer keeps unchanged; the type turns them back). Two C
    passes cost less than a Python walk of the value."""
    encode, decode = ms.json.Encoder().encode, ms.json.Decoder().decode

    def plain(value: Any) -> Any:
        return decode(encode(value))

    return plain


def _struct_base() -> type | None:
    try:
        return importlib.import_module("msgspec").Struct  # type: ignore[no-any-return]
    except ImportError:
        return None


def typed_encoder(encode: Encoder, codec: Codec[Any]) -> Encoder:
    """``encode`` for a typed namespace: the value is checked and turned into its plain
    form, which ``encode`` keeps faithfully; reads answer with the typed copy."""
    to_plain, from_plain = codec.to_plain, codec.from_plain

    def typed(value: Any) -> tuple[bytes, Any]:
        payload, plain = encode(to_plain(value))
        return payload, from_plain(plain)

    return typed
