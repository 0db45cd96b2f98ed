"""A definition's JSON text: syntax errors with line and column, duplicate keys, size and depth."""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Iterator
from typing import Any

from engine.definitions.nodes import escape_pointer
from engine.errors import Problem

MAX_DEFINITION_BYTES = 1 << 20
MAX_JSON_DEPTH = 64


class _Object(dict):
    """A JSON object that remembers the keys it saw twice."""

    duplicates: tuple[str, ...] = ()


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        duplicates = []
        for key, _ in pairs:
            if key in seen:
                duplicates.append(key)
            seen.add(key)
        obj.duplicates = tuple(duplicates)
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 parses as inf, which JSON cannot carry back out
        raise ValueError(f"number {text[:24]} is out of range for a double")
    return value


def parse(text: str | bytes) -> tuple[Any, list[Problem]]:
    """The JSON document of ``text`` and its problems (None when it cannot be read at all)."""
    if isinstance(text, bytes | bytearray):
        if len(text) > MAX_DEFINITION_BYTES:
            return None, [Problem("", f"the definition is larger than {MAX_DEFINITION_BYTES} bytes")]
        try:
            text = bytes(text).decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return None, [Problem("", f"not UTF-8 text (byte {exc.start}): save the file as UTF-8")]
    if len(text) > MAX_DEFINITION_BYTES:
        return None, [Problem("", f"the definition is larger than {MAX_DEFINITION_BYTES} bytes")]
    try:
        document = json.loads(text, object_pairs_hook=_object, parse_constant=_reject_constant,
                              parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        return None, [Problem("", f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")]
    except ValueError as exc:
        return None, [Problem("", f"malformed JSON: {exc}")]
    except RecursionError:
        return None, [Problem("", f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels")]
    problems = []
    for pointer, value, depth in _walk(document):
        if depth > MAX_JSON_DEPTH:
            return None, [Problem(pointer, f"nested deeper than {MAX_JSON_DEPTH} levels")]
        for key in getattr(value, "duplicates", ()):
            problems.append(Problem(f"{pointer}/{escape_pointer(key)}", f"duplicate key {key!r}: keep only one"))
    return document, problems


def _walk(document: Any) -> Iterator[tuple[str, Any, int]]:
    """Every JSON value with its pointer and depth, breadth first (no recursion)."""
    queue: deque[tuple[str, Any, int]] = deque([("", document, 0)])
    while queue:
        pointer, value, depth = queue.popleft()
        yield pointer, value, depth
        if isinstance(value, dict):
            queue.extend((f"{pointer}/{escape_pointer(k)}", v, depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            queue.extend((f"{pointer}/{i}", v, depth + 1) for i, v in enumerate(value))


def json_kind(value: Any) -> str:
    """What kind of JSON value ``value`` is, in words (\"an object\", \"null\"...)."""
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )
