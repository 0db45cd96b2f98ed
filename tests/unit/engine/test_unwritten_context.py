"""A held transition's context entry that a later transition sent with it forgets is never written.

In a chain of reads-only steps run inline, the transitions are held and sent together, one script
call per instance. When one of them forgets an entry (``drop_after_use``: nothing after it reads
it) that a speculative transition before it in the same call writes, the entry is not sent at all:
both apply or neither does. A transition that may apply alone (the first of a chain, which also
applies to a paused instance) still writes its entry: a resumed instance reads it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from engine.api import Engine
from engine.broker import MemoryEnqueuer
from engine.clock import ManualClock
from engine.definitions.validation import load_definition
from engine.instance import InstanceStatus
from engine.principal import Principal
from engine.service import ActionRegistry, Transition, action
from engine.store.instances import Instances
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import Driver

ACTIONS = ActionRegistry()
OPERATOR = Principal("olga", frozenset({"operator"}))
PAUSE_AT: dict[str, Engine] = {}  # step name -> the engine whose instance that step pauses, once


@action("svc", "read", into=ACTIONS, reads_only=True)
def read(payload: dict[str, Any]) -> Transition:
    """Reads: answers a big document (pausing its instance first when the test asks)."""
    engine = PAUSE_AT.pop(payload["step"], None)
    if engine is not None:
        engine.pause(payload["iid"], "by the test", by=OPERATOR)
    return Transition("ok", {"step": payload["step"], "big": "x" * 2000, "from": payload.get("from")})


@action("svc", "write", into=ACTIONS)
def write(payload: dict[str, Any]) -> Transition:
    """Has an effect (runs on a confirmed step only)."""
    return Transition("ok", {"step": payload["step"], "saw": payload.get("saw")})


def _flow(name: str = "unwritten", saw: str = "context.fetch.step + '/' + context.calc.from") -> dict[str, Any]:
    """fetch -> target -> calc (all reads) -> propose (writes) -> review: the rebalance's shape
    (propose reads fetch's entry and calc's, unless ``saw`` says otherwise)."""
    step = {"type": "service", "service": "svc"}
    return {
        "name": name,
        "start": "fetch",
        "drop_after_use": ["fetch", "target"],
        "nodes": {
            "fetch": {**step, "action": "read", "input": {"step": "'fetch'", "iid": "instance.id"},
                      "transitions": {"ok": "target"}},
            "target": {**step, "action": "read",
                       "input": {"step": "'target'", "iid": "instance.id", "from": "context.fetch.step"},
                       "transitions": {"ok": "calc"}},
            "calc": {**step, "action": "read",
                     "input": {"step": "'calc'", "iid": "instance.id", "from": "context.target.step"},
                     "transitions": {"ok": "propose"}},
            "propose": {**step, "action": "write",
                        "input": {"step": "'propose'", "saw": saw},
                        "transitions": {"ok": "review"}},
            "review": {"type": "await", "signals": {"approve": "done"}},
            "done": {"type": "terminal", "status": "succeeded"},
        },
    }


@pytest.fixture
def engine(any_redis: redis.Redis, key_prefix: str) -> Engine:
    eng = Engine(RedisStore(any_redis, Keys(key_prefix)), MemoryEnqueuer(), ManualClock(1_750_000_000.0))
    eng.publish(load_definition(json.dumps(_flow())))
    # propose reads calc's entry only: fetch's is forgotten by target's transition, the second of the chain
    eng.publish(load_definition(json.dumps(_flow("early", "context.calc.from"))))
    return eng


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The context entry each transition the runtime hands the store writes (None: none)."""
    entries: list[str | None] = []
    advance = Instances.advance

    def spy(self: Instances, instance_id: str, **kwargs: Any) -> Any:
        context = kwargs.get("context")
        entries.append(None if context is None else context[0])
        return advance(self, instance_id, **kwargs)

    monkeypatch.setattr(Instances, "advance", spy)
    PAUSE_AT.clear()
    return entries


def test_an_entry_forgotten_in_the_same_call_is_never_sent(engine: Engine, written: list[str | None]) -> None:
    iid = engine.start("unwritten", {})
    Driver(engine, ACTIONS, inline=True).run_until_idle()
    instance = engine.get(iid)
    assert (instance.status, instance.node) == (InstanceStatus.AWAITING, "review")
    # target's entry is forgotten by calc's transition, sent with it: never written; fetch's is read by propose
    assert written == ["fetch", None, "calc", "propose"]
    assert instance.context["propose"] == {"step": "propose", "saw": "fetch/target"}
    assert set(instance.context) == {"calc", "propose"}
    applied = [r["node"] for r in engine.activities(iid) if r["outcome"] == "applied"]
    assert applied[-4:] == ["fetch", "target", "calc", "propose"]  # every step still recorded


def test_one_message_per_step_writes_every_entry_it_sends_alone(engine: Engine, written: list[str | None]) -> None:
    iid = engine.start("unwritten", {})
    Driver(engine, ACTIONS, inline=False).run_until_idle()
    assert written == ["fetch", "target", "calc", "propose"]  # each transition its own call: nothing held
    assert set(engine.get(iid).context) == {"calc", "propose"}


def test_the_first_transition_still_writes_what_a_paused_instance_resumes_with(
        engine: Engine, written: list[str | None]) -> None:
    iid = engine.start("early", {})
    PAUSE_AT["target"] = engine  # paused while target runs, after fetch's transition was held
    Driver(engine, ACTIONS, inline=True).run_until_idle()
    paused = engine.get(iid)
    assert (paused.status, paused.node) == (InstanceStatus.PAUSED, "target")
    # fetch's transition (which a paused instance takes) applied alone, entry and all; target's, which
    # forgets it, was refused with the rest
    assert written[:3] == ["fetch", None, "calc"] and paused.context["fetch"]["step"] == "fetch"
    engine.resume(iid, by=OPERATOR)
    Driver(engine, ACTIONS, inline=True).run_until_idle()
    resumed = engine.get(iid)
    assert (resumed.status, resumed.node) == (InstanceStatus.AWAITING, "review")
    assert resumed.context["propose"] == {"step": "propose", "saw": "target"}  # target read fetch's entry again
