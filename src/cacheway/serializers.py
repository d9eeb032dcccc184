"""Serializers turn values into the bytes that the store, the journal and Redis keep.

A serializer is any object with ``dumps(value) -> bytes`` and ``loads(bytes) -> value``
and a ``name``. JSON is the default (orjson when installed); msgpack and signed pickle
are opt-in.

Values keep their fidelity (docs/design.md): :func:`encoder` gives the bytes to keep together
with the value as the store will give it back, and refuses with
:class:`~cacheway.SerializationError` any value that would come back different (a tuple as
a list, ``nan`` as ``None``, an enum member as its value), so a ``get`` answers the same
whether it reads the cached copy, the dirty table or the store (the checks themselves are
in :mod:`cacheway._fidelity`).

>>> s = JSONSerializer()
>>> s.loads(s.dumps({"a": [1, 2]}))
{'a': [1, 2]}
>>> encode = encoder(s)
>>> encode({"a": [1, 2.5]})
(b'{"a":[1,2.5]}', {'a': [1, 2.5]})
>>> encode((1, 2))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
cacheway.errors.SerializationError: cannot store this tuple as json unchanged: a tuple ...
"""

from __future__ import annotations

import hashlib
import hmac
import json
import pickle
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ._fidelity import (
    ATOMS,
    JSON_ATOMS,
    plain_copy,
    plain_inside,
    problem,
    refusal,
    same,
    short,
    type_name,
)
from .errors import ConfigError, SerializationError

__all__ = [
    "Encoder",
    "JSONSerializer",
    "MsgpackSerializer",
    "PickleSerializer",
    "Serializer",
    "checked_encoder",
    "compact",
    "encoder",
    "serializer_from_name",
]

try:
    import orjson as _orjson
except ImportError:  # orjson is optional at import time; stdlib json is the fallback
    _orjson = None  # type: ignore[assignment]

Encoder = Callable[[Any], tuple[bytes, Any]]
"""``encode(value) -> (payload, copy)``: the bytes to keep, and the value as ``loads`` of
those bytes gives it back (equal to ``value``, with the same types all the way down, and
never the caller's own mutable object)."""

if _orjson is not None:
    # Without these options orjson writes datetimes, dataclasses and str/int/dict/list
    # subclasses as plain JSON that comes back as another type; passed through to a
    # missing ``default`` they raise instead. No OPT_NON_STR_KEYS: {1: "a"} would come
    # back as {"1": "a"}.
    _STRICT = (_orjson.OPT_PASSTHROUGH_DATETIME | _orjson.OPT_PASSTHROUGH_DATACLASS
               | _orjson.OPT_PASSTHROUGH_SUBCLASS)


@runtime_checkable
class Serializer(Protocol):
    """What cacheway needs from a serializer."""

    name: str

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class JSONSerializer:
    """JSON: values are ``dict`` (``str`` keys), ``list``, ``str``, ``int`` (from
    -2**63 to 2**64-1), finite ``float``, ``bool`` and ``None``, nested up to 253 levels.

    Anything else raises :class:`~cacheway.SerializationError` rather than coming back
    changed: tuples, non-``str`` keys, ``nan``/``inf``, wider ints, lone surrogates,
    subclasses (enum members), ``datetime``, ``UUID``, dataclasses.

    >>> JSONSerializer().dumps([1, "a"])
    b'[1,"a"]'
    """

    name = "json"
    encode: Encoder

    def __init__(self) -> None:
        self._orjson = _orjson is not None
        self.encode = _orjson_encoder() if self._orjson else _stdlib_json_encoder()

    def dumps(self, value: Any) -> bytes:
        return self.encode(value)[0]

    def loads(self, data: bytes) -> Any:
        error: ValueError | TypeError | None = None
        if self._orjson:
            try:
                return _orjson.loads(data)
            except _orjson.JSONDecodeError as exc:
                error = exc
        try:
            # What orjson refuses but stdlib json reads: escaped lone surrogates, which
            # versions before the fidelity rule wrote through their stdlib fallback.
            return json.loads(bytes(data), parse_constant=_no_constant)
        except (ValueError, TypeError) as exc:
            raise SerializationError(
                f"stored bytes are not valid JSON: {error or exc}") from exc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class MsgpackSerializer:
    """msgpack (``pip install cacheway[msgpack]``): compact, keeps ``bytes``, ``nan`` and
    non-``str`` dict keys. Tuples, ``bytearray``, subclasses and ints beyond 64 bits raise
    :class:`~cacheway.SerializationError`."""

    name = "msgpack"
    encode: Encoder

    def __init__(self) -> None:
        try:
            import msgpack
        except ImportError as exc:
            raise ConfigError(
                "MsgpackSerializer needs msgpack: pip install 'cacheway[msgpack]'"
            ) from exc
        self._msgpack = msgpack
        self.encode = _msgpack_encoder(msgpack)

    def dumps(self, value: Any) -> bytes:
        return self.encode(value)[0]

    def loads(self, data: bytes) -> Any:
        try:
            return self._msgpack.unpackb(data, raw=False, strict_map_key=False)
        except (ValueError, TypeError, self._msgpack.ExtraData) as exc:
            raise SerializationError(f"stored bytes are not valid msgpack: {exc}") from exc


class PickleSerializer:
    """Pickle, signed with HMAC-SHA256: opt-in, for trusted deployments only.

    Bytes whose signature does not match are refused before unpickling, so a
    tampered Redis value cannot run code.

    >>> s = PickleSerializer(key=b"secret")
    >>> s.loads(s.dumps({1, 2}))
    {1, 2}
    """

    name = "pickle"
    encode: Encoder
    _SIG = 32

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) < 6:
            raise ConfigError("PickleSerializer needs a secret key of at least 6 bytes")
        self._key = key

        def encode(value: Any) -> tuple[bytes, Any]:
            body = self._pickle(value)
            # Unpickled from our own bytes, so the signature need not be checked; pickle
            # gives back what it was given (no comparison: many objects define no ==).
            copy = value if value.__class__ in ATOMS else pickle.loads(body)  # noqa: S301
            return hmac.new(key, body, hashlib.sha256).digest() + body, copy

        self.encode = encode

    def dumps(self, value: Any) -> bytes:
        return self.encode(value)[0]

    def loads(self, data: bytes) -> Any:
        sig, body = data[: self._SIG], data[self._SIG :]
        good = hmac.new(self._key, body, hashlib.sha256).digest()
        if len(sig) != self._SIG or not hmac.compare_digest(sig, good):
            raise SerializationError("pickled bytes carry a bad signature; refusing to load")
        return pickle.loads(body)  # noqa: S301 - signature checked above

    @staticmethod
    def _pickle(value: Any) -> bytes:
        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except (pickle.PicklingError, TypeError, AttributeError, RecursionError) as exc:
            raise SerializationError(f"value is not picklable: {exc}") from exc


def _orjson_encoder() -> Encoder:
    dumps, opt, tobytes = _orjson.dumps, _STRICT, memoryview.tobytes
    plain, inside, atoms = plain_copy, plain_inside, JSON_ATOMS

    def encode(value: Any) -> tuple[bytes, Any]:
        cls = value.__class__
        if cls is dict:
            # plain_copy's first loop, inlined for a row of scalars: 0.06 us of 0.42 for
            # {"n": 1} (bench/fidelity.py).
            copy = value.copy()
            for item in copy.values():
                kind = item.__class__
                if kind is str or kind is int or kind is bool or item is None or (
                        kind is float and item - item == 0.0):
                    continue
                copy = inside(copy, 1, atoms)
                if copy is None:
                    raise refusal(value, "json", None)
                break
        elif cls is list:
            copy = plain(value, 1, atoms)
            if copy is None:
                raise refusal(value, "json", None)
        elif (cls is str or cls is int or cls is bool or value is None
              or (cls is float and value - value == 0.0)):  # finite: orjson writes nan as null
            copy = value
        else:
            raise refusal(value, "json", None)
        try:
            # Written from the copy: a thread changing the value meanwhile cannot make
            # the payload and the copy differ. compact(), inlined.
            return tobytes(memoryview(dumps(copy, option=opt))), copy
        except TypeError as exc:  # a key that is not a str, an int too wide, a surrogate
            raise refusal(value, "json", exc) from None

    return encode


def _stdlib_json_encoder() -> Encoder:
    def encode(value: Any) -> tuple[bytes, Any]:
        if problem(value, "json") is not None:
            raise refusal(value, "json", None)
        payload = json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
        return payload, value if value.__class__ in ATOMS else json.loads(payload)

    return encode


def _msgpack_encoder(msgpack: Any) -> Encoder:
    packb, unpackb = msgpack.packb, msgpack.unpackb

    def encode(value: Any) -> tuple[bytes, Any]:
        cls = value.__class__
        copy = plain_copy(value, 1, ATOMS) if cls is dict or cls is list else None
        try:
            # strict_types: tuples and subclasses raise instead of packing as their base
            payload: bytes = packb(value if copy is None else copy, use_bin_type=True,
                                   strict_types=True)
        except (TypeError, ValueError, OverflowError) as exc:
            raise refusal(value, "msgpack", exc) from None
        if copy is not None:
            return payload, copy
        if cls in ATOMS:
            return payload, value
        # What the walk does not know (ExtType, Timestamp) or refuses (bytearray)
        copy = unpackb(payload, raw=False, strict_map_key=False)
        if not same(copy, value):
            raise refusal(value, "msgpack", None)
        return payload, copy

    return encode


def _generic_encoder(serializer: Serializer) -> Encoder:
    dumps, loads, name = serializer.dumps, serializer.loads, serializer.name

    def encode(value: Any) -> tuple[bytes, Any]:
        step = "serialize"
        try:
            payload = dumps(value)
            step = "read back"
            copy = loads(payload)
        except SerializationError:
            raise
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise SerializationError(
                f"{name} cannot {step} this {type_name(value)}: {exc}") from exc
        if not same(copy, value):
            raise SerializationError(
                f"cannot store this {type_name(value)} as {name} unchanged: it comes back "
                f"as {short(copy)}")
        return payload, copy

    return encode


def encoder(serializer: Serializer) -> Encoder:
    """``encode(value) -> (payload, copy)`` for ``serializer``: the bytes to keep and the
    value to answer reads with, which is what ``serializer.loads(payload)`` gives (the
    value itself when it is an immutable scalar). A value that would not come back equal
    with the same types raises :class:`~cacheway.SerializationError`, which names what
    and where.

    >>> encode = encoder(JSONSerializer())
    >>> value = {"tags": ["a"]}
    >>> payload, copy = encode(value)
    >>> copy == value and copy is not value and copy["tags"] is not value["tags"]
    True
    >>> encode({"x": [float("nan")]})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cacheway.errors.SerializationError: cannot store this dict ...: float nan at value['x'][0]...
    """
    if type(serializer) in (JSONSerializer, MsgpackSerializer, PickleSerializer):
        built_in: Encoder = serializer.encode  # type: ignore[attr-defined]
        return built_in
    return _generic_encoder(serializer)


def checked_encoder(encode: Encoder, check: Callable[[bytes], None]) -> Encoder:
    """``encode`` whose payloads go through a store's ``check`` (see
    :class:`~cacheway.stores.capabilities.PayloadCheck`) before the write is accepted."""

    def checked(value: Any) -> tuple[bytes, Any]:
        payload, copy = encode(value)
        check(payload)
        return payload, copy

    return checked


def compact(data: bytes) -> bytes:
    """A copy of orjson's output in a block of its own size.

    orjson builds its result in a write buffer of a kilobyte or more and hands that
    block over, shrunk in place. Dropped at once, it costs nothing; kept (a dirty entry
    keeps its payload until the flush), every result pins a large block: with orjson 3.8
    keeping 60,000 small payloads took 0.55 us each instead of 0.1, with 3.13 1.7 us.
    The copy costs 0.1 us. :func:`encoder`'s payloads are already compact.
    """
    return memoryview(data).tobytes()


def serializer_from_name(name: str) -> Serializer:
    """``"json"`` or ``"msgpack"`` (pickle needs a key, so it is never built by name)."""
    if name == "json":
        return JSONSerializer()
    if name == "msgpack":
        return MsgpackSerializer()
    raise ConfigError(f"unknown serializer {name!r}: use 'json' or 'msgpack'")
