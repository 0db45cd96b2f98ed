"""A delivered step run straight from its message in a ``solo`` worker (Celery's ``Task.Strategy`` hook).

Written against celery 5.7.0. For every message Celery's default strategy
(``celery.worker.strategy.default``) builds a ``Request`` (its id, name, argument reprs, time
limits, the ack and reject callbacks), logs it at INFO, checks revocations and expiry, counts it
among the worker's reserved and active requests, hands it to the pool, and the pool runs it
through the tracer (``celery.app.trace``: the task's request context, its state and result, the
task signals, the log line of its outcome). An engine step needs none of that: its task returns
nothing (``ignore_result``), the engine records its start, outcome, retries and timeout itself,
and a ``solo`` pool runs it right there, in the thread that consumed it. So where a ``solo``
worker sends no task events, a step message with no ETA and no expiry, not revoked, is run
directly: its arguments decoded, the step function called, the message acked (after the step,
as ``task_acks_late`` does, also when it raised: the engine's own recovery takes over, as it does
after Celery's tracer acks a failed task).

Everything else goes through Celery's own strategy, unchanged: a worker with task events on
(``TRADEFLOW_EVENTS=1``, ``-E``, or turned on while it runs, as ``flower`` does when it starts:
looked at per message, so Flower then sees every step), a ``prefork`` or ``threads`` pool, a
message with an ETA, a countdown or an expiry, a revoked id, a protocol-1 message, and every
message when ``TRADEFLOW_STRAIGHT_STEPS=0`` (the step tasks then keep Celery's strategy).

What a run straight from its message does not do: appear in ``celery inspect active`` or
``reserved`` while it runs (the console's and ``tradeflow inspect``'s view of running steps is
the engine's own), send the task signals, log Celery's INFO lines of each task. An unexpected
error escaping a step is logged with its traceback, as Celery's tracer would.
``tests/contract/test_step_strategy.py`` fails when Celery's layout moves.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: Task.Strategy of an engine step task.
STRATEGY = "engine.broker.step_strategy:step_strategy"


def straight(consumer: Any, task: Any) -> bool:
    """True when ``consumer`` runs ``task``'s messages straight: a solo pool, no task events, no rate limit."""
    from engine.broker.kombu_riders import rides_in

    return rides_in(type(consumer.pool)) and not task_events(consumer, task) and not getattr(task, "rate_limit", None)


def task_events(consumer: Any, task: Any) -> bool:
    """True when ``consumer`` sends ``task``'s events (``-E``, ``worker_send_task_events``), as Celery's
    default strategy decides (its dispatcher may be on for the worker's heartbeats only)."""
    eventer = getattr(consumer, "event_dispatcher", None)
    groups = getattr(eventer, "groups", None)
    return bool(eventer and eventer.enabled and task.send_events and (groups is None or "task" in groups))


def step_strategy(task: Any, app: Any, consumer: Any, **options: Any) -> Callable[..., Any]:
    """Celery's strategy for an engine step task: run straight from the message where :func:`straight`
    holds, else (and for any message it cannot take) Celery's default strategy."""
    from celery.worker.strategy import default

    fallback = default(task, app, consumer, **options)
    if not straight(consumer, task):
        return fallback
    revoked = consumer.controller.state.revoked
    connection_errors = consumer.connection_errors
    run = task.run

    def handler(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kwargs: Any) -> Any:
        headers = message.headers or {}
        if body is not None or callbacks or headers.get("eta") or headers.get("expires") \
                or headers.get("id") in revoked or task_events(consumer, task):  # Flower may turn events on
            return fallback(message, body, ack, reject, callbacks, **kwargs)
        try:
            payload = message.decode()
        except Exception:  # not a body this worker accepts: Celery's strategy says why and rejects it
            return fallback(message, body, ack, reject, callbacks, **kwargs)
        if not isinstance(payload, list | tuple) or len(payload) != 3:  # not protocol 2
            return fallback(message, body, ack, reject, callbacks, **kwargs)
        args, task_kwargs = payload[0], payload[1]
        try:
            run(*args, **task_kwargs)
        except Exception:
            log.exception("step task %s[%s] raised", task.name, headers.get("id"))
        finally:
            ack(log, connection_errors)  # Celery's own ack of the delivery (on the event loop, as a Request's)
        return None

    return handler


__all__ = ["STRATEGY", "step_strategy", "straight", "task_events"]
