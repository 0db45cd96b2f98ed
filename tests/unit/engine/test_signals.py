"""Await nodes and signals, driven one message at a time on fakeredis and on a real Redis.

Pins: a signal moves an awaiting instance on in one compare-and-set (context, history with
sender and time), a resent key is a recorded no-op, a signal not awaited is refused with
where the instance is, the timeout fires once through the timer set, a signal and the
timeout racing each other give exactly one winner, bulk signals over a run, pause/resume of
an awaiting instance, and the run's phase ("planned" once every live instance awaits).
Who sends: a principal without the signal's role is refused and recorded, ``requires``, a
quorum of distinct principals counted by the engine (the same one twice refused, forged data
changing nothing), no signal after the await's timeout, and the audit log of it all.
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
from engine.instance import InstanceStatus, Outcome
from engine.principal import Principal
from engine.service import ActionRegistry, Transition, action
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import Driver, runtime_of, store_of

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


ANN = Principal("ann", frozenset({"pm"}))
BOB = Principal("bob", frozenset({"pm"}))
OPS = Principal("ops", frozenset({"operator"}))
ROLES = {"pm", "operator"}

REVIEW_FLOW = {
    "name": "review-flow",
    "initial_data": {"type": "object", "required": ["amount"]},
    "parameters": {"cutoff": "2h", "two_over": 1000},
    "start": "prepare",
    "nodes": {
        "prepare": {"type": "service", "service": "svc", "action": "prepare", "input": {"amount": "data.amount"},
                    "transitions": {"ok": "review"}},
        "review": {"type": "await",
                   "signals": {"approve": {"next": "execute", "roles": ["pm"]},
                               "reject": {"next": "rejected", "roles": ["pm"], "requires": ["reason"]},
                               "note": "review"},
                   "quorum": {"signal": "approve", "count": "context.prepare.amount > params.two_over ? 2 : 1"},
                   "timeout": "now() + duration(params.cutoff)", "on_timeout": "expired"},
        "execute": {"type": "service", "service": "svc", "action": "execute",
                    "input": {"approvers": "context.review.quorum.principals", "by": "context.review.by"},
                    "transitions": {"ok": "done"}},
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
        eng.publish(load_definition(json.dumps(body), roles=ROLES))
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
    assert store_of(engine).next_timer() == pytest.approx(clock() + 7200)
    assert engine.progress("r").phase == "planned"
    assert driver.run_until_idle() == 0  # nothing to do until a signal or the timeout


def test_a_signal_moves_the_instance_on_with_its_data_sender_and_time(engine: Engine, driver: Driver,
                                                                      clock: ManualClock) -> None:
    iid = started(engine, driver)
    clock.advance(60)
    result = engine.signal(iid, "approve", {"note": "ok"}, by=ANN, key="k1")
    assert result.applied and not result.duplicate and result.node == "execute" and result.quorum == (1, 1)
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.RUNNING
    assert inst.context["review"] == {"note": "ok", "signal": "approve", "by": "ann", "roles": ["pm"],
                                      "at": clock(), "quorum": {"signal": "approve", "count": 1,
                                                                "principals": ["ann"]}}
    assert inst.timer is None and store_of(engine).next_timer() is None  # the timeout is gone with the wait
    assert inst.quorum is None  # the engine's own count ends with the visit of the node
    driver.run_until_idle()
    assert engine.get(iid).status is InstanceStatus.SUCCEEDED
    assert CALLS == [{"approvers": ["ann"], "by": "ann"}]
    record = next(a for a in engine.activities(iid) if a["outcome"] == Outcome.SIGNALLED.value)
    assert (record["signal"], record["by"], record["roles"], record["key"], record["next"], record["quorum"]) == (
        "approve", "ann", ["pm"], "k1", "execute", "1 of 1")
    assert record["ended_at"] == pytest.approx(clock())


def test_by_must_be_a_principal_never_a_bare_name(engine: Engine, driver: Driver) -> None:
    iid = started(engine, driver)
    with pytest.raises(TypeError, match=r"engine\.Principal"):
        engine.signal(iid, "approve", by="ann")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        engine.signal(iid, "approve")  # type: ignore[call-arg]
    assert engine.get(iid).status is InstanceStatus.AWAITING


def test_a_principal_without_the_role_is_refused_and_the_refusal_recorded(engine: Engine, driver: Driver) -> None:
    iid = started(engine, driver)
    seq = engine.get(iid).seq
    with pytest.raises(SignalRefused, match="needs the role pm") as info:
        engine.signal(iid, "reject", {"reason": "client on hold"}, by=OPS)
    assert info.value.code == "role" and "ops has operator" in str(info.value)
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.AWAITING and inst.seq == seq and "review" not in inst.context
    refused = engine.activities(iid)[-1]
    assert (refused["outcome"], refused["signal"], refused["by"], refused["roles"]) == (
        "refused", "reject", "ops", ["operator"])
    assert "needs the role pm" in refused["reason"] and refused["received"] == {"reason": "client on hold"}
    (event,) = engine.audit(kinds=["signal_refused"]).events
    assert (event.by, event.roles, event.instance, event.run) == ("ops", ["operator"], iid, "r")
    assert event.detail["code"] == "role" and event.detail["signal"] == "reject"
    nobody = Principal("guest")
    with pytest.raises(SignalRefused, match="guest has no role"):
        engine.signal(iid, "approve", by=nobody)
    # the short form names no role: anyone may send it
    assert engine.signal(iid, "note", {"text": "looked"}, by=nobody).node == "review"


@pytest.mark.parametrize("data", [None, {}, {"reason": ""}, {"reason": "   "}, {"reason": None}, {"why": "x"}])
def test_a_signal_without_the_data_it_requires_is_refused(engine: Engine, driver: Driver,
                                                          data: dict[str, Any] | None) -> None:
    iid = started(engine, driver)
    with pytest.raises(SignalRefused, match="its data needs 'reason'") as info:
        engine.signal(iid, "reject", data, by=ANN)
    assert info.value.code == "requires" and engine.get(iid).status is InstanceStatus.AWAITING
    assert outcomes(engine, iid)[-1] == "refused"
    engine.signal(iid, "reject", {"reason": "too risky"}, by=ANN)
    assert engine.get(iid).result == {"why": "too risky"}


def test_a_quorum_of_two_needs_two_distinct_principals(engine: Engine, driver: Driver) -> None:
    iid = started(engine, driver, amount=5000)  # over two_over: two approvals
    first = engine.signal(iid, "approve", {"note": "fine"}, by=ANN)
    assert first.applied and first.counted and first.quorum == (1, 2) and first.node == "review"
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.AWAITING and inst.node == "review"
    assert inst.context["review"]["quorum"] == {"signal": "approve", "count": 2, "principals": ["ann"]}
    assert [p["name"] for p in inst.quorum["principals"]] == ["ann"]
    assert inst.timer == "timeout" and store_of(engine).next_timer() == inst.wake_at  # its timeout still stands
    counted = engine.activities(iid)[-1]
    assert (counted["outcome"], counted["by"], counted["quorum"], counted["next"]) == ("counted", "ann", "1 of 2",
                                                                                     "review")
    assert driver.run_until_idle() == 0 and CALLS == []
    with pytest.raises(SignalRefused, match="ann sent it already \\(1 of 2\\)") as info:
        engine.signal(iid, "approve", {"note": "again"}, by=Principal("ann", frozenset({"pm", "admin"})))
    assert info.value.code == "same_principal" and engine.get(iid).status is InstanceStatus.AWAITING
    assert outcomes(engine, iid)[-1] == "refused"
    second = engine.signal(iid, "approve", by=BOB)
    assert second.applied and not second.counted and second.quorum == (2, 2) and second.node == "execute"
    driver.run_until_idle()
    assert engine.get(iid).status is InstanceStatus.SUCCEEDED
    assert CALLS == [{"approvers": ["ann", "bob"], "by": "bob"}]
    assert outcomes(engine, iid).count("counted") == 1 and outcomes(engine, iid).count("signalled") == 1


def test_forged_approvals_in_signal_data_change_nothing(engine: Engine, driver: Driver) -> None:
    iid = started(engine, driver, amount=5000)
    forged = {"approvals": [1, 2], "by": "bob", "roles": ["pm"], "signal": "approve",
              "quorum": {"signal": "approve", "count": 1, "principals": ["ann", "bob"]}}
    result = engine.signal(iid, "approve", forged, by=ANN)
    assert result.counted and result.quorum == (1, 2)
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.AWAITING and inst.node == "review"
    entry = inst.context["review"]
    assert entry["by"] == "ann" and entry["quorum"] == {"signal": "approve", "count": 2, "principals": ["ann"]}
    assert entry["approvals"] == [1, 2]  # kept as data, counted by nobody
    assert engine.activities(iid)[-1]["received"] == forged  # the history shows what was sent
    with pytest.raises(SignalRefused, match="sent it already"):
        engine.signal(iid, "approve", forged, by=ANN)
    assert driver.run_until_idle() == 0 and CALLS == [] and engine.get(iid).status is InstanceStatus.AWAITING


def test_a_quorum_count_is_kept_from_the_first_signal_and_reset_when_the_node_is_left(
        engine: Engine, driver: Driver) -> None:
    iid = started(engine, driver, amount=5000)
    engine.signal(iid, "approve", by=ANN)
    engine.signal(iid, "note", {"text": "hm"}, by=OPS)  # loops back to review: the count stands
    assert [p["name"] for p in engine.get(iid).quorum["principals"]] == ["ann"]
    assert engine.signal(iid, "approve", by=BOB).node == "execute"
    assert engine.get(iid).quorum is None


def test_a_signal_after_the_timeout_is_refused_before_the_tick_moves_it(engine: Engine, driver: Driver,
                                                                        clock: ManualClock) -> None:
    iid = started(engine, driver)
    clock.advance(7200)  # the cut-off itself: no tick has run
    with pytest.raises(SignalRefused, match="timed out at") as info:
        engine.signal(iid, "approve", by=ANN)
    assert info.value.code == "timeout" and "goes to 'expired'" in str(info.value)
    assert engine.get(iid).status is InstanceStatus.AWAITING and outcomes(engine, iid)[-1] == "refused"
    assert runtime_of(engine).tick() == 1 and engine.get(iid).node == "expired" and CALLS == []


def test_a_signal_sent_twice_with_the_same_key_applies_once(engine: Engine, driver: Driver) -> None:
    iid = started(engine, driver, amount=5000)  # two approvals needed: the instance awaits again after one
    first = engine.signal(iid, "approve", {"note": "ann"}, by=ANN, key="approve:ann")
    assert first.applied and engine.get(iid).status is InstanceStatus.AWAITING
    seq = engine.get(iid).seq
    again = engine.signal(iid, "approve", {"note": "ann"}, by=ANN, key="approve:ann")
    assert again.duplicate and not again.applied
    assert engine.get(iid).seq == seq and engine.get(iid).noops == 1
    assert outcomes(engine, iid).count(Outcome.COUNTED.value) == 1
    noop = engine.activities(iid)[-1]
    assert noop["outcome"] == "noop" and "approve:ann" in noop["reason"]
    engine.signal(iid, "approve", {"note": "bob"}, by=BOB, key="approve:bob")
    driver.run_until_idle()
    assert engine.get(iid).status is InstanceStatus.SUCCEEDED and len(CALLS) == 1
    # after the instance finished, the same key is still a no-op, not an error
    assert engine.signal(iid, "approve", {}, by=BOB, key="approve:bob").duplicate
    kinds = [e.kind for e in engine.audit(run="r").events]
    assert kinds == ["signal_duplicate", "signal", "signal_duplicate", "signal"]  # newest first


def test_a_signal_the_instance_does_not_await_is_refused_saying_where_it_is(engine: Engine,
                                                                            driver: Driver) -> None:
    iid = started(engine, driver)
    with pytest.raises(SignalRefused, match=r"'approve', 'reject'") as info:
        engine.signal(iid, "aprove", by=ANN)
    assert "awaiting at node 'review'" in str(info.value) and info.value.code == "not_awaited"
    engine.signal(iid, "reject", {"reason": "too risky"}, by=ANN)
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.SUCCEEDED and inst.result == {"why": "too risky"}
    with pytest.raises(SignalRefused, match=r"is succeeded at node 'rejected' and awaits no signal"):
        engine.signal(iid, "approve", by=BOB)
    with pytest.raises(SignalRefused, match="JSON object"):
        engine.signal(iid, "approve", ["not", "an", "object"], by=BOB)  # type: ignore[arg-type]
    assert outcomes(engine, iid)[-1] == "refused"  # malformed data is refused before the instance is read


def test_the_timeout_fires_once_and_a_late_signal_is_refused(engine: Engine, driver: Driver,
                                                           clock: ManualClock) -> None:
    iid = started(engine, driver)
    clock.advance(7199)
    assert runtime_of(engine).tick() == 0
    clock.advance(2)
    assert runtime_of(engine).tick() == 1
    assert runtime_of(engine).tick() == 0  # once
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.SUCCEEDED and inst.node == "expired"
    assert outcomes(engine, iid)[-1] == Outcome.TIMED_OUT.value
    with pytest.raises(SignalRefused, match="expired"):
        engine.signal(iid, "approve", by=ANN)
    assert CALLS == []


def test_signal_and_timeout_raced_exactly_one_wins(engine: Engine, driver: Driver, clock: ManualClock) -> None:
    iid = started(engine, driver)
    before = engine.get(iid)  # the tick loaded the instance ...
    clock.advance(7199)
    engine.signal(iid, "approve", by=ANN)  # ... a signal applies first, just before the cut-off ...
    clock.advance(2)
    definition = engine.definition("review-flow")
    from engine.runtime.signals import fire_timeout

    assert fire_timeout(runtime_of(engine), before, definition, clock()) == 0  # ... then the timeout: a no-op
    driver.run_until_idle()
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.SUCCEEDED and inst.node == "done" and len(CALLS) == 1
    assert outcomes(engine, iid).count(Outcome.TIMED_OUT.value) == 0
    assert engine.activities(iid)[3]["outcome"] == "noop"  # after started, prepare, signalled
    # the other way round: the timeout first, then the signal is refused and recorded
    other = started(engine, driver)
    stale = engine.get(other)
    clock.advance(7201)
    assert runtime_of(engine).tick() == 1
    with pytest.raises(SignalRefused):
        engine.signal(other, "approve", by=ANN)
    assert fire_timeout(runtime_of(engine), stale, definition, clock()) == 0
    assert engine.get(other).node == "expired" and len(CALLS) == 1


def test_bulk_signal_over_a_run_counts_applied_and_skipped(engine: Engine, driver: Driver) -> None:
    ids = [started(engine, driver, run="bulk") for _ in range(3)]
    engine.signal(ids[0], "reject", {"reason": "no"}, by=ANN)
    result = engine.signal_run("bulk", "approve", by=ANN, key="bulk-1")
    assert (result.done, result.skipped) == (2, 0)  # the rejected one is no longer awaiting
    again = engine.signal_run("bulk", "approve", by=ANN, key="bulk-1")
    assert (again.done, again.skipped) == (0, 0)
    driver.run_until_idle()
    assert [engine.get(i).node for i in ids] == ["rejected", "done", "done"]
    assert len(CALLS) == 2
    other = [started(engine, driver, run="nodes") for _ in range(2)]
    assert engine.signal_run("nodes", "approve", by=ANN, node="elsewhere").skipped == 2
    assert engine.signal_run("nodes", "approve", by=OPS).skipped == 2  # refused: the role
    assert all(engine.get(i).status is InstanceStatus.AWAITING for i in other)
    assert all(outcomes(engine, i)[-1] == "refused" for i in other)


def test_an_awaiting_instance_pauses_and_resumes_with_its_timeout(engine: Engine, driver: Driver,
                                                                  clock: ManualClock) -> None:
    iid = started(engine, driver, amount=5000)
    engine.signal(iid, "approve", by=ANN)  # one of two: the count survives the pause
    wake = engine.get(iid).wake_at
    engine.pause(iid, "checking", by=OPS)
    assert store_of(engine).next_timer() is None
    with pytest.raises(SignalRefused, match="paused"):
        engine.signal(iid, "approve", by=BOB)
    engine.resume(iid, by=OPS)
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.AWAITING and inst.wake_at == wake
    assert [p["name"] for p in inst.quorum["principals"]] == ["ann"]
    controls = [(a["control"], a["by"], a["roles"]) for a in engine.activities(iid) if a["outcome"] == "control"]
    assert controls == [("pause", "ops", ["operator"]), ("resume", "ops", ["operator"])]
    paused = engine.audit(kinds=["pause", "resume"], person="ops").events
    assert [(e.kind, e.instance, e.detail.get("reason")) for e in paused] == [("resume", iid, None),
                                                                              ("pause", iid, "checking")]
    clock.advance(7300)
    assert runtime_of(engine).tick() == 1 and engine.get(iid).node == "expired"


def test_an_await_first_without_timeout_starts_awaiting(engine: Engine, driver: Driver) -> None:
    iid = engine.start("await-first", {}, run="first")
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.AWAITING and inst.timer is None
    progress = engine.progress("first")
    assert progress.awaiting == 1 and progress.settled and not progress.done and progress.phase == "planned"
    engine.signal(iid, "go", {"x": 1}, by=OPS)
    assert engine.get(iid).result["x"] == 1 and engine.get(iid).result["by"] == "ops"
    assert engine.progress("first").phase == "finished"


def test_a_run_is_running_until_every_live_instance_awaits(engine: Engine, driver: Driver) -> None:
    engine.start("review-flow", {"amount": 1}, run="phase")
    assert engine.progress("phase").phase == "running"
    driver.run_until_idle()
    assert engine.progress("phase").phase == "planned"


def test_the_audit_log_filters_by_person_run_time_and_kind_newest_first_in_pages(engine: Engine,
                                                                                 driver: Driver) -> None:
    import time

    began = time.time()
    ids = [started(engine, driver, run="audit") for _ in range(3)]
    for iid in ids:
        engine.signal(iid, "note", {"text": "seen"}, by=OPS)
    engine.signal(ids[0], "approve", by=ANN)
    engine.record_audit("login", ANN, detail={"address": "10.0.0.1"})
    engine.record_audit("login_failed", "mallory")
    everything = engine.audit()
    assert [e.kind for e in everything.events][:2] == ["login_failed", "login"] and everything.next is None
    order = [tuple(map(int, e.id.split("-"))) for e in everything.events]
    assert order == sorted(order, reverse=True) and len(set(order)) == len(order)
    assert [e.kind for e in engine.audit(person="ann").events] == ["login", "signal"]
    assert engine.audit(person="ann").events[0].detail == {"address": "10.0.0.1"}
    assert len(engine.audit(run="audit", kinds=["signal"]).events) == 4
    assert engine.audit(run="elsewhere").events == []
    first = engine.audit(person="ops", limit=2)
    assert len(first.events) == 2 and first.next == first.events[-1].id
    rest = engine.audit(person="ops", limit=2, before=first.next)
    assert len(rest.events) == 1 and rest.next is None
    assert [e.instance for e in first.events + rest.events] == list(reversed(ids))
    assert len(engine.audit(since=began, until=time.time() + 1).events) == len(everything.events)
    assert engine.audit(until=began - 60).events == []
    with pytest.raises(Exception, match="cursor"):
        engine.audit(before="not-a-cursor")


def test_the_signal_command_acts_as_the_configured_principal(engine: Engine, driver: Driver,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    import engine.cli as cli

    monkeypatch.setattr(cli, "cli_engine", lambda allow_start=False: engine)
    monkeypatch.delenv("TRADEFLOW_PRINCIPAL", raising=False)
    monkeypatch.delenv("TRADEFLOW_PRINCIPAL_ROLES", raising=False)
    runner = CliRunner()
    iid = started(engine, driver, run="cli")
    wrong = runner.invoke(cli.main, ["signal", iid, "aprove"])
    assert wrong.exit_code == 1 and "it awaits 'approve', 'reject'" in " ".join(wrong.output.split())
    listed = runner.invoke(cli.main, ["list", "--run", "cli"])
    assert "awaiting signal" in " ".join(listed.output.split())  # the table wraps the rest of the line
    unconfigured = runner.invoke(cli.main, ["signal", iid, "approve"])
    said = " ".join(unconfigured.output.split())
    assert unconfigured.exit_code == 1 and "needs the role pm" in said and "TRADEFLOW_PRINCIPAL_ROLES" in said
    assert engine.get(iid).status is InstanceStatus.AWAITING
    free = runner.invoke(cli.main, ["signal", iid, "approve", "--by", "ann"])
    assert free.exit_code == 2 and "--by is gone" in free.output
    env = {"TRADEFLOW_PRINCIPAL": "ann", "TRADEFLOW_PRINCIPAL_ROLES": "pm"}
    args = ["signal", iid, "approve", "--data", '{"note": "ok"}', "--key", "k"]
    sent = runner.invoke(cli.main, args, env=env)
    assert sent.exit_code == 0 and "running at execute" in sent.output
    assert engine.get(iid).context["review"]["by"] == "ann"
    again = runner.invoke(cli.main, args, env=env)
    assert again.exit_code == 0 and "applied before; nothing done" in " ".join(again.output.split())
    others = [started(engine, driver, run="cli") for _ in range(2)]
    bulk = runner.invoke(cli.main, ["signal", "--run", "cli", "reject", "--data", '{"reason": "x"}'], env=env)
    assert bulk.exit_code == 0 and "2 applied, 0 skipped" in bulk.output
    assert {engine.get(i).node for i in others} == {"rejected"}
    usage = runner.invoke(cli.main, ["signal", "--run", "cli", iid, "approve"], env=env)
    assert usage.exit_code == 2 and "with --run, give the signal NAME only" in usage.output
    four = started(engine, driver, amount=5000, run="cli")
    counted = runner.invoke(cli.main, ["signal", four, "approve"], env=env)
    assert counted.exit_code == 0 and "counted (1 of 2)" in counted.output
    inspected = " ".join(runner.invoke(cli.main, ["inspect", four]).output.split())
    assert "of 2) →" in inspected  # "signal approve by ann (1 of 2) → review", wrapped by the table
    twice = runner.invoke(cli.main, ["signal", four, "approve"], env=env)
    assert twice.exit_code == 1 and "sent it already" in " ".join(twice.output.split())
    paused = runner.invoke(cli.main, ["pause", four], env={"TRADEFLOW_PRINCIPAL": "olga"})
    assert paused.exit_code == 0 and engine.activities(four)[-1]["by"] == "olga"
