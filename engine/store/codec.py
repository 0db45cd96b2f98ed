"""How the store writes and reads documents: compact JSON, zlib-compressed when long."""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from typing import Any

from engine.keyspace import text

__all__ = ["COMPRESS_OVER", "JSON_FIELDS", "decode_activities", "decode_instance_hash", "dumps", "pack", "text",
           "unpack"]

#: JSON documents longer than this are stored zlib-compressed (holdings, proposals, activity records).
COMPRESS_OVER = 256
#: Hash fields that hold JSON documents (besides the context entries ``c:<node>``).
JSON_FIELDS = frozenset({"data", "result", "error"})


#: ``json.dumps(value, separators=(",", ":"), default=str)`` without building an encoder per call.
_COMPACT = json.JSONEncoder(separators=(",", ":"), default=str).encode


def dumps(value: Any) -> str:
    """Compact JSON, the only serialisation the store uses."""
    return _COMPACT(value)


def pack(value: Any) -> str | bytes:
    """``value`` as stored: compact JSON, zlib-compressed when long.

    A zlib stream starts with byte 0x78 ("x"), which no JSON text starts with, so
    :func:`unpack` tells the two apart without a marker.
    """
    out = dumps(value)
    return zlib.compress(out.encode(), 1) if len(out) > COMPRESS_OVER else out


def unpack(raw: bytes | str) -> str:
    """The JSON text of a stored document (compressed or not)."""
    if isinstance(raw, str):
        return raw
    return zlib.decompress(raw).decode() if raw[:1] == b"x" else raw.decode()


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
