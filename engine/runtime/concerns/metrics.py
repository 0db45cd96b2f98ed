"""Step metrics: every step's outcome and duration counted in process memory, flushed to Redis.

:class:`StepMetrics` counts; :class:`Metrics` is the concern that tells it of each step (inline
ones too). The hashes it writes, and how they are read back, are :mod:`engine.metrics`'s.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
import weakref
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable

from engine.metrics import BUCKETS
from engine.runtime.outcomes import StepOutcomes
from engine.runtime.pipeline import Hook

log = logging.getLogger(__name__)

DEFAULT_INTERVAL = 5.0


#: Each bucket's name in the duration hash (``<node>|<bound>``): its upper bound, or ``+Inf``.
_BOUNDS = (*map(repr, BUCKETS), "+Inf")


class StepMetrics:
    """Per-process step counters with a cheap :meth:`step` and a batched :meth:`flush`.

    A step only adds to counters keyed by what it names (no text is built); a flush writes them
    as the hashes' fields (``<outcome>|<workflow>|<node>``; ``<node>|<bound>``, ``|sum``, ``|count``).
    """

    def __init__(self, sink: Callable[[dict[str, int], dict[str, float]], None], interval: float = DEFAULT_INTERVAL,
                 clock: Callable[[], float] = time.monotonic, background: bool = False) -> None:
        #: Where a flush adds the counts (the store's ``add_step_metrics``).
        self.sink = sink
        self.interval = interval
        self.clock = clock
        self.background = background
        self._flusher: threading.Thread | None = None
        self._lock = threading.Lock()
        #: (outcome, workflow, node) -> steps.
        self._steps: defaultdict[tuple[str, str, str], int] = defaultdict(int)
        #: node -> [seconds in all, steps, steps per bucket of _BOUNDS...].
        self._durations: dict[str, list[float]] = {}
        #: What a failed flush kept for the next one (the hashes' fields).
        self._unsent: tuple[dict[str, int], dict[str, float]] = ({}, {})
        self._last = clock()
        this = weakref.ref(self)
        atexit.register(lambda: (metrics := this()) is not None and metrics.flush())

    def step(self, workflow: str, node: str, outcome: str, seconds: float) -> None:
        """Count one step's outcome and duration; flush when the interval has passed."""
        bucket = 2 + bisect_left(BUCKETS, seconds)
        with self._lock:
            self._steps[(outcome, workflow, node)] += 1
            tally = self._durations.get(node)
            if tally is None:
                tally = self._durations[node] = [0.0] * (2 + len(_BOUNDS))
            tally[0] += seconds
            tally[1] += 1
            tally[bucket] += 1
            due = self.clock() - self._last >= self.interval
            start = self.background and self._flusher is None
            if start:
                self._flusher = threading.Thread(target=self._flush_every_interval, name="step-metrics",
                                                 daemon=True)
        if start and self._flusher is not None:
            self._flusher.start()
        if due:
            self.flush()

    def _flush_every_interval(self) -> None:
        while True:
            time.sleep(self.interval)
            self.flush()

    def flush(self) -> None:
        """Add the counts so far to Redis in one round trip (kept for the next try if Redis fails)."""
        with self._lock:
            counted, durations = self._steps, self._durations
            (steps, seconds), self._unsent = self._unsent, ({}, {})
            self._steps, self._durations = defaultdict(int), {}
            self._last = self.clock()
        for (outcome, workflow, node), count in counted.items():
            name = f"{outcome}|{workflow}|{node}"
            steps[name] = steps.get(name, 0) + count
        for node, tally in durations.items():
            for bound, count in zip(_BOUNDS, tally[2:], strict=True):
                if count:
                    name = f"{node}|{bound}"
                    seconds[name] = seconds.get(name, 0.0) + count
            for name, value in ((f"{node}|sum", tally[0]), (f"{node}|count", tally[1])):
                seconds[name] = seconds.get(name, 0.0) + value
        if not steps and not seconds:
            return
        try:
            self.sink(steps, seconds)
        except Exception as exc:  # metrics must never fail a step; keep the counts for the next flush
            log.warning("step metrics not flushed (%s); kept for the next try", exc)
            with self._lock:
                kept_steps, kept_seconds = self._unsent
                for name, count in steps.items():
                    kept_steps[name] = kept_steps.get(name, 0) + count
                for name, value in seconds.items():
                    kept_seconds[name] = kept_seconds.get(name, 0.0) + value


class Metrics(Hook):
    """Counts each step (inline ones too) in a :class:`StepMetrics`."""

    def __init__(self, metrics: StepMetrics) -> None:
        self.metrics = metrics

    def after_step(self, runtime: StepOutcomes, workflow: str, node: str, outcome: str, seconds: float) -> None:
        """One dictionary update under a lock; a flush when the interval has passed."""
        self.metrics.step(workflow, node, outcome, seconds)
