"""The Celery app and the Engine, wired from :class:`engine.config.Settings`.

Workers run ``celery -A engine.worker worker -Q <service>``; the app is configured by
:func:`engine.celery_config.celery_config`, and binds one task per action of the service
modules (``TRADEFLOW_SERVICE_MODULES``, else the installed plugins').

The tasks (:func:`bind_tasks`): one per registered service action, plus the engine's own. Every
task carries only ``(instance_id, node, seq, attempt)``; the runtime does the rest. A task runs
its step through the runtime's pipeline (:mod:`engine.runtime.pipeline`) with this process's
runtime (:func:`runtime_factory`), then lets the concerns run more steps here
(``after_delivery``: draining a deep queue, :mod:`engine.runtime.concerns.draining`).
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery

from engine.api import Engine
from engine.broker import CeleryEnqueuer, Enqueuer, RedisQueueEnqueuer, kombu_riders
from engine.broker.redis_queue import step_args
from engine.broker.step_strategy import STRATEGY as STRAIGHT_STRATEGY
from engine.celery_config import celery_config
from engine.clock import make_clock
from engine.config import Settings
from engine.connections import client_for, is_sentinel, kombu_url, parse_sentinel_url, replica_wait, state_url
from engine.definitions.nodes import GatherNode, HttpNode, ServiceNode, StepNode
from engine.runtime.concerns.inline import inline_rule
from engine.runtime.concerns.limits import Limits
from engine.runtime.gather import batch_task
from engine.runtime.http import call_http
from engine.runtime.pipeline import patiently
from engine.runtime.routing import ENGINE_QUEUE, HTTP_TASK, SWEEP_TASK, TICK_TASK, WAKE_TASK
from engine.runtime.runner import Runtime
from engine.service import ActionRegistry, ActionSpec, Transition, registry
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore
from engine.store.riders import Rider


def redis_client(url: str, settings: Settings | None = None) -> redis.Redis:
    """A client with the timeouts and health checks a long-running worker wants.

    A ``sentinel://`` URL needs ``settings`` (the master's name; see engine.connections).
    """
    return client_for(settings or Settings(redis_url=url), url)


def sender_app(broker_url: str, broker_prefix: str = "", name: str = "tradeflow-sender",
               settings: Settings | None = None) -> Celery:
    """A Celery app that only sends, configured like the workers, on ``broker_url`` under ``broker_prefix``.

    For tests and benchmarks that run a deployment of their own on a shared Redis: its queues
    live under the broker key prefix its workers were given (``TRADEFLOW_BROKER_PREFIX``).
    ``settings``: the deployment's (default: the defaults; nothing here reads the environment).
    """
    settings = settings or Settings()
    app = Celery(name, set_as_current=False)
    app.conf.update(celery_config(settings, settings.redis_url))
    options = dict(app.conf.broker_transport_options or {})
    if broker_prefix:
        options["global_keyprefix"] = broker_prefix
    app.conf.update(broker_url=kombu_url(broker_url), broker_transport_options=options, task_send_sent_event=False)
    return app


def make_store(settings: Settings, url: str | None = None, client: redis.Redis | None = None) -> RedisStore:
    """The store described by ``settings`` (on ``url`` when given; through ``client``, the process's, when given)."""
    client = client or redis_client(url or state_url(settings), settings)
    return RedisStore(client, Keys(settings.key_prefix), settings.retention_seconds, replica_wait(settings))


def enqueuer_for(app: Celery, settings: Settings | None = None, client: redis.Redis | None = None) -> Enqueuer:
    """Step messages written by the store's own scripts when the broker is the state's Redis; else Celery.

    ``client``: the process's client of the state's Redis (the store's), so that one process
    role holds one client; without it, one is made.
    """
    broker = (app.conf.broker_url or "").rstrip("/")
    state = app.conf.get("tradeflow_redis_url") or ""
    if broker in (kombu_url(state).rstrip("/"), parse_sentinel_url(state).kombu_url() if is_sentinel(state) else None):
        return RedisQueueEnqueuer.for_app(app, client or redis_client(state, settings))
    return CeleryEnqueuer(app)


def runtime_factory(app: Celery, settings: Settings) -> Callable[[], Runtime]:
    """A per-process runtime, created lazily (after a prefork worker has forked)."""
    state: dict[int, Runtime] = {}
    lock = threading.Lock()

    def get() -> Runtime:
        pid = os.getpid()
        runtime = state.get(pid)
        if runtime is None:
            with lock:
                runtime = state.get(pid)
                if runtime is None:
                    store = make_store(settings, app.conf.tradeflow_redis_url)
                    runtime = Runtime(store, enqueuer_for(app, settings, store.client),
                                      make_clock(settings.clock_offset_file),
                                      epoch=app.conf.get("tradeflow_epoch") or store.ensure_epoch(),
                                      inline_steps=settings.inline_steps, drain_steps=settings.drain_steps,
                                      drain_batch=settings.drain_batch,
                                      reconcile_seconds=settings.reconcile_seconds)
                    runtime.metrics.background = True  # a worker flushes its step metrics every 5 s
                    runtime.keep_alive()  # this process's liveness mark, before its first step
                    limits = runtime.hook(Limits)
                    if isinstance(limits, Limits):  # a parked step is woken when its time comes, not at the next tick
                        limits.waker = lambda countdown: app.send_task(
                            WAKE_TASK, countdown=countdown, queue=ENGINE_QUEUE, ignore_result=True)
                    state.clear()
                    state[pid] = runtime
        return runtime

    return get


def create_app(settings: Settings, *, bind: bool = True, redis_url: str | None = None) -> Celery:
    """Build the Celery app (configured by :func:`engine.celery_config.celery_config`) and bind
    every action of the configured service modules.

    ``settings`` are read at the edge (the worker bootstrap, the CLI) and passed in.
    ``bind=False`` gives a light app that only sends messages (the CLI's).
    """
    app = Celery("tradeflow")
    # Not asked here (check=False): a worker started while Redis is down waits for it (Celery retries).
    app.conf.update(celery_config(settings, redis_url or state_url(settings, check=False)))
    if not bind:
        return app
    for module in app.conf.get("tradeflow_service_modules", []):
        importlib.import_module(module)
    runtime = runtime_factory(app, settings)
    bind_tasks(app, runtime, registry, straight=settings.straight_steps)
    #: What the worker gives kombu_riders (solo pool): the start of a delivered step task.
    app.tradeflow_delivery_starts = delivery_starts(runtime, frozenset(spec.task_name for spec in registry))
    return app


def delivery_starts(runtime: Callable[[], Runtime], tasks: frozenset[str]) -> kombu_riders.Starts:
    """The start of a delivered message of one of ``tasks`` (service action tasks), sent as the
    delivery's bookkeeping (:mod:`engine.broker.kombu_riders`), with what drops its kept reply; None for
    other messages, or when the broker is not the state's Redis. The carrier is the one
    :meth:`~engine.runtime.pipeline.Pipeline.run_step` records; ``now`` is read when it is sent."""

    def starts(task: str, args: Any) -> tuple[Rider, Callable[[], None]] | None:
        step = step_args(args) if task in tasks else None
        if step is None:
            return None
        current = runtime()
        if not isinstance(current.enqueuer, RedisQueueEnqueuer):  # the broker is another Redis
            return None
        instance_id, node, seq, attempt = step
        carrier = current.carrier(node, seq, attempt)
        store = current.store
        return (store.start_rider(instance_id, node, seq, attempt, current.clock, carrier),
                lambda: store.forget_start(instance_id, node, seq, attempt, carrier))

    return starts


def build_engine(settings: Settings, *, allow_start: bool = False, notice: Callable[[str], None] | None = None,
                 client: redis.Redis | None = None) -> Engine:
    """An Engine that sends steps through Celery, on the configured (or embedded) Redis.

    ``settings`` are read at the edge and passed in. ``notice`` is told when the embedded Redis
    serves (see :func:`engine.ops.embedded.resolve_redis_url`). ``client``: the process's client of
    that Redis (the console's), used by the store and the broker alike; without it, one is made.
    """
    url = state_url(settings, allow_start=allow_start, notice=notice)
    app = create_app(settings.with_redis(url), bind=False, redis_url=url)
    store = make_store(settings, url, client)
    return Engine(store, enqueuer_for(app, settings, store.client), make_clock(settings.clock_offset_file))


# -- the tasks -----------------------------------------------------------------------------------


def bind_tasks(app: Any, runtime: Callable[[], Runtime], registry: ActionRegistry, straight: bool = False) -> None:
    """Create the Celery tasks of every action in ``registry`` and of the engine on ``app`` (``straight``: a
    ``solo`` worker runs their messages straight, :mod:`engine.broker.step_strategy`)."""
    for spec in registry:
        _bind_action(app, runtime, spec, registry, straight)
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
        moved = int(patiently(lambda: runtime().tick()))
        patiently(lambda: woken(runtime()))
        return moved

    @app.task(name=WAKE_TASK, ignore_result=True, send_events=False)
    def wake() -> int:
        moved = int(patiently(lambda: runtime().tick(concerns=False)))
        patiently(lambda: woken(runtime()))
        return moved

    @app.task(name=SWEEP_TASK, ignore_result=True, send_events=False)
    def sweep() -> int:
        swept = int(patiently(lambda: runtime().sweep()))
        return swept + int(patiently(lambda: runtime().reconcile(runtime().reconcile_seconds)))


def woken(runtime: Runtime) -> bool:
    """After the timers were woken: ask for an early wake when the next one is due before the next tick."""
    limits = runtime.hook(Limits)
    return isinstance(limits, Limits) and limits.woken(runtime)


def hosted_services(app: Any) -> frozenset[str]:
    """The services whose queues this worker consumes (``celery worker -Q a,b``); empty outside a worker."""
    try:
        return frozenset(str(name) for name in app.amqp.queues.consume_from or ())
    except Exception:  # not a worker, or an app without queues: the same service inline only
        return frozenset()


def _bind_action(app: Any, runtime: Callable[[], Runtime], spec: ActionSpec, registry: ActionRegistry,
                 straight: bool) -> None:
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
    # a solo worker runs a step message straight, without Celery's request machinery (engine.broker.step_strategy)
    options = {"Strategy": STRAIGHT_STRATEGY} if straight else {}
    app.task(name=spec.task_name, ignore_result=True, **options)(step)


def _bind_batch(app: Any, runtime: Callable[[], Runtime], service: str, registry: ActionRegistry) -> None:
    """The task running the batch steps of ``service``'s gather nodes: ``<service>.gather:batch``."""

    def execute(node: GatherNode, payload: dict[str, Any]) -> Any:
        return registry.get(node.service, node.action).invoke(payload)

    def batch_step(batch_id: str, node: str, seq: int, attempt: int) -> str:
        return str(patiently(lambda: runtime().gatherer.run_batch(batch_id, attempt, execute)))

    batch_step.__name__ = batch_step.__qualname__ = f"{service}_gather_batch"
    batch_step.__doc__ = f"The batch step of {service}'s gather nodes (one per closed batch)."
    app.task(name=batch_task(service), ignore_result=True)(batch_step)
