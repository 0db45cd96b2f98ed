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


def _bound(seconds: float) -> str:
    index = bisect_left(BUCKETS, seconds)
    return repr(BUCKETS[index]) if index < len(BUCKETS) else "+Inf"


class StepMetrics:
    """Per-process step counters with a cheap :meth:`step` and a batched :meth:`flush`."""

    def __init__(self, sink: Callable[[dict[str, int], dict[str, float]], None], interval: float = DEFAULT_INTERVAL,
                 clock: Callable[[], float] = time.monotonic, background: bool = False) -> None:
        #: Where a flush adds the counts (the store's ``add_step_metrics``).
        self.sink = sink
        self.interval = interval
        self.clock = clock
        self.background = background
        self._flusher: threading.Thread | None = None
        self._lock = threading.Lock()
        self._steps: defaultdict[str, int] = defaultdict(int)
        self._seconds: defaultdict[str, float] = defaultdict(float)
        self._last = clock()
        this = weakref.ref(self)
        atexit.register(lambda: (metrics := this()) is not None and metrics.flush())

    def step(self, workflow: str, node: str, outcome: str, seconds: float) -> None:
        """Count one step's outcome and duration; flush when the interval has passed."""
        with self._lock:
            self._steps[f"{outcome}|{workflow}|{node}"] += 1
            self._seconds[f"{node}|{_bound(seconds)}"] += 1
            self._seconds[f"{node}|sum"] += seconds
            self._seconds[f"{node}|count"] += 1
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
            steps, seconds = self._steps, self._seconds
            self._steps, self._seconds = defaultdict(int), defaultdict(float)
            self._last = self.clock()
        if not steps and not seconds:
            return
        try:
            self.sink(dict(steps), dict(seconds))
        except Exception as exc:  # metrics must never fail a step; keep the counts for the next flush
            log.warning("step metrics not flushed (%s); kept for the next try", exc)
            with self._lock:
                for name, count in steps.items():
                    self._steps[name] += count
                for name, value in seconds.items():
                    self._seconds[name] += value


class Metrics(Hook):
    """Counts each step (inline ones too) in a :class:`StepMetrics`."""

    def __init__(self, metrics: StepMetrics) -> None:
        self.metrics = metrics

    def after_step(self, runtime: StepOutcomes, workflow: str, node: str, outcome: str, seconds: float) -> None:
        """One dictionary update under a lock; a flush when the interval has passed."""
        self.metrics.step(workflow, node, outcome, seconds)
