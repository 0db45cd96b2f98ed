"""Shared limits: a step over its node's rate or concurrency limit waits, without holding a worker.

- **rate** (``limits.rate``: ``key``, ``per_second``, ``burst``): at most ``burst`` calls in any
  window of ``burst / per_second`` seconds per key value, counted in Redis on Redis's clock
  (:mod:`engine.store.limits`), so every worker agrees. A step over it is parked (status
  ``waiting``, reason ``rate: <key>``) on a ``limit`` timer for when a call will be free; the
  parked steps of a key are served in arrival order, one call interval apart.
- **concurrency** (``limits.concurrency``: ``key``, ``max``, ``group``): at most ``max`` instances
  at once inside the node (or the nodes of ``group``) per key value. A step that finds no slot
  queues behind its key (reason ``concurrency: <key>``); a slot is released when the instance
  leaves the node(s) -- its step applied elsewhere, failed, ended -- and the head of the line is
  re-sent at once. The sweeper reclaims the slots of instances that are no longer inside (a
  cancelled instance, a worker that died between a step's end and the release).

The check runs at the step's start (``before_call``), so a parked step's timeout counts from
when it really starts, as every step's does. Keys are independent: each has its own bucket or
pool and its own line, so one busy key never delays another.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from engine.definitions.nodes import ConcurrencyLimit, Definition, RateLimit, StepNode
from engine.errors import ExpressionError
from engine.expressions.cel import Scope, compile_expression
from engine.instance import TERMINAL_STATUSES, Instance, InstanceStatus, Outcome
from engine.runtime.outcomes import StepOutcomes, StepReport, step_allowance
from engine.runtime.pipeline import Hook
from engine.store.redis_store import Placement

log = logging.getLogger(__name__)

#: Timer kind of a step parked by a limit.
LIMIT_TIMER = "limit"
#: A step queued behind a concurrency key looks again this often, should its wake-up be lost.
RECHECK_SECONDS = 30.0
#: Entries of a rate limit's line older than this are checked by the sweeper (their instance may be gone).
STALE_LINE_SECONDS = 60.0
#: Pools and lines the sweeper looks at per sweep.
SWEEP_POOLS = 100
SWEEP_LINE = 50
#: An early wake of the timers comes at least this long after the one before it (a line spaced closer
#: than that is woken a few steps at a time).
WAKE_GAP_SECONDS = 0.02
#: Timers due further ahead than this are left to the periodic tick (``TRADEFLOW_TIMER_INTERVAL``).
WAKE_HORIZON_SECONDS = 1.0
#: Outcomes after which a concurrency slot is kept: the instance is still at its node.
_KEEPS_SLOT = frozenset({Outcome.NOOP, Outcome.LIMITED, Outcome.RETRY})


def limit_key(source: str, runtime: StepOutcomes, definition: Definition, instance: Instance) -> str:
    """The value of a limit's ``key`` expression for ``instance`` (as a string)."""
    value = compile_expression(source).evaluate(runtime.scope(definition, instance))
    return value if isinstance(value, str) else str(value)


def rate_call(rate: RateLimit, scope: Scope) -> tuple[str, int]:
    """The bucket (the ``key``'s value as a string) and the calls (``cost``, default 1) of ``rate`` in ``scope``;
    :class:`ExpressionError` when either cannot be evaluated or the cost is not a number."""
    value = compile_expression(rate.key).evaluate(scope)
    cost = 1 if rate.cost is None else compile_expression(rate.cost).evaluate(scope)
    if not isinstance(cost, int | float) or isinstance(cost, bool):
        raise ExpressionError(f"cost {rate.cost!r} gave {cost!r}, not a number")
    return (value if isinstance(value, str) else str(value)), int(cost)


def pool_name(limit: ConcurrencyLimit, node_name: str, key: str) -> str:
    """The concurrency pool of ``key`` at ``node_name``: ``<group or node>:<key>``."""
    return f"{limit.group or node_name}:{key}"


def inside(definition: Definition, node_name: str, pool: str) -> bool:
    """True when ``node_name`` of ``definition`` holds a slot of ``pool`` (its group, or itself)."""
    node = definition.nodes.get(node_name)
    limits = getattr(node, "limits", None)
    conc = limits.concurrency if limits is not None else None
    return conc is not None and pool.startswith(f"{conc.group or node_name}:")


class Limits(Hook):
    """Parks steps over their node's rate or concurrency limit; wakes them when they may go."""

    timer = LIMIT_TIMER
    timer_status = InstanceStatus.WAITING

    def __init__(self) -> None:
        #: Sends a wake of the timers ``countdown`` seconds from now (a worker's: a task with a
        #: countdown); None (tests driving the engine by hand): the periodic tick alone wakes them.
        self.waker: Callable[[float], None] | None = None

    # -- the step's start -------------------------------------------------------------------------

    def before_call(self, runtime: StepOutcomes, instance: Instance, definition: Definition, node_name: str,
                    seq: int, attempt: int, started: float) -> StepReport | None:
        """Take a concurrency slot, then a call of the rate; park the step if either is not there."""
        node = definition.nodes[node_name]
        limits = node.limits if isinstance(node, StepNode) else None
        if limits is None:
            return None
        try:
            if limits.concurrency is not None:
                conc = limits.concurrency
                key = limit_key(conc.key, runtime, definition, instance)
                verdict = runtime.store.limit_acquire(pool_name(conc, node_name, key), instance.id, seq, conc.max)
                if not verdict.ok:
                    return self._hold(runtime, instance, definition, node_name, seq, attempt, started,
                                      RECHECK_SECONDS, f"concurrency: {key}",
                                      f"number {verdict.position} in line for {key!r} (max {conc.max})")
            if limits.rate is not None:
                rate = limits.rate
                key, cost = rate_call(rate, runtime.scope(definition, instance))
                verdict = runtime.store.limit_rate(key, instance.id, rate.per_second, rate.capacity, cost)
                if not verdict.ok:
                    report = self._hold(runtime, instance, definition, node_name, seq, attempt, started,
                                        verdict.wait_seconds, f"rate: {key}",
                                        f"over {key!r}: next call in {verdict.wait_seconds:.3f}s")
                    if report.outcome is not Outcome.LIMITED:
                        runtime.store.limit_leave("rate", key, instance.id)
                    return report
        except ExpressionError as exc:
            return runtime.fail(instance, definition, node_name, seq, attempt, started, f"limits: {exc}",
                                "ExpressionError")
        return None

    def _hold(self, runtime: StepOutcomes, instance: Instance, definition: Definition, node_name: str, seq: int,
              attempt: int, started: float, wait: float, reason: str, detail: str) -> StepReport:
        activity = runtime.activity(node_name, seq, attempt, started, Outcome.LIMITED, reason=f"{reason} ({detail})",
                                    retry_in=round(wait, 3))
        until = runtime.clock() + wait
        applied = runtime.store.hold(instance.id, seq=seq, attempt=attempt, activity=activity,
                                     until=until, reason=reason)
        if applied.applied:
            self.ask_wake(runtime, until)
        return StepReport(Outcome.LIMITED if applied.applied else Outcome.NOOP, applied.status)

    # -- early wakes ------------------------------------------------------------------------------

    def ask_wake(self, runtime: StepOutcomes, at: float) -> bool:
        """Have the timers woken at ``at`` (no earlier than :data:`WAKE_GAP_SECONDS` from now), not at
        the next periodic tick, when ``at`` is within :data:`WAKE_HORIZON_SECONDS`.

        One wake is on its way at a time for a given moment or earlier (the store's mark): a
        thousand steps parked for the same second send one. True when this call sent one.
        """
        if self.waker is None:
            return False
        now = runtime.clock()
        at = max(at, now + WAKE_GAP_SECONDS)
        if at - now > WAKE_HORIZON_SECONDS or not runtime.store.limit_wake(at, now):
            return False
        try:
            self.waker(at - now)
        except Exception:  # the broker is away: the tick wakes them (and the mark lapses in 2 s)
            log.warning("could not send an early wake of the timers; the tick will wake them", exc_info=True)
            return False
        return True

    def woken(self, runtime: StepOutcomes) -> bool:
        """After the timers were woken (an early wake or the tick): ask for the next early wake, for the
        earliest timer still due (a line of parked steps is woken step by step as each one's time comes)."""
        if self.waker is None:
            return False
        runtime.store.limit_woke(runtime.clock(), WAKE_GAP_SECONDS / 2)
        due = runtime.store.next_timer()
        return due is not None and self.ask_wake(runtime, due)

    # -- the step's end ---------------------------------------------------------------------------

    def after_run(self, runtime: StepOutcomes, instance: Instance, definition: Definition, node_name: str,
                  seq: int, report: StepReport) -> None:
        """Release the concurrency slot once the instance leaves its node (or its group's nodes)."""
        node = definition.nodes[node_name]
        limits = node.limits if isinstance(node, StepNode) else None
        if limits is None or limits.concurrency is None or report.outcome in _KEEPS_SLOT:
            return
        conc = limits.concurrency
        try:
            pool = pool_name(conc, node_name, limit_key(conc.key, runtime, definition, instance))
        except ExpressionError:
            return  # never acquired: the key failed the step before
        stays = report.outcome is Outcome.APPLIED and report.status is not None \
            and report.status not in TERMINAL_STATUSES and report.next_node is not None \
            and inside(definition, report.next_node, pool)
        if not stays:
            self._release(runtime, pool, instance.id, conc.max)

    def _release(self, runtime: StepOutcomes, pool: str, instance_id: str, maximum: int) -> int:
        """Free ``instance_id``'s slot of ``pool`` and re-send the steps at the head of its line."""
        woken = 0
        for waiter in runtime.store.limit_release(pool, instance_id, maximum):
            found = runtime.store.load(waiter)
            if found is not None and found.status is InstanceStatus.WAITING and found.timer == LIMIT_TIMER:
                woken += self.on_timer(runtime, found, runtime.store.definition(found.workflow, found.version),
                                       runtime.clock())
        return woken

    # -- the timer and the sweeper ----------------------------------------------------------------

    def on_timer(self, runtime: StepOutcomes, instance: Instance, definition: Definition, now: float) -> int:
        """The limit may have room now: send the parked step again (same attempt: it never ran)."""
        node = definition.nodes[instance.node]
        assert isinstance(node, StepNode)
        placement = replace(Placement.queued_step(instance.node, step_allowance(node)), front=True)
        applied = runtime.apply_change(definition, instance.id, lambda send, clear: runtime.store.retry(
            instance.id, seq=instance.seq, attempt=instance.attempt, next_attempt=instance.attempt,
            placement=placement, statuses=(InstanceStatus.WAITING,), carrier=clear, send=send),
            (instance.node, instance.seq, instance.attempt))
        return int(applied.applied)

    def on_sweep(self, runtime: StepOutcomes) -> int:
        """Reclaim the slots of instances no longer inside their pool's nodes; drop gone ones from lines."""
        reclaimed = 0
        definitions: dict[tuple[str, int], Definition] = {}

        def still_inside(found: Instance | None, pool: str) -> bool:
            if found is None or found.status in TERMINAL_STATUSES:
                return False
            key = (found.workflow, found.version)
            if key not in definitions:
                definitions[key] = runtime.store.definition(*key)
            return inside(definitions[key], found.node, pool)

        for pool in runtime.store.limit_pools(SWEEP_POOLS):
            holders = runtime.store.limit_holders(pool)
            line = runtime.store.limit_line("conc", pool)[:SWEEP_LINE]
            loaded = {found.id: found for found in runtime.store.load_many([*holders, *line])}
            for waiter in line:
                if not still_inside(loaded.get(waiter), pool):
                    runtime.store.limit_leave("conc", pool, waiter)
            for holder in holders:
                if not still_inside(loaded.get(holder), pool):
                    log.info("concurrency %s: reclaiming the slot of %s (no longer inside)", pool, holder)
                    maximum = self._pool_max(runtime, pool)
                    self._release(runtime, pool, holder, maximum)
                    reclaimed += 1
        reclaimed += self._prune_rate_lines(runtime)
        return reclaimed

    def _pool_max(self, runtime: StepOutcomes, pool: str) -> int:
        states = runtime.store.limit_states([pool])
        return (states[0].max or 1) if states else 1

    def _prune_rate_lines(self, runtime: StepOutcomes) -> int:
        """Drop from the rate lines the instances that ended or vanished while parked (checked when old)."""
        dropped = 0
        before = runtime.clock() - STALE_LINE_SECONDS
        for name in runtime.store.limit_names():
            old = runtime.store.limit_line("rate", name, before=before)[:SWEEP_LINE * 4]
            if not old:
                continue
            alive = {found.id for found in runtime.store.load_many(old) if found.status not in TERMINAL_STATUSES}
            alive |= {b for b in set(old) - alive if _parked_batch(runtime, b)}  # a gather node's batch step
            for gone in set(old) - alive:
                runtime.store.limit_leave("rate", name, gone)
                dropped += 1
        return dropped


def _parked_batch(runtime: StepOutcomes, batch_id: str) -> bool:
    """True when ``batch_id`` is a batch whose step still waits (closed): its place in a line is kept."""
    batch = runtime.store.load_batch(batch_id)
    return batch is not None and batch.status == "closed"
