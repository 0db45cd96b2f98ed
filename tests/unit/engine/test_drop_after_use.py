"""``drop_after_use``: a context entry is deleted by the step that lands the instance where nothing reads it.

The order request of the rebalances (``fetch_target``) is read by the calculation alone, the
fetched holdings by the proposal: an instance that waits hours for review does not keep them.
What reads an entry is found statically (:mod:`engine.definitions.liveness`): every node the
instance can still reach, and an expression that reads the context other than by a plain path
keeps everything.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from engine.api import Engine
from engine.broker import MemoryEnqueuer
from engine.clock import ManualClock
from engine.definitions.liveness import unread_entries
from engine.definitions.validation import load_definition
from engine.errors import DefinitionError
from engine.instance import InstanceStatus
from engine.principal import Principal
from engine.service import ActionRegistry, Transition, action
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import Driver

ACTIONS = ActionRegistry()
PM = Principal("pat", frozenset({"pm"}))
FAIL: set[str] = set()


@action("svc", "read", into=ACTIONS, reads_only=True)
def read(payload: dict[str, Any]) -> Transition:
    """Reads: answers a big document."""
    if payload["step"] in FAIL:
        raise ValueError(f"{payload['step']} failed")
    return Transition("ok", {"step": payload["step"], "big": "x" * 2000})


@action("svc", "write", into=ACTIONS)
def write(payload: dict[str, Any]) -> Transition:
    """Has an effect (runs on a confirmed step only)."""
    return Transition("ok", {"step": payload["step"], "saw": payload.get("saw")})


def _flow(**extra: Any) -> dict[str, Any]:
    step = {"type": "service", "service": "svc"}
    return {
        "name": "dropper",
        "start": "fetch",
        "drop_after_use": ["fetch", "plan"],
        "nodes": {
            "fetch": {**step, "action": "read", "input": {"step": "'fetch'"}, "transitions": {"ok": "plan"}},
            "plan": {**step, "action": "read", "input": {"step": "'plan'", "from": "context.fetch.step"},
                     "transitions": {"ok": "propose"}},
            "propose": {**step, "action": "write", "input": {"step": "'propose'", "saw": "context.plan.step"},
                        "transitions": {"ok": "review"}},
            "review": {"type": "await", "signals": {"approve": "done"}},
            "done": {"type": "terminal", "status": "succeeded", "result": {"proposed": "context.propose.saw"}},
        },
        **extra,
    }


@pytest.fixture(autouse=True)
def _no_failures() -> None:
    FAIL.clear()


@pytest.fixture
def engine(any_redis: redis.Redis, key_prefix: str) -> Engine:
    eng = Engine(RedisStore(any_redis, Keys(key_prefix)), MemoryEnqueuer(), ManualClock(1_750_000_000.0))
    eng.publish(load_definition(json.dumps(_flow())))
    return eng


def _fields(client: redis.Redis, key_prefix: str, iid: str) -> set[str]:
    return {f.decode() for f in client.hkeys(Keys(key_prefix).instance(iid))}


def test_each_node_knows_which_entries_no_node_after_it_reads() -> None:
    unread = unread_entries(load_definition(json.dumps(_flow())))
    assert unread["fetch"] == unread["plan"] == ()  # plan reads fetch; propose reads plan
    assert unread["propose"] == ("fetch",)
    assert unread["review"] == unread["done"] == ("fetch", "plan")


def test_a_node_after_that_reads_an_entry_keeps_it_and_so_does_a_loop_back() -> None:
    flow = _flow()
    flow["nodes"]["done"]["result"] = {"fetched": "context.fetch.step"}
    assert unread_entries(load_definition(json.dumps(flow)))["review"] == ("plan",)
    flow = _flow()
    flow["nodes"]["review"]["signals"]["again"] = "fetch"  # a signal can send it back to the start
    assert unread_entries(load_definition(json.dumps(flow)))["review"] == ()


def test_reading_the_context_other_than_by_a_plain_path_keeps_every_entry() -> None:
    flow = _flow()
    flow["nodes"]["done"]["result"] = {"everything": "context"}
    assert unread_entries(load_definition(json.dumps(flow)))["review"] == ()
    flow["nodes"]["done"]["result"] = {"one": "context['fe' + 'tch']"}
    assert unread_entries(load_definition(json.dumps(flow)))["review"] == ()


def test_without_the_field_nothing_is_dropped() -> None:
    flow = _flow()
    del flow["drop_after_use"]
    assert unread_entries(load_definition(json.dumps(flow))) == {}


def test_an_unknown_node_is_refused_with_its_path() -> None:
    with pytest.raises(DefinitionError) as raised:
        load_definition(json.dumps(_flow(drop_after_use=["fetch", "fecth"])))
    assert "/drop_after_use/1" in str(raised.value) and "'fetch'" in str(raised.value)


@pytest.mark.parametrize("inline", [True, False], ids=["chain-inline", "message-per-step"])
def test_an_instance_awaiting_review_keeps_none_of_the_entries_nothing_reads_any_more(
        engine: Engine, any_redis: redis.Redis, key_prefix: str, inline: bool) -> None:
    iid = engine.start("dropper", {})
    Driver(engine, ACTIONS, inline=inline).run_until_idle()
    instance = engine.get(iid)
    assert (instance.status, instance.node) == (InstanceStatus.AWAITING, "review")
    assert set(instance.context) == {"propose"}
    assert instance.context["propose"] == {"step": "propose", "saw": "plan"}  # plan was read before it went
    assert not {"c:fetch", "c:plan"} & _fields(any_redis, key_prefix, iid)
    engine.signal(iid, "approve", by=PM)
    Driver(engine, ACTIONS, inline=inline).run_until_idle()
    assert engine.get(iid).result == {"proposed": "plan"}


def test_a_step_that_fails_before_its_entries_are_unread_leaves_them_for_inspection(
        engine: Engine, any_redis: redis.Redis, key_prefix: str) -> None:
    FAIL.add("plan")
    iid = engine.start("dropper", {})
    Driver(engine, ACTIONS, inline=True).run_until_idle()
    instance = engine.get(iid)
    assert instance.status is InstanceStatus.FAILED and instance.node == "plan"
    assert "fetch" in instance.context and "c:fetch" in _fields(any_redis, key_prefix, iid)


def test_an_entry_nothing_after_its_own_step_reads_does_not_stay(
        any_redis: redis.Redis, key_prefix: str) -> None:
    flow = _flow(drop_after_use=["fetch", "plan", "propose"])
    flow["nodes"]["done"]["result"] = {"done": "true"}
    eng = Engine(RedisStore(any_redis, Keys(key_prefix)), MemoryEnqueuer(), ManualClock(1_750_000_000.0))
    eng.publish(load_definition(json.dumps(flow)))
    iid = eng.start("dropper", {})
    Driver(eng, ACTIONS, inline=True).run_until_idle()
    assert eng.get(iid).node == "review" and eng.get(iid).context == {}
    assert not any(field.startswith("c:") for field in _fields(any_redis, key_prefix, iid))
    applied = [r["node"] for r in eng.activities(iid) if r["outcome"] == "applied"]
    assert applied[-3:] == ["fetch", "plan", "propose"]  # each step still recorded
