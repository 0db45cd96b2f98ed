"""Loading definitions: every problem reported with its JSON pointer and a fix; the schema; input checks."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from engine.cli import main as cli
from engine.definitions.nodes import Definition
from engine.definitions.validation import (
    SCHEMA_ID,
    check_definition,
    json_schema,
    load_definition,
    validate_file,
    validate_input,
)
from engine.errors import DefinitionError, InvalidInput, Problem
from engine.expressions import functions as expression_functions

HERE = Path(__file__).parent
GOOD = sorted((HERE / "definitions" / "good").glob("*.json"))
BAD = HERE / "definitions" / "bad"
SCHEMA_FILE = HERE.parents[1] / "definitions" / "schema.json"


def market_open(day: str, exchange: str) -> datetime:
    """Stand-in for the trading plugin's function: 09:30 New York time on ``day``."""
    return datetime.fromisoformat(f"{day}T14:30:00+00:00")


@pytest.fixture(autouse=True, scope="module")
def _stand_in_market_open() -> Iterator[None]:
    """Register the stand-in for this module only (the real plugin may be loaded by other tests)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(
            expression_functions._functions,
            "market_open",
            expression_functions._Function(
                market_open, "market_open(date, exchange): stand-in for tests", scoped=False
            ),
        )
        yield


def problems_of(text: str | bytes, source: str = "<definition>") -> list[Problem]:
    with pytest.raises(DefinitionError) as info:
        load_definition(text, source)
    return info.value.problems


# --------------------------------------------------------------------------- good definitions


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.stem)
def test_good_definitions_load_and_round_trip(path: Path) -> None:
    definition = validate_file(path)
    assert check_definition(definition) == []
    again = load_definition(definition.to_json(), "round-trip")
    assert again == definition
    assert again.to_json() == definition.to_json()


def test_the_design_example_reads_as_written() -> None:
    definition = validate_file(HERE / "definitions" / "good" / "rebalance-us.json")
    assert definition.start == "wait_for_open"
    fetch = definition.node("fetch_holdings")
    assert fetch.retry.max_attempts == 3 and fetch.timeout_seconds == 120  # type: ignore[union-attr]
    assert definition.parameters == {"lookback_days": 365, "tlh_min_loss_value": 200}


def test_bytes_with_a_byte_order_mark_load() -> None:
    text = (HERE / "definitions" / "good" / "linear.json").read_bytes()
    assert load_definition(b"\xef\xbb\xbf" + text).name == "linear"


# --------------------------------------------------------------------------- one file per problem class

BAD_CASES = {
    "malformed.json": ("", "malformed JSON at line 4, column 13: Expecting property name"),
    "not-a-number.json": ("", "malformed JSON: NaN is not JSON"),
    "duplicate-key.json": ("/start", "duplicate key 'start': keep only one"),
    "top-level-array.json": ("", "a definition must be a JSON object {...}, got an array"),
    "missing-key.json": ("/nodes/fetch", "missing required key 'action'"),
    "missing-node-type.json": ("/nodes/done",
                               "missing required key 'type' (one of: await, choice, gather, http, service"),
    "unknown-key.json": ("/nodes/fetch/retyr", "unknown key 'retyr' (did you mean 'retry'?); allowed keys:"),
    "unknown-top-level-key.json": ("/paramters", "unknown key 'paramters' (did you mean 'parameters'?)"),
    "unknown-node-type.json": (
        "/nodes/fetch/type",
        "unknown node type 'servce' (did you mean 'service'?); "
        "allowed types: await, choice, gather, http, service, terminal, wait",
    ),
    "retry-out-of-range.json": ("/nodes/fetch/retry/max_attempts", "must be less than or equal to 25, got 100"),
    "timeout-out-of-range.json": ("/nodes/fetch/timeout_seconds", "must be greater than 0, got 0"),
    "wrong-type.json": ("/nodes/fetch/timeout_seconds", 'must be a valid number, got "120"'),
    "bad-terminal-status.json": ("/nodes/done/status", "got 'succeded' (did you mean 'succeeded'?)"),
    "bad-http-url.json": ("/nodes/submit/url", "invalid URL 'ftp://broker.example.com': use an http:// or https://"),
    "invalid-node-name.json": ("/nodes/pause 30m", "invalid node name 'pause 30m': use letters, digits, '_' and '-'"),
    "empty-transitions.json": ("/nodes/submit/transitions", "must not be empty"),
    "unknown-start.json": ("/start", "unknown node 'fetchh' (did you mean 'fetch'?)"),
    "unknown-transition-target.json": ("/nodes/submit/transitions/ok", "unknown node 'dones' (did you mean 'done'?)"),
    "unknown-wait-next.json": ("/nodes/pause/next", "unknown node 'submitt' (did you mean 'submit'?)"),
    "unknown-choice-default.json": ("/nodes/pick/default", "unknown node 'paus' (did you mean 'pause'?)"),
    "unknown-choice-next.json": ("/nodes/pick/choices/0/next", "unknown node 'don' (did you mean 'done'?)"),
    "unreachable-node.json": ("/nodes/orphan", "node 'orphan' cannot be reached from start 'fetch'"),
    "no-way-to-terminal.json": ("/nodes/spin", "no terminal node can be reached from 'spin'"),
    "no-terminal.json": ("/nodes", "no terminal node: add one"),
    "expression-does-not-parse.json": (
        "/nodes/pick/choices/0/when",
        "expression 'size(context.calc.orders) ==' does not parse",
    ),
    "expression-unknown-root.json": ("/nodes/fetch/input/account", "unknown root 'datta' (did you mean 'data'?)"),
    "expression-unknown-function.json": ("/nodes/pause/until", "unknown function 'market_opn'"),
    "expression-too-deep.json": ("/nodes/calc/input/pairs", "nested 4 deep (at most 3)"),
    "expression-unquoted-literal.json": ("/nodes/fetch/input/exchange", "a literal string is quoted: \"'XNYS'\""),
    "expression-in-result.json": ("/nodes/done/result/orders", "does not parse"),
    "wait-without-until.json": ("/nodes/pause", "missing required key 'until': a wait needs an expression"),
    "wait-empty-until.json": ("/nodes/pause/until", "a wait needs a time"),
    "initial-data-not-a-schema.json": ("/initial_data/type", "not a valid JSON Schema"),
    "unknown-parameter.json": (
        "/nodes/fetch/input/days",
        "unknown parameter 'lookback_dayz' (did you mean 'lookback_days'?): add it to \"parameters\"",
    ),
    "unknown-context-node.json": ("/nodes/calc/input/holdings", "unknown node 'fetchh' in 'context.fetchh'"),
}


def test_every_bad_file_has_a_case() -> None:
    assert sorted(p.name for p in BAD.glob("*.json")) == sorted(BAD_CASES)


@pytest.mark.parametrize(("name", "expected"), sorted(BAD_CASES.items()), ids=lambda v: str(v)[:40])
def test_bad_file_reports_exactly_its_problem(name: str, expected: tuple[str, str]) -> None:
    pointer, fragment = expected
    with pytest.raises(DefinitionError) as info:
        validate_file(BAD / name)
    problems = info.value.problems
    assert [p.pointer for p in problems] == [pointer], problems
    assert fragment in problems[0].message
    assert str(info.value) == f"{BAD / name}: {pointer or '/'}: {problems[0].message}"


def test_all_problems_are_reported_at_once() -> None:
    document = json.loads((BAD / "unknown-start.json").read_text())
    document["start"] = "fetch"
    document["extra"] = True
    nodes = document["nodes"]
    nodes["fetch"]["retry"] = {"max_attempts": 0}
    nodes["submit"]["transitions"]["ok"] = "dnoe"
    nodes["pause"]["until"] = "now() + duration('30m') +"
    nodes["calc"]["input"]["days"] = "params.lookback"
    problems = problems_of(json.dumps(document), "many.json")
    assert {(p.pointer, re.split(r" \(|: |; ", p.message)[0]) for p in problems} == {
        ("/extra", "unknown key 'extra'"),
        ("/nodes/fetch/retry/max_attempts", "must be greater than or equal to 1, got 0"),
        ("/nodes/submit/transitions/ok", "unknown node 'dnoe'"),
        ("/nodes/pause/until", "expression \"now() + duration('30m') +\" does not parse"),
        ("/nodes/calc/input/days", "unknown parameter 'lookback'"),
    }


def test_pointers_escape_slash_and_tilde() -> None:
    document = json.loads((HERE / "definitions" / "good" / "linear.json").read_text())
    document["nodes"]["first"]["transitions"]["ok"] = "nowhere"
    document["nodes"]["first"]["input"] = {"a/b~c": "datta"}
    pointers = [p.pointer for p in problems_of(json.dumps(document))]
    assert pointers == ["/nodes/first/transitions/ok", "/nodes/first/input/a~1b~0c"]


def test_strict_types_and_deep_or_odd_json() -> None:
    document = json.loads((HERE / "definitions" / "good" / "linear.json").read_text())
    document["nodes"]["first"]["retry"] = {"max_attempts": 2.5, "backoff_seconds": True}
    assert [p.pointer for p in problems_of(json.dumps(document))] == [
        "/nodes/first/retry/max_attempts",
        "/nodes/first/retry/backoff_seconds",
    ]
    assert problems_of("[" * 100 + "]" * 100)[0].message == "nested deeper than 64 levels"
    assert "nested deeper than 64" in problems_of("[" * 100_000 + "]" * 100_000)[0].message
    assert problems_of(b"\xff\xfe{}")[0].message.startswith("not UTF-8")
    assert problems_of("")[0].message.startswith("malformed JSON at line 1, column 1")
    assert "larger than" in problems_of(" " * (2 << 20))[0].message


def test_validate_file_on_a_missing_file() -> None:
    with pytest.raises(DefinitionError) as info:
        validate_file(HERE / "definitions" / "nope.json")
    assert "cannot read" in str(info.value) and "nope.json: /:" in str(info.value)


def test_check_definition_on_a_built_model() -> None:
    definition = validate_file(HERE / "definitions" / "good" / "linear.json")
    broken = definition.model_copy(update={"start": "secnod"})
    assert check_definition(broken) == [Problem("/start", "unknown node 'secnod' (did you mean 'second'?)")]


# --------------------------------------------------------------------------- robustness

_KEYS = [
    "name",
    "start",
    "nodes",
    "type",
    "service",
    "action",
    "transitions",
    "next",
    "default",
    "choices",
    "when",
    "until",
    "status",
    "input",
    "result",
    "retry",
    "max_attempts",
    "initial_data",
    "parameters",
    "ok",
    "a",
    "b",
    "terminal",
    "wait",
    "choice",
    "http",
    "url",
    "$ref",
    "properties",
]
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([*_KEYS, "data.x", "params.a", "context.a", "now()", "succeeded", "service", "1 +", ""]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(_KEYS), inner, max_size=6),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_JSON)
def test_load_definition_raises_only_definition_errors(document: Any) -> None:
    try:
        load_definition(json.dumps(document))
    except DefinitionError as exc:
        assert exc.problems and all(p.pointer == "" or p.pointer.startswith("/") for p in exc.problems)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80) | st.binary(max_size=80))
def test_load_definition_on_arbitrary_text(text: str | bytes) -> None:
    with contextlib.suppress(DefinitionError):
        load_definition(text)


# --------------------------------------------------------------------------- the published schema


def test_the_committed_schema_is_current() -> None:
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema(), (
        "definitions/schema.json is stale: run "
        "tradeflow definitions schema --write definitions/schema.json"
    )


def test_schema_header_and_validity() -> None:
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == SCHEMA_ID == "https://tradeflow.dev/schemas/definition.json"
    assert schema["title"] and schema["description"]
    Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("path", GOOD, ids=lambda p: p.stem)
def test_good_samples_validate_against_the_schema(path: Path) -> None:
    Draft202012Validator(json_schema()).validate(json.loads(path.read_text()))


@pytest.mark.parametrize(
    "name",
    [
        "missing-key.json",
        "unknown-key.json",
        "unknown-node-type.json",
        "retry-out-of-range.json",
        "wrong-type.json",
        "invalid-node-name.json",
        "empty-transitions.json",
        "wait-empty-until.json",
        "bad-http-url.json",
    ],
)
def test_the_schema_rejects_what_the_models_reject(name: str) -> None:
    errors = list(Draft202012Validator(json_schema()).iter_errors(json.loads((BAD / name).read_text())))
    assert errors


def test_command_line(tmp_path: Path) -> None:
    target = tmp_path / "schema.json"
    runner = CliRunner()
    written = runner.invoke(cli, ["definitions", "schema", "--write", str(target)])
    assert written.exit_code == 0, written.output
    assert json.loads(target.read_text()) == json_schema()
    assert runner.invoke(cli, ["definitions", "validate", str(GOOD[0])]).exit_code == 0
    bad = runner.invoke(cli, ["definitions", "validate", str(BAD / "unknown-start.json")])
    assert bad.exit_code == 1
    assert "/start: unknown node 'fetchh'" in bad.stderr


# --------------------------------------------------------------------------- input at run time


def test_validate_input() -> None:
    definition = validate_file(HERE / "definitions" / "good" / "rebalance-us.json")
    validate_input(definition, {"account_id": "A-1", "run_date": "2026-11-25"})
    with pytest.raises(InvalidInput) as info:
        validate_input(definition, {"account_id": 7, "run_date": "2026-13-01"})
    problems = info.value.problems  # type: ignore[attr-defined]
    assert [(p.pointer, p.message) for p in problems] == [
        ("/account_id", "7 is not of type 'string'"),
        ("/run_date", "'2026-13-01' is not a 'date'"),
    ]
    assert "invalid input for rebalance-us: /account_id: 7 is not of type 'string'" in str(info.value)
    with pytest.raises(InvalidInput, match="/: 'run_date' is a required property"):
        validate_input(definition, {"account_id": "A-1"})


def test_validate_input_with_the_default_schema() -> None:
    definition = Definition.model_validate(
        {"name": "x", "start": "d", "nodes": {"d": {"type": "terminal", "status": "succeeded"}}}
    )
    validate_input(definition, {"anything": [1, 2]})
    with pytest.raises(InvalidInput, match="is not of type 'object'"):
        validate_input(definition, [1])


def test_the_stand_in_function_is_used_by_a_wait() -> None:
    definition = validate_file(HERE / "definitions" / "good" / "rebalance-us.json")
    from engine.expressions.cel import Scope, compile_expression

    until = compile_expression(definition.node("wait_for_open").until)  # type: ignore[union-attr]
    wake = until.evaluate_raw(Scope(data={"run_date": "2026-11-25"}, now=datetime(2026, 11, 25, tzinfo=UTC)))
    assert wake == datetime(2026, 11, 25, 14, 35, tzinfo=UTC)


def test_a_schema_reference_is_accepted_and_is_not_content() -> None:
    text = (HERE / "definitions" / "good" / "linear.json").read_text()
    definition = load_definition(text)
    assert "$schema" not in definition.to_json()
    plain = json.loads(text)
    del plain["$schema"]
    assert load_definition(json.dumps(plain)).fingerprint() == definition.fingerprint()
    plain["$schema"] = 5
    assert [p.pointer for p in problems_of(json.dumps(plain))] == ["/$schema"]


@pytest.mark.parametrize("kind", [[], {}, 3, None])
def test_a_node_type_that_is_not_a_string_is_a_problem_at_its_path(kind: Any) -> None:
    document = {"name": "w", "start": "a", "nodes": {"a": {"type": kind}, "done": {"type": "terminal",
                                                                                  "status": "succeeded"}}}
    with pytest.raises(DefinitionError) as caught:
        load_definition(json.dumps(document))
    assert "/nodes/a/type" in [p.pointer for p in caught.value.problems]
