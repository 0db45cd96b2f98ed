"""Gather batches: closing a batch early when its last member arrives, and on the timers
(:class:`engine.runtime.gather.Gatherer`)."""

from __future__ import annotations

from engine.runtime.gather import Gatherer
from engine.runtime.outcomes import StepOutcomes
from engine.runtime.pipeline import Hook
from engine.store.redis_store import Applied


class Gathering(Hook):
    """Tells the gatherer of arrivals that leave nothing of their run behind, and runs its timers."""

    def __init__(self, gatherer: Gatherer) -> None:
        self.gatherer = gatherer

    def after_apply(self, runtime: StepOutcomes, applied: Applied) -> None:
        """An arrival at a gather node that was the last its runs could send: close early if allowed."""
        if applied.batch is not None and applied.last:
            self.gatherer.arrived(applied.batch)

    def on_tick(self, runtime: StepOutcomes, now: float) -> int:
        """Close the batches due; re-send batch steps that are due."""
        return self.gatherer.tick(now)
