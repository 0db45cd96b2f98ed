"""What may happen to a step, as public operations: the door every concern records through.

A step's life (:mod:`engine.runtime.pipeline`), its hooks (:mod:`engine.runtime.concerns`),
the signals (:mod:`engine.runtime.signals`) and the gather nodes (:mod:`engine.runtime.gather`)
all end a step the same few ways, each one store operation (one Lua compare-and-set):

- :meth:`StepOutcomes.transition` -- apply a change and, if the instance is running, send its
  next step (advance, retry, signal, wake ...);
- :meth:`StepOutcomes.fail` -- fail the instance at its step, with the error recorded;
- :meth:`StepOutcomes.resend` -- send a running step again under its next attempt;
- :meth:`StepOutcomes.activity` -- the activity record every one of them writes.

and decide where an instance goes with :meth:`~StepOutcomes.scope`, :meth:`~StepOutcomes.resolve`
and :meth:`~StepOutcomes.placement`. Nothing here knows about retries, inline chains, metrics or
batches: those are hooks.

It also holds what every kind of step shares -- its deadline (:func:`step_deadline`), the attempts
a lost one gets, the worker's name -- and the message that runs a node's step
(:func:`step_message`), so that signals and gather nodes use them without importing the pipeline.
A step message names (instance, node, seq, attempt) and nothing else: the worker reads the
instance and builds the input itself, so a message stays small and a redelivery is harmless.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine.broker import PRIORITY_CONTINUE, Enqueuer, Envelope, StepMessage
from engine.clock import Clock, system_clock
from engine.definitions.model import Definition, GatherNode, HttpNode, StepNode
from engine.expressions.cel import Scope
from engine.model import Activity, Instance, InstanceStatus, Outcome
from engine.runtime.dispatcher import Next, NextKind, arrival_document, resolve
from engine.runtime.routing import ENGINE_QUEUE, HTTP_TASK
from engine.store.redis_store import Applied, Placement, RedisStore

#: A store operation given the message it pushes with the change and the carrier to record.
Change = Callable[[Envelope | None, str | None], Applied]
#: Told of every change applied through :meth:`StepOutcomes.transition` (hooks' ``after_apply``).
AfterApply = Callable[["StepOutcomes", Applied], None]
#: The statuses a step's failure applies at unless told otherwise.
STEP_STATUSES = (InstanceStatus.RUNNING, InstanceStatus.PAUSED)
#: Seconds added to a node's timeout before the sweeper calls a step lost.
DEADLINE_GRACE = 5.0
#: A step that made no progress is re-sent at least this many times in all, whatever its retry policy.
MIN_TIMEOUT_ATTEMPTS = 3

_HOST = socket.gethostname()


def step_allowance(node: StepNode | GatherNode) -> float:
    """Seconds a started step of ``node`` has before the sweeper calls it lost: its timeout plus a grace."""
    return node.timeout_seconds + DEADLINE_GRACE


def step_deadline(node: StepNode | GatherNode, now: float) -> float:
    """When the sweeper calls a step of ``node`` started at ``now`` lost: its timeout plus a grace."""
    return now + step_allowance(node)


def worker_name() -> str:
    """host:pid:thread of this worker, for activity records."""
    return f"{_HOST}:{os.getpid()}:{threading.current_thread().name}"


def step_message(node_name: str, node: StepNode, instance_id: str, seq: int, attempt: int) -> StepMessage:
    """The message that runs ``node`` for an instance at ``seq``."""
    if isinstance(node, HttpNode):
        return StepMessage(HTTP_TASK, ENGINE_QUEUE, instance_id, node_name, seq, attempt)
    return StepMessage(f"{node.service}.{node.action}", node.service, instance_id, node_name, seq, attempt)


@dataclass(frozen=True)
class StepReport:
    """What happened to one delivered step (for logs and tests)."""

    outcome: Outcome | str
    status: InstanceStatus | None = None
    next_node: str | None = None
    #: The instance as it now stands, when its next step runs here without a broker hop.
    carried: Instance | None = None


def instance_root(instance: Instance) -> dict[str, Any]:
    """The read-only ``instance`` root of expressions: which instance, and which step of it."""
    return {"id": instance.id, "workflow": instance.workflow, "version": instance.version, "run": instance.run,
            "node": instance.node, "seq": instance.seq, "attempt": instance.attempt, "shadow": instance.shadow}


class StepOutcomes:
    """The public operations that decide where an instance goes and record what happened to its step."""

    def __init__(self, store: RedisStore, enqueuer: Enqueuer, clock: Clock = system_clock,
                 epoch: str | None = None) -> None:
        self.store = store
        self.enqueuer = enqueuer
        self.clock = clock
        #: The Redis epoch this process started on (None: not checked, e.g. one-off tools).
        self.epoch = epoch
        #: Called after every applied change, in order (set once by the pipeline from its hooks).
        self.after_apply: tuple[AfterApply, ...] = ()

    def check_data_set(self) -> None:
        """Raise :class:`engine.errors.DataSetLost` if Redis lost the data set this runtime started on."""
        if self.epoch is not None:
            self.store.check_epoch(self.epoch)

    # -- deciding -----------------------------------------------------------------------------

    def scope(self, definition: Definition, instance: Instance, context: dict[str, Any] | None = None) -> Scope:
        """The expression scope of ``instance`` (optionally with an updated context).

        The ``instance`` root names the step the instance is at: the one about to run when a
        step's input is built, the one that just finished when the nodes after it are resolved.
        """
        return Scope(
            data=instance.data,
            params=definition.parameters,
            context=instance.context if context is None else context,
            now=datetime.fromtimestamp(self.clock(), UTC),
            instance=instance_root(instance),
        )

    def resolve(self, definition: Definition, node_name: str, scope: Scope) -> Next:
        """Where an instance goes from ``node_name`` (see :func:`engine.runtime.dispatcher.resolve`),
        with gather nodes told whether their batch has closed (``late``)."""
        return resolve(definition, node_name, scope, closed=self.store.batch_closed)

    def placement(self, definition: Definition, nxt: Next, now: float) -> Placement:
        """Where ``nxt`` puts an instance: running a step, waiting, gathering, or ended."""
        if nxt.kind is NextKind.STEP:
            node = definition.nodes[nxt.node]
            assert isinstance(node, StepNode)
            return Placement.queued_step(nxt.node, step_allowance(node))
        if nxt.kind is NextKind.WAIT:
            assert nxt.wake_at is not None
            return Placement.wait(nxt.node, nxt.wake_at)
        if nxt.kind is NextKind.AWAIT:  # parked until a signal; its timeout (if any) is a timer
            return Placement.awaiting(nxt.node, nxt.wake_at)
        if nxt.kind is NextKind.GATHER:  # joins its batch in the same atomic update
            assert nxt.arrival is not None
            return Placement.gathering(nxt.node, arrival_document(definition, nxt), nxt.arrival.contribution)
        assert nxt.status is not None
        return Placement.end(nxt.node, nxt.status, nxt.result, definition.drop_on_success)

    def message(self, definition: Definition, instance_id: str, node_name: str, seq: int, attempt: int) -> StepMessage:
        """The message that runs step ``node_name`` of an instance at ``seq``."""
        node = definition.nodes[node_name]
        assert isinstance(node, StepNode)
        return step_message(node_name, node, instance_id, seq, attempt)

    # -- recording ----------------------------------------------------------------------------

    def activity(self, node_name: str, seq: int, attempt: int, started: float, outcome: Outcome,
                 **fields: Any) -> Activity:
        """The activity record of a step of ``node_name`` at ``seq``/``attempt`` started at ``started``, ending now."""
        return Activity(seq=seq, node=node_name, attempt=attempt, outcome=outcome, worker=worker_name(),
                        started_at=started, ended_at=self.clock(), **fields)

    def transition(self, definition: Definition, instance_id: str, change: Change,
                   step: tuple[str, int, int] | None = None, priority: int = PRIORITY_CONTINUE) -> Applied:
        """Apply ``change`` (a store operation); then, if the instance is running, send ``step`` (node, seq, attempt).

        With an enqueuer that writes to the state's Redis, the message is pushed by the same
        atomic script as the change; otherwise it is sent right after. A sent message clears
        the carrier: a message carries the instance from here, not a worker's inline chain.
        Every ``after_apply`` hook is told of the result.
        """
        message = None if step is None else self.message(definition, instance_id, *step)
        envelope = None if message is None else self.enqueuer.envelope(message, priority)
        applied = change(envelope, None if message is None else "")
        if message is not None and envelope is None and applied.applied \
                and applied.status is InstanceStatus.RUNNING:
            self.enqueuer.enqueue(message, priority)
        for hook in self.after_apply:
            hook(self, applied)
        return applied

    def fail(self, instance: Instance, definition: Definition, node_name: str, seq: int, attempt: int,
             started: float, reason: str, error_type: str, *, sent: Any = None, transition: str | None = None,
             received: Any = None, trace: str | None = None,
             statuses: tuple[InstanceStatus, ...] = STEP_STATUSES) -> StepReport:
        """Fail ``instance`` at its step ``node_name``/``seq`` (if it is still there, in one of ``statuses``).

        Records the error on the instance and a ``failed`` activity; a late failure (the
        instance moved on) is recorded as a no-op. ``error_type`` names the cause for operators.
        """
        node = definition.nodes[node_name]
        error = {"node": node_name, "service": getattr(node, "service", None) or getattr(node, "url", None),
                 "action": getattr(node, "action", None), "reason": reason, "type": error_type,
                 "attempt": attempt, "at": self.clock()}
        activity = self.activity(node_name, seq, attempt, started, Outcome.FAILED,
                                 error=reason, transition=transition, sent=sent, received=received, trace=trace)
        applied = self.store.fail(instance.id, seq=seq, attempt=attempt, activity=activity, error=error,
                                  noop=self.activity(node_name, seq, attempt, started, Outcome.NOOP,
                                                     reason=f"late failure ignored: {reason}"), statuses=statuses)
        return StepReport(Outcome.FAILED if applied.applied else Outcome.NOOP, applied.status)

    def resend(self, instance: Instance, definition: Definition, attempt: int, activity: Activity | None) -> int:
        """Send the running step of ``instance`` again as attempt ``attempt`` (recording ``activity``); 1 if sent."""
        node = definition.nodes[instance.node]
        assert isinstance(node, StepNode)
        placement = Placement(inflight=True, queued=step_allowance(node))
        applied = self.transition(definition, instance.id, lambda send, clear: self.store.retry(
            instance.id, seq=instance.seq, attempt=instance.attempt, next_attempt=attempt, placement=placement,
            activity=activity, statuses=(InstanceStatus.RUNNING,), carrier=clear, send=send),
            (instance.node, instance.seq, attempt))
        return int(applied.applied)
