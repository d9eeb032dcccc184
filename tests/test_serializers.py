"""Value fidelity of the serializers (docs/design.md "Value fidelity", issue 10 item 4).

``encoder(serializer)(value)`` gives the bytes to keep and the value as the store gives it
back: equal to what was passed, with the same types all the way down, never sharing a
mutable part with it. A value that would come back changed raises SerializationError.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import decimal
import enum
import json
import math
import struct
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import cacheway as cw
from cacheway import serializers
from cacheway.serializers import (
    JSONSerializer,
    MsgpackSerializer,
    PickleSerializer,
    compact,
    encoder,
)


class Colour(enum.Enum):
    RED = 1


class Level(enum.IntEnum):
    LOW = 1


class Mode(str, enum.Enum):
    FAST = "fast"


class Name(str):
    pass


class Count(int):
    pass


class Ratio(float):
    pass


class Row(dict):  # type: ignore[type-arg]
    pass


class Items(list):  # type: ignore[type-arg]
    pass


@dataclasses.dataclass
class Point:
    x: int
    y: int


def nested(depth: int) -> Any:
    """``depth`` lists, one inside the other, around a 0."""
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def looped() -> list[Any]:
    value: list[Any] = [1]
    value.append(value)
    return value


def json_stdlib(monkeypatch: pytest.MonkeyPatch) -> JSONSerializer:
    """The JSON serializer as built where orjson is not installed."""
    monkeypatch.setattr(serializers, "_orjson", None)
    return JSONSerializer()


FACTORIES: dict[str, Callable[[pytest.MonkeyPatch], Any]] = {
    "json": lambda mp: JSONSerializer(),
    "json-stdlib": json_stdlib,
    "msgpack": lambda mp: MsgpackSerializer(),
    "pickle": lambda mp: PickleSerializer(key=b"test-secret"),
}
JSONS = ["json", "json-stdlib"]


@pytest.fixture(params=list(FACTORIES))
def serializer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    return FACTORIES[request.param](monkeypatch)


def assert_identical(got: Any, want: Any, where: str = "value") -> None:
    """``got == want`` with the same types all the way down, dict keys in the same order,
    and floats bit for bit (so -0.0 is not 0.0 and nan is nan)."""
    assert type(got) is type(want), f"{where}: {type(got).__name__} != {type(want).__name__}"
    if type(want) is dict:
        assert len(got) == len(want), where
        for (gk, gv), (wk, wv) in zip(got.items(), want.items()):
            assert_identical(gk, wk, f"{where} key")
            assert_identical(gv, wv, f"{where}[{wk!r}]")
    elif type(want) in (list, tuple):
        assert len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            assert_identical(g, w, f"{where}[{i}]")
    elif type(want) is float:
        assert struct.pack("<d", got) == struct.pack("<d", want), f"{where}: {got!r} != {want!r}"
    else:
        assert got == want, where


def containers(value: Any) -> Iterator[int]:
    """The ids of every dict and list inside ``value`` (itself included)."""
    if type(value) in (dict, list):
        yield id(value)
        for item in value.values() if type(value) is dict else value:
            yield from containers(item)


# -- refused values --------------------------------------------------------------------------

# (value, serializers that refuse it, words the JSON message must hold)
REFUSED: list[tuple[str, Callable[[], Any], set[str], list[str]]] = [
    ("tuple", lambda: (1, 2), {"json", "msgpack"}, ["tuple", "list"]),
    ("nested tuple", lambda: {"a": [1, (2, 3)]}, {"json", "msgpack"},
     ["tuple", "value['a'][1]"]),
    ("int key", lambda: {1: "a"}, {"json"}, ["dict key 1", "int"]),
    ("float key", lambda: {"x": {1.5: "a"}}, {"json"}, ["dict key 1.5", "value['x']"]),
    ("None key", lambda: {None: "a"}, {"json"}, ["dict key None"]),
    ("tuple key", lambda: {(1, 2): "a"}, {"json", "msgpack"}, ["dict key (1, 2)"]),
    ("2**64", lambda: 2**64, {"json", "msgpack"}, ["int", "range"]),
    ("2**70 nested", lambda: {"n": [2**70]}, {"json", "msgpack"}, ["int", "value['n'][0]"]),
    ("-2**63-1", lambda: -(2**63) - 1, {"json", "msgpack"}, ["int", "range"]),
    ("nan", lambda: math.nan, {"json"}, ["nan"]),
    ("inf", lambda: math.inf, {"json"}, ["inf"]),
    ("-inf in list", lambda: [1.0, -math.inf], {"json"}, ["-inf", "value[1]"]),
    ("nan in dict", lambda: {"x": math.nan}, {"json"}, ["nan", "value['x']"]),
    ("lone surrogate", lambda: "\ud800", {"json", "msgpack"}, ["surrogate"]),
    ("surrogate nested", lambda: ["ok", "a\udfffb"], {"json", "msgpack"},
     ["surrogate", "value[1]"]),
    ("surrogate key", lambda: {"\ud800": 1}, {"json", "msgpack"}, ["surrogate"]),
    ("datetime", lambda: datetime.datetime(2024, 1, 2, 3, 4, 5), {"json", "msgpack"},
     ["datetime.datetime"]),
    ("aware datetime", lambda: datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc),
     {"json", "msgpack"}, ["datetime.datetime"]),
    ("date nested", lambda: {"d": datetime.date(2024, 1, 2)}, {"json", "msgpack"},
     ["datetime.date", "value['d']"]),
    ("time", lambda: datetime.time(1, 2), {"json", "msgpack"}, ["datetime.time"]),
    ("uuid", lambda: uuid.UUID(int=7), {"json", "msgpack"}, ["uuid.UUID"]),
    ("uuid nested", lambda: [uuid.UUID(int=7)], {"json", "msgpack"}, ["uuid.UUID", "value[0]"]),
    ("dataclass", lambda: Point(1, 2), {"json", "msgpack"}, ["Point"]),
    ("enum", lambda: Colour.RED, {"json", "msgpack"}, ["Colour", ".value"]),
    ("int enum", lambda: Level.LOW, {"json", "msgpack"}, ["Level", "subclass of int"]),
    ("int enum nested", lambda: {"level": Level.LOW}, {"json", "msgpack"},
     ["Level", "value['level']"]),
    ("str enum nested", lambda: [Mode.FAST], {"json", "msgpack"}, ["Mode", "value[0]"]),
    ("str subclass", lambda: Name("x"), {"json", "msgpack"}, ["Name", "subclass of str"]),
    ("str subclass key", lambda: {Name("k"): 1}, {"json", "msgpack"}, ["Name"]),
    ("int subclass nested", lambda: [1, Count(2)], {"json", "msgpack"}, ["Count"]),
    ("float subclass", lambda: Ratio(0.5), {"json", "msgpack"}, ["Ratio"]),
    ("dict subclass", lambda: Row(a=1), {"json", "msgpack"}, ["Row"]),
    ("OrderedDict", lambda: collections.OrderedDict(a=1), {"json", "msgpack"}, ["OrderedDict"]),
    ("defaultdict nested", lambda: {"d": collections.defaultdict(int)}, {"json", "msgpack"},
     ["defaultdict"]),
    ("list subclass", lambda: Items([1]), {"json", "msgpack"}, ["Items"]),
    ("bytes", lambda: b"x", {"json"}, ["bytes"]),
    ("bytearray", lambda: bytearray(b"x"), {"json", "msgpack"}, ["bytearray"]),
    ("memoryview nested", lambda: [memoryview(b"x")], {"json", "msgpack", "pickle"},
     ["memoryview"]),
    ("set", lambda: {1, 2}, {"json", "msgpack"}, ["set"]),
    ("frozenset", lambda: frozenset([1]), {"json", "msgpack"}, ["frozenset"]),
    ("complex", lambda: 1 + 2j, {"json", "msgpack"}, ["complex"]),
    ("decimal", lambda: decimal.Decimal("1.5"), {"json", "msgpack"}, ["decimal.Decimal"]),
    ("object", lambda: object(), {"json", "msgpack"}, ["object"]),
    ("function", lambda: [lambda: 0], {"json", "msgpack", "pickle"}, ["function"]),
    ("254 levels deep", lambda: nested(254), {"json"}, ["253 levels"]),
    ("holds itself", lambda: looped(), {"json", "msgpack"}, ["list"]),
]


@pytest.mark.parametrize(("case", "make", "refused_by", "words"), REFUSED,
                         ids=[c[0] for c in REFUSED])
def test_set_refuses_a_value_that_would_come_back_changed(
    serializer: Any, case: str, make: Callable[[], Any], refused_by: set[str],
    words: list[str],
) -> None:
    # issue 10 item 4
    fmt = serializer.name
    value = make()
    if fmt not in refused_by:
        _, copy = encoder(serializer)(value)
        if fmt != "pickle":  # pickle gives back equal objects (and loops)
            assert_identical(copy, value)
        return
    with pytest.raises(cw.SerializationError) as info:
        encoder(serializer)(value)
    assert isinstance(info.value, cw.CachewayError)
    # dumps is as strict as the encoder: nothing else writes what encode refuses
    with pytest.raises(cw.SerializationError):
        serializer.dumps(value)
    if fmt == "json":
        for word in words:
            assert word in str(info.value), f"{word!r} missing from: {info.value}"


# -- faithful values -------------------------------------------------------------------------

FAITHFUL: list[Any] = [
    "", "plain", "héllo wörld ✓ 𝄞 中文", "\x00\x1f\"\\/", "\ufeff\uffff", "a" * 10_000,
    0, 1, -1, 2**53 + 1, 2**63 - 1, -(2**63), 2**64 - 1,
    True, False, None,
    0.0, -0.0, 1.5, -2.25, 0.1, 1 / 3, 1e308, -1e308, 1.7976931348623157e308, 5e-324,
    2.2250738585072014e-308, 1e-300, 123456789.123456789, 1e16, 1e22,
    [], {}, [[]], {"": {}}, [[], {}, [[[]]]],
    [1, 1.0, True, "1", None], {"int": 1, "float": 1.0, "bool": True, "none": None},
    {"z": 1, "a": 2, "m": 3}, {"nested": {"list": [1, {"deep": [2.5, "x", [None]]}]}},
    list(range(1000)), {f"k{i}": i for i in range(200)},
    {"ключ": "значение", "🔑": ["🙂"]}, nested(253),
]


@pytest.mark.parametrize("value", FAITHFUL, ids=[repr(v)[:30] for v in FAITHFUL])
def test_a_faithful_value_comes_back_equal_with_the_same_types(serializer: Any,
                                                               value: Any) -> None:
    # issue 10 item 4
    payload, copy = encoder(serializer)(value)
    assert isinstance(payload, bytes)
    assert_identical(copy, value)
    assert_identical(serializer.loads(payload), value)
    assert serializer.dumps(value) == payload or serializer.name == "pickle"


def test_msgpack_keeps_what_it_can_carry() -> None:
    # issue 10 item 4
    s = MsgpackSerializer()
    for value in [b"", b"\x00\xff", {1: "a", 2.5: b"b", None: [], b"k": -1}, {True: 0},
                  math.nan, [math.inf, -math.inf, math.nan], {"x": {-(2**63): 2**64 - 1}}]:
        payload, copy = encoder(s)(value)
        assert_identical(copy, value)
        assert_identical(s.loads(payload), value)


@pytest.mark.parametrize("name", JSONS)
def test_json_payloads_read_the_same_with_orjson_and_stdlib_json(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # issue 10 item 4: what one process writes, every other one reads the same
    encode = encoder(FACTORIES[name](monkeypatch))
    for value in FAITHFUL:
        payload, copy = encode(value)
        assert_identical(orjson.loads(payload), copy)
        assert_identical(json.loads(payload), copy)


def test_the_copy_shares_nothing_mutable_with_the_value(serializer: Any) -> None:
    # issue 10 item 4: mutating an object after set changes nothing
    value = {"a": [1, 2], "b": {"c": 3, "d": [{"e": "f"}]}, "g": []}
    want = {"a": [1, 2], "b": {"c": 3, "d": [{"e": "f"}]}, "g": []}
    payload, copy = encoder(serializer)(value)
    assert not set(containers(copy)) & set(containers(value))
    value["a"].append(3)
    value["b"]["d"][0]["e"] = "changed"
    value["g"].append(value.pop("b"))
    value["new"] = 1
    assert_identical(copy, want)
    assert_identical(serializer.loads(payload), want)


@pytest.mark.parametrize("value", [{"n": 1, "s": "x", "f": 1.5, "b": True, "z": None},
                                   [1, "x", 1.5, False, None], {}, []])
def test_the_copy_of_a_flat_row_is_a_new_object(serializer: Any, value: Any) -> None:
    # issue 10 item 4: mutating an object after set changes nothing
    want = value.copy()
    payload, copy = encoder(serializer)(value)
    assert copy is not value
    if type(value) is dict:
        value["n"] = 2
        value["new"] = 1
    else:
        value.append(1)
        value[0] = 2
    assert_identical(copy, want)
    assert_identical(serializer.loads(payload), want)


def test_the_copy_of_a_shared_inner_list_is_two_lists(serializer: Any) -> None:
    # issue 10 item 4: as read back from the store, the copy does not alias
    inner = [1]
    _, copy = encoder(serializer)({"a": inner, "b": inner})
    if serializer.name != "pickle":  # pickle keeps the sharing, as it gives it back
        assert copy["a"] is not copy["b"]
    inner.append(2)
    assert copy == {"a": [1], "b": [1]}


# -- reading what older versions wrote --------------------------------------------------------

@pytest.mark.parametrize("name", JSONS)
def test_json_loads_still_reads_what_older_versions_wrote(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # issue 10 item 4
    s = FACTORIES[name](monkeypatch)
    assert s.loads(b'{"1":"a"}') == {"1": "a"}  # written with OPT_NON_STR_KEYS
    assert s.loads(b"[1,2]") == [1, 2]  # a tuple, once
    assert s.loads(b"null") is None  # nan, once
    assert s.loads(b'"\\ud800"') == "\ud800"  # stdlib fallback: readable, no longer raises
    assert s.loads(memoryview(b'{"a":1}')) == {"a": 1}
    for bad in [b"NaN", b"{", b"", b"\xff"]:
        with pytest.raises(cw.SerializationError, match="not valid JSON"):
            s.loads(bad)


# -- user serializers -------------------------------------------------------------------------

class SortedJSON:
    """Faithful for JSON values, but writes keys sorted: reads back in another order."""

    name = "sorted-json"

    def dumps(self, value: Any) -> bytes:
        return json.dumps(value, sort_keys=True, allow_nan=False).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


class ReprSerializer:
    """Keeps tuples and sets (``repr`` + ``ast.literal_eval``)."""

    name = "repr"

    def dumps(self, value: Any) -> bytes:
        return repr(value).encode()

    def loads(self, data: bytes) -> Any:
        import ast

        return ast.literal_eval(data.decode())


def test_a_user_serializer_is_checked_by_a_round_trip() -> None:
    # issue 10 item 4
    encode = encoder(SortedJSON())
    payload, copy = encode({"b": 1, "a": [2.5, None]})
    assert payload == b'{"a": [2.5, null], "b": 1}'
    assert copy == {"b": 1, "a": [2.5, None]}
    for bad, words in [((1, 2), "comes back as [1, 2]"), ({1: "a"}, "comes back as {'1': 'a'}"),
                       (math.nan, "cannot serialize this float")]:
        with pytest.raises(cw.SerializationError, match="sorted-json") as info:
            encode(bad)
        assert words in str(info.value)
    # a tuple it can give back is a tuple in the copy too
    value = {"t": (1, 2), "s": {3}}
    _, copy = encoder(ReprSerializer())(value)
    assert copy == value
    assert type(copy["t"]) is tuple
    assert copy is not value
    with pytest.raises(cw.SerializationError, match="repr cannot read back this float"):
        encoder(ReprSerializer())(math.inf)  # 'inf' is no literal


def test_the_built_in_encoders_are_the_serializers_own() -> None:
    s = JSONSerializer()
    assert encoder(s) is s.encode

    class Subclass(JSONSerializer):
        def dumps(self, value: Any) -> bytes:
            return super().dumps([value])

        def loads(self, data: bytes) -> Any:
            return super().loads(data)[0]

    # a subclass may change dumps/loads: it gets the round-trip check, not JSON's encoder
    sub = Subclass()
    payload, copy = encoder(sub)({"a": 1})
    assert payload == b'[{"a":1}]'
    assert copy == {"a": 1}


def test_compact_gives_equal_bytes() -> None:
    data = orjson.dumps({"a": 1})
    assert compact(data) == data
    assert type(compact(data)) is bytes


# -- properties ------------------------------------------------------------------------------

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_json_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
                 | st.floats(allow_nan=False, allow_infinity=False) | _text)
json_values = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_text, inner, max_size=5),
    max_leaves=30,
)
# Anything near a JSON value: what encode does not refuse must come back identical.
_odd_scalars = (_json_scalars | st.integers() | st.floats() | st.text(max_size=4)
                | st.binary(max_size=4) | st.sampled_from([Level.LOW, Mode.FAST, Colour.RED,
                                                          Name("n"), Count(3), Ratio(1.0)]))
odd_values = st.recursive(
    _odd_scalars,
    lambda inner: (st.lists(inner, max_size=4) | st.tuples(inner, inner)
                   | st.dictionaries(_odd_scalars.filter(lambda k: k == k), inner, max_size=4)),
    max_leaves=20,
)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(json_values)
@example(-0.0)
@example([1, 1.0, True, {"1": 1.0}])
@example(2**64 - 1)
def test_encode_gives_back_json_values_unchanged(value: Any) -> None:
    # issue 10 item 4
    payload, copy = encoder(JSONSerializer())(value)
    assert_identical(copy, value)
    assert_identical(orjson.loads(payload), copy)


def check_refused_or_unchanged(value: Any, name: str) -> None:
    s = JSONSerializer() if name == "json" else MsgpackSerializer()
    try:
        payload, copy = encoder(s)(value)
    except cw.SerializationError:
        return
    assert_identical(copy, value)
    assert_identical(s.loads(payload), value)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(odd_values, st.sampled_from(["json", "msgpack"]))
@example([Level.LOW], "json")
@example({"a": (1,)}, "msgpack")
@example([math.nan, math.nan], "msgpack")
@example({True: 1.0}, "msgpack")
def test_encode_refuses_or_gives_back_unchanged(value: Any, name: str) -> None:
    # issue 10 item 4
    check_refused_or_unchanged(value, name)


@pytest.mark.slow
@settings(max_examples=5_000, deadline=None)
@given(odd_values, st.sampled_from(["json", "msgpack"]))
def test_encode_refuses_or_gives_back_unchanged_long_random_run(value: Any, name: str) -> None:
    # issue 10 item 4
    check_refused_or_unchanged(value, name)


@pytest.mark.parametrize("name", ["json", "msgpack"])
def test_every_finite_float_comes_back_bit_for_bit(name: str) -> None:
    # issue 10 item 4: the copy is built without parsing the payload, so the format must
    # give every float back exactly (random bit patterns, subnormals, -0.0)
    import random

    s = JSONSerializer() if name == "json" else MsgpackSerializer()
    rng = random.Random(20240601)
    floats = [struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
              for _ in range(20_000)]
    floats = [f for f in floats if math.isfinite(f)] + [-0.0, 5e-324, -5e-324, 2.0**-1022]
    payload, copy = encoder(s)(floats)
    assert_identical(copy, floats)
    assert_identical(s.loads(payload), floats)
