"""Step metrics: counted in process memory by each worker, flushed to Redis every few seconds.

A worker's hot path pays one dictionary update per step (under a lock, for threaded pools).
Every ``interval`` seconds (default 5) the process adds its counts to Redis in one pipelined
batch (:meth:`engine.store.redis_store.RedisStore.add_step_metrics`) and starts again from
zero: in workers, from a daemon thread started with the process's first step (so an idle
worker's last counts arrive too), and anywhere on the next step once the interval has passed;
it also flushes at a clean exit. A process killed by SIGKILL loses at most the counts of its
last interval. Whoever renders metrics (the console's ``/metrics``) reads them back with
:meth:`engine.api.Engine.step_metrics`, which parses the store's hashes with :func:`parse_step_metrics`.

Hashes, keys from :class:`engine.store.keys.Keys` (``<prefix>:metrics:...``):

- ``steps``: ``<outcome>|<workflow>|<node>`` -> count (outcome: applied, retry, failed, noop, skipped)
- ``step_seconds``: ``<node>|<bucket upper bound>`` -> count (not cumulative), ``<node>|sum``, ``<node>|count``
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
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

#: Upper bounds (seconds) of the step duration histogram's buckets; ``+Inf`` is implied.
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
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


@dataclass
class StepStats:
    """Step metrics as read back from Redis (every process's flushed counts added up)."""

    #: (outcome, workflow, node) -> count
    steps: dict[tuple[str, str, str], int] = field(default_factory=dict)
    #: node -> (cumulative bucket counts by upper bound, incl. +Inf; sum of seconds; count)
    durations: dict[str, tuple[list[tuple[str, int]], float, int]] = field(default_factory=dict)


def parse_step_metrics(raw_steps: dict[str, str], raw_seconds: dict[str, str]) -> StepStats:
    """The flushed step metrics as the store holds them, added up into counts and histograms."""
    stats = StepStats()
    for name, count in raw_steps.items():
        outcome, workflow, node = name.split("|", 2)
        stats.steps[(outcome, workflow, node)] = int(count)
    by_node: dict[str, dict[str, float]] = defaultdict(dict)
    for name, value in raw_seconds.items():
        node, _, part = name.rpartition("|")
        by_node[node][part] = float(value)
    for node, parts in by_node.items():
        running, buckets = 0, []
        for bound in [*map(repr, BUCKETS), "+Inf"]:
            running += int(parts.get(bound, 0))
            buckets.append((bound, running))
        stats.durations[node] = (buckets, parts.get("sum", 0.0), int(parts.get("count", 0)))
    return stats


__all__ = ["BUCKETS", "StepMetrics", "StepStats", "parse_step_metrics"]
