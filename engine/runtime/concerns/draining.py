"""Draining a deep queue: after a delivered step, a worker takes the next ones from its queue and runs them.

Celery's own work per message -- the delivery, kombu's unacknowledged bookkeeping, the ack, the
hand-off to a pool process -- costs more CPU than a short step itself. When a service's queue
is deep (a morning's accounts all woken at the open), a worker that finished a delivered step
takes the queue's next step message itself, one round trip, runs it, and goes on, up to
``TRADEFLOW_DRAIN_STEPS`` steps per delivered message: Celery's cost is paid once per batch
instead of once per step.

Nothing else changes for a step: each one taken is started right before it runs (its ``start``
mark, its deadline from then on), run, and applied by its own compare-and-set with its own
activity record, and its chain runs inline as usual. Where the broker is the state's Redis, a
step's last change carries the next step's start and the take of the one after
(:mod:`engine.store.riders`, :meth:`engine.runtime.pipeline.Pipeline.ride`): one round trip per
drained step instead of three (take, start, apply). So at most one taken message is out of the
broker unstarted, for one step's run: the reconciliation
(:meth:`engine.runtime.runner.Runtime.reconcile`), which re-sends a queued step only when two
looks a period apart both find it nowhere, never mistakes it for lost; a worker that stops gives
it back; a worker killed meanwhile loses it, and the reconciliation then finds and re-sends it.
A step the ride started is started like any other: the liveness sweep re-sends it if the worker
dies. A step whose last change is not a plain transition (it failed, was retried, was stale)
carries nothing, and the next one is taken and started alone. A message that is not a step of
this worker's actions (a gather batch, an action this worker lacks) is given back at the head
of its list, and the draining stops there.

In batches (a worker's default; ``TRADEFLOW_DRAIN_BATCH=0``: one by one, as above;
:attr:`Draining.batched`), the waiting steps are taken and started together, one round trip
each, and the instances' ends are held and sent with the next change
(:meth:`engine.runtime.pipeline.Pipeline.defer_ends`): about one round trip per drained step
instead of two, where most steps end their instance's part here (an await). A step of a batch
that runs ``RELEASE_AFTER_SECONDS`` sends the batch's steps not yet run back to their queue
(:class:`_Release`): taken and started, they would otherwise wait behind it. A batch also runs
level by level where its instances' chains go on here to an action that writes
(:meth:`engine.runtime.pipeline.Pipeline.confirm_together`): every instance's steps up to that
action first (their reads), then one round trip that confirms all their transitions, then each
instance's writing action and what follows it -- one round trip for the batch where each instance
took one.

When the queue is found empty the worker stops looking for ``IDLE_PAUSE_SECONDS``: a quiet
queue costs one extra round trip a second, not one per message.

The queue side (taking one step message, giving back what this worker does not run, pausing
on an empty queue) is :class:`Drain`; the concern (:class:`Draining`) runs what it takes, one
at a time, each like a delivered step, up to the drain's limit and within ``seconds``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import redis

from engine.broker import TakenStep, Taker
from engine.instance import InstanceStatus
from engine.runtime.outcomes import HeldStep, StepOutcomes
from engine.runtime.pipeline import Execute, HeldEnds, Hook, Inline, Pipeline, RunStep, patiently
from engine.store.riders import Rider

log = logging.getLogger(__name__)

T = TypeVar("T")

#: After a look that found the queue empty, the next look waits this long.
IDLE_PAUSE_SECONDS = 1.0
#: A step of a batch that runs this long sends the batch's steps not yet run back to their queue.
RELEASE_AFTER_SECONDS = 5.0


class Drain:
    """Takes waiting step messages off a service's queue for a worker that has their actions."""

    def __init__(self, enqueuer: Any, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        #: None when the broker cannot be drained (a broker other than the state's Redis).
        self.taker: Taker | None = enqueuer if limit > 0 and hasattr(enqueuer, "take") else None
        #: Steps taken at most per delivered message.
        self.limit = limit
        self.clock = clock
        self._quiet_until: dict[str, float] = {}
        #: Set when the last take gave back a message this worker does not run (the draining stops).
        self.stopped = False

    @property
    def rides(self) -> bool:
        """True when a take can ride along a step's last change (the broker is the state's Redis)."""
        return self.taker is not None and hasattr(self.taker, "take_rider")

    def take(self, queue: str, accepts: Callable[[str], bool]) -> TakenStep | None:
        """The next waiting step message of ``queue`` if its task is one this worker runs (``accepts``).

        None when draining is off, the queue is empty (or was a moment ago), or its next message
        is not for this worker (given back where it was). The caller starts the step at once.
        """
        taken = self.take_many(queue, accepts, 1)
        return taken[0] if taken else None

    def take_many(self, queue: str, accepts: Callable[[str], bool], count: int) -> list[TakenStep]:
        """Up to ``count`` next waiting step messages of ``queue`` whose task this worker runs, in one round trip.

        Taken in order up to the first that is not for this worker, which is given back where it
        was with every one after it (:attr:`stopped` is then set: the draining stops there).
        The caller starts each at once, or gives it back.
        """
        if self.taker is None or self.clock() < self._quiet_until.get(queue, 0.0):
            return []
        return self.accepted(queue, accepts, self.taker.take(queue, count))

    def take_rider(self, queue: str, accepts: Callable[[str], bool], count: int,
                   landed: Callable[[list[TakenStep]], None]) -> Rider:
        """:meth:`take` as a rider of a store change (the broker's ``take_rider``); ``landed`` gets the accepted."""
        assert self.taker is not None
        return self.taker.take_rider(  # type: ignore[attr-defined]
            queue, count, lambda taken: landed(self.accepted(queue, accepts, taken)))

    def accepted(self, queue: str, accepts: Callable[[str], bool], taken: list[TakenStep]) -> list[TakenStep]:
        """The leading ``taken`` messages this worker runs; the rest given back (see :meth:`take`)."""
        if not taken:
            self._quiet_until[queue] = self.clock() + IDLE_PAUSE_SECONDS
            return []
        kept = 0
        self.stopped = False
        while kept < len(taken) and taken[kept].step is not None and accepts(taken[kept].task):
            kept += 1
        if kept < len(taken):
            self.give_back(taken[kept:])
            self.stopped = True
        return taken[:kept]

    def wake(self) -> None:
        """Forget that a queue was found empty: the next look takes at once (for a producer that
        knows it has just refilled the queue, such as a benchmark)."""
        self._quiet_until.clear()

    def give_back(self, taken: list[TakenStep]) -> None:
        """Put ``taken`` back at the head of their lists (next to be delivered)."""
        if taken and self.taker is not None:
            self.taker.give_back(taken)


class _Waiting(Generic[T]):
    """What a batch's thread has not run yet, and since when it runs its current item: what
    :class:`_Release` hands on (:meth:`hand_back`) when that item runs long."""

    def __init__(self, waiting: list[T], runtime: Pipeline, ends: HeldEnds) -> None:
        self.waiting = waiting
        self.runtime = runtime
        #: The ends the batch's thread holds (:meth:`Pipeline.defer_ends`): they would wait for its slow item too.
        self.ends = ends
        self.since = time.monotonic()
        self.lock = threading.Lock()

    def pop(self) -> T | None:
        """The next item to run (None: none left, or handed on), its time counted from now."""
        with self.lock:
            if not self.waiting:
                return None
            self.since = time.monotonic()
            return self.waiting.pop(0)

    def left(self, older_than: float = 0.0) -> list[T]:
        """The items not run, taken out (none while the current one is younger than ``older_than``)."""
        with self.lock:
            if not self.waiting or time.monotonic() - self.since < older_than:
                return []
            left, self.waiting = self.waiting, []
        return left

    def put_back(self, items: list[T]) -> None:
        """Return ``items`` (taken out by :meth:`left`) to the head of the batch: this thread runs them after all."""
        with self.lock:
            self.waiting[:0] = items

    def hand_back(self, items: list[T]) -> None:
        """Send the ends the batch's thread holds, then hand ``items`` (taken out by :meth:`left`) on to be run
        elsewhere (:meth:`_hand_on`)."""
        self.runtime.send_ends(self.ends)
        self._hand_on(items)

    def _hand_on(self, items: list[T]) -> None:
        raise NotImplementedError


class _Batch(_Waiting[tuple[TakenStep, tuple[str, str, int, int]]]):
    """The steps of one batch a thread has not run yet; handed on, they go back to the head of their queue."""

    def __init__(self, waiting: list[tuple[TakenStep, tuple[str, str, int, int]]], drain: Drain, runtime: Pipeline,
                 ends: HeldEnds) -> None:
        super().__init__(waiting, runtime, ends)
        #: What took them (it gives them back); the runtime started them (it forgets their starts).
        self.drain = drain

    def next(self) -> tuple[str, str, int, int] | None:
        """The next step to run (None: none left, or sent back), its time counted from now."""
        item = self.pop()
        return None if item is None else item[1]

    def left(self, older_than: float = 0.0) -> list[tuple[TakenStep, tuple[str, str, int, int]]]:
        """The steps not run, taken out of the batch (none while the current step is younger than ``older_than``),
        their kept starts dropped (a new take of one starts it anew)."""
        left = super().left(older_than)
        runtime = self.runtime
        for _, (instance_id, node, seq, attempt) in left:
            runtime.store.forget_start(instance_id, node, seq, attempt, runtime.carrier(node, seq, attempt))
        return left

    def _hand_on(self, items: list[tuple[TakenStep, tuple[str, str, int, int]]]) -> None:
        self.drain.give_back([item for item, _ in items])


class _Confirmed(_Waiting[HeldStep]):
    """A batch's held steps (:class:`HeldStep`) whose transitions were confirmed and that a thread has not run
    yet. Handed on, each goes to its queue as a message of its own (its attempt unchanged), for any worker
    to run; one that cannot be sent stays where it is, confirmed at its step and carried by this process,
    for its timeout to send again (never back to this batch: were it sent after all, its action would run
    twice)."""

    def _hand_on(self, items: list[HeldStep]) -> None:
        for held in items:
            instance = held.instance
            try:
                self.runtime.resend(instance, held.definition, instance.attempt, None)
            except Exception:
                log.warning("could not send the step of %s to its queue: its timeout sends it again", instance.id,
                            exc_info=True)


class _Release:
    """A thread of the process that sends back to their queue the steps of a batch stuck behind a slow step.

    A batch's steps are taken off the queue and started together; while one of them runs, the ones
    after it wait, out of the queue, carried by a process that is alive: neither the liveness sweep
    nor their timeouts (counted from the start) would free them soon. So when a step has run for
    ``after`` seconds (an action that hangs, a slow service), the steps after it go back to the head
    of their queue, for this or another worker to take: a slow instance does not hold up the others.
    """

    def __init__(self, after: float) -> None:
        self.after = after
        self._batches: set[_Waiting[Any]] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, batch: _Waiting[Any]) -> None:
        """Look after ``batch`` until :meth:`forget`."""
        with self._lock:
            self._batches.add(batch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="drain-release", daemon=True)
                self._thread.start()

    def forget(self, batch: _Waiting[Any]) -> None:
        """Stop looking after ``batch``."""
        with self._lock:
            self._batches.discard(batch)

    def _run(self) -> None:
        while True:
            time.sleep(min(1.0, self.after / 4))
            with self._lock:
                batches = list(self._batches)
            for batch in batches:
                self.send_back(batch, self.after)

    @staticmethod
    def send_back(batch: _Waiting[Any], older_than: float) -> int:
        """Send back the steps of ``batch`` not run when its current step is ``older_than`` seconds old; how many."""
        left = batch.left(older_than)
        if not left:
            return 0
        try:
            batch.hand_back(left)
        except Exception:  # Redis unreachable: the batch's thread runs them after all, each starting anew
            batch.put_back(left)
            log.warning("could not send %d waiting steps back to their queue", len(left), exc_info=True)
            return 0
        log.info("a step ran over %gs: %d steps of its batch sent back to their queue", older_than, len(left))
        return len(left)


class Draining(Hook):
    """Runs the waiting steps ``drain`` takes off a delivered message's queue."""

    def __init__(self, drain: Drain, seconds: float, batched: bool = False,
                 release_after: float = RELEASE_AFTER_SECONDS) -> None:
        #: Takes step messages off a queue: ``take(queue, accepts)`` (None: nothing to take).
        self.drain = drain
        #: How long a delivered message may go on running taken steps.
        self.seconds = seconds
        #: Where the broker is the state's Redis: take and start the waiting steps in batches, and hold
        #: their instances' ends for the next change (:meth:`_batches`) instead of riding one by one.
        self.batched = batched
        #: A batch's steps not run yet go back to their queue when one of its steps has run this long.
        self.release = _Release(release_after)

    def after_delivery(self, runtime: StepOutcomes, run_step: RunStep, queue: str, accepts: Callable[[str], bool],
                       execute: Execute, inline: Inline | None) -> int:
        """Take and run waiting steps of ``queue`` this worker runs (``accepts`` their task); how many ran.

        Where the broker is the state's Redis, each step's last change carries the start of the
        next taken step and the take of the one after (:meth:`Pipeline.ride`): one round trip per
        step instead of three. A step started that way is run whatever the time left.
        """
        drain = self.drain
        until = time.monotonic() + self.seconds
        riding = drain.rides and isinstance(runtime, Pipeline)
        if riding and self.batched:
            assert isinstance(runtime, Pipeline)
            return self._batches(runtime, run_step, queue, accepts, execute, inline, until)
        drain.stopped = False
        waiting: list[TakenStep] = patiently(lambda: drain.take_many(queue, accepts, 2 if riding else 1))
        started: set[int] = set()  # id() of the waiting steps a ride started: they run, whatever the limits
        ran = 0
        try:
            while True:
                if not waiting and not drain.stopped and ran < drain.limit and time.monotonic() < until:
                    waiting = patiently(lambda: drain.take_many(queue, accepts, 1))
                if not waiting or (id(waiting[0]) not in started
                                   and (ran >= drain.limit or time.monotonic() >= until)):
                    break
                item = waiting.pop(0)
                if riding and ran + 1 < drain.limit:
                    if not waiting and not drain.stopped:  # the last step's end took none: take its start's step now
                        waiting += patiently(lambda: drain.take_many(queue, accepts, 1))
                    if waiting:
                        assert isinstance(runtime, Pipeline)
                        runtime.ride(self._riders(runtime, drain, queue, accepts, waiting, started, ran))
                assert item.step is not None  # take() returns step messages only
                try:
                    patiently(lambda step=item.step: run_step(*step, execute, inline))
                finally:
                    if riding:
                        assert isinstance(runtime, Pipeline)
                        runtime.ride(())
                started.discard(id(item))
                ran += 1
        finally:  # stopped (an error): what was taken and not started goes back; a kept start is dropped
            drain.give_back([item for item in waiting if id(item) not in started])
            for item in waiting:
                if id(item) in started and item.step is not None and isinstance(runtime, Pipeline):
                    instance_id, node, seq, attempt = item.step
                    runtime.store.forget_start(instance_id, node, seq, attempt, runtime.carrier(node, seq, attempt))
        return ran

    def _batches(self, runtime: Pipeline, run_step: RunStep, queue: str, accepts: Callable[[str], bool],
                 execute: Execute, inline: Inline | None, until: float) -> int:
        """Take up to the drain's limit of waiting steps in one round trip and start them all in one
        more, then run them one after the other with their instances' ends held
        (:meth:`Pipeline.defer_ends`): an end goes with the next change this thread sends -- the
        next instance's, before an action that writes -- or with the batch's last round trip.
        Every step taken and started is run, whatever the time left. How many ran."""
        drain = self.drain
        ran = 0
        drain.stopped = False
        while ran < drain.limit and not drain.stopped and time.monotonic() < until:
            room = drain.limit - ran
            batch = patiently(lambda room=room: drain.take_many(queue, accepts, room))
            if not batch:
                break
            batch = self._one_per_instance(batch)
            steps = [item.step for item in batch if item.step is not None]  # (take_many keeps steps only)
            try:
                patiently(lambda steps=steps: runtime.store.prefetch_starts(
                    [(*step, runtime.carrier(*step[1:])) for step in steps], runtime.clock))
            except BaseException:
                drain.give_back(batch)
                raise
            runtime.defer_ends(True)
            runtime.confirm_together(True)
            running = _Batch(list(zip(batch, steps, strict=True)), drain, runtime, runtime.held_ends())
            self.release.watch(running)  # a step that runs long sends the ones after it back
            held: dict[str, tuple[tuple[str, str, int, int], HeldStep]] = {}  # by instance id
            try:
                while (step := running.next()) is not None:
                    report = patiently(lambda step=step: run_step(*step, execute, inline))
                    if report.held is not None:
                        held[step[0]] = (step, report.held)
                    ran += 1
                self._confirm(runtime, run_step, held, execute, inline)
            finally:
                self.release.forget(running)
                # stopped by an error: the kept starts of those not run are dropped; started, they are re-sent
                # as any step in flight (by the liveness sweep when this process stops, else at their timeout)
                running.left()
                runtime.confirm_together(False)
                patiently(lambda: runtime.defer_ends(False))
        return ran

    def _confirm(self, runtime: Pipeline, run_step: RunStep,
                 held: dict[str, tuple[tuple[str, str, int, int], HeldStep]], execute: Execute,
                 inline: Inline | None) -> None:
        """Confirm the transitions the batch's instances hold before an action that writes, in one round trip,
        then run each confirmed instance's next step (:meth:`Pipeline.confirm_together`), one after the
        other; one that runs long hands the ones after it to their queue (:class:`_Release`). When that
        round trip fails, whether it applied is unknown: each of those instances' delivered step runs
        again, as after any error (stale if it applied: this process resumes the instance where it stands)."""
        if not held:
            return
        try:
            confirmed = runtime.send_pending()
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
            log.warning("confirming a batch's transitions failed (%s): its steps run again", exc)
            runtime.confirm_together(False)
            for step, _ in held.values():
                patiently(lambda step=step: run_step(*step, execute, inline))
            return
        runtime.confirm_together(False)  # what runs from here runs as a step alone would
        # one that moved on meanwhile (paused, cancelled, refused) does not run: its step stays where it is
        to_run = [waiting for instance_id, (_, waiting) in held.items()
                  if (applied := confirmed.get(instance_id)) is not None and applied.applied
                  and applied.status is InstanceStatus.RUNNING]
        batch = _Confirmed(to_run, runtime, runtime.held_ends())
        self.release.watch(batch)
        try:
            while (next_step := batch.pop()) is not None:
                # a Redis error: as for any step, its delivered step runs again (and finds where it stands)
                tries = [next_step.resume]
                delivered = held[next_step.instance.id][0]
                patiently(lambda tries=tries, delivered=delivered: tries.pop()() if tries
                          else run_step(*delivered, execute, inline))
        finally:
            self.release.forget(batch)

    def _one_per_instance(self, batch: list[TakenStep]) -> list[TakenStep]:
        """``batch`` with one step per instance: a second message of an instance (a duplicate, a re-send)
        goes back to the queue, so that it starts after the first one's change and is a recorded no-op,
        its action not run (started together, both would have read the instance before either ran)."""
        kept: dict[str, TakenStep] = {}
        again: list[TakenStep] = []
        for item in batch:
            assert item.step is not None
            if item.step[0] in kept:
                again.append(item)
            else:
                kept[item.step[0]] = item
        self.drain.give_back(again)
        return list(kept.values())

    def _riders(self, runtime: Pipeline, drain: Drain, queue: str, accepts: Callable[[str], bool],
                waiting: list[TakenStep], started: set[int], ran: int) -> list[Rider]:
        """What rides along the next step's last change: the start of the step after it (``waiting[0]``)
        and, while the limit allows one more, the take of the one after that."""
        lead = waiting[0]
        assert lead.step is not None
        instance_id, node, seq, attempt = lead.step
        riders = [runtime.store.start_rider(instance_id, node, seq, attempt, runtime.clock,
                                            runtime.carrier(node, seq, attempt), lambda: started.add(id(lead)))]
        if ran + 2 < drain.limit and len(waiting) == 1:
            riders.append(drain.take_rider(queue, accepts, 1, waiting.extend))
        return riders
