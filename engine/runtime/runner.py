"""The runtime: run one step, apply its transition atomically, enqueue the next step.

This is where a transition is decided. Every change is one operation of the store
(:mod:`engine.store.instances`: ``advance``, ``retry``, ``fail``, ``park``, ``noop``, ``release``;
one Lua compare-and-set each); everything here is deciding which change, and where it
leaves the instance (:meth:`Runtime.placement`). The same code serves Celery workers (``engine.runtime.tasks``) and
tests that drive the engine one message at a time.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from engine.clock import Clock, system_clock
from engine.config import Settings
from engine.definitions.model import Definition, HttpNode, Node, RecordLevel, ServiceNode, StepNode, WaitNode
from engine.errors import ActionFailed, ExpressionError, StepFailed
from engine.expressions.cel import Scope, compile_template
from engine.metrics import StepMetrics
from engine.model import TERMINAL_STATUSES, Activity, Instance, InstanceStatus, Outcome
from engine.runtime.dispatcher import Next, NextKind, resolve, target_of
from engine.runtime.drain import Drain
from engine.runtime.gather import Gatherer, arrival_document
from engine.runtime.messages import PRIORITY_CONTINUE, Enqueuer, Envelope, StepMessage, step_message
from engine.runtime.signals import TIMEOUT_TIMER, fire_timeout
from engine.runtime.steps import MIN_TIMEOUT_ATTEMPTS, step_allowance, step_deadline, worker_name
from engine.service import Transition
from engine.store.redis_store import Applied, Placement, RedisStore

log = logging.getLogger(__name__)

#: At most this many steps run after a delivered one without a broker hop (0: every step is a message) ...
DEFAULT_INLINE_STEPS = Settings.inline_steps
#: ... and only while the message has run for less than this many seconds.
DEFAULT_INLINE_SECONDS = 30.0
#: Queued steps older than this are looked for in the broker, at most once per this many seconds.
DEFAULT_RECONCILE_SECONDS = 60.0
#: Queued steps older than this many reconcile periods are looked for one by one even when the
#: message counts agree; a message delivered that long ago and still not started counts as lost
#: (its worker died holding it).
FULL_CHECK_PERIODS = 10
#: At most this many queued steps are checked per reconciliation (the oldest).
RECONCILE_BATCH = 2000

Execute = Callable[[StepNode, Any], Transition]
#: Says whether a worker may run a node's step itself, right after the step before it.
Inline = Callable[[Node], bool]
#: A store operation given the message it pushes with the change and the carrier to record.
Change = Callable[[Envelope | None, str | None], Applied]


def step_queues(definition: Definition) -> frozenset[str]:
    """The broker queues the steps of ``definition`` are sent to."""
    return frozenset(step_message(name, node, "", 0, 0).queue for name, node in definition.nodes.items()
                     if isinstance(node, StepNode))


def carrier_died(carrier: str | None, message: str) -> bool:
    """True when ``carrier`` ("message@host:pid") is ``message`` and its process is known to be gone.

    A carrier on this host is checked (a signal 0 to its pid); one on another host cannot be,
    and counts as gone: its redelivery then runs the step it carried, at the cost of running
    it twice if that worker was only slow (the compare-and-set keeps one transition).
    """
    if not carrier:
        return False
    carried, _, where = carrier.partition("@")
    if carried != message:
        return False
    host, _, pid = where.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def instance_root(instance: Instance) -> dict[str, Any]:
    """The read-only ``instance`` root of expressions: which instance, and which step of it."""
    return {"id": instance.id, "workflow": instance.workflow, "version": instance.version, "run": instance.run,
            "node": instance.node, "seq": instance.seq, "attempt": instance.attempt, "shadow": instance.shadow}


@dataclass(frozen=True)
class StepReport:
    """What happened to one delivered step (for logs and tests)."""

    outcome: Outcome | str
    status: InstanceStatus | None = None
    next_node: str | None = None
    #: The instance as it now stands, when its next step runs here without a broker hop.
    carried: Instance | None = None


class Runtime:
    """Runs steps and timers against a store, sending follow-up steps through an enqueuer."""

    def __init__(self, store: RedisStore, enqueuer: Enqueuer, clock: Clock = system_clock,
                 epoch: str | None = None, inline_steps: int = DEFAULT_INLINE_STEPS,
                 inline_seconds: float = DEFAULT_INLINE_SECONDS,
                 reconcile_seconds: float = DEFAULT_RECONCILE_SECONDS, drain_steps: int = 0) -> None:
        self.store = store
        self.enqueuer = enqueuer
        self.clock = clock
        self.inline_steps = inline_steps
        self.inline_seconds = inline_seconds
        self.reconcile_seconds = reconcile_seconds
        #: host:pid of this process, recorded as the carrier of the steps it runs inline.
        self.process = f"{socket.gethostname()}:{os.getpid()}"
        #: The Redis epoch this process started on (None: not checked, e.g. one-off tools).
        self.epoch = epoch
        #: The batches of gather nodes (closing, the batch step, applying).
        self.gatherer = Gatherer(self)
        #: Step counters of this process, flushed to Redis every few seconds (engine.metrics).
        self.metrics = StepMetrics(store.add_step_metrics)
        #: Takes waiting steps off a deep queue for a worker (engine.runtime.drain; off when 0).
        self.drain = Drain(enqueuer, drain_steps)

    def check_data_set(self) -> None:
        """Raise :class:`engine.errors.DataSetLost` if Redis lost the data set this runtime started on."""
        if self.epoch is not None:
            self.store.check_epoch(self.epoch)

    # -- helpers -----------------------------------------------------------------------------

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

    def transition(self, definition: Definition, instance_id: str, change: Change,
                   step: tuple[str, int, int] | None = None, priority: int = PRIORITY_CONTINUE) -> Applied:
        """Apply ``change`` (a store operation); then, if the instance is running, send ``step`` (node, seq, attempt).

        With an enqueuer that writes to the state's Redis, the message is pushed by the same
        atomic script as the change; otherwise it is sent right after. A sent message clears
        the carrier: a message carries the instance from here, not a worker's inline chain.
        """
        message = None if step is None else self.message(definition, instance_id, *step)
        envelope = None if message is None else self.enqueuer.envelope(message, priority)
        applied = change(envelope, None if message is None else "")
        if message is not None and envelope is None and applied.applied \
                and applied.status is InstanceStatus.RUNNING:
            self.enqueuer.enqueue(message, priority)
        if applied.batch is not None and applied.last:
            self.gatherer.arrived(applied.batch)
        return applied

    def _activity(self, node_name: str, seq: int, attempt: int, started: float, outcome: Outcome,
                  **fields: Any) -> Activity:
        return Activity(seq=seq, node=node_name, attempt=attempt, outcome=outcome, worker=worker_name(),
                        started_at=started, ended_at=self.clock(), **fields)

    # -- a step ------------------------------------------------------------------------------

    def run_step(self, instance_id: str, node_name: str, seq: int, attempt: int, execute: Execute,
                 inline: Inline | None = None) -> StepReport:
        """Run one delivered step message to its end (applied, retried, failed or no-op).

        With ``inline``, the steps after it that ``inline`` accepts (the same service's, in a
        worker that has their actions) run here too, without a broker hop: up to
        ``inline_steps`` of them within ``inline_seconds``. Each is still its own compare-and-set
        with its own activity record; the instance remembers which message carries it, so a
        redelivery of that message after its worker died takes the chain over at once.
        """
        started = self.clock()
        instance = self.store.start(instance_id, node_name, seq, attempt, started)
        if instance is None:
            self.check_data_set()
            log.warning("step for unknown instance %s dropped (expired or never created)", instance_id)
            return StepReport("missing")
        carrier = f"{node_name}:{seq}:{attempt}@{self.process}"
        if instance.seq != seq or instance.node != node_name or instance.status in TERMINAL_STATUSES:
            taking_over = (inline is not None and instance.status is InstanceStatus.RUNNING
                           and carrier_died(instance.carrier, f"{node_name}:{seq}:{attempt}"))
            self._noop(instance_id, node_name, seq, attempt, started,
                       f"stale delivery: instance is at seq {instance.seq} ({instance.status.value})"
                       + ("; its worker died carrying it inline: running that step now" if taking_over else ""))
            if not taking_over:
                return StepReport(Outcome.NOOP, instance.status)
            node_name, seq, attempt = instance.node, instance.seq, instance.attempt
        if instance.status is InstanceStatus.PAUSED and self._skip_paused(instance, node_name, seq, attempt, started):
            return StepReport(Outcome.SKIPPED, InstanceStatus.PAUSED)
        definition = self.store.definition(instance.workflow, instance.version)
        budget = started + self.inline_seconds
        for chained in range(self.inline_steps + 1):
            chain = inline if inline is not None and chained < self.inline_steps and self.clock() < budget else None
            report = self._run(instance, definition, node_name, seq, attempt, started, execute, chain, carrier)
            self.metrics.step(instance.workflow, node_name, str(report.outcome), self.clock() - started)
            if report.carried is None:
                return report
            instance = report.carried
            node_name, seq, attempt, started = instance.node, instance.seq, 1, self.clock()
        return report

    def _run(self, instance: Instance, definition: Definition, node_name: str, seq: int, attempt: int,
             started: float, execute: Execute, inline: Inline | None, carrier: str) -> StepReport:
        node = definition.nodes[node_name]
        assert isinstance(node, StepNode)
        level = definition.record_level(node_name)
        try:
            payload = compile_template(node.input).evaluate(self.scope(definition, instance))
        except ExpressionError as exc:
            return self._fail(instance, definition, node_name, seq, attempt, started,
                              f"input: {exc}", "ExpressionError")
        sent = payload if level is RecordLevel.FULL else None
        try:
            transition = execute(node, payload)
        except ActionFailed as exc:
            return self._fail(instance, definition, node_name, seq, attempt, started, str(exc),
                              type(exc).__name__, sent=sent)
        except Exception as exc:
            log.info("step %s/%s attempt %s raised %r", instance.id, node_name, attempt, exc)
            return self._retry_or_fail(instance, definition, node_name, seq, attempt, started, exc, sent)
        return self._advance(instance, definition, node_name, seq, attempt, started, transition, sent, level,
                             inline, carrier)

    def _advance(self, instance: Instance, definition: Definition, node_name: str, seq: int, attempt: int,
                 started: float, transition: Transition, sent: Any, level: RecordLevel,
                 inline: Inline | None = None, carrier: str = "") -> StepReport:
        node = definition.nodes[node_name]
        data = dict(transition.data)
        context = {**instance.context, node_name: data}
        try:
            nxt = self.resolve(definition, target_of(definition, node_name, transition.name),
                               self.scope(definition, instance, context))
        except StepFailed as exc:
            return self._fail(instance, definition, node_name, seq, attempt, started, str(exc), "StepFailed",
                              sent=sent, transition=transition.name,
                              received=data if level is not RecordLevel.METADATA else None)
        now = self.clock()
        service = node if isinstance(node, ServiceNode) else None  # (a pydantic attribute miss is slow)
        activity = self._activity(
            node_name, seq, attempt, started, Outcome.APPLIED, transition=transition.name,
            service=service and service.service, action=service and service.action,
            url=node.url if isinstance(node, HttpNode) else None, sent=sent,
            received=data if level is not RecordLevel.METADATA else None,
            next=nxt.node, via=list(nxt.via) or None,
        )
        chained = nxt.kind is NextKind.STEP and inline is not None and inline(definition.nodes[nxt.node])
        noop = self._activity(node_name, seq, attempt, started, Outcome.NOOP, transition=transition.name,
                              reason="another delivery applied first")
        placement = self.placement(definition, nxt, now)
        if chained:  # the next step starts here and now: its deadline runs from now, it is not queued
            placement = Placement.step(nxt.node, step_deadline(definition.nodes[nxt.node], now))
        step = (nxt.node, seq + 1, 1) if nxt.kind is NextKind.STEP and not chained else None
        applied = self.transition(definition, instance.id, lambda send, clear: self.store.advance(
            instance.id, seq=seq, activity=activity, placement=placement, context=(node_name, data), noop=noop,
            carrier=carrier if chained else clear, send=send, encoded=transition.encoded), step)
        if not applied.applied:
            return StepReport(Outcome.NOOP, applied.status)
        if chained and applied.status is InstanceStatus.RUNNING:
            carried = replace(instance, node=nxt.node, seq=seq + 1, attempt=1, context=context,
                              status=InstanceStatus.RUNNING, inflight=True, carrier=carrier)
            return StepReport(Outcome.APPLIED, applied.status, nxt.node, carried)
        return StepReport(Outcome.APPLIED, applied.status, nxt.node)

    def _noop(self, instance_id: str, node_name: str, seq: int, attempt: int, started: float, reason: str) -> None:
        self.store.noop(instance_id, self._activity(node_name, seq, attempt, started, Outcome.NOOP, reason=reason))

    def _skip_paused(self, instance: Instance, node_name: str, seq: int, attempt: int, started: float) -> bool:
        """Drop a step of a paused instance; False if it was resumed meanwhile (run it then)."""
        applied = self.store.park(instance.id, seq=seq, activity=self._activity(
            node_name, seq, attempt, started, Outcome.SKIPPED, reason="instance paused; resume re-sends this step"))
        return applied.applied or applied.status is not InstanceStatus.RUNNING

    def _retry_or_fail(self, instance: Instance, definition: Definition, node_name: str, seq: int, attempt: int,
                       started: float, exc: Exception, sent: Any) -> StepReport:
        node = definition.nodes[node_name]
        assert isinstance(node, StepNode)
        reason = f"{type(exc).__name__}: {exc}"
        if attempt >= node.retry.max_attempts:
            return self._fail(instance, definition, node_name, seq, attempt, started,
                              f"{reason} (after {attempt} attempt{'s' if attempt > 1 else ''})",
                              type(exc).__name__, sent=sent, trace=traceback.format_exc(limit=5))
        delay = node.retry.delay(attempt)
        now = self.clock()
        activity = self._activity(node_name, seq, attempt, started, Outcome.RETRY,
                                  error=reason, retry_in=delay, sent=sent)
        immediate = delay <= 0
        placement = (Placement(inflight=True, queued=step_allowance(node)) if immediate
                     else Placement(inflight=False, timer=now + delay, timer_kind="retry"))
        applied = self.transition(definition, instance.id, lambda send, clear: self.store.retry(
            instance.id, seq=seq, attempt=attempt, next_attempt=attempt + 1, placement=placement,
            activity=activity, carrier=clear, send=send), (node_name, seq, attempt + 1) if immediate else None)
        return StepReport(Outcome.RETRY if applied.applied else Outcome.NOOP, applied.status)

    def _fail(self, instance: Instance, definition: Definition, node_name: str, seq: int, attempt: int,
              started: float, reason: str, error_type: str, *, sent: Any = None, transition: str | None = None,
              received: Any = None, trace: str | None = None,
              statuses: tuple[InstanceStatus, ...] = (InstanceStatus.RUNNING, InstanceStatus.PAUSED)) -> StepReport:
        node = definition.nodes[node_name]
        error = {"node": node_name, "service": getattr(node, "service", None) or getattr(node, "url", None),
                 "action": getattr(node, "action", None), "reason": reason, "type": error_type,
                 "attempt": attempt, "at": self.clock()}
        activity = self._activity(node_name, seq, attempt, started, Outcome.FAILED,
                                  error=reason, transition=transition, sent=sent, received=received, trace=trace)
        applied = self.store.fail(instance.id, seq=seq, attempt=attempt, activity=activity, error=error,
                                  noop=self._activity(node_name, seq, attempt, started, Outcome.NOOP,
                                                      reason=f"late failure ignored: {reason}"), statuses=statuses)
        return StepReport(Outcome.FAILED if applied.applied else Outcome.NOOP, applied.status)

    # -- timers and the sweeper --------------------------------------------------------------

    def tick(self, limit: int = 500, lease_seconds: float = 60.0, budget_seconds: float = 0.8) -> int:
        """Move on every instance whose wait or retry backoff is due. Returns how many.

        Claims up to ``limit`` due timers at a time, reads them in one round trip, and goes on
        claiming while batches come back full, for up to ``budget_seconds`` (a morning's worth
        of waits ending at the open is woken in a few ticks, not one batch per beat).
        """
        self.check_data_set()
        moved = 0
        until = time.monotonic() + budget_seconds
        while True:
            now = self.clock()
            claimed = [iid for iid, _due in self.store.claim_due_timers(now, limit, lease_seconds)]
            loaded = {instance.id: instance for instance in self.store.load_many(claimed)}
            for instance_id in claimed:
                moved += self._move_on(loaded.get(instance_id), instance_id, now)
            if len(claimed) < limit or time.monotonic() > until:
                return moved + self.gatherer.tick(self.clock())

    def _move_on(self, instance: Instance | None, instance_id: str, now: float) -> int:
        if instance is None or instance.timer is None:
            self.store.release(instance_id, "timers")
            return 0
        definition = self.store.definition(instance.workflow, instance.version)
        if instance.timer == "wake" and instance.status is InstanceStatus.WAITING:
            return self._wake(instance, definition, now)
        if instance.timer == "retry" and instance.status is InstanceStatus.RUNNING:
            return self._resend(instance, definition, now, instance.attempt, activity=None)
        if instance.timer == TIMEOUT_TIMER and instance.status is InstanceStatus.AWAITING:
            return fire_timeout(self, instance, definition, now)
        self.store.release(instance_id, "timers")
        return 0

    def _wake(self, instance: Instance, definition: Definition, now: float) -> int:
        node = definition.nodes[instance.node]
        assert isinstance(node, WaitNode)
        started = self.clock()
        try:
            nxt = self.resolve(definition, node.next, self.scope(definition, instance))
        except StepFailed as exc:
            self._fail(instance, definition, instance.node, instance.seq, instance.attempt, started, str(exc),
                       "StepFailed")
            return 1
        activity = self._activity(instance.node, instance.seq, 1, started, Outcome.WOKE,
                                  next=nxt.node, via=list(nxt.via) or None)
        placement = self.placement(definition, nxt, now)
        applied = self.transition(definition, instance.id, lambda send, clear: self.store.advance(
            instance.id, seq=instance.seq, statuses=(InstanceStatus.WAITING,), activity=activity,
            placement=placement, carrier=clear, send=send),
            (nxt.node, instance.seq + 1, 1) if nxt.kind is NextKind.STEP else None)
        return int(applied.applied)

    def _resend(self, instance: Instance, definition: Definition, now: float, attempt: int,
                activity: Activity | None) -> int:
        node = definition.nodes[instance.node]
        assert isinstance(node, StepNode)
        placement = Placement(inflight=True, queued=step_allowance(node))
        applied = self.transition(definition, instance.id, lambda send, clear: self.store.retry(
            instance.id, seq=instance.seq, attempt=instance.attempt, next_attempt=attempt, placement=placement,
            activity=activity, statuses=(InstanceStatus.RUNNING,), carrier=clear, send=send),
            (instance.node, instance.seq, attempt))
        return int(applied.applied)

    def reconcile(self, every: float = DEFAULT_RECONCILE_SECONDS, limit: int = RECONCILE_BATCH) -> int:
        """Re-send queued steps whose message is lost; returns how many. At most once per ``every``.

        A step that waits in a queue has no deadline (a backlog is not a loss), so a message that
        disappears before a worker starts it (the broker dropped it, Redis came back from an older
        AOF, a worker died holding it) is found here instead: a step queued for more than
        ``every`` seconds whose message is in neither its service's queue lists nor the broker's
        unacknowledged messages -- or was delivered more than ``FULL_CHECK_PERIODS`` x ``every``
        ago and still has not started -- is a suspect; one found missing by two reconciliations
        in a row, still queued at the same step, is re-sent (next attempt, recorded). Cheap when
        nothing is wrong: the messages are only read one by one when their count is below the
        number of queued steps, or when a queued step is older than ``FULL_CHECK_PERIODS`` x
        ``every``. ``every=0``: no rate limit (tests).
        """
        if every > 0 and not self.store.lease_reconcile(every):
            return 0
        # Ages are measured on the wall clock, as the broker and the store stamp messages.
        now = time.time()
        candidates = self.store.queued_since(now - every, limit)
        if not candidates:
            self.store.swap_suspects({})
            return 0
        heads = self.store.step_heads([iid for iid, _sent in candidates])
        steps: dict[str, tuple[tuple[str, str, int, int], float]] = {}
        queues: set[str] = set()
        seen: set[tuple[str, int]] = set()
        for iid, sent in candidates:
            head = heads.get(iid)
            if head is None:
                self.store.release(iid, "queued")
                continue
            definition = self.store.definition(head.workflow, head.version)
            node = definition.nodes.get(head.node)
            if head.status is not InstanceStatus.RUNNING or not isinstance(node, StepNode):
                continue
            if (head.workflow, head.version) not in seen:
                seen.add((head.workflow, head.version))
                queues.update(step_queues(definition))
            steps[iid] = ((iid, head.node, head.seq, head.attempt), sent)
        held_limit = every * FULL_CHECK_PERIODS
        if now - candidates[0][1] < held_limit:
            counted = self.enqueuer.count(queues)
            if counted is None or counted >= self.store.queued_count():
                return 0  # every queued step can have its message: nothing to look for
        pending = self.enqueuer.pending(queues)
        if pending is None:
            return 0
        missing = {}
        for iid, (key, _sent) in steps.items():
            delivered = pending.get(key)
            if delivered is None or (delivered and now - delivered > held_limit):
                missing[iid] = f"{key[2]}:{key[3]}"
        # A step a worker started while the lists were read is no longer queued: not a suspect.
        still = self.store.queued_at_many(list(missing))
        missing = {iid: mark for iid, mark in missing.items() if still.get(iid) == steps[iid][1]}
        previous = self.store.swap_suspects(missing)
        resent = 0
        for iid, mark in missing.items():
            key, sent = steps[iid]
            if previous.get(iid) != mark or self.store.queued_at(iid) != sent:
                continue
            instance = self.store.load(iid)
            if instance is None or (instance.node, instance.seq, instance.attempt) != key[1:]:
                continue
            definition = self.store.definition(instance.workflow, instance.version)
            where = "found in no queue nor among the delivered messages" if pending.get(key) is None else \
                f"delivered {now - pending[key]:.0f}s ago and never started (its worker died holding it)"
            log.warning("step %s/%s seq %s attempt %s queued %.0fs ago: message %s; re-sending",
                        iid, instance.node, instance.seq, instance.attempt, now - sent, where)
            resent += self._resend(instance, definition, self.clock(), instance.attempt + 1, activity=self._activity(
                instance.node, instance.seq, instance.attempt, self.clock(), Outcome.RETRY,
                error=f"message lost: queued {now - sent:.0f}s ago, {where}", retry_in=0))
        return resent

    def sweep(self, limit: int = 500, lease_seconds: float = 60.0) -> int:
        """Re-send started steps that made no progress within their node's timeout; fail them when tries
        run out. A step only has a deadline once a worker started it (see :meth:`reconcile` for
        messages lost before that)."""
        self.check_data_set()
        now = self.clock()
        handled = 0
        for instance_id, _deadline in self.store.claim_overdue(now, limit, lease_seconds):
            instance = self.store.load(instance_id)
            if instance is None or instance.status is not InstanceStatus.RUNNING:
                self.store.release(instance_id, "deadlines")
                continue
            definition = self.store.definition(instance.workflow, instance.version)
            node = definition.nodes[instance.node]
            if not isinstance(node, StepNode):
                self.store.release(instance_id, "deadlines")
                continue
            started = self.clock()
            reason = f"no progress within {node.timeout_seconds:g}s (lost message, dead worker or hung step)"
            limit_attempts = max(node.retry.max_attempts, MIN_TIMEOUT_ATTEMPTS)
            if instance.attempt >= limit_attempts:
                self._fail(instance, definition, instance.node, instance.seq, instance.attempt, started,
                           f"timeout: {reason}; gave up after {instance.attempt} attempts", "Timeout")
            else:
                self._resend(instance, definition, now, instance.attempt + 1, activity=self._activity(
                    instance.node, instance.seq, instance.attempt, started, Outcome.RETRY,
                    error=f"timeout: {reason}", retry_in=0))
            handled += 1
        return handled
