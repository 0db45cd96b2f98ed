"""Gather nodes and their batches, driven one message at a time on fakeredis and on a real Redis.

Pins: arriving instances wait ``gathering`` in one batch per group; the batch closes once, on
time (through the timers) or early when nothing of its runs could still arrive; ONE batch step
calls the action with every contribution and each member goes on with its own transition and
data; a late arrival takes ``late`` (or opens the group's next batch); a bad contribution or an
unknown transition fails that member only; the batch step is retried per the node's policy,
re-sent when its message is lost, and applied exactly once; validation, schema and diagram know
the node.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import redis

from engine.api import Engine
from engine.broker import MemoryEnqueuer
from engine.clock import ManualClock
from engine.definitions.diagram import to_mermaid
from engine.definitions.validation import check_definition, json_schema, load_definition
from engine.errors import DefinitionError, NotFound
from engine.instance import InstanceStatus, Outcome
from engine.principal import Principal
from engine.runtime.gather import BATCH_TASK_SUFFIX
from engine.service import ActionRegistry, Transition, action
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import Driver, store_of

ACTIONS = ActionRegistry()
CALLS: list[dict[str, Any]] = []
FAILURES: list[Exception] = []
OPS = Principal("ops", frozenset({"operator"}))


@action("svc", "total", into=ACTIONS)
def total(payload: dict[str, Any]) -> dict[str, Any]:
    """Sums the members' amounts; each member gets the total and its own share (13: an unknown transition)."""
    CALLS.append(payload)
    if FAILURES:
        raise FAILURES.pop(0)
    amounts = {m["instance"]: m["input"]["amount"] for m in payload["members"]}
    whole = sum(amounts.values())
    answer: dict[str, Any] = {}
    for iid, amount in amounts.items():
        name = "bogus" if amount == 13 else "small" if amount < 5 else "ok"
        answer[iid] = Transition(name, {"total": whole, "share": amount, "batch": payload["batch"]["id"]})
    return answer


FLOW = {
    "name": "meet-flow",
    "initial_data": {"type": "object", "required": ["amount"]},
    "start": "hold",
    "nodes": {
        "hold": {"type": "await", "signals": {"go": "meet"}},
        "meet": {"type": "gather", "service": "svc", "action": "total", "group": "instance.run",
                 "close": "timestamp('2025-06-15T16:00:00Z')", "input": {"amount": "data.amount"},
                 "transitions": {"ok": "done", "small": "small"}, "late": "alone",
                 "retry": {"max_attempts": 2, "backoff_seconds": 10}, "timeout_seconds": 60},
        "done": {"type": "terminal", "status": "succeeded", "result": "context.meet"},
        "small": {"type": "terminal", "status": "succeeded", "result": {"small": "context.meet.share"}},
        "alone": {"type": "terminal", "status": "succeeded", "result": {"late": True}},
    },
}
NO_LATE = copy.deepcopy(FLOW)
NO_LATE["name"] = "meet-again"
del NO_LATE["nodes"]["meet"]["late"]
del NO_LATE["nodes"]["alone"]
ON_TIME = copy.deepcopy(FLOW)
ON_TIME["name"] = "meet-on-time"
ON_TIME["nodes"]["meet"]["close_early"] = False
CLOSE_AT = 1_750_003_200.0  # 2025-06-15T16:00:00Z


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_750_000_000.0)  # 2025-06-15T15:06:40Z: before the close


@pytest.fixture
def engine(any_redis: redis.Redis, key_prefix: str, clock: ManualClock) -> Engine:
    eng = Engine(RedisStore(any_redis, Keys(key_prefix), retention_seconds=3600), MemoryEnqueuer(), clock)
    for body in (FLOW, NO_LATE, ON_TIME):
        eng.publish(load_definition(json.dumps(body)))
    return eng


@pytest.fixture
def driver(engine: Engine) -> Driver:
    CALLS.clear()
    FAILURES.clear()
    return Driver(engine, ACTIONS)


def start(engine: Engine, driver: Driver, amounts: list[float], run: str = "r", flow: str = "meet-flow",
          data: dict[str, Any] | None = None) -> list[str]:
    ids = [engine.start(flow, {"amount": a, **(data or {})}, run=run) for a in amounts]
    driver.run_until_idle()
    return ids


def go(engine: Engine, driver: Driver, ids: list[str]) -> None:
    for iid in ids:
        engine.signal(iid, "go", by=OPS)
    driver.run_until_idle()


def batch_of(engine: Engine, iid: str) -> str:
    found = [a["batch"] for a in engine.activities(iid) if a.get("batch")]
    assert found, engine.activities(iid)
    return found[-1]


def test_arrivals_gather_in_one_batch_that_closes_early_when_nothing_else_can_arrive(
        engine: Engine, driver: Driver) -> None:
    ids = start(engine, driver, [10, 20, 30])
    go(engine, driver, ids[:2])
    for iid in ids[:2]:
        inst = engine.get(iid)
        assert inst.status is InstanceStatus.GATHERING and inst.node == "meet" and inst.batch
    assert CALLS == []  # the third could still arrive: the batch stays open
    assert engine.progress("r").counts["gathering"] == 2
    go(engine, driver, ids[2:])  # the last arrival closes it at once, before its close time
    assert len(CALLS) == 1
    members = CALLS[0]["members"]
    assert sorted(m["instance"] for m in members) == sorted(ids)
    assert sorted(m["input"]["amount"] for m in members) == [10, 20, 30]
    for iid, amount in zip(ids, [10, 20, 30], strict=True):
        inst = engine.get(iid)
        assert inst.status is InstanceStatus.SUCCEEDED
        assert inst.result["total"] == 60 and inst.result["share"] == amount
    batch_id = batch_of(engine, ids[0])
    assert {batch_of(engine, iid) for iid in ids} == {batch_id}
    view = engine.batch(batch_id)
    assert view.batch.status == "applied" and view.batch.members == 3 and view.runs == ["r"]
    assert view.batch.close_reason.startswith("early")
    assert [e["event"] for e in view.activities] == ["opened", "closed", "answered", "applied"]
    assert [iid for iid, _ in view.contributions] == ids  # order of arrival
    assert engine.batches()[0].id == batch_id


def test_a_batch_closes_on_time_through_the_timers_and_a_later_arrival_takes_late(
        engine: Engine, driver: Driver, clock: ManualClock) -> None:
    ids = start(engine, driver, [10, 20])
    go(engine, driver, ids[:1])
    assert engine.get(ids[0]).status is InstanceStatus.GATHERING
    clock.advance(CLOSE_AT - 1 - clock())
    driver.run_until_idle()
    assert CALLS == []
    clock.advance(CLOSE_AT - clock())
    driver.run_until_idle()
    assert len(CALLS) == 1 and [m["input"]["amount"] for m in CALLS[0]["members"]] == [10]
    assert engine.get(ids[0]).result == {"total": 10, "share": 10, "batch": batch_of(engine, ids[0])}
    assert engine.batch(batch_of(engine, ids[0])).batch.close_reason == "time"
    go(engine, driver, ids[1:])  # its group's batch has closed: late
    late = engine.get(ids[1])
    assert late.status is InstanceStatus.SUCCEEDED and late.node == "alone" and late.result == {"late": True}
    signalled = next(a for a in engine.activities(ids[1]) if a["outcome"] == Outcome.SIGNALLED.value)
    assert signalled["via"] == ["meet"] and signalled["next"] == "alone"
    assert len(CALLS) == 1


def test_without_late_a_late_arrival_opens_the_groups_next_batch(engine: Engine, driver: Driver,
                                                                   clock: ManualClock) -> None:
    ids = start(engine, driver, [10, 20], flow="meet-again")
    go(engine, driver, ids[:1])
    clock.advance(CLOSE_AT - clock())
    driver.run_until_idle()
    go(engine, driver, ids[1:])  # opens batch #2, whose close time has passed: closes at the next tick
    driver.run_until_idle()
    first, second = batch_of(engine, ids[0]), batch_of(engine, ids[1])
    assert first.endswith("#1") and second.endswith("#2") and first[:-2] == second[:-2]
    assert engine.get(ids[1]).result["total"] == 20
    assert len(CALLS) == 2


def test_close_early_false_waits_for_the_time_even_when_everyone_arrived(engine: Engine, driver: Driver,
                                                                          clock: ManualClock) -> None:
    ids = start(engine, driver, [10, 20], flow="meet-on-time")
    go(engine, driver, ids)
    assert CALLS == [] and {engine.get(i).status for i in ids} == {InstanceStatus.GATHERING}
    clock.advance(CLOSE_AT - clock())
    driver.run_until_idle()
    assert len(CALLS) == 1 and {engine.get(i).status for i in ids} == {InstanceStatus.SUCCEEDED}


def test_a_finished_or_failed_instance_of_the_run_cannot_arrive_any_more(engine: Engine, driver: Driver) -> None:
    ids = start(engine, driver, [10, 20, 30])
    go(engine, driver, ids[:2])
    assert CALLS == []
    engine.cancel(ids[2])  # the only one that could still arrive is gone: the next tick closes the batch
    driver.run_until_idle()
    assert len(CALLS) == 1 and {engine.get(i).status for i in ids[:2]} == {InstanceStatus.SUCCEEDED}


def test_members_take_their_own_transitions_and_an_unknown_one_fails_that_member_only(
        engine: Engine, driver: Driver) -> None:
    ids = start(engine, driver, [10, 3, 13])
    go(engine, driver, ids)
    ok, small, bogus = (engine.get(i) for i in ids)
    assert ok.status is InstanceStatus.SUCCEEDED and ok.node == "done" and ok.result["total"] == 26
    assert small.status is InstanceStatus.SUCCEEDED and small.node == "small" and small.result == {"small": 3}
    assert bogus.status is InstanceStatus.FAILED and "unknown transition 'bogus'" in bogus.error["reason"]
    assert bogus.error["reason"].startswith(f"batch {batch_of(engine, ids[0])}")


def test_a_bad_contribution_fails_that_member_when_it_arrives(engine: Engine, driver: Driver) -> None:
    bad = dict(FLOW, name="meet-bad")
    bad["nodes"] = dict(FLOW["nodes"], meet=dict(FLOW["nodes"]["meet"], input={"amount": "data.amount",
                                                                                 "note": "data.note"}))
    engine.publish(load_definition(json.dumps(bad)))
    good = start(engine, driver, [10], flow="meet-bad", data={"note": "x"})
    broken = start(engine, driver, [20], flow="meet-bad")
    go(engine, driver, good + broken)
    assert engine.get(broken[0]).status is InstanceStatus.FAILED
    assert "node 'meet' input" in engine.get(broken[0]).error["reason"]
    assert engine.get(good[0]).status is InstanceStatus.SUCCEEDED  # closed early: the broken one failed
    assert [m["instance"] for m in CALLS[0]["members"]] == good


def test_an_exception_is_retried_per_the_policy_then_fails_every_member(engine: Engine, driver: Driver,
                                                                          clock: ManualClock) -> None:
    ids = start(engine, driver, [10, 20])
    FAILURES.extend([RuntimeError("broker down")])
    go(engine, driver, ids)
    assert len(CALLS) == 1 and {engine.get(i).status for i in ids} == {InstanceStatus.GATHERING}
    batch_id = batch_of_member(engine, ids[0])
    assert engine.batch(batch_id).batch.due_kind == "retry"
    clock.advance(10)
    driver.run_until_idle()
    assert len(CALLS) == 2 and {engine.get(i).status for i in ids} == {InstanceStatus.SUCCEEDED}
    events = [e["event"] for e in engine.batch(batch_id).activities]
    assert events == ["opened", "closed", "retry", "resent", "answered", "applied"]

    more = start(engine, driver, [1, 2], run="r2")
    FAILURES.extend([RuntimeError("down"), RuntimeError("still down")])
    go(engine, driver, more)
    clock.advance(10)
    driver.run_until_idle()
    for iid in more:
        inst = engine.get(iid)
        assert inst.status is InstanceStatus.FAILED and "still down (after 2 attempts)" in inst.error["reason"]


def batch_of_member(engine: Engine, iid: str) -> str:
    batch = engine.get(iid).batch
    assert batch is not None
    return batch


def test_the_batch_step_is_applied_exactly_once_across_redeliveries(engine: Engine, driver: Driver) -> None:
    ids = start(engine, driver, [10, 20])
    for iid in ids:
        engine.signal(iid, "go", by=OPS)
    message = driver.queue.pop()
    assert message.task == f"svc.{BATCH_TASK_SUFFIX}" and message.queue == "svc"
    driver.deliver(message)
    driver.deliver(message)  # a redelivery: a recorded no-op
    assert len(CALLS) == 1
    for iid in ids:
        gathered = [a for a in engine.activities(iid) if a["outcome"] == Outcome.GATHERED.value]
        assert len(gathered) == 1 and gathered[0]["batch"] == message.instance_id
    assert [e["event"] for e in engine.batch(message.instance_id).activities][-1] == "noop"


def test_a_kept_answer_is_applied_again_never_asked_again(engine: Engine, driver: Driver,
                                                           clock: ManualClock) -> None:
    ids = start(engine, driver, [10, 20])
    for iid in ids:
        engine.signal(iid, "go", by=OPS)
    message = driver.queue.pop()
    batch_id = message.instance_id
    # a worker asked the action and kept its answer, then died before applying it
    store_of(engine).batch_answer(batch_id, {"members": {ids[0]: {"transition": "ok", "data": {"total": 1}},
                                                     ids[1]: {"transition": "small", "data": {"share": 2}}}},
                              {"event": "answered"})
    clock.advance(60 + 6)  # past the step's deadline: the timers send it again
    driver.run_until_idle()
    assert CALLS == []
    assert engine.get(ids[0]).result == {"total": 1} and engine.get(ids[1]).result == {"small": 2}
    assert engine.batch(batch_id).batch.status == "applied"


def test_a_lost_batch_message_is_sent_again_after_its_deadline(engine: Engine, driver: Driver,
                                                                clock: ManualClock) -> None:
    ids = start(engine, driver, [10, 20])
    for iid in ids:
        engine.signal(iid, "go", by=OPS)
    lost = driver.queue.pop()
    assert driver.run_until_idle() == 0
    clock.advance(66)
    driver.run_until_idle()
    assert len(CALLS) == 1 and CALLS[0]["batch"]["attempt"] == 2
    assert {engine.get(i).status for i in ids} == {InstanceStatus.SUCCEEDED}
    assert driver.deliver(lost).outcome == Outcome.NOOP.value


def test_a_cancelled_member_withdraws_before_the_close(engine: Engine, driver: Driver) -> None:
    ids = start(engine, driver, [10, 20, 30])
    go(engine, driver, ids[:2])
    engine.cancel(ids[0])
    go(engine, driver, ids[2:])
    assert sorted(m["input"]["amount"] for m in CALLS[0]["members"]) == [20, 30]
    assert engine.get(ids[0]).status is InstanceStatus.CANCELLED


def backdate(engine: Engine, batch_id: str) -> None:
    """Make the batch look opened an hour (the retention) and a second earlier: its index score."""
    client, index = store_of(engine).client, store_of(engine).keys.batches
    client.zadd(index, {batch_id: client.zscore(index, batch_id) - 3601}, xx=True)


def expire(engine: Engine, batch_id: str) -> None:
    """What Redis does once an applied batch's TTL has run out (an hour on): its keys are gone."""
    k = store_of(engine).keys
    keys = [k.batch(batch_id), k.batch_members(batch_id), k.batch_inputs(batch_id), k.batch_runs(batch_id),
            k.batch_activities(batch_id)]
    assert all(0 < store_of(engine).client.ttl(key) <= 3600 for key in keys)  # they do expire, with the retention
    store_of(engine).client.delete(*keys)
    backdate(engine, batch_id)


def indexed(engine: Engine) -> set[str]:
    return {b.decode() if isinstance(b, bytes) else b
            for b in store_of(engine).client.zrange(store_of(engine).keys.batches, 0, -1)}


def test_expired_batches_leave_the_index_when_it_is_read_or_a_batch_is_applied(engine: Engine,
                                                                                driver: Driver) -> None:
    go(engine, driver, start(engine, driver, [10, 20], run="a"))
    expired = engine.batches()[0].id
    waiting = start(engine, driver, [10, 20], run="b")
    go(engine, driver, waiting[:1])  # the other could still arrive: b's batch stays open
    still_open = engine.get(waiting[0]).batch
    backdate(engine, still_open)
    expire(engine, expired)
    assert indexed(engine) == {expired, still_open}
    opened = store_of(engine).client.zscore(store_of(engine).keys.batches, expired)
    assert store_of(engine).trim_batch_index(now=opened + 3600 - 1) == 0  # no batch expires sooner after opening
    assert [b.id for b in engine.batches()] == [still_open]  # listing trims; the open one stays, however old
    assert indexed(engine) == {still_open}
    go(engine, driver, start(engine, driver, [1, 2], run="c"))
    expired = batch_of(engine, engine.list("c")[0].id)
    expire(engine, expired)
    go(engine, driver, start(engine, driver, [3, 4], run="d"))  # applying d's batch trims c's away, unlisted
    assert indexed(engine) == {still_open, batch_of(engine, engine.list("d")[0].id)}


def test_unknown_batch_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound, match="tradeflow batches"):
        engine.batch("nope#1")


# -- validation, schema, diagram ---------------------------------------------------------------


def test_validation_checks_a_gather_nodes_targets_and_expressions() -> None:
    body = copy.deepcopy(FLOW)
    body["nodes"]["meet"]["late"] = "alon"
    body["nodes"]["meet"]["group"] = "instance.rn"
    with pytest.raises(DefinitionError) as err:
        load_definition(json.dumps(body))
    text = str(err.value)
    assert "/nodes/meet/late: unknown node 'alon'" in text and "did you mean 'alone'" in text
    body = copy.deepcopy(FLOW)
    body["nodes"]["meet"]["close"] = "now() +"
    with pytest.raises(DefinitionError, match="/nodes/meet/close"):
        load_definition(json.dumps(body))
    body = copy.deepcopy(FLOW)
    del body["nodes"]["meet"]["group"]
    with pytest.raises(DefinitionError, match="/nodes/meet"):
        load_definition(json.dumps(body))
    assert check_definition(load_definition(json.dumps(FLOW))) == []


def test_schema_and_diagram_know_the_gather_node() -> None:
    schema = json.dumps(json_schema())
    assert '"gather"' in schema and "close_early" in schema
    diagram = to_mermaid(load_definition(json.dumps(FLOW)))
    assert "meet : gather by instance.run into svc.total" in diagram
    assert "meet --> alone : late" in diagram and "meet --> small : small" in diagram


def test_an_operator_closes_a_batch_now(engine: Engine, driver: Driver) -> None:
    ids = start(engine, driver, [10, 20, 30])
    go(engine, driver, ids[:2])
    batch_id = batch_of_member(engine, ids[0])
    assert engine.close_batch(batch_id, by=Principal("ann", frozenset({"operator"}))) is True
    assert engine.close_batch(batch_id, "ann") is False  # closes once
    driver.run_until_idle()
    assert len(CALLS) == 1 and {engine.get(i).status for i in ids[:2]} == {InstanceStatus.SUCCEEDED}
    assert engine.batch(batch_id).batch.close_reason == "closed by ann"
    with pytest.raises(NotFound):
        engine.close_batch("nope#1")


def test_the_command_line_lists_shows_and_closes_batches(engine: Engine, driver: Driver,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from engine import batch_cli

    monkeypatch.setattr(batch_cli, "cli_engine", lambda allow_start=False: engine)
    ids = start(engine, driver, [10, 20, 30])
    go(engine, driver, ids[:2])
    batch_id = batch_of_member(engine, ids[0])
    runner = CliRunner()
    listed = runner.invoke(batch_cli.batches, ["--limit", "5"])
    assert listed.exit_code == 0 and "open" in listed.output and "svc.total" in listed.output
    shown = runner.invoke(batch_cli.batch, [batch_id, "--json"])
    assert shown.exit_code == 0
    document = json.loads(shown.output)
    assert document["batch"]["status"] == "open" and [m["instance"] for m in document["members"]] == ids[:2]
    free = runner.invoke(batch_cli.batch, [batch_id, "--close", "--by", "ann"])
    assert free.exit_code == 2 and "--by is gone" in free.output  # who closes is the CLI's identity
    closed = runner.invoke(batch_cli.batch, [batch_id, "--close"], env={"TRADEFLOW_PRINCIPAL": "ann"})
    assert closed.exit_code == 0 and "closed" in closed.output
    assert engine.batch(batch_id).batch.close_reason == "closed by ann"
    (event,) = engine.audit(kinds=["close_batch"]).events
    assert event.by == "ann" and event.detail["batch"] == batch_id and event.detail["closed"] is True
    driver.run_until_idle()
    table = runner.invoke(batch_cli.batch, [batch_id])
    assert table.exit_code == 0 and "applied" in table.output and "answered" in table.output


# -- limits on the batch step ------------------------------------------------------------------

LIMITED = copy.deepcopy(FLOW)
LIMITED["name"] = "meet-limited"
LIMITED["nodes"]["meet"]["limits"] = {"rate": {"key": "'desk:' + params.desk", "per_second": 2, "burst": 4,
                                               "cost": "size(data.members)"}}
LIMITED["parameters"] = {"desk": "ny"}


def test_a_batch_over_its_rate_limit_parks_without_running_then_runs_when_calls_are_free(
        engine: Engine, driver: Driver, clock: ManualClock) -> None:
    store_of(engine).limit_clock = clock  # the buckets on the test's clock
    engine.publish(load_definition(json.dumps(LIMITED)))
    first = start(engine, driver, [10, 20], run="a", flow="meet-limited")
    go(engine, driver, first)  # 2 calls of 4
    second = start(engine, driver, [1, 2, 3], run="b", flow="meet-limited")
    go(engine, driver, second)  # 3 more: over the burst until a's calls leave the 2 s window
    assert len(CALLS) == 1 and {engine.get(i).status for i in second} == {InstanceStatus.GATHERING}
    parked = engine.batch(batch_of_member(engine, second[0]))
    assert parked.batch.status == "closed" and parked.batch.due_kind == "limit"
    limited = [e for e in parked.activities if e["event"] == "limited"]
    assert limited and limited[0]["reason"] == "rate: desk:ny" and limited[0]["cost"] == 3
    assert parked.batch.waiting_for == "rate: desk:ny"
    assert engine.run_limited("b") == {"rate: desk:ny": 3} and engine.run_limited("a") == {}  # the run page's count
    [state] = engine.limits()
    assert (state.name, state.parked, state.waits) == ("desk:ny", 1, 1)
    clock.advance(1.0)
    driver.run_until_idle()
    assert len(CALLS) == 1  # not yet: the window is 2 s
    clock.advance(1.1)
    driver.run_until_idle()
    assert len(CALLS) == 2 and {engine.get(i).status for i in second} == {InstanceStatus.SUCCEEDED}
    events = [e["event"] for e in engine.batch(parked.batch.id).activities]
    assert events[:4] == ["opened", "closed", "limited", "resent"] and events[-2:] == ["answered", "applied"]
    assert engine.limits()[0].parked == 0 and engine.run_limited("b") == {}
    assert engine.batch(parked.batch.id).batch.waiting_for is None


def test_a_gather_limit_that_fails_to_evaluate_fails_every_member(engine: Engine, driver: Driver) -> None:
    body = copy.deepcopy(LIMITED)
    body["name"] = "meet-bad-cost"
    body["nodes"]["meet"]["limits"]["rate"]["cost"] = "data.batch.name"
    engine.publish(load_definition(json.dumps(body)))
    ids = start(engine, driver, [10, 20], flow="meet-bad-cost")
    go(engine, driver, ids)
    assert not CALLS
    for iid in ids:
        inst = engine.get(iid)
        assert inst.status is InstanceStatus.FAILED and "limits: cost" in inst.error["reason"]


@pytest.mark.parametrize(("limits", "pointer", "words"), [
    ({"concurrency": {"key": "'x'", "max": 1}}, "/nodes/meet/limits/concurrency", "rate limit only"),
    ({"rate": {"key": "'x'", "per_second": 0}}, "/nodes/meet/limits/rate/per_second", "greater than 0"),
    ({"rate": {"key": "data.amount", "per_second": 5}}, "/nodes/meet/limits/rate/key", "data.members"),
    ({"rate": {"key": "'x'", "per_second": 5, "cost": "size(context.hold)"}}, "/nodes/meet/limits/rate/cost",
     "evaluated once for the whole batch"),
    ({"rate": {"key": "instance.run", "per_second": 5}}, "/nodes/meet/limits/rate/key", "instance.run"),
    ({"rate": {"key": "'x'", "per_second": 5, "extra": 1}}, "/nodes/meet/limits/rate/extra", "allowed keys"),
])
def test_gather_limits_problems_name_their_pointer(limits: dict[str, Any], pointer: str, words: str) -> None:
    body = copy.deepcopy(FLOW)
    body["nodes"]["meet"]["limits"] = limits
    with pytest.raises(DefinitionError) as caught:
        load_definition(json.dumps(body))
    found = [p for p in caught.value.problems if p.pointer == pointer]
    assert found, caught.value.problems
    assert words in found[0].message


def test_gather_limits_round_trip() -> None:
    definition = load_definition(json.dumps(LIMITED))
    assert load_definition(definition.to_json()) == definition
    assert definition.nodes["meet"].limits.rate.capacity == 4  # type: ignore[union-attr]
    assert check_definition(definition) == []
