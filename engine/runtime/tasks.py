"""Celery tasks: one per registered service action, plus the engine's own.

Every task carries only ``(instance_id, node, seq, attempt)``; the runtime does the rest.
After its step, an action's task takes more waiting steps off its service's queue when the
queue is deep and runs them too (:mod:`engine.runtime.drain`).
Tasks are bound to an app by :func:`bind_tasks` (called by :func:`engine.app.create_app`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis

from engine.definitions.model import GatherNode, HttpNode, Node, ServiceNode, StepNode
from engine.errors import DataSetLost
from engine.runtime.gather import batch_task
from engine.runtime.http import call_http
from engine.runtime.messages import HTTP_TASK, SWEEP_TASK, TICK_TASK
from engine.runtime.runner import Execute, Inline, Runtime
from engine.service import ActionRegistry, ActionSpec, Transition

log = logging.getLogger(__name__)

#: How long a step keeps trying to reach Redis before giving the message back.
REDIS_PATIENCE_SECONDS = 120.0


def _patiently(fn: Callable[[], Any]) -> Any:
    """Run ``fn``, retrying while Redis is unreachable (it is idempotent: every write is a CAS)."""
    delay, waited = 0.5, 0.0
    while True:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
            if waited >= REDIS_PATIENCE_SECONDS:
                raise
            log.warning("Redis unreachable (%s); retrying in %.1fs", exc, delay)
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 5.0)
        except DataSetLost as exc:
            log.critical("%s", exc)
            raise


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

        return str(_patiently(lambda: runtime().run_step(instance_id, node, seq, attempt, execute)).outcome)

    # The periodic tasks send no task events (send_events=False), so Flower's task list shows
    # the steps, not a tick every second; beat sends no task-sent events (engine.worker).
    @app.task(name=TICK_TASK, ignore_result=True, send_events=False)
    def tick() -> int:
        return int(_patiently(lambda: runtime().tick()))

    @app.task(name=SWEEP_TASK, ignore_result=True, send_events=False)
    def sweep() -> int:
        swept = int(_patiently(lambda: runtime().sweep()))
        swept += int(_patiently(lambda: runtime().reconcile(runtime().reconcile_seconds)))
        return swept + int(_patiently(lambda: runtime().housekeep()))


def hosted_services(app: Any) -> frozenset[str]:
    """The services whose queues this worker consumes (``celery worker -Q a,b``); empty outside a worker."""
    try:
        return frozenset(str(name) for name in app.amqp.queues.consume_from or ())
    except Exception:  # not a worker, or an app without queues: the same service inline only
        return frozenset()


def inline_rule(service: str, registry: ActionRegistry, hosted: Callable[[], frozenset[str]]) -> Inline:
    """Which next steps a worker of ``service`` runs itself, without a broker hop.

    A step whose action this worker has, of the same service always; of another service when
    this worker also consumes that service's queue (``hosted``, asked once): one fleet hosting
    several services runs an instance's whole chain in one task.
    """
    found: dict[str, frozenset[str]] = {}

    def inline(node: Node) -> bool:
        if not isinstance(node, ServiceNode) or f"{node.service}.{node.action}" not in registry:
            return False
        if node.service == service:
            return True
        if "services" not in found:
            found["services"] = hosted()
        return node.service in found["services"]

    return inline


def run_drained(runtime: Runtime, queue: str, accepts: Callable[[str], bool], execute: Execute,
                inline: Inline | None) -> int:
    """Take waiting steps of ``queue`` that this worker runs (``accepts`` their task) one at a time
    and run each like a delivered one, up to the drain's limit and within the inline time budget;
    returns how many ran."""
    drain = runtime.drain
    until = time.monotonic() + runtime.inline_seconds
    ran = 0
    while ran < drain.limit and time.monotonic() < until:
        item = _patiently(lambda: drain.take(queue, accepts))
        if item is None:
            break
        assert item.step is not None  # take() returns step messages only
        _patiently(lambda step=item.step: runtime.run_step(*step, execute, inline))
        ran += 1
    return ran


def _bind_action(app: Any, runtime: Callable[[], Runtime], spec: ActionSpec, registry: ActionRegistry) -> None:
    inline = inline_rule(spec.service, registry, lambda: hosted_services(app))
    own_tasks = frozenset(other.task_name for other in registry if other.service == spec.service)

    def execute(node: StepNode, payload: Any) -> Transition:
        assert isinstance(node, ServiceNode)
        return registry.get(node.service, node.action).call(payload)

    def step(instance_id: str, node: str, seq: int, attempt: int) -> str:
        report = _patiently(lambda: runtime().run_step(instance_id, node, seq, attempt, execute, inline))
        run_drained(runtime(), spec.service, own_tasks.__contains__, execute, inline)
        return str(report.outcome)

    step.__name__ = step.__qualname__ = spec.task_name.replace(".", "_")
    step.__doc__ = spec.fn.__doc__
    app.task(name=spec.task_name, ignore_result=True)(step)


def _bind_batch(app: Any, runtime: Callable[[], Runtime], service: str, registry: ActionRegistry) -> None:
    """The task running the batch steps of ``service``'s gather nodes: ``<service>.gather:batch``."""

    def execute(node: GatherNode, payload: dict[str, Any]) -> Any:
        return registry.get(node.service, node.action).invoke(payload)

    def batch_step(batch_id: str, node: str, seq: int, attempt: int) -> str:
        return str(_patiently(lambda: runtime().gatherer.run_batch(batch_id, attempt, execute)))

    batch_step.__name__ = batch_step.__qualname__ = f"{service}_gather_batch"
    batch_step.__doc__ = f"The batch step of {service}'s gather nodes (one per closed batch)."
    app.task(name=batch_task(service), ignore_result=True)(batch_step)
