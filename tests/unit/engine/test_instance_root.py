"""The read-only ``instance`` root of expressions: the step's identity, stable across redeliveries and retries."""

from __future__ import annotations

import json
from typing import Any

import fakeredis
import pytest

from engine.api import Engine
from engine.broker import MemoryEnqueuer
from engine.clock import ManualClock
from engine.definitions.validation import load_definition
from engine.errors import DefinitionError, ExpressionError
from engine.expressions.cel import Scope, compile_expression
from engine.instance import InstanceStatus
from engine.service import ActionRegistry, Transition, action
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import Driver

ACTIONS = ActionRegistry()
SEEN: list[dict[str, Any]] = []


@action("svc", "echo", into=ACTIONS)
def echo(payload: dict[str, Any]) -> Transition:
    """Records its input; fails on the first call of a node when asked to."""
    SEEN.append(payload)
    if payload.get("fail_first") and sum(1 for p in SEEN if p["key"] == payload["key"]) == 1:
        raise ConnectionError("upstream hiccup")
    return Transition("ok", {"key": payload["key"]})


FLOW = {
    "name": "keyed",
    "start": "first",
    "nodes": {
        "first": {"type": "service", "service": "svc", "action": "echo",
                  "input": {"key": "instance.id + ':' + instance.node + ':' + string(instance.seq)",
                            "run": "instance.run", "attempt": "instance.attempt", "step": "instance"},
                  "transitions": {"ok": "second"}},
        "second": {"type": "service", "service": "svc", "action": "echo",
                   "input": {"key": "instance.id + ':' + instance.node + ':' + string(instance.seq)",
                             "attempt": "instance.attempt", "fail_first": True},
                   "retry": {"max_attempts": 3, "backoff_seconds": 0},
                   "transitions": {"ok": "done"}},
        "done": {"type": "terminal", "status": "succeeded", "result": {"by": "instance.workflow"}},
    },
}


@pytest.fixture
def driver() -> Driver:
    store = RedisStore(fakeredis.FakeRedis(), Keys("t"))
    engine = Engine(store, MemoryEnqueuer(), ManualClock(1_800_000_000.0))
    engine.publish(load_definition(json.dumps(FLOW)))
    SEEN.clear()
    return Driver(engine, ACTIONS)


def test_expressions_read_the_instance_root() -> None:
    scope = Scope(instance={"id": "i1", "node": "submit", "seq": 4, "run": "r"})
    assert compile_expression("instance.id").evaluate(scope) == "i1"  # plain path, no CEL
    expr = compile_expression("instance.id + ':' + instance.node + ':' + string(instance.seq)")
    assert expr.evaluate(scope) == "i1:submit:4"
    assert "instance" in expr.roots


def test_a_step_sees_its_own_identity_and_a_retry_keeps_the_key(driver: Driver) -> None:
    iid = driver.engine.start("keyed", {}, run="night")
    driver.run_until_idle()
    instance = driver.engine.get(iid)
    assert instance.status is InstanceStatus.SUCCEEDED
    assert instance.result == {"by": "keyed"}
    first, second_1, second_2 = SEEN
    assert first["key"] == f"{iid}:first:1"
    assert first["run"] == "night"
    assert first["step"] == {"id": iid, "workflow": "keyed", "version": 1, "run": "night", "node": "first",
                             "seq": 1, "attempt": 1, "shadow": False}
    # The retried step has another attempt number but the same key: safe for idempotent calls.
    assert second_1["key"] == second_2["key"] == f"{iid}:second:2"
    assert (second_1["attempt"], second_2["attempt"]) == (1, 2)


def test_validation_names_unknown_instance_fields() -> None:
    bad = json.loads(json.dumps(FLOW))
    bad["nodes"]["first"]["input"]["key"] = "instance.nodes"
    with pytest.raises(DefinitionError, match=r"unknown field 'nodes' in 'instance.nodes'.*did you mean 'node'"):
        load_definition(json.dumps(bad))


def test_the_instance_root_is_not_writable_or_a_function() -> None:
    with pytest.raises(ExpressionError, match="unknown function"):
        compile_expression("instance(1)")
