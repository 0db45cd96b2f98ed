"""Validation, JSON Schema and diagram of ``await`` nodes: every problem with its JSON pointer."""

from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from engine.definitions.diagram import to_mermaid
from engine.definitions.validation import json_schema, load_definition
from engine.errors import DefinitionError


def flow(**review: Any) -> dict[str, Any]:
    node = {"type": "await", "signals": {"approve": "done", "reject": "stopped"}, **review}
    return {"name": "gate", "parameters": {"cutoff": "1h"}, "start": "review",
            "nodes": {"review": node, "done": {"type": "terminal", "status": "succeeded"},
                      "stopped": {"type": "terminal", "status": "succeeded"},
                      "expired": {"type": "terminal", "status": "failed"}}}


def problems(body: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionError) as info:
        load_definition(json.dumps(body))
    return [(p.pointer, p.message) for p in info.value.problems]


def test_a_full_await_node_loads_and_round_trips() -> None:
    body = flow(timeout="now() + duration(params.cutoff)", on_timeout="expired")
    definition = load_definition(json.dumps(body))
    assert json.loads(definition.to_json())["nodes"] == body["nodes"]
    assert load_definition(definition.to_json()) == definition
    Draft202012Validator(json_schema()).validate(body)


def test_a_signal_to_an_unknown_node_is_named_with_its_pointer() -> None:
    body = flow(timeout="now()", on_timeout="expired")
    body["nodes"]["review"]["signals"]["approve"] = "dne"
    assert problems(body) == [("/nodes/review/signals/approve", "unknown node 'dne' (did you mean 'done'?)")]


def test_an_unknown_on_timeout_node_is_named() -> None:
    found = problems(flow(timeout="now()", on_timeout="expird"))
    assert found == [("/nodes/review/on_timeout", "unknown node 'expird' (did you mean 'expired'?)")]


def test_a_node_reached_only_by_timeout_is_unreachable_without_it() -> None:
    found = problems(flow())
    assert found == [("/nodes/expired", "node 'expired' cannot be reached from start 'review': "
                                         "add a transition to it or remove it")]


@pytest.mark.parametrize("review", [{"timeout": "now()"}, {"on_timeout": "expired"}])
def test_timeout_and_on_timeout_go_together(review: dict[str, str]) -> None:
    found = problems(flow(**review))
    assert found[0][0] == "/nodes/review"
    assert "timeout and on_timeout go together" in found[0][1]


def test_a_timeout_expression_is_checked_like_any_other() -> None:
    found = problems(flow(timeout="now() + duration(params.cutof)", on_timeout="expired"))
    assert found == [("/nodes/review/timeout", "unknown parameter 'cutof' (did you mean 'cutoff'?): "
                                               'add it to "parameters" or fix the name')]
    assert problems(flow(timeout="now( +", on_timeout="expired"))[0][0] == "/nodes/review/timeout"


def test_signals_must_be_named_and_not_empty() -> None:
    body = flow()
    del body["nodes"]["expired"]
    body["nodes"]["review"]["signals"] = {}
    assert ("/nodes/review/signals", "must not be empty (at least 1)") in problems(body)
    body["nodes"]["review"]["signals"] = {"Approve!": "done"}
    pointer, message = problems(body)[0]
    assert pointer == "/nodes/review/signals/Approve!" and message.startswith("invalid signal name 'Approve!'")


def test_the_diagram_shows_signals_and_the_timeout() -> None:
    text = to_mermaid(load_definition(json.dumps(flow(timeout="now()", on_timeout="expired"))))
    assert "    review : await approve, reject" in text
    assert "    review --> done : signal approve" in text
    assert "    review --> stopped : signal reject" in text
    assert "    review --> expired : timeout now()" in text
