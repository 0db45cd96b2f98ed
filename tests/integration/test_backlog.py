"""A backlog is not a loss; a lost message is: real workers, one worker thread for the test queue.

A step's timeout counts from when a worker starts it. Steps that wait in a queue many times
longer than their timeout run once each, with nothing re-sent; a message deleted from the
queue before any worker took it is found missing by the reconciliation and re-sent; a deep
queue is drained by the worker (steps taken off the queue, not each delivered by Celery).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from engine.api import Engine
from engine.broker import CeleryEnqueuer, RedisQueueEnqueuer
from engine.definitions.validation import load_definition
from engine.instance import InstanceStatus, Outcome
from engine.ops.fleet import Fleet, FleetSpec
from engine.testing import FULL_CHECK_PERIODS, IDLE_PAUSE_SECONDS, delete_prefix, make_store, store_of
from tests.integration.conftest import LiveFleet, fleet_env, sender_app

pytestmark = pytest.mark.integration

STEP_SECONDS = 0.25
TIMEOUT_SECONDS = 1


@pytest.fixture(scope="module")
def single(redis_url: str) -> Iterator[LiveFleet]:
    """The engine fleet (threads: timers, sweeper, reconciliation), beat, and ONE itest worker thread."""
    prefix = f"tfbl-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    engine = Engine(make_store(client, prefix, 600),
                    CeleryEnqueuer(sender_app(redis_url, prefix)))
    fleet = Fleet([FleetSpec("engine", "threads", 2), FleetSpec("itest", "threads", 1)], beat=True,
                  env=fleet_env(redis_url, prefix), loglevel="INFO")
    try:
        with fleet:
            engine.publish(load_definition(json.dumps({
                "name": "one-step", "initial_data": {"type": "object", "required": ["key"]}, "start": "work",
                "nodes": {
                    "work": {"type": "service", "service": "itest", "action": "step",
                             "input": {"key": "data.key", "node": "'work'", "sleep": "data.sleep"},
                             "transitions": {"ok": "done"}, "timeout_seconds": TIMEOUT_SECONDS},
                    "done": {"type": "terminal", "status": "succeeded"},
                },
            })))
            yield LiveFleet(engine, fleet, prefix, client)
    finally:
        delete_prefix(client, prefix)
        client.close()


def test_a_queue_ten_times_longer_than_the_timeout_runs_each_step_once(single: LiveFleet) -> None:
    """52 steps of 0.25 s with a 1 s timeout on one worker thread: the last waits at least 12.75 s
    in the queue (over 10x the timeout, over twice timeout + grace: a deadline counted from the
    queue would have re-sent it twice). Every step runs once: no re-send, no no-op, no Timeout
    failure."""
    count = 52
    ids = single.engine.start_many("one-step", [{"key": f"bl{i}", "sleep": STEP_SECONDS} for i in range(count)],
                                   run="backlog")
    instances = single.wait(ids, timeout=count * STEP_SECONDS * 8 + 60)
    assert all(i.status is InstanceStatus.SUCCEEDED for i in instances)
    assert all(i.attempt == 1 and i.noops == 0 for i in instances)
    calls = single.calls()
    assert [calls.get(f"bl{i}:work") for i in range(count)] == [1] * count
    waited = []
    for iid in ids:
        acts = single.engine.activities(iid)
        assert [a["outcome"] for a in acts] == [Outcome.STARTED.value, Outcome.APPLIED.value]
        waited.append(acts[1]["started_at"] - acts[0]["ended_at"])
    assert max(waited) > 10 * TIMEOUT_SECONDS  # the backlog really was ten timeouts long


def test_a_message_deleted_from_the_queue_is_recovered(single: LiveFleet) -> None:
    """While the only worker thread is busy, delete the next instance's message from the queue
    list: the reconciliation finds it in neither the list nor the unacknowledged messages twice
    in a row and re-sends it; the instance completes with one execution."""
    blocker = single.engine.start("one-step", {"key": "blocker", "sleep": 3}, run="lost")
    end = time.monotonic() + 60
    while single.calls().get("blocker:work") != 1:  # the worker thread is now busy for 3 s
        assert time.monotonic() < end, "the blocker never started"
        time.sleep(0.02)
    victim = single.engine.start("one-step", {"key": "victim", "sleep": 0}, run="lost")
    queue = f"{single.prefix}:q:itest\x06\x169"  # first steps go at the start priority (9)
    deleted = 0
    for raw in single.client.lrange(queue, 0, -1):
        if victim.encode() in raw:
            deleted += single.client.lrem(queue, 0, raw)
    assert deleted == 1
    instances = single.wait([blocker, victim], timeout=90)
    assert all(i.status is InstanceStatus.SUCCEEDED for i in instances)
    assert single.calls()["victim:work"] == 1
    acts = single.engine.activities(victim)
    lost = [a for a in acts if a["outcome"] == Outcome.RETRY.value]
    assert len(lost) == 1 and "message lost" in lost[0]["error"] and "found in no queue" in lost[0]["error"]
    [applied] = [a for a in acts if a["outcome"] == Outcome.APPLIED.value]
    assert applied["attempt"] == 2  # the re-sent message ran the step
    assert [a["outcome"] for a in single.engine.activities(blocker)] == [Outcome.STARTED.value,
                                                                        Outcome.APPLIED.value]


def test_a_deep_queue_is_drained_by_the_worker_it_was_delivered_to(single: LiveFleet, redis_url: str) -> None:
    """48 first steps pushed with their instances (one atomic batch): the one worker thread is
    delivered a few of them by Celery and takes the rest off the queue itself (16 per delivery),
    each still run once with its own records."""
    count = 48
    log = single.fleet.logdir / "worker-itest.log"
    before = _received(log)
    app = sender_app(redis_url, single.prefix)
    app.conf.tradeflow_redis_url = redis_url
    broker = RedisQueueEnqueuer.for_app(app, single.client)
    direct = Engine(store_of(single.engine), broker)
    # The worker found the queue empty after the last test's delivery: let that pause end. It began
    # before that delivery was acknowledged (the drain runs inside the task), so count from the ack,
    # however late a busy machine makes it, not from when this test got here.
    _wait(lambda: not any(d.task.startswith("itest.") for d in broker.deliveries()), 60,
          "the last test's itest deliveries to be acknowledged")
    time.sleep(IDLE_PAUSE_SECONDS + 0.5)
    ids = direct.start_many("one-step", [{"key": f"dr{i}", "sleep": 0} for i in range(count)], run="drained")
    instances = single.wait(ids, timeout=120)
    assert all(i.status is InstanceStatus.SUCCEEDED and i.attempt == 1 and i.noops == 0 for i in instances)
    calls = single.calls()
    assert [calls.get(f"dr{i}:work") for i in range(count)] == [1] * count
    delivered = _received(log) - before
    assert 0 < delivered <= count // 4


def _received(log: Path) -> int:
    """How many itest step messages Celery has delivered to the worker (it logs each at INFO)."""
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text().splitlines() if "Task itest.step[" in line and "received" in line)


def test_a_killed_nodes_deliveries_hide_no_lost_message_and_leave_no_stale_entry(redis_url: str) -> None:
    """A node SIGKILLed while it holds four deliveries (one step running, three reserved) leaves four
    entries in kombu's unacked hash that nobody will ever ack. A message lost meanwhile is still
    found and re-sent by the reconciliation within two passes (the dead node's entries do not
    count as messages of queued steps), the dead node's deliveries go back to their queue (its
    consumer mark lapsed) and run, and the unacked hash ends with live consumers' entries only."""
    prefix = f"tfbk-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    app = sender_app(redis_url, prefix)
    engine = Engine(make_store(client, prefix, 600), CeleryEnqueuer(app))
    broker = RedisQueueEnqueuer.for_app(app, client)
    env = fleet_env(redis_url, prefix)
    every = float(env["TRADEFLOW_RECONCILE_SECONDS"])
    engine_fleet = Fleet([FleetSpec("engine", "threads", 2)], beat=True, env=env, loglevel="INFO")
    victim = Fleet([FleetSpec("itest", "threads", 1)], beat=False, loglevel="INFO",
                   env={**env, "TRADEFLOW_PREFETCH": "4", "TRADEFLOW_DRAIN_STEPS": "0"})
    rescuer = Fleet([FleetSpec("itest", "threads", 2)], beat=False, env=env, loglevel="INFO")
    live = LiveFleet(engine, engine_fleet, prefix, client)
    try:
        with engine_fleet:
            engine.publish(load_definition(json.dumps({
                "name": "held", "start": "work",
                "nodes": {
                    "work": {"type": "service", "service": "itest", "action": "step",
                             "input": {"key": "data.key", "node": "'work'", "sleep": "data.sleep",
                                       "mode": "has(data.mode) ? data.mode : ''"},
                             "transitions": {"ok": "done"}, "timeout_seconds": 600},  # no sweeper re-send here
                    "done": {"type": "terminal", "status": "succeeded"},
                },
            })))
            victim.__enter__()
            # 8 s on the victim (killed mid-way); its run again from the restored message is quick
            held = [engine.start("held", {"key": "held0", "sleep": 8, "mode": "slow-once"}, run="held")]
            _wait(lambda: live.calls().get("held0:work") == 1, 60, "the first step to start on the victim node")
            held += engine.start_many("held", [{"key": f"held{i}", "sleep": 0} for i in (1, 2, 3)], run="held")
            _wait(lambda: sum(d.step is not None and d.held is True for d in broker.deliveries()) == 4, 60,
                  "the victim node to hold four step deliveries")
            dead = {f"{socket.gethostname()}:{victim.procs[0].pid}"}  # the node's consumer (its main process)
            assert dead <= {who.decode() for who in client.hvals(f"{prefix}:q:unacked_consumer")}
            os.killpg(victim.procs[0].pid, signal.SIGKILL)
            victim.procs[0].wait(10)

            lost = engine.start("held", {"key": "lost", "sleep": 0}, run="held")
            queue = f"{prefix}:q:itest\x06\x169"
            assert sum(client.lrem(queue, 0, raw) for raw in client.lrange(queue, 0, -1) if lost.encode() in raw) == 1
            with rescuer:
                done = live.wait([*held, lost], timeout=120)
                assert all(i.status is InstanceStatus.SUCCEEDED for i in done)
                [resent] = [a for a in engine.activities(lost) if a["outcome"] == Outcome.RETRY.value]
                assert "found in no queue" in resent["error"]
                queued_for = float(re.search(r"queued (\d+)s ago", resent["error"]).group(1))
                # Re-sent by the passes that followed its loss, not by the 10-period full check.
                assert queued_for < FULL_CHECK_PERIODS * every, resent["error"]
                calls = live.calls()
                assert calls["lost:work"] == 1 and [calls[f"held{i}:work"] for i in (1, 2, 3)] == [1, 1, 1]
                assert calls["held0:work"] == 2  # killed mid-step, then run again from its restored message
                for iid in held:
                    assert [a["outcome"] for a in engine.activities(iid)].count(Outcome.APPLIED.value) == 1

                def only_live_entries() -> bool:
                    owners = {who.decode() for who in client.hvals(f"{prefix}:q:unacked_consumer")}
                    entries = broker.deliveries()
                    return not owners & dead and all(d.held is True for d in entries) \
                        and client.hlen(f"{prefix}:q:unacked") == len(entries)

                _wait(only_live_entries, 60, "kombu's unacked hash to hold live consumers' deliveries only")
    finally:
        victim.stop()
        delete_prefix(client, prefix)
        client.close()


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.1)
