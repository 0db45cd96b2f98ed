"""Draining a deep queue: a worker that was delivered one step takes the next few from its queue.

Celery's own work per message -- the delivery, kombu's unacknowledged bookkeeping, the ack, the
hand-off to a pool process -- costs more CPU than a short step itself. When a service's queue
is deep (a morning's accounts all woken at the open), a worker that finished a delivered step
pops up to ``TRADEFLOW_DRAIN_STEPS`` more of that queue's step messages in one round trip and
runs them in the same task, so that cost is paid once per batch instead of once per step.

Nothing else changes for a step: each one taken is started (its ``start`` mark, its deadline
from then on), run, and applied by its own compare-and-set with its own activity record, and
its chain runs inline as usual. Messages that are not steps of this worker's actions (a gather
batch, a step of an action this worker lacks) are given back at the head of their list. The
messages taken are out of the broker until each is started: a worker killed in that window
loses them, and the reconciliation (:meth:`engine.runtime.runner.Runtime.reconcile`) finds
them -- queued, in no list and not delivered -- and re-sends them.

When the queue is found empty the worker stops looking for ``IDLE_PAUSE_SECONDS``: a quiet
queue costs one extra round trip a second, not one per message.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from engine.runtime.messages import TakenStep

#: After a look that found the queue empty, the next look waits this long.
IDLE_PAUSE_SECONDS = 1.0


class Drain:
    """Takes waiting step messages off a service's queue for a worker that has their actions."""

    def __init__(self, enqueuer: Any, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        #: None when the broker cannot be drained (a broker other than the state's Redis).
        self.taker = enqueuer if limit > 0 and hasattr(enqueuer, "take") else None
        self.limit = limit
        self.clock = clock
        self._quiet_until: dict[str, float] = {}

    def take(self, queue: str, accepts: Callable[[str], bool]) -> list[TakenStep]:
        """Up to ``limit`` waiting step messages of ``queue`` whose task ``accepts`` says this worker runs.

        The caller runs every one returned, or gives the rest back (:meth:`give_back`).
        """
        if self.taker is None or self.clock() < self._quiet_until.get(queue, 0.0):
            return []
        taken: list[TakenStep] = self.taker.take(queue, self.limit)
        if len(taken) < self.limit:
            self._quiet_until[queue] = self.clock() + IDLE_PAUSE_SECONDS
        steps: list[TakenStep] = []
        others: list[TakenStep] = []
        for item in taken:
            (steps if item.step is not None and accepts(item.task) else others).append(item)
        if others:
            self.taker.give_back(others)
        return steps

    def give_back(self, taken: list[TakenStep]) -> None:
        """Return messages taken but not run (the worker is stopping, or Redis failed under it)."""
        if self.taker is not None and taken:
            self.taker.give_back(taken)
