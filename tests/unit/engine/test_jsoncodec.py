"""The JSON codec: what it writes and reads means what the standard library's json wrote and read.

A rolling upgrade mixes both: a document an older worker wrote (``json.dumps``, ASCII escapes,
``NaN``, integers of any size) reads back the same, and one this codec writes reads back the
same with ``json.loads``.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pytest

from engine.errors import MalformedAnswer
from engine.instance import Instance
from engine.jsoncodec import NotJSON, _finite, _walked_finite, dumps, encode, encode_known, encode_strict, loads
from engine.service import ok
from engine.store.codec import decode_activities, decode_instance_hash, load, pack

#: The standard library's path, as the store and the service wrote before.
OLD_LENIENT = json.JSONEncoder(separators=(",", ":"), default=str)
OLD_STRICT = json.JSONEncoder(allow_nan=False, separators=(",", ":"))

DOCUMENTS: list[Any] = [
    {},
    [],
    {"a": 1, "b": [1, 2.5, None, True, False], "c": {"d": {"e": [{"f": "g"}]}}},
    {"unicode": "é ü 中文 😀 \u2028 \u0000 \"quote\" \\ back", "ключ": "значение"},
    {"big": 2**70, "neg": -(2**70), "edge": [2**63 - 1, -(2**63), 2**64 - 1, 2**64, -(2**63) - 1, 10**19]},
    {"floats": [0.1, 1e-05, 1e16, 1.5e300, -0.0, 5e-324, 123456789.123456789, 1 / 3]},
    {"ids": ["9223372036854775808", "12345678901234567890123"]},  # long digit runs in strings
    [[[[[[[[[[1]]]]]]]]]],
]


@pytest.mark.parametrize("value", DOCUMENTS)
def test_round_trip_and_both_ways_with_the_standard_library(value: Any) -> None:
    text = encode(value)
    assert isinstance(text, bytes) and text == dumps(value).encode()
    assert loads(text) == value and loads(text.decode()) == value
    assert json.loads(text) == value  # an older reader reads what this writes
    old = OLD_LENIENT.encode(value)
    assert loads(old) == value and loads(old.encode()) == value  # and this reads what an older writer wrote
    assert encode_strict(value) == text


def test_integers_beyond_64_bits_keep_every_digit() -> None:
    for number in (2**64, -(2**63) - 1, -9999999999999999999, 10**40):
        assert encode(number) == str(number).encode()
        value = loads(json.dumps({"n": number}))
        assert value == {"n": number} and type(value["n"]) is int


def test_nan_and_infinity_are_written_and_read_as_the_standard_library_did() -> None:
    value = {"x": [1.0, math.nan, math.inf, -math.inf], "y": None}
    assert encode(value) == OLD_LENIENT.encode(value).encode() == b'{"x":[1.0,NaN,Infinity,-Infinity],"y":null}'
    read = loads(b'{"x":[NaN,Infinity,-Infinity]}')["x"]
    assert math.isnan(read[0]) and read[1:] == [math.inf, -math.inf]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), np.float64("nan"), [{"deep": [-math.inf]}]])
def test_strict_refuses_nan_and_infinity_naming_it(bad: Any) -> None:
    with pytest.raises(NotJSON, match="Out of range float values are not JSON compliant"):
        encode_strict({"value": bad, "n": None})


@dataclass
class Point:
    x: int


@pytest.mark.parametrize("bad, name", [({1, 2}, "set"), (b"raw", "bytes"), (object(), "object"),
                                       (datetime(2026, 1, 2, tzinfo=UTC), "datetime"), (date(2026, 1, 2), "date"),
                                       (Point(1), "Point"), (np.int64(3), "int64"), (np.array([1.0]), "ndarray")])
def test_strict_refuses_what_json_has_no_type_for_naming_the_type(bad: Any, name: str) -> None:
    with pytest.raises(NotJSON, match=f"Object of type {name} is not JSON serializable"):
        encode_strict({"value": bad})
    with pytest.raises(MalformedAnswer, match=f"transition data is not plain JSON: Object of type {name}"):
        ok({"value": bad})


@pytest.mark.parametrize("value", [{1, 2}, b"raw", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), date(2026, 1, 2),
                                   Point(1), np.int64(3), np.float32(1.5), np.array([1, 2])])
def test_lenient_writes_str_of_what_json_has_no_type_for_as_before(value: Any) -> None:
    document = {"v": value, "k": [value]}
    assert encode(document) == OLD_LENIENT.encode(document).encode()


def test_float_subclasses_and_odd_keys_as_before() -> None:
    value = {"f": np.float64(2.5), "k": {1: "int key", 2.5: "float", False: "bool", None: "none"}}
    assert encode(value) == OLD_LENIENT.encode(value).encode() == encode_strict(value)
    assert loads(encode(value)) == {"f": 2.5, "k": {"1": "int key", "2.5": "float", "false": "bool", "null": "none"}}


def test_lone_surrogates_round_trip_through_the_fallback() -> None:
    value = {"s": "\ud800x"}
    assert loads(encode(value)) == value
    assert loads(json.dumps(value)) == value


def test_unreadable_text_raises_a_value_error() -> None:
    for bad in (b"", b"{", b"{'a': 1}", b"[1,]", "nope"):
        with pytest.raises(ValueError):
            loads(bad)


def test_stored_documents_written_by_the_old_path_decode() -> None:
    record = {"seq": 3, "node": "plan", "received": {"orders": [{"symbol": "VCN", "qty": 12.5}] * 40, "note": "é"}}
    old_long = zlib.compress(OLD_LENIENT.encode(record).encode(), 1)
    old_short = OLD_LENIENT.encode({"a": "é"})
    assert decode_activities([old_long, old_short.encode(), pack(record)]) == [record, {"a": "é"}, record]
    assert load(old_long) == record and load(old_short) == {"a": "é"}
    raw = {b"id": b"i1", b"workflow": b"w", b"version": b"2", b"run": b"r", b"status": b"running", b"node": b"n",
           b"seq": b"3", b"created_at": b"1.5", b"data": OLD_LENIENT.encode({"acct": "ü"}).encode(),
           b"c:plan": old_long, b"c:new": pack({"x": 2**70}), b"result": b"null"}
    instance = Instance.from_hash(decode_instance_hash(raw))
    assert instance.data == {"acct": "ü"} and instance.context == {"plan": record, "new": {"x": 2**70}}
    assert instance.version == 2 and instance.result is None


def test_known_documents_are_written_as_encode_writes_them() -> None:
    """A step message's envelope (strings, integers, None) is not walked for NaN but written the same;
    what orjson cannot write exactly still goes to the standard library."""
    envelope = {"headers": {"shadow": None, "eta": None, "timelimit": [None, None], "retries": 0},
                "body": [["i-1", "node", 3, 1], {}, {"chain": None}], "ok": True, "name": "\u00e9"}
    assert encode_known(envelope) == encode(envelope)
    assert loads(encode_known(envelope)) == envelope
    assert encode_known([2**70, None]) == encode([2**70, None]) == b"[1180591620717411303424,null]"


# -- the NaN check: marshal's bytes first, the walk where they do not decide ---------------------


@pytest.mark.parametrize("bad", [math.nan, -math.nan, math.inf, -math.inf, float.fromhex("0x1.8p-1") * math.inf])
@pytest.mark.parametrize("where", ["value", "list", "tuple", "deep", "twice"])
def test_every_nan_and_infinity_is_found_wherever_it_sits(bad: float, where: str) -> None:
    value = {"value": {"ok": 1.5, "x": bad}, "list": [1, "a", bad], "tuple": ("a", (bad,)),
             "deep": [{"a": [{"b": [bad]}]}], "twice": [bad, bad, {"again": bad}]}[where]
    assert _finite(value) is False and _walked_finite(value) is False
    with pytest.raises(NotJSON):
        encode_strict({"n": None, "data": value})


def test_finite_floats_at_the_ends_of_the_range_are_finite() -> None:
    edges = [1.7976931348623157e308, -1.7976931348623157e308, 5e-324, -0.0, 2.0 ** 1023, 123.456]
    assert _finite({"edges": edges, "n": None}) is True


@pytest.mark.parametrize("value", [
    {"big": 0x7FF0, "n": None},  # an integer whose bytes hold the pair: the walk decides (finite)
    {"text": "x" * 127, "again": "x" * 127},  # a short text's length byte after a referenced type byte
    {"f": np.float64(1.0), "n": None},  # a float subclass: marshal refuses it, the walk decides
    {"s": {1.0, 2.0}, "n": None},  # a set (the walk does not look inside, as before)
])
def test_what_marshal_cannot_decide_is_walked_and_decided_the_same(value: Any) -> None:
    assert _finite(value) is _walked_finite(value) is True


def test_a_nan_marshal_cannot_write_is_found_by_the_walk() -> None:
    assert _finite({"f": np.float64("nan"), "n": None}) is False
    nested: Any = math.nan
    for _ in range(3000):  # deeper than marshal writes
        nested = [nested]
    assert _finite(nested) is False


def test_the_check_agrees_with_the_walk_on_random_documents() -> None:
    rng = np.random.default_rng(7)
    specials = [math.nan, math.inf, -math.inf]

    def document(depth: int) -> Any:
        pick = rng.integers(0, 8)
        if depth > 3 or pick < 3:
            return [float(rng.normal() * 10.0 ** rng.integers(-300, 300)), int(rng.integers(-2**40, 2**40)),
                    "t\u00e9xt\U0001f600", None, True][int(rng.integers(0, 5))]
        if pick < 5:
            return {f"k{i}": document(depth + 1) for i in range(int(rng.integers(0, 5)))}
        return [document(depth + 1) for _ in range(int(rng.integers(0, 5)))]

    for round_ in range(400):
        value = [document(0) for _ in range(3)]
        if round_ % 3 == 0:
            value.append({"x": [specials[round_ % 2], 1]})
        assert _finite(value) is _walked_finite(value)
