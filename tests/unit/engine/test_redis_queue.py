"""Step messages written straight onto the broker's Redis lists, by the transition's own script.

The message must be pushed exactly when the transition applies and the instance runs on (that it is
the one Celery's ``send_task`` writes is tests/contract/test_broker_contract.py's to show).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import redis
from celery import Celery

from engine.api import Engine
from engine.app import enqueuer_for, sender_app
from engine.broker import PRIORITY_CONTINUE, PRIORITY_START, CeleryEnqueuer, RedisQueueEnqueuer
from engine.definitions.validation import load_definition
from engine.instance import InstanceStatus
from engine.service import Transition
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import runtime_of

FLOW = {
    "name": "two-steps",
    "start": "a",
    "nodes": {
        "a": {"type": "service", "service": "svc", "action": "one", "input": {}, "transitions": {"ok": "b"}},
        "b": {"type": "service", "service": "other", "action": "two", "input": {}, "transitions": {"ok": "done"}},
        "done": {"type": "terminal", "status": "succeeded"},
    },
}


@pytest.fixture
def celery_app(redis_url: str, key_prefix: str) -> Celery:
    return sender_app(redis_url, f"{key_prefix}:q:", "rq-test")


def test_the_next_step_is_pushed_by_the_transition_and_only_when_it_applies(
        celery_app: Celery, real_redis: redis.Redis, key_prefix: str) -> None:
    enqueuer = RedisQueueEnqueuer.for_app(celery_app, real_redis)
    engine = Engine(RedisStore(real_redis, Keys(key_prefix)), enqueuer)
    engine.publish(load_definition(json.dumps(FLOW)))
    iid = engine.start("two-steps", {})
    start_key = enqueuer.queue_key("svc", PRIORITY_START)
    assert start_key.endswith("svc\x06\x169") and real_redis.llen(start_key) == 1  # pushed with the instance
    first = json.loads(base64.b64decode(json.loads(real_redis.lpop(start_key))["body"]))[0]
    assert first == [iid, "a", 1, 1]

    def ok(node: Any, payload: Any) -> Transition:
        return Transition("ok")

    report = runtime_of(engine).run_step(iid, "a", 1, 1, ok)
    assert report.next_node == "b"
    next_key = enqueuer.queue_key("other", PRIORITY_CONTINUE)
    assert next_key == f"{key_prefix}:q:other"
    assert [json.loads(base64.b64decode(json.loads(m)["body"]))[0] for m in real_redis.lrange(next_key, 0, -1)] \
        == [[iid, "b", 2, 1]]

    assert runtime_of(engine).run_step(iid, "a", 1, 1, ok).outcome.value == "noop"  # a duplicate pushes nothing
    assert real_redis.llen(next_key) == 1

    engine.pause(iid)
    real_redis.delete(next_key)
    runtime_of(engine).run_step(iid, "b", 2, 1, ok)  # delivered while paused: skipped, nothing sent
    assert engine.get(iid).status is InstanceStatus.PAUSED and real_redis.llen(next_key) == 0
    engine.resume(iid)  # resume re-sends the step, through the same script
    assert engine.get(iid).status is InstanceStatus.RUNNING
    assert real_redis.llen(next_key) == 1


def test_the_store_writes_messages_only_when_the_broker_is_the_state_redis(celery_app: Celery,
                                                                          real_redis: redis.Redis,
                                                                          redis_url: str, key_prefix: str) -> None:
    celery_app.conf.tradeflow_redis_url = redis_url
    assert isinstance(enqueuer_for(celery_app), RedisQueueEnqueuer)
    celery_app.conf.broker_url = "amqp://guest@127.0.0.1:5672//"
    assert isinstance(enqueuer_for(celery_app), CeleryEnqueuer)
