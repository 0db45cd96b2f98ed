"""The named hooks of a step's life: one no-op base class that every concern overrides a few of.

A step's life (:mod:`engine.runtime.pipeline`) is receive -> start -> build input -> call ->
decide -> apply -> continue. A concern -- retries, timeouts, metrics, inline chaining,
draining, the data-set check, waits, signals' timeouts, gather batches -- is a subclass of
:class:`Hook` in a module of its own (:mod:`engine.runtime.concerns`) that overrides the hooks
it needs; the pipeline keeps, once, the list of the hooks each concern overrides (a hook no
concern overrides costs nothing), and calls them in the order the concerns were registered
(:data:`engine.runtime.concerns.CONCERNS`).

Every hook gets the runtime as :class:`~engine.runtime.outcomes.StepOutcomes`: the public
operations a concern may use to decide and record (``transition``, ``fail``, ``resend``,
``activity``, ``scope``, ``resolve``, ``placement``), plus the store and the clock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.definitions.model import Definition, Node, StepNode
from engine.model import Instance, InstanceStatus
from engine.runtime.outcomes import StepOutcomes, StepReport
from engine.service import Transition
from engine.store.redis_store import Applied

#: Calls a step node's action (or endpoint) on its input.
Execute = Callable[[StepNode, Any], Transition]
#: Says whether a worker may run a node's step itself, right after the step before it.
Inline = Callable[[Node], bool]
#: Runs one delivered step (the pipeline's ``run_step``), for hooks that run more steps.
RunStep = Callable[[str, str, int, int, Execute, Inline | None], StepReport]


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
