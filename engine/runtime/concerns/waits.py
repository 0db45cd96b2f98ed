"""Wait nodes: an instance parked until its ``until`` time is moved on by the timers."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from engine.definitions.nodes import Definition, WaitNode
from engine.errors import StepFailed
from engine.instance import Activity, Instance, InstanceStatus, Outcome
from engine.runtime.outcomes import NextKind, StepOutcomes
from engine.runtime.pipeline import Hook
from engine.store.redis_store import Applied, Envelope, Placement

#: Timer kind of an instance waiting at a wait node.
WAKE_TIMER = "wake"


class Waits(Hook):
    """Wakes waiting instances when their timer is due."""

    timer = WAKE_TIMER
    timer_status = InstanceStatus.WAITING

    def on_timer(self, runtime: StepOutcomes, instance: Instance, definition: Definition, now: float) -> int:
        """Resolve the wait's ``next`` and move the instance there; 1 if it moved (or failed)."""
        return self.on_timers(runtime, [(instance, definition)], now)

    def on_timers(self, runtime: StepOutcomes, due: Sequence[tuple[Instance, Definition]], now: float) -> int:
        """Wake every instance of ``due``: their transitions sent together, in one round trip; how many moved."""
        changes = []
        moved = 0
        for instance, definition in due:
            node = definition.nodes[instance.node]
            assert isinstance(node, WaitNode)
            started = runtime.clock()
            try:
                nxt = runtime.resolve(definition, node.next, runtime.scope(definition, instance))
            except StepFailed as exc:
                runtime.fail(instance, definition, instance.node, instance.seq, instance.attempt, started, str(exc),
                             "StepFailed")
                moved += 1
                continue
            activity = runtime.activity(instance.node, instance.seq, 1, started, Outcome.WOKE,
                                        next=nxt.node, via=list(nxt.via) or None)
            placement = runtime.placement(definition, nxt, now)
            changes.append((definition, instance.id, partial(_wake, runtime, instance, activity, placement),
                            (nxt.node, instance.seq + 1, 1) if nxt.kind is NextKind.STEP else None))
        return moved + sum(applied.applied for applied in runtime.apply_changes(changes))


def _wake(runtime: StepOutcomes, instance: Instance, activity: Activity, placement: Placement,
          send: Envelope | None, clear: str | None) -> Applied:
    """The transition of a woken instance (sent with the message of its next step, if any)."""
    return runtime.store.advance(instance.id, seq=instance.seq, statuses=(InstanceStatus.WAITING,), activity=activity,
                                 placement=placement, carrier=clear, send=send)
