"""The Celery app and the Engine, wired from :class:`engine.config.Settings`.

Workers run ``celery -A engine.worker worker -Q <service>``; the app is configured by
:func:`engine.celery_config.celery_config`, and binds one task per action of the service
modules (``TRADEFLOW_SERVICE_MODULES``, else the installed plugins').
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable

import redis
from celery import Celery

from engine.api import Engine
from engine.broker import CeleryEnqueuer, Enqueuer, RedisQueueEnqueuer
from engine.celery_config import celery_config
from engine.clock import make_clock
from engine.config import Settings
from engine.connections import client_for, is_sentinel, parse_sentinel_url, replica_wait, state_url
from engine.runtime.runner import Runtime
from engine.runtime.tasks import bind_tasks
from engine.service import registry
from engine.store.keys import Keys
from engine.store.redis_store import RedisStore


def redis_client(url: str, settings: Settings | None = None) -> redis.Redis:
    """A client with the timeouts and health checks a long-running worker wants.

    A ``sentinel://`` URL needs ``settings`` (the master's name; see engine.connections).
    """
    return client_for(settings or Settings(redis_url=url), url)


def sender_app(broker_url: str, broker_prefix: str = "", name: str = "tradeflow-sender") -> Celery:
    """A Celery app that only sends, configured like the workers, on ``broker_url`` under ``broker_prefix``.

    For tests and benchmarks that run a deployment of their own on a shared Redis: its queues
    live under the broker key prefix its workers were given (``TRADEFLOW_BROKER_PREFIX``).
    """
    app = Celery(name, set_as_current=False)
    app.config_from_object("celeryconfig")
    options = dict(app.conf.broker_transport_options or {})
    if broker_prefix:
        options["global_keyprefix"] = broker_prefix
    app.conf.update(broker_url=broker_url, broker_transport_options=options, task_send_sent_event=False)
    return app


def make_store(settings: Settings, url: str | None = None) -> RedisStore:
    """The store described by ``settings`` (on ``url`` when given)."""
    client = redis_client(url or state_url(settings), settings)
    return RedisStore(client, Keys(settings.key_prefix), settings.retention_seconds, replica_wait(settings))


def enqueuer_for(app: Celery, settings: Settings | None = None) -> Enqueuer:
    """Step messages written by the store's own scripts when the broker is the state's Redis; else Celery."""
    broker = (app.conf.broker_url or "").rstrip("/")
    state = app.conf.get("tradeflow_redis_url") or ""
    if broker in (state.rstrip("/"), parse_sentinel_url(state).kombu_url() if is_sentinel(state) else None):
        return RedisQueueEnqueuer.for_app(app, redis_client(state, settings))
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
                    runtime = Runtime(store, enqueuer_for(app, settings), make_clock(settings.clock_offset_file),
                                      epoch=app.conf.get("tradeflow_epoch") or store.ensure_epoch(),
                                      inline_steps=settings.inline_steps, drain_steps=settings.drain_steps,
                                      reconcile_seconds=settings.reconcile_seconds)
                    runtime.metrics.background = True  # a worker flushes its step metrics every 5 s
                    state.clear()
                    state[pid] = runtime
        return runtime

    return get


def create_app(settings: Settings | None = None, *, bind: bool = True, redis_url: str | None = None) -> Celery:
    """Build the Celery app (configured by :func:`engine.celery_config.celery_config`) and bind
    every action of the configured service modules.

    ``bind=False`` gives a light app that only sends messages (the CLI's).
    """
    settings = settings or Settings.from_env()
    app = Celery("tradeflow")
    # Not asked here (check=False): a worker started while Redis is down waits for it (Celery retries).
    app.conf.update(celery_config(settings, redis_url or state_url(settings, check=False)))
    if not bind:
        return app
    for module in app.conf.get("tradeflow_service_modules", []):
        importlib.import_module(module)
    bind_tasks(app, runtime_factory(app, settings), registry)
    return app


def build_engine(settings: Settings | None = None, *, allow_start: bool = False,
                 notice: Callable[[str], None] | None = None) -> Engine:
    """An Engine that sends steps through Celery, on the configured (or embedded) Redis.

    ``notice`` is told when the embedded Redis serves (see :func:`engine.ops.embedded.resolve_redis_url`).
    """
    settings = settings or Settings.from_env()
    url = state_url(settings, allow_start=allow_start, notice=notice)
    app = create_app(settings.with_redis(url), bind=False, redis_url=url)
    store = make_store(settings, url)
    return Engine(store, enqueuer_for(app, settings), make_clock(settings.clock_offset_file))
