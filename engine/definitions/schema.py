"""JSON Schemas: the published schema of the definition format, and ``initial_data`` (checked, then applied)."""

from __future__ import annotations

import functools
import json
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from engine.definitions.model import Definition
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
    """Check initial ``data`` against ``definition.initial_data``; ``InvalidInput`` lists each problem."""
    validator = _input_validator(json.dumps(definition.initial_data, sort_keys=True))
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


@functools.lru_cache(maxsize=256)
def _input_validator(schema_text: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(schema_text), format_checker=Draft202012Validator.FORMAT_CHECKER)


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
