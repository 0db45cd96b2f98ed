"""The broker module against what Celery and kombu really write and read (real Redis, real consumers).

Run on the lowest and the newest supported celery/kombu by ``make test-compat``: a release that
changes the envelope, the queue lists or the unacked layout fails here, not in production.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection

from engine.broker import (
    PRIORITY_CONTINUE,
    PRIORITY_START,
    RedisQueueEnqueuer,
    StepMessage,
)
from tests.contract.kombu_delivery import deliver_one

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "contract"


def _shape(value: Any) -> Any:
    """The nested keys of a message (values left out)."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    return type(value).__name__


def _body(raw: bytes | str) -> Any:
    return json.loads(base64.b64decode(json.loads(raw)["body"]))




@pytest.fixture
def broker(celery_app: Celery, real_redis: redis.Redis) -> RedisQueueEnqueuer:
    return RedisQueueEnqueuer.for_app(celery_app, real_redis)



# -- the envelope ------------------------------------------------------------------------------

@pytest.mark.parametrize("priority", [PRIORITY_CONTINUE, PRIORITY_START])
def test_the_envelope_is_the_message_send_task_writes(celery_app: Celery, broker: RedisQueueEnqueuer,
                                                      real_redis: redis.Redis, priority: int) -> None:
    message = StepMessage("svc.one", "svc", "inst-1", "a", 3, 2)
    celery_app.send_task(message.task, args=message.args, queue=message.queue, priority=priority,
                         ignore_result=True)
    ours = broker.envelope(message, priority)
    assert real_redis.type(ours.key) == b"list"  # the list Celery wrote to is the one we write to
    theirs = json.loads(real_redis.lpop(ours.key))
    mine = json.loads(ours.body)
    assert _shape(mine) == _shape(theirs)  # the same headers, properties, delivery info: nothing more, nothing less
    for part in ("headers", "properties"):
        differ = {k for k in theirs[part] if theirs[part][k] != mine[part][k]}
        assert differ <= {"id", "root_id", "origin", "correlation_id", "reply_to", "delivery_tag"}, part
    assert mine["properties"]["delivery_info"] == theirs["properties"]["delivery_info"]
    assert {k: mine[k] for k in ("content-type", "content-encoding")} == \
        {k: theirs[k] for k in ("content-type", "content-encoding")}
    assert json.loads(base64.b64decode(mine["body"])) == json.loads(base64.b64decode(theirs["body"]))
    assert mine["headers"]["id"] == mine["headers"]["root_id"] == mine["properties"]["correlation_id"]


def test_a_celery_worker_runs_a_message_the_module_pushed(broker: RedisQueueEnqueuer, real_redis: redis.Redis,
                                                          redis_url: str, broker_prefix: str,
                                                          tmp_path: Path) -> None:
    broker.enqueue(StepMessage("contract.record", QUEUE, "inst-w", "a", 1, 1), PRIORITY_START)
    broker.enqueue(StepMessage("contract.record", QUEUE, "inst-w", "b", 2, 1), PRIORITY_CONTINUE)
    env = {**os.environ, "CONTRACT_REDIS_URL": redis_url, "CONTRACT_BROKER_PREFIX": broker_prefix,
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), "TRADEFLOW_EVENTS": "0"}
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "tests.contract.worker_app", "worker",
                                   "-Q", QUEUE, "-P", "solo", "--without-mingle", "--without-gossip",
                                   "--without-heartbeat", "-l", "INFO"], cwd=ROOT, env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 60
        while real_redis.llen(f"{broker_prefix}recorded") < 2:
            assert worker.poll() is None and time.monotonic() < end, log.read_text()[-3000:]
            time.sleep(0.1)
        recorded = [json.loads(r) for r in real_redis.lrange(f"{broker_prefix}recorded", 0, -1)]
        assert recorded == [["inst-w", "b", 2, 1], ["inst-w", "a", 1, 1]]  # priority 0 before priority 9
        end = time.monotonic() + 60
        while real_redis.hlen(f"{broker_prefix}unacked"):  # acknowledged: nothing left behind
            assert time.monotonic() < end, real_redis.hgetall(f"{broker_prefix}unacked")
            time.sleep(0.1)
    finally:
        worker.terminate()
        worker.wait(60)  # its warm shutdown: a busy machine only makes it later


# -- the queues and kombu's unacked hash, as Celery and kombu leave them ------------------------

def test_steps_sent_by_celery_are_counted_scanned_and_taken(celery_app: Celery, broker: RedisQueueEnqueuer) -> None:
    for seq, priority in ((1, PRIORITY_START), (2, PRIORITY_CONTINUE), (3, PRIORITY_START)):
        celery_app.send_task("svc.one", args=["inst-c", "a", seq, 1], queue=QUEUE, priority=priority,
                             ignore_result=True)
    celery_app.send_task("engine.sweep", queue=QUEUE, ignore_result=True)  # housekeeping: not a step
    assert broker.waiting([QUEUE]) == 4 and broker.count([QUEUE]) == 4
    assert broker.pending([QUEUE]) == {("inst-c", "a", 1, 1): 0.0, ("inst-c", "a", 2, 1): 0.0,
                                       ("inst-c", "a", 3, 1): 0.0}
    depth, oldest = broker.queue_heads(QUEUE)
    assert depth == 4 and oldest == ["inst-c", "inst-c"]  # one per non-empty priority list
    taken = broker.take(QUEUE, 4)  # kombu's delivery order: priority lists first to last, oldest first
    assert [t.step for t in taken] == [("inst-c", "a", 2, 1), None, ("inst-c", "a", 1, 1), ("inst-c", "a", 3, 1)]
    assert [t.task for t in taken] == ["svc.one", "engine.sweep", "svc.one", "svc.one"]
    broker.give_back(taken)
    assert [t.step for t in broker.take(QUEUE, 1)] == [("inst-c", "a", 2, 1)]  # back at the head


def test_a_delivery_kombu_holds_is_read_with_its_live_consumer(
        celery_app: Celery, broker: RedisQueueEnqueuer, connection: Connection, real_redis: redis.Redis,
        broker_prefix: str) -> None:
    celery_app.send_task("svc.one", args=["inst-d", "a", 4, 2], queue=QUEUE, ignore_result=True)
    message = deliver_one(connection, QUEUE)
    assert real_redis.hlen(f"{broker_prefix}unacked") == 1  # kombu's own entry...
    [delivery] = broker.deliveries()
    assert delivery.tag == message.delivery_tag and delivery.step == ("inst-d", "a", 4, 2)
    assert (delivery.task, delivery.queue, delivery.held) == ("svc.one", QUEUE, True)  # ... and who holds it
    assert abs(delivery.at - time.time()) < 60
    assert broker.pending([QUEUE]) == {("inst-d", "a", 4, 2): delivery.at}
    assert broker.count([QUEUE]) == 1 and broker.waiting([QUEUE]) == 0
    message.ack()
    assert broker.deliveries() == [] and real_redis.hlen(f"{broker_prefix}unacked_consumer") == 0


def test_a_gone_consumers_delivery_is_not_counted_and_goes_back_to_its_queue(
        celery_app: Celery, broker: RedisQueueEnqueuer, connection: Connection, real_redis: redis.Redis,
        broker_prefix: str) -> None:
    celery_app.send_task("svc.one", args=["inst-g", "a", 1, 1], queue=QUEUE, priority=PRIORITY_START,
                         ignore_result=True)
    first = deliver_one(connection, QUEUE)
    for mark in real_redis.scan_iter(f"{broker_prefix}tradeflow_consumer:*"):
        real_redis.delete(mark)  # what a SIGKILLed consumer's mark does after a few seconds
    [gone] = broker.deliveries()
    assert gone.held is False and broker.count([QUEUE]) == 0 and broker.pending([QUEUE]) == {}
    assert broker.restore([gone]) == 1
    assert broker.deliveries() == [] and broker.waiting([QUEUE]) == 1
    again = deliver_one(connection, QUEUE)  # kombu delivers it again, as its own restore would
    assert again.payload == first.payload and again.headers["id"] == first.headers["id"]
    assert again.delivery_info.get("redelivered") or again.headers.get("redelivered")
    assert broker.restore([gone]) == 0  # already back: nothing twice
    [held] = broker.deliveries()
    assert broker.drop([held]) == 1 and broker.deliveries() == []
    assert real_redis.zcard(f"{broker_prefix}unacked_index") == 0
    assert real_redis.hlen(f"{broker_prefix}unacked_consumer") == 0


def test_kombus_own_restore_leaves_no_consumer_record(
        celery_app: Celery, broker: RedisQueueEnqueuer, connection: Connection, real_redis: redis.Redis,
        broker_prefix: str) -> None:
    celery_app.send_task("svc.one", args=["inst-k", "a", 1, 1], queue=QUEUE, ignore_result=True)
    message = deliver_one(connection, QUEUE)
    message.requeue()  # kombu's reject with requeue: restore_by_tag
    assert broker.deliveries() == [] and real_redis.hlen(f"{broker_prefix}unacked_consumer") == 0
    assert broker.pending([QUEUE]) == {("inst-k", "a", 1, 1): 0.0}
