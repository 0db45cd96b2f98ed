"""Draining a deep queue: a worker takes waiting steps off its service's queue after a delivered one.

Taken in kombu's delivery order (priority lists first, oldest first), messages the worker
does not run given back where they were, each step taken run once with its own record, and
what is not started within the hold time (or when an error stops the batch) given back.
"""

from __future__ import annotations

import json
from typing import Any

import fakeredis
import pytest
import redis
from celery import Celery

from engine.api import Engine
from engine.app import sender_app
from engine.broker import PRIORITY_CONTINUE, PRIORITY_START, MemoryEnqueuer, RedisQueueEnqueuer, StepMessage
from engine.definitions.validation import load_definition
from engine.instance import InstanceStatus, Outcome
from engine.runtime.concerns.draining import IDLE_PAUSE_SECONDS, Drain
from engine.service import Transition
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.testing import runtime_of, store_of

ONE_STEP = {
    "name": "one-step",
    "start": "work",
    "nodes": {
        "work": {"type": "service", "service": "svc", "action": "work", "input": {}, "transitions": {"ok": "done"}},
        "done": {"type": "terminal", "status": "succeeded"},
    },
}


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _message(iid: str, task: str = "svc.work") -> StepMessage:
    return StepMessage(task, "svc", iid, "work", 1, 1)


@pytest.fixture
def queue() -> RedisQueueEnqueuer:
    return RedisQueueEnqueuer(fakeredis.FakeRedis(), "p:")


def _steps(drain: Drain, accepts: Any = lambda task: True) -> list[str]:
    out = []
    while (item := drain.take("svc", accepts)) is not None:
        assert item.step is not None
        out.append(item.step[0])
    return out


def test_steps_are_taken_in_delivery_order(queue: RedisQueueEnqueuer) -> None:
    for i in range(2):
        queue.enqueue(_message(f"late{i}"), PRIORITY_START)
    for i in range(3):
        queue.enqueue(_message(f"first{i}"), PRIORITY_CONTINUE)
    assert _steps(Drain(queue, limit=5, clock=Clock())) == ["first0", "first1", "first2", "late0", "late1"]
    assert all(queue.client.llen(key) == 0 for key in queue.queue_keys("svc"))


def test_a_message_the_worker_does_not_run_goes_back_and_stops_the_draining(queue: RedisQueueEnqueuer) -> None:
    queue.enqueue(_message("a"))
    queue.enqueue(_message("b", task="svc.gather:batch"))
    queue.enqueue(_message("c"))
    drain = Drain(queue, limit=10, clock=Clock())
    assert _steps(drain, lambda task: task == "svc.work") == ["a"]
    key = queue.queue_key("svc", PRIORITY_CONTINUE)
    left = [queue.client.rpop(key) for _ in range(queue.client.llen(key))]  # kombu's order: BRPOP
    assert "svc.gather:batch" in left[0].decode() and "'c'" in left[1].decode()
    queue.client.lpush(key, "not a task message")
    while queue.client.llen(key) > 1:
        queue.client.rpop(key)
    assert _steps(drain) == [] and queue.client.lrange(key, 0, -1) == [b"not a task message"]


def test_an_empty_queue_is_not_looked_at_again_for_a_while(queue: RedisQueueEnqueuer) -> None:
    clock = Clock()
    drain = Drain(queue, limit=4, clock=clock)
    assert drain.take("svc", lambda task: True) is None
    queue.enqueue(_message("a"))
    assert drain.take("svc", lambda task: True) is None  # pausing: not even asked
    assert queue.client.llen(queue.queue_key("svc", PRIORITY_CONTINUE)) == 1
    clock.now += IDLE_PAUSE_SECONDS + 0.01
    assert _steps(drain) == ["a"]


def test_a_woken_drain_looks_at_an_empty_queue_again_at_once(queue: RedisQueueEnqueuer) -> None:
    drain = Drain(queue, limit=4, clock=Clock())
    assert drain.take("svc", lambda task: True) is None
    queue.enqueue(_message("a"))
    drain.wake()  # the clock has not moved
    assert _steps(drain) == ["a"]


def test_draining_is_off_with_a_limit_of_zero_or_a_broker_it_cannot_read(queue: RedisQueueEnqueuer) -> None:
    queue.enqueue(_message("a"))
    assert Drain(queue, limit=0).take("svc", lambda task: True) is None
    assert Drain(MemoryEnqueuer(), limit=8).take("svc", lambda task: True) is None
    assert queue.client.llen(queue.queue_key("svc", PRIORITY_CONTINUE)) == 1


# -- with the runtime, on the real Redis --------------------------------------------------------

@pytest.fixture
def celery_app(redis_url: str, key_prefix: str) -> Celery:
    return sender_app(redis_url, f"{key_prefix}:q:", "drain-test")


def _engine(celery_app: Celery, real_redis: redis.Redis, key_prefix: str, limit: int) -> Engine:
    enqueuer = RedisQueueEnqueuer.for_app(celery_app, real_redis)
    engine = Engine(RedisStore(real_redis, Keys(key_prefix)), enqueuer)
    runtime_of(engine).drain = Drain(enqueuer, limit)
    engine.publish(load_definition(json.dumps(ONE_STEP)))
    return engine


def test_each_step_taken_runs_once_with_its_own_record(celery_app: Celery, real_redis: redis.Redis,
                                                       key_prefix: str) -> None:
    engine = _engine(celery_app, real_redis, key_prefix, limit=4)
    ids = engine.start_many("one-step", [{} for _ in range(6)])
    calls: list[Any] = []

    def work(node: Any, payload: Any) -> Transition:
        calls.append(payload)
        assert store_of(engine).queued_count() == 6 - len(calls)  # started before it runs: no longer queued
        return Transition("ok")

    assert runtime_of(engine).after_delivery("svc", lambda task: task == "svc.work", work, None) == 4
    assert len(calls) == 4
    done = [engine.get(iid) for iid in ids]
    assert [i.status for i in done].count(InstanceStatus.SUCCEEDED) == 4
    for instance in done:
        if instance.status is InstanceStatus.SUCCEEDED:
            assert [a["outcome"] for a in engine.activities(instance.id)] == [Outcome.STARTED.value,
                                                                             Outcome.APPLIED.value]
    assert runtime_of(engine).enqueuer.count(["svc"]) == 2  # the other two still wait in the queue


def test_an_error_leaves_the_steps_not_taken_in_the_queue(celery_app: Celery, real_redis: redis.Redis,
                                                          key_prefix: str) -> None:
    engine = _engine(celery_app, real_redis, key_prefix, limit=3)
    engine.start_many("one-step", [{} for _ in range(3)])

    def stopping(node: Any, payload: Any) -> Transition:
        raise KeyboardInterrupt  # the worker is being stopped while it runs the first one

    with pytest.raises(KeyboardInterrupt):
        runtime_of(engine).after_delivery("svc", lambda task: True, stopping, None)
    assert runtime_of(engine).enqueuer.count(["svc"]) == 2
    assert store_of(engine).queued_count() == 2  # the one in hand was started: its deadline covers it
