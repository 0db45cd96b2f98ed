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
each), applied through :class:`~engine.runtime.outcomes.StepOutcomes`. When the next step runs
here and its action only reads (``@action(..., reads_only=True)``), a step's transition is held
and sent with the next one's, in one round trip and one script call (:meth:`Pipeline._advance`); in a
batch a worker drained, the transitions into the instances' writing actions are held too and
confirmed together, in one round trip (:meth:`Pipeline.confirm_together`). The timers and the
sweeper are the same kind of dispatch: ``before_timers``, then the concern that owns the due
timer's kind (``on_timer``), ``on_tick``, ``on_sweep``, ``on_reconcile``.

The hook lists are resolved once, when the concerns are plugged in (:meth:`Pipeline.plug`):
a step pays for the hooks that some concern overrides, nothing for the others.

The named hooks are the methods of :class:`Hook`, one no-op base class (its docstrings are the
hook reference). A concern -- retries, timeouts, metrics, inline chaining, draining, the data-set
check, waits, signals' timeouts, gather batches, limits, liveness -- is a subclass of
:class:`Hook` in a module of its own (:mod:`engine.runtime.concerns`) that overrides the hooks it
needs; they are called in the order the concerns were registered
(:func:`engine.runtime.runner.concerns`). Every hook gets the runtime as
:class:`~engine.runtime.outcomes.StepOutcomes`: the public operations a concern may use to decide
and record (``transition``, ``fail``, ``resend``, ``activity``, ``scope``, ``resolve``,
``placement``), plus the store and the clock.

A delivered message is run :func:`patiently`: while Redis is unreachable the step keeps trying
(every write is a compare-and-set, so trying again is harmless), then gives the message back.
Trying again runs the *delivered* step; when the error stopped a step this process was running
inline after it, the instance is at that step, carried by this process's delivery: the delivery
is stale, and the process, which no longer runs that step, resumes it (:meth:`Pipeline.run_step`;
nobody else would before its timeout, the liveness mark of this process being fresh).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import redis

from engine.broker import Enqueuer
from engine.clock import Clock, system_clock
from engine.definitions.nodes import Definition, Node, RecordLevel, StepNode
from engine.errors import ActionFailed, DataSetLost, ExpressionError, StepFailed
from engine.instance import TERMINAL_STATUSES, Activity, Instance, InstanceStatus, Outcome
from engine.runtime.outcomes import (
    Change,
    HeldStep,
    NextKind,
    StepOutcomes,
    StepPlan,
    StepReport,
    clone,
    record,
    step_deadline,
    target_of,
    worker_name,
)
from engine.service import Transition
from engine.store.instances import LIVE
from engine.store.redis_store import Applied, Placement, RedisStore
from engine.store.riders import Rider

log = logging.getLogger(__name__)

#: The statuses a reads-only step's transition applies in when the step ran before the transition
#: before it was confirmed: running only (a step's transition otherwise applies to a paused instance too).
RUNNING_ONLY = (InstanceStatus.RUNNING,)

#: Why a step's transition was not applied (its no-op record): the instance moved on before it ...
LATE_NOOP = "another delivery applied first"
#: ... or, for a reads-only step run before the transition before it was confirmed, was paused or moved on.
SPECULATIVE_NOOP = "the instance was paused or moved on before this reads-only step's turn"

#: How long a step keeps trying to reach Redis before giving the message back.
REDIS_PATIENCE_SECONDS = 120.0


def patiently(fn: Callable[[], Any]) -> Any:
    """Run ``fn``, retrying while Redis is unreachable (it is idempotent: every write is a CAS)."""
    delay, waited = 0.5, 0.0
    while True:
        try:
            return fn()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
            if waited >= REDIS_PATIENCE_SECONDS:
                raise
            log.warning("Redis unreachable (%s); retrying in %.1fs", exc, delay)
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 5.0)
        except DataSetLost as exc:
            log.critical("%s", exc)
            raise


#: Calls a step node's action (or endpoint) on its input.
Execute = Callable[[StepNode, Any], Transition]
#: Says whether a worker may run a node's step itself, right after the step before it.
Inline = Callable[[Node], bool]
#: Runs one delivered step (the pipeline's ``run_step``), for hooks that run more steps.
RunStep = Callable[[str, str, int, int, Execute, Inline | None], StepReport]


def reads_only(rule: Inline | None, node: Node) -> bool:
    """True when the worker's inline ``rule`` says ``node``'s action only reads (``WorkerRule.reads_only``)."""
    check = getattr(rule, "reads_only", None)
    return check is not None and bool(check(node))


#: A change held to be sent later: its definition, its instance, the change, the step to send after it.
HeldChange = tuple[Definition, str, Change, tuple[str, int, int] | None]


class HeldEnds:
    """The ends a thread holds (:meth:`Pipeline.defer_ends`): added and sent by that thread, and taken by
    another one that sends them in its place (a batch's release, while the thread runs a slow action)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.changes: list[HeldChange] = []

    def add(self, changes: Sequence[HeldChange]) -> None:
        """Hold ``changes`` too."""
        with self._lock:
            self.changes.extend(changes)

    def take(self) -> list[HeldChange]:
        """Every change held, now no longer held (the caller sends them)."""
        with self._lock:
            taken, self.changes = self.changes, []
        return taken

    def restore(self, changes: Sequence[HeldChange]) -> None:
        """Hold ``changes`` again, before the others (their round trip failed)."""
        with self._lock:
            self.changes[:0] = changes


class Hook:
    """A concern plugged into a step's life. Every hook is a no-op here; override the ones you need.

    Hooks are called in registration order; the ones that answer (``take_over``, ``on_error``,
    ``chain_rule``) stop at the first that does.
    """

    #: The timer kind this concern moves on (:meth:`on_timer`), and the status it moves it from.
    timer: str | None = None
    timer_status: InstanceStatus | None = None

    # -- receive / start ----------------------------------------------------------------------

    def on_missing(self, runtime: StepOutcomes, instance_id: str) -> None:
        """receive: the message names an instance the store does not have (the step is dropped).

        May raise to stop the worker (the data-set check raises ``DataSetLost``).
        """

    def take_over(self, runtime: StepOutcomes, instance: Instance, delivered: str, inline: Inline | None) -> bool:
        """start: the delivery is stale (``delivered`` = "node:seq:attempt"; the instance is elsewhere).

        Return True to run the instance's current step here instead of dropping the delivery
        (inline chaining: the worker carrying it died).
        """
        return False

    # -- call ---------------------------------------------------------------------------------

    def before_call(self, runtime: StepOutcomes, instance: Instance, definition: Definition, node_name: str,
                    seq: int, attempt: int, started: float) -> StepReport | None:
        """call: a started step is about to build its input and call its action (inline ones too).

        Return a report to stop it here -- the concern parked it through a store operation (the
        limits: over its rate or concurrency limit, the instance waits) -- or None to go on.
        """
        return None

    def after_run(self, runtime: StepOutcomes, instance: Instance, definition: Definition, node_name: str,
                  seq: int, report: StepReport) -> None:
        """continue: the step ``node_name``/``seq`` of ``instance`` ended with ``report`` (once per step run)."""

    def on_error(self, runtime: StepOutcomes, instance: Instance, definition: Definition, node_name: str, seq: int,
                 attempt: int, started: float, exc: Exception, sent: Any) -> StepReport | None:
        """call: the action raised ``exc`` (anything but ``ActionFailed``, which fails the step).

        Return the report of what was done (retried, failed); None leaves it to the next hook,
        and when none answers the step fails.
        """
        return None

    # -- decide / continue --------------------------------------------------------------------

    def chain_rule(self, runtime: StepOutcomes, inline: Inline | None, chained: int,
                   first_started: float) -> Inline | None:
        """decide: which next step this worker may run itself, without a broker hop, after the
        ``chained``-th step run inline since the delivery (started at ``first_started``).

        ``inline`` is the worker's rule (None: none). Return the rule to apply to the next
        node, or None: the next step is sent as a message.
        """
        return None

    # -- apply --------------------------------------------------------------------------------

    def after_apply(self, runtime: StepOutcomes, applied: Applied) -> None:
        """apply: a change was applied through ``transition`` (any step, signal, timer or batch member)."""

    def after_step(self, runtime: StepOutcomes, workflow: str, node: str, outcome: str, seconds: float) -> None:
        """continue: one step ended with ``outcome`` after ``seconds`` (once per step, inline ones too)."""

    def after_delivery(self, runtime: StepOutcomes, run_step: RunStep, queue: str, accepts: Callable[[str], bool],
                       execute: Execute, inline: Inline | None) -> int:
        """continue: a delivered message of ``queue`` is done; run more steps here (draining). Returns how many."""
        return 0

    # -- timers and the sweeper ---------------------------------------------------------------

    def before_timers(self, runtime: StepOutcomes) -> None:
        """The timers or the sweeper are about to run (may raise to stop them)."""

    def on_timer(self, runtime: StepOutcomes, instance: Instance, definition: Definition, now: float) -> int:
        """A timer of kind :attr:`timer` is due on ``instance`` (at :attr:`timer_status`); 1 if it moved on."""
        return 0

    def on_timers(self, runtime: StepOutcomes, due: Sequence[tuple[Instance, Definition]], now: float) -> int:
        """Timers of kind :attr:`timer` are due on each of ``due`` (instance, its definition); how many moved on.

        :meth:`on_timer` for each, in turn; a concern may override it to move them together.
        """
        return sum(self.on_timer(runtime, instance, definition, now) for instance, definition in due)

    def on_tick(self, runtime: StepOutcomes, now: float) -> int:
        """The timers ran (every second): move on what this concern keeps due; returns how many moved."""
        return 0

    def on_sweep(self, runtime: StepOutcomes) -> int:
        """The sweeper runs: re-send or fail started steps past their deadline; returns how many."""
        return 0

    def on_reconcile(self, runtime: StepOutcomes, every: float, limit: int) -> int:
        """The sweeper looks for lost messages of queued steps (at most once per ``every``); how many re-sent."""
        return 0


def overriding(hooks: tuple[Hook, ...], name: str) -> tuple[Any, ...]:
    """The bound ``name`` hooks of the concerns in ``hooks`` that override it, in order (resolved once)."""
    base = getattr(Hook, name)
    return tuple(getattr(hook, name) for hook in hooks if getattr(type(hook), name) is not base)



class Pipeline(StepOutcomes):
    """Runs steps and timers against a store through the hooks of its concerns."""

    def __init__(self, store: RedisStore, enqueuer: Enqueuer, clock: Clock = system_clock,
                 epoch: str | None = None, hooks: Sequence[Hook] = ()) -> None:
        super().__init__(store, enqueuer, clock, epoch)
        #: host:pid of this process, recorded as the carrier of the steps it runs inline.
        self.process = f"{socket.gethostname()}:{os.getpid()}"
        #: The deliveries this process runs now (instance id, carrier ``node:seq:attempt@host:pid``), by thread.
        self._carrying: dict[tuple[str, str], int] = {}
        self._carrying_lock = threading.Lock()
        #: Commands to send with this thread's next step's last change (:meth:`ride`).
        self._riding = threading.local()
        #: This thread's transitions not yet sent: a reads-only step runs after them (:meth:`_advance`).
        self._held = threading.local()
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
        self._timers = {hook.timer: (hook.timer_status, hook.on_timers) for hook in self.hooks if hook.timer}

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
        # The process running the step is recorded with its start (the liveness concern's sweep
        # checks that process's mark); a chain run inline keeps the same carrier.
        carrier = self.carrier(node_name, seq, attempt)
        with self._delivering(instance_id, carrier):
            return self._deliver(instance_id, node_name, seq, attempt, execute, inline, carrier)

    @contextlib.contextmanager
    def _delivering(self, instance_id: str, carrier: str) -> Iterator[None]:
        """Count a thread of this process running the delivery ``carrier`` of ``instance_id`` (see
        :meth:`_abandoned_here`) while the block runs."""
        held = (instance_id, carrier)
        with self._carrying_lock:
            carrying = self._carrying
            carrying[held] = carrying.get(held, 0) + 1
        try:
            yield
        finally:
            with self._carrying_lock:
                left = carrying[held] - 1
                if left:
                    carrying[held] = left
                else:
                    del carrying[held]

    def carrier(self, node_name: str, seq: int, attempt: int) -> str:
        """The carrier this process records when it runs the delivery of step ``node_name``/``seq``/``attempt``."""
        return f"{node_name}:{seq}:{attempt}@{self.process}"

    def ride(self, riders: Sequence[Rider]) -> None:
        """Send ``riders`` (:mod:`engine.store.riders`) with the last change of the next step this thread
        runs -- its transition, when no step of the instance runs inline after it -- in the same round
        trip; () drops any that were not sent. The draining concern starts its next step this way."""
        self._riding.riders = tuple(riders)

    def defer_ends(self, on: bool) -> None:
        """While ``on``, this thread holds the last change of each delivery that leaves its instance at an
        await or a terminal node (nothing to send, no limit) and sends it with the thread's next change
        (before the next instance's action that writes, or at :meth:`send_deferred`): the instances of a
        drained batch cost a round trip each only where an action writes. Off: what is held is sent now.

        Until it is sent, the instance stays at its step, carried by this process: were the process to
        die, the liveness sweep re-sends that step, as for any step in flight."""
        self._held.defer = on
        if not on:
            self.send_deferred()

    def confirm_together(self, on: bool) -> None:
        """While ``on``, this thread holds the transition into each step it would run next, here, whose action
        writes (with the reads-only transitions held before it; not a node of ``"effect": "external"``, nor
        one with limits: those run as a step alone does), and the step's report carries it as ``held``
        instead: :meth:`send_pending` confirms every such instance's transitions in one round trip, and
        each ``held.resume`` then runs its confirmed instance's next step (the draining concern runs a batch
        so: every instance's reads, then one round trip, then every instance's writing action). An
        action that writes still runs only once its instance's transitions before it are confirmed.
        Off: what is held and not sent is dropped; those instances stay at their step, carried by this
        process, for the liveness sweep or their timeout to send again, as any step in flight."""
        self._held.together = on
        if not on and getattr(self._held, "pending", None):
            log.warning("%d held transitions dropped unsent: their instances' steps are sent again later",
                        len(self._held.pending))
            self._held.pending = []

    def send_pending(self) -> dict[str, Applied]:
        """Send, in one round trip, this thread's held ends (:meth:`defer_ends`) and the transitions held
        for :meth:`confirm_together`; what each instance's last one gave, by instance id."""
        pending = getattr(self._held, "pending", None) or []
        self._held.pending = []
        return {instance_id: done for (_, instance_id, _, _), done in self._send_after(self.held_ends(), pending)}

    def send_deferred(self) -> None:
        """Send the ends this thread holds (:meth:`defer_ends`), in one round trip."""
        self.send_ends(self.held_ends())

    def send_ends(self, ends: HeldEnds) -> None:
        """Send the changes ``ends`` holds -- this thread's, or another's that runs a slow step (a batch's
        release) -- in one round trip; when that fails, they stay held (and this raises)."""
        self._send_after(ends, [])

    def _send_after(self, ends: HeldEnds, changes: Sequence[HeldChange]) -> list[tuple[HeldChange, Applied]]:
        """Send the changes ``ends`` holds, then ``changes``, in one round trip (none when there are none);
        each change sent with what it gave. When that fails, ``ends``' changes stay held (and this raises)."""
        deferred = ends.take()
        sent = [*deferred, *changes]
        if not sent:
            return []
        try:
            applied = self.apply_changes(sent)
        except Exception:
            ends.restore(deferred)
            raise
        return list(zip(sent, applied, strict=True))

    def held_ends(self) -> HeldEnds:
        """This thread's held ends (:meth:`defer_ends`)."""
        ends: HeldEnds | None = getattr(self._held, "ends", None)
        if ends is None:
            ends = self._held.ends = HeldEnds()
        return ends

    def _riders(self) -> Sequence[Rider]:
        """This thread's riders, once (see :meth:`ride`)."""
        riders = getattr(self._riding, "riders", ())
        if riders:
            self._riding.riders = ()
        return riders

    def _abandoned_here(self, instance: Instance, carrier: str) -> bool:
        """True when ``instance``'s current step is carried by ``carrier`` -- a delivery of this very
        process -- and no thread of this process runs it now (only the caller holds that delivery):
        the chain it carried stopped (a Redis error ended the run; :func:`patiently` ran the
        delivered step again), and nobody else runs that step."""
        if instance.status is not InstanceStatus.RUNNING or instance.carrier != carrier:
            return False
        with self._carrying_lock:
            return self._carrying.get((instance.id, carrier), 0) <= 1

    def _deliver(self, instance_id: str, node_name: str, seq: int, attempt: int, execute: Execute,
                 inline: Inline | None, carrier: str) -> StepReport:
        self._held.changes = []  # what an earlier delivery of this thread held was lost with it (Redis error)
        self._held.forgotten = {}  # this chain's forgotten context entries (see _advance)
        started = self.clock()
        delivered = f"{node_name}:{seq}:{attempt}"
        instance = self.store.start(instance_id, node_name, seq, attempt, started, carrier)
        if instance is None:
            for missing in self._on_missing:
                missing(self, instance_id)
            log.warning("step for unknown instance %s dropped (expired or never created)", instance_id)
            return StepReport("missing")
        if instance.seq != seq or instance.node != node_name or instance.status in TERMINAL_STATUSES:
            resuming = self._abandoned_here(instance, carrier)
            taking_over = resuming or (instance.status is InstanceStatus.RUNNING and any(
                take(self, instance, delivered, inline) for take in self._take_over))
            why = ("; this process's inline chain stopped there (Redis unreachable): resuming that step"
                   if resuming else "; its worker died carrying it inline: running that step now")
            self._noop(instance_id, node_name, seq, attempt, started,
                       f"stale delivery: instance is at seq {instance.seq} ({instance.status.value})"
                       + (why if taking_over else ""))
            if not taking_over:
                return StepReport(Outcome.NOOP, instance.status)
            node_name, seq, attempt = instance.node, instance.seq, instance.attempt
            self.store.start(instance_id, node_name, seq, attempt, started, carrier)  # this process carries it now
        if instance.status is InstanceStatus.PAUSED and self._skip_paused(instance, node_name, seq, attempt, started):
            return StepReport(Outcome.SKIPPED, InstanceStatus.PAUSED)
        definition = self.store.definition(instance.workflow, instance.version)
        return self._chain(instance, definition, node_name, seq, attempt, started, execute, inline, carrier,
                           started, 0)

    def _chain(self, instance: Instance, definition: Definition, node_name: str, seq: int, attempt: int,
               started: float, execute: Execute, inline: Inline | None, carrier: str, first_started: float,
               chained: int) -> StepReport:
        """Run the step ``node_name`` of ``instance``, then each step chained after it here."""
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
            if report.waits:  # its transition waits for its batch's (confirm_together)
                return StepReport(report.outcome, report.status, report.next_node, held=HeldStep(
                    report.carried, definition, functools.partial(self._resumed, report.carried, definition, execute,
                                                                  inline, carrier, first_started, chained + 1)))
            instance = report.carried
            node_name, seq, attempt, started = instance.node, instance.seq, 1, self.clock()
            chained += 1

    def _resumed(self, carried: Instance, definition: Definition, execute: Execute, inline: Inline | None,
                 carrier: str, first_started: float, chained: int) -> StepReport:
        """A held step's ``resume`` (:meth:`confirm_together`): once the transitions before ``carried``'s step are
        confirmed and the instance still runs, run that step and the ones chained after it."""
        self._held.forgotten = {}  # this chain's from here (the batch's other chains kept theirs)
        with self._delivering(carried.id, carrier):
            return self._chain(carried, definition, carried.node, carried.seq, carried.attempt, self.clock(),
                               execute, inline, carrier, first_started, chained)

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
        try:
            plan = self.plan(definition, node_name)
            payload = plan.input.evaluate(self.scope(definition, instance))
        except ExpressionError as exc:
            return self._unheld() or self.fail(instance, definition, node_name, seq, attempt, started,
                                               f"input: {exc}", "ExpressionError")
        sent = payload if plan.level is RecordLevel.FULL else None
        try:
            transition = execute(plan.node, payload)
        except ActionFailed as exc:
            return self._unheld() or self.fail(instance, definition, node_name, seq, attempt, started, str(exc),
                                               type(exc).__name__, sent=sent)
        except Exception as exc:
            log.info("step %s/%s attempt %s raised %r", instance.id, node_name, attempt, exc)
            return self._unheld() or self._error(instance, definition, node_name, seq, attempt, started, exc, sent)
        return self._advance(instance, definition, node_name, seq, attempt, started, transition, sent, plan,
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
                 started: float, transition: Transition, sent: Any, plan: StepPlan,
                 inline: Inline | None = None, carrier: str = "") -> StepReport:
        data = dict(transition.data)
        context = {**instance.context, node_name: data}
        level = plan.level
        try:
            nxt = self.resolve(definition, target_of(definition, node_name, transition.name),
                               self.scope(definition, instance, context))
        except StepFailed as exc:
            return self._unheld() or self.fail(
                instance, definition, node_name, seq, attempt, started, str(exc), "StepFailed", sent=sent,
                transition=transition.name, received=data if level is not RecordLevel.METADATA else None)
        now = self.clock()
        worker = worker_name()
        activity = record(
            seq=seq, node=node_name, attempt=attempt, outcome=Outcome.APPLIED, worker=worker, started_at=started,
            ended_at=now, transition=transition.name, service=plan.service, action=plan.action, url=plan.url,
            sent=sent, received=data if level is not RecordLevel.METADATA else None,
            next=nxt.node, via=list(nxt.via) or None,
        )
        step_next = nxt.kind is NextKind.STEP
        following = definition.nodes[nxt.node] if step_next else None
        chained = following is not None and inline is not None and inline(following)
        # a step run before the transition before it was confirmed (its action only reads) applies only
        # to a running instance: paused or cancelled meanwhile, what it read and computed is dropped
        held = self._held.changes
        speculative = bool(held)

        def noop() -> Activity:  # built only if the transition comes back stale (the store calls it)
            return record(seq=seq, node=node_name, attempt=attempt, outcome=Outcome.NOOP, worker=worker,
                          started_at=started, ended_at=now, transition=transition.name,
                          reason=SPECULATIVE_NOOP if speculative else LATE_NOOP)

        if chained:  # the next step starts here and now: its deadline runs from now, it is not queued
            placement = Placement.step(nxt.node, step_deadline(following, now))  # type: ignore[arg-type]
        else:
            placement = self.placement(definition, nxt, now)
        step = (nxt.node, seq + 1, 1) if step_next and not chained else None
        riders = () if chained else self._riders()  # the delivery's last change: what comes next rides along
        # the definition's drop_after_use entries that no node from here on reads go with this change
        forget = [entry for entry in self.unread(definition, nxt.node) if entry in context]
        # A held transition's context entry that a later transition of the same chain forgets is not
        # written at all: both go in one script call, and a speculative one (running only) applies
        # only where the ones after it apply too. ``forgotten``: entry -> seq of the transition that
        # forgets it, read when the held transitions are sent (this chain's, whichever thread sends them).
        forgotten: dict[str, int] = self._held.__dict__.setdefault("forgotten", {})
        if forget:
            context = {name: value for name, value in context.items() if name not in forget}
            for entry in forget:
                forgotten[entry] = seq

        def change(send: Any, clear: Any) -> Applied:
            unwritten = speculative and forgotten.get(node_name, -1) > seq
            return self.store.advance(
                instance.id, seq=seq, activity=activity, placement=placement,
                context=None if unwritten else (node_name, data), noop=noop,
                carrier=carrier if chained else clear, send=send, encoded=None if unwritten else transition.encoded,
                riders=riders, statuses=RUNNING_ONLY if speculative else LIVE, forget=forget)

        carried = None
        if chained:
            carried = clone(instance)  # what dataclasses.replace makes, without its look at every field
            carried.node, carried.seq, carried.attempt, carried.context = nxt.node, seq + 1, 1, context
            carried.status, carried.inflight, carried.carrier = InstanceStatus.RUNNING, True, carrier
            if not getattr(following, "limits", None):
                if reads_only(inline, following):
                    # the next action only reads: it runs now, and this transition goes with the next one's
                    held.append((definition, instance.id, change, None))
                    return StepReport(Outcome.APPLIED, InstanceStatus.RUNNING, nxt.node, carried)
                if getattr(self._held, "together", False) and getattr(following, "effect", None) != "external":
                    # the next action writes (inside the run): it runs once this transition and those held
                    # before it are confirmed, together with the other instances' of the batch (confirm_together)
                    self._held.__dict__.setdefault("pending", []).extend([*held, (definition, instance.id, change,
                                                                                  None)])
                    self._held.changes = []
                    return StepReport(Outcome.APPLIED, InstanceStatus.RUNNING, nxt.node, carried, waits=True)
        if step is None and carried is None and getattr(self._held, "defer", False) \
                and nxt.kind in (NextKind.AWAIT, NextKind.FINISH) and not getattr(plan.node, "limits", None):
            # held for the thread's next change (defer_ends); reported as it will be applied
            self.held_ends().add([*held, (definition, instance.id, change, None)])
            self._held.changes = []
            return StepReport(Outcome.APPLIED, nxt.status or InstanceStatus.AWAITING, nxt.node)
        applied = self._apply_held(definition, instance.id, change, step)
        if not applied.applied:
            return StepReport(Outcome.NOOP, applied.status)
        if carried is not None and applied.status is InstanceStatus.RUNNING:
            return StepReport(Outcome.APPLIED, applied.status, nxt.node, carried)
        return StepReport(Outcome.APPLIED, applied.status, nxt.node)

    def _apply_held(self, definition: Definition, instance_id: str, change: Change,
                    step: tuple[str, int, int] | None) -> Applied:
        """Apply ``change`` after this thread's held transitions (and the other instances' ends it holds,
        :meth:`defer_ends`), all in one round trip, one script call per instance (each its own
        compare-and-set, in order: when one of an instance's is refused, its ones after it are refused too)."""
        held = self._held.changes
        ends = self.held_ends()
        if not held and not ends.changes:
            return self.apply_change(definition, instance_id, change, step)
        self._held.changes = []
        return self._send_after(ends, [*held, (definition, instance_id, change, step)])[-1][1]

    def _unheld(self) -> StepReport | None:
        """Before a step that did not answer a transition records what happened to it: send this thread's
        held transitions. None when they applied (the step is where it ran); else the no-op report
        (the instance moved on before them: what this step did is dropped)."""
        held = self._held.changes
        if not held:
            return None
        self._held.changes = []
        applied = self.apply_changes(held)[-1]
        if applied.applied and applied.status is InstanceStatus.RUNNING:
            return None
        return StepReport(Outcome.NOOP, applied.status)

    # -- timers and the sweeper ------------------------------------------------------------------

    def tick(self, limit: int = 500, lease_seconds: float = 60.0, budget_seconds: float = 0.8,
             concerns: bool = True) -> int:
        """Move on every instance whose timer is due (a wait, a retry's backoff, an await's timeout),
        then what the concerns keep due (``on_tick``: gather batches). Returns how many.

        Claims up to ``limit`` due timers at a time, reads them in one round trip, and goes on
        claiming while batches come back full, for up to ``budget_seconds`` (a morning's worth
        of waits ending at the open is woken in a few ticks, not one batch per beat). Each due
        timer goes to the concern that owns its kind (``Hook.timer``); one nobody owns, or at an
        instance no longer in that kind's status, is released. ``concerns=False``: the due timers
        only, not ``on_tick`` (an early wake between two ticks).
        """
        for before in self._before_timers:
            before(self)
        moved = 0
        until = time.monotonic() + budget_seconds
        while True:
            now = self.clock()
            claimed = [iid for iid, _due in self.store.claim_due_timers(now, limit, lease_seconds)]
            loaded = {instance.id: instance for instance in self.store.load_many(claimed)}
            due: dict[str, list[tuple[Instance, Definition]]] = {}
            for instance_id in claimed:
                instance = loaded.get(instance_id)
                owner = None if instance is None or instance.timer is None else self._timers.get(instance.timer)
                if instance is None or owner is None or instance.status is not owner[0]:
                    self.store.release(instance_id, "timers")
                    continue
                due.setdefault(instance.timer, []).append(  # type: ignore[arg-type]
                    (instance, self.store.definition(instance.workflow, instance.version)))
            for kind, instances in due.items():  # each kind's together (the wakes: one round trip)
                moved += self._timers[kind][1](self, instances, now)
            if len(claimed) < limit or time.monotonic() > until:
                return moved + (sum(tick(self, self.clock()) for tick in self._on_tick) if concerns else 0)

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
