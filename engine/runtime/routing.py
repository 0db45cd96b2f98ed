"""Celery routing: the engine's own task names and queue, and a task named ``<service>.<action>``
going to the ``<service>`` queue."""

from __future__ import annotations

from typing import Any

ENGINE_QUEUE = "engine"
HTTP_TASK = "engine.http"
TICK_TASK = "engine.tick"
SWEEP_TASK = "engine.sweep"
#: The timers woken between two ticks, when one is due (a parked step's time came).
WAKE_TASK = "engine.wake"


def route_by_service(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any) -> dict[str, str]:
    """The queue of a task: the part of its name before the first dot."""
    return {"queue": name.split(".", 1)[0]}
