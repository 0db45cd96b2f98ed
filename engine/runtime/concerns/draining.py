"""Draining a deep queue: after a delivered step, a worker takes the next ones from its queue and runs them.

Celery's own work per message -- the delivery, kombu's unacknowledged bookkeeping, the ack, the
hand-off to a pool process -- costs more CPU than a short step itself. When a service's queue
is deep (a morning's accounts all woken at the open), a worker that finished a delivered step
takes the queue's next step message itself, one round trip, runs it, and goes on, up to
``TRADEFLOW_DRAIN_STEPS`` steps per delivered message: Celery's cost is paid once per batch
instead of once per step.

Nothing else changes for a step: each one taken is started at once (its ``start`` mark, its
deadline from then on), run, and applied by its own compare-and-set with its own activity
record, and its chain runs inline as usual. Steps are taken one at a time, right before each
runs, so a taken message is out of the broker only for the moment before its ``start``: the
reconciliation (:meth:`engine.runtime.runner.Runtime.reconcile`), which re-sends a queued step
only when two looks a period apart both find it nowhere, never mistakes one for lost; a worker
killed in that moment loses it, and the reconciliation then finds and re-sends it. A message
that is not a step of this worker's actions (a gather batch, an action this worker lacks) is
given back at the head of its list, and the draining stops there.

When the queue is found empty the worker stops looking for ``IDLE_PAUSE_SECONDS``: a quiet
queue costs one extra round trip a second, not one per message.

The queue side (taking one step message, giving back what this worker does not run, pausing
on an empty queue) is :class:`Drain`; the concern (:class:`Draining`) runs what it takes, one
at a time, each like a delivered step, up to the drain's limit and within ``seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from engine.broker import TakenStep, Taker
from engine.runtime.outcomes import StepOutcomes
from engine.runtime.pipeline import Execute, Hook, Inline, RunStep, patiently

#: After a look that found the queue empty, the next look waits this long.
IDLE_PAUSE_SECONDS = 1.0


class Drain:
    """Takes waiting step messages off a service's queue, one at a time, for a worker that has their actions."""

    def __init__(self, enqueuer: Any, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        #: None when the broker cannot be drained (a broker other than the state's Redis).
        self.taker: Taker | None = enqueuer if limit > 0 and hasattr(enqueuer, "take") else None
        #: Steps taken at most per delivered message.
        self.limit = limit
        self.clock = clock
        self._quiet_until: dict[str, float] = {}

    def take(self, queue: str, accepts: Callable[[str], bool]) -> TakenStep | None:
        """The next waiting step message of ``queue`` if its task is one this worker runs (``accepts``).

        None when draining is off, the queue is empty (or was a moment ago), or its next message
        is not for this worker (given back where it was). The caller starts the step at once.
        """
        if self.taker is None or self.clock() < self._quiet_until.get(queue, 0.0):
            return None
        taken = self.taker.take(queue, 1)
        if not taken:
            self._quiet_until[queue] = self.clock() + IDLE_PAUSE_SECONDS
            return None
        item = taken[0]
        if item.step is None or not accepts(item.task):
            self.taker.give_back(taken)
            return None
        return item


class Draining(Hook):
    """Runs the waiting steps ``drain`` takes off a delivered message's queue."""

    def __init__(self, drain: Drain, seconds: float) -> None:
        #: Takes step messages off a queue: ``take(queue, accepts)`` (None: nothing to take).
        self.drain = drain
        #: How long a delivered message may go on running taken steps.
        self.seconds = seconds

    def after_delivery(self, runtime: StepOutcomes, run_step: RunStep, queue: str, accepts: Callable[[str], bool],
                       execute: Execute, inline: Inline | None) -> int:
        """Take and run waiting steps of ``queue`` this worker runs (``accepts`` their task); how many ran."""
        drain = self.drain
        until = time.monotonic() + self.seconds
        ran = 0
        while ran < drain.limit and time.monotonic() < until:
            item = patiently(lambda: drain.take(queue, accepts))
            if item is None:
                break
            assert item.step is not None  # take() returns step messages only
            patiently(lambda step=item.step: run_step(*step, execute, inline))
            ran += 1
        return ran
