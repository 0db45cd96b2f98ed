"""Worker liveness: a started step whose process is gone is re-sent in seconds, not at its timeout.

- **the mark** (:class:`Heartbeat`): every worker process that runs steps keeps a mark in Redis
  (``<prefix>:alive:<host>:<pid>``) that expires ``MARK_SECONDS`` after its last refresh; a
  daemon thread refreshes it every ``REFRESH_SECONDS``. The process's runtime starts it
  (:meth:`engine.runtime.runner.Runtime.keep_alive`, called by the worker's runtime factory once
  per process, so after a prefork pool forked: in each child), and sets the mark before the
  thread starts and before the process starts any step.
- **the carrier**: a started step records the process running it -- the instance's ``carrier``
  (``node:seq:attempt@host:pid``), written by the ``start`` operation of the store with no
  extra round trip (and by an inline chain's compare-and-set).
- **the sweep** (:meth:`Liveness.on_sweep`): the started steps (the deadline index) and their
  carriers are read in one pipelined read, the marks of their processes in another; a step whose
  process's mark lapsed is re-sent as its next attempt (recorded: ``worker lost: ...``), or
  failed with ``WorkerLost`` once it has had ``max(retry.max_attempts, MIN_TIMEOUT_ATTEMPTS)``
  attempts (a step that kills its worker every time). A step whose process lives keeps its
  node's ``timeout_seconds`` as its bound (:mod:`engine.runtime.concerns.timeouts`: a hung step).

A process that was only stalled (SIGSTOP, a long pause) and resumes finishes its step; its
compare-and-set then finds the step applied by the re-sent attempt (or the re-sent attempt finds
its own), and the later one is a recorded no-op -- one transition, as for any duplicate. Effects
outside the engine are kept single by their idempotency keys, as for every redelivery.

Right after Redis restarted (uptime below ``MARK_SECONDS`` + ``REFRESH_SECONDS``) the marks are
not trusted: every process needs a refresh to set its mark again.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from engine.definitions.nodes import StepNode
from engine.instance import InstanceStatus
from engine.runtime.outcomes import StepOutcomes, lost_step_attempts
from engine.runtime.pipeline import Hook
from engine.store.redis_store import StartedStep

log = logging.getLogger(__name__)

#: A process's mark lapses this many seconds after its last refresh ...
MARK_SECONDS = 5.0
#: ... and is refreshed this often (a process stalled for MARK_SECONDS - REFRESH_SECONDS counts as gone).
REFRESH_SECONDS = 1.0
#: At most this many started steps are checked per sweep (the earliest deadlines first).
LIVENESS_BATCH = 5000


def process_of(carrier: str | None) -> str | None:
    """The ``host:pid`` of a carrier ``node:seq:attempt@host:pid`` (None when there is none)."""
    if not carrier or "@" not in carrier:
        return None
    return carrier.rpartition("@")[2] or None


class Heartbeat:
    """Keeps one process's liveness mark fresh from a daemon thread (started once per process)."""

    def __init__(self, mark: Callable[[], None], every: float = REFRESH_SECONDS) -> None:
        #: Sets (or refreshes) the mark: the store's ``mark_alive`` for this process.
        self.mark = mark
        self.every = every
        self._pid: int | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def start(self) -> None:
        """Set the mark now and keep it fresh from a thread; again in a forked child, never twice in a process."""
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._stopped = threading.Event()
        self._refresh(quiet=False)
        threading.Thread(target=self._run, args=(self._stopped,), name="liveness-mark", daemon=True).start()

    def stop(self) -> None:
        """Stop refreshing (the mark then lapses within its TTL)."""
        self._stopped.set()
        with self._lock:
            self._pid = None

    def _run(self, stopped: threading.Event) -> None:
        quiet = False
        while not stopped.wait(self.every):
            quiet = self._refresh(quiet)

    def _refresh(self, quiet: bool) -> bool:
        """Refresh the mark; True while refreshes fail (logged once per outage)."""
        try:
            self.mark()
        except Exception as exc:  # Redis away: the next round tries again
            if not quiet:
                log.warning("could not refresh this process's liveness mark (%s); trying again every %gs",
                            exc, self.every)
            return True
        return False


class Liveness(Hook):
    """The sweep of started steps whose process is gone; the mark of this process (:meth:`keep_alive`)."""

    def __init__(self, mark_seconds: float = MARK_SECONDS, refresh_seconds: float = REFRESH_SECONDS,
                 limit: int = LIVENESS_BATCH) -> None:
        self.mark_seconds = mark_seconds
        self.refresh_seconds = refresh_seconds
        self.limit = limit
        self.heartbeat: Heartbeat | None = None

    def keep_alive(self, runtime: StepOutcomes, process: str) -> None:
        """Mark ``process`` (this one, ``host:pid``) alive now and keep its mark fresh."""
        if self.heartbeat is None:
            store, seconds = runtime.store, self.mark_seconds
            self.heartbeat = Heartbeat(lambda: store.mark_alive(process, seconds), self.refresh_seconds)
        self.heartbeat.start()

    def orphans(self, runtime: StepOutcomes) -> list[tuple[StartedStep, str]]:
        """The started steps whose process's mark lapsed, with that process: three reads in all."""
        carried = {}
        for step in runtime.store.started_steps(self.limit):
            process = process_of(step.carrier)
            if process is not None and step.status is InstanceStatus.RUNNING:
                carried[step] = process
        if not carried:
            return []
        alive = runtime.store.alive(carried.values())
        lost = [(step, process) for step, process in carried.items() if not alive[process]]
        if lost:
            uptime = runtime.store.uptime()
            if uptime is not None and uptime < self.mark_seconds + self.refresh_seconds:
                log.info("Redis started %.1fs ago: liveness marks are not trusted yet (%d started steps "
                         "without one)", uptime, len(lost))
                return []
        return lost

    def on_sweep(self, runtime: StepOutcomes) -> int:
        """Re-send each started step whose process's mark lapsed (fail it when its attempts ran out); how many."""
        handled = 0
        for step, process in self.orphans(runtime):
            instance = runtime.store.load(step.id)
            if instance is None or instance.status is not InstanceStatus.RUNNING or instance.carrier != step.carrier \
                    or (instance.node, instance.seq, instance.attempt) != (step.node, step.seq, step.attempt):
                continue  # it moved meanwhile
            definition = runtime.store.definition(instance.workflow, instance.version)
            node = definition.nodes.get(instance.node)
            if not isinstance(node, StepNode):
                continue
            reason = f"its worker process {process} stopped refreshing its liveness mark"
            log.warning("step %s/%s seq %s attempt %s: %s; %s", instance.id, instance.node, instance.seq,
                        instance.attempt, reason,
                        "failing it" if instance.attempt >= lost_step_attempts(node) else "re-sending")
            runtime.resend_lost(instance, definition, runtime.clock(), "worker lost", reason, "WorkerLost")
            handled += 1
        return handled
