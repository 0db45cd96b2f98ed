"""Step metrics: every step's outcome and duration counted in process memory (:mod:`engine.metrics`)."""

from __future__ import annotations

from engine.metrics import StepMetrics
from engine.runtime.outcomes import StepOutcomes
from engine.runtime.pipeline import Hook


class Metrics(Hook):
    """Counts each step (inline ones too) in a :class:`~engine.metrics.StepMetrics`."""

    def __init__(self, metrics: StepMetrics) -> None:
        self.metrics = metrics

    def after_step(self, runtime: StepOutcomes, workflow: str, node: str, outcome: str, seconds: float) -> None:
        """One dictionary update under a lock; a flush when the interval has passed."""
        self.metrics.step(workflow, node, outcome, seconds)
