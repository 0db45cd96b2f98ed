"""The sweeper's liveness decision, driven one message at a time, on fakeredis and on a real Redis.

A started step records the process running it (its carrier); the sweeper re-sends it as its
next attempt when that process's liveness mark lapsed -- long before the node's timeout -- and
leaves it to the timeout while the mark lives (a hung step in a live process).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import redis

from engine.api import Engine
from engine.broker import MemoryEnqueuer
from engine.clock import ManualClock
from engine.definitions.validation import load_definition
from engine.instance import InstanceStatus, Outcome
from engine.runtime.concerns.liveness import Heartbeat, Liveness, process_of
from engine.service import ActionRegistry, Transition, action
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import Driver, runtime_of, store_of

ACTIONS = ActionRegistry()
DEAD = "host-a:101"
LIVE = "host-b:202"


@action("svc", "step", into=ACTIONS)
def step(payload: dict[str, Any]) -> Transition:
    """Answers ok."""
    return Transition("ok", {"n": payload["n"]})


FLOW = {
    "name": "two",
    "start": "first",
    "nodes": {
        "first": {"type": "service", "service": "svc", "action": "step", "input": {"n": 1},
                  "transitions": {"ok": "second"}, "timeout_seconds": 300},
        "second": {"type": "service", "service": "svc", "action": "step", "input": {"n": 2},
                   "transitions": {"ok": "done"}, "timeout_seconds": 300},
        "done": {"type": "terminal", "status": "succeeded"},
    },
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_750_000_000.0)


@pytest.fixture
def engine(any_redis: redis.Redis, key_prefix: str, clock: ManualClock) -> Engine:
    eng = Engine(RedisStore(any_redis, Keys(key_prefix), retention_seconds=3600), MemoryEnqueuer(), clock)
    eng.publish(load_definition(json.dumps(FLOW)))
    return eng


@pytest.fixture
def driver(engine: Engine) -> Driver:
    return Driver(engine, ACTIONS)


def start_in(engine: Engine, driver: Driver, process: str) -> str:
    """A worker process ``process`` takes the next message and starts its step (and is then stopped or killed)."""
    message = driver.queue.pop()
    carrier = f"{message.node}:{message.seq}:{message.attempt}@{process}"
    store_of(engine).start(message.instance_id, message.node, message.seq, message.attempt, engine.clock(), carrier)
    return message.instance_id


def retries(engine: Engine, iid: str) -> list[dict[str, Any]]:
    return [a for a in engine.activities(iid) if a["outcome"] == Outcome.RETRY.value]


def test_the_start_records_the_process_running_the_step(engine: Engine, driver: Driver) -> None:
    iid = engine.start("two", {})
    start_in(engine, driver, DEAD)
    assert engine.get(iid).carrier == f"first:1:1@{DEAD}"
    assert process_of(engine.get(iid).carrier) == DEAD
    # a stale delivery (another step) records nothing
    store_of(engine).start(iid, "second", 2, 1, engine.clock(), f"second:2:1@{LIVE}")
    assert engine.get(iid).carrier == f"first:1:1@{DEAD}"


def test_a_started_step_of_a_dead_process_is_resent_at_once_not_at_its_timeout(
        engine: Engine, driver: Driver, clock: ManualClock) -> None:
    store_of(engine).mark_alive(LIVE, 5)
    lost = engine.start("two", {})
    kept = engine.start("two", {})
    start_in(engine, driver, DEAD)  # never marked (or its mark lapsed): the process is gone
    start_in(engine, driver, LIVE)
    clock.advance(1)  # far below the timeout (300 s + 5 s)
    assert runtime_of(engine).sweep() == 1
    inst = engine.get(lost)
    assert inst.attempt == 2 and inst.carrier is None  # re-sent: a message carries it now
    [resent] = retries(engine, lost)
    assert resent["attempt"] == 1 and resent["error"].startswith("worker lost:") and DEAD in resent["error"]
    assert engine.get(kept).attempt == 1 and not retries(engine, kept)
    assert runtime_of(engine).sweep() == 0  # the re-sent step is queued, not started: nothing more to do
    [message] = driver.queue.messages
    assert (message[0].instance_id, message[0].attempt) == (lost, 2)
    driver.run_until_idle()
    assert engine.get(lost).status is InstanceStatus.SUCCEEDED
    applied = [a for a in engine.activities(lost) if a["outcome"] == Outcome.APPLIED.value]
    assert [(a["node"], a["attempt"]) for a in applied] == [("first", 2), ("second", 1)]


def test_a_live_process_keeps_its_step_until_the_timeout(engine: Engine, driver: Driver, clock: ManualClock) -> None:
    store_of(engine).mark_alive(LIVE, 5)
    iid = engine.start("two", {})
    start_in(engine, driver, LIVE)
    assert runtime_of(engine).sweep() == 0
    clock.advance(306)  # hung in a live process: the node's timeout is its bound
    store_of(engine).mark_alive(LIVE, 5)
    assert runtime_of(engine).sweep() == 1
    [resent] = retries(engine, iid)
    assert resent["error"].startswith("timeout:")


def test_the_mark_lapses_after_its_ttl(engine: Engine, driver: Driver) -> None:
    store_of(engine).mark_alive(LIVE, 60)  # a mark that cannot lapse while a busy machine starts the step
    iid = engine.start("two", {})
    start_in(engine, driver, LIVE)
    assert runtime_of(engine).sweep() == 0
    refreshed = time.monotonic()
    store_of(engine).mark_alive(LIVE, 0.2)  # the process's last refresh
    end = refreshed + 30
    while store_of(engine).alive([LIVE])[LIVE]:  # Redis (or fakeredis) lets it lapse 0.2 s after the refresh
        assert time.monotonic() < end, "the mark never lapsed"
        time.sleep(0.02)
    assert time.monotonic() - refreshed >= 0.19  # not before its TTL (a busy machine only makes it later)
    assert runtime_of(engine).sweep() == 1 and engine.get(iid).attempt == 2


def test_a_step_whose_workers_keep_dying_fails_with_worker_lost(engine: Engine, driver: Driver) -> None:
    iid = engine.start("two", {})
    for _ in range(3):
        start_in(engine, driver, DEAD)
        runtime_of(engine).sweep()
    inst = engine.get(iid)
    assert inst.status is InstanceStatus.FAILED
    assert inst.error is not None and inst.error["type"] == "WorkerLost" and DEAD in inst.error["reason"]
    assert len(retries(engine, iid)) == 2


def test_a_stalled_process_that_resumes_ends_as_a_recorded_noop(engine: Engine, driver: Driver) -> None:
    """SIGSTOP, in one message at a time: the stalled process's mark lapsed, its step was re-sent and
    applied by another process; when the stalled one resumes, its result is a no-op."""
    iid = engine.start("two", {})
    stalled = driver.queue.pop()
    calls = []

    def stalled_execute(node: Any, payload: Any) -> Transition:
        calls.append("stalled")
        assert runtime_of(engine).sweep() == 1  # while it is stalled, its mark lapsed: re-sent
        resent = driver.queue.pop()
        assert resent.attempt == 2
        assert str(driver.deliver(resent).outcome) == "applied"  # another process runs it
        return Transition("ok", {"n": 1})

    report = runtime_of(engine).run_step(stalled.instance_id, stalled.node, stalled.seq, stalled.attempt,
                                     stalled_execute)
    assert str(report.outcome) == "noop"
    history = engine.activities(iid)
    assert [a["outcome"] for a in history if a["seq"] == 1] == ["retry", "applied", "noop"]
    assert sum(a["outcome"] == "applied" and a["seq"] == 1 for a in history) == 1
    assert history[-1]["reason"] == "another delivery applied first"
    assert engine.get(iid).seq == 2


def test_marks_are_not_trusted_right_after_redis_started(engine: Engine, driver: Driver,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    iid = engine.start("two", {})
    start_in(engine, driver, DEAD)
    monkeypatch.setattr(RedisStore, "uptime", lambda self: 2.0)  # restarted 2 s ago: no process re-marked yet
    assert runtime_of(engine).sweep() == 0 and engine.get(iid).attempt == 1
    monkeypatch.setattr(RedisStore, "uptime", lambda self: 600.0)
    assert runtime_of(engine).sweep() == 1 and engine.get(iid).attempt == 2


def test_the_heartbeat_marks_before_it_returns_and_once_per_process(engine: Engine) -> None:
    marks = threading.Semaphore(0)
    beat = Heartbeat(marks.release, every=0.05)
    beat.start()
    assert marks.acquire(blocking=False)  # set before start() returned: before any step of this process
    beat.start()  # the same process: no second thread
    for _ in range(3):
        assert marks.acquire(timeout=5)
    beat.stop()
    runtime_of(engine).keep_alive()
    me = runtime_of(engine).process
    try:
        assert store_of(engine).alive([me]) == {me: True}
    finally:
        hook = runtime_of(engine).hook(Liveness)
        assert isinstance(hook, Liveness) and hook.heartbeat is not None
        hook.heartbeat.stop()
        store_of(engine).client.delete(store_of(engine).keys.alive(me))


def _stop_second_step_write_once(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The first write of step ``second``'s result (seq 2) finds Redis gone, as in a Redis kill -9."""
    real, failed = RedisStore.advance, []

    def advance(self: RedisStore, instance_id: str, *, seq: int, **kwargs: Any) -> Any:
        if seq == 2 and not failed:
            failed.append(seq)
            raise redis.ConnectionError("Connection refused")
        return real(self, instance_id, seq=seq, **kwargs)

    monkeypatch.setattr(RedisStore, "advance", advance)
    return failed


def test_a_chain_stopped_by_a_redis_error_is_resumed_when_its_delivery_is_tried_again(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker retries its delivery (``patiently``) after a Redis error stopped the step it ran inline:
    the delivery is stale, the step is carried by this live process and nobody runs it: resumed here,
    not left to its 300 s timeout."""
    driver = Driver(engine, ACTIONS, inline=True)
    iid = engine.start("two", {})
    message = driver.queue.pop()
    failed = _stop_second_step_write_once(monkeypatch)
    with pytest.raises(redis.ConnectionError):
        driver.deliver(message)  # first applied, second (inline) ran and could not be written
    assert failed == [2]
    stuck = engine.get(iid)
    assert (stuck.node, stuck.seq, stuck.status) == ("second", 2, InstanceStatus.RUNNING)
    assert stuck.carrier == f"first:1:1@{runtime_of(engine).process}"  # this process, whose mark is fresh
    assert str(driver.deliver(message).outcome) == "applied"  # what patiently does once Redis answers
    done = engine.get(iid)
    assert done.status is InstanceStatus.SUCCEEDED and not driver.queue.messages
    history = [(a["seq"], a["node"], a["outcome"]) for a in engine.activities(iid) if a["seq"] >= 1]
    assert history == [(1, "first", "applied"), (1, "first", "noop"), (2, "second", "applied")]
    assert "resuming that step" in engine.activities(iid)[-2]["reason"]


def test_a_redelivery_while_this_process_still_runs_the_chain_is_a_noop(engine: Engine) -> None:
    """The same message delivered twice to one process (kombu restored it): the second finds the chain in
    the first's hands and does not run its step a second time."""
    driver = Driver(engine, ACTIONS, inline=True)
    iid = engine.start("two", {})
    message = driver.queue.pop()
    inside, release, reports = threading.Event(), threading.Event(), []
    calls = []

    def execute(node: Any, payload: Any) -> Transition:
        calls.append(payload["n"])
        if payload["n"] == 2:
            inside.set()
            assert release.wait(10)
        return Transition("ok", {"n": payload["n"]})

    def first() -> None:
        reports.append(runtime_of(engine).run_step(message.instance_id, message.node, message.seq,
                                                   message.attempt, execute, lambda node: True))

    worker = threading.Thread(target=first)
    worker.start()
    try:
        assert inside.wait(10)  # the first delivery runs `second` inline now
        again = runtime_of(engine).run_step(message.instance_id, message.node, message.seq, message.attempt,
                                            execute, lambda node: True)
        assert str(again.outcome) == "noop"
    finally:
        release.set()
        worker.join(10)
    assert str(reports[0].outcome) == "applied" and calls == [1, 2]
    assert engine.get(iid).status is InstanceStatus.SUCCEEDED
    assert engine.activities(iid)[-2]["reason"] == "stale delivery: instance is at seq 2 (running)"
