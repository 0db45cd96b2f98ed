"""Celery routing: a task named ``<service>.<action>`` goes to the ``<service>`` queue."""

from __future__ import annotations

from typing import Any


def route_by_service(name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **kw: Any) -> dict[str, str]:
    """The queue of a task: the part of its name before the first dot."""
    return {"queue": name.split(".", 1)[0]}
