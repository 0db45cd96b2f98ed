"""Celery configuration for tradeflow: everything from the environment.

Workers: ``celery -A engine.worker worker -Q <service>`` (see the README for the fleets).
"""

from __future__ import annotations

import os

from celery.schedules import crontab  # noqa: F401  (kept for schedules added by plugins)

from engine.config import Settings
from engine.embedded import resolve_redis_url

_settings = Settings.from_env()

#: The Redis of the engine's state: TRADEFLOW_REDIS_URL when set (never another: Celery retries
#: it), else the local default or the embedded one (see engine.embedded.resolve_redis_url).
tradeflow_redis_url = resolve_redis_url(_settings, check=False)
broker_url = _settings.broker_url or tradeflow_redis_url

#: Modules whose service actions this process registers as tasks.
tradeflow_service_modules = [
    m.strip()
    for m in os.environ.get("TRADEFLOW_SERVICE_MODULES", "portfolio_manager.actions,order_calc.actions").split(",")
    if m.strip()
]

# json only: a pickled message is refused, never executed.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
event_serializer = "json"

# No result backend: the engine keeps its own state.
task_ignore_result = True
result_backend = None

# At-least-once delivery; the engine's compare-and-set makes a redelivery a recorded no-op.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = int(os.environ.get("TRADEFLOW_PREFETCH", "1"))
broker_connection_retry_on_startup = True
broker_transport_options = {
    # Above the longest step timeout; the sweeper re-sends lost steps long before this.
    "visibility_timeout": int(os.environ.get("TRADEFLOW_VISIBILITY_TIMEOUT", "7200")),
    # 0 is served first: steps of instances in flight (0) go ahead of new starts (9).
    "priority_steps": [0, 3, 6, 9],
}
if os.environ.get("TRADEFLOW_UNACKED_RESTORE_SECONDS"):
    # How often workers give back messages unacked past the visibility timeout (kombu's default
    # scan is every 10 x 10 s); worth lowering only together with the visibility timeout.
    broker_transport_options["unacked_restore_interval"] = int(os.environ["TRADEFLOW_UNACKED_RESTORE_SECONDS"])
    broker_transport_options["unacked_restore_throttle"] = 1
if os.environ.get("TRADEFLOW_BROKER_PREFIX"):
    # Keeps the queues of one deployment (or one test) apart on a shared Redis.
    broker_transport_options["global_keyprefix"] = os.environ["TRADEFLOW_BROKER_PREFIX"]

task_routes = ("engine.routing.route_by_service",)
task_default_queue = "engine"
task_create_missing_queues = True

# Events on, so Flower sees every task (TRADEFLOW_EVENTS=0 turns them off).
worker_send_task_events = os.environ.get("TRADEFLOW_EVENTS", "1") != "0"
task_send_sent_event = worker_send_task_events

# Beat keeps its schedule state under TRADEFLOW_HOME, not in the directory it was started from.
beat_schedule_filename = str(_settings.home / "celerybeat-schedule")

timezone = "UTC"
enable_utc = True

beat_schedule = {
    "engine-timers": {"task": "engine.tick", "schedule": _settings.timer_interval, "options": {"queue": "engine"}},
    "engine-sweeper": {"task": "engine.sweep", "schedule": _settings.sweep_interval, "options": {"queue": "engine"}},
}
# The morning rebalance: once per trading day of the TSX and of the NYSE (holidays skipped),
# at TRADEFLOW_MORNING_AT in the exchange's own time zone; TRADEFLOW_MORNING_RUN=0 turns it off.
if os.environ.get("TRADEFLOW_MORNING_RUN", "1").lower() not in {"0", "false", "no"}:
    from portfolio_manager.daily import morning_schedule

    beat_schedule.update(morning_schedule(os.environ.get("TRADEFLOW_MORNING_AT", "09:00")))
