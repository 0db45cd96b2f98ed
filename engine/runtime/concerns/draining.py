"""Draining: after a delivered step, a worker takes more waiting steps of its queue and runs them.

The queue side (taking one step message, giving back what this worker does not run, pausing
on an empty queue) is :class:`engine.runtime.drain.Drain`; this concern only runs what it takes,
one at a time, each like a delivered step, up to the drain's limit and within ``seconds``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from engine.runtime.drain import Drain
from engine.runtime.hooks import Execute, Hook, Inline, RunStep
from engine.runtime.outcomes import StepOutcomes
from engine.runtime.patience import patiently


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
