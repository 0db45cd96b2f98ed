"""A backlog is not a loss; a lost message is: real workers, one worker thread for the test queue.

A step's timeout counts from when a worker starts it. Steps that wait in a queue many times
longer than their timeout run once each, with nothing re-sent; a message deleted from the
queue before any worker took it is found missing by the reconciliation and re-sent; a deep
queue is drained by the worker (steps taken off the queue, not each delivered by Celery).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from engine.api import Engine
from engine.broker import CeleryEnqueuer, RedisQueueEnqueuer
from engine.definitions.validation import load_definition
from engine.model import InstanceStatus, Outcome
from engine.ops.fleet import Fleet, FleetSpec
from engine.runtime.drain import IDLE_PAUSE_SECONDS
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import delete_prefix
from tests.integration.conftest import LiveFleet, fleet_env, sender_app

pytestmark = pytest.mark.integration

STEP_SECONDS = 0.25
TIMEOUT_SECONDS = 1


@pytest.fixture(scope="module")
def single(redis_url: str) -> Iterator[LiveFleet]:
    """The engine fleet (threads: timers, sweeper, reconciliation), beat, and ONE itest worker thread."""
    prefix = f"tfbl-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_url)
    engine = Engine(RedisStore(client, Keys(prefix), retention_seconds=600),
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
    """80 steps of 0.25 s with a 1 s timeout on one worker thread: the last waits ~20 s in the
    queue (20x the timeout, 3x timeout + grace). Every step runs once: no re-send, no no-op,
    no Timeout failure."""
    count = 80
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
    end = time.monotonic() + 30
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
    direct = Engine(single.engine.store, RedisQueueEnqueuer.for_app(app, single.client))
    time.sleep(IDLE_PAUSE_SECONDS + 0.5)  # the worker found the queue empty after the last test: let that pause end
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
