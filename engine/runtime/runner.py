"""The runtime: the step pipeline (:mod:`engine.runtime.pipeline`) with the engine's concerns plugged in.

A step's life reads top to bottom in :mod:`engine.runtime.pipeline`; what it records goes through
the public operations of :mod:`engine.runtime.outcomes`; every cross-cutting concern is a module
of :mod:`engine.runtime.concerns`, registered in :func:`concerns` -- the one list to change to add
one (see docs/pipeline.md). The same runtime serves Celery workers (:func:`engine.app.bind_tasks`)
and tests that drive the engine one message at a time (:mod:`engine.testing`).
"""

from __future__ import annotations

from engine.broker import Enqueuer
from engine.clock import Clock, system_clock
from engine.runtime.concerns.awaits import Awaits
from engine.runtime.concerns.data_set import DataSetCheck
from engine.runtime.concerns.draining import Drain, Draining
from engine.runtime.concerns.gathering import Gathering
from engine.runtime.concerns.housekeeping import Housekeeping
from engine.runtime.concerns.inline import DEFAULT_INLINE_SECONDS, DEFAULT_INLINE_STEPS, Inline
from engine.runtime.concerns.limits import Limits
from engine.runtime.concerns.liveness import Liveness
from engine.runtime.concerns.metrics import Metrics, StepMetrics
from engine.runtime.concerns.retries import Retries
from engine.runtime.concerns.timeouts import DEFAULT_RECONCILE_SECONDS, RECONCILE_BATCH, Timeouts
from engine.runtime.concerns.waits import Waits
from engine.runtime.gather import Gatherer
from engine.runtime.pipeline import Hook, Pipeline
from engine.store.redis_store import RedisStore

__all__ = ["DEFAULT_INLINE_SECONDS", "DEFAULT_INLINE_STEPS", "DEFAULT_RECONCILE_SECONDS", "Runtime", "concerns"]


def concerns(runtime: Runtime, inline_steps: int, inline_seconds: float, drain_steps: int,
             drain_batch: bool = False) -> list[Hook]:
    """The concerns every runtime plugs into its pipeline, in the order their hooks run.

    A new concern is a module of :mod:`engine.runtime.concerns` and one line here.
    """
    return [
        DataSetCheck(),                                      # on_missing, before_timers
        Retries(),                                           # on_error, the "retry" timer
        Liveness(),                                          # on_sweep: started steps of dead processes
        Timeouts(),                                          # on_sweep, on_reconcile
        Housekeeping(),                                      # on_sweep (index trimming)
        Waits(),                                             # the "wake" timer
        Awaits(),                                            # the "timeout" timer of awaits
        Limits(),                                            # before_call, after_run, on_sweep, the "limit" timer
        Gathering(runtime.gatherer),                         # after_apply, on_tick
        Inline(inline_steps, inline_seconds),                # chain_rule, take_over
        Metrics(runtime.metrics),                            # after_step
        Draining(Drain(runtime.enqueuer, drain_steps), inline_seconds, drain_batch),  # after_delivery
    ]


class Runtime(Pipeline):
    """Runs steps and timers against a store, sending follow-up steps through an enqueuer."""

    def __init__(self, store: RedisStore, enqueuer: Enqueuer, clock: Clock = system_clock,
                 epoch: str | None = None, inline_steps: int = DEFAULT_INLINE_STEPS,
                 inline_seconds: float = DEFAULT_INLINE_SECONDS,
                 reconcile_seconds: float = DEFAULT_RECONCILE_SECONDS, drain_steps: int = 0,
                 drain_batch: bool = False) -> None:
        super().__init__(store, enqueuer, clock, epoch)
        #: How often the sweeper looks for lost messages (``reconcile``).
        self.reconcile_seconds = reconcile_seconds
        #: The batches of gather nodes (closing, the batch step, applying).
        self.gatherer = Gatherer(self)
        #: Step counters of this process, flushed to Redis every few seconds (engine.metrics).
        self.metrics = StepMetrics(store.add_step_metrics)
        self.plug(concerns(self, inline_steps, inline_seconds, drain_steps, drain_batch))

    def reconcile(self, every: float = DEFAULT_RECONCILE_SECONDS, limit: int = RECONCILE_BATCH) -> int:
        """Re-send queued steps whose message is lost (at most once per ``every``; 0: always); how many."""
        return super().reconcile(every, limit)

    def keep_alive(self) -> None:
        """Mark this process alive and keep the mark fresh (a worker process that runs steps, once,
        after any fork): its started steps are re-sent within seconds of its death
        (:mod:`engine.runtime.concerns.liveness`)."""
        hook = self.hook(Liveness)
        if isinstance(hook, Liveness):
            hook.keep_alive(self, self.process)

    # -- the settings of the inline and draining concerns, for tools and tests --------------------

    @property
    def inline_steps(self) -> int:
        """At most this many steps run after a delivered one without a broker hop."""
        return self._inline().steps

    @inline_steps.setter
    def inline_steps(self, value: int) -> None:
        self._inline().steps = value

    @property
    def inline_seconds(self) -> float:
        """A delivered message runs inline or drained steps for at most this long."""
        return self._inline().seconds

    @inline_seconds.setter
    def inline_seconds(self, value: float) -> None:
        self._inline().seconds = self._draining().seconds = value

    @property
    def drain(self) -> Drain:
        """What takes waiting steps off a deep queue for this worker (off when its limit is 0)."""
        return self._draining().drain

    @drain.setter
    def drain(self, value: Drain) -> None:
        self._draining().drain = value

    @property
    def drain_batch(self) -> bool:
        """True when drained steps are started in batches and their instances' ends held (the draining concern)."""
        return self._draining().batched

    @drain_batch.setter
    def drain_batch(self, value: bool) -> None:
        self._draining().batched = value

    def _inline(self) -> Inline:
        hook = self.hook(Inline)
        assert isinstance(hook, Inline)
        return hook

    def _draining(self) -> Draining:
        hook = self.hook(Draining)
        assert isinstance(hook, Draining)
        return hook
