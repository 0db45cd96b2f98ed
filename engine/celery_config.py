"""Celery's configuration and beat schedule, assembled from :class:`engine.config.Settings`.

Nothing here reads the environment: ``celeryconfig.py`` (what ``celery -A engine.worker``
loads) and :func:`engine.app.create_app` call :func:`celery_config` with the settings read
at the edge. The installed plugins add their service modules and beat entries
(:mod:`engine.plugins`).
"""

from __future__ import annotations

from typing import Any

from engine import plugins
from engine.broker.redis_queue import DEFAULT_PRIORITY_STEPS
from engine.config import Settings
from engine.connections import broker_for
from engine.runtime.routing import ENGINE_QUEUE, SWEEP_TASK, TICK_TASK

#: Redis priorities kombu emulates with one list per step: 0 is served first (the broker writes the same lists).
PRIORITY_STEPS = list(DEFAULT_PRIORITY_STEPS)


def beat_schedule(settings: Settings) -> dict[str, Any]:
    """The engine's periodic tasks (timers, sweeper) and every plugin's (``beat_schedule`` hooks)."""
    schedule: dict[str, Any] = {
        "engine-timers": {"task": TICK_TASK, "schedule": settings.timer_interval, "options": {"queue": ENGINE_QUEUE}},
        "engine-sweeper": {"task": SWEEP_TASK, "schedule": settings.sweep_interval,
                           "options": {"queue": ENGINE_QUEUE}},
    }
    for hook in plugins.hooks("beat_schedule"):
        schedule.update(hook())
    return schedule


def celery_config(settings: Settings, redis_url: str) -> dict[str, Any]:
    """Celery's settings for a deployment whose state lives on ``redis_url``."""
    transport: dict[str, Any] = {
        # Above the longest step timeout; the sweeper re-sends lost steps long before this.
        "visibility_timeout": settings.visibility_timeout,
        # 0 is served first: steps of instances in flight (0) go ahead of new starts (9).
        "priority_steps": PRIORITY_STEPS,
    }
    if settings.unacked_restore_seconds:
        # How often workers give back messages unacked past the visibility timeout (kombu's default
        # scan is every 10 x 10 s); worth lowering only together with the visibility timeout.
        transport["unacked_restore_interval"] = settings.unacked_restore_seconds
        transport["unacked_restore_throttle"] = 1
    broker_url, sentinel_options = broker_for(settings.with_redis(redis_url))
    transport.update(sentinel_options)
    if settings.broker_prefix:
        # Keeps the queues of one deployment (or one test) apart on a shared Redis.
        transport["global_keyprefix"] = settings.broker_prefix
    return {
        #: The Redis of the engine's state (see engine.connections.state_url: never switched silently).
        "tradeflow_redis_url": redis_url,
        "broker_url": broker_url,
        #: Modules whose service actions this process registers as tasks.
        "tradeflow_service_modules": list(settings.service_modules) or plugins.service_modules(),
        # json only: a pickled message is refused, never executed.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        # No result backend: the engine keeps its own state.
        "task_ignore_result": True,
        "result_backend": None,
        # At-least-once delivery; the engine's compare-and-set makes a redelivery a recorded no-op.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": settings.prefetch,
        "broker_connection_retry_on_startup": True,
        "broker_transport_options": transport,
        "task_routes": ("engine.runtime.routing.route_by_service",),
        "task_default_queue": ENGINE_QUEUE,
        "task_create_missing_queues": True,
        # Task events off by default: three PUBLISH round trips per delivered task cost Redis more than the
        # engine's own two (docs/metrics.md). Flower turns them on while it runs; TRADEFLOW_EVENTS=1 from the start.
        "worker_send_task_events": settings.events,
        "task_send_sent_event": settings.events,
        "timezone": "UTC",
        "enable_utc": True,
        "beat_schedule": beat_schedule(settings),
        # Beat keeps its schedule state under TRADEFLOW_HOME, not in the directory it was started from.
        "beat_schedule_filename": str(settings.home / "celerybeat-schedule"),
    }
