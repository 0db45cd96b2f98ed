"""Shared limits: the Lua bucket and pools (fakeredis and Redis), and limited steps driven in-process."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis

from engine.api import Engine
from engine.broker import MemoryEnqueuer, RedisQueueEnqueuer
from engine.broker.interface import PRIORITY_CONTINUE, StepMessage
from engine.clock import ManualClock
from engine.definitions.validation import load_definition
from engine.errors import DefinitionError
from engine.instance import InstanceStatus, Outcome
from engine.runtime.concerns.limits import LIMIT_TIMER, WAKE_GAP_SECONDS, Limits
from engine.service import ActionRegistry, Transition, action
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import Driver, runtime_of, store_of

ACTIONS = ActionRegistry()
CALLS: list[tuple[str, str]] = []


@action("lim", "call", into=ACTIONS)
def call(payload: dict[str, Any]) -> Transition:
    """Records who called."""
    CALLS.append((payload["key"], payload["node"]))
    return Transition("ok")


def flow(name: str, limits: dict[str, Any], nodes: tuple[str, ...] = ("a",), group: bool = False) -> dict[str, Any]:
    """A chain of limited service nodes."""
    body: dict[str, Any] = {"name": name, "initial_data": {"type": "object"}, "start": nodes[0], "nodes": {}}
    for i, node in enumerate(nodes):
        nxt = nodes[i + 1] if i + 1 < len(nodes) else "done"
        body["nodes"][node] = {"type": "service", "service": "lim", "action": "call",
                               "input": {"key": "data.key", "node": f"'{node}'"},
                               "transitions": {"ok": nxt}, "limits": limits}
    body["nodes"]["done"] = {"type": "terminal", "status": "succeeded"}
    return body


@pytest.fixture
def clock() -> ManualClock:
    """Starts on a whole second: a start with a random fraction puts 0.05 + 0.25 a quarter-microsecond
    short of 0.3 about one run in twenty, and the bucket's microseconds then see a call not yet due."""
    return ManualClock(float(int(time.time())))


@pytest.fixture
def store(any_redis: redis.Redis, key_prefix: str, clock: ManualClock) -> RedisStore:
    """The store, its buckets on the test's clock: no verdict depends on how fast the machine runs."""
    store = RedisStore(any_redis, Keys(key_prefix), retention_seconds=3600)
    store.limit_clock = clock
    return store


@pytest.fixture
def engine(store: RedisStore, clock: ManualClock) -> Engine:
    CALLS.clear()
    return Engine(store, MemoryEnqueuer(), clock)


def drive(driver: Driver, clock: ManualClock, rounds: int = 1000) -> None:
    """Run messages and timers, moving the test's clock (the timers' and the buckets') 50 ms a round."""
    for _ in range(rounds):
        driver.run_until_idle()
        if not store_of(driver.engine).client.zcard(store_of(driver.engine).keys.timers):
            return
        clock.advance(0.05)
    raise AssertionError("limited steps still parked")


# -- the bucket ------------------------------------------------------------------------------------


def test_rate_bucket_allows_burst_then_parks_in_arrival_order(store: RedisStore, clock: ManualClock) -> None:
    verdicts = [store.limit_rate("api", f"i{n}", per_second=10, burst=3) for n in range(6)]
    assert [v.ok for v in verdicts] == [True, True, True, False, False, False]
    waits = [v.wait_seconds for v in verdicts[3:]]
    assert 0 < waits[0] <= 0.3 + 0.05
    assert waits[0] < waits[1] < waits[2]  # the line is served one call interval (0.1 s) apart
    assert waits[1] - waits[0] == pytest.approx(0.1, abs=0.02)
    assert store.limit_line("rate", "api") == ["i3", "i4", "i5"]
    # a newcomer queues behind the parked ones, even once the window has room again
    clock.advance(0.35)
    assert not store.limit_rate("api", "late", per_second=10, burst=3).ok
    # a parked one, woken, takes its call
    assert store.limit_rate("api", "i3", per_second=10, burst=3).ok
    assert "i3" not in store.limit_line("rate", "api")
    [state] = store.limit_states(["api"])
    assert (state.kind, state.per_second, state.burst, state.parked, state.waits) == ("rate", 10, 3, 3, 4)


def test_rate_override_wins_and_clears(store: RedisStore) -> None:
    store.limit_set("api", {"per_second": 1, "burst": 1})
    assert store.limit_rate("api", "a", per_second=100, burst=100).ok
    assert not store.limit_rate("api", "b", per_second=100, burst=100).ok
    [state] = store.limit_states(["api"])
    assert state.override and state.per_second == 1 and state.tokens == 0
    store.limit_clear("api")
    assert store.limit_rate("api", "b", per_second=100, burst=100).ok  # woken from the line, room again
    assert not store.limit_states(["api"])[0].override


def test_concurrency_pool_serves_its_line_in_order(store: RedisStore) -> None:
    assert store.limit_acquire("hh:1", "a", 3, maximum=1).ok
    assert store.limit_acquire("hh:1", "a", 4, maximum=1).ok  # the holder keeps its slot (next step)
    assert store.limit_acquire("hh:1", "b", 3, maximum=1).position == 1
    assert store.limit_acquire("hh:1", "c", 3, maximum=1).position == 2
    assert store.limit_acquire("hh:2", "d", 3, maximum=1).ok  # another key: its own pool
    assert store.limit_release("hh:1", "a", maximum=1) == ["b"]
    assert not store.limit_acquire("hh:1", "c", 3, maximum=1).ok  # b is ahead
    assert store.limit_acquire("hh:1", "b", 3, maximum=1).ok
    assert store.limit_holders("hh:1") == {"b": 3}
    assert store.limit_release("hh:1", "b", maximum=1) == ["c"]
    assert store.limit_release("hh:1", "c", maximum=1) == []


# -- the definition --------------------------------------------------------------------------------


def test_limits_round_trip_and_validate() -> None:
    body = flow("rt", {"rate": {"key": "'api'", "per_second": 2.5, "burst": 5},
                       "concurrency": {"key": "data.key", "max": 2, "group": "pair"}})
    definition = load_definition(json.dumps(body))
    again = load_definition(definition.to_json())
    assert again == definition
    assert definition.nodes["a"].limits.rate.capacity == 5  # type: ignore[union-attr]
    assert load_definition(json.dumps(flow("d", {"rate": {"key": "'x'", "per_second": 2.5}}))) \
        .nodes["a"].limits.rate.capacity == 3  # type: ignore[union-attr]


@pytest.mark.parametrize(("limits", "pointer", "words"), [
    ({"rate": {"key": "'x'", "per_second": 0}}, "/nodes/a/limits/rate/per_second", "greater than 0"),
    ({"rate": {"key": "'x'", "per_second": 5, "burst": 0}}, "/nodes/a/limits/rate/burst", "greater than or equal"),
    ({"rate": {"key": "nope.x", "per_second": 5}}, "/nodes/a/limits/rate/key", "nope"),
    ({"rate": {"key": "context.zz", "per_second": 5}}, "/nodes/a/limits/rate/key", "unknown node"),
    ({"concurrency": {"key": "data.k", "max": 0}}, "/nodes/a/limits/concurrency/max", "greater than or equal"),
    ({"concurrency": {"key": "data.k", "max": 1, "extra": 1}}, "/nodes/a/limits/concurrency/extra", ""),
    ({"rate": {"key": "'x'", "per_second": 0.001, "burst": 1000}}, "/nodes/a/limits/rate/burst", "over a day"),
])
def test_limits_problems_name_their_pointer(limits: dict[str, Any], pointer: str, words: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        load_definition(json.dumps(flow("bad", limits)))
    found = [p for p in caught.value.problems if p.pointer == pointer]
    assert found, caught.value.problems
    assert words in found[0].message


def test_a_group_agrees_on_key_and_max() -> None:
    body = flow("g", {"concurrency": {"key": "data.key", "max": 1, "group": "hh"}}, nodes=("a", "b"))
    body["nodes"]["b"]["limits"] = {"concurrency": {"key": "data.key", "max": 2, "group": "hh"}}
    with pytest.raises(DefinitionError) as caught:
        load_definition(json.dumps(body))
    assert [p.pointer for p in caught.value.problems] == ["/nodes/b/limits/concurrency"]


# -- limited steps -----------------------------------------------------------------------------------


def test_rate_limited_steps_park_without_running_and_all_finish(engine: Engine, clock: ManualClock) -> None:
    engine.publish(load_definition(json.dumps(flow("rated", {"rate": {"key": "'api'", "per_second": 50,
                                                                        "burst": 5}}))))
    driver = Driver(engine, ACTIONS)
    ids = [engine.start("rated", {"key": f"k{n}"}) for n in range(20)]
    driver.run_until_idle()
    parked = [engine.get(iid) for iid in ids if engine.get(iid).status is InstanceStatus.WAITING]
    assert len(CALLS) == 5 and len(parked) == 15
    assert {p.waiting_for for p in parked} == {"rate: api"} and {p.timer for p in parked} == {LIMIT_TIMER}
    assert store_of(engine).run_limited(engine.get(ids[0]).run) == {"rate: api": 15}
    limited = [a for a in engine.activities(parked[0].id) if a["outcome"] == Outcome.LIMITED]
    assert limited and limited[0]["reason"].startswith("rate: api")
    drive(driver, clock)
    assert all(engine.get(iid).status is InstanceStatus.SUCCEEDED for iid in ids)
    assert len(CALLS) == 20
    assert store_of(engine).run_limited(engine.get(ids[0]).run) == {}
    assert all(engine.get(iid).waiting_for is None for iid in ids)


def test_one_busy_key_does_not_delay_another(engine: Engine, clock: ManualClock) -> None:
    engine.publish(load_definition(json.dumps(flow("keyed", {"rate": {"key": "data.key", "per_second": 1,
                                                                        "burst": 1}}))))
    driver = Driver(engine, ACTIONS)
    busy = [engine.start("keyed", {"key": "busy"}) for _ in range(5)]
    other = engine.start("keyed", {"key": "quiet"})
    driver.run_until_idle()
    assert engine.get(other).status is InstanceStatus.SUCCEEDED
    assert sum(engine.get(iid).status is InstanceStatus.WAITING for iid in busy) == 4


def test_concurrency_of_one_runs_members_one_at_a_time(engine: Engine, clock: ManualClock) -> None:
    limits = {"concurrency": {"key": "data.key", "max": 1, "group": "household"}}
    engine.publish(load_definition(json.dumps(flow("conc", limits, nodes=("a", "b")))))
    driver = Driver(engine, ACTIONS)
    ids = [engine.start("conc", {"key": "h42"}) for _ in range(3)]
    driver.run_until_idle()
    # the slot is held across the group's nodes: each instance runs a then b before the next starts
    assert CALLS == [("h42", "a"), ("h42", "b")] * 3
    assert all(engine.get(iid).status is InstanceStatus.SUCCEEDED for iid in ids)
    assert store_of(engine).limit_holders("household:h42") == {}


def test_a_cancelled_holder_s_slot_is_reclaimed_by_the_sweeper(engine: Engine, clock: ManualClock) -> None:
    engine.publish(load_definition(json.dumps(flow("conc1", {"concurrency": {"key": "data.key", "max": 1}}))))
    driver = Driver(engine, ACTIONS)
    holder = engine.start("conc1", {"key": "h"})
    # the holder's worker takes its slot and dies with the message (the slot is not released)
    driver.queue.messages.clear()
    store_of(engine).limit_acquire("a:h", holder, 1, maximum=1)
    waiter = engine.start("conc1", {"key": "h"})
    driver.run_until_idle()
    assert engine.get(waiter).waiting_for == "concurrency: h"
    runtime_of(engine).sweep()
    assert engine.get(waiter).status is InstanceStatus.WAITING  # the holder is still inside: it keeps it
    engine.cancel(holder)
    runtime_of(engine).sweep()
    driver.run_until_idle()
    assert engine.get(waiter).status is InstanceStatus.SUCCEEDED


def test_a_step_may_count_for_several_calls(store: RedisStore) -> None:
    assert store.limit_rate("orders", "a", per_second=10, burst=10, cost=7).tokens == 3
    refused = store.limit_rate("orders", "b", per_second=10, burst=10, cost=5)
    assert not refused.ok and 0.9 <= refused.wait_seconds <= 1.05  # a's 7 calls must leave the 1 s window
    assert store.limit_rate("orders", "c", per_second=10, burst=10, cost=50).wait_seconds > refused.wait_seconds


def test_the_command_line_sets_and_clears_through_the_engine_audited_as_its_principal(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from engine import limits_cli

    monkeypatch.setattr(limits_cli, "cli_engine", lambda allow_start=False: engine)
    runner, env = CliRunner(), {"TRADEFLOW_PRINCIPAL": "ann", "TRADEFLOW_PRINCIPAL_ROLES": "operator"}
    done = runner.invoke(limits_cli.limits, ["set", "brokerage", "--per-second", "20"], env=env)
    assert done.exit_code == 0, done.output
    [state] = engine.limits()
    assert (state.per_second, state.burst, state.override) == (20, 20, True)
    refused = runner.invoke(limits_cli.limits, ["set", "brokerage"], env=env)
    assert refused.exit_code != 0 and "--per-second" in str(refused.exception)  # nothing set, nothing audited
    assert runner.invoke(limits_cli.limits, ["clear", "brokerage"], env=env).exit_code == 0
    events = engine.audit(kinds=["limit_set", "limit_cleared"]).events
    assert [(e.kind, e.by, e.detail["limit"]) for e in events] == [("limit_cleared", "ann", "brokerage"),
                                                                   ("limit_set", "ann", "brokerage")]
    assert events[1].detail["per_second"] == 20 and events[0].detail["had_override"] is True


# -- waking parked steps -------------------------------------------------------------------------------


def test_woken_steps_that_lose_the_race_take_the_next_free_calls_not_the_line_s(store: RedisStore,
                                                                                 clock: ManualClock) -> None:
    assert all(store.limit_rate("api", f"i{n}", per_second=10, burst=3).ok for n in range(3))
    parked = [store.limit_rate("api", f"p{n}", per_second=10, burst=3) for n in range(4)]
    assert [round(p.wait_seconds, 3) for p in parked] == [0.3, 0.4, 0.5, 0.6]
    # p1 and p2 are woken before a call left the window (the steps before them ran late): each is
    # planned for when its call fits, counting the other's -- p1 and p2 then, p0 too (3 in 0.3 s)
    clock.advance(0.05)
    again = [store.limit_rate("api", iid, per_second=10, burst=3) for iid in ("p1", "p2")]
    assert not any(v.ok for v in again)
    assert [round(v.wait_seconds + 0.05, 3) for v in again] == [0.3, 0.3]
    clock.advance(0.25)
    assert all(store.limit_rate("api", iid, per_second=10, burst=3).ok for iid in ("p0", "p1", "p2"))
    clock.advance(0.3)
    assert store.limit_rate("api", "p3", per_second=10, burst=3).ok  # the line's last, at its time
    assert store.limit_line("rate", "api") == []


def test_a_step_woken_at_its_time_finds_its_calls_free(store: RedisStore, clock: ManualClock) -> None:
    costs = [7, 5, 3, 8, 2, 6, 4, 9, 1, 10]
    assert store.limit_rate("orders", "s0", per_second=10, burst=10, cost=costs[0]).ok
    start = clock()
    due = {f"s{n}": start + store.limit_rate("orders", f"s{n}", per_second=10, burst=10, cost=cost).wait_seconds
           for n, cost in enumerate(costs) if n}
    assert list(due) == sorted(due, key=due.__getitem__)  # the line in arrival order
    for n, iid in enumerate(due, start=1):
        clock.advance(due[iid] - clock())
        assert store.limit_rate("orders", iid, per_second=10, burst=10, cost=costs[n]).ok, iid  # no second park
    # 55 calls, at most 10 in any second: the last goes 4.5 s after the first at the earliest
    assert due["s9"] - start >= 4.5 - 0.01
    assert store.limit_states(["orders"])[0].waits == len(costs) - 1


def test_parked_steps_ask_for_one_early_wake_at_a_time_when_the_next_is_due(engine: Engine,
                                                                            clock: ManualClock) -> None:
    engine.publish(load_definition(json.dumps(flow("woken", {"rate": {"key": "'api'", "per_second": 50,
                                                                        "burst": 5}}))))
    runtime = runtime_of(engine)
    limits = runtime.hook(Limits)
    assert isinstance(limits, Limits)
    asked: list[float] = []
    limits.waker = asked.append
    driver = Driver(engine, ACTIONS)
    ids = [engine.start("woken", {"key": f"k{n}"}) for n in range(20)]
    driver.run_until_idle()
    # 15 parked, one call interval (20 ms) apart from when the first 5 calls leave the 0.1 s window:
    # one wake is asked for, for the first one's time (the others' times are later)
    assert len(asked) == 1 and asked[0] == pytest.approx(0.1, abs=0.005)
    clock.advance(asked[0])
    assert runtime.tick(concerns=False) == 1 and limits.woken(runtime)
    assert len(asked) == 2 and asked[1] == pytest.approx(WAKE_GAP_SECONDS, abs=0.005)  # the next, 20 ms on
    assert not limits.woken(runtime)  # asked once already for that moment
    drive(driver, clock)
    assert all(engine.get(iid).status is InstanceStatus.SUCCEEDED for iid in ids)
    # a step parked for longer than the horizon is left to the periodic tick
    engine.publish(load_definition(json.dumps(flow("slow", {"rate": {"key": "'slow'", "per_second": 0.4,
                                                                       "burst": 1}}))))
    asked.clear()
    engine.start("slow", {"key": "a"}), engine.start("slow", {"key": "b"})
    driver.run_until_idle()
    assert asked == [] and 2.4 < (store_of(engine).next_timer() or 0) - clock() <= 2.5 + 1e-6


def test_a_woken_step_goes_to_the_head_of_its_queue(any_redis: redis.Redis, key_prefix: str,
                                                      clock: ManualClock) -> None:
    store = RedisStore(any_redis, Keys(key_prefix), retention_seconds=3600)
    store.limit_clock = clock
    enqueuer = RedisQueueEnqueuer(any_redis, f"{key_prefix}:q:")
    engine = Engine(store, enqueuer, clock)
    engine.publish(load_definition(json.dumps(flow("front", {"rate": {"key": "'api'", "per_second": 10,
                                                                        "burst": 1}}))))
    runtime = runtime_of(engine)
    first, parked = engine.start("front", {"key": "a"}), engine.start("front", {"key": "b"})
    for taken in enqueuer.take("lim", 10):
        assert taken.step is not None
        runtime.run_step(*taken.step, lambda node, payload: ACTIONS.get("lim", "call").call(payload))
    assert engine.get(first).status is InstanceStatus.SUCCEEDED and engine.get(parked).status is InstanceStatus.WAITING
    # three steps of instances in flight wait in the queue when the parked one's time comes
    for n in range(3):
        enqueuer.enqueue(StepMessage("lim.call", "lim", f"other-{n}", "a", 2, 1), PRIORITY_CONTINUE)
    clock.advance(0.2)
    assert runtime.tick() == 1
    taken = enqueuer.take("lim", 10)
    assert [t.step[0] for t in taken if t.step] == [parked, "other-0", "other-1", "other-2"]


def test_a_wake_that_cannot_be_sent_leaves_the_step_parked_for_the_tick(engine: Engine, clock: ManualClock) -> None:
    engine.publish(load_definition(json.dumps(flow("lost", {"rate": {"key": "'lost'", "per_second": 10,
                                                                       "burst": 1}}))))
    limits = runtime_of(engine).hook(Limits)
    assert isinstance(limits, Limits)

    def broker_away(countdown: float) -> None:
        raise ConnectionError("broker away")

    limits.waker = broker_away
    driver = Driver(engine, ACTIONS)
    ids = [engine.start("lost", {"key": f"k{n}"}) for n in range(2)]
    driver.run_until_idle()
    assert engine.get(ids[1]).waiting_for == "rate: lost"  # parked all the same
    drive(driver, clock)  # the tick wakes it
    assert engine.get(ids[1]).status is InstanceStatus.SUCCEEDED


def test_names_unused_for_the_retention_are_forgotten_unless_they_hold_something(store: RedisStore,
                                                                                 clock: ManualClock) -> None:
    # one limit name per household would pile up for ever: the housekeeping drops the idle ones
    assert store.limit_rate("household:1", "a", per_second=1, burst=1).ok
    assert store.limit_acquire("pool:2", "b", 1, 1).ok  # b holds its slot
    assert store.limit_rate("household:3", "c", per_second=1, burst=1).ok
    assert not store.limit_rate("household:3", "d", per_second=1, burst=1).ok  # d is parked in its line
    store.limit_set("custodian", {"per_second": 5, "burst": 5})  # an override an admin set
    clock.advance(100)
    assert store.limit_rate("recent", "e", per_second=1, burst=1).ok
    assert store.limit_forget(age_seconds=50) == 1  # household:1 only
    assert set(store.limit_names()) == {"pool:2", "household:3", "custodian", "recent"}
    assert "household:1" not in {s.name for s in store.limit_states(store.limit_names())}
