"""JSON Schemas: the published schema of the definition format, and ``initial_data`` (checked, then applied)."""

from __future__ import annotations

import functools
import json
import operator
import weakref
from collections.abc import Callable
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from engine.definitions.nodes import Definition
from engine.definitions.problems import pointer
from engine.errors import DefinitionError, InvalidInput, Problem

SCHEMA_ID = "https://tradeflow.dev/schemas/definition.json"


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
            "A business process as a JSON state machine: nodes of type service, http, wait, await, gather, "
            "choice and terminal, starting at 'start'. Strings in 'input', 'result', 'when', 'until', 'timeout', "
            "'group' and 'close' are "
            "CEL expressions over data, params, context and instance; numbers, booleans and null are literals."
        ),
        **body,
    }


def validate_input(definition: Definition, data: Any) -> None:
    """Check initial ``data`` against ``definition.initial_data``; ``InvalidInput`` lists each problem.

    The validator is built once per definition object. Schemas made only of the common
    keywords (see :func:`_quick_check`) get a quick check too: data it passes is valid
    without running ``jsonschema``; anything else goes through ``jsonschema``, which says why.
    """
    validator, quick = _checkers(definition)
    if quick is not None:
        try:
            passed = quick(data)
        except Exception:  # e.g. a comparison with an odd number type: jsonschema says what it makes of it
            passed = False
        if passed:
            return
    try:
        errors = sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    except Exception as exc:  # an unresolvable $ref and the like: the schema, not the data
        problem = Problem("/initial_data", f"cannot check input with this schema: {exc}")
        raise DefinitionError([problem], definition.name) from exc
    if not errors:
        return
    problems = [Problem(pointer(e.absolute_path), e.message) for e in errors]
    exc = InvalidInput(f"invalid input for {definition.name}: " + "; ".join(str(p) for p in problems))
    exc.problems = problems  # type: ignore[attr-defined]
    raise exc


Quick = Callable[[Any], bool]

#: id(definition) -> (a weak reference to it, its validator, its quick check); an entry goes with its definition.
_per_definition: dict[int, tuple[weakref.ref[Definition], Draft202012Validator, Quick | None]] = {}


def _checkers(definition: Definition) -> tuple[Draft202012Validator, Quick | None]:
    """The validator and quick check of ``definition``'s ``initial_data`` (definitions are frozen)."""
    key = id(definition)
    entry = _per_definition.get(key)
    if entry is not None and entry[0]() is definition:
        return entry[1], entry[2]
    schema_text = json.dumps(definition.initial_data, sort_keys=True)
    validator, quick = _input_validator(schema_text), _quick_for(schema_text)
    _per_definition[key] = (weakref.ref(definition, lambda _, k=key: _per_definition.pop(k, None)), validator, quick)
    return validator, quick


@functools.lru_cache(maxsize=256)
def _input_validator(schema_text: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_text), format_checker=Draft202012Validator.FORMAT_CHECKER)


@functools.lru_cache(maxsize=256)
def _quick_for(schema_text: str) -> Quick | None:
    return _quick_check(json.loads(schema_text))


#: Keywords that say nothing about validity.
_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "$comment", "deprecated", "readOnly",
                          "writeOnly"})
#: The keywords :func:`_quick_check` understands.
_QUICK = _ANNOTATIONS | {"type", "properties", "required", "additionalProperties", "minLength", "maxLength",
                         "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"}
_TYPES = Draft202012Validator.TYPE_CHECKER
_TYPE_CHECKS = dict(_TYPES._type_checkers.items())  # name -> fn(checker, value): the validator's own
_TYPE_NAMES = frozenset(_TYPE_CHECKS)
_FORMATS = Draft202012Validator.FORMAT_CHECKER


def _quick_check(schema: Any) -> Quick | None:
    """A check that returns True only for data ``schema`` accepts (False: ask ``jsonschema``).

    Built for schemas made only of ``type``, ``properties``, ``required``,
    ``additionalProperties``, ``minLength``/``maxLength``, ``format`` (the validator's own
    format checks), ``minimum``/``maximum`` and their exclusive forms, and annotations; None
    for any other schema, which ``jsonschema`` alone then checks. Each keyword applies as in
    Draft 2020-12: only to the types it constrains, with ``jsonschema``'s own type checks.
    """
    if isinstance(schema, bool):
        return _always if schema else None
    if not isinstance(schema, dict) or not set(schema) <= _QUICK:
        return None
    rules: list[Quick] = []
    types = schema.get("type")
    if types is not None:
        names = [types] if isinstance(types, str) else types
        if not isinstance(names, list) or not all(isinstance(n, str) and n in _TYPE_NAMES for n in names):
            return None
        rules.append(_of_types(names))
    string = _bounds(schema, (("minLength", operator.ge), ("maxLength", operator.le)), _is_length)
    number = _bounds(schema, (("minimum", operator.ge), ("maximum", operator.le),
                              ("exclusiveMinimum", operator.gt), ("exclusiveMaximum", operator.lt)), _is_number)
    if string is None or number is None:
        return None
    if string:
        rules.append(lambda v: not _type(v, "string") or all(rule(v) for rule in string))
    if number:
        rules.append(lambda v: not _type(v, "number") or all(rule(v) for rule in number))
    if "format" in schema:
        if not isinstance(schema["format"], str):
            return None
        found = _FORMATS.checkers.get(schema["format"])  # an unknown format is no check (as jsonschema)
        if found is not None:
            rules.append(_format_rule(*found))
    object_check = _quick_object(schema)
    if object_check is None:
        return None
    if object_check is not True:
        rules.append(object_check)
    return _all(rules)


def _always(_: Any) -> bool:
    return True


def _all(rules: list[Quick]) -> Quick:
    """One check passing when every rule passes (the usual one or two without a loop)."""
    if not rules:
        return _always
    if len(rules) == 1:
        return rules[0]
    if len(rules) == 2:
        first, second = rules
        return lambda v: first(v) and second(v)
    return lambda v: all(rule(v) for rule in rules)


def _type(value: Any, name: str) -> bool:
    return _TYPE_CHECKS[name](_TYPES, value)


def _of_types(names: list[str]) -> Quick:
    checks = [_TYPE_CHECKS[n] for n in names]
    if len(checks) == 1:
        (check,) = checks
        return lambda v: check(_TYPES, v)
    return lambda v: any(check(_TYPES, v) for check in checks)


def _is_length(bound: Any) -> bool:
    return isinstance(bound, int) and not isinstance(bound, bool)


def _is_number(bound: Any) -> bool:
    return _type(bound, "number")


def _bounds(schema: dict[str, Any], keywords: tuple[tuple[str, Callable[[Any, Any], bool]], ...],
            valid: Callable[[Any], bool]) -> list[Quick] | None:
    """The rules of ``keywords`` present in ``schema`` (``len`` of strings, numbers themselves); None: not quick."""
    rules: list[Quick] = []
    for keyword, compare in keywords:
        if keyword in schema:
            bound = schema[keyword]
            if not valid(bound):
                return None
            if valid is _is_length:
                rules.append(lambda v, b=bound, c=compare: c(len(v), b))
            else:
                rules.append(lambda v, b=bound, c=compare: c(v, b))
    return rules


def _format_rule(check: Callable[[Any], Any], raises: Any) -> Quick:
    """A format check as the validator's format checker runs it: a falsy result or ``raises`` fails it."""
    def rule(value: Any) -> bool:
        try:
            return bool(check(value))
        except raises:
            return False
    return rule


def _quick_object(schema: dict[str, Any]) -> Quick | bool | None:
    """The object keywords of ``schema`` as one quick check (True: it has none; None: not quick)."""
    if not {"properties", "required", "additionalProperties"} & set(schema):
        return True
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    extra = schema.get("additionalProperties", True)
    if not isinstance(properties, dict) or not isinstance(required, list) \
            or not all(isinstance(r, str) for r in required):
        return None
    subs: dict[str, Quick] = {}
    for name, sub in properties.items():
        check = _quick_check(sub)
        if check is None:
            return None
        subs[name] = check
    extra_check = None if extra is False else _quick_check(extra)
    if extra is not False and extra_check is None:
        return None
    required_names = tuple(required)

    is_object = _TYPE_CHECKS["object"]

    def check(value: Any) -> bool:
        if not is_object(_TYPES, value):
            return True
        for name in required_names:
            if name not in value:
                return False
        for name, item in value.items():
            sub = subs.get(name)
            if sub is not None:
                if not sub(item):
                    return False
            elif extra_check is None or not extra_check(item):
                return False
        return True

    return check


def check_schema(schema: dict[str, Any]) -> list[Problem]:
    """Problems of ``initial_data`` as a JSON Schema (Draft 2020-12)."""
    meta = Draft202012Validator(Draft202012Validator.META_SCHEMA)
    try:
        errors = list(meta.iter_errors(schema))
    except SchemaError as exc:  # pragma: no cover - the meta-schema itself is fine
        errors = [exc]
    return [
        Problem(f"/initial_data{pointer(e.absolute_path)}", f"not a valid JSON Schema: {e.message}") for e in errors
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
