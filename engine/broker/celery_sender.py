"""Step messages sent through Celery's own ``send_task``: any broker other than the state's Redis."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engine.broker.interface import PRIORITY_CONTINUE, StepMessage


class CeleryEnqueuer:
    """Sends step messages as Celery tasks (json) to the queue of their service."""

    def __init__(self, app: Any) -> None:
        self.app = app

    def enqueue(self, message: StepMessage, priority: int = PRIORITY_CONTINUE) -> None:
        """Publish ``message`` on its service's queue."""
        self.app.send_task(message.task, args=message.args, queue=message.queue, priority=priority,
                           ignore_result=True)

    def envelope(self, message: StepMessage, priority: int = PRIORITY_CONTINUE) -> None:
        """None: a broker other than the state's Redis is reached through Celery, after the update."""
        return None

    def count(self, queues: Iterable[str]) -> None:
        """None: another broker's queues are not looked into."""
        return None

    def pending(self, queues: Iterable[str]) -> None:
        """None: another broker's queues are not looked into (its own redelivery applies)."""
        return None
