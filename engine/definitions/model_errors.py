"""pydantic's validation errors of a definition, translated: a JSON pointer and a fix for each."""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from engine.definitions.json_text import json_kind
from engine.definitions.nodes import (
    IDENT_PATTERN,
    NAME_PATTERN,
    NODE_CLASSES,
    NODE_PATTERN,
    NODE_TYPES,
    ROLE_PATTERN,
    SIGNAL_FORMS,
    Definition,
    GatherLimits,
    SignalSpec,
    SignalTarget,
    WaitNode,
)
from engine.definitions.problems import did_you_mean, pointer
from engine.errors import Problem

_ALLOWED_TYPES = ", ".join(sorted(NODE_TYPES))
_PATTERN_HINTS = {
    NAME_PATTERN: "lowercase letters, digits, '_', '.' and '-', starting with a letter or digit (at most 64)",
    NODE_PATTERN: "letters, digits, '_' and '-', starting with a letter or '_' (at most 64)",
    IDENT_PATTERN: "lowercase letters, digits and '_', starting with a letter or '_' (at most 64)",
    ROLE_PATTERN: "lowercase letters, digits, '_' and '-', starting with a letter (at most 32)",
    r"^https?://": "an http:// or https:// URL",
}
_WHAT = {"nodes": "node name", "transitions": "transition name", "signals": "signal name", "name": "workflow name",
         "url": "URL"}
_WAIT_HINT = "an expression giving the time to wake up, e.g. \"now() + duration('30m')\""



def model_problems(exc: ValidationError) -> list[Problem]:
    """One problem per pydantic error, at its JSON pointer, in words that say what to write."""
    return [_model_problem(error) for error in exc.errors(include_url=False)]


def _locate(loc: tuple[Any, ...]) -> tuple[list[Any], Any]:
    """The JSON path of a pydantic location (union tags and '[key]' dropped) and the type there."""
    path: list[Any] = []
    current: Any = Definition
    for part in loc:
        if part == "[key]":
            continue
        if _is_node_union(current) and part in NODE_TYPES:
            current = NODE_TYPES[part]
            continue
        if part in SIGNAL_FORMS and _unwrap(current) is _unwrap(SignalTarget):  # a signal's form (name or object)
            current = SignalSpec if part == "full" else str
            continue
        path.append(part)
        current = _child_type(current, part)
    return path, current


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _model_of(tp: Any) -> Any:
    """``tp`` unwrapped; of an optional model (``Limits | None``), the model."""
    tp = _unwrap(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and not _is_node_union(tp):
        models = [a for a in typing.get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if len(models) == 1 else tp
    return tp


def _is_node_union(tp: Any) -> bool:
    tp = _unwrap(tp)
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and set(typing.get_args(tp)) == set(
        NODE_CLASSES
    )


def _child_type(tp: Any, part: Any) -> Any:
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        field = tp.model_fields.get(str(part))
        return field.annotation if field is not None else None
    origin = typing.get_origin(tp)
    if origin is dict:
        return typing.get_args(tp)[1]
    if origin is list:
        return typing.get_args(tp)[0]
    if origin in (typing.Union, types.UnionType) and not _is_node_union(tp):
        models = [a for a in typing.get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]
        return _child_type(models[0], part) if models else None
    return None


def _model_problem(error: Any) -> Problem:
    kind, loc, msg, value = error["type"], tuple(error["loc"]), error["msg"], error.get("input")
    ctx = error.get("ctx") or {}
    path, _ = _locate(loc)
    where = pointer(path)
    if kind == "value_error":  # a model's own check (e.g. an await's timeout without on_timeout)
        return Problem(where, str(ctx.get("error", error.get("msg", ""))))
    if kind == "missing":
        parent, key = pointer(path[:-1]), path[-1]
        parent_type = _locate(loc[:-1])[1]
        if parent_type is WaitNode and key == "until":
            return Problem(parent, f"missing required key 'until': a wait needs {_WAIT_HINT}")
        return Problem(parent, f"missing required key {key!r}")
    if kind == "value_error":  # a model's own check (e.g. an await's timeout without on_timeout)
        return Problem(where, str(ctx.get("error", msg)))
    if kind == "extra_forbidden":
        parent_type = _model_of(_locate(loc[:-1])[1])
        allowed = list(parent_type.model_fields) if isinstance(parent_type, type) else []
        hint = did_you_mean(path[-1], allowed) + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
        if parent_type is GatherLimits and path[-1] == "concurrency":
            hint = ("; a gather node's batch step takes a rate limit only (one batch step is one call for all "
                    "its members): put a concurrency limit on a service node before it")
        return Problem(where, f"unknown key {path[-1]!r}{hint}")
    if kind == "value_error":  # a model's own check (e.g. an await's timeout without on_timeout)
        return Problem(where, str(ctx.get("error", msg)))
    if kind == "union_tag_invalid":
        tag = ctx.get("tag")
        return Problem(
            f"{where}/type",
            f"unknown node type {tag!r}{did_you_mean(tag, NODE_TYPES)}; allowed types: {_ALLOWED_TYPES}",
        )
    if kind == "union_tag_not_found":
        return Problem(where, f"missing required key 'type' (one of: {_ALLOWED_TYPES})")
    if kind == "string_pattern_mismatch":
        hint = _PATTERN_HINTS.get(ctx.get("pattern", ""), f"match {ctx.get('pattern')}")
        what = _WHAT.get(str(path[-2]) if "[key]" in loc and len(path) > 1 else str(path[-1]), "value")
        return Problem(where, f"invalid {what} {value!r}: use {hint}")
    if kind == "string_too_short" and _locate(loc[:-1])[1] is WaitNode:
        return Problem(where, f"a wait needs a time: 'until' must be {_WAIT_HINT}")
    if kind == "too_short":
        return Problem(where, f"must not be empty (at least {ctx.get('min_length', 1)})")
    if kind in ("enum", "literal_error"):
        options = [o.strip("'") for o in str(ctx.get("expected", "")).replace(" or ", ", ").split(", ")]
        return Problem(where, f"must be {ctx.get('expected')}, got {value!r}{did_you_mean(value, options)}")
    if kind in ("model_type", "dict_type"):
        return Problem(where, f"must be an object {{...}}, got {json_kind(value)}")
    text = msg.replace("Input should be", "must be").replace("Input should have", "must have")
    shown = json.dumps(value) if _is_json(value) else repr(value)
    return Problem(where, f"{text}, got {shown}")


def _is_json(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)
