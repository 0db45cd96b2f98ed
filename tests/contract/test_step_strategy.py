"""A step message run straight from its delivery, or by Celery's own strategy (engine.broker.step_strategy).

Against Celery's real ``Task.start_strategy`` and default strategy, and messages delivered by
kombu's Redis transport: a release that moves the strategy hook, the default strategy's needs
of its consumer or the message layout fails here, not in a worker. The consumer is the part of
Celery's ``Consumer`` that a strategy reads, recorded instead of acted on.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery
from celery.concurrency.solo import TaskPool as SoloPool
from celery.concurrency.thread import TaskPool as ThreadPool
from kombu import Connection

from engine.broker.step_strategy import STRATEGY
from tests.contract.kombu_delivery import deliver_one

QUEUE = "svc"


class Consumer(SimpleNamespace):
    """What a strategy reads of Celery's consumer; requests handed to the pool and ETA entries are recorded."""

    def __init__(self, pool: type, events: set[str] | None = None) -> None:
        self.requests: list[Any] = []
        self.scheduled: list[Any] = []
        super().__init__(
            hostname="contract@host", connection_errors=(), pool=pool.__new__(pool),
            event_dispatcher=SimpleNamespace(enabled=events is not None, groups=events, send=lambda *a, **k: None),
            timer=SimpleNamespace(call_at=lambda eta, fun, args, priority=0: self.scheduled.append(args)),
            apply_eta_task=lambda request: None, disable_rate_limits=True, task_buckets={},
            on_task_request=self.requests.append, _limit_task=None, _limit_post_eta=None,
            qos=SimpleNamespace(increment_eventually=lambda: None),
            controller=SimpleNamespace(state=SimpleNamespace(revoked=set())))


@pytest.fixture
def ran() -> list[Any]:
    return []


@pytest.fixture
def task(celery_app: Celery, ran: list[Any]) -> Any:
    """A step task as the engine binds it: its strategy the engine's."""

    def work(instance_id: str, node: str, seq: int, attempt: int) -> str:
        ran.append((instance_id, node, seq, attempt))
        if instance_id == "boom":
            raise RuntimeError("the step's own failure")
        return "applied"

    return celery_app.task(name="svc.work", ignore_result=True, Strategy=STRATEGY)(work)


def _handle(handler: Callable[..., Any], connection: Connection) -> Any:
    message = deliver_one(connection, QUEUE)
    handler(message, None, lambda logger, errors: message.ack_log_error(logger, errors),
            lambda logger, errors, requeue=False: message.reject_log_error(logger, errors, requeue), set())
    return message


def test_a_solo_worker_runs_a_step_message_straight_and_acks_it(
        celery_app: Celery, task: Any, connection: Connection, ran: list[Any]) -> None:
    consumer = Consumer(SoloPool, events={"worker"})  # heartbeats only, as tradeflow's workers send
    handler = task.start_strategy(celery_app, consumer)
    celery_app.send_task("svc.work", args=["i1", "a", 2, 1], queue=QUEUE)
    message = _handle(handler, connection)
    assert ran == [("i1", "a", 2, 1)] and message.acknowledged
    assert consumer.requests == []  # no Celery request was made of it
    celery_app.send_task("svc.work", args=["boom", "a", 1, 1], queue=QUEUE)
    failed = _handle(handler, connection)
    assert ran[-1] == ("boom", "a", 1, 1) and failed.acknowledged  # acked after a failure, as acks_late does


def test_a_message_with_an_eta_goes_through_celerys_own_strategy(
        celery_app: Celery, task: Any, connection: Connection, ran: list[Any]) -> None:
    consumer = Consumer(SoloPool)
    handler = task.start_strategy(celery_app, consumer)
    celery_app.send_task("svc.work", args=["i1", "a", 2, 1], queue=QUEUE, countdown=60)
    message = _handle(handler, connection)
    assert ran == [] and not message.acknowledged
    [(request,)] = consumer.scheduled  # Celery's ETA timer holds its request
    assert request.name == "svc.work" and request.args == ["i1", "a", 2, 1]
    message.ack()


def test_task_events_and_other_pools_keep_celerys_own_strategy(
        celery_app: Celery, task: Any, connection: Connection, ran: list[Any]) -> None:
    events_on = Consumer(SoloPool, events={"worker", "task"})
    threads = Consumer(ThreadPool)
    for consumer in (events_on, threads):
        handler = task.start_strategy(celery_app, consumer)
        celery_app.send_task("svc.work", args=["i1", "a", 2, 1], queue=QUEUE)
        message = _handle(handler, connection)
        assert ran == [] and [r.args for r in consumer.requests] == [["i1", "a", 2, 1]]
        message.ack()
    # Flower turning task events on in a running worker (its enable_events adds the group): Celery's from then on
    quiet = Consumer(SoloPool, events={"worker"})
    handler = task.start_strategy(celery_app, quiet)
    quiet.event_dispatcher.groups.add("task")
    celery_app.send_task("svc.work", args=["i1", "a", 2, 1], queue=QUEUE)
    message = _handle(handler, connection)
    assert ran == [] and len(quiet.requests) == 1
    message.ack()
