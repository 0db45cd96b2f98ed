"""Consecutive steps of one service run in the worker that holds the first, without a broker hop.

Each step is still its own compare-and-set with its own activity record; a pause stops the
chain at the next boundary; a worker that dies mid-chain is replaced by the redelivery of the
message that carried the chain.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from typing import Any

import pytest
import redis

from engine.api import Engine
from engine.broker import MemoryEnqueuer
from engine.clock import ManualClock
from engine.definitions.validation import load_definition
from engine.instance import InstanceStatus, Outcome
from engine.runtime.concerns.inline import carrier_died
from engine.service import ActionRegistry, Transition, action
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import Driver, enqueuer_of, runtime_of

ACTIONS = ActionRegistry()
CALLS: list[str] = []
BEHAVIOUR: dict[str, Any] = {}


class WorkerDied(BaseException):
    """Stands for a SIGKILL: nothing after it runs, nothing is recorded."""


@action("one", "work", into=ACTIONS)
def work(payload: dict[str, Any]) -> Transition:
    """Records the call; may pause its instance or die, as the test says."""
    CALLS.append(payload["step"])
    hook = BEHAVIOUR.pop(payload["step"], None)
    if hook is not None:
        hook()
    return Transition("ok", {"step": payload["step"]})


@action("two", "work", into=ACTIONS)
def other_work(payload: dict[str, Any]) -> Transition:
    """A step of another service."""
    CALLS.append(payload["step"])
    return Transition("ok")


def _step(name: str, service: str, then: str) -> dict[str, Any]:
    return {"type": "service", "service": service, "action": "work", "input": {"step": f"'{name}'"},
            "transitions": {"ok": then}}


FLOW = {
    "name": "chain",
    "start": "a",
    "nodes": {
        "a": _step("a", "one", "b"), "b": _step("b", "one", "c"), "c": _step("c", "one", "d"),
        "d": _step("d", "two", "e"), "e": _step("e", "one", "done"),
        "done": {"type": "terminal", "status": "succeeded", "result": {"last": "context.c.step"}},
    },
}


@pytest.fixture
def engine(any_redis: redis.Redis, key_prefix: str) -> Engine:
    CALLS.clear()
    BEHAVIOUR.clear()
    eng = Engine(RedisStore(any_redis, Keys(key_prefix)), MemoryEnqueuer(), ManualClock(1_750_000_000.0))
    eng.publish(load_definition(json.dumps(FLOW)))
    return eng


def applied_per_seq(engine: Engine, iid: str) -> dict[int, int]:
    counts: dict[int, int] = {}
    for record in engine.activities(iid):
        if record["outcome"] == Outcome.APPLIED.value:
            counts[record["seq"]] = counts.get(record["seq"], 0) + 1
    return counts


def test_steps_of_one_service_run_on_without_messages(engine: Engine) -> None:
    driver = Driver(engine, ACTIONS, inline=True)
    iid = engine.start("chain", {})
    assert driver.run_until_idle() == 3  # a (carrying b, c), d on service two, e
    assert [m.node for m in driver.delivered] == ["a", "d", "e"]
    assert CALLS == ["a", "b", "c", "d", "e"]
    instance = engine.get(iid)
    assert instance.status is InstanceStatus.SUCCEEDED and instance.result == {"last": "c"}
    assert applied_per_seq(engine, iid) == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}
    assert instance.carrier is None  # a message carried it last


def test_without_inline_every_step_is_a_message(engine: Engine) -> None:
    driver = Driver(engine, ACTIONS)
    iid = engine.start("chain", {})
    assert driver.run_until_idle() == 5
    assert engine.get(iid).status is InstanceStatus.SUCCEEDED


def test_the_chain_stops_at_inline_steps(engine: Engine) -> None:
    runtime_of(engine).inline_steps = 1
    driver = Driver(engine, ACTIONS, inline=True)
    engine.start("chain", {})
    assert driver.run_until_idle() == 4  # a carries b; c needs a message of its own
    assert [m.node for m in driver.delivered] == ["a", "c", "d", "e"]


def test_a_pause_stops_the_chain_at_the_next_boundary(engine: Engine) -> None:
    driver = Driver(engine, ACTIONS, inline=True)
    iid = engine.start("chain", {})
    BEHAVIOUR["b"] = lambda: engine.pause(iid, "look first")
    driver.run_until_idle()
    instance = engine.get(iid)
    assert instance.status is InstanceStatus.PAUSED and instance.node == "c"
    assert CALLS == ["a", "b"]  # b was in flight: it finished and is recorded; c did not run
    engine.resume(iid)
    driver.run_until_idle()
    assert engine.get(iid).status is InstanceStatus.SUCCEEDED
    assert CALLS == ["a", "b", "c", "d", "e"]
    assert applied_per_seq(engine, iid) == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_redelivery_takes_over_the_chain_of_a_worker_that_died(engine: Engine) -> None:
    driver = Driver(engine, ACTIONS, inline=True)
    iid = engine.start("chain", {})
    first = enqueuer_of(engine).messages[0][0]
    this_process = runtime_of(engine).process
    runtime_of(engine).process = f"{socket.gethostname()}:{_dead_pid()}"  # the worker that is about to die

    def die() -> None:
        raise WorkerDied

    BEHAVIOUR["c"] = die
    with pytest.raises(WorkerDied):
        driver.step()  # a and b applied; the worker died inside c
    assert not enqueuer_of(engine).messages  # c had no message of its own: only the sweeper would find it...
    instance = engine.get(iid)
    assert (instance.node, instance.seq) == ("c", 3) and instance.carrier == f"a:1:1@{runtime_of(engine).process}"
    runtime_of(engine).process = this_process
    driver.deliver(first)  # ... but the broker redelivers a's unacknowledged message at once
    driver.run_until_idle()
    assert engine.get(iid).status is InstanceStatus.SUCCEEDED
    assert applied_per_seq(engine, iid) == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}
    noops = [r for r in engine.activities(iid) if r["outcome"] == Outcome.NOOP.value]
    assert len(noops) == 1 and "running that step now" in noops[0]["reason"]
    driver.deliver(first)  # a later duplicate of it finds no chain to take over
    assert applied_per_seq(engine, iid) == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}
    assert CALLS.count("c") == 2 and CALLS.count("d") == 1


def test_a_duplicate_of_the_carrier_leaves_a_living_carrier_alone(engine: Engine) -> None:
    driver = Driver(engine, ACTIONS, inline=True)
    iid = engine.start("chain", {})
    first = enqueuer_of(engine).messages[0][0]
    duplicates: list[Any] = []
    BEHAVIOUR["c"] = lambda: duplicates.append(driver.deliver(first))  # delivered again while c runs
    driver.run_until_idle()
    assert [d.outcome for d in duplicates] == [Outcome.NOOP]  # its carrier (this process) lives: no second c
    assert CALLS.count("c") == 1
    assert engine.get(iid).status is InstanceStatus.SUCCEEDED
    assert applied_per_seq(engine, iid) == {1: 1, 2: 1, 3: 1, 4: 1, 5: 1}


def test_carrier_died_reads_host_and_pid() -> None:
    here = socket.gethostname()
    assert not carrier_died(None, "a:1:1")
    assert not carrier_died(f"a:1:1@{here}:{os.getpid()}", "a:1:1")  # alive
    assert not carrier_died(f"a:1:1@{here}:{_dead_pid()}", "b:2:1")  # another message's chain
    assert carrier_died(f"a:1:1@{here}:{_dead_pid()}", "a:1:1")
    assert carrier_died("a:1:1@some-other-host:12", "a:1:1")  # cannot tell: the redelivery takes over
    # on another host, its liveness mark tells
    assert not carrier_died("a:1:1@some-other-host:12", "a:1:1", {"some-other-host:12": True}.__getitem__)
    assert carrier_died("a:1:1@some-other-host:12", "a:1:1", {"some-other-host:12": False}.__getitem__)
