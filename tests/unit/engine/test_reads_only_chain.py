"""Reads-only actions run inline before the transition before them is confirmed.

A worker running an instance's chain inline does not wait for a step's transition when the
next step's action is registered ``reads_only``: it runs that action at once, and the held
transitions go to Redis with the next step's own, in one round trip. Each is still its own
compare-and-set with its own record; a pause, a cancel or another delivery between them drops
what the reads-only steps computed, and no step with an effect ever runs on an unconfirmed one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import redis

from engine.api import Engine
from engine.broker import MemoryEnqueuer
from engine.clock import ManualClock
from engine.definitions.validation import load_definition
from engine.errors import ActionFailed
from engine.instance import InstanceStatus, Outcome
from engine.principal import Principal
from engine.service import ActionRegistry, Transition, action
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import Driver, runtime_of, store_of
from tests.unit.engine.test_chained_changes import Counting

ACTIONS = ActionRegistry()
CALLS: list[tuple[str, str, int]] = []
BEHAVIOUR: dict[str, Callable[[], None]] = {}
ENGINE: list[Engine] = []
OPERATOR = Principal("olga", frozenset({"operator"}))


def _stored(iid: str) -> tuple[str, int, str]:
    """Where Redis says the instance is, right now."""
    instance = ENGINE[0].get(iid)
    return instance.node, instance.seq, instance.status.value


def _run(kind: str, payload: dict[str, Any]) -> Transition:
    CALLS.append((payload["step"], *_stored(payload["iid"])[:2]))
    hook = BEHAVIOUR.pop(payload["step"], None)
    if hook is not None:
        hook()
    return Transition("ok", {"step": payload["step"], "kind": kind})


@action("svc", "read", into=ACTIONS, reads_only=True)
def read(payload: dict[str, Any]) -> Transition:
    """Reads (the test's record of where Redis has the instance)."""
    return _run("read", payload)


@action("svc", "write", into=ACTIONS)
def write(payload: dict[str, Any]) -> Transition:
    """Has an effect: runs only on a confirmed step."""
    return _run("write", payload)


def _step(name: str, act: str, then: str) -> dict[str, Any]:
    return {"type": "service", "service": "svc", "action": act, "retry": {"max_attempts": 2},
            "input": {"step": f"'{name}'", "iid": "instance.id"}, "transitions": {"ok": then}}


FLOW = {
    "name": "reads",
    "start": "a",
    "nodes": {
        "a": _step("a", "write", "r1"), "r1": _step("r1", "read", "r2"), "r2": _step("r2", "read", "w"),
        "w": _step("w", "write", "done"),
        "done": {"type": "terminal", "status": "succeeded", "result": {"read": "context.r2.step"}},
    },
}


@pytest.fixture
def engine(any_redis: redis.Redis, key_prefix: str) -> Engine:
    CALLS.clear()
    BEHAVIOUR.clear()
    eng = Engine(RedisStore(any_redis, Keys(key_prefix)), MemoryEnqueuer(), ManualClock(1_750_000_000.0))
    eng.publish(load_definition(json.dumps(FLOW)))
    ENGINE[:] = [eng]
    return eng


def engine_clock(engine: Engine) -> ManualClock:
    clock = runtime_of(engine).clock
    assert isinstance(clock, ManualClock)
    return clock


def _outcomes(engine: Engine, iid: str) -> list[tuple[int, str, str]]:
    return [(r["seq"], r["node"], r["outcome"]) for r in engine.activities(iid)]


def test_reads_only_steps_run_before_the_transitions_before_them_are_sent(engine: Engine) -> None:
    driver = Driver(engine, ACTIONS, inline=True)
    iid = engine.start("reads", {})
    assert driver.run_until_idle() == 1  # one message carries the whole chain
    # r1 and r2 ran while Redis still had the instance at a; w (an effect) only once all three were applied
    assert CALLS == [("a", "a", 1), ("r1", "a", 1), ("r2", "a", 1), ("w", "w", 4)]
    instance = engine.get(iid)
    assert instance.status is InstanceStatus.SUCCEEDED and instance.result == {"read": "r2"}
    assert _outcomes(engine, iid)[-4:] == [(1, "a", "applied"), (2, "r1", "applied"), (3, "r2", "applied"),
                                          (4, "w", "applied")]


def test_the_held_transitions_go_to_redis_as_one_script_call(
        redis_url: str, real_redis: redis.Redis, key_prefix: str) -> None:
    client = Counting.from_url(redis_url)
    client.calls = []
    counted = Engine(RedisStore(client, Keys(key_prefix)), MemoryEnqueuer(), ManualClock(1_750_000_000.0))
    counted.publish(load_definition(json.dumps(FLOW)))
    ENGINE[:] = [counted]
    driver = Driver(counted, ACTIONS, inline=True)
    iid = counted.start("reads", {})
    client.calls.clear()
    assert driver.run_until_idle() == 1
    # a's start; a, r1 and r2's transitions together (w has an effect: it waits for them); w's own
    assert client.calls == ["start", "chain", "advance"]
    assert [(seq, node) for seq, node, outcome in _outcomes(counted, iid) if outcome == "applied"] == [
        (1, "a"), (2, "r1"), (3, "r2"), (4, "w")]


def test_without_inline_a_reads_only_step_waits_for_its_message(engine: Engine) -> None:
    driver = Driver(engine, ACTIONS)
    engine.start("reads", {})
    assert driver.run_until_idle() == 4
    assert CALLS == [("a", "a", 1), ("r1", "r1", 2), ("r2", "r2", 3), ("w", "w", 4)]


def test_a_pause_while_a_reads_only_step_runs_drops_what_it_read_and_nothing_with_an_effect_runs(
        engine: Engine) -> None:
    driver = Driver(engine, ACTIONS, inline=True)
    iid = engine.start("reads", {})
    BEHAVIOUR["r2"] = lambda: engine.pause(iid, "look first", by=OPERATOR)
    driver.run_until_idle()
    instance = engine.get(iid)
    # a was in flight when it was paused: its transition applies, as any step's; r1 and r2 ran on a
    # transition not yet confirmed, so they apply only to a running instance: dropped as no-ops
    assert (instance.status, instance.node, instance.seq) == (InstanceStatus.PAUSED, "r1", 2)
    assert [c[0] for c in CALLS] == ["a", "r1", "r2"]  # w never ran
    assert [o for o in _outcomes(engine, iid) if o[2] != "paused"][-3:] == [
        (1, "a", "applied"), (2, "r1", "noop"), (3, "r2", "noop")]
    noop = next(r for r in engine.activities(iid) if r["outcome"] == "noop")
    assert "reads-only" in noop["reason"]
    engine.resume(iid, by=OPERATOR)
    driver.run_until_idle()
    assert engine.get(iid).status is InstanceStatus.SUCCEEDED
    assert [c[0] for c in CALLS] == ["a", "r1", "r2", "r1", "r2", "w"]  # the reads again, then the effect once
    applied = [(seq, node) for seq, node, outcome in _outcomes(engine, iid) if outcome == "applied"]
    assert applied == [(1, "a"), (2, "r1"), (3, "r2"), (4, "w")]


def test_a_cancel_while_a_reads_only_step_runs_ends_the_chain(engine: Engine) -> None:
    driver = Driver(engine, ACTIONS, inline=True)
    iid = engine.start("reads", {})
    BEHAVIOUR["r1"] = lambda: engine.cancel(iid, "not today", by=OPERATOR)
    driver.run_until_idle()
    instance = engine.get(iid)
    assert instance.status is InstanceStatus.CANCELLED
    assert [c[0] for c in CALLS] == ["a", "r1", "r2"]  # r2 read for nothing; w, with its effect, never ran
    assert all(outcome != "applied" for seq, _node, outcome in _outcomes(engine, iid) if seq >= 2)


def test_a_reads_only_step_that_fails_is_recorded_after_the_held_transitions(engine: Engine) -> None:
    driver = Driver(engine, ACTIONS, inline=True)
    iid = engine.start("reads", {})

    def refuse() -> None:
        raise ActionFailed("the price feed has no price for XYZ")

    BEHAVIOUR["r2"] = refuse
    driver.run_until_idle()
    instance = engine.get(iid)
    assert (instance.status, instance.node, instance.seq) == (InstanceStatus.FAILED, "r2", 3)
    assert instance.error is not None and "no price for XYZ" in instance.error["reason"]
    assert list(_outcomes(engine, iid))[-3:] == [(1, "a", "applied"), (2, "r1", "applied"),
                                                       (3, "r2", "failed")]


def test_a_reads_only_step_that_raises_is_retried_at_its_own_step(engine: Engine) -> None:
    driver = Driver(engine, ACTIONS, inline=True)
    iid = engine.start("reads", {})

    def flaky() -> None:
        raise ConnectionError("book unreachable")

    BEHAVIOUR["r1"] = flaky
    driver.run_until_idle(tick=False)
    instance = engine.get(iid)
    # a's held transition went first; r1's retry is recorded at r1 (seq 2), waiting for its backoff
    assert (instance.node, instance.seq, instance.attempt) == ("r1", 2, 2) and instance.wake_at is not None
    assert [o[:2] for o in _outcomes(engine, iid) if o[2] == "retry"] == [(2, "r1")]
    engine_clock(engine).advance(5)  # its backoff
    driver.run_until_idle()
    assert engine.get(iid).status is InstanceStatus.SUCCEEDED and [c[0] for c in CALLS].count("r1") == 2


def test_a_delivery_that_loses_its_held_transitions_runs_its_step_again(engine: Engine) -> None:
    driver = Driver(engine, ACTIONS, inline=True)
    iid = engine.start("reads", {})
    message = driver.queue.pop()
    store = store_of(engine)
    real = store.client

    def lose_redis() -> None:  # Redis goes away while r2 reads: the held a, r1, r2 are never sent
        store.client = _Failing(real)

    BEHAVIOUR["r2"] = lose_redis
    with pytest.raises(redis.ConnectionError):
        driver.deliver(message)
    store.client = real
    assert engine.get(iid).node == "a"  # nothing of the chain reached Redis: the delivery runs again
    driver.deliver(message)
    driver.run_until_idle()
    assert engine.get(iid).status is InstanceStatus.SUCCEEDED
    applied = [(seq, node) for seq, node, outcome in _outcomes(engine, iid) if outcome == "applied"]
    assert applied == [(1, "a"), (2, "r1"), (3, "r2"), (4, "w")]
    assert [c[0] for c in CALLS].count("w") == 1


class _Failing:
    """A client whose pipelines cannot reach the server (reads of the test itself still work)."""

    def __init__(self, real: redis.Redis) -> None:
        self.real = real

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("Redis is down")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def test_many_instances_each_record_every_step_once(engine: Engine) -> None:
    driver = Driver(engine, ACTIONS, inline=True)
    ids = engine.start_many("reads", [{} for _ in range(5)], run="five")
    driver.run_until_idle()
    for iid in ids:
        assert engine.get(iid).status is InstanceStatus.SUCCEEDED
        assert [o for o in _outcomes(engine, iid) if o[2] == Outcome.APPLIED.value] == [
            (1, "a", "applied"), (2, "r1", "applied"), (3, "r2", "applied"), (4, "w", "applied")]
