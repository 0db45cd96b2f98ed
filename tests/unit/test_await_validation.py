"""Validation, JSON Schema and diagram of ``await`` nodes: every problem with its JSON pointer."""

from __future__ import annotations

import json
from pathlib import Path
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


ROLES = {"admin", "operator", "pm", "viewer"}


def guarded(**review: Any) -> dict[str, Any]:
    """An await node whose signals name roles, data they require, and a quorum."""
    body = flow(timeout="now() + duration(params.cutoff)", on_timeout="expired", **review)
    body["parameters"]["two_over"] = 1000
    body["initial_data"] = {"type": "object", "properties": {"amount": {"type": "number"}}}
    body["nodes"]["review"]["signals"] = {"approve": {"next": "done", "roles": ["pm"]},
                                          "reject": {"next": "stopped", "roles": ["pm", "admin"],
                                                     "requires": ["reason"]},
                                          "note": "review"}
    body["nodes"]["review"]["quorum"] = {"signal": "approve", "count": "data.amount > params.two_over ? 2 : 1"}
    return body


def role_problems(body: dict[str, Any], roles: set[str] = ROLES) -> list[tuple[str, str]]:
    with pytest.raises(DefinitionError) as info:
        load_definition(json.dumps(body), roles=roles)
    return [(p.pointer, p.message) for p in info.value.problems]


def test_roles_requires_and_quorum_load_and_round_trip_through_the_schema() -> None:
    body = guarded()
    definition = load_definition(json.dumps(body), roles=ROLES)
    assert json.loads(definition.to_json())["nodes"] == body["nodes"]
    assert load_definition(definition.to_json(), roles=ROLES) == definition
    Draft202012Validator(json_schema()).validate(body)
    review = definition.nodes["review"]
    assert review.spec("approve").roles == ["pm"] and review.spec("reject").requires == ["reason"]
    assert review.spec("note").roles is None and review.target("note") == "review"  # the short form: anyone
    literal = guarded()
    literal["nodes"]["review"]["quorum"]["count"] = 2
    assert load_definition(json.dumps(literal), roles=ROLES).nodes["review"].quorum.count == 2
    Draft202012Validator(json_schema()).validate(literal)


def test_the_published_schema_file_is_the_models_schema() -> None:
    from pathlib import Path

    published = json.loads((Path(__file__).parents[2] / "definitions" / "schema.json").read_text())
    assert published == json_schema()
    assert "quorum" in published["$defs"]["AwaitNode"]["properties"]


def test_an_unknown_role_is_named_with_its_json_pointer_and_the_declared_set() -> None:
    body = guarded()
    body["nodes"]["review"]["signals"]["approve"]["roles"] = ["pms"]
    body["nodes"]["review"]["signals"]["reject"]["roles"] = ["pm", "amdin"]
    assert role_problems(body) == [
        ("/nodes/review/signals/approve/roles/0", "unknown role 'pms' (declared: admin, operator, pm, viewer)"),
        ("/nodes/review/signals/reject/roles/1", "unknown role 'amdin' (declared: admin, operator, pm, viewer)"),
    ]
    (nothing_declared,) = role_problems(guarded(), roles=set())[:1]
    assert "no role is declared: set TRADEFLOW_ROLES" in nothing_declared[1]


def test_the_declared_roles_come_from_the_environment_and_the_plugins(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    from click.testing import CliRunner

    from engine.cli import main
    from engine.config import Settings
    from engine.roles import declared_roles

    assert {"viewer", "operator", "pm", "admin"} <= declared_roles(Settings())  # the console plugin's
    assert "auditor" in declared_roles(Settings.from_env({"TRADEFLOW_ROLES": "auditor, , risk"}))
    body = guarded()
    body["nodes"]["review"]["signals"]["approve"]["roles"] = ["risk"]
    configured = Settings.from_env({"TRADEFLOW_ROLES": "risk"})  # what an edge reads and passes in
    assert load_definition(json.dumps(body), roles=lambda: declared_roles(configured)).nodes["review"].spec(
        "approve").roles == ["risk"]
    monkeypatch.setenv("TRADEFLOW_ROLES", "risk")
    with pytest.raises(DefinitionError, match="unknown role 'risk'"):
        load_definition(json.dumps(body))  # without roles: the plugins' only (nothing below the edges reads the env)
    path = tmp_path / "guarded.json"
    path.write_text(json.dumps(body))
    assert CliRunner().invoke(main, ["definitions", "validate", str(path)]).exit_code == 0  # the CLI's edge reads it
    monkeypatch.delenv("TRADEFLOW_ROLES")
    assert CliRunner().invoke(main, ["definitions", "validate", str(path)]).exit_code == 1


def test_a_quorum_must_count_a_signal_of_its_node_with_a_valid_count() -> None:
    body = guarded()
    body["nodes"]["review"]["quorum"]["signal"] = "aprove"
    assert role_problems(body) == [("/nodes/review/quorum/signal",
                                    "unknown signal 'aprove' of this node (did you mean 'approve'?)")]
    body = guarded()
    body["nodes"]["review"]["quorum"]["count"] = "params.two_ovr > 1 ? 2 : 1"
    assert role_problems(body)[0][0] == "/nodes/review/quorum/count"
    body["nodes"]["review"]["quorum"]["count"] = 0
    assert role_problems(body)[0][0].startswith("/nodes/review/quorum/count")


def test_a_signal_in_full_form_needs_a_known_next_node_and_known_keys() -> None:
    body = guarded()
    body["nodes"]["review"]["signals"]["approve"]["next"] = "dne"
    assert role_problems(body) == [("/nodes/review/signals/approve/next", "unknown node 'dne' (did you mean 'done'?)")]
    body = guarded()
    body["nodes"]["review"]["signals"]["approve"]["role"] = ["pm"]
    assert any(p[0].startswith("/nodes/review/signals/approve") and "role" in p[1] for p in role_problems(body))
    body = guarded()
    body["nodes"]["review"]["signals"]["approve"]["roles"] = []
    assert role_problems(body)[0][0] == "/nodes/review/signals/approve/roles"


def test_the_rebalance_definitions_guard_their_review_with_roles_and_a_quorum() -> None:
    from pathlib import Path

    for name in ("rebalance-ca", "rebalance-us"):
        path = Path(__file__).parents[2] / "definitions" / f"{name}.json"
        review = load_definition(path.read_text(), roles=ROLES).nodes["review"]
        assert review.spec("approve").roles == ["pm"] and review.spec("reject").requires == ["reason"]
        assert review.quorum is not None and review.quorum.signal == "approve"
        text = path.read_text()
        assert "context.review.approvals" not in text and "approvals_required" not in text  # no count in data
