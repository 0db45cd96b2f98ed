"""Celery tasks: one per registered service action, plus the engine's own.

Every task carries only ``(instance_id, node, seq, attempt)``; the runtime does the rest.
A task runs its step through the runtime's pipeline (:mod:`engine.runtime.pipeline`), then lets
the concerns run more steps here (``after_delivery``: draining a deep queue,
:mod:`engine.runtime.concerns.draining`).
Tasks are bound to an app by :func:`bind_tasks` (called by :func:`engine.app.create_app`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from engine.definitions.model import GatherNode, HttpNode, ServiceNode, StepNode
from engine.runtime.concerns.inline import inline_rule
from engine.runtime.gather import batch_task
from engine.runtime.http import call_http
from engine.runtime.pipeline import patiently
from engine.runtime.routing import HTTP_TASK, SWEEP_TASK, TICK_TASK
from engine.runtime.runner import Runtime
from engine.service import ActionRegistry, ActionSpec, Transition

log = logging.getLogger(__name__)


def bind_tasks(app: Any, runtime: Callable[[], Runtime], registry: ActionRegistry) -> None:
    """Create the Celery tasks of every action in ``registry`` and of the engine on ``app``."""
    for spec in registry:
        _bind_action(app, runtime, spec, registry)
    for service in sorted({spec.service for spec in registry}):
        _bind_batch(app, runtime, service, registry)

    @app.task(name=HTTP_TASK, ignore_result=True)
    def http_step(instance_id: str, node: str, seq: int, attempt: int) -> str:
        def execute(n: StepNode, payload: Any) -> Transition:
            assert isinstance(n, HttpNode)
            return call_http(n, payload)

        return str(patiently(lambda: runtime().run_step(instance_id, node, seq, attempt, execute)).outcome)

    # The periodic tasks send no task events (send_events=False), so Flower's task list shows
    # the steps, not a tick every second; beat sends no task-sent events (engine.worker).
    @app.task(name=TICK_TASK, ignore_result=True, send_events=False)
    def tick() -> int:
        return int(patiently(lambda: runtime().tick()))

    @app.task(name=SWEEP_TASK, ignore_result=True, send_events=False)
    def sweep() -> int:
        swept = int(patiently(lambda: runtime().sweep()))
        return swept + int(patiently(lambda: runtime().reconcile(runtime().reconcile_seconds)))


def hosted_services(app: Any) -> frozenset[str]:
    """The services whose queues this worker consumes (``celery worker -Q a,b``); empty outside a worker."""
    try:
        return frozenset(str(name) for name in app.amqp.queues.consume_from or ())
    except Exception:  # not a worker, or an app without queues: the same service inline only
        return frozenset()


def _bind_action(app: Any, runtime: Callable[[], Runtime], spec: ActionSpec, registry: ActionRegistry) -> None:
    inline = inline_rule(spec.service, registry, lambda: hosted_services(app))
    own_tasks = frozenset(other.task_name for other in registry if other.service == spec.service)

    def execute(node: StepNode, payload: Any) -> Transition:
        assert isinstance(node, ServiceNode)
        return registry.get(node.service, node.action).call(payload)

    def step(instance_id: str, node: str, seq: int, attempt: int) -> str:
        report = patiently(lambda: runtime().run_step(instance_id, node, seq, attempt, execute, inline))
        runtime().after_delivery(spec.service, own_tasks.__contains__, execute, inline)
        return str(report.outcome)

    step.__name__ = step.__qualname__ = spec.task_name.replace(".", "_")
    step.__doc__ = spec.fn.__doc__
    app.task(name=spec.task_name, ignore_result=True)(step)


def _bind_batch(app: Any, runtime: Callable[[], Runtime], service: str, registry: ActionRegistry) -> None:
    """The task running the batch steps of ``service``'s gather nodes: ``<service>.gather:batch``."""

    def execute(node: GatherNode, payload: dict[str, Any]) -> Any:
        return registry.get(node.service, node.action).invoke(payload)

    def batch_step(batch_id: str, node: str, seq: int, attempt: int) -> str:
        return str(patiently(lambda: runtime().gatherer.run_batch(batch_id, attempt, execute)))

    batch_step.__name__ = batch_step.__qualname__ = f"{service}_gather_batch"
    batch_step.__doc__ = f"The batch step of {service}'s gather nodes (one per closed batch)."
    app.task(name=batch_task(service), ignore_result=True)(batch_step)
