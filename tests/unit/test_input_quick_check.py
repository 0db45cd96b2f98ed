"""The quick check of initial data (``engine.definitions.schema``): it never passes data ``jsonschema`` refuses.

``validate_input`` returns at once when the quick check passes the data, so the quick check
must be sound: for every schema it is built for and every value, passing implies that
``jsonschema`` (Draft 2020-12, with the format checker) finds no error. It should also pass the
usual valid data (else it saves nothing): both are checked on the definitions' own schemas and
on random schemas and values.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from engine.definitions import schema as schema_module
from engine.definitions.nodes import Definition
from engine.definitions.schema import _quick_check, validate_input
from engine.errors import InvalidInput

DEFINITIONS = Path(__file__).parents[2] / "definitions"
SCHEMAS = {path.stem: json.loads(path.read_text())["initial_data"]
           for path in sorted(DEFINITIONS.glob("*.json")) if path.name != "schema.json"}


def full(schema: Any, value: Any) -> bool:
    """What jsonschema says, as validate_input runs it."""
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER).is_valid(value)


def quick(schema: Any, value: Any) -> bool:
    check = _quick_check(schema)
    assert check is not None, f"no quick check for {schema}"
    try:
        return check(value)
    except Exception:  # validate_input then asks jsonschema
        return False


scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(-5, 5, allow_nan=False),
                    st.sampled_from(["", "A-1", "2026-11-25", "2026-13-01", "2026-11-25T14:30:00+00:00",
                                     "not a time", "x" * 10]),
                    st.decimals(-5, 5, allow_nan=False, places=1))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["account_id", "run_date", "wait_for_open", "amount", "a", "b"]), inner,
                    max_size=4)), max_leaves=8)

leaf_schemas = st.fixed_dictionaries({}, optional={
    "type": st.one_of(st.sampled_from(["string", "number", "integer", "boolean", "null", "object", "array"]),
                      st.lists(st.sampled_from(["string", "number", "integer", "null"]), min_size=1, max_size=2)),
    "minLength": st.integers(0, 3), "maxLength": st.integers(0, 12),
    "format": st.sampled_from(["date", "date-time", "email", "no-such-format"]),
    "minimum": st.integers(-2, 2), "maximum": st.floats(-2, 2), "exclusiveMinimum": st.integers(-2, 2),
    "exclusiveMaximum": st.integers(-2, 2), "description": st.just("annotation")})
schemas = st.recursive(st.one_of(leaf_schemas, st.just(True)), lambda inner: st.fixed_dictionaries(
    {"type": st.sampled_from(["object", ["object", "null"]])}, optional={
        "properties": st.dictionaries(st.sampled_from(["account_id", "run_date", "wait_for_open", "amount", "a"]),
                                      inner, max_size=3),
        "required": st.lists(st.sampled_from(["account_id", "run_date", "a"]), max_size=2, unique=True),
        "additionalProperties": st.one_of(st.booleans(), inner)}), max_leaves=6)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_the_definitions_schemas_have_a_quick_check(name: str) -> None:
    assert _quick_check(SCHEMAS[name]) is not None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.sampled_from(sorted(SCHEMAS)), value=values)
def test_quick_passes_only_what_jsonschema_passes_on_the_definitions_schemas(name: str, value: Any) -> None:
    if quick(SCHEMAS[name], value):
        assert full(SCHEMAS[name], value)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=schemas, value=values)
def test_quick_agrees_with_jsonschema_on_random_schemas(schema: Any, value: Any) -> None:
    check = _quick_check(schema)
    if check is None:
        return
    try:
        passed = check(value)
    except Exception:
        passed = False
    if passed:
        assert full(schema, value), (schema, value)
    else:
        assert not full(schema, value), (schema, value)  # exact, not merely sound


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string"}}}},
    {"type": "string", "pattern": "^A"},
    {"$ref": "#/$defs/x", "$defs": {"x": {"type": "string"}}},
    {"enum": [1, 2]},
    {"type": "object", "patternProperties": {"^a": {"type": "string"}}},
    False,
])
def test_other_keywords_get_no_quick_check(schema: Any) -> None:
    assert _quick_check(schema) is None


def test_valid_data_of_the_rebalance_passes_quickly() -> None:
    schema = SCHEMAS["rebalance-us"]
    assert quick(schema, {"account_id": "A-1", "run_date": "2026-11-25", "wait_for_open": False,
                          "review_until": "2026-11-25T20:00:00+00:00"})
    assert not quick(schema, {"account_id": "A-1", "run_date": "2026-13-01"})
    assert not quick(schema, {"account_id": "A-1", "run_date": "2026-11-25", "other": 1})
    assert not quick(schema, {"account_id": "", "run_date": "2026-11-25"})


def definition(initial_data: dict[str, Any]) -> Definition:
    return Definition(name="d", initial_data=initial_data, start="end",
                      nodes={"end": {"type": "terminal", "status": "succeeded"}})


def test_validate_input_still_reports_every_problem_after_a_failed_quick_check() -> None:
    d = definition(SCHEMAS["rebalance-us"])
    validate_input(d, {"account_id": "A-1", "run_date": "2026-11-25"})
    with pytest.raises(InvalidInput) as info:
        validate_input(d, {"account_id": 7, "run_date": "2026-13-01", "x": 1})
    text = str(info.value)
    assert "/account_id: 7 is not of type 'string'" in text and "is not a 'date'" in text and "'x'" in text


def test_the_checkers_are_kept_per_definition_object_and_dropped_with_it() -> None:
    d = definition({"type": "object", "required": ["a"]})
    validate_input(d, {"a": 1})
    assert id(d) in schema_module._per_definition
    with pytest.raises(InvalidInput):
        validate_input(d, {})
    key = id(d)
    del d
    gc.collect()
    assert key not in schema_module._per_definition
