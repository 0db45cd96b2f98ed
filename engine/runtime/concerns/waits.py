"""Wait nodes: an instance parked until its ``until`` time is moved on by the timers."""

from __future__ import annotations

from engine.definitions.nodes import Definition, WaitNode
from engine.errors import StepFailed
from engine.instance import Instance, InstanceStatus, Outcome
from engine.runtime.outcomes import NextKind, StepOutcomes
from engine.runtime.pipeline import Hook

#: Timer kind of an instance waiting at a wait node.
WAKE_TIMER = "wake"


class Waits(Hook):
    """Wakes waiting instances when their timer is due."""

    timer = WAKE_TIMER
    timer_status = InstanceStatus.WAITING

    def on_timer(self, runtime: StepOutcomes, instance: Instance, definition: Definition, now: float) -> int:
        """Resolve the wait's ``next`` and move the instance there; 1 if it moved (or failed)."""
        node = definition.nodes[instance.node]
        assert isinstance(node, WaitNode)
        started = runtime.clock()
        try:
            nxt = runtime.resolve(definition, node.next, runtime.scope(definition, instance))
        except StepFailed as exc:
            runtime.fail(instance, definition, instance.node, instance.seq, instance.attempt, started, str(exc),
                         "StepFailed")
            return 1
        activity = runtime.activity(instance.node, instance.seq, 1, started, Outcome.WOKE,
                                    next=nxt.node, via=list(nxt.via) or None)
        placement = runtime.placement(definition, nxt, now)
        applied = runtime.apply_change(definition, instance.id, lambda send, clear: runtime.store.advance(
            instance.id, seq=instance.seq, statuses=(InstanceStatus.WAITING,), activity=activity,
            placement=placement, carrier=clear, send=send),
            (nxt.node, instance.seq + 1, 1) if nxt.kind is NextKind.STEP else None)
        return int(applied.applied)
