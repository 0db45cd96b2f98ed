"""Await nodes and signals, driven one message at a time on fakeredis and on a real Redis.

Pins: a signal moves an awaiting instance on in one compare-and-set (context, history with
sender and time), a resent key is a recorded no-op, a signal not awaited is refused with
where the instance is, the timeout fires once through the timer set, a signal and the
timeout racing each other give exactly one winner, bulk signals over a run, pause/resume of
an awaiting instance, and the run's phase ("planned" once every live instance awaits).
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
from engine.errors import SignalRefused
from engine.model import InstanceStatus, Outcome
from engine.service import ActionRegistry, Transition, action
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import Driver

ACTIONS = ActionRegistry()
CALLS: list[dict[str, Any]] = []


@action("svc", "prepare", into=ACTIONS)
def prepare(payload: dict[str, Any]) -> Transition:
    """Returns the amount to be reviewed."""
    return Transition("ok", {"amount": payload["amount"]})


@action("svc", "execute", into=ACTIONS)
def execute(payload: dict[str, Any]) -> Transition:
    """Records that it ran, with what it was given."""
    CALLS.append(payload)
    return Transition("ok", {"executed": True})


REVIEW_FLOW = {
    "name": "review-flow",
    "initial_data": {"type": "object", "required": ["amount"]},
    "parameters": {"cutoff": "2h", "two_over": 1000},
    "start": "prepare",
    "nodes": {
        "prepare": {"type": "service", "service": "svc", "action": "prepare", "input": {"amount": "data.amount"},
                    "transitions": {"ok": "review"}},
        "review": {"type": "await", "signals": {"approve": "enough", "reject": "rejected"},
                   "timeout": "now() + duration(params.cutoff)", "on_timeout": "expired"},
        "enough": {"type": "choice",
                   "choices": [{"when": "context.prepare.amount > params.two_over && "
                                        "size(context.review.approvers) < 2", "next": "review"}],
                   "default": "execute"},
        "execute": {"type": "service", "service": "svc", "action": "execute",
                    "input": {"approvers": "context.review.approvers"}, "transitions": {"ok": "done"}},
        "done": {"type": "terminal", "status": "succeeded"},
        "rejected": {"type": "terminal", "status": "succeeded", "result": {"why": "context.review.reason"}},
        "expired": {"type": "terminal", "status": "succeeded", "result": {"outcome": "'expired'"}},
    },
}

FIRST_FLOW = {  # an await as the very first node, without a timeout
    "name": "await-first",
    "start": "gate",
    "nodes": {
        "gate": {"type": "await", "signals": {"go": "done"}},
        "done": {"type": "terminal", "status": "succeeded", "result": "context.gate"},
    },
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_750_000_000.0)


@pytest.fixture
def engine(any_redis: redis.Redis, key_prefix: str, clock: ManualClock) -> Engine:
    eng = Engine(RedisStore(any_redis, Keys(key_prefix), retention_seconds=3600), MemoryEnqueuer(), clock)
    for body in (REVIEW_FLOW, FIRST_FLOW):
        eng.publish(load_definition(json.dumps(body)))
    return eng


@pytest.fixture
def driver(engine: Engine) -> Driver:
    CALLS.clear()
    return Driver(engine, ACTIONS)


def started(engine: Engine, driver: Driver, amount: float = 10, run: str = "r") -> str:
    iid = engine.start("review-flow", {"amount": amount}, run=run)
    driver.run_until_idle()
    assert engine.get(iid).status is InstanceStatus.AWAITING
    return iid


def outcomes(engine: Engine, iid: str) -> list[str]:
    return [a["outcome"] for a in engine.activities(iid)]


def test_an_instance_parks_at_an_await_node_with_its_timeout_as_a_timer(engine: Engine, driver: Driver,
                                                                         clock: ManualClock) -> None:
    iid = started(engine, driver)
    inst = engine.get(iid)
    assert inst.node == "review" and not inst.inflight
    assert inst.timer == "timeout" and inst.wake_at == pytest.approx(clock() + 7200)
    assert engine.store.next_timer() == pytest.approx(clock() + 7200)
    assert engine.progress("r").phase == "planned"
    assert driver.run_until_idle() == 0  # nothing to do until a signal or the timeout


def test_a_signal_moves_the_instance_on_with_its_data_sender_and_time(engine: Engine, driver: Driver,
                                                                      clock: ManualClock) -> None:
    iid = started(engine, driver)
    clock.advance(60)
    result = engine.signal(iid, "approve", {"approvers": ["ann"]}, by="ann", key="k1")
    assert result.applied and not result.duplicate and result.node == "execute"
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.RUNNING and inst.context["review"] == {"approvers": ["ann"]}
    assert inst.timer is None and engine.store.next_timer() is None  # the timeout is gone with the wait
    driver.run_until_idle()
    assert engine.get(iid).status is InstanceStatus.SUCCEEDED
    assert CALLS == [{"approvers": ["ann"]}]
    record = next(a for a in engine.activities(iid) if a["outcome"] == Outcome.SIGNALLED.value)
    assert (record["signal"], record["by"], record["key"], record["next"]) == ("approve", "ann", "k1", "execute")
    assert record["ended_at"] == pytest.approx(clock())


def test_a_signal_sent_twice_with_the_same_key_applies_once(engine: Engine, driver: Driver) -> None:
    iid = started(engine, driver, amount=5000)  # two approvals needed: the instance awaits again after one
    first = engine.signal(iid, "approve", {"approvers": ["ann"]}, by="ann", key="approve:ann")
    assert first.applied and engine.get(iid).status is InstanceStatus.AWAITING
    seq = engine.get(iid).seq
    again = engine.signal(iid, "approve", {"approvers": ["ann"]}, by="ann", key="approve:ann")
    assert again.duplicate and not again.applied
    assert engine.get(iid).seq == seq and engine.get(iid).noops == 1
    assert outcomes(engine, iid).count(Outcome.SIGNALLED.value) == 1
    noop = engine.activities(iid)[-1]
    assert noop["outcome"] == "noop" and "approve:ann" in noop["reason"]
    engine.signal(iid, "approve", {"approvers": ["ann", "bob"]}, by="bob", key="approve:bob")
    driver.run_until_idle()
    assert engine.get(iid).status is InstanceStatus.SUCCEEDED and len(CALLS) == 1
    # after the instance finished, the same key is still a no-op, not an error
    assert engine.signal(iid, "approve", {}, by="bob", key="approve:bob").duplicate


def test_a_signal_the_instance_does_not_await_is_refused_saying_where_it_is(engine: Engine,
                                                                            driver: Driver) -> None:
    iid = started(engine, driver)
    with pytest.raises(SignalRefused, match=r"'approve', 'reject'") as info:
        engine.signal(iid, "aprove")
    assert "awaiting at node 'review'" in str(info.value)
    engine.signal(iid, "reject", {"reason": "too risky"}, by="ann")
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.SUCCEEDED and inst.result == {"why": "too risky"}
    with pytest.raises(SignalRefused, match=r"is succeeded at node 'rejected' and awaits no signal"):
        engine.signal(iid, "approve", by="bob")
    with pytest.raises(SignalRefused, match="JSON object"):
        engine.signal(iid, "approve", ["not", "an", "object"])  # type: ignore[arg-type]


def test_the_timeout_fires_once_and_a_late_signal_is_refused(engine: Engine, driver: Driver,
                                                           clock: ManualClock) -> None:
    iid = started(engine, driver)
    clock.advance(7199)
    assert engine.runtime.tick() == 0
    clock.advance(2)
    assert engine.runtime.tick() == 1
    assert engine.runtime.tick() == 0  # once
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.SUCCEEDED and inst.node == "expired"
    assert outcomes(engine, iid)[-1] == Outcome.TIMED_OUT.value
    with pytest.raises(SignalRefused, match="expired"):
        engine.signal(iid, "approve", {"approvers": ["ann"]}, by="ann")
    assert CALLS == []


def test_signal_and_timeout_raced_exactly_one_wins(engine: Engine, driver: Driver, clock: ManualClock) -> None:
    iid = started(engine, driver)
    before = engine.get(iid)  # the tick loaded the instance ...
    clock.advance(7201)
    engine.signal(iid, "approve", {"approvers": ["ann"]}, by="ann")  # ... a signal applies first ...
    definition = engine.definition("review-flow")
    from engine.runtime.signals import fire_timeout

    assert fire_timeout(engine.runtime, before, definition, clock()) == 0  # ... then the timeout: a no-op
    driver.run_until_idle()
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.SUCCEEDED and inst.node == "done" and len(CALLS) == 1
    assert outcomes(engine, iid).count(Outcome.TIMED_OUT.value) == 0
    assert engine.activities(iid)[3]["outcome"] == "noop"  # after started, prepare, signalled
    # the other way round: the timeout first, then the signal is refused and recorded
    other = started(engine, driver)
    stale = engine.get(other)
    clock.advance(7201)
    assert engine.runtime.tick() == 1
    with pytest.raises(SignalRefused):
        engine.signal(other, "approve", {"approvers": ["ann"]}, by="ann")
    assert fire_timeout(engine.runtime, stale, definition, clock()) == 0
    assert engine.get(other).node == "expired" and len(CALLS) == 1


def test_bulk_signal_over_a_run_counts_applied_and_skipped(engine: Engine, driver: Driver) -> None:
    ids = [started(engine, driver, run="bulk") for _ in range(3)]
    engine.signal(ids[0], "reject", {"reason": "no"}, by="ann")
    result = engine.signal_run("bulk", "approve", {"approvers": ["ann"]}, by="ann", key="bulk-1")
    assert (result.done, result.skipped) == (2, 0)  # the rejected one is no longer awaiting
    again = engine.signal_run("bulk", "approve", {"approvers": ["ann"]}, by="ann", key="bulk-1")
    assert (again.done, again.skipped) == (0, 0)
    driver.run_until_idle()
    assert [engine.get(i).node for i in ids] == ["rejected", "done", "done"]
    assert len(CALLS) == 2
    other = [started(engine, driver, run="nodes") for _ in range(2)]
    assert engine.signal_run("nodes", "approve", {"approvers": ["a"]}, node="elsewhere").skipped == 2
    assert all(engine.get(i).status is InstanceStatus.AWAITING for i in other)


def test_an_awaiting_instance_pauses_and_resumes_with_its_timeout(engine: Engine, driver: Driver,
                                                                  clock: ManualClock) -> None:
    iid = started(engine, driver)
    wake = engine.get(iid).wake_at
    engine.pause(iid)
    assert engine.store.next_timer() is None
    with pytest.raises(SignalRefused, match="paused"):
        engine.signal(iid, "approve", {"approvers": ["a"]})
    engine.resume(iid)
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.AWAITING and inst.wake_at == wake
    clock.advance(7300)
    assert engine.runtime.tick() == 1 and engine.get(iid).node == "expired"


def test_an_await_first_without_timeout_starts_awaiting(engine: Engine, driver: Driver) -> None:
    iid = engine.start("await-first", {}, run="first")
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.AWAITING and inst.timer is None
    progress = engine.progress("first")
    assert progress.awaiting == 1 and progress.settled and not progress.done and progress.phase == "planned"
    engine.signal(iid, "go", {"x": 1}, by="ops")
    assert engine.get(iid).result == {"x": 1}
    assert engine.progress("first").phase == "finished"


def test_a_run_is_running_until_every_live_instance_awaits(engine: Engine, driver: Driver) -> None:
    engine.start("review-flow", {"amount": 1}, run="phase")
    assert engine.progress("phase").phase == "running"
    driver.run_until_idle()
    assert engine.progress("phase").phase == "planned"


def test_the_signal_command_sends_one_or_a_run_and_says_what_is_wrong(engine: Engine, driver: Driver,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    import engine.cli as cli

    monkeypatch.setattr(cli, "_engine", lambda allow_start=False: engine)
    runner = CliRunner()
    iid = started(engine, driver, run="cli")
    wrong = runner.invoke(cli.main, ["signal", iid, "aprove"])
    assert wrong.exit_code == 1 and "it awaits 'approve', 'reject'" in " ".join(wrong.output.split())
    listed = runner.invoke(cli.main, ["list", "--run", "cli"])
    assert "awaiting signal" in " ".join(listed.output.split())  # the table wraps the rest of the line
    args = ["signal", iid, "approve", "--data", '{"approvers": ["ann"]}', "--by", "ann", "--key", "k"]
    sent = runner.invoke(cli.main, args)
    assert sent.exit_code == 0 and "running at execute" in sent.output
    again = runner.invoke(cli.main, args)
    assert again.exit_code == 0 and "applied before; nothing done" in " ".join(again.output.split())
    others = [started(engine, driver, run="cli") for _ in range(2)]
    bulk = runner.invoke(cli.main, ["signal", "--run", "cli", "reject", "--by", "ops", "--data", '{"reason": "x"}'])
    assert bulk.exit_code == 0 and "2 applied, 0 skipped" in bulk.output
    assert {engine.get(i).node for i in others} == {"rejected"}
    usage = runner.invoke(cli.main, ["signal", "--run", "cli", iid, "approve"])
    assert usage.exit_code == 2 and "with --run, give the signal NAME only" in usage.output
