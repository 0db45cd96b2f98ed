"""Load and check workflow definitions: every problem, with its JSON pointer and a fix.

``load_definition`` parses a definition file and reports *all* its problems at once, each
with the RFC 6901 JSON pointer of the place and a message that suggests the fix::

    definitions/rebalance-us.json: /nodes/calc/transitions/ok: unknown node 'submitt' (did you mean 'submit'?)

Checks, in order: the JSON itself (syntax with line and column, duplicate keys, a top level
that is an object, size and depth), the structure (pydantic models of
:mod:`engine.definitions.model`, strict: missing and unknown keys at every level, node types, value
types and ranges), then the graph and the expressions (:func:`check_definition`): every
``start``/transition/``next``/``default`` names a node, every node is reachable from
``start`` and can reach a terminal, every expression compiles (roots, functions, bounds), a
plain reference ``params.X`` names a parameter and ``context.X`` a node (found on the
expression's tokens, so text inside string literals is never mistaken for a reference;
computed references such as ``params[name]`` are not checked), and ``initial_data`` is a
valid JSON Schema (Draft 2020-12).

Run ``python -m engine.definitions.validation --write-schema definitions/schema.json`` to publish the
JSON Schema of the format, or ``python -m engine.definitions.validation FILE...`` to check files
(functions added by plugins must be registered first: prefer ``tradeflow definitions validate``).
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import math
import sys
import types
import typing
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ValidationError

from engine.definitions.model import (
    IDENT_PATTERN,
    NAME_PATTERN,
    NODE_PATTERN,
    AwaitNode,
    ChoiceNode,
    Definition,
    GatherNode,
    HttpNode,
    ServiceNode,
    TerminalNode,
    WaitNode,
)
from engine.errors import DefinitionError, ExpressionError, InvalidInput, Problem
from engine.expressions.cel import compile_expression, template_strings
from engine.expressions.scan import INSTANCE_FIELDS

__all__ = ["SCHEMA_ID", "check_definition", "json_schema", "load_definition", "validate_file", "validate_input"]

SCHEMA_ID = "https://tradeflow.dev/schemas/definition.json"
MAX_DEFINITION_BYTES = 1 << 20
MAX_JSON_DEPTH = 64
NODE_TYPES: dict[str, type[BaseModel]] = {
    "service": ServiceNode,
    "http": HttpNode,
    "wait": WaitNode,
    "await": AwaitNode,
    "gather": GatherNode,
    "choice": ChoiceNode,
    "terminal": TerminalNode,
}
_ALLOWED_TYPES = ", ".join(sorted(NODE_TYPES))
_PATTERN_HINTS = {
    NAME_PATTERN: "lowercase letters, digits, '_', '.' and '-', starting with a letter or digit (at most 64)",
    NODE_PATTERN: "letters, digits, '_' and '-', starting with a letter or '_' (at most 64)",
    IDENT_PATTERN: "lowercase letters, digits and '_', starting with a letter or '_' (at most 64)",
    r"^https?://": "an http:// or https:// URL",
}
_WHAT = {"nodes": "node name", "transitions": "transition name", "signals": "signal name", "name": "workflow name",
         "url": "URL"}
_WAIT_HINT = "an expression giving the time to wake up, e.g. \"now() + duration('30m')\""


# --------------------------------------------------------------------------- public API


def load_definition(text: str | bytes, source: str = "<definition>") -> Definition:
    """Parse and check a definition; ``DefinitionError`` lists every problem found."""
    document, problems = _parse(text)
    if document is None and problems:
        raise DefinitionError(problems, source)
    if not isinstance(document, dict):
        kind = _json_kind(document)
        raise DefinitionError([Problem("", f"a definition must be a JSON object {{...}}, got {kind}")], source)
    definition: Definition | None = None
    try:
        definition = Definition.model_validate_json(json.dumps(document), strict=True)
    except ValidationError as exc:
        problems.extend(_model_problems(exc))
    problems.extend(_check_document(document))
    if problems:
        raise DefinitionError(_unique(problems), source)
    assert definition is not None
    return definition


def validate_file(path: str | Path) -> Definition:
    """Load and check the definition file at ``path`` (problems name the file)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DefinitionError([Problem("", f"cannot read: {exc.strerror or exc}")], str(path)) from exc
    return load_definition(data, str(path))


def check_definition(definition: Definition) -> list[Problem]:
    """Graph, expression, reference and schema problems of an already-built definition."""
    return _unique(_check_document(definition.model_dump(mode="json")))


def json_schema() -> dict[str, Any]:
    """The published JSON Schema (Draft 2020-12) of the definition format."""
    schema = _tighten(Definition.model_json_schema())
    body = {k: v for k, v in schema.items() if k not in ("title", "description")}
    body["properties"] = {
        "$schema": {"type": "string", "description": f"This schema, for editors: {SCHEMA_ID}"},
        **body["properties"],
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "tradeflow workflow definition",
        "description": (
            "A business process as a JSON state machine: nodes of type service, http, wait, await, choice "
            "and terminal, starting at 'start'. Strings in 'input', 'result', 'when', 'until' and 'timeout' are "
            "CEL expressions over data, params, context and instance; numbers, booleans and null are literals."
        ),
        **body,
    }


def validate_input(definition: Definition, data: Any) -> None:
    """Check initial ``data`` against ``definition.initial_data``; ``InvalidInput`` lists each problem."""
    validator = _input_validator(json.dumps(definition.initial_data, sort_keys=True))
    try:
        errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    except Exception as exc:  # an unresolvable $ref and the like: the schema, not the data
        problem = Problem("/initial_data", f"cannot check input with this schema: {exc}")
        raise DefinitionError([problem], definition.name) from exc
    if not errors:
        return
    problems = [Problem(_pointer(e.absolute_path), e.message) for e in errors]
    exc = InvalidInput(f"invalid input for {definition.name}: " + "; ".join(str(p) for p in problems))
    exc.problems = problems  # type: ignore[attr-defined]
    raise exc


@functools.lru_cache(maxsize=256)
def _input_validator(schema_text: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_text), format_checker=Draft202012Validator.FORMAT_CHECKER)


# --------------------------------------------------------------------------- JSON


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


def _parse(text: str | bytes) -> tuple[Any, list[Problem]]:
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
            problems.append(Problem(f"{pointer}/{_escape(key)}", f"duplicate key {key!r}: keep only one"))
    return document, problems


def _walk(document: Any) -> Iterator[tuple[str, Any, int]]:
    """Every JSON value with its pointer and depth, breadth first (no recursion)."""
    queue: deque[tuple[str, Any, int]] = deque([("", document, 0)])
    while queue:
        pointer, value, depth = queue.popleft()
        yield pointer, value, depth
        if isinstance(value, dict):
            queue.extend((f"{pointer}/{_escape(k)}", v, depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            queue.extend((f"{pointer}/{i}", v, depth + 1) for i, v in enumerate(value))


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _escape(key: Any) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def _pointer(parts: Iterable[Any]) -> str:
    return "".join(f"/{_escape(p)}" for p in parts)


def _did_you_mean(word: Any, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unique(problems: list[Problem]) -> list[Problem]:
    return list(dict.fromkeys(problems))


# --------------------------------------------------------------------------- model errors


def _model_problems(exc: ValidationError) -> list[Problem]:
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
        path.append(part)
        current = _child_type(current, part)
    return path, current


def _unwrap(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _is_node_union(tp: Any) -> bool:
    tp = _unwrap(tp)
    return typing.get_origin(tp) in (typing.Union, types.UnionType) and set(typing.get_args(tp)) == set(
        NODE_TYPES.values()
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
    pointer = _pointer(path)
    if kind == "missing":
        parent, key = _pointer(path[:-1]), path[-1]
        parent_type = _locate(loc[:-1])[1]
        if parent_type is WaitNode and key == "until":
            return Problem(parent, f"missing required key 'until': a wait needs {_WAIT_HINT}")
        return Problem(parent, f"missing required key {key!r}")
    if kind == "extra_forbidden":
        parent_type = _unwrap(_locate(loc[:-1])[1])
        allowed = list(parent_type.model_fields) if isinstance(parent_type, type) else []
        hint = _did_you_mean(path[-1], allowed) + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
        return Problem(pointer, f"unknown key {path[-1]!r}{hint}")
    if kind == "value_error":  # a model's own check (e.g. an await's timeout without on_timeout)
        return Problem(pointer, str(ctx.get("error", msg)))
    if kind == "union_tag_invalid":
        tag = ctx.get("tag")
        return Problem(
            f"{pointer}/type",
            f"unknown node type {tag!r}{_did_you_mean(tag, NODE_TYPES)}; allowed types: {_ALLOWED_TYPES}",
        )
    if kind == "union_tag_not_found":
        return Problem(pointer, f"missing required key 'type' (one of: {_ALLOWED_TYPES})")
    if kind == "string_pattern_mismatch":
        hint = _PATTERN_HINTS.get(ctx.get("pattern", ""), f"match {ctx.get('pattern')}")
        what = _WHAT.get(str(path[-2]) if "[key]" in loc and len(path) > 1 else str(path[-1]), "value")
        return Problem(pointer, f"invalid {what} {value!r}: use {hint}")
    if kind == "string_too_short" and _locate(loc[:-1])[1] is WaitNode:
        return Problem(pointer, f"a wait needs a time: 'until' must be {_WAIT_HINT}")
    if kind == "too_short":
        return Problem(pointer, f"must not be empty (at least {ctx.get('min_length', 1)})")
    if kind in ("enum", "literal_error"):
        options = [o.strip("'") for o in str(ctx.get("expected", "")).replace(" or ", ", ").split(", ")]
        return Problem(pointer, f"must be {ctx.get('expected')}, got {value!r}{_did_you_mean(value, options)}")
    if kind in ("model_type", "dict_type"):
        return Problem(pointer, f"must be an object {{...}}, got {_json_kind(value)}")
    text = msg.replace("Input should be", "must be").replace("Input should have", "must have")
    shown = json.dumps(value) if _is_json(value) else repr(value)
    return Problem(pointer, f"{text}, got {shown}")


def _is_json(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | str)


# --------------------------------------------------------------------------- graph and expressions


def _check_document(document: dict[str, Any]) -> list[Problem]:
    nodes = document.get("nodes")
    if not isinstance(nodes, dict):
        return []
    problems = _check_graph(document.get("start"), nodes)
    dropped = document.get("drop_on_success")
    if isinstance(dropped, list):
        problems.extend(
            Problem(f"/drop_on_success/{i}", f"unknown node {name!r}{_did_you_mean(name, nodes)}")
            for i, name in enumerate(dropped) if isinstance(name, str) and name not in nodes
        )
    parameters = document.get("parameters", {})
    problems.extend(_check_expressions(nodes, parameters if isinstance(parameters, dict) else None))
    initial_data = document.get("initial_data")
    if isinstance(initial_data, dict):
        problems.extend(_check_schema(initial_data))
    return problems


def _edges(node: Any) -> Iterator[tuple[str, Any]]:
    """(pointer suffix, target) of every edge leaving ``node`` (leniently, on raw JSON)."""
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    known = kind in NODE_TYPES
    if (kind in ("service", "http", "gather") or not known) and isinstance(node.get("transitions"), dict):
        for name, target in node["transitions"].items():
            yield f"/transitions/{_escape(name)}", target
    if (kind == "wait" or not known) and "next" in node:
        yield "/next", node["next"]
    if (kind == "await" or not known) and isinstance(node.get("signals"), dict):
        for name, target in node["signals"].items():
            yield f"/signals/{_escape(name)}", target
    if (kind == "await" or not known) and "on_timeout" in node:
        yield "/on_timeout", node["on_timeout"]
    if (kind == "gather" or not known) and "late" in node:
        yield "/late", node["late"]
    if kind == "choice" or not known:
        if isinstance(node.get("choices"), list):
            for index, choice in enumerate(node["choices"]):
                if isinstance(choice, dict) and "next" in choice:
                    yield f"/choices/{index}/next", choice["next"]
        if "default" in node:
            yield "/default", node["default"]


def _is_broken(node: Any) -> bool:
    """A node of a known type whose edges are missing or malformed (the model reports why)."""
    if not isinstance(node, dict) or node.get("type") not in NODE_TYPES:
        return False
    kind = node["type"]
    if kind in ("service", "http", "gather"):
        transitions = node.get("transitions")
        return not isinstance(transitions, dict) or not transitions
    if kind == "wait":
        return not isinstance(node.get("next"), str)
    if kind == "await":
        signals = node.get("signals")
        return not isinstance(signals, dict) or not signals
    if kind == "choice":
        choices = node.get("choices")
        return not isinstance(node.get("default"), str) or not isinstance(choices, list) or not choices
    return False


def _check_graph(start: Any, nodes: dict[str, Any]) -> list[Problem]:
    """Unknown targets, unreachable nodes and nodes that cannot finish.

    A node with a broken edge (unknown target, missing or malformed edges) counts as able to
    finish, and unreachable nodes are not reported while any edge is broken: those would be
    consequences of the broken edge, which is reported itself.
    """
    problems: list[Problem] = []
    successors: dict[str, list[str]] = {name: [] for name in nodes}
    broken = {name for name, node in nodes.items() if _is_broken(node)}
    for name, node in nodes.items():
        known = isinstance(node, dict) and node.get("type") in NODE_TYPES
        for suffix, target in _edges(node):
            if isinstance(target, str) and target in nodes:
                successors[name].append(target)
            elif known:
                broken.add(name)
                if isinstance(target, str):  # other types: reported by the model
                    problems.append(
                        Problem(
                            f"/nodes/{_escape(name)}{suffix}", f"unknown node {target!r}{_did_you_mean(target, nodes)}"
                        )
                    )
    if isinstance(start, str) and start not in nodes:
        problems.append(Problem("/start", f"unknown node {start!r}{_did_you_mean(start, nodes)}"))
    elif isinstance(start, str) and not broken:
        reached = _closure([start], successors)
        problems.extend(
            Problem(
                f"/nodes/{_escape(name)}",
                f"node {name!r} cannot be reached from start {start!r}: add a transition to it or remove it",
            )
            for name in nodes
            if name not in reached
        )
    terminals = [n for n, node in nodes.items() if isinstance(node, dict) and node.get("type") == "terminal"]
    if not terminals:
        problems.append(
            Problem("/nodes", 'no terminal node: add one, e.g. "done": {"type": "terminal", "status": "succeeded"}')
        )
        return problems
    predecessors: dict[str, list[str]] = {name: [] for name in nodes}
    for name, targets in successors.items():
        for target in targets:
            predecessors[target].append(name)
    finishing = _closure([*terminals, *broken], predecessors)
    problems.extend(
        Problem(
            f"/nodes/{_escape(name)}",
            f"no terminal node can be reached from {name!r}, so an instance there never ends: "
            "add a transition that leads to a terminal node",
        )
        for name, node in nodes.items()
        if name not in finishing and isinstance(node, dict) and node.get("type") in NODE_TYPES
    )
    return problems


def _closure(seeds: list[str], graph: dict[str, list[str]]) -> set[str]:
    seen = set(seeds)
    queue = deque(seeds)
    while queue:
        for nxt in graph[queue.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


def _expression_sources(nodes: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(pointer, source) of every expression in the nodes (raw JSON; wrong types skipped)."""
    for name, node in nodes.items():
        if not isinstance(node, dict):
            continue
        base = f"/nodes/{_escape(name)}"
        kind = node.get("type")
        if kind in ("service", "http", "gather") and "input" in node:
            yield from template_strings(node["input"], f"{base}/input")
        if kind == "gather":
            for key in ("group", "close"):
                if isinstance(node.get(key), str) and node[key]:
                    yield f"{base}/{key}", node[key]
        elif kind == "terminal" and node.get("result") is not None:
            yield from template_strings(node["result"], f"{base}/result")
        elif kind == "choice" and isinstance(node.get("choices"), list):
            for index, choice in enumerate(node["choices"]):
                if isinstance(choice, dict) and isinstance(choice.get("when"), str) and choice["when"]:
                    yield f"{base}/choices/{index}/when", choice["when"]
        elif kind == "wait" and isinstance(node.get("until"), str) and node["until"]:
            yield f"{base}/until", node["until"]
        elif kind == "await" and isinstance(node.get("timeout"), str) and node["timeout"]:
            yield f"{base}/timeout", node["timeout"]


def _check_expressions(nodes: dict[str, Any], parameters: dict[str, Any] | None) -> list[Problem]:
    problems = []
    for pointer, source in _expression_sources(nodes):
        try:
            expression = compile_expression(source)
        except ExpressionError as exc:
            problems.append(Problem(pointer, str(exc)))
            continue
        for path in sorted(expression.paths):
            if len(path) < 2:
                continue
            root, key = path[0], path[1]
            if root == "params" and parameters is not None and key not in parameters:
                problems.append(
                    Problem(
                        pointer,
                        f"unknown parameter {key!r}{_did_you_mean(key, parameters)}: "
                        'add it to "parameters" or fix the name',
                    )
                )
            elif root == "instance" and key not in INSTANCE_FIELDS:
                problems.append(
                    Problem(
                        pointer,
                        f"unknown field {key!r} in 'instance.{key}'{_did_you_mean(key, INSTANCE_FIELDS)}: "
                        f"the instance root has {', '.join(sorted(INSTANCE_FIELDS))}",
                    )
                )
            elif root == "context" and key not in nodes:
                problems.append(
                    Problem(
                        pointer,
                        f"unknown node {key!r} in 'context.{key}'{_did_you_mean(key, nodes)}: "
                        "the context holds what each node returned, under the node's name",
                    )
                )
    return problems


def _check_schema(schema: dict[str, Any]) -> list[Problem]:
    meta = Draft202012Validator(Draft202012Validator.META_SCHEMA)
    try:
        errors = list(meta.iter_errors(schema))
    except SchemaError as exc:  # pragma: no cover - the meta-schema itself is fine
        errors = [exc]
    return [
        Problem(f"/initial_data{_pointer(e.absolute_path)}", f"not a valid JSON Schema: {e.message}") for e in errors
    ]


def _tighten(schema: Any) -> Any:
    """The models' schema, as strict as the models: a key pattern becomes ``propertyNames`` (pydantic
    writes ``patternProperties``, which lets other keys through); reST quotes become Markdown."""
    if isinstance(schema, list):
        return [_tighten(v) for v in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        key: value.replace("``", "`") if key == "description" and isinstance(value, str) else _tighten(value)
        for key, value in schema.items()
    }
    pattern_properties = out.get("patternProperties")
    if isinstance(pattern_properties, dict) and len(pattern_properties) == 1 and "properties" not in out:
        ((pattern, value_schema),) = pattern_properties.items()
        del out["patternProperties"]
        out["propertyNames"] = {"pattern": pattern}
        out["additionalProperties"] = value_schema
    return out


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.definitions.validation [--write-schema PATH] [FILE...]``."""
    parser = argparse.ArgumentParser(prog="python -m engine.definitions.validation", description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="definition files to check")
    parser.add_argument("--write-schema", type=Path, metavar="PATH", help="write the format's JSON Schema to PATH")
    args = parser.parse_args(argv)
    if args.write_schema:
        args.write_schema.write_text(json.dumps(json_schema(), indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.write_schema}")
    status = 0
    for path in args.files:
        try:
            definition = validate_file(path)
        except DefinitionError as exc:
            print(exc, file=sys.stderr)
            status = 1
        else:
            print(f"{path}: ok ({definition.name}, {len(definition.nodes)} nodes)")
    return status


if __name__ == "__main__":
    sys.exit(main())
