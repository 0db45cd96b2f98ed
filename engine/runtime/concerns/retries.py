"""Retries and backoff: an action that raised is tried again per its node's ``retry`` policy.

A delay of 0 sends the next attempt at once (with the change); a longer one parks the step on
a ``retry`` timer, and the timers re-send it when it is due. The last attempt fails the step
with the exception and its trace. ``ActionFailed`` is never retried (it fails the step).
"""

from __future__ import annotations

import traceback
from typing import Any

from engine.definitions.nodes import Definition, StepNode
from engine.instance import Instance, InstanceStatus, Outcome
from engine.runtime.outcomes import StepOutcomes, StepReport, step_allowance
from engine.runtime.pipeline import Hook
from engine.store.redis_store import Placement

#: Timer kind of a step waiting out its backoff.
RETRY_TIMER = "retry"


class Retries(Hook):
    """Retries a raising action with backoff; re-sends a step when its backoff timer is due."""

    timer = RETRY_TIMER
    timer_status = InstanceStatus.RUNNING

    def on_error(self, runtime: StepOutcomes, instance: Instance, definition: Definition, node_name: str, seq: int,
                 attempt: int, started: float, exc: Exception, sent: Any) -> StepReport:
        """Retry (at once or after a backoff timer), or fail after the node's last attempt."""
        node = definition.nodes[node_name]
        assert isinstance(node, StepNode)
        reason = f"{type(exc).__name__}: {exc}"
        if attempt >= node.retry.max_attempts:
            return runtime.fail(instance, definition, node_name, seq, attempt, started,
                                f"{reason} (after {attempt} attempt{'s' if attempt > 1 else ''})",
                                type(exc).__name__, sent=sent, trace=traceback.format_exc(limit=5))
        delay = node.retry.delay(attempt)
        now = runtime.clock()
        activity = runtime.activity(node_name, seq, attempt, started, Outcome.RETRY,
                                    error=reason, retry_in=delay, sent=sent)
        immediate = delay <= 0
        placement = (Placement(inflight=True, queued=step_allowance(node)) if immediate
                     else Placement(inflight=False, timer=now + delay, timer_kind=RETRY_TIMER))
        applied = runtime.apply_change(definition, instance.id, lambda send, clear: runtime.store.retry(
            instance.id, seq=seq, attempt=attempt, next_attempt=attempt + 1, placement=placement,
            activity=activity, carrier=clear, send=send), (node_name, seq, attempt + 1) if immediate else None)
        return StepReport(Outcome.RETRY if applied.applied else Outcome.NOOP, applied.status)

    def on_timer(self, runtime: StepOutcomes, instance: Instance, definition: Definition, now: float) -> int:
        """The backoff ended: send the attempt it was waiting for."""
        return runtime.resend(instance, definition, instance.attempt, activity=None)
