"""The engine driven one message at a time (no Celery), on fakeredis and on a real Redis.

These tests pin the state machine: transitions, choices, waits, retries, the sweeper,
operator actions, versions and the compare-and-set that turns duplicates into no-ops.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
import redis
from click.testing import CliRunner

import engine.cli as cli
from engine.api import Engine, StartItem
from engine.broker import MemoryEnqueuer
from engine.clock import ManualClock
from engine.definitions.validation import load_definition
from engine.errors import ActionFailed, DataSetLost, DefinitionError, InvalidState
from engine.instance import InstanceStatus, Outcome
from engine.service import ActionRegistry, Transition, action
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import Driver, enqueuer_of, runtime_of, store_of

ACTIONS = ActionRegistry()
CALLS: dict[str, int] = {}


@action("svc", "fetch", into=ACTIONS)
def fetch(payload: dict[str, Any]) -> Transition:
    """Answers with the account's value; 'closed' accounts take another transition."""
    CALLS["fetch"] = CALLS.get("fetch", 0) + 1
    if payload["account"] == "closed":
        return Transition("closed")
    if payload["account"] == "weird":
        return Transition("no_such_transition")
    if payload["account"] == "bad":
        raise ActionFailed("account data is broken")
    return Transition("ok", {"value": len(payload["account"]) * 10})


@action("svc", "flaky", into=ACTIONS)
def flaky(payload: dict[str, Any]) -> Transition:
    """Fails until it has been called ``payload['fail_times']`` times for this key."""
    key = f"flaky:{payload['key']}"
    CALLS[key] = CALLS.get(key, 0) + 1
    if CALLS[key] <= payload["fail_times"]:
        raise ConnectionError(f"upstream down (call {CALLS[key]})")
    return Transition("ok", {"calls": CALLS[key]})


@action("svc", "record", into=ACTIONS)
def record(payload: dict[str, Any]) -> Transition:
    """Echoes its input."""
    return Transition("ok", {"got": payload})


FLOW = {
    "name": "flow",
    "description": "fetch, decide, record",
    "initial_data": {"type": "object", "required": ["account"], "properties": {"account": {"type": "string"}}},
    "parameters": {"threshold": 30},
    "start": "fetch",
    "nodes": {
        "fetch": {"type": "service", "service": "svc", "action": "fetch",
                  "input": {"account": "data.account"},
                  "transitions": {"ok": "big_enough", "closed": "skipped"}},
        "big_enough": {"type": "choice",
                       "choices": [{"when": "context.fetch.value >= params.threshold", "next": "record"}],
                       "default": "small"},
        "record": {"type": "service", "service": "svc", "action": "record",
                   "input": {"value": "context.fetch.value", "tag": "'big'"},
                   "transitions": {"ok": "done"}},
        "done": {"type": "terminal", "status": "succeeded", "result": {"value": "context.record.got.value"}},
        "small": {"type": "terminal", "status": "succeeded"},
        "skipped": {"type": "terminal", "status": "succeeded"},
    },
}


def flaky_flow(max_attempts: int, backoff: float = 10.0) -> dict[str, Any]:
    return {
        "name": "flaky-flow",
        "initial_data": {"type": "object"},
        "start": "call",
        "nodes": {
            "call": {"type": "service", "service": "svc", "action": "flaky",
                     "input": {"key": "data.key", "fail_times": "data.fail_times"},
                     "transitions": {"ok": "done"},
                     "retry": {"max_attempts": max_attempts, "backoff_seconds": backoff, "backoff_rate": 2.0},
                     "timeout_seconds": 60},
            "done": {"type": "terminal", "status": "succeeded"},
        },
    }


WAIT_FLOW = {
    "name": "wait-flow",
    "start": "nap",
    "nodes": {
        "nap": {"type": "wait", "until": "now() + duration('90m')", "next": "record"},
        "record": {"type": "service", "service": "svc", "action": "record", "input": {"x": 1},
                   "transitions": {"ok": "done"}},
        "done": {"type": "terminal", "status": "succeeded"},
    },
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_750_000_000.0)


@pytest.fixture
def engine(any_redis: redis.Redis, key_prefix: str, clock: ManualClock) -> Engine:
    store = RedisStore(any_redis, Keys(key_prefix), retention_seconds=3600)
    eng = Engine(store, MemoryEnqueuer(), clock)
    for body in (FLOW, flaky_flow(3), WAIT_FLOW):
        eng.publish(load_definition(json.dumps(body)))
    return eng


@pytest.fixture
def driver(engine: Engine) -> Driver:
    CALLS.clear()
    return Driver(engine, ACTIONS)


def outcomes(engine: Engine, iid: str) -> list[str]:
    return [a["outcome"] for a in engine.activities(iid)]


def test_multi_node_flow_completes_with_context_result_and_history(engine: Engine, driver: Driver) -> None:
    iid = engine.start("flow", {"account": "ABCD"})
    assert engine.get(iid).status is InstanceStatus.RUNNING
    assert store_of(engine).ttl(iid) == -1  # live instances never expire
    assert driver.run_until_idle() == 2  # fetch and record; the choice and terminal need no message

    inst = engine.get(iid)
    assert inst.status is InstanceStatus.SUCCEEDED
    assert inst.context == {"fetch": {"value": 40}, "record": {"got": {"value": 40, "tag": "big"}}}
    assert inst.result == {"value": 40}
    assert inst.seq == 3
    acts = engine.activities(iid)
    assert [a["outcome"] for a in acts] == ["started", "applied", "applied"]
    assert acts[1]["node"] == "fetch" and acts[1]["transition"] == "ok"
    assert acts[1]["next"] == "record" and acts[1]["via"] == ["big_enough"]
    assert acts[2]["sent"] == {"value": 40, "tag": "big"}
    assert 0 < store_of(engine).ttl(iid) <= 3600  # finished: TTL set


def test_choice_default_and_alternative_transition(engine: Engine, driver: Driver) -> None:
    small = engine.start("flow", {"account": "AB"})
    closed = engine.start("flow", {"account": "closed"})
    driver.run_until_idle()
    assert engine.get(small).node == "small"
    assert engine.get(closed).node == "skipped"
    assert engine.get(small).status is engine.get(closed).status is InstanceStatus.SUCCEEDED


def test_unknown_transition_and_action_failure_fail_only_their_instance(engine: Engine, driver: Driver) -> None:
    ids = engine.start_many("flow", [{"account": a} for a in ["ABCD", "weird", "bad", "WXYZ"]], run="r1")
    driver.run_until_idle()
    statuses = [engine.get(i).status for i in ids]
    assert statuses == [InstanceStatus.SUCCEEDED, InstanceStatus.FAILED, InstanceStatus.FAILED,
                        InstanceStatus.SUCCEEDED]
    weird, bad = engine.get(ids[1]), engine.get(ids[2])
    assert weird.error is not None and bad.error is not None
    assert weird.error["node"] == "fetch" and weird.error["service"] == "svc"
    assert "unknown transition 'no_such_transition'" in weird.error["reason"]
    assert bad.error["reason"] == "account data is broken" and bad.error["attempt"] == 1
    assert CALLS["fetch"] == 4  # ActionFailed is not retried
    counts = engine.progress("r1").counts
    assert counts["succeeded"] == 2 and counts["failed"] == 2


def test_invalid_input_in_start_many_fails_that_instance_only(engine: Engine, driver: Driver) -> None:
    ids = engine.start_many("flow", [{"account": "ABCD"}, {"acct": 1}], run="r2")
    bad = engine.get(ids[1])
    assert bad.status is InstanceStatus.FAILED
    assert bad.error is not None and "invalid input" in bad.error["reason"]
    driver.run_until_idle()
    assert engine.get(ids[0]).status is InstanceStatus.SUCCEEDED
    assert engine.progress("r2").done


def test_duplicate_delivery_applies_once_and_is_recorded_as_noop(engine: Engine, driver: Driver) -> None:
    iid = engine.start("flow", {"account": "ABCD"})
    first = driver.queue.pop()
    assert driver.deliver(first).outcome is Outcome.APPLIED
    assert driver.deliver(first).outcome is Outcome.NOOP  # redelivered after it was applied
    driver.run_until_idle()
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.SUCCEEDED and inst.noops == 1
    applied = [a for a in engine.activities(iid) if a["outcome"] == "applied"]
    assert [a["node"] for a in applied] == ["fetch", "record"]
    assert outcomes(engine, iid).count("noop") == 1
    assert CALLS["fetch"] == 1  # the stale delivery was recognised before running the action


def test_retry_with_backoff_on_the_timer_then_success(engine: Engine, driver: Driver, clock: ManualClock) -> None:
    iid = engine.start("flaky-flow", {"key": "a", "fail_times": 2})
    driver.run_until_idle()
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.RUNNING and inst.attempt == 2 and inst.timer == "retry"
    assert inst.wake_at == pytest.approx(clock() + 10)
    clock.advance(9)
    assert driver.run_until_idle() == 0  # not yet due
    clock.advance(2)
    driver.run_until_idle()  # attempt 2 fails, backoff 20 s
    assert engine.get(iid).attempt == 3
    clock.advance(21)
    driver.run_until_idle()
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.SUCCEEDED and inst.context["call"] == {"calls": 3}
    assert outcomes(engine, iid) == ["started", "retry", "retry", "applied"]


def test_retries_are_bounded(engine: Engine, driver: Driver, clock: ManualClock) -> None:
    iid = engine.start("flaky-flow", {"key": "b", "fail_times": 99})
    for _ in range(5):
        driver.run_until_idle()
        clock.advance(100)
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.FAILED
    assert inst.error is not None and "after 3 attempts" in inst.error["reason"]
    assert CALLS["flaky:b"] == 3


def test_wait_resumes_at_its_computed_time(engine: Engine, driver: Driver, clock: ManualClock) -> None:
    iid = engine.start("wait-flow", {})
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.WAITING and inst.wake_at == pytest.approx(clock() + 5400)
    assert not driver.queue.messages  # a wait sends nothing
    clock.advance(5399)
    driver.run_until_idle()
    assert engine.get(iid).status is InstanceStatus.WAITING
    clock.advance(2)
    driver.run_until_idle()
    assert engine.get(iid).status is InstanceStatus.SUCCEEDED
    assert outcomes(engine, iid) == ["started", "woke", "applied"]


PASSED_WAITS = {  # a wait whose time has come, at the start and after a step
    "name": "passed-waits",
    "initial_data": {"type": "object"},
    "start": "opened",
    "nodes": {
        "opened": {"type": "wait", "until": "timestamp(data.open)", "next": "record"},
        "record": {"type": "service", "service": "svc", "action": "record", "input": {"x": 1},
                   "transitions": {"ok": "settled"}},
        "settled": {"type": "wait", "until": "timestamp(data.settle)", "next": "done"},
        "done": {"type": "terminal", "status": "succeeded"},
    },
}


def test_a_wait_whose_time_has_come_is_passed_at_once_without_a_timer(
        engine: Engine, driver: Driver, clock: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    engine.publish(load_definition(json.dumps(PASSED_WAITS)))
    past, now = "2025-06-15T15:00:00Z", "2025-06-15T15:06:40Z"  # the clock's own time (1_750_000_000)
    assert clock() == datetime.fromisoformat(now).timestamp()
    iid = engine.start("passed-waits", {"open": past, "settle": now})
    inst = engine.get(iid)
    assert (inst.status, inst.node, inst.wake_at) == (InstanceStatus.RUNNING, "record", None)
    assert len(driver.queue.messages) == 1 and engine.timers_due() == 0  # its step is sent, no timer is set
    created = engine.activities(iid)[0]
    assert (created["outcome"], created["next"], created["via"]) == ("started", "record", ["opened"])
    driver.run_until_idle()  # the step lands on the second wait: its time (now) has come too
    assert engine.get(iid).status is InstanceStatus.SUCCEEDED
    applied = engine.activities(iid)[-1]
    assert (applied["node"], applied["next"], applied["via"]) == ("record", "done", ["settled"])
    assert outcomes(engine, iid) == ["started", "applied"]  # nothing woke it
    monkeypatch.setattr(cli, "cli_engine", lambda allow_start=False: engine)
    monkeypatch.setattr(cli.console, "width", 200)  # a table row on one line
    shown = " ".join(CliRunner().invoke(cli.main, ["inspect", iid]).output.split())
    assert "(via opened)" in shown and "(via settled)" in shown  # an operator sees the waits it passed


def test_a_wait_a_moment_ahead_still_waits_for_its_time(engine: Engine, driver: Driver, clock: ManualClock) -> None:
    engine.publish(load_definition(json.dumps(PASSED_WAITS)))
    iid = engine.start("passed-waits", {"open": "2025-06-15T15:06:41Z", "settle": "2025-06-15T15:00:00Z"})
    assert (engine.get(iid).status, engine.get(iid).node) == (InstanceStatus.WAITING, "opened")
    assert not driver.queue.messages
    clock.advance(1)
    driver.run_until_idle()
    assert engine.get(iid).status is InstanceStatus.SUCCEEDED
    assert outcomes(engine, iid) == ["started", "woke", "applied"]


def test_waits_passed_in_a_loop_fail_the_instance_with_the_reason(engine: Engine) -> None:
    looping = {"name": "looping", "start": "a", "nodes": {
        "a": {"type": "wait", "until": "now()", "next": "b"},
        "b": {"type": "choice", "choices": [{"when": "has(data.stop)", "next": "stopped"}], "default": "a"},
        "stopped": {"type": "terminal", "status": "succeeded"}}}
    engine.publish(load_definition(json.dumps(looping)))
    inst = engine.get(engine.start("looping", {}))
    assert inst.status is InstanceStatus.FAILED
    assert inst.error is not None and "a loop without a step" in inst.error["reason"]


def test_pause_lets_the_step_in_flight_finish_and_resume_goes_on(engine: Engine, driver: Driver) -> None:
    iid = engine.start("flow", {"account": "ABCD"})
    message = driver.queue.pop()

    def pause_while_running(node: Any, payload: Any) -> Transition:
        engine.pause(iid, reason="checking")  # the operator pauses while the action runs
        return driver.execute(node, payload)

    runtime_of(engine).run_step(iid, message.node, message.seq, message.attempt, pause_while_running)
    # the step in flight when paused: its result is recorded...
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.PAUSED and inst.node == "record" and "fetch" in inst.context
    assert not driver.queue.messages  # ...but nothing further is sent
    engine.resume(iid)
    driver.run_until_idle()
    assert engine.get(iid).status is InstanceStatus.SUCCEEDED
    assert [a.get("control") for a in engine.activities(iid) if a["outcome"] == "control"] == ["pause", "resume"]


def test_a_queued_step_of_a_paused_instance_is_skipped_and_resent_on_resume(engine: Engine, driver: Driver) -> None:
    iid = engine.start("flow", {"account": "ABCD"})
    engine.pause(iid)
    assert driver.step() is not None and engine.get(iid).node == "fetch"  # skipped, not run
    assert CALLS.get("fetch", 0) == 0
    engine.resume(iid)
    driver.run_until_idle()
    assert engine.get(iid).status is InstanceStatus.SUCCEEDED and CALLS["fetch"] == 1


def test_resume_while_the_step_is_still_in_flight_does_not_send_it_twice(engine: Engine, driver: Driver) -> None:
    iid = engine.start("flow", {"account": "ABCD"})
    message = driver.queue.pop()
    engine.pause(iid)
    engine.resume(iid)
    assert not driver.queue.messages
    driver.deliver(message)
    driver.run_until_idle()
    assert engine.get(iid).status is InstanceStatus.SUCCEEDED and CALLS["fetch"] == 1


def test_cancel_ignores_the_late_result(engine: Engine, driver: Driver) -> None:
    iid = engine.start("flow", {"account": "ABCD"})
    message = driver.queue.pop()
    engine.cancel(iid, reason="client left")
    driver.deliver(message)
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.CANCELLED and inst.context == {}
    assert outcomes(engine, iid)[-1] == "noop"
    with pytest.raises(InvalidState):
        engine.resume(iid)


def test_retry_a_failed_instance_with_an_edited_context(engine: Engine, driver: Driver) -> None:
    bad_definition = dict(FLOW, name="flow2")
    bad_definition["nodes"] = dict(FLOW["nodes"])
    bad_definition["nodes"]["record"] = dict(FLOW["nodes"]["record"], input={"value": "context.fetch.missing"})
    engine.publish(load_definition(json.dumps(bad_definition)))
    iid = engine.start("flow2", {"account": "ABCD"})
    driver.run_until_idle()
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.FAILED and inst.node == "record"
    assert inst.error is not None and inst.error["type"] == "ExpressionError"
    engine.retry(iid, context={"fetch": {"value": 40, "missing": 7}})
    driver.run_until_idle()
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.SUCCEEDED and inst.context["record"] == {"got": {"value": 7}}
    assert inst.error is None


def test_bulk_operations_over_a_run(engine: Engine, driver: Driver) -> None:
    ids = engine.start_many("flow", [{"account": f"ACC{i}"} for i in range(6)], run="bulk")
    assert engine.bulk("pause", "bulk").done == 6
    assert engine.progress("bulk").counts["paused"] == 6
    driver.run_until_idle()  # every queued step is skipped
    assert all(engine.get(i).status is InstanceStatus.PAUSED for i in ids)
    assert engine.bulk("resume", "bulk").done == 6
    engine.cancel(ids[0])
    driver.run_until_idle()
    counts = engine.progress("bulk").counts
    assert counts["succeeded"] == 5 and counts["cancelled"] == 1
    assert engine.bulk("cancel", "bulk").done == 0  # nothing live is left


def _start_and_die(engine: Engine, driver: Driver, clock: ManualClock) -> None:
    """A worker takes the next message, starts its step, and dies with it."""
    message = driver.queue.pop()
    store_of(engine).start(message.instance_id, message.node, message.seq, message.attempt, clock())


def test_sweeper_resends_a_lost_step_and_gives_up_after_bounded_attempts(
    engine: Engine, driver: Driver, clock: ManualClock
) -> None:
    iid = engine.start("flow", {"account": "ABCD"})
    _start_and_die(engine, driver, clock)  # the message is lost (worker node died with it)
    clock.advance(306)
    assert runtime_of(engine).sweep() == 1
    assert engine.get(iid).attempt == 2 and len(driver.queue.messages) == 1
    driver.run_until_idle()
    assert engine.get(iid).status is InstanceStatus.SUCCEEDED

    hung = engine.start("flow", {"account": "WXYZ"})
    for _ in range(3):
        _start_and_die(engine, driver, clock)
        clock.advance(306)
        runtime_of(engine).sweep()
    inst = engine.get(hung)
    assert inst.status is InstanceStatus.FAILED
    assert inst.error is not None and inst.error["type"] == "Timeout"


def test_a_backlog_is_not_a_loss(engine: Engine, driver: Driver, clock: ManualClock) -> None:
    ids = engine.start_many("flow", [{"account": f"ACC{i}"} for i in range(20)], run="backlog")
    clock.advance(10 * 306)  # every step waited ten timeouts in the queue
    assert runtime_of(engine).sweep() == 0
    assert runtime_of(engine).reconcile(every=0) == 0 and runtime_of(engine).reconcile(every=0) == 0
    before = CALLS.get("fetch", 0)
    driver.run_until_idle()
    assert CALLS["fetch"] - before == 20  # one execution per step, nothing re-sent
    for iid in ids:
        assert engine.get(iid).status is InstanceStatus.SUCCEEDED
        assert all(a["outcome"] != "retry" and a.get("attempt", 1) == 1 for a in engine.activities(iid))


def test_a_timeout_counts_from_the_start_of_the_step(engine: Engine, driver: Driver, clock: ManualClock) -> None:
    iid = engine.start("flow", {"account": "ABCD"})
    clock.advance(1000)  # queued for longer than the timeout
    _start_and_die(engine, driver, clock)
    clock.advance(300)  # started 300 s ago: the timeout (300 s) plus its grace is not over yet
    assert runtime_of(engine).sweep() == 0
    clock.advance(6)
    assert runtime_of(engine).sweep() == 1 and engine.get(iid).attempt == 2


def test_a_queued_message_that_is_lost_is_resent_by_the_reconciliation(
    engine: Engine, driver: Driver, clock: ManualClock
) -> None:
    iid = engine.start("flow", {"account": "ABCD"})
    kept = engine.start("flow", {"account": "EFGH"})
    driver.queue.messages = [(m, p) for m, p in driver.queue.messages if m.instance_id != iid]  # dropped
    clock.advance(61)
    assert runtime_of(engine).sweep() == 0  # no deadline: it never started
    assert runtime_of(engine).reconcile(every=0) == 0  # missing once: a suspect (it may be in a worker's hands)
    assert runtime_of(engine).reconcile(every=0) == 1  # missing twice, still queued: re-sent
    assert engine.get(iid).attempt == 2 and engine.get(kept).attempt == 1
    assert runtime_of(engine).reconcile(every=0) == 0  # its new message is there
    driver.run_until_idle()
    assert engine.get(iid).status is InstanceStatus.SUCCEEDED
    lost = [a for a in engine.activities(iid) if a["outcome"] == "retry"]
    assert len(lost) == 1 and "message lost" in lost[0]["error"]


def test_a_deep_old_backlog_is_read_whole_once_per_held_period_not_at_every_reconciliation(
    engine: Engine, driver: Driver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queued steps older than FULL_CHECK_PERIODS reconcile periods, every message accounted for:
    the whole queue is read (O(backlog)) at most once per that long; a lost one is still found."""
    import time as real_time

    from engine.runtime.concerns import timeouts

    ids = engine.start_many("flow", [{"account": f"A{n:03d}"} for n in range(20)])
    reads: list[int] = []
    pending = enqueuer_of(engine).pending
    monkeypatch.setattr(enqueuer_of(engine), "pending", lambda queues: reads.append(1) or pending(queues))
    later = real_time.time() + 60 * timeouts.FULL_CHECK_PERIODS + 1  # the steps are that old

    def reconcile_at(offset: float) -> int:
        monkeypatch.setattr(timeouts, "time", type("T", (), {"time": staticmethod(lambda: later + offset)}))
        store_of(engine).client.delete(store_of(engine).keys.reconcile_lock)  # one reconciliation per minute
        return runtime_of(engine).reconcile(every=60)

    assert reconcile_at(0) == 0 and len(reads) == 1  # the first look at an old backlog reads it
    for minute in range(1, 5):
        assert reconcile_at(60 * minute) == 0
    assert len(reads) == 1  # counts agree: not read again within the period
    driver.queue.messages = [(m, p) for m, p in driver.queue.messages if m.instance_id != ids[3]]
    store_of(engine).client.delete(store_of(engine).keys.reconcile_full_lock)  # the period is over
    assert reconcile_at(600) == 0 and reconcile_at(660) == 1  # missing from the count: read, found twice
    assert engine.get(ids[3]).attempt == 2 and len(reads) == 3


def test_versions_run_side_by_side_and_instances_stay_pinned(engine: Engine, driver: Driver) -> None:
    old = engine.start("flow", {"account": "ABC"})  # value 30 >= threshold 30 -> record
    v2 = dict(FLOW, parameters={"threshold": 100})
    version = engine.publish(load_definition(json.dumps(v2)), alias="production")
    assert version == 2
    assert engine.publish(load_definition(json.dumps(v2))) == 2  # same content: same version
    new = engine.start("flow", {"account": "ABC"}, version="production")
    driver.run_until_idle()
    assert (engine.get(old).version, engine.get(old).node) == (1, "done")
    assert (engine.get(new).version, engine.get(new).node) == (2, "small")


def test_record_level_metadata_keeps_no_payloads(engine: Engine, driver: Driver) -> None:
    engine.publish(load_definition(json.dumps(dict(FLOW, name="quiet", record="metadata"))))
    iid = engine.start("quiet", {"account": "ABCD"})
    driver.run_until_idle()
    applied = [a for a in engine.activities(iid) if a["outcome"] == "applied"]
    assert applied and all("sent" not in a and "received" not in a for a in applied)
    assert engine.get(iid).context["fetch"] == {"value": 40}  # the context itself is kept


def test_starting_with_the_same_id_twice_starts_once(engine: Engine, driver: Driver) -> None:
    first = engine.start_many("flow", [StartItem({"account": "ABCD"}, "acct-1")], run="idem")
    again = engine.start_many("flow", [StartItem({"account": "ABCD"}, "acct-1")], run="idem")
    assert first == again == ["acct-1"]
    driver.run_until_idle()
    assert CALLS["fetch"] == 1 and engine.progress("idem").total == 1


def test_redis_restarted_empty_is_detected_not_silently_skipped(engine: Engine, driver: Driver,
                                                                 any_redis: redis.Redis, key_prefix: str) -> None:
    iid = engine.start("flow", {"account": "ABCD"})
    runtime_of(engine).check_data_set()  # start remembered the epoch; unchanged so far
    pending = enqueuer_of(engine).messages[0][0]
    for key in any_redis.scan_iter(f"{key_prefix}*"):  # what a Redis restarted empty looks like to us
        any_redis.delete(key)
    with pytest.raises(DataSetLost, match="restarted empty"):
        driver.deliver(pending)  # the step's instance is gone: say so, do not drop the step quietly
    with pytest.raises(DataSetLost):
        runtime_of(engine).tick()
    with pytest.raises(DataSetLost):
        runtime_of(engine).sweep()
    with pytest.raises(DataSetLost):
        engine.progress("default")
    assert any_redis.get(f"{key_prefix}:epoch") is None  # a process that knew the old data never adopts a new one
    fresh = Engine(store_of(engine), MemoryEnqueuer())
    fresh.watch_data_set()  # a newly started process accepts the data set it finds
    assert any_redis.get(f"{key_prefix}:epoch") is not None
    with pytest.raises(DataSetLost, match="is now"):
        runtime_of(engine).check_data_set()
    assert iid


def test_step_for_an_expired_instance_is_dropped_when_the_data_set_is_intact(engine: Engine, driver: Driver,
                                                                             any_redis: redis.Redis) -> None:
    iid = engine.start("flow", {"account": "ABCD"})
    any_redis.delete(store_of(engine).keys.instance(iid), store_of(engine).keys.activities(iid))  # expired
    report = driver.step()
    assert report is not None and report.outcome == "missing"


def test_one_tick_wakes_every_due_wait_in_batches(engine: Engine, clock: ManualClock) -> None:
    ids = engine.start_many("wait-flow", [{} for _ in range(5)])
    assert runtime_of(engine).tick(limit=2) == 0  # not due yet
    clock.advance(91 * 60)
    assert runtime_of(engine).tick(limit=2) == 5  # three claims of at most 2, in one tick
    assert all(engine.get(i).status is InstanceStatus.RUNNING for i in ids)
    assert len(enqueuer_of(engine).messages) == 5 and runtime_of(engine).tick(limit=2) == 0


def test_drop_on_success_deletes_big_context_entries_of_succeeded_instances_only(engine: Engine,
                                                                               driver: Driver) -> None:
    nodes = {**FLOW["nodes"],  # a second fetch, of data.second: "bad" fails the instance after the first
             "record": {"type": "service", "service": "svc", "action": "fetch", "input": {"account": "data.second"},
                        "transitions": {"ok": "done"}},
             "done": {"type": "terminal", "status": "succeeded", "result": {"value": "context.fetch.value"}}}
    body = {**FLOW, "name": "lean-flow", "nodes": nodes, "drop_on_success": ["fetch"],
            "initial_data": {"type": "object"}}
    engine.publish(load_definition(json.dumps(body)))
    ok = engine.start("lean-flow", {"account": "ABCD", "second": "EFGH"})
    bad = engine.start("lean-flow", {"account": "ABCD", "second": "bad"})
    driver.run_until_idle()
    succeeded, failed = engine.get(ok), engine.get(bad)
    assert succeeded.status is InstanceStatus.SUCCEEDED and failed.status is InstanceStatus.FAILED
    assert "fetch" not in succeeded.context and "record" in succeeded.context
    assert succeeded.result == {"value": 40}  # computed from the context before the drop
    assert "fetch" in failed.context  # kept for inspection and retry


def test_drop_on_success_names_must_be_nodes() -> None:
    with pytest.raises(DefinitionError, match=r"/drop_on_success/1: unknown node 'fetchh'"):
        load_definition(json.dumps({**FLOW, "drop_on_success": ["record", "fetchh"]}))
