"""A step's life, top to bottom, and the named hooks each concern plugs into.

One delivered step message goes through::

    receive   the message (instance id, node, seq, attempt)         hooks: on_missing
    start     store.start: mark it started, read the instance      hooks: take_over (stale delivery)
    build     evaluate the node's input template                   hooks: before_call (limits)
    call      the action (``execute``)                              hooks: on_error (retries)
    decide    resolve the transition to the next node               hooks: chain_rule (inline)
    apply     one compare-and-set: record, place, send the next     hooks: after_apply (gather)
    continue  the next step here when chained, else done           hooks: after_step (metrics),
                                                                          after_run (limits),
                                                                          after_delivery (draining)

Every change is one store operation (:mod:`engine.store.instances`; one Lua compare-and-set
each), applied through :class:`~engine.runtime.outcomes.StepOutcomes`. The timers and the
sweeper are the same kind of dispatch: ``before_timers``, then the concern that owns the due
timer's kind (``on_timer``), ``on_tick``, ``on_sweep``, ``on_reconcile``.

The hook lists are resolved once, when the concerns are plugged in (:meth:`Pipeline.plug`):
a step pays for the hooks that some concern overrides, nothing for the others.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from engine.broker import Enqueuer
from engine.clock import Clock, system_clock
from engine.definitions.model import Definition, HttpNode, RecordLevel, ServiceNode, StepNode
from engine.errors import ActionFailed, ExpressionError, StepFailed
from engine.expressions.cel import compile_template
from engine.model import TERMINAL_STATUSES, Instance, InstanceStatus, Outcome
from engine.runtime.dispatcher import NextKind, target_of
from engine.runtime.hooks import Execute, Hook, Inline, overriding
from engine.runtime.outcomes import StepOutcomes, StepReport, step_deadline
from engine.service import Transition
from engine.store.redis_store import Placement, RedisStore

log = logging.getLogger(__name__)


class Pipeline(StepOutcomes):
    """Runs steps and timers against a store through the hooks of its concerns."""

    def __init__(self, store: RedisStore, enqueuer: Enqueuer, clock: Clock = system_clock,
                 epoch: str | None = None, hooks: Sequence[Hook] = ()) -> None:
        super().__init__(store, enqueuer, clock, epoch)
        #: host:pid of this process, recorded as the carrier of the steps it runs inline.
        self.process = f"{socket.gethostname()}:{os.getpid()}"
        self.plug(hooks)

    def plug(self, hooks: Sequence[Hook]) -> None:
        """Plug in the concerns ``hooks`` (in order) and resolve each hook's list once."""
        self.hooks = tuple(hooks)
        self.after_apply = overriding(self.hooks, "after_apply")
        self._on_missing = overriding(self.hooks, "on_missing")
        self._take_over = overriding(self.hooks, "take_over")
        self._before_call = overriding(self.hooks, "before_call")
        self._after_run = overriding(self.hooks, "after_run")
        self._on_error = overriding(self.hooks, "on_error")
        self._chain_rule = overriding(self.hooks, "chain_rule")
        self._after_step = overriding(self.hooks, "after_step")
        self._after_delivery = overriding(self.hooks, "after_delivery")
        self._before_timers = overriding(self.hooks, "before_timers")
        self._on_tick = overriding(self.hooks, "on_tick")
        self._on_sweep = overriding(self.hooks, "on_sweep")
        self._on_reconcile = overriding(self.hooks, "on_reconcile")
        self._timers = {hook.timer: (hook.timer_status, hook.on_timer) for hook in self.hooks if hook.timer}

    def hook(self, kind: type[Hook]) -> Hook | None:
        """The plugged-in concern of type ``kind``, if any."""
        return next((hook for hook in self.hooks if isinstance(hook, kind)), None)

    # -- a step: receive, start -----------------------------------------------------------------

    def run_step(self, instance_id: str, node_name: str, seq: int, attempt: int, execute: Execute,
                 inline: Inline | None = None) -> StepReport:
        """Run one delivered step message to its end (applied, retried, failed or no-op).

        With ``inline`` (and the inline concern plugged in), the steps after it that ``inline``
        accepts run here too, without a broker hop; each is still its own compare-and-set with
        its own activity record, and the instance remembers which message carries it.
        """
        started = self.clock()
        delivered = f"{node_name}:{seq}:{attempt}"
        # The process running the step is recorded with its start (the liveness concern's sweep
        # checks that process's mark); a chain run inline keeps the same carrier.
        carrier = f"{delivered}@{self.process}"
        instance = self.store.start(instance_id, node_name, seq, attempt, started, carrier)
        if instance is None:
            for missing in self._on_missing:
                missing(self, instance_id)
            log.warning("step for unknown instance %s dropped (expired or never created)", instance_id)
            return StepReport("missing")
        if instance.seq != seq or instance.node != node_name or instance.status in TERMINAL_STATUSES:
            taking_over = instance.status is InstanceStatus.RUNNING and any(
                take(self, instance, delivered, inline) for take in self._take_over)
            self._noop(instance_id, node_name, seq, attempt, started,
                       f"stale delivery: instance is at seq {instance.seq} ({instance.status.value})"
                       + ("; its worker died carrying it inline: running that step now" if taking_over else ""))
            if not taking_over:
                return StepReport(Outcome.NOOP, instance.status)
            node_name, seq, attempt = instance.node, instance.seq, instance.attempt
            self.store.start(instance_id, node_name, seq, attempt, started, carrier)  # this process carries it now
        if instance.status is InstanceStatus.PAUSED and self._skip_paused(instance, node_name, seq, attempt, started):
            return StepReport(Outcome.SKIPPED, InstanceStatus.PAUSED)
        definition = self.store.definition(instance.workflow, instance.version)
        first_started, chained = started, 0
        while True:
            chain = None
            for rule in self._chain_rule:
                chain = rule(self, inline, chained, first_started)
                if chain is not None:
                    break
            report = self._run(instance, definition, node_name, seq, attempt, started, execute, chain, carrier)
            for ended in self._after_run:
                ended(self, instance, definition, node_name, seq, report)
            for after in self._after_step:
                after(self, instance.workflow, node_name, str(report.outcome), self.clock() - started)
            if report.carried is None:  # continue: only a chained step runs here
                return report
            instance = report.carried
            node_name, seq, attempt, started = instance.node, instance.seq, 1, self.clock()
            chained += 1

    def after_delivery(self, queue: str, accepts: Callable[[str], bool], execute: Execute,
                       inline: Inline | None) -> int:
        """A delivered message of ``queue`` is done: let the concerns run more steps here (draining)."""
        return sum(after(self, self.run_step, queue, accepts, execute, inline) for after in self._after_delivery)

    def _noop(self, instance_id: str, node_name: str, seq: int, attempt: int, started: float, reason: str) -> None:
        self.store.noop(instance_id, self.activity(node_name, seq, attempt, started, Outcome.NOOP, reason=reason))

    def _skip_paused(self, instance: Instance, node_name: str, seq: int, attempt: int, started: float) -> bool:
        """Drop a step of a paused instance; False if it was resumed meanwhile (run it then)."""
        applied = self.store.park(instance.id, seq=seq, activity=self.activity(
            node_name, seq, attempt, started, Outcome.SKIPPED, reason="instance paused; resume re-sends this step"))
        return applied.applied or applied.status is not InstanceStatus.RUNNING

    # -- build input, call ----------------------------------------------------------------------

    def _run(self, instance: Instance, definition: Definition, node_name: str, seq: int, attempt: int,
             started: float, execute: Execute, inline: Inline | None, carrier: str) -> StepReport:
        for before in self._before_call:  # a limit may park the step here (the worker goes on)
            parked = before(self, instance, definition, node_name, seq, attempt, started)
            if parked is not None:
                return parked
        node = definition.nodes[node_name]
        assert isinstance(node, StepNode)
        level = definition.record_level(node_name)
        try:
            payload = compile_template(node.input).evaluate(self.scope(definition, instance))
        except ExpressionError as exc:
            return self.fail(instance, definition, node_name, seq, attempt, started,
                             f"input: {exc}", "ExpressionError")
        sent = payload if level is RecordLevel.FULL else None
        try:
            transition = execute(node, payload)
        except ActionFailed as exc:
            return self.fail(instance, definition, node_name, seq, attempt, started, str(exc),
                             type(exc).__name__, sent=sent)
        except Exception as exc:
            log.info("step %s/%s attempt %s raised %r", instance.id, node_name, attempt, exc)
            return self._error(instance, definition, node_name, seq, attempt, started, exc, sent)
        return self._advance(instance, definition, node_name, seq, attempt, started, transition, sent, level,
                             inline, carrier)

    def _error(self, instance: Instance, definition: Definition, node_name: str, seq: int, attempt: int,
               started: float, exc: Exception, sent: Any) -> StepReport:
        """The action raised: the first concern that answers decides (retries); else the step fails."""
        for on_error in self._on_error:
            report = on_error(self, instance, definition, node_name, seq, attempt, started, exc, sent)
            if report is not None:
                return report
        return self.fail(instance, definition, node_name, seq, attempt, started, f"{type(exc).__name__}: {exc}",
                         type(exc).__name__, sent=sent)

    # -- decide, apply ---------------------------------------------------------------------------

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
            return self.fail(instance, definition, node_name, seq, attempt, started, str(exc), "StepFailed",
                             sent=sent, transition=transition.name,
                             received=data if level is not RecordLevel.METADATA else None)
        now = self.clock()
        service = node if isinstance(node, ServiceNode) else None  # (a pydantic attribute miss is slow)
        activity = self.activity(
            node_name, seq, attempt, started, Outcome.APPLIED, transition=transition.name,
            service=service and service.service, action=service and service.action,
            url=node.url if isinstance(node, HttpNode) else None, sent=sent,
            received=data if level is not RecordLevel.METADATA else None,
            next=nxt.node, via=list(nxt.via) or None,
        )
        chained = nxt.kind is NextKind.STEP and inline is not None and inline(definition.nodes[nxt.node])
        noop = self.activity(node_name, seq, attempt, started, Outcome.NOOP, transition=transition.name,
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

    # -- timers and the sweeper ------------------------------------------------------------------

    def tick(self, limit: int = 500, lease_seconds: float = 60.0, budget_seconds: float = 0.8) -> int:
        """Move on every instance whose timer is due (a wait, a retry's backoff, an await's timeout),
        then what the concerns keep due (``on_tick``: gather batches). Returns how many.

        Claims up to ``limit`` due timers at a time, reads them in one round trip, and goes on
        claiming while batches come back full, for up to ``budget_seconds`` (a morning's worth
        of waits ending at the open is woken in a few ticks, not one batch per beat). Each due
        timer goes to the concern that owns its kind (``Hook.timer``); one nobody owns, or at an
        instance no longer in that kind's status, is released.
        """
        for before in self._before_timers:
            before(self)
        moved = 0
        until = time.monotonic() + budget_seconds
        while True:
            now = self.clock()
            claimed = [iid for iid, _due in self.store.claim_due_timers(now, limit, lease_seconds)]
            loaded = {instance.id: instance for instance in self.store.load_many(claimed)}
            for instance_id in claimed:
                moved += self._move_on(loaded.get(instance_id), instance_id, now)
            if len(claimed) < limit or time.monotonic() > until:
                return moved + sum(tick(self, self.clock()) for tick in self._on_tick)

    def _move_on(self, instance: Instance | None, instance_id: str, now: float) -> int:
        if instance is not None and instance.timer is not None:
            owner = self._timers.get(instance.timer)
            if owner is not None and instance.status is owner[0]:
                return owner[1](self, instance, self.store.definition(instance.workflow, instance.version), now)
        self.store.release(instance_id, "timers")
        return 0

    def sweep(self) -> int:
        """Re-send started steps whose worker process is gone, or that made no progress within their node's
        timeout; fail them when tries run out (the ``on_sweep`` hooks: the liveness and timeouts
        concerns). Returns how many."""
        for before in self._before_timers:
            before(self)
        return sum(sweep(self) for sweep in self._on_sweep)

    def reconcile(self, every: float, limit: int) -> int:
        """Re-send queued steps whose message is lost (the ``on_reconcile`` hooks); returns how many."""
        return sum(reconcile(self, every, limit) for reconcile in self._on_reconcile)
