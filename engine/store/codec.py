"""How the store writes and reads documents: compact JSON, zlib-compressed when long."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from itertools import accumulate
from typing import Any

from engine.keyspace import text

__all__ = ["COMPRESS_OVER", "JSON_FIELDS", "decode_activities", "decode_instance_hash", "dumps", "dumps_with", "pack",
           "pack_text", "split_hash", "text", "unpack"]

#: JSON documents longer than this are stored zlib-compressed (holdings, proposals, activity records).
COMPRESS_OVER = 256
#: Hash fields that hold JSON documents (besides the context entries ``c:<node>``).
JSON_FIELDS = frozenset({"data", "result", "error", "quorum"})


#: What ``json.dumps(value, separators=(",", ":"), default=str)`` builds on every call, built once.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


def dumps(value: Any) -> str:
    """Compact JSON, the only serialisation the store uses."""
    return _ENCODER.encode(value)


def dumps_with(value: dict[str, Any], key: str, encoded: str) -> str:
    """``dumps(value)`` when ``value[key]`` is already encoded as ``encoded`` (``dumps(value[key])``):
    the same text, without encoding that part again."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    part = before
    for name, item in value.items():
        if name == key:
            part = after
        else:
            part[name] = item
    head, tail = dumps(before)[:-1], dumps(after)[1:]
    return "".join((head, "," if before else "", dumps(key), ":", encoded, "," if after else "", tail))


def pack(value: Any) -> str | bytes:
    """``value`` as stored: compact JSON, zlib-compressed when long."""
    return pack_text(dumps(value))


def pack_text(text: str) -> str | bytes:
    """A document's compact JSON as stored: zlib-compressed when long.

    A zlib stream starts with byte 0x78 ("x"), which no JSON text starts with, so
    :func:`unpack` tells the two apart without a marker.
    """
    return zlib.compress(text.encode(), 1) if len(text) > COMPRESS_OVER else text


def unpack(raw: bytes | str) -> str:
    """The JSON text of a stored document (compressed or not)."""
    if isinstance(raw, str):
        return raw
    return zlib.decompress(raw).decode() if raw[:1] == b"x" else raw.decode()


def split_hash(sizes: bytes, joined: bytes) -> dict[bytes, bytes]:
    """A hash sent as two strings (its fields' and values' byte lengths, comma-separated, in
    HGETALL order, and all of them end to end) as HGETALL gives it."""
    ends = list(accumulate(map(int, sizes.split(b","))))
    parts = [joined[start:end] for start, end in zip([0, *ends], ends, strict=False)]
    return dict(zip(parts[0::2], parts[1::2], strict=True))


def decode_instance_hash(raw: dict[Any, Any]) -> dict[str, str]:
    """An instance hash as read from Redis, with its JSON documents unpacked."""
    out = {}
    for key, value in raw.items():
        name = text(key)
        out[name] = unpack(value) if name in JSON_FIELDS or name.startswith("c:") else text(value)
    return out


def decode_activities(raw: Iterable[bytes | str]) -> list[dict[str, Any]]:
    """Activity records as read from Redis."""
    return [json.loads(unpack(record)) for record in raw]
