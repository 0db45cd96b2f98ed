"""Await nodes' timeouts: an awaiting instance whose timeout passed goes to ``on_timeout``
(:func:`engine.runtime.signals.fire_timeout`; the signals themselves come through the API)."""

from __future__ import annotations

from engine.definitions.nodes import Definition
from engine.instance import Instance, InstanceStatus
from engine.runtime.outcomes import StepOutcomes
from engine.runtime.pipeline import Hook
from engine.runtime.signals import TIMEOUT_TIMER, fire_timeout


class Awaits(Hook):
    """Fires the timeouts of awaiting instances when their timer is due."""

    timer = TIMEOUT_TIMER
    timer_status = InstanceStatus.AWAITING

    def on_timer(self, runtime: StepOutcomes, instance: Instance, definition: Definition, now: float) -> int:
        """Move the instance to its await's ``on_timeout`` node; 1 if it moved."""
        return fire_timeout(runtime, instance, definition, now)
