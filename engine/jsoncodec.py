"""JSON text in and out of the engine: stored documents, the store's operation documents, the
transition data a service answers, the step messages the engine builds and reads.

The only module that imports ``orjson``; every other one calls these functions. orjson encodes
about ten times and decodes about two and a half times faster than the standard library, and its
output is JSON, so whatever reads it (older workers in a rolling upgrade, kombu, the Lua scripts'
cjson, a person) reads it unchanged. It writes compact JSON as UTF-8 (no ``\\uXXXX`` escapes).

Where orjson and the standard library differ, the standard library's meaning is kept:

- **Encoding.** orjson refuses what it cannot write exactly (integers beyond 64 bits, keys that
  are not strings, lone surrogates, nesting deeper than 254): such a value is written by the
  standard library instead, as before. It writes NaN and ±Infinity as ``null``: a document
  that has a ``null`` is checked for them, and one that has them is written by the standard
  library (:func:`encode`: ``NaN`` as before) or refused (:func:`encode_strict`). Dates,
  dataclasses and other objects JSON has no type for are written as their ``str()``
  (:func:`encode`, as ``default=str`` did) or refused (:func:`encode_strict`); a float subclass
  (``numpy.float64``) is written as the float it is, as before. (A UUID is written as its
  string and a plain ``Enum`` member as its value by both.)
- **Decoding.** orjson reads integers beyond 64 bits as floats, and refuses ``NaN`` and
  ``Infinity`` (which the standard library writes): a text with a run of 19 digits or more, or
  one orjson refuses, is read by the standard library, so every document an older version
  wrote reads back the same.
"""

from __future__ import annotations

import json
import marshal
from typing import Any

import orjson

__all__ = ["NotJSON", "dumps", "encode", "encode_known", "encode_strict", "loads"]


class NotJSON(ValueError):
    """A value JSON cannot carry as it is (NaN, a set, bytes, an object...), refused by :func:`encode_strict`."""


#: Dates and dataclasses go to ``default`` (their ``str()``, as the standard library's path wrote them).
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
#: The standard library's encoders: the fallbacks, and the meaning kept.
_LENIENT = json.JSONEncoder(separators=(",", ":"), default=str)
_STRICT = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
#: bytes.translate table: every digit to "0", every other byte to "x"; a run of 19 zeros after it is a
#: run of 19 digits: possibly an integer beyond 64 bits (-9223372036854775809 has 19).
_DIGITS = bytes(48 if 48 <= i <= 57 else 120 for i in range(256))
_LONG_NUMBER = b"0" * 19


def _lenient_default(value: Any) -> Any:
    """What :func:`encode` writes for a value orjson has no type for: a float subclass as its float, else its str()."""
    return float(value) if isinstance(value, float) else str(value)


def _strict_default(value: Any) -> Any:
    """A float subclass as its float; anything else orjson has no type for is refused."""
    if isinstance(value, float):
        return float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _finite(value: Any) -> bool:
    """False when ``value`` holds a NaN or an infinity anywhere (orjson would write ``null``).

    Looked at first in ``marshal``'s bytes of ``value``, written in C: marshal writes every float
    (of the exact type; anything else it refuses) as its 8 bytes, little-endian, and a NaN's or an
    infinity's end in a byte of 0xF0 or more then 0x7F or 0xFF (all its exponent bits set), which
    no finite float's do and no UTF-8 text has. Where marshal refuses ``value`` or such a pair of
    bytes is there (a NaN, or an integer or a length that happens to hold it), the document is
    walked (:func:`_walked_finite`), which decides."""
    try:
        raw = marshal.dumps(value)
    except (ValueError, RecursionError):  # a type marshal does not write (a float subclass...), or too deep
        return _walked_finite(value)
    for mark in _EXPONENT_ENDS:
        at = raw.find(mark, 1)
        while at != -1:
            if raw[at - 1] >= 0xF0:
                return _walked_finite(value)
            at = raw.find(mark, at + 1)
    return True


#: The last byte of a NaN or an infinity written little-endian (the sign bit, then exponent bits all set).
_EXPONENT_ENDS = (b"\x7f", b"\xff")


def _walked_finite(value: Any) -> bool:
    """:func:`_finite`, by looking at every value of the document in turn."""
    stack = [(value,)]  # containers whose items are still to look at
    pop, push = stack.pop, stack.append
    while stack:
        for item in pop():
            kind = type(item)
            if kind is str or kind is int or item is None or kind is bool:
                continue
            if kind is float:
                if item - item != 0.0:  # NaN - NaN and inf - inf are NaN
                    return False
            elif kind is dict:
                push(item.values())
            elif kind is list or kind is tuple:
                push(item)
            elif isinstance(item, float):  # numpy.float64 and other subclasses
                if item - item != 0.0:
                    return False
            elif isinstance(item, dict):
                push(item.values())
            elif isinstance(item, list | tuple):
                push(item)
    return True


def encode(value: Any) -> bytes:
    """``value`` as compact JSON (UTF-8): what ``json.dumps(value, separators=(",", ":"), default=str)``
    means, written by orjson; what orjson cannot write exactly is written by the standard library."""
    try:
        out = orjson.dumps(value, default=_lenient_default, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return _LENIENT.encode(value).encode()
    if b"null" in out and not _finite(value):
        return _LENIENT.encode(value).encode()  # NaN, Infinity: written as the standard library writes them
    return out


def encode_known(value: Any) -> bytes:
    """:func:`encode` of a document the engine builds itself of strings, integers, booleans and None
    (a step message's envelope): it holds no float, so a ``null`` in its JSON is a None and the
    document is not walked for a NaN; what orjson cannot write exactly is written by :func:`encode`."""
    try:
        return orjson.dumps(value, default=_lenient_default, option=_OPTIONS)
    except orjson.JSONEncodeError:
        return encode(value)


def encode_strict(value: Any) -> bytes:
    """``value`` as compact JSON (UTF-8), or :class:`NotJSON` naming why JSON cannot carry it as it is
    (NaN or an infinity, a set, bytes, a date, an object: what ``json.dumps(value, allow_nan=False)`` refuses)."""
    try:
        out = orjson.dumps(value, default=_strict_default, option=_OPTIONS)
    except orjson.JSONEncodeError:
        out = None  # the standard library writes it (a big integer, an int key) or says why not
    if out is not None and (b"null" not in out or _finite(value)):
        return out
    try:
        return _STRICT.encode(value).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        raise NotJSON(str(exc) or type(exc).__name__) from None


def dumps(value: Any) -> str:
    """:func:`encode` as text."""
    return encode(value).decode()


def loads(text: bytes | str) -> Any:
    """The value of a JSON text, as ``json.loads`` reads it (raises ``json.JSONDecodeError``, a ValueError)."""
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    if _LONG_NUMBER in raw.translate(_DIGITS):
        return json.loads(text)  # maybe an integer orjson would read as a float
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(text)  # NaN, Infinity, a lone surrogate: as the standard library reads them
