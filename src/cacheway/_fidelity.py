"""Value fidelity: whether a value comes back from a format (JSON, msgpack) equal and
with the same types all the way down, and why not when it would not.

The encoders of :mod:`cacheway.serializers` use :func:`plain_copy` to make the copy a read
answers with (without parsing the payload), :func:`same` to compare a read-back, and
:func:`refusal` / :func:`problem` to name what is wrong and where.

>>> problem({"a": [1, (2, 3)]}, "json")
"a tuple at value['a'][1] would come back as a list (pass a list)"
>>> same([1, 2.0], [1, 2])
False
"""

from __future__ import annotations

import enum
from typing import Any

from .errors import SerializationError

__all__ = [
    "ATOMS", "JSON_ATOMS", "JSON_DEPTH", "plain_copy", "plain_inside", "problem", "refusal",
    "same", "short", "type_name",
]

# Both formats carry 64-bit integers (signed, or unsigned for the positive ones).
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
# orjson refuses containers nested deeper: 3.8 takes 255 levels, 3.13 only 253, so the
# lower one, whatever orjson this process has (the stdlib path keeps it too, so that what
# one process writes every other one reads); deeper msgpack values take its slow path.
JSON_DEPTH = 253

# Immutable values that come back as themselves (floats: only finite ones from JSON).
ATOMS: frozenset[type] = frozenset((str, int, bool, type(None), float, bytes))
JSON_ATOMS: frozenset[type] = frozenset((str, int, bool, type(None)))


def plain_copy(value: Any, depth: int, atoms: frozenset[type]) -> Any:
    """A copy of the dict or list ``value`` if it holds only dicts, lists and ``atoms``
    (and finite floats), else None: what the format gives back unchanged, so the copy is
    what ``loads`` of the payload would give, without parsing it. For the small values a
    cache mostly holds this walk costs less than ``loads`` and a comparison
    (bench/fidelity.py). Keys are left to the format (orjson refuses keys that are not
    ``str``, packb subclasses and tuples), as are int ranges and lone surrogates.
    """
    if depth > JSON_DEPTH:
        return None
    copy = value.copy()
    is_dict = copy.__class__ is dict
    # A row of scalars, the common value, needs one pass and no keys.
    for item in copy.values() if is_dict else copy:
        kind = item.__class__
        if kind in atoms:
            continue
        if kind is float:  # JSON's atoms hold no float: nan and inf come back as null
            if item - item != 0.0:
                return None
        elif kind is dict or kind is list:
            break
        else:  # a tuple, a subclass (an enum member), datetime, UUID, bytearray...
            return None
    else:
        return copy
    return plain_inside(copy, depth, atoms)


def plain_inside(copy: Any, depth: int, atoms: frozenset[type]) -> Any:
    """:func:`plain_copy`'s second pass: ``copy`` with its containers replaced by
    copies, or None."""
    for k, item in copy.items() if copy.__class__ is dict else enumerate(copy):
        kind = item.__class__
        if kind is dict or kind is list:
            inner = plain_copy(item, depth + 1, atoms)
            if inner is None:
                return None
            copy[k] = inner
        elif kind is float:
            if item - item != 0.0:
                return None
        elif kind not in atoms:
            return None
    return copy


def same(a: Any, b: Any) -> bool:
    """``a == b`` with the same types all the way down (``nan`` equal to ``nan``)."""
    cls = a.__class__
    if cls is not b.__class__:
        return False
    if cls is list or cls is tuple:
        return len(a) == len(b) and all(map(same, a, b))
    if cls is dict:
        if len(a) != len(b):
            return False
        if all(same(ka, kb) and same(va, vb)
               for (ka, va), (kb, vb) in zip(a.items(), b.items())):
            return True
        keys = {k: k for k in b}  # in another order: match keys by ==, then check types
        return all(k in keys and same(k, keys[k]) and same(v, b[k]) for k, v in a.items())
    if cls is float and a != a:
        return bool(b != b)
    return bool(a == b)


def refusal(value: Any, fmt: str, exc: Exception | None) -> SerializationError:
    try:
        why = problem(value, fmt)
    except RecursionError:
        why = "it is nested too deeply"
    if why is None:
        why = str(exc) if exc is not None else "it would come back changed"
    name = value.__class__.__qualname__
    return SerializationError(f"cannot store this {name} as {fmt} unchanged: {why}")


def problem(value: Any, fmt: str, path: str = "", depth: int = 0) -> str | None:
    """Why ``value`` would not come back unchanged from ``fmt`` ("json" or "msgpack"),
    naming where (``value['a'][2]``); None if it would."""
    cls = value.__class__
    where = f" at value{path}" if path else ""
    if cls is bool or value is None:
        return None
    if cls is str:
        try:
            value.encode()
        except UnicodeEncodeError:
            return f"the str{where} holds a lone surrogate, which is not UTF-8"
        return None
    if cls is int:
        if _INT_MIN <= value <= _INT_MAX:
            return None
        return f"the int{where} is outside {fmt}'s range, -2**63 to 2**64-1"
    if cls is float:
        if fmt == "json" and value - value != 0.0:
            return f"float {value!r}{where}: JSON has no NaN or Infinity"
        return None
    if cls is bytes and fmt == "msgpack":
        return None
    if cls is dict or cls is list:
        if fmt == "json" and depth >= JSON_DEPTH:
            return (f"the {cls.__name__}{where} is nested {JSON_DEPTH} levels deep "
                    "(or holds itself)")
        items = value.items() if cls is dict else enumerate(value)
        for k, v in items:
            if cls is dict:
                if fmt == "json" and k.__class__ is not str:
                    return (f"dict key {short(k)}{where} is of type {type_name(k)}: "
                            "JSON keys are str")
                if (why := problem(k, fmt, path, depth + 1)) is not None:
                    return f"dict key {short(k)}: {why}"
            if (why := problem(v, fmt, f"{path}[{short(k)}]", depth + 1)) is not None:
                return why
        return None
    if cls is tuple:
        return f"a tuple{where} would come back as a list (pass a list)"
    if fmt == "msgpack" and cls in (bytearray, memoryview):
        return f"a {cls.__name__}{where} would come back as bytes (pass bytes)"
    hint = "store its .value" if isinstance(value, enum.Enum) else "convert it first"
    return f"type {type_name(value)}{where} is not a {fmt} type ({hint})"


def type_name(value: Any) -> str:
    cls = value.__class__
    name = cls.__name__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    for base in (int, float, str, bytes, dict, list):
        if isinstance(value, base) and cls is not base and cls is not bool:
            return f"{name} (a subclass of {base.__name__})"
    return name


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
