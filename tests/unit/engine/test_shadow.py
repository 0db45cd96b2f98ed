"""Shadow instances and run diffs, driven one message at a time on fakeredis and on a real Redis.

Pins: the validator refuses a definition where a shadow can reach a node with an external
effect without a stop (with the JSON pointer and the path); a shadow ends, succeeded, at its
stop before the node runs, sees ``instance.shadow``, never joins a gather batch, and runs in a
run of its own (never mixed with production instances); a run diff pairs by key and compares
field by field.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import redis

from engine.api import SHADOW_RUN, Engine
from engine.broker import MemoryEnqueuer
from engine.clock import ManualClock
from engine.definitions.validation import load_definition
from engine.errors import DefinitionError, InvalidInput
from engine.instance import InstanceStatus
from engine.runs_diff import changed_fields, compare
from engine.service import ActionRegistry, Transition, action
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import Driver

ACTIONS = ActionRegistry()
SENT: list[dict[str, Any]] = []


@action("svc", "plan", into=ACTIONS)
def plan(payload: dict[str, Any]) -> Transition:
    """Plans ``amount`` x ``factor``; says whether it ran for a shadow."""
    return Transition("ok", {"value": payload["amount"] * payload["factor"], "shadow": payload["shadow"]})


@action("svc", "send", into=ACTIONS)
def send(payload: dict[str, Any]) -> Transition:
    """The external effect: records what it sent."""
    SENT.append(payload)
    return Transition("ok", {})


FLOW = {
    "name": "shadowed",
    "initial_data": {"type": "object", "required": ["key", "amount"]},
    "parameters": {"factor": 2},
    "start": "plan",
    "nodes": {
        "plan": {"type": "service", "service": "svc", "action": "plan",
                 "input": {"amount": "data.amount", "factor": "params.factor", "shadow": "instance.shadow"},
                 "transitions": {"ok": "check"}},
        "check": {"type": "choice", "choices": [{"when": "context.plan.value == 0", "next": "nothing"}],
                  "default": "send"},
        "send": {"type": "service", "service": "svc", "action": "send", "shadow": "stop", "effect": "external",
                 "input": {"key": "data.key"}, "transitions": {"ok": "done"}},
        "nothing": {"type": "terminal", "status": "succeeded"},
        "done": {"type": "terminal", "status": "succeeded", "result": {"value": "context.plan.value"}},
    },
}


@pytest.fixture
def engine(any_redis: redis.Redis, key_prefix: str) -> Engine:
    SENT.clear()
    eng = Engine(RedisStore(any_redis, Keys(key_prefix), retention_seconds=3600), MemoryEnqueuer(),
                 ManualClock(1_750_000_000.0))
    eng.publish(load_definition(json.dumps(FLOW)))
    return eng


# -- the validator rule -----------------------------------------------------------------------


def test_a_definition_whose_effect_a_shadow_reaches_without_a_stop_is_refused_with_its_pointer() -> None:
    body = copy.deepcopy(FLOW)
    del body["nodes"]["send"]["shadow"]
    with pytest.raises(DefinitionError) as caught:
        load_definition(json.dumps(body))
    problems = {p.pointer: p.message for p in caught.value.problems}
    assert list(problems) == ["/nodes/send/effect"]
    assert "plan -> check -> send" in problems["/nodes/send/effect"]
    assert '"shadow": "stop"' in problems["/nodes/send/effect"]


def test_a_stop_before_the_effect_on_every_path_is_enough_and_one_path_without_is_not() -> None:
    body = copy.deepcopy(FLOW)
    del body["nodes"]["send"]["shadow"]
    body["nodes"]["check"]["shadow"] = "stop"  # every path to send passes check
    load_definition(json.dumps(body))
    body["nodes"]["plan"]["transitions"]["direct"] = "send"  # a second path, around the stop
    with pytest.raises(DefinitionError) as caught:
        load_definition(json.dumps(body))
    assert [p.pointer for p in caught.value.problems] == ["/nodes/send/effect"]


def test_nodes_without_a_declared_effect_need_no_stop() -> None:
    body = copy.deepcopy(FLOW)
    for node in body["nodes"].values():
        node.pop("shadow", None)
        node.pop("effect", None)
    load_definition(json.dumps(body))


# -- running shadows --------------------------------------------------------------------------


def test_a_shadow_stops_before_the_effect_and_production_goes_through(engine: Engine) -> None:
    driver = Driver(engine, ACTIONS)
    prod = engine.start("shadowed", {"key": "a", "amount": 3}, run="prod")
    shadow = engine.start("shadowed", {"key": "a", "amount": 3}, shadow=True)
    driver.run_until_idle()
    assert SENT == [{"key": "a"}]  # production's only
    done = engine.get(shadow)
    assert done.shadow and done.run == SHADOW_RUN
    assert done.status is InstanceStatus.SUCCEEDED and done.node == "send"
    assert done.result == {"shadow": "stopped", "node": "send"}
    assert done.context["plan"] == {"value": 6, "shadow": True}  # the action saw instance.shadow
    assert engine.get(prod).context["plan"]["shadow"] is False and not engine.get(prod).shadow
    assert engine.progress(SHADOW_RUN).shadow and not engine.progress("prod").shadow


def test_shadows_and_production_instances_never_share_a_run(engine: Engine) -> None:
    engine.start("shadowed", {"key": "a", "amount": 1}, run="prod")
    with pytest.raises(InvalidInput, match="run of its own"):
        engine.start("shadowed", {"key": "b", "amount": 1}, run="prod", shadow=True)
    engine.start("shadowed", {"key": "b", "amount": 1}, run="try", shadow=True)
    with pytest.raises(InvalidInput, match="shadow run"):
        engine.start("shadowed", {"key": "c", "amount": 1}, run="try")
    assert engine.progress("prod").total == 1 and engine.progress("try").total == 1


def test_a_shadow_never_joins_a_gather_batch(engine: Engine) -> None:
    body = {"name": "meets", "initial_data": {"type": "object"}, "start": "meet", "nodes": {
        "meet": {"type": "gather", "service": "svc", "action": "send", "group": "instance.run",
                 "close": "now() + duration('1h')", "transitions": {"ok": "done"}},
        "done": {"type": "terminal", "status": "succeeded"}}}
    engine.publish(load_definition(json.dumps(body)))
    iid = engine.start("meets", {}, shadow=True)
    found = engine.get(iid)
    assert found.status is InstanceStatus.FAILED and found.batch is None
    assert "never joins a batch" in found.error["reason"]
    assert engine.batches() == []


# -- run diffs --------------------------------------------------------------------------------


def test_run_diff_pairs_by_key_and_names_each_changed_field(engine: Engine) -> None:
    driver = Driver(engine, ACTIONS)
    for key, amount in (("a", 1), ("b", 2), ("c", 0)):
        engine.start("shadowed", {"key": key, "amount": amount}, run="left")
    changed = copy.deepcopy(FLOW)
    changed["parameters"]["factor"] = 3
    version = engine.publish(load_definition(json.dumps(changed)))
    for key, amount in (("a", 1), ("c", 0), ("d", 5)):
        engine.start("shadowed", {"key": key, "amount": amount}, run="right", version=version, shadow=True)
    driver.run_until_idle()
    diff = engine.diff_runs("left", "right", key="data.key", path="context.plan.value")
    assert diff.summary == {"keys": 4, "equal": 1, "changed": 1, "only_a": 1, "only_b": 1}
    by_key = {item["key"]: item for item in diff.to_dict()["items"]}
    assert by_key["a"]["change"] == "changed" and by_key["a"]["fields"] == [{"field": "", "a": 2, "b": 3}]
    assert by_key["c"]["change"] == "equal"
    assert by_key["b"]["change"] == "only_a" and by_key["d"]["change"] == "only_b"
    fields = {item.key: item.fields for item in engine.diff_runs("left", "right", key="data.key",
                                                                  path="context.plan").items}
    assert [(f.field, f.a, f.b) for f in fields["a"]] == [("shadow", False, True), ("value", 2, 3)]
    same = engine.diff_runs("left", "left", key="data.key", path="context")
    assert same.summary["equal"] == 3


def test_changed_fields_compares_objects_member_by_member_and_the_rest_whole() -> None:
    assert changed_fields({"a": 1, "b": {"c": [1, 2]}}, {"a": 1.0, "b": {"c": [1, 3]}, "d": None}) == \
        [changed_fields([1, 2], [1, 3], "b.c")[0]]
    assert changed_fields(True, 1) != []  # a flag is not a number
    assert changed_fields({"x": 1}, None)[0].field == ""
    diff = compare("A", "B", "data.account_id", "result", [("i1", "k", 1), ("i2", None, 5)], [("j1", "k", 1)])
    assert diff.to_dict()["items"] == [{"account_id": "k", "change": "equal", "a_instance": "i1", "b_instance": "j1"}]
