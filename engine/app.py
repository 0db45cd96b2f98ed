"""The Celery app: configuration from ``celeryconfig``, one task per registered action.

Workers run ``celery -A engine.worker worker -Q <service>``; the service modules to load
come from ``TRADEFLOW_SERVICE_MODULES`` (comma separated; see ``celeryconfig.py``).
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable

import redis
from celery import Celery

from engine.api import Engine
from engine.clock import make_clock
from engine.config import Settings
from engine.embedded import resolve_redis_url
from engine.keys import Keys
from engine.messages import CeleryEnqueuer, Enqueuer
from engine.redis_queue import RedisQueueEnqueuer
from engine.runtime import Runtime
from engine.service import registry
from engine.store import RedisStore
from engine.tasks import bind_tasks


def redis_client(url: str) -> redis.Redis:
    """A client with the timeouts and health checks a long-running worker wants."""
    return redis.Redis.from_url(url, socket_timeout=30, socket_connect_timeout=5, health_check_interval=30,
                                retry_on_timeout=True)


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
    client = redis_client(url or resolve_redis_url(settings))
    return RedisStore(client, Keys(settings.key_prefix), settings.retention_seconds)


def enqueuer_for(app: Celery, store: RedisStore) -> Enqueuer:
    """Step messages written by the store's own scripts when the broker is the state's Redis; else Celery."""
    broker = app.conf.broker_url or ""
    if broker.rstrip("/") == (app.conf.get("tradeflow_redis_url") or "").rstrip("/"):
        return RedisQueueEnqueuer.for_app(app, store.client)
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
                    runtime = Runtime(store, enqueuer_for(app, store), make_clock(settings.clock_offset_file),
                                      epoch=app.conf.get("tradeflow_epoch") or store.ensure_epoch(),
                                      inline_steps=settings.inline_steps)
                    runtime.metrics.background = True  # a worker flushes its step metrics every 5 s
                    state.clear()
                    state[pid] = runtime
        return runtime

    return get


def create_app(config_module: str = "celeryconfig", settings: Settings | None = None, *,
               bind: bool = True) -> Celery:
    """Build the Celery app and bind every action of the configured service modules.

    ``bind=False`` gives a light app that only sends messages (the CLI's).
    """
    settings = settings or Settings.from_env()
    app = Celery("tradeflow")
    app.config_from_object(config_module)
    if not bind:
        return app
    for module in app.conf.get("tradeflow_service_modules", []):
        importlib.import_module(module)
    bind_tasks(app, runtime_factory(app, settings), registry)
    return app


def build_engine(settings: Settings | None = None, *, allow_start: bool = False) -> Engine:
    """An Engine that sends steps through Celery, on the configured (or embedded) Redis."""
    settings = settings or Settings.from_env()
    url = resolve_redis_url(settings, allow_start=allow_start)
    os.environ["TRADEFLOW_REDIS_URL"] = url  # celeryconfig, and any worker we spawn, use the same Redis
    app = create_app(bind=False, settings=settings.with_redis(url))
    app.conf.update(broker_url=settings.broker_url or url, tradeflow_redis_url=url)
    store = make_store(settings, url)
    return Engine(store, enqueuer_for(app, store), make_clock(settings.clock_offset_file))
