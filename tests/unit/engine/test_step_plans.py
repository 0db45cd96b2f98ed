"""A step's plan (compiled input, record level, what its records name) is derived once per definition
and node, and a process keeps the plans of a bounded number of definitions."""

from __future__ import annotations

import json

import fakeredis
import pytest

from engine.api import Engine
from engine.broker import MemoryEnqueuer
from engine.definitions.nodes import RecordLevel
from engine.definitions.validation import load_definition
from engine.runtime import outcomes
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import runtime_of

FLOW = {
    "name": "planned",
    "start": "work",
    "nodes": {
        "work": {"type": "service", "service": "svc", "action": "work", "input": {"id": "data.id"},
                 "transitions": {"ok": "done"}, "record": "full"},
        "done": {"type": "terminal", "status": "succeeded"},
    },
}


@pytest.fixture
def engine() -> Engine:
    return Engine(RedisStore(fakeredis.FakeRedis(), Keys("plans")), MemoryEnqueuer())


def test_a_nodes_plan_is_derived_once_and_says_what_the_node_is(engine: Engine) -> None:
    runtime = runtime_of(engine)
    definition = load_definition(json.dumps(FLOW))
    plan = runtime.plan(definition, "work")
    assert runtime.plan(definition, "work") is plan
    assert (plan.service, plan.action, plan.url, plan.level) == ("svc", "work", None, RecordLevel.FULL)
    # another definition object, even with the same content, has plans of its own
    assert runtime.plan(load_definition(json.dumps(FLOW)), "work") is not plan


def test_the_plans_kept_are_bounded(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outcomes, "MAX_PLANNED_DEFINITIONS", 3)
    runtime = runtime_of(engine)
    first, *others = [load_definition(json.dumps(FLOW)) for _ in range(4)]
    kept = runtime.plan(first, "work")
    for definition in others[:2]:
        runtime.plan(definition, "work")
    assert runtime.plan(first, "work") is kept  # three definitions: all kept
    runtime.plan(others[2], "work")  # a fourth: the plans start afresh
    assert runtime.plan(first, "work") is not kept
